//! The command line: parses, calls the library, prints. No logic of its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::analysis::{self, memory};
use crate::engine::{self, Device};
use crate::formats::{self, native, outdir};
use crate::ir::Model;
use crate::metrics::bench;
use crate::protocol::{self, Recipe, report, sweep};
use crate::train::{self, RunData, TrainConfig};
use crate::zoo;

mod adapt;
mod benchmark;
mod eval;
mod inspect;
mod models;
mod prune;
mod sweeps;
mod training;

pub use adapt::AdaptArgs;
use adapt::cmd_adapt;
pub use benchmark::BenchArgs;
use benchmark::cmd_bench;
pub use eval::EvalArgs;
use eval::cmd_eval;
pub use inspect::InspectArgs;
use inspect::{cmd_analyze, cmd_inspect};
pub use models::{ConvertDataArgs, ExportArgs, ImportArgs, InitArgs};
use models::{cmd_convert_data, cmd_export, cmd_import, cmd_init};
pub use prune::PruneArgs;
use prune::cmd_prune;
pub use sweeps::{CellArgs, ExperimentArgs, ReportArgs, SearchArgs};
use sweeps::{cmd_cell, cmd_experiment, cmd_report, cmd_search};
pub use training::TrainArgs;
use training::cmd_train;

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
    /// Adapt a model to a device's own unlabeled images: infer the classes it sees from the
    /// model's predictions, fine-tune by distillation from the model, prune, retrain by
    /// distillation; writes the adapted model and a short report.
    Adapt(AdaptArgs),
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
    /// binary format, or (--like MODEL) the images eval feeds a model as NumPy files, so that
    /// other tools read exactly the pixels edgeprune reads.
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
    pub device: Device,
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
        Ok(self.device)
    }
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

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Inspect(a) => cmd_inspect(a),
        Command::Analyze(a) => cmd_analyze(a),
        Command::Prune(a) => cmd_prune(a),
        Command::Adapt(a) => cmd_adapt(a),
        Command::Init(a) => cmd_init(a),
        Command::Import(a) => cmd_import(a),
        Command::ConvertData(a) => cmd_convert_data(a),
        Command::Export(a) => cmd_export(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Experiment(a) => cmd_experiment(a),
        Command::Search(a) => cmd_search(a),
        Command::Report(a) => cmd_report(a),
        Command::Cell(a) => cmd_cell(a),
    }
}
