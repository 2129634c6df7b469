//! `edgeprune train`: training and fine-tuning runs, fresh, replaced or resumed.

use super::*;

#[derive(Args)]
pub struct TrainArgs {
    /// A TOML recipe; flags below override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Zoo name or model folder to start from.
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Comma-separated class (or CIFAR-100 superclass) names to train on.
    #[arg(long, value_delimiter = ',')]
    pub subset: Option<Vec<String>>,
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Piecewise-constant schedule "epoch lr epoch lr ...", e.g. "0 0.1 20 0.01 30 0.001".
    #[arg(long)]
    pub lr_schedule: Option<String>,
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Fraction of each class's training images used to train; the rest validates.
    #[arg(long)]
    pub train_fraction: Option<f64>,
    /// Output classes of a zoo network (default: the dataset's class count).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Disable random-crop and flip augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Stop each epoch after this many batches (quick trials).
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Train each epoch on this share of the training split, drawn afresh each epoch (0 < F <= 1).
    #[arg(long, value_name = "F")]
    pub epoch_fraction: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub device: Option<crate::engine::Device>,
    /// Precision of the training steps: fp32 (default), bf16 (mixed precision: convolutions and
    /// linear layers in bf16, weights, BatchNorm statistics and the loss in fp32) or auto (bf16
    /// where the CPU has bf16 instructions). A resumed run keeps the precision it began with.
    #[arg(long, value_name = "P")]
    pub precision: Option<crate::engine::Precision>,
    /// Checkpoint after every N epochs (and always after the last and the best).
    #[arg(long, value_name = "N")]
    pub checkpoint_epochs: Option<usize>,
    /// Also checkpoint every M minutes, between batches if need be.
    #[arg(long, value_name = "M")]
    pub checkpoint_minutes: Option<f64>,
    /// Refuse to start if the estimated peak memory exceeds this many bytes (suffixes K, M, G).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Refuse to start if the training left is predicted to take more than M minutes (on this
    /// device's training-cost table: `bench train-cost`).
    #[arg(long, value_name = "M")]
    pub max_train_minutes: Option<f64>,
    /// Refuse to start if a training step is predicted to take more than MS milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_step_ms: Option<f64>,
    /// With --max-train-minutes: instead of refusing, train each epoch on the largest share of
    /// the training split that fits the budget.
    #[arg(long)]
    pub fit_to_budget: bool,
    /// The training-cost table to predict with (default: the cache's, of this network or the one
    /// it was pruned from).
    #[arg(long, value_name = "FILE")]
    pub cost_table: Option<PathBuf>,
    /// Run folder to write: a new or empty folder, or (with --resume or --overwrite) a run
    /// folder of edgeprune's. A folder holding anything else is refused.
    #[arg(short, long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Replace the finished or interrupted run that --out holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue an interrupted run from its newest checkpoint: the folder given, else --out.
    /// Its config.toml is used; only --epochs (to extend the run), --data (moved), --threads,
    /// the checkpoint frequency and the budgets may change (and --precision, if it is the run's).
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
}

pub(super) fn cmd_train(a: TrainArgs) -> Result<()> {
    let resume = a.resume.is_some();
    let out = a.resume.clone().flatten().unwrap_or_else(|| a.out.clone());
    let mut cfg = if resume {
        anyhow::ensure!(a.config.is_none(), "--config cannot change when resuming: the run keeps its config.toml");
        TrainConfig::from_toml_file(&train::RunDir::new(&out).config())?
    } else if let Some(p) = &a.config {
        TrainConfig::from_toml_file(p)?
    } else {
        TrainConfig::default()
    };
    let overrides = train::Overrides {
        model: a.model.clone(),
        data: a.data.clone(),
        subset: a.subset.clone(),
        num_classes: a.num_classes,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr_schedule: a.lr_schedule.as_deref().map(str::parse).transpose()?,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        train_fraction: a.train_fraction,
        no_augment: a.no_augment,
        max_batches: a.max_batches,
        epoch_fraction: a.epoch_fraction,
        seed: a.seed,
        threads: a.threads,
        device: a.device,
        precision: a.precision,
        checkpoint_epochs: a.checkpoint_epochs,
        checkpoint_minutes: a.checkpoint_minutes,
        max_memory: a.max_memory.as_deref().map(memory::parse_bytes).transpose()?,
        max_train_minutes: a.max_train_minutes,
        max_step_ms: a.max_step_ms,
        fit_to_budget: a.fit_to_budget,
        cost_table: a.cost_table.clone(),
    };
    cfg.apply(overrides, resume)?;
    if !resume {
        // --overwrite replaces the run folder: it must not hold the model or data the run reads.
        let mut inputs: Vec<&Path> = vec![Path::new(&cfg.model)];
        inputs.extend(cfg.data.as_deref());
        outdir::check_not_input(&out, "-o", &inputs)?;
    }
    let mode = match (resume, a.overwrite) {
        (true, true) => anyhow::bail!("--resume continues a run and --overwrite replaces it: give one"),
        (true, false) => train::OutMode::Resume,
        (false, true) => train::OutMode::Overwrite,
        (false, false) => train::OutMode::Fresh,
    };
    let s = train::train(&cfg, &out, mode)?;
    println!(
        "done: {} epochs in {:.0}s; best epoch {} (val top-1 {}), test top-1 at best val {}, final test top-1 {:.2}%",
        s.epochs,
        s.seconds,
        s.best_epoch.map_or("-".into(), |e| e.to_string()),
        s.best_val_top1.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
        s.test_top1_at_best_val.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
        100.0 * s.final_test.top1
    );
    println!("run folder: {} (best model in {})", out.display(), train::best_model_dir(&out).display());
    Ok(())
}
