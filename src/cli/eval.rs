//! `edgeprune eval`: top-1/top-5 of a model on a split, non-finite outputs reported.

use super::*;

#[derive(Args)]
pub struct EvalArgs {
    /// Model folder, .onnx file, or a training run folder (its best model).
    pub model: PathBuf,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_delimiter = ',')]
    pub subset: Vec<String>,
    /// test, train (the 80% that trains), or val (the held-out 20% of the training split).
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when some outputs are NaN or infinite (they always count as wrong).
    #[arg(long)]
    pub allow_non_finite: bool,
    /// libtorch (the engine) or ort (ONNX Runtime, on the model as `edgeprune export` writes it).
    #[arg(long, default_value = "libtorch")]
    pub runtime: String,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The images `eval` scores `model` on: `split` of the data (with `subset`), fitted to the
/// model's input as evaluation fits them, and the normalisation it applies (the model's, or
/// recorded into the model from the training split's statistics).
pub(super) fn eval_split(
    model: &mut Model,
    data: Option<&Path>,
    subset: &[String],
    split: &str,
) -> Result<(crate::data::Dataset, crate::ir::Normalize)> {
    let input = model.graph.input_shape()?.to_vec();
    let (ds, stats) = if train::has_train_split(data)? {
        let d = RunData::load(data, subset, crate::data::PROTOCOL_TRAIN_FRACTION, &input)?;
        let ds = match split {
            "test" => d.test,
            "train" => d.train.center_crop(model.graph.image_size()?),
            "val" => d.val.context("no validation split")?,
            other => anyhow::bail!("--split must be test, train or val, got `{other}`"),
        };
        (ds, Some(d.stats))
    } else {
        anyhow::ensure!(split == "test", "the data has only a test/ folder: --split test is the one there is");
        (train::load_test_only(data, subset, &input)?, None)
    };
    let stats = match stats {
        Some(s) => s,
        None => model.graph.normalize.clone().context(
            "the model records no input normalisation and the data has no train/ folder to compute it from: \
             give the model the one it was trained with (edgeprune import --mean ... --std ...)",
        )?,
    };
    let norm = train::model_normalize(model, &stats)?;
    Ok((ds, norm))
}

pub(super) fn cmd_eval(a: EvalArgs) -> Result<()> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let device = a.engine.apply()?;
    let mut model = formats::load_model(&train::RunDir::model_path(&a.model))?;
    let (ds, norm) = eval_split(&mut model, a.data.as_deref(), &a.subset, &a.split)?;
    let ds = &ds;
    let runtime: engine::Runtime = a.runtime.parse()?;
    let net = engine::infer_with(&model, device, runtime)?;
    let t = std::time::Instant::now();
    let s = train::evaluate(&*net, ds, &norm, a.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{}: {} images of {} ({} classes): top-1 {:.2}%  top-5 {:.2}%  loss {}  ({:.1}s in {runtime})",
            a.model.display(),
            s.count,
            a.split,
            ds.labels.iter().collect::<std::collections::BTreeSet<_>>().len(),
            100.0 * s.top1,
            100.0 * s.top5,
            // The mean over finite outputs only would flatter a broken model: not shown.
            if s.is_finite() { format!("{:.4}", s.loss) } else { "- (non-finite outputs)".into() },
            t.elapsed().as_secs_f64()
        );
    }
    // A model with a non-finite weight is broken even where some outputs happen to be finite
    // (an infinite weight times a zero input is NaN, times a negative one may be ReLU'd away).
    let broken = model.check_finite().err();
    if s.non_finite > 0 || broken.is_some() {
        let msg = format!(
            "{} of {} images gave NaN or infinite outputs{}; they are counted as wrong predictions",
            s.non_finite,
            s.count,
            broken.map_or(String::new(), |e| format!(" ({e})"))
        );
        anyhow::ensure!(a.allow_non_finite, "{msg} (--allow-non-finite to exit 0 anyway)");
        eprintln!("warning: {msg}");
    }
    Ok(())
}
