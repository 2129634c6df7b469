//! `edgeprune prune`: rank channels, plan, remove them, write the smaller model.

use super::*;

#[derive(Args)]
pub struct PruneArgs {
    /// Model folder, .onnx file, training run folder (its best model) or zoo name.
    pub model: String,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    /// Percent of the model's parameters to remove (the paper's pruning level).
    #[arg(long, conflicts_with_all = ["gops_level", "channels", "plan"])]
    pub level: Option<f64>,
    /// Percent of the model's GOps to remove instead.
    #[arg(long, conflicts_with_all = ["channels", "plan"])]
    pub gops_level: Option<f64>,
    /// Explicit channels to keep per group, e.g. "layer1.0.conv1=8,fire2.conv1=12".
    #[arg(long, value_delimiter = ',', conflicts_with = "plan")]
    pub channels: Option<Vec<String>>,
    /// Importance criterion: paper, l1, l2, bn, taylor, activation, apoz, random.
    #[arg(long, default_value = "paper")]
    pub criterion: crate::criteria::Criterion,
    /// global: one ranking over all channels (the paper); layer: the same share from every group.
    #[arg(long, default_value = "global")]
    pub scope: crate::surgery::planner::Scope,
    /// Every layer keeps at least this many channels.
    #[arg(long, default_value_t = 2)]
    pub min_channels: usize,
    /// A residual group keeps at least this share of its channels.
    #[arg(long, default_value_t = 0.25)]
    pub residual_min_share: f64,
    /// Every group keeps at least this share of its channels: a guard for a global ranking of
    /// scores that are not comparable across layers (raw l1/l2 norms would otherwise empty whole
    /// layers). 0 gives the paper's limits only. Groups left at their minimum are named.
    #[arg(long, default_value_t = 0.1)]
    pub min_share: f64,
    /// Replay a plan written earlier (by --plan-out or in a pruned model folder).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Also write the plan here.
    #[arg(long)]
    pub plan_out: Option<PathBuf>,
    /// Local data for data-driven criteria (taylor, activation, apoz).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_delimiter = ',')]
    pub subset: Vec<String>,
    /// Batches of local data the data-driven criteria look at.
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output model folder (the plan is saved in it as plan.json).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
    /// Prune to a latency budget instead of a level: "0.5x" (a share of the unpruned model's
    /// predicted latency) or "2.5ms", in --runtime at --batch, planned on the device's latency
    /// table (measured once and kept; see `bench latency-table`). The result is measured after
    /// surgery and refused, with the numbers, if it is not faster than the unpruned model.
    #[arg(long, value_name = "BUDGET", conflicts_with_all = ["level", "gops_level", "channels", "plan", "latency_ms"])]
    pub latency: Option<String>,
    /// The latency budget in milliseconds (the same as --latency Xms).
    #[arg(long, conflicts_with_all = ["level", "gops_level", "channels", "plan"])]
    pub latency_ms: Option<f64>,
    /// Measure the latency of the model before and after (in --runtime at --batch) and print
    /// both (always done with a latency budget).
    #[arg(long)]
    pub measure_latency: bool,
    /// The runtime latency is planned and measured in: ort (ONNX Runtime, as deployed) or
    /// libtorch (the engine).
    #[arg(long, default_value = "ort")]
    pub runtime: String,
    /// The batch size latency is planned and measured at.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// The latency table file (default: kept in the cache per network, runtime, batch and
    /// threads); a stale one is measured again.
    #[arg(long)]
    pub latency_table: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The target the flags name: a parameter or GOps level, or explicit channel counts.
fn target(a: &PruneArgs) -> Result<crate::surgery::planner::Target> {
    use crate::surgery::planner::Target;
    Ok(match (a.level, a.gops_level, &a.channels) {
        (Some(l), None, None) => Target::Params(l),
        (None, Some(l), None) => Target::Gops(l),
        (None, None, Some(list)) => {
            let mut counts = std::collections::BTreeMap::new();
            for item in list {
                let (k, v) =
                    item.rsplit_once('=').with_context(|| format!("--channels item `{item}` is not group=count"))?;
                let n = v.parse::<usize>().with_context(|| format!("--channels item `{item}`"))?;
                if let Some(old) = counts.insert(k.to_string(), n) {
                    anyhow::bail!("--channels names group `{k}` twice ({old} and {n}): give each group once");
                }
            }
            Target::Channels(counts)
        }
        _ => anyhow::bail!("give one of --level, --gops-level, --channels, --latency, --latency-ms or --plan"),
    })
}

/// A latency budget: a share of the unpruned latency ("0.5x") or milliseconds ("2.5ms").
#[derive(Debug, Clone, Copy, PartialEq)]
enum Budget {
    Ratio(f64),
    Ms(f64),
}

fn budget(a: &PruneArgs) -> Result<Option<Budget>> {
    let b = match (&a.latency, a.latency_ms) {
        (None, None) => return Ok(None),
        (_, Some(ms)) => Budget::Ms(ms),
        (Some(text), None) => {
            let t = text.trim();
            let parse = |v: &str| {
                v.trim().parse::<f64>().with_context(|| format!("--latency `{text}`: use e.g. 0.5x or 2.5ms"))
            };
            if let Some(v) = t.strip_suffix("ms") {
                Budget::Ms(parse(v)?)
            } else if let Some(v) = t.strip_suffix('x') {
                Budget::Ratio(parse(v)?)
            } else {
                anyhow::bail!("--latency `{text}`: give a share of the unpruned latency (0.5x) or milliseconds (2.5ms)")
            }
        }
    };
    match b {
        Budget::Ratio(r) => anyhow::ensure!(r > 0.0 && r < 1.0, "--latency {r}x: the share must be in (0, 1)"),
        Budget::Ms(ms) => anyhow::ensure!(ms.is_finite() && ms > 0.0, "--latency-ms {ms}: must be a positive number"),
    }
    Ok(Some(b))
}

/// The warning for the groups a plan leaves at the least the limits allow.
fn warn_at_minimum(a: &PruneArgs, at_minimum: &[String]) {
    if !at_minimum.is_empty() {
        eprintln!(
            "warning: {} groups are left at the least the limits allow (--min-channels {}, --min-share {}, \
             --residual-min-share {}): {}. The ranking wanted to remove more there; if their scores are not \
             comparable across layers, try --scope layer or a normalised criterion (paper)",
            at_minimum.len(),
            a.min_channels,
            a.min_share,
            a.residual_min_share,
            at_minimum.join(", ")
        );
    }
}

pub(super) fn cmd_prune(a: PruneArgs) -> Result<()> {
    use crate::surgery::Plan;
    use crate::surgery::planner::{LatencyBudget, Limits, Target};
    use crate::workflow::{self, PruneRequest};

    let device = a.engine.apply()?;
    // Before any costly work: an unknown runtime names the ones there are; a bad budget says why.
    let runtime: engine::Runtime = a.runtime.parse()?;
    let budget = budget(&a)?;
    anyhow::ensure!(
        budget.is_none() || a.scope == crate::surgery::planner::Scope::Global,
        "a latency budget ranks all channels together by importance per ms saved: drop --scope layer"
    );
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    // Outputs are checked before any work: none may be an input, none may replace a user's file.
    let mut inputs: Vec<&Path> = vec![Path::new(&a.model)];
    inputs.extend(a.plan.as_deref());
    inputs.extend(a.data.as_deref());
    if let Some(t) = &a.latency_table {
        outdir::check_not_input(t, "--latency-table", &[Path::new(&a.model), &a.out.join("graph.json")])?;
    }
    claim_model_dir(&a.out, a.overwrite, &inputs)?;
    if let Some(p) = &a.plan_out {
        outdir::check_not_input(p, "--plan-out", &inputs)?;
        outdir::check_not_input(p, "--plan-out", &[&a.out.join("graph.json"), &a.out.join("weights.safetensors")])?;
        outdir::claim_file(p, a.overwrite)?;
    }
    let mut model = load_spec(&a.model, a.num_classes)?;
    let pruned = if let Some(p) = &a.plan {
        workflow::apply_plan(&model, Plan::load(p)?)?
    } else {
        anyhow::ensure!((0.0..=1.0).contains(&a.residual_min_share), "--residual-min-share must be in [0, 1]");
        anyhow::ensure!((0.0..=1.0).contains(&a.min_share), "--min-share must be in [0, 1]");
        let limits = Limits {
            min_channels: a.min_channels.max(1),
            residual_min_share: a.residual_min_share,
            min_share: a.min_share,
        };
        // Before the table is measured or a data-driven criterion loads its data.
        limits.check()?;
        let target = match budget {
            None => target(&a)?,
            Some(b) => {
                let (table, source) = crate::metrics::latency::load_or_build(
                    &model,
                    runtime,
                    a.batch,
                    device,
                    a.latency_table.as_deref(),
                )?;
                println!("{source}");
                let full = table.predict(&model.graph)?;
                // A share is of the unpruned model's predicted latency: the plan is made in the
                // model's terms, so its bias on the unpruned network cannot put a share out of
                // reach (the table's measurement of it is printed beside).
                let measured = table.calibration.first().map_or(full, |c| c.measured_ms);
                let ms = match b {
                    Budget::Ms(ms) => ms,
                    Budget::Ratio(r) => r * full,
                };
                println!(
                    "latency budget {ms:.4} ms at batch {} in {runtime} (unpruned: measured {measured:.4} ms when the \
                     table was made, predicted {full:.4} ms)",
                    a.batch
                );
                Target::Latency(LatencyBudget { ms, table: std::sync::Arc::new(table) })
            }
        };
        let request = PruneRequest {
            criterion: a.criterion,
            scope: a.scope,
            target,
            limits,
            batch_size: 128,
            max_batches: a.batches,
            seed: a.seed,
            device,
        };
        request.check()?;
        let data = if a.criterion.needs_data() {
            Some(RunData::load(a.data.as_deref(), &a.subset, 1.0, model.graph.input_shape()?)?)
        } else {
            None
        };
        request.run(&mut model, data.as_ref())?
    };
    // Never slower: a plan for a latency budget is measured against the unpruned model before
    // anything is written, and refused if it is not faster.
    let measured = if budget.is_some() || a.measure_latency {
        let (b, p) = crate::metrics::latency::compare_ms(&model, &pruned.model, runtime, a.batch, device, 5)?;
        if budget.is_some() && p >= b {
            anyhow::bail!(
                "the plan is not faster where it runs: measured {p:.4} ms against the unpruned model's {b:.4} ms at \
                 batch {} in {runtime} (predicted {:.4} ms); nothing written. Try a smaller budget, or measure again \
                 with nothing else running",
                a.batch,
                pruned.plan.predicted["latency_ms_after"].as_f64().unwrap_or(f64::NAN)
            );
        }
        Some((b, p))
    } else {
        None
    };
    let plan = &pruned.plan;
    save_model(&pruned.model, &a.out)?;
    native::write_atomic(&a.out.join("plan.json"), plan.to_json().as_bytes())?;
    if let Some(p) = &a.plan_out {
        native::write_atomic(p, plan.to_json().as_bytes())?;
    }
    let (before, after) = (analysis::cost(&model.graph)?, analysis::cost(&pruned.model.graph)?);
    println!(
        "pruned {} channels in {} groups ({:.2}s planning, {:.2}s surgery)",
        plan.removed(),
        plan.groups.iter().filter(|g| g.keep.len() < g.size).count(),
        pruned.planning_seconds,
        pruned.surgery_seconds
    );
    for g in plan.groups.iter().filter(|g| g.keep.len() < g.size) {
        println!("  {:<24} {:>5} -> {:<5}", g.name, g.size, g.keep.len());
    }
    println!(
        "parameters {} -> {} ({:.2}% removed), GOps {:.4} -> {:.4} ({:.2}% removed)",
        before.params,
        after.params,
        100.0 * (1.0 - after.params as f64 / before.params as f64),
        before.gops,
        after.gops,
        100.0 * (1.0 - after.gops / before.gops)
    );
    if let Some((b, p)) = measured {
        let predicted = pruned.plan.predicted.get("latency_ms_after").and_then(|v| v.as_f64());
        println!(
            "latency at batch {} in {runtime}: {b:.4} ms -> {p:.4} ms measured (speed-up {:.2}x; medians of 5 \
             alternating rounds){}",
            a.batch,
            b / p,
            predicted.map_or(String::new(), |x| format!("; predicted {x:.4} ms"))
        );
        if p >= b {
            eprintln!(
                "warning: the pruned model is not faster at batch {} in {runtime} on this machine (per-op overhead \
                 and channel counts off the runtime's vector widths can outweigh removed channels; plan with \
                 --latency to avoid it; times are noisy under load)",
                a.batch
            );
        }
    }
    warn_at_minimum(&a, &pruned.at_minimum);
    println!("wrote {} (plan in {})", a.out.display(), a.out.join("plan.json").display());
    Ok(())
}
