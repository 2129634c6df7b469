//! `edgeprune inspect` and `analyze`: a model's per-layer costs and its pruning groups.

use super::*;

#[derive(Args)]
pub struct InspectArgs {
    /// Model folder, .onnx file, training run folder (its best model) or zoo name.
    pub model: String,
    /// A second model (e.g. the unpruned original) to show side by side, layer by layer.
    #[arg(long)]
    pub against: Option<String>,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long)]
    pub json: bool,
    /// Also show the predicted cost of training the model on this device (step time, peak
    /// memory, evaluation; a whole fine-tune with --epochs and --images), from the device's
    /// training-cost table: the cache's, of this network or the one it was pruned from, else
    /// measured now (minutes, once).
    #[arg(long)]
    pub train_cost: bool,
    /// The training batch size the cost is predicted at.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// With --train-cost: epochs of a fine-tune to price.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// With --train-cost: training images per epoch, and images evaluated per epoch.
    #[arg(long, value_name = "TRAIN[,EVAL]")]
    pub images: Option<String>,
    /// The training-cost table to predict with.
    #[arg(long, value_name = "FILE")]
    pub cost_table: Option<PathBuf>,
    /// CPU threads the cost is predicted for (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// With --train-cost: the precision of the training steps priced, fp32, bf16 or auto.
    #[arg(long, default_value = "fp32")]
    pub precision: crate::engine::Precision,
}

/// The predicted training cost of `m` (see `--train-cost`).
fn train_cost(a: &InspectArgs, m: &crate::ir::Model) -> Result<()> {
    use crate::analysis::train_cost::FineTuneCost;
    use crate::metrics::train_cost;
    anyhow::ensure!(a.batch > 0, "--batch must be at least 1");
    if let Some(t) = a.threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        crate::engine::set_threads(t);
    }
    let device = crate::engine::Device::Cpu;
    let precision = a.precision.resolve(device);
    let (table, path) = match train_cost::find(m, a.batch, device, precision, a.cost_table.as_deref())? {
        Some(found) => found,
        None => {
            eprintln!(
                "no training-cost table of {} at batch {} in {precision} in the cache: measuring it now",
                m.graph.name, a.batch
            );
            let exe = std::env::current_exe()?;
            let (t, source) = train_cost::load_or_build(m, a.batch, device, precision, None, &exe)?;
            eprintln!("{}", source.describe("train cost table"));
            let p = train_cost::default_path(m, a.batch, precision)?;
            (t, p)
        }
    };
    let p = table.predict_at(&m.graph, a.batch)?;
    println!(
        "training cost on this device ({} threads, {precision}, table {}): step {:.1} ms at batch {}, peak {} (without \
         the dataset), evaluation {:.3} ms per image",
        table.key.threads,
        path.display(),
        p.step_ms,
        a.batch,
        memory::human(p.peak_bytes as u64),
        p.eval_ms_per_image
    );
    if let Some(epochs) = a.epochs {
        let (train, eval) = match a.images.as_deref() {
            Some(s) => {
                let mut it = s.split(',').map(|v| v.trim().parse::<usize>());
                let t = it.next().transpose()?.context("--images needs TRAIN[,EVAL]")?;
                (t, it.next().transpose()?.unwrap_or(0))
            }
            None => anyhow::bail!("--epochs needs --images TRAIN[,EVAL] (images per epoch)"),
        };
        let f = FineTuneCost::new(&p, epochs, train.div_ceil(a.batch), eval);
        println!(
            "a fine-tune of {epochs} epochs x {} batches (+ {eval} images evaluated each epoch): predicted {:.1} minutes",
            f.steps_per_epoch,
            f.seconds / 60.0
        );
    }
    Ok(())
}

pub(super) fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let m = load_spec(&a.model, a.num_classes)?;
    let c = analysis::cost(&m.graph)?;
    let other = a
        .against
        .as_deref()
        .map(|o| load_spec(o, a.num_classes).and_then(|m| Ok(analysis::cost(&m.graph)?)))
        .transpose()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "model": c, "against": other }))?);
        return Ok(());
    }
    let mmacs = |m: u64| m as f64 / 1e6;
    match &other {
        None => println!("{:<28} {:<16} {:<16} {:>10} {:>10}", "node", "op", "output", "params", "MMACs"),
        Some(_) => {
            println!("{:<28} {:<16} {:<30} {:>21} {:>21}", "node", "op", "output (against -> this)", "params", "MMACs")
        }
    }
    for n in &c.nodes {
        let shape = format!("{:?}", n.output_shape);
        match other.as_ref().and_then(|o| o.nodes.iter().find(|x| x.name == n.name)) {
            None => println!("{:<28} {:<16} {:<16} {:>10} {:>10.3}", n.name, n.op, shape, n.params, mmacs(n.macs)),
            Some(o) => println!(
                "{:<28} {:<16} {:<30} {:>10} -> {:>7} {:>10.3} -> {:>7.3}",
                n.name,
                n.op,
                format!("{:?} -> {shape}", o.output_shape),
                o.params,
                n.params,
                mmacs(o.macs),
                mmacs(n.macs)
            ),
        }
    }
    let total = |c: &analysis::Cost| {
        format!(
            "{} parameters, {:.2} MMACs = {:.4} GOps per image, weights {:.2} MiB, activations {:.2} MiB per image",
            c.params,
            mmacs(c.macs),
            c.gops,
            c.weight_bytes as f64 / (1 << 20) as f64,
            c.activation_bytes as f64 / (1 << 20) as f64
        )
    };
    if let Some(o) = &other {
        println!("against: {}", total(o));
        println!(
            "this:    {} ({:.1}% of the parameters and {:.1}% of the GOps removed)",
            total(&c),
            100.0 * (1.0 - c.params as f64 / o.params as f64),
            100.0 * (1.0 - c.gops / o.gops)
        );
    } else {
        println!("total: {}", total(&c));
    }
    if a.train_cost {
        train_cost(&a, &m)?;
    }
    Ok(())
}

pub(super) fn cmd_analyze(a: InspectArgs) -> Result<()> {
    let m = load_spec(&a.model, a.num_classes)?;
    let groups = analysis::groups(&m.graph)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(());
    }
    let names = |ms: &[analysis::Member]| ms.iter().map(|p| p.node.as_str()).collect::<Vec<_>>().join(" ");
    // "yes/4": prunable in 4 equal blocks (a grouped conv's groups), as many from each.
    println!("{:<24} {:>5}  {:<9} producers -> consumers", "group", "size", "prunable");
    for g in &groups {
        let kind = match (&g.frozen, g.joins) {
            (Some(_), _) => "no",
            (None, 0) => "yes",
            (None, _) => "residual",
        };
        let kind = if g.blocks > 1 && g.prunable() { format!("{kind}/{}", g.blocks) } else { kind.to_string() };
        println!("{:<24} {:>5}  {:<9} {} -> {}", g.name, g.size, kind, names(&g.producers), names(&g.consumers));
        if let Some(why) = &g.frozen {
            println!("{:<24} {:>5}  {:<9} ({why})", "", "", "");
        }
    }
    let prunable: usize = groups.iter().filter(|g| g.prunable()).map(|g| g.size).sum();
    println!("{} groups, {} prunable channels", groups.len(), prunable);
    let open = groups.iter().filter(|g| g.prunable()).count();
    let residual = groups.iter().filter(|g| g.prunable() && g.joins > 0).count();
    let total: usize = groups.iter().map(|g| g.size).sum();
    println!(
        "prunability: {open} of {} groups prunable ({residual} of them residual), {} frozen; {prunable} of {total} channels",
        groups.len(),
        groups.len() - open
    );
    for g in groups.iter().filter(|g| !g.prunable()) {
        println!("  frozen {:<24} {}", g.name, g.frozen.as_deref().unwrap_or("-"));
    }
    if a.train_cost {
        train_cost(&a, &m)?;
    }
    Ok(())
}
