//! `edgeprune bench`: a training step or inference on synthetic data, timed.

use super::*;

#[derive(Args)]
pub struct BenchArgs {
    /// train-step, infer, or data (the training loader on --data, fitted to the model, next to a
    /// train step of the same batch).
    pub what: String,
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
    /// Refuse to run if the estimated peak memory exceeds this many bytes (suffixes K, M, G).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The training loader's time per batch next to a training step's, on the same model and batch.
fn bench_data(a: &BenchArgs, m: &crate::ir::Model, device: Device) -> Result<()> {
    let data = RunData::load(a.data.as_deref(), &[], 1.0, m.graph.input_shape()?)?;
    let d = bench::data(m, &data, a.batch, a.steps, a.warmup.max(4))?;
    let resident = crate::metrics::resident_bytes();
    let held = data.train.images.owned_bytes();
    let s = bench::train_step(m, a.batch, a.steps, a.warmup, device)?;
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

pub(super) fn cmd_bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.batch > 0 && a.steps > 0, "--batch and --steps must be at least 1");
    let device = a.engine.apply()?;
    let m = load_spec(&a.model, a.num_classes)?;
    let runtime: engine::Runtime = a.runtime.parse()?;
    anyhow::ensure!(
        runtime == engine::Runtime::Libtorch || a.what == "infer",
        "--runtime {runtime} applies to `bench infer` only (training runs in libtorch)"
    );
    let train = match a.what.as_str() {
        "train-step" => true,
        "infer" => false,
        "data" => return bench_data(&a, &m, device),
        other => anyhow::bail!("unknown benchmark `{other}`: use train-step, infer or data"),
    };
    let est = if train { memory::training(&m.graph, a.batch, 0)? } else { memory::inference(&m.graph, a.batch, 0)? };
    let what = if train { "a train step of" } else { "inference of" };
    let limit = a.max_memory.as_deref().map(memory::parse_bytes).transpose()?;
    est.check_or_available(limit, &format!("{what} {}", m.graph.name))?;
    let r = if train {
        bench::train_step(&m, a.batch, a.steps, a.warmup, device)?
    } else {
        bench::infer(&m, a.batch, a.steps, a.warmup, device, runtime)?
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["estimated_peak_bytes"] = est.total().into();
        println!("{v}");
    } else {
        println!(
            "{} {} batch {} in {} on {} ({} threads): median {:.2} ms (min {:.2}, p90 {:.2}, {} steps), {:.0} img/s, peak RSS {} (estimated {})",
            r.what,
            r.model,
            r.batch,
            r.runtime,
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
