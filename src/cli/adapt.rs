//! `edgeprune adapt`: label-free adaptation of a model to a device's own unlabeled images.

use super::*;
use crate::workflow::subset::SubsetRule;
use crate::workflow::unlabeled::{self, AdaptRequest};

#[derive(Args)]
pub struct AdaptArgs {
    /// The trained model to adapt (model folder, training run folder or .onnx): it is also the
    /// teacher.
    pub model: PathBuf,
    /// The device's images: a folder of images with no class folders (any sizes), or a labelled
    /// dataset (ImageFolder, CIFAR binary, IDX) whose training images are read with their labels
    /// ignored; its labelled test images are then what the adapted model is tested on.
    #[arg(long)]
    pub data: PathBuf,
    /// With a labelled dataset: the classes the device sees (its training images of these
    /// classes are the local images; the inferred classes are compared with them).
    #[arg(long, value_delimiter = ',')]
    pub subset: Vec<String>,
    /// Names of the model's classes, in output order, for a folder of unlabeled images (default
    /// class0, class1, ...); a labelled dataset names its own.
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// Percent of the model's parameters to remove.
    #[arg(long)]
    pub level: f64,
    /// Importance criterion: paper, l1, l2, bn, taylor (on the teacher's pseudo-labels),
    /// activation, apoz, random.
    #[arg(long, default_value = "paper")]
    pub criterion: crate::criteria::Criterion,
    /// A prediction counts as confident from this top softmax probability.
    #[arg(long, default_value_t = SubsetRule::default().min_confidence)]
    pub min_confidence: f64,
    /// A class is seen when it holds at least this share of the confident predictions.
    #[arg(long, default_value_t = SubsetRule::default().min_share)]
    pub min_share: f64,
    /// Distillation temperature.
    #[arg(long, default_value_t = train::DistillConfig::default().temperature)]
    pub temperature: f64,
    /// Weight of the distillation term (the rest: cross-entropy on confident pseudo-labels).
    #[arg(long, default_value_t = train::DistillConfig::default().alpha)]
    pub alpha: f64,
    /// Epochs in all (fine-tuning, then retraining after the prune).
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Fine-tuning epochs before pruning (the protocol's n_f).
    #[arg(long, default_value_t = 1)]
    pub fine_tune_epochs: usize,
    /// Learning-rate schedule "epoch lr ..." over all epochs (default: the protocol's data-aware
    /// schedule for the model's architecture, scaled to --epochs).
    #[arg(long)]
    pub lr_schedule: Option<String>,
    /// Architecture whose protocol schedule and weight decay apply (default: the graph's name).
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Each epoch trains on this share of the local images (0 < F <= 1).
    #[arg(long, value_name = "F")]
    pub epoch_fraction: Option<f64>,
    /// Stop each epoch after this many batches (quick trials).
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// The share of the local images that trains; the rest validates (agreement with the teacher).
    #[arg(long, default_value_t = crate::data::PROTOCOL_TRAIN_FRACTION)]
    pub train_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Precision of the training steps: fp32, bf16 or auto.
    #[arg(long, default_value = "fp32")]
    pub precision: crate::engine::Precision,
    /// Output folder: the adapted model (model/), its plan, the two training runs, inferred.json
    /// and adapt.json.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Continue an adaptation this command began in --out (an interrupted one resumes its run).
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub(super) fn cmd_adapt(a: AdaptArgs) -> Result<()> {
    use crate::surgery::planner::{Limits, Scope, Target};
    let device = a.engine.apply()?;
    outdir::check_not_input(&a.out, "-o", &[&a.model, &a.data])?;
    let hint = "--resume to continue it";
    outdir::check(
        &a.out,
        outdir::Kind::Adaptation,
        if a.resume { outdir::Existing::Accept } else { outdir::Existing::Refuse },
        hint,
    )?;
    let model_path = train::RunDir::model_path(&a.model);
    let teacher = formats::load_model(&model_path)?;
    teacher.check_finite()?;
    let input = teacher.graph.input_shape()?.to_vec();
    let k = engine::infer(&teacher, device)?.num_outputs()?;

    // The local images: a labelled dataset read with its labels ignored, or a folder of images.
    let labelled = crate::data::Source::detect(&a.data).is_ok();
    let local = if labelled {
        RunData::load(Some(&a.data), &a.subset, 1.0, &input)?
    } else {
        anyhow::ensure!(
            a.subset.is_empty(),
            "--subset names classes of a labelled dataset, but {} holds unlabeled images",
            a.data.display()
        );
        let target = crate::data::fit::Target::of_input(&input)?;
        let mut pool = crate::data::load_unlabeled(&a.data, target)?;
        pool.classes = if a.class_names.is_empty() {
            (0..k).map(|c| format!("class{c}")).collect()
        } else {
            anyhow::ensure!(
                a.class_names.len() == k,
                "--class-names gives {} names for the model's {k} classes",
                a.class_names.len()
            );
            a.class_names.clone()
        };
        let (mean, std) = pool.channel_stats();
        RunData {
            test: pool.clone(),
            val: None,
            classes: (0..k).collect(),
            class_names: pool.classes.clone(),
            num_dataset_classes: k,
            stats: crate::data::Normalize { mean, std },
            train: pool,
        }
    };
    let truth = (labelled && !a.subset.is_empty()).then(|| local.classes.clone());

    let arch = a.arch.clone().unwrap_or_else(|| teacher.graph.name.clone());
    let (weight_decay, schedule) = match &a.lr_schedule {
        Some(s) => (1e-4, s.parse()?),
        None => {
            let r = crate::protocol::recipe::aware_defaults(&arch, a.epochs).with_context(|| {
                format!("no protocol schedule for `{arch}`: give --lr-schedule (and --arch for its weight decay)")
            })?;
            (r.weight_decay, r.aware)
        }
    };
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr_schedule: schedule,
        weight_decay,
        train_fraction: a.train_fraction,
        max_batches: a.max_batches,
        epoch_fraction: a.epoch_fraction,
        seed: a.seed,
        threads: engine::threads(),
        device,
        precision: a.precision,
        distill: Some(train::DistillConfig {
            temperature: a.temperature,
            alpha: a.alpha,
            ..train::DistillConfig::default()
        }),
        ..TrainConfig::default()
    };
    let req = AdaptRequest {
        teacher: model_path,
        rule: SubsetRule { min_confidence: a.min_confidence, min_share: a.min_share },
        train_fraction: a.train_fraction,
        prune: crate::workflow::PruneRequest {
            criterion: a.criterion,
            scope: Scope::Global,
            target: Target::Params(a.level),
            limits: Limits::default(),
            batch_size: a.batch_size,
            max_batches: 20,
            seed: a.seed,
            device,
        },
        train: cfg,
        fine_tune_epochs: a.fine_tune_epochs,
    };
    req.prune.check()?;
    outdir::claim(&a.out, outdir::Kind::Adaptation, outdir::Existing::Accept, hint)?;
    let r = unlabeled::adapt(&req, local, labelled, truth.as_deref(), &a.out)?;
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
    println!("inferred classes: {}", r.found.class_names.join(", "));
    if truth.is_some() {
        println!("  against the given subset: precision {} recall {}", pct(r.found.precision), pct(r.found.recall));
    }
    println!(
        "parameters {} -> {} ({:.1}% removed), GOps {:.4} -> {:.4}",
        r.params_before,
        r.params_after,
        100.0 * (1.0 - r.params_after as f64 / r.params_before.max(1) as f64),
        r.gops_before,
        r.gops_after
    );
    println!(
        "agreement with the teacher on {} held-out local images: fine-tuned {}, adapted {} (epoch {})",
        r.held_out,
        pct(r.agreement_fine_tuned),
        pct(r.agreement),
        r.best_epoch.map_or("-".into(), |e| e.to_string())
    );
    if let Some(t) = r.test_top1 {
        println!("test top-1 on the labelled test images of those classes: {:.2}%", 100.0 * t);
    }
    println!("training {:.0}s, pruning {:.1}s; adapted model: {}", r.train_seconds, r.prune_seconds, r.model.display());
    Ok(())
}
