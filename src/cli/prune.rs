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
    /// Also measure the batch-1 latency of the model before and after in this runtime (ort:
    /// ONNX Runtime, as deployed; libtorch: the engine) and print both.
    #[arg(long, value_name = "RUNTIME")]
    pub latency: Option<String>,
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
        _ => anyhow::bail!("give one of --level, --gops-level, --channels or --plan"),
    })
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
    use crate::surgery::planner::Limits;
    use crate::workflow::{self, PruneRequest};

    let device = a.engine.apply()?;
    // Before any costly work: an unknown runtime names the ones there are.
    let latency: Option<engine::Runtime> = a.latency.as_deref().map(str::parse).transpose()?;
    // Outputs are checked before any work: none may be an input, none may replace a user's file.
    let mut inputs: Vec<&Path> = vec![Path::new(&a.model)];
    inputs.extend(a.plan.as_deref());
    inputs.extend(a.data.as_deref());
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
        let request = PruneRequest {
            criterion: a.criterion,
            scope: a.scope,
            target: target(&a)?,
            limits: Limits {
                min_channels: a.min_channels.max(1),
                residual_min_share: a.residual_min_share,
                min_share: a.min_share,
            },
            batch_size: 128,
            max_batches: a.batches,
            seed: a.seed,
            device,
        };
        // Before a data-driven criterion loads its data.
        request.check()?;
        let data = if a.criterion.needs_data() {
            Some(RunData::load(a.data.as_deref(), &a.subset, 1.0, model.graph.input_shape()?)?)
        } else {
            None
        };
        request.run(&mut model, data.as_ref())?
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
    if let Some(rt) = latency {
        let ms = |m: &Model| -> Result<f64> { Ok(1e3 * bench::infer(m, 1, 100, 10, device, rt)?.step_seconds.median) };
        let (b, p) = (ms(&model)?, ms(&pruned.model)?);
        println!(
            "latency at batch 1 in {rt}: {b:.3} ms -> {p:.3} ms (speed-up {:.2}x; median of 100 runs each)",
            b / p
        );
        if p >= b {
            eprintln!(
                "warning: the pruned model is not faster at batch 1 in {rt} on this machine (per-op overhead can \
                 outweigh removed channels; times are noisy under load: measure again with nothing else running)"
            );
        }
    }
    warn_at_minimum(&a, &pruned.at_minimum);
    println!("wrote {} (plan in {})", a.out.display(), a.out.join("plan.json").display());
    Ok(())
}
