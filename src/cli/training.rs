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
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub device: Option<crate::engine::Device>,
    /// Checkpoint after every N epochs (and always after the last and the best).
    #[arg(long, value_name = "N")]
    pub checkpoint_epochs: Option<usize>,
    /// Also checkpoint every M minutes, between batches if need be.
    #[arg(long, value_name = "M")]
    pub checkpoint_minutes: Option<f64>,
    /// Refuse to start if the estimated peak memory exceeds this many bytes (suffixes K, M, G).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Run folder to write: a new or empty folder, or (with --resume or --overwrite) a run
    /// folder of edgeprune's. A folder holding anything else is refused.
    #[arg(short, long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Replace the finished or interrupted run that --out holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Continue an interrupted run from its newest checkpoint: the folder given, else --out.
    /// Its config.toml is used; only --epochs (to extend the run), --data (moved), --threads,
    /// the checkpoint frequency and --max-memory may change.
    #[arg(long, value_name = "RUN_DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
}

pub(super) fn cmd_train(a: TrainArgs) -> Result<()> {
    let resume = a.resume.is_some();
    let out = a.resume.clone().flatten().unwrap_or_else(|| a.out.clone());
    let mut cfg = if resume {
        let cfg = TrainConfig::from_toml_file(&train::RunDir::new(&out).config())?;
        for (given, flag) in [
            (a.config.is_some(), "--config"),
            (a.model.is_some(), "--model"),
            (a.subset.is_some(), "--subset"),
            (a.batch_size.is_some(), "--batch-size"),
            (a.lr_schedule.is_some(), "--lr-schedule"),
            (a.seed.is_some(), "--seed"),
            (a.max_batches.is_some(), "--max-batches"),
            (a.momentum.is_some(), "--momentum"),
            (a.weight_decay.is_some(), "--weight-decay"),
            (a.train_fraction.is_some(), "--train-fraction"),
            (a.num_classes.is_some(), "--num-classes"),
            (a.no_augment, "--no-augment"),
            (a.device.is_some(), "--device"),
        ] {
            anyhow::ensure!(!given, "{flag} cannot change when resuming: the run keeps its config.toml");
        }
        cfg
    } else if let Some(p) = &a.config {
        TrainConfig::from_toml_file(p)?
    } else {
        TrainConfig::default()
    };
    if let Some(e) = a.epochs {
        cfg.epochs = e; // extending a finished run is allowed
    }
    if a.data.is_some() {
        cfg.data = a.data.clone(); // the same data may have moved
    }
    if let Some(t) = a.threads {
        cfg.threads = t;
    }
    if let Some(n) = a.checkpoint_epochs {
        cfg.checkpoint_epochs = n;
    }
    if a.checkpoint_minutes.is_some() {
        cfg.checkpoint_minutes = a.checkpoint_minutes;
    }
    if let Some(m) = &a.max_memory {
        cfg.max_memory = Some(memory::parse_bytes(m)?);
    }
    if !resume {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { cfg.$f = v.into(); } )* };
        }
        set!(model, batch_size, momentum, weight_decay, train_fraction, seed, device);
        if let Some(s) = &a.subset {
            cfg.subset = s.clone();
        }
        if let Some(s) = &a.lr_schedule {
            cfg.lr_schedule = s.parse()?;
        }
        if a.num_classes.is_some() {
            cfg.num_classes = a.num_classes;
        }
        if a.max_batches.is_some() {
            cfg.max_batches = a.max_batches;
        }
        if a.no_augment {
            cfg.augment = false;
        }
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
