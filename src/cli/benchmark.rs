//! `edgeprune bench`: a training step or inference on synthetic data, timed.

use super::*;

#[derive(Args)]
pub struct BenchArgs {
    /// train-step, infer, data (the training loader on --data, fitted to the model, next to a
    /// train step of the same batch), latency-table (measure or reuse the model's latency table
    /// in --runtime at --batch), latency-model (the table's prediction against measurement on
    /// --networks pruned versions of the model, written to --out), train-cost (measure or reuse
    /// the model's training-cost table at --batch and predict its step time, peak memory and
    /// evaluation time), train-cost-model (that prediction against measurement on --networks
    /// pruned versions, written to --out) or sweep-latency (the inference latency of every
    /// finished cell of the sweep folder --sweep, at batch 1 in --runtime, written to its
    /// latency.csv for `report`; --steps timed runs per network).
    pub what: String,
    /// For sweep-latency: the sweep folder (holding recipe.toml and its cells).
    #[arg(long)]
    pub sweep: Option<PathBuf>,
    /// Data for `data` (see the Data section of the README).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Zoo name or model folder.
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
    /// For `infer`: libtorch (the engine) or ort (ONNX Runtime, on the model as exported).
    #[arg(long, default_value = "libtorch")]
    pub runtime: String,
    /// For latency-table/-model: the table file (default: one per network, runtime, batch and
    /// threads in the cache); a stale one is measured again.
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// For latency-model: how many pruned networks to check the prediction on (levels 10..90).
    #[arg(long, default_value_t = 27)]
    pub networks: usize,
    /// For latency-model: folder for latency-model.csv and .md (written only by edgeprune).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Refuse to run if the estimated peak memory exceeds this many bytes (suffixes K, M, G).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// For train-step, data, train-cost and train-cost-model: the training step's precision, fp32,
    /// bf16 or auto (bf16 where the CPU has bf16 instructions). Training-cost tables are kept per
    /// precision.
    #[arg(long, default_value = "fp32")]
    pub precision: engine::Precision,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The training loader's time per batch next to a training step's, on the same model and batch.
fn bench_data(a: &BenchArgs, m: &crate::ir::Model, device: Device) -> Result<()> {
    let data = RunData::load(a.data.as_deref(), &[], 1.0, m.graph.input_shape()?)?;
    let d = bench::data(m, &data, a.batch, a.steps, a.warmup.max(4))?;
    let resident = crate::metrics::resident_bytes();
    let held = data.train.images.owned_bytes();
    let s = bench::train_step(m, a.batch, a.steps, a.warmup, device, a.precision)?;
    if a.json {
        let memory = serde_json::json!({
            "train_images_mapped": data.train.images.is_mapped(),
            "train_image_bytes_in_memory": held,
            "resident_anonymous_bytes": resident.map(|r| r.0),
            "resident_file_bytes": resident.map(|r| r.1),
        });
        println!("{}", serde_json::json!({ "data": d, "train_step": s, "memory": memory }));
        return Ok(());
    }
    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "training images: {}, {:.1} MB ({}); resident after the loader ran: {}",
        data.train.len(),
        mb((data.train.len() * data.train.image_size()) as u64),
        if data.train.images.is_mapped() {
            "memory-mapped from the decode cache, paged by the OS".to_string()
        } else {
            format!("{:.1} MB held in memory", mb(held as u64))
        },
        resident.map_or("unknown".into(), |(anon, file)| format!(
            "{:.1} MB anonymous, {:.1} MB file-backed",
            mb(anon),
            mb(file)
        ))
    );
    let [c, h, w] = data.train.shape;
    println!(
        "{} batch {}: data {:.2} ms per batch (one loader thread; images stored {c}x{h}x{w}, given out {:?}), \
         train step {:.2} ms ({} threads): data is {:.1}% of a step",
        m.graph.name,
        a.batch,
        1e3 * d.step_seconds.median,
        m.graph.input_shape()?,
        1e3 * s.step_seconds.median,
        s.threads,
        100.0 * d.step_seconds.median / s.step_seconds.median
    );
    Ok(())
}

/// Measures (or reuses) the model's latency table and says what it holds.
fn bench_latency_table(a: &BenchArgs, m: &crate::ir::Model, runtime: engine::Runtime, device: Device) -> Result<()> {
    use crate::metrics::latency;
    let (table, source) = latency::load_or_build(m, runtime, a.batch, device, a.table.as_deref())?;
    println!("{source}");
    println!(
        "{} in {} at batch {}: {} units, {} measurements in {:.1}s; whole network = {:.3} x units + {:.4} ms per million \
         rest elements + {:.4} ms",
        table.network,
        table.key.runtime,
        table.key.batch,
        table.units.len(),
        table.units.iter().map(|u| u.coarse_ms.len() + u.cin.fine.len() + u.cout.fine.len()).sum::<usize>(),
        table.build_seconds,
        table.units_scale,
        table.rest_ms_per_melement,
        table.rest_ms
    );
    for c in &table.calibration {
        let predicted =
            table.units_scale * c.units_ms + table.rest_ms + table.rest_ms_per_melement * c.rest_elements / 1e6;
        println!("  {:<32} measured {:>8.3} ms, predicted {:>8.3} ms", c.what, c.measured_ms, predicted);
    }
    Ok(())
}

/// The `i`-th pruned version of `m` a model's error is checked on: levels 10..90 in turn, by
/// parameters with a global L1 ranking, then by GOps at random per layer, then by GOps with the
/// paper's criterion globally (each group keeps at least 10%); its description and the model.
fn pruned_version(m: &mut crate::ir::Model, i: usize, device: Device) -> Result<(String, crate::ir::Model)> {
    use crate::criteria::Criterion;
    use crate::surgery::planner::{Limits, Scope, Target};
    const WAYS: [(Criterion, Scope, bool); 3] = [
        (Criterion::L1, Scope::Global, true),
        (Criterion::Random, Scope::Layer, false),
        (Criterion::Paper, Scope::Global, false),
    ];
    let level = 10.0 * (1 + i % 9) as f64;
    let (criterion, scope, by_params) = WAYS[(i / 9) % 3];
    let request = crate::workflow::PruneRequest {
        criterion,
        scope,
        target: if by_params { Target::Params(level) } else { Target::Gops(level) },
        limits: Limits { min_share: 0.1, ..Limits::default() },
        batch_size: 1,
        max_batches: 1,
        seed: i as u64,
        device,
    };
    let pruned = request.run(m, None)?.model;
    let what = format!("{criterion} {scope} {level:.0}% of {}", if by_params { "parameters" } else { "GOps" });
    Ok((what, pruned))
}

/// The latency model's error: predicted against measured on pruned versions of the model at
/// levels 10..90 (three ways of pruning in turn), written as CSV and markdown.
fn bench_latency_model(a: &BenchArgs, m: &crate::ir::Model, runtime: engine::Runtime, device: Device) -> Result<()> {
    use crate::metrics::latency;
    let out = a.out.as_deref().context("latency-model writes its table: give --out DIR")?;
    outdir::check_not_input(out, "--out", &[Path::new(&a.model)])?;
    outdir::claim(out, outdir::Kind::Report, outdir::Existing::Accept, "")?;
    let (table, source) = latency::load_or_build(m, runtime, a.batch, device, a.table.as_deref())?;
    println!("{source}");
    let mut rows = Vec::new();
    let mut model = m.clone();
    for i in 0..a.networks {
        let (what, pruned) = pruned_version(&mut model, i, device)?;
        let predicted = table.predict(&pruned.graph)?;
        let p = crate::analysis::latency::Predictor::new(&table, &pruned.graph)?;
        let parts = p.parts(&p.own_counts());
        let measured = latency::model_ms(&pruned, runtime, a.batch, device)?;
        let gops = crate::analysis::cost(&pruned.graph)?.gops;
        let error = 100.0 * (predicted - measured) / measured;
        println!("  {what:<36} GOps {gops:.4}: measured {measured:.3} ms, predicted {predicted:.3} ms ({error:+.1}%)");
        rows.push((what, gops, measured, predicted, error, parts));
    }
    anyhow::ensure!(!rows.is_empty(), "--networks must be at least 1");
    // With the model's inputs for that network (the units' table sum, the rest's elements, the
    // reordered elements beyond the units' own), to see where its error comes from.
    let mut csv =
        String::from("network,gops,measured_ms,predicted_ms,error_percent,units_ms,rest_elements,reorder_elements\n");
    for (w, g, me, p, e, (u, r, o)) in &rows {
        csv += &format!("{w},{g:.6},{me:.4},{p:.4},{e:.2},{u:.5},{r},{o}\n");
    }
    let abs: Vec<f64> = rows.iter().map(|r| r.4.abs()).collect();
    let mean = abs.iter().sum::<f64>() / abs.len() as f64;
    let max = abs.iter().copied().fold(0.0, f64::max);
    let within = abs.iter().filter(|e| **e <= 10.0).count();
    let mut md = format!(
        "# Latency model of {} in {} at batch {}\n\nMade by `edgeprune {}`: {} on {}, {} threads.\n\n\
         Mean absolute error {mean:.1}%, max {max:.1}%, {within} of {} networks within 10%.\n\n\
         | network | GOps | measured ms | predicted ms | error |\n|---|---:|---:|---:|---:|\n",
        table.network,
        runtime,
        a.batch,
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        table.key.runtime,
        table.key.device,
        table.key.threads,
        rows.len()
    );
    for (w, g, me, p, e, _) in &rows {
        md += &format!("| {w} | {g:.4} | {me:.3} | {p:.3} | {e:+.1}% |\n");
    }
    crate::formats::native::write_atomic(&out.join("latency-model.csv"), csv.as_bytes())?;
    crate::formats::native::write_atomic(&out.join("latency-model.md"), md.as_bytes())?;
    println!(
        "mean absolute error {mean:.1}%, max {max:.1}%, {within} of {} within 10%; wrote {}",
        rows.len(),
        out.display()
    );
    Ok(())
}

/// The training-cost table of the model at --batch (measured now, or reused), and what it
/// predicts for the model.
fn bench_train_cost(a: &BenchArgs, m: &crate::ir::Model, device: Device) -> Result<()> {
    use crate::metrics::train_cost;
    let exe = std::env::current_exe()?;
    let (table, source) = train_cost::load_or_build(m, a.batch, device, a.precision, a.table.as_deref(), &exe)?;
    println!("{}", source.describe("train cost table"));
    let fmt = |l: &crate::analysis::train_cost::Linear| {
        l.terms.iter().zip(&l.coef).map(|(t, c)| format!("{c:.4e} x {t}")).collect::<Vec<_>>().join(" + ")
            + &format!(" + {:.4e}", l.intercept)
    };
    println!(
        "{} at batch {} ({} threads, {}, {}), measured in {:.0}s:",
        table.network, table.key.batch, table.key.threads, table.key.device, table.key.runtime, table.build_seconds
    );
    println!("  step ms = {}", fmt(&table.step));
    println!("  eval ms per image (batch {}) = {}", table.eval_batch, fmt(&table.eval));
    println!("  peak bytes = {}", fmt(&table.memory));
    for c in &table.calibration {
        let f = &c.features;
        let step = table.step.eval(&crate::analysis::train_cost::step_row(f, table.key.batch));
        let mem = table.memory.eval(&crate::analysis::train_cost::memory_row(f, c.memory_batch));
        println!(
            "  {:<44} step {} ms (fit {step:.1}), peak {} (fit {})",
            c.what,
            c.step_ms.map_or("-".into(), |v| format!("{v:.1}")),
            c.peak_bytes.map_or("-".into(), |v| memory::human(v as u64)),
            memory::human(mem.max(0.0) as u64)
        );
    }
    let p = table.predict(&m.graph)?;
    println!(
        "predicted for {}: train step {:.1} ms at batch {}, peak {}, evaluation {:.3} ms per image",
        m.graph.name,
        p.step_ms,
        p.batch,
        memory::human(p.peak_bytes as u64),
        p.eval_ms_per_image
    );
    Ok(())
}

/// The training-cost model's error: predicted against measured step time and peak memory on
/// pruned versions of the model at levels 10..90 (three ways of pruning in turn), each measured
/// in a process of its own, written as CSV and markdown.
fn bench_train_cost_model(a: &BenchArgs, m: &crate::ir::Model, device: Device) -> Result<()> {
    use crate::metrics::train_cost;
    let out = a.out.as_deref().context("train-cost-model writes its table: give --out DIR")?;
    outdir::check_not_input(out, "--out", &[Path::new(&a.model)])?;
    outdir::claim(out, outdir::Kind::Report, outdir::Existing::Accept, "")?;
    let exe = std::env::current_exe()?;
    let (table, source) = train_cost::load_or_build(m, a.batch, device, a.precision, a.table.as_deref(), &exe)?;
    println!("{}", source.describe("train cost table"));
    let mut rows = Vec::new();
    let mut model = m.clone();
    let mut pruned = Vec::new();
    for i in 0..a.networks {
        pruned.push(pruned_version(&mut model, i, device)?);
    }
    // Measured as the table's calibration networks are: the fastest of ROUNDS processes each,
    // in rounds over all the networks.
    let bar = crate::train::progress(
        (train_cost::ROUNDS * pruned.len()) as u64,
        &format!("{} pruned networks, {} rounds", pruned.len(), train_cost::ROUNDS),
    );
    let nets: Vec<(&crate::ir::Model, usize)> = pruned.iter().map(|(_, p)| (p, a.batch)).collect();
    let measured = train_cost::measure_rounds(&exe, &nets, device, a.precision, train_cost::ROUNDS, || bar.inc(1))?;
    bar.finish_and_clear();
    for ((what, pruned), (step_ms, peak)) in pruned.into_iter().zip(measured) {
        let p = table.predict(&pruned.graph)?;
        let features = crate::analysis::train_cost::Features::of(&table.units, &pruned.graph)?;
        let terms = crate::analysis::train_cost::step_row(&features, a.batch);
        let (es, em) = (100.0 * (p.step_ms - step_ms) / step_ms, 100.0 * (p.peak_bytes - peak) / peak);
        println!(
            "  {what:<36} step measured {step_ms:.1} ms, predicted {:.1} ms ({es:+.1}%); peak measured {}, predicted {} ({em:+.1}%)",
            p.step_ms,
            memory::human(peak as u64),
            memory::human(p.peak_bytes as u64)
        );
        rows.push((what, step_ms, p.step_ms, es, peak, p.peak_bytes, em, terms));
    }
    anyhow::ensure!(!rows.is_empty(), "--networks must be at least 1");
    // The step model's terms too, so that another model can be fitted and checked on these rows.
    let mut csv = format!(
        "network,pruned,step_ms_measured,step_ms_predicted,step_error_percent,peak_bytes_measured,peak_bytes_predicted,peak_error_percent,{}\n",
        crate::analysis::train_cost::STEP_TERMS.join(",")
    );
    for (w, sm, sp, es, pm, pp, em, terms) in &rows {
        let terms: Vec<String> = terms.iter().map(|t| format!("{t:.6}")).collect();
        csv += &format!("{},{w},{sm:.3},{sp:.3},{es:.2},{pm:.0},{pp:.0},{em:.2},{}\n", table.network, terms.join(","));
    }
    let stats = |errors: Vec<f64>| {
        let abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        let mean = abs.iter().sum::<f64>() / abs.len() as f64;
        (mean, abs.iter().copied().fold(0.0, f64::max), abs.iter().filter(|v| **v <= 10.0).count())
    };
    let (sm, sx, sw) = stats(rows.iter().map(|r| r.3).collect());
    let (mm, mx, mw) = stats(rows.iter().map(|r| r.6).collect());
    let n = rows.len();
    let mut md = format!(
        "# Training-cost model of {} at batch {}\n\nMade by `edgeprune {}`: {} on {}, {} threads; each pruned \
         network's step time (the fastest of {} processes' medians of {} steps after {}, in rounds over the networks) and peak resident size (their median) each measured in processes of its own.\n\n\
         Step time: mean absolute error {sm:.1}%, max {sx:.1}%, {sw} of {n} within 10%. \
         Peak memory: mean absolute error {mm:.1}%, max {mx:.1}%, {mw} of {n} within 10%.\n\n\
         | pruned | step ms measured | predicted | error | peak MiB measured | predicted | error |\n|---|---:|---:|---:|---:|---:|---:|\n",
        table.network,
        a.batch,
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        table.key.runtime,
        table.key.device,
        table.key.threads,
        train_cost::ROUNDS,
        train_cost::STEPS,
        train_cost::WARMUP_STEPS,
    );
    let mib = |b: f64| b / (1u64 << 20) as f64;
    for (w, sm, sp, es, pm, pp, em, _) in &rows {
        md += &format!("| {w} | {sm:.1} | {sp:.1} | {es:+.1}% | {:.0} | {:.0} | {em:+.1}% |\n", mib(*pm), mib(*pp));
    }
    crate::formats::native::write_atomic(&out.join("train-cost-model.csv"), csv.as_bytes())?;
    crate::formats::native::write_atomic(&out.join("train-cost-model.md"), md.as_bytes())?;
    println!(
        "step: mean absolute error {sm:.1}%, max {sx:.1}%, {sw} of {n} within 10%; peak: mean {mm:.1}%, max {mx:.1}%, {mw} of {n} within 10%; wrote {}",
        out.display()
    );
    Ok(())
}

/// The latency of every finished cell of a sweep, measured now (see `protocol::latency`).
fn bench_sweep_latency(a: &BenchArgs) -> Result<()> {
    use crate::protocol::latency;
    let runtime: engine::Runtime = a.runtime.parse()?;
    let root = a.sweep.as_deref().context("sweep-latency measures a sweep: give --sweep DIR")?;
    let recipe = crate::protocol::Recipe::load(&root.join("recipe.toml"))?;
    let bar = crate::train::progress(0, &format!("latency of {} at batch 1 in {runtime}", recipe.name));
    let rows = latency::measure(&recipe, root, runtime, a.steps, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let path = root.join(latency::LATENCY_CSV);
    latency::write(&path, &rows)?;
    println!("{} cells timed at batch 1 in {runtime}; wrote {}", rows.len(), path.display());
    Ok(())
}

pub(super) fn cmd_bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.batch > 0 && a.steps > 0, "--batch and --steps must be at least 1");
    let device = a.engine.apply()?;
    if a.what == "sweep-latency" {
        return bench_sweep_latency(&a);
    }
    let m = load_spec(&a.model, a.num_classes)?;
    let runtime: engine::Runtime = a.runtime.parse()?;
    anyhow::ensure!(
        runtime == engine::Runtime::Libtorch || matches!(a.what.as_str(), "infer" | "latency-table" | "latency-model"),
        "--runtime {runtime} applies to `bench infer` and the latency benchmarks only (training runs in libtorch)"
    );
    let train = match a.what.as_str() {
        "train-step" => true,
        "infer" => false,
        "data" => return bench_data(&a, &m, device),
        "latency-table" => return bench_latency_table(&a, &m, runtime, device),
        "latency-model" => return bench_latency_model(&a, &m, runtime, device),
        "train-cost" => return bench_train_cost(&a, &m, device),
        "train-cost-model" => return bench_train_cost_model(&a, &m, device),
        other => {
            anyhow::bail!(
                "unknown benchmark `{other}`: use train-step, infer, data, latency-table, latency-model, train-cost, train-cost-model or sweep-latency"
            )
        }
    };
    let est = if train { memory::training(&m.graph, a.batch, 0)? } else { memory::inference(&m.graph, a.batch, 0)? };
    let what = if train { "a train step of" } else { "inference of" };
    let limit = a.max_memory.as_deref().map(memory::parse_bytes).transpose()?;
    est.check_or_available(limit, &format!("{what} {}", m.graph.name))?;
    let r = if train {
        bench::train_step(&m, a.batch, a.steps, a.warmup, device, a.precision)?
    } else {
        bench::infer(&m, a.batch, a.steps, a.warmup, device, runtime)?
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["estimated_peak_bytes"] = est.total().into();
        println!("{v}");
    } else {
        println!(
            "{} {} batch {} in {} {} on {} ({} threads): median {:.2} ms (min {:.2}, p90 {:.2}, {} steps), {:.0} img/s, peak RSS {} (estimated {})",
            r.what,
            r.model,
            r.batch,
            r.runtime,
            r.precision,
            r.device,
            r.threads,
            1e3 * r.step_seconds.median,
            1e3 * r.step_seconds.min,
            1e3 * r.step_seconds.p90,
            r.step_seconds.count,
            r.images_per_second,
            r.peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)),
            memory::human(est.total())
        );
    }
    Ok(())
}
