//! The command line: parses, calls the library, prints. No logic of its own.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::analysis;
use crate::engine::{self, Device, Network};
use crate::formats::{self, native};
use crate::ir::Model;
use crate::metrics::bench;
use crate::train::{self, RunData, TrainConfig};
use crate::zoo;

#[derive(Parser)]
#[command(
    name = "edgeprune",
    version,
    about = "Prune and retrain a CNN on the device that runs it, with the device's own data",
    long_about = "Prune and retrain a CNN on the device that runs it, with the device's own data.\n\n\
        MODEL arguments take a model folder (graph.json + weights.safetensors) or, where a fresh \
        network makes sense, a zoo name: alexnet, resnet20, resnet56, mobilenetv2, squeezenet.\n\
        Data is looked for in --data, then $EDGEPRUNE_DATA, ./data and ../shared/data: CIFAR-10/100 \
        binary folders, or an ImageFolder layout {train,test}/<class>/*.jpg as a folder or .tar.gz."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Train or fine-tune a model; writes a run folder (log.csv, best/, last/, summary.json).
    Train(TrainArgs),
    /// Evaluate a model's top-1/top-5 accuracy on a dataset split, optionally on a class subset.
    Eval(EvalArgs),
    /// Print a per-layer table: output shape, parameters, GOps, and the totals.
    Inspect(InspectArgs),
    /// Find the pruning groups: the sets of channels that must be removed together.
    Analyze(InspectArgs),
    /// Write a zoo network with freshly initialised weights as a model folder.
    Init(InitArgs),
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
    /// Run folder to write.
    #[arg(short, long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Continue the run in --out from its last finished epoch (its config.toml is used; only
    /// --epochs may change, to extend the run).
    #[arg(long)]
    pub resume: bool,
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
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Model folder or zoo name.
    pub model: String,
    /// Output classes when MODEL is a zoo name.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    #[arg(long)]
    pub json: bool,
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
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Analyze(a) => cmd_analyze(a),
        Command::Init(a) => {
            let m = Model::init(zoo::build(&a.network, a.num_classes)?, a.seed)?;
            native::save(&m, &a.out)?;
            println!("wrote {} ({} parameters) to {}", a.network, m.graph.num_parameters(), a.out.display());
            Ok(())
        }
        Command::Bench(a) => cmd_bench(a),
    }
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let mut cfg = if a.resume {
        let mut cfg = TrainConfig::from_toml_file(&a.out.join("config.toml"))?;
        if let Some(e) = a.epochs {
            cfg.epochs = e; // extending a finished run is allowed; nothing else may change
        }
        cfg
    } else if let Some(p) = &a.config {
        TrainConfig::from_toml_file(p)?
    } else {
        TrainConfig::default()
    };
    if !a.resume {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { cfg.$f = v.into(); } )* };
        }
        set!(model, epochs, batch_size, momentum, weight_decay, train_fraction, seed, threads, device);
        if a.data.is_some() {
            cfg.data = a.data.clone();
        }
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
    let s = train::train(&cfg, &a.out, a.resume)?;
    println!(
        "done: {} epochs in {:.0}s; best epoch {} (val top-1 {}), test top-1 at best val {}, final test top-1 {:.2}%",
        s.epochs,
        s.seconds,
        s.best_epoch.map_or("-".into(), |e| e.to_string()),
        s.best_val_top1.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
        s.test_top1_at_best_val.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
        100.0 * s.final_test.top1
    );
    println!("run folder: {} (best model in {})", a.out.display(), train::best_model_dir(&a.out).display());
    Ok(())
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
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
            "{}: {} images of {} ({} classes): top-1 {:.2}%  top-5 {:.2}%  loss {:.4}  ({:.1}s)",
            a.model.display(),
            s.count,
            a.split,
            data.classes.len(),
            100.0 * s.top1,
            100.0 * s.top5,
            s.loss,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn load_spec(spec: &str, num_classes: usize) -> Result<Model> {
    Ok(train::load_or_build(spec, num_classes, 0)?)
}

fn cmd_inspect(a: InspectArgs) -> Result<()> {
    let m = load_spec(&a.model, a.num_classes)?;
    let c = analysis::cost(&m.graph)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!("{:<28} {:<16} {:<16} {:>10} {:>10}", "node", "op", "output", "params", "MMACs");
    for n in &c.nodes {
        println!(
            "{:<28} {:<16} {:<16} {:>10} {:>10.3}",
            n.name,
            n.op,
            format!("{:?}", n.output_shape),
            n.params,
            n.macs as f64 / 1e6
        );
    }
    println!(
        "total: {} parameters, {:.2} MMACs = {:.4} GOps per image, weights {:.2} MiB, activations {:.2} MiB per image",
        c.params,
        c.macs as f64 / 1e6,
        c.gops,
        c.weight_bytes as f64 / (1 << 20) as f64,
        c.activation_bytes as f64 / (1 << 20) as f64
    );
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

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let device = a.engine.apply()?;
    let m = load_spec(&a.model, a.num_classes)?;
    let r = match a.what.as_str() {
        "train-step" => bench::train_step(&m, a.batch, a.steps, a.warmup, device)?,
        "infer" => bench::infer(&m, a.batch, a.steps, a.warmup, device)?,
        other => anyhow::bail!("unknown benchmark `{other}`: use train-step or infer"),
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} batch {} on {} ({} threads): median {:.2} ms (min {:.2}, p90 {:.2}, {} steps), {:.0} img/s, peak RSS {}",
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
            r.peak_rss_bytes.map_or("unknown".into(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64))
        );
    }
    Ok(())
}
