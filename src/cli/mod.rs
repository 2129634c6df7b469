//! The command line: parses, calls the library, prints. No logic of its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::analysis::{self, memory};
use crate::engine::{self, Device, Network};
use crate::formats::{self, native, outdir};
use crate::ir::Model;
use crate::metrics::bench;
use crate::protocol::{self, Recipe, report, sweep};
use crate::train::{self, RunData, TrainConfig};
use crate::zoo;

#[derive(Parser)]
#[command(
    name = "edgeprune",
    version,
    about = "Prune and retrain a CNN on the device that runs it, with the device's own data",
    long_about = "Prune and retrain a CNN on the device that runs it, with the device's own data.\n\n\
        MODEL arguments take a model folder (graph.json + weights.safetensors), an ONNX file (.onnx) \
        or, where a fresh network makes sense, a zoo name: alexnet, resnet20, resnet56, mobilenetv2, \
        squeezenet.\n\
        Data is looked for in --data, then $EDGEPRUNE_DATA, ./data and ../shared/data: CIFAR-10/100 \
        binary folders, or an ImageFolder layout {train,test}/<class>/*.jpg as a folder or .tar.gz."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train or fine-tune a model; writes a run folder (config.toml, log.csv, best/, checkpoints/,
    /// summary.json).
    Train(TrainArgs),
    /// Evaluate a model's top-1/top-5 accuracy on a dataset split, optionally on a class subset.
    Eval(EvalArgs),
    /// Print a per-layer table: output shape, parameters, GOps, and the totals.
    Inspect(InspectArgs),
    /// Find the pruning groups: the sets of channels that must be removed together.
    Analyze(InspectArgs),
    /// Rank channels, make a pruning plan, remove the channels physically, write the smaller model.
    Prune(PruneArgs),
    /// Run the ADaPT experiment grid of a recipe (networks x subsets x levels x seeds x pipelines);
    /// resumes an interrupted sweep without redoing finished cells.
    Experiment(ExperimentArgs),
    /// DaPR: binary-search the largest pruning level whose data-aware accuracy on a subset still
    /// reaches the unpruned model's.
    Search(SearchArgs),
    /// Write a sweep's tables and plots (accuracy vs level and vs GOps, deltas, the paper's summary).
    Report(ReportArgs),
    /// Run one cell of a sweep (used by `experiment`, which runs each cell in its own process).
    #[command(hide = true)]
    Cell(CellArgs),
    /// Write a zoo network with freshly initialised weights as a model folder.
    Init(InitArgs),
    /// Import an ONNX model (opsets 13-18, as torch.onnx.export writes them) as a model folder.
    Import(ImportArgs),
    /// Write a 10-class 32x32 dataset (e.g. an ImageFolder .tar.gz of JPEGs) in the CIFAR-10
    /// binary format, so that other tools read exactly the pixels edgeprune reads.
    ConvertData(ConvertDataArgs),
    /// Export a model to ONNX (opset 17, dynamic batch), BatchNorm kept or folded.
    Export(ExportArgs),
    /// Benchmark the engine: a training step or inference on synthetic data.
    Bench(BenchArgs),
}

#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Compute device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads for libtorch (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl EngineArgs {
    fn apply(&self) -> Result<Device> {
        if let Some(t) = self.threads {
            anyhow::ensure!(t > 0, "--threads must be at least 1");
            engine::set_threads(t);
        }
        Ok(self.device.parse()?)
    }
}

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
    pub device: Option<String>,
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

#[derive(Args)]
pub struct EvalArgs {
    /// Model folder.
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
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Model folder or zoo name.
    pub model: String,
    /// A second model (e.g. the unpruned original) to show side by side, layer by layer.
    #[arg(long)]
    pub against: Option<String>,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Model folder or zoo name.
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
    pub criterion: String,
    /// global: one ranking over all channels (the paper); layer: the same share from every group.
    #[arg(long, default_value = "global")]
    pub scope: String,
    /// Every layer keeps at least this many channels.
    #[arg(long, default_value_t = 2)]
    pub min_channels: usize,
    /// A residual group keeps at least this share of its channels.
    #[arg(long, default_value_t = 0.25)]
    pub residual_min_share: f64,
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
    #[command(flatten)]
    pub engine: EngineArgs,
}

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
}

#[derive(Args)]
pub struct ReportArgs {
    /// A sweep folder (holding cells.csv).
    pub run: PathBuf,
    /// Where to write the report (default: RUN/report).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct CellArgs {
    #[arg(long)]
    pub recipe: PathBuf,
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub cell: String,
}

#[derive(Args)]
pub struct InitArgs {
    /// Zoo network name.
    pub network: String,
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Output model folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
    /// The per-channel mean the network was trained with, on pixels scaled to [0, 1]
    /// (e.g. 0.4914,0.4822,0.4465); ONNX files do not carry it. Without it, edgeprune uses the
    /// statistics of the training data it is given.
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Option<Vec<f32>>,
    /// The per-channel standard deviation that goes with --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Option<Vec<f32>>,
}

#[derive(Args)]
pub struct ConvertDataArgs {
    /// Dataset to read (any layout edgeprune reads; default: the usual search).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace what an earlier run of this command wrote there (never files edgeprune did not write).
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Model folder, .onnx file or zoo name.
    pub model: String,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    /// Fold each BatchNorm into the convolution before it (inference only).
    #[arg(long)]
    pub fold_bn: bool,
    /// The ONNX file to write.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    /// train-step or infer.
    pub what: String,
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
    /// Refuse to run if the estimated peak memory exceeds this many bytes (suffixes K, M, G).
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Analyze(a) => cmd_analyze(a),
        Command::Prune(a) => cmd_prune(a),
        Command::Init(a) => {
            let m = Model::init(zoo::build(&a.network, a.num_classes)?, a.seed)?;
            claim_model_dir(&a.out, a.overwrite, &[])?;
            save_model(&m, &a.out)?;
            println!("wrote {} ({} parameters) to {}", a.network, m.graph.num_parameters(), a.out.display());
            Ok(())
        }
        Command::Import(a) => {
            let mut m = formats::onnx::load(&a.onnx)?;
            if let (Some(mean), Some(std)) = (a.mean, a.std) {
                m.graph.normalize = Some(crate::ir::Normalize { mean, std });
                m.graph.infer_shapes().context("--mean/--std")?;
            }
            claim_model_dir(&a.out, a.overwrite, &[&a.onnx])?;
            save_model(&m, &a.out)?;
            println!(
                "imported {} ({} nodes, {} parameters) to {}",
                a.onnx.display(),
                m.graph.nodes.len(),
                m.graph.num_parameters(),
                a.out.display()
            );
            Ok(())
        }
        Command::ConvertData(a) => {
            let data_path = crate::data::locate(a.data.as_deref())?;
            outdir::check_not_input(&a.out, "-o", &[&data_path])?;
            outdir::check(&a.out, outdir::Kind::Data, existing(a.overwrite), OVERWRITE_HINT)?;
            let src = crate::data::Source::detect(&data_path)?;
            let (train, test) = (src.load(crate::data::Split::Train)?, src.load(crate::data::Split::Test)?);
            outdir::claim(&a.out, outdir::Kind::Data, outdir::Existing::Accept, "")?;
            crate::data::write_cifar10_binary(&train, &test, &a.out)?;
            println!(
                "wrote {} train and {} test images in the CIFAR-10 binary format to {}",
                train.len(),
                test.len(),
                a.out.display()
            );
            Ok(())
        }
        Command::Export(a) => {
            outdir::check_not_input(&a.out, "-o", &[Path::new(&a.model)])?;
            outdir::claim_file(&a.out, a.overwrite)?;
            let m = load_spec(&a.model, a.num_classes)?;
            formats::export_onnx(&m, &a.out, a.fold_bn)?;
            println!(
                "exported {} ({} parameters{}) to {}",
                a.model,
                m.graph.num_parameters(),
                if a.fold_bn { ", BatchNorm folded" } else { "" },
                a.out.display()
            );
            Ok(())
        }
        Command::Bench(a) => cmd_bench(a),
        Command::Experiment(a) => {
            let recipe = Recipe::load(&a.recipe)?;
            let root = sweep::root_of(&recipe, a.out.as_deref());
            let rows = sweep::run(&recipe, &root, &a.only, a.in_process)?;
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
        Command::Search(a) => {
            let recipe = Recipe::load(&a.recipe)?;
            let root = sweep::root_of(&recipe, a.out.as_deref());
            let r = protocol::search::search(&recipe, &root, &a.network, &a.subset, a.seed, a.in_process)?;
            for p in &r.probes {
                println!(
                    "probe {:>4.0}%: {:6.2}% ({}) {:>5.0} epochs {:>7.0}s",
                    p.level,
                    100.0 * p.test_top1,
                    if p.reaches_reference { "reaches" } else { "short" },
                    p.epochs,
                    p.seconds
                );
            }
            match r.level {
                Some(l) => println!(
                    "DaPR level for {}/{}: {l}% (reference {:.2}%), {} probes, {:.0} epochs, {:.0}s",
                    r.network,
                    r.subset,
                    100.0 * r.reference_top1,
                    r.probes.len(),
                    r.total_epochs,
                    r.total_seconds
                ),
                None => println!(
                    "no level in 5..95 reaches the reference {:.2}% for {}/{}",
                    100.0 * r.reference_top1,
                    r.network,
                    r.subset
                ),
            }
            native::write_atomic(
                &root.join(format!("search-{}-{}.json", r.network, r.subset)),
                serde_json::to_string_pretty(&r)?.as_bytes(),
            )?;
            Ok(())
        }
        Command::Report(a) => {
            let cells = report::read_cells(&a.run.join("cells.csv"))?;
            let out = a.out.unwrap_or_else(|| a.run.join("report"));
            // A report replaces the report it regenerates, never a folder of anything else.
            outdir::claim(&out, outdir::Kind::Report, outdir::Existing::Accept, "")?;
            let summary = report::write_report(&cells, &out)?;
            println!("report written to {}", out.display());
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Cell(a) => {
            let recipe = Recipe::load(&a.recipe)?;
            let id: protocol::pipeline::CellId = a.cell.parse()?;
            protocol::pipeline::run_cell(&recipe, &a.root, &id)?;
            Ok(())
        }
    }
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let resume = a.resume.is_some();
    let out = a.resume.clone().flatten().unwrap_or_else(|| a.out.clone());
    let mut cfg = if resume {
        let cfg = TrainConfig::from_toml_file(&out.join("config.toml"))?;
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

fn cmd_eval(a: EvalArgs) -> Result<()> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let device = a.engine.apply()?;
    let mut model = formats::load_model(&a.model)?;
    let data = RunData::load(a.data.as_deref(), &a.subset, 0.8)?;
    let ds = match a.split.as_str() {
        "test" => &data.test,
        "train" => &data.train,
        "val" => data.val.as_ref().context("no validation split")?,
        other => anyhow::bail!("--split must be test, train or val, got `{other}`"),
    };
    let norm = train::model_normalize(&mut model, &data.stats);
    let net = Network::new(&model, device)?;
    let t = std::time::Instant::now();
    let s = train::evaluate(&net, ds, &norm, a.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{}: {} images of {} ({} classes): top-1 {:.2}%  top-5 {:.2}%  loss {}  ({:.1}s)",
            a.model.display(),
            s.count,
            a.split,
            data.classes.len(),
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

const OVERWRITE_HINT: &str = "--overwrite to replace it";

fn existing(overwrite: bool) -> outdir::Existing {
    if overwrite { outdir::Existing::Accept } else { outdir::Existing::Refuse }
}

/// A model folder output: not one of `inputs`, and new, empty, or (with --overwrite) a model
/// folder edgeprune wrote. Only checked: [`save_model`] makes it.
fn claim_model_dir(out: &Path, overwrite: bool, inputs: &[&Path]) -> Result<()> {
    outdir::check_not_input(out, "-o", inputs)?;
    outdir::check(out, outdir::Kind::Model, existing(overwrite), OVERWRITE_HINT)?;
    Ok(())
}

/// Writes a model folder that [`claim_model_dir`] checked.
fn save_model(m: &Model, out: &Path) -> Result<()> {
    outdir::claim(out, outdir::Kind::Model, outdir::Existing::Accept, "")?;
    Ok(native::save(m, out)?)
}

fn load_spec(spec: &str, num_classes: usize) -> Result<Model> {
    Ok(train::load_or_build(spec, num_classes, 0)?)
}

fn cmd_inspect(a: InspectArgs) -> Result<()> {
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
    Ok(())
}

fn cmd_analyze(a: InspectArgs) -> Result<()> {
    let m = load_spec(&a.model, a.num_classes)?;
    let groups = analysis::groups(&m.graph)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(());
    }
    let names = |ms: &[analysis::Member]| ms.iter().map(|p| p.node.as_str()).collect::<Vec<_>>().join(" ");
    println!("{:<24} {:>5}  {:<9} producers -> consumers", "group", "size", "prunable");
    for g in &groups {
        let kind = match (&g.frozen, g.joins) {
            (Some(_), _) => "no",
            (None, 0) => "yes",
            (None, _) => "residual",
        };
        println!("{:<24} {:>5}  {:<9} {} -> {}", g.name, g.size, kind, names(&g.producers), names(&g.consumers));
        if let Some(why) = &g.frozen {
            println!("{:<24} {:>5}  {:<9} ({why})", "", "", "");
        }
    }
    let prunable: usize = groups.iter().filter(|g| g.prunable()).map(|g| g.size).sum();
    println!("{} groups, {} prunable channels", groups.len(), prunable);
    Ok(())
}

fn cmd_prune(a: PruneArgs) -> Result<()> {
    use crate::criteria::{self, Criterion, DataPass};
    use crate::surgery::planner::{self, Limits, Scope, Target};
    use crate::surgery::{self, Plan};

    let device = a.engine.apply()?;
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
    let t0 = std::time::Instant::now();
    let plan = if let Some(p) = &a.plan {
        Plan::load(p)?
    } else {
        let target = match (a.level, a.gops_level, &a.channels) {
            (Some(l), None, None) => Target::Params(l),
            (None, Some(l), None) => Target::Gops(l),
            (None, None, Some(list)) => {
                let mut counts = std::collections::BTreeMap::new();
                for item in list {
                    let (k, v) = item
                        .rsplit_once('=')
                        .with_context(|| format!("--channels item `{item}` is not group=count"))?;
                    let n = v.parse::<usize>().with_context(|| format!("--channels item `{item}`"))?;
                    if let Some(old) = counts.insert(k.to_string(), n) {
                        anyhow::bail!("--channels names group `{k}` twice ({old} and {n}): give each group once");
                    }
                }
                Target::Channels(counts)
            }
            _ => anyhow::bail!("give one of --level, --gops-level, --channels or --plan"),
        };
        // Before a data-driven criterion loads its data.
        target.check_level()?;
        let criterion: Criterion = a.criterion.parse()?;
        let scope: Scope = a.scope.parse()?;
        anyhow::ensure!((0.0..=1.0).contains(&a.residual_min_share), "--residual-min-share must be in [0, 1]");
        let limits = Limits { min_channels: a.min_channels.max(1), residual_min_share: a.residual_min_share };
        let groups = analysis::groups(&model.graph)?;
        let scores = if criterion.needs_data() {
            let data = RunData::load(a.data.as_deref(), &a.subset, 1.0)?;
            let norm = train::model_normalize(&mut model, &data.stats);
            let pass = DataPass { dataset: &data.train, norm, batch_size: 128, max_batches: Some(a.batches), device };
            criteria::score(criterion, &model, &groups, Some(&pass), a.seed)?
        } else {
            criteria::score(criterion, &model, &groups, None, a.seed)?
        };
        let mut plan = planner::make_plan(&model.graph, &groups, &scores, &target, scope, &limits)?;
        plan.made_by["criterion"] = criterion.to_string().into();
        plan.made_by["seed"] = a.seed.into();
        plan
    };
    let planning = t0.elapsed().as_secs_f64();
    let pruned = surgery::apply(&model, &plan)?;
    let surgery_s = t0.elapsed().as_secs_f64() - planning;
    save_model(&pruned, &a.out)?;
    native::write_atomic(&a.out.join("plan.json"), plan.to_json().as_bytes())?;
    if let Some(p) = &a.plan_out {
        native::write_atomic(p, plan.to_json().as_bytes())?;
    }
    let (before, after) = (analysis::cost(&model.graph)?, analysis::cost(&pruned.graph)?);
    println!(
        "pruned {} channels in {} groups ({:.2}s planning, {:.2}s surgery)",
        plan.removed(),
        plan.groups.iter().filter(|g| g.keep.len() < g.size).count(),
        planning,
        surgery_s
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
    println!("wrote {} (plan in {})", a.out.display(), a.out.join("plan.json").display());
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    anyhow::ensure!(a.batch > 0 && a.steps > 0, "--batch and --steps must be at least 1");
    let device = a.engine.apply()?;
    let m = load_spec(&a.model, a.num_classes)?;
    let train = match a.what.as_str() {
        "train-step" => true,
        "infer" => false,
        other => anyhow::bail!("unknown benchmark `{other}`: use train-step or infer"),
    };
    let est = if train { memory::training(&m.graph, a.batch, 0)? } else { memory::inference(&m.graph, a.batch, 0)? };
    let what = if train { "a train step of" } else { "inference of" };
    let limit = a.max_memory.as_deref().map(memory::parse_bytes).transpose()?;
    est.check_or_available(limit, &format!("{what} {}", m.graph.name))?;
    let r = if train {
        bench::train_step(&m, a.batch, a.steps, a.warmup, device)?
    } else {
        bench::infer(&m, a.batch, a.steps, a.warmup, device)?
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["estimated_peak_bytes"] = est.total().into();
        println!("{v}");
    } else {
        println!(
            "{} {} batch {} on {} ({} threads): median {:.2} ms (min {:.2}, p90 {:.2}, {} steps), {:.0} img/s, peak RSS {} (estimated {})",
            r.what,
            r.model,
            r.batch,
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
