//! The protocol's commands: `experiment`, `search` (DaPR), `report`, and the hidden `cell`.

use super::*;

#[derive(Args)]
pub struct ExperimentArgs {
    /// The experiment recipe (TOML).
    pub recipe: PathBuf,
    /// Sweep folder (default: runs/<recipe name>).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Run only the cells whose id starts with one of these (e.g. resnet20/pets/aware-p50-s0).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run cells in this process instead of one child process each.
    #[arg(long)]
    pub in_process: bool,
    /// Run shard I of N (0-based) of the grid, beside the other shards into the same folder (a
    /// Slurm job array: --shard $SLURM_ARRAY_TASK_ID/N; a Kubernetes indexed Job:
    /// $JOB_COMPLETION_INDEX/N). Each takes every N-th result cell with the shared cells it
    /// needs; a shared cell is run by one shard while the others wait on its lock. `report` merges.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<protocol::sweep::Shard>,
}

#[derive(Args)]
pub struct SearchArgs {
    pub recipe: PathBuf,
    #[arg(long)]
    pub network: String,
    #[arg(long)]
    pub subset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub in_process: bool,
    /// Skip every probe whose retraining is predicted (on this device's training-cost table, for
    /// the network that probe would retrain) to take more than M minutes: it counts as out of
    /// reach, and the search goes on among higher levels.
    #[arg(long, value_name = "M")]
    pub max_retrain_minutes: Option<f64>,
    /// memory_opt: the largest level that keeps the unpruned accuracy; cost_opt: stop at the
    /// first probe that keeps it (fewer probes, a less pruned network).
    #[arg(long, default_value = "memory_opt")]
    pub mode: protocol::search::Mode,
    /// The pipeline whose cells are the probes: aware (labelled local data) or aware-unlabeled.
    #[arg(long, default_value = "aware", value_parser = parse_pipeline)]
    pub pipeline: protocol::recipe::Pipeline,
}

fn parse_pipeline(s: &str) -> std::result::Result<protocol::recipe::Pipeline, String> {
    protocol::recipe::Pipeline::parse(s).ok_or_else(|| format!("unknown pipeline `{s}`: aware or aware-unlabeled"))
}

#[derive(Args)]
pub struct ReportArgs {
    /// A sweep folder (holding cells.csv).
    pub run: PathBuf,
    /// Where to write the report (default: RUN/report).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// DaPR search results to plot (the JSON files of `edgeprune search`, or folders of them):
    /// each probe's accuracy against the search's cumulative cost. Default: those in RUN.
    #[arg(long, num_args = 1..)]
    pub search: Vec<PathBuf>,
    /// Other sweep folders whose cells are reported beside RUN's (the same grid's other
    /// pipelines, as a label-free sweep beside the labelled one); cells RUN has are not repeated.
    #[arg(long = "with", num_args = 1.., value_name = "SWEEP")]
    pub with: Vec<PathBuf>,
}

#[derive(Args)]
pub struct CellArgs {
    #[arg(long)]
    pub recipe: PathBuf,
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub cell: String,
    /// If another process holds the cell, wait for it and take its result (sharded sweeps).
    #[arg(long)]
    pub wait: bool,
}

pub(super) fn cmd_experiment(a: ExperimentArgs) -> Result<()> {
    let recipe = Recipe::load(&a.recipe)?;
    let root = sweep::root_of(&recipe, a.out.as_deref());
    let rows = sweep::run_shard(&recipe, &root, &a.only, a.in_process, a.shard)?;
    if let Some(s) = a.shard {
        // Other shards may still be running, and each would write the report at its end: the
        // report is made once, by `report`, when they are done.
        println!(
            "shard {}/{} done; {} result rows of the whole sweep finished so far in {}; when every shard is done: \
             edgeprune report {}",
            s.index,
            s.count,
            rows.len(),
            root.join("cells.csv").display(),
            root.display()
        );
        return Ok(());
    }
    let summary = report::write_report(&rows, &root.join("report"))?;
    println!(
        "{} result rows in {}; report in {}",
        rows.len(),
        root.join("cells.csv").display(),
        root.join("report").display()
    );
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

pub(super) fn cmd_search(a: SearchArgs) -> Result<()> {
    let recipe = Recipe::load(&a.recipe)?;
    let root = sweep::root_of(&recipe, a.out.as_deref());
    let r = protocol::search::search(
        &recipe,
        &root,
        &a.network,
        &a.subset,
        protocol::search::Options {
            seed: a.seed,
            in_process: a.in_process,
            max_retrain_minutes: a.max_retrain_minutes,
            mode: a.mode,
            pipeline: Some(a.pipeline),
        },
    )?;
    for p in &r.probes {
        println!(
            "probe {:>4.0}%: {} ({}) {:>5.0} epochs {:>7.0}s; retraining {} (predicted {})",
            p.level,
            p.test_top1.map_or("     -".to_string(), |a| format!("{:6.2}%", 100.0 * a)),
            if p.skipped {
                "skipped: over the retraining budget"
            } else if p.reaches_reference {
                "reaches"
            } else {
                "short"
            },
            p.epochs,
            p.seconds,
            p.retrain_seconds.map_or("-".into(), |s| format!("{s:.0}s")),
            p.predicted_retrain_seconds.map_or("-".into(), |s| format!("{s:.0}s")),
        );
    }
    match r.level {
        Some(l) => println!(
            "DaPR ({:?}) level for {}/{}: {l}% (reference {:.2}%), {} probes, {:.0} epochs, {:.0}s",
            r.mode,
            r.network,
            r.subset,
            100.0 * r.reference_top1,
            r.probes.len(),
            r.total_epochs,
            r.total_seconds
        ),
        None => println!(
            "no level in 5..95 reaches the reference {:.2}% for {}/{}{}",
            100.0 * r.reference_top1,
            r.network,
            r.subset,
            match (r.max_retrain_minutes, r.probes.iter().filter(|p| p.skipped).count()) {
                (Some(m), n) if n > 0 => format!(" within the retraining budget of {m} minutes ({n} probes skipped)"),
                _ => String::new(),
            }
        ),
    }
    native::write_atomic(
        &root.join(match r.pipeline {
            protocol::recipe::Pipeline::AwareUnlabeled => format!("search-{}-{}-unlabeled.json", r.network, r.subset),
            _ => format!("search-{}-{}.json", r.network, r.subset),
        }),
        serde_json::to_string_pretty(&r)?.as_bytes(),
    )?;
    Ok(())
}

/// The finished cells of the sweep folder `run`, with the batch-1 latency measured after the sweep
/// (`bench sweep-latency`) in place of the cells' own where there is one.
fn sweep_cells(run: &Path) -> Result<Vec<report::Cell>> {
    // Shards that ran into one sweep folder at once each wrote cells.csv with what was finished
    // when they did: where the folder's cells hold more finished rows than cells.csv, they are
    // gathered afresh (never fewer: a folder whose cells were deleted keeps its cells.csv).
    let csv = run.join("cells.csv");
    let listed = if csv.exists() { Some(report::read_cells(&csv)?) } else { None };
    let recipe_path = run.join("recipe.toml");
    let found = if recipe_path.is_file() { sweep::collect(&Recipe::load(&recipe_path)?, run)? } else { vec![] };
    let mut cells = match listed {
        Some(l) if l.len() >= found.len() => l,
        _ if !found.is_empty() => sweep::gather(&Recipe::load(&recipe_path)?, run)?,
        _ => report::read_cells(&csv)?,
    };
    let lat = run.join(protocol::latency::LATENCY_CSV);
    if lat.is_file() {
        let (n, own) = protocol::latency::fill(&mut cells, &protocol::latency::read(&lat)?);
        eprintln!("batch-1 latency of {n} cells from {}", lat.display());
        if own > 0 {
            eprintln!("warning: {own} cells have no row there and keep the latency they measured themselves");
        }
    }
    Ok(cells)
}

pub(super) fn cmd_report(a: ReportArgs) -> Result<()> {
    let mut cells = sweep_cells(&a.run)?;
    // Cells of other sweeps reported beside these (e.g. the labelled pipelines of the same grid):
    // a (network, subset, pipeline, level, seed) already here is not taken twice.
    for other in &a.with {
        let key =
            |c: &report::Cell| (c.network.clone(), c.subset.clone(), c.pipeline.clone(), c.level.to_bits(), c.seed);
        let have: std::collections::HashSet<_> = cells.iter().map(key).collect();
        let more: Vec<report::Cell> = sweep_cells(other)?.into_iter().filter(|c| !have.contains(&key(c))).collect();
        eprintln!("{} cells from {}", more.len(), other.display());
        cells.extend(more);
    }
    let recipe_path = a.run.join("recipe.toml");
    let out = a.out.unwrap_or_else(|| a.run.join("report"));
    // A report replaces the report it regenerates, never a folder of anything else.
    outdir::claim(&out, outdir::Kind::Report, outdir::Existing::Accept, "")?;
    // The sweep's pruning plans, where its cell folders are here (a published cells.csv has none).
    let channels =
        if recipe_path.is_file() { report::channels::collect(&Recipe::load(&recipe_path)?, &a.run)? } else { vec![] };
    let searches = if a.search.is_empty() { vec![a.run.clone()] } else { a.search.clone() };
    // The latency rows of the searches' folders (their probes' networks), then the sweeps'.
    let mut latency = Vec::new();
    let mut folders: Vec<PathBuf> = searches
        .iter()
        .map(|p| if p.is_dir() { p.clone() } else { p.parent().unwrap_or(Path::new(".")).to_path_buf() })
        .collect();
    folders.push(a.run.clone());
    folders.extend(a.with.iter().cloned());
    folders.dedup();
    for f in folders {
        let lat = f.join(protocol::latency::LATENCY_CSV);
        if lat.is_file() {
            latency.extend(protocol::latency::read(&lat)?);
        }
    }
    let extras = report::Extras { channels, searches: report::dapr::read(&searches)?, latency };
    let summary = report::write_report_with(&cells, &extras, &out)?;
    println!("report written to {}", out.display());
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

pub(super) fn cmd_cell(a: CellArgs) -> Result<()> {
    let recipe = Recipe::load(&a.recipe)?;
    let id: protocol::pipeline::CellId = a.cell.parse()?;
    if a.wait {
        protocol::pipeline::run_cell_waiting(&recipe, &a.root, &id)?;
    } else {
        protocol::pipeline::run_cell(&recipe, &a.root, &id)?;
    }
    Ok(())
}
