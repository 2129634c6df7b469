//! Training and evaluation loops: epochs over a [`Loader`], the learning-rate schedule, top-1/top-5
//! evaluation, the best-validation checkpoint, a per-epoch CSV log and resumable run folders.
//! The engine does the arithmetic; this module decides what to run and records what happened.

pub mod checkpoint;
mod config;
mod evaluate;
mod run;
mod run_dir;
mod rundata;
mod schedule;

pub(crate) use config::check_checkpoint_minutes;
pub use config::{DistillConfig, Overrides, TrainConfig};
pub use evaluate::{EVAL_BATCH_SIZE, EvalStats, evaluate};
pub use run_dir::RunDir;
pub use rundata::{RunData, has_train_split, input_of, load_or_build, load_test_only, model_normalize};
pub use schedule::Schedule;

use checkpoint::{Checkpoint, RunState};
use run::Run;

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::engine::{Device, Precision};
use crate::error::{Error, Result};
use crate::formats::native;
use crate::formats::outdir;
use crate::ir::{Model, Weights};

/// The most epochs a run or sweep may ask for (a larger count is a typo, refused when read).
pub const MAX_EPOCHS: usize = 100_000;

/// One row of the per-epoch log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// What a finished run reports (written as summary.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    pub best_val_top1: Option<f64>,
    /// Test accuracy at the epoch of best validation accuracy (the protocol's figure).
    pub test_top1_at_best_val: Option<f64>,
    pub final_test: EvalStats,
    pub seconds: f64,
    /// `seconds` as predicted when the run began, on the device's training-cost table (None
    /// where there was none).
    #[serde(default)]
    pub predicted_seconds: Option<f64>,
    pub classes: Vec<String>,
}

/// What [`train`] does with a run folder that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutMode {
    /// Start a new run; refuse a folder that holds one.
    Fresh,
    /// Start a new run, replacing the one the folder holds (never a folder edgeprune did not write).
    Overwrite,
    /// Continue the run the folder holds from its newest checkpoint.
    Resume,
}

/// Trains as `cfg` says, writing everything into `out`, which must be missing, empty, or (as
/// `mode` says) a run folder of edgeprune's to replace or resume.
pub fn train(cfg: &TrainConfig, out: &Path, mode: OutMode) -> Result<Summary> {
    cfg.validate()?;
    let resume = mode == OutMode::Resume;
    // Locked first, so that a second process is told who holds the folder.
    let _lock = lock_run_dir(out)?;
    let dir = RunDir::new(out);
    let latest = checkpoint::latest(out)?;
    let holds_run = dir.config().exists() || latest.is_some();
    match (holds_run, mode) {
        (true, OutMode::Fresh) => {
            let state = match (dir.summary().exists(), latest) {
                (true, _) => "a finished run".to_string(),
                (false, Some(ck)) => format!(
                    "an interrupted run (newest checkpoint {})",
                    ck.file_name().unwrap_or_default().to_string_lossy()
                ),
                (false, None) => "a run with no checkpoint".to_string(),
            };
            return Err(Error::file(
                out,
                format!("already holds {state} of edgeprune; --resume to continue it, --overwrite to replace it"),
            ));
        }
        (false, OutMode::Resume) => {
            return Err(Error::file(out, "nothing to resume: no edgeprune run here"));
        }
        _ => {}
    }
    // The data is fitted to the network's input: the checkpoint's when resuming, else the model's.
    let input = match (resume, checkpoint::latest(out)?) {
        (true, Some(ck)) => input_of(&ck.to_string_lossy())?,
        _ => input_of(&cfg.model)?,
    };
    let data = RunData::load(cfg.data.as_deref(), &cfg.subset, cfg.train_fraction, &input)?;
    let start = if resume {
        None
    } else {
        let model = load_or_build(&cfg.model, cfg.num_classes.unwrap_or(data.num_dataset_classes), cfg.seed)?;
        // A pruned model folder carries the plan that made it; the run keeps it.
        let plan = checkpoint::read_plan(Path::new(&cfg.model))?;
        Some(Start { model, plan, epoch: 0 })
    };
    fit(start, &data, cfg, out)
}

/// How a fresh run begins.
pub struct Start {
    pub model: Model,
    /// The pruning plan (JSON) already applied to `model`, kept with every checkpoint.
    pub plan: Option<String>,
    /// Epochs already done before this run: training covers epochs `epoch + 1 ..= cfg.epochs`.
    pub epoch: usize,
}

/// Locks a run folder for this process, refusing a folder edgeprune did not write (no lock file
/// is left in a user's folder).
fn lock_run_dir(out: &Path) -> Result<outdir::DirLock> {
    outdir::claim(out, outdir::Kind::TrainRun, outdir::Existing::Accept, "")?;
    outdir::DirLock::acquire(out)
}

/// Whether the run folder `out` holds a checkpoint that [`fit`] can resume.
pub fn can_resume(out: &Path) -> Result<bool> {
    Ok(checkpoint::latest(out)?.is_some())
}

/// The model of the newest intact checkpoint of a run folder (the last weights of the run).
pub fn last_model(out: &Path) -> Result<Model> {
    Ok(checkpoint::load_latest(out)?.ok_or_else(|| Error::file(out, "no checkpoint in this run folder"))?.model)
}

/// Trains on `data` for epochs `start.epoch + 1 ..= cfg.epochs` (the learning rate of epoch e is
/// `cfg.lr_schedule.lr_at(e - 1)`), with a fresh optimizer, writing the run folder `out` (any
/// earlier run there is replaced). With `start` None, resumes the run in `out` from its newest
/// checkpoint, optimizer state and random position included, so that the result is the one the
/// uninterrupted run would have given. `out` must be missing, empty or a run folder of edgeprune
/// (a folder holding anything else is refused); it is locked while the run lasts. A non-finite
/// loss, weight or evaluation output rolls the run back to its newest intact checkpoint and
/// retries with the learning rate scaled by `cfg.nan_lr_factor`, at most `cfg.nan_retries` times. `cfg.model`, `cfg.data` and `cfg.subset` are not read: the caller
/// chose them.
pub fn fit(start: Option<Start>, data: &RunData, cfg: &TrainConfig, out: &Path) -> Result<Summary> {
    cfg.validate()?;
    let device: Device = cfg.device;
    // Before anything is written: a run that cannot start leaves no run behind.
    device.check()?;
    crate::engine::set_threads(cfg.threads);
    // The precision the run trains in, `auto` resolved for this device; config.toml records it.
    let mut own = cfg.clone();
    own.precision = cfg.precision.resolve(device);
    if own.precision == Precision::Bf16 && !Precision::native_bf16(device) {
        eprintln!(
            "warning: bf16 asked for, but this {device} has no bf16 instructions: it is emulated, and slower than fp32"
        );
    }
    if own.precision == Precision::Bf16
        && std::env::var("OMP_WAIT_POLICY").is_ok_and(|v| v.eq_ignore_ascii_case("passive"))
    {
        // Measured: ResNet-20 on 2 cores shared with another training, 67 against 755 img/s.
        eprintln!(
            "warning: OMP_WAIT_POLICY=PASSIVE: with passive threads on cores shared with other work, bf16 steps were \
             measured 11x slower (fp32 ones were not slowed); unset it for bf16"
        );
    }
    // A fresh run that would not finish in its time budget trains on the share of each epoch that
    // does (`fit_to_budget`); the run's config.toml records the share, so a resume keeps it.
    if let Some(s) = &start
        && own.fit_to_budget
    {
        let (c, line) = fit_to_budget(&own, &s.model, data, own.epochs.saturating_sub(s.epoch))?;
        if let Some(l) = line {
            eprintln!("{l}");
        }
        own = c;
    }
    let cfg = &own;
    let _lock = lock_run_dir(out)?;
    // What a killed process was writing or removing (`best/` stages, removed folders).
    crate::formats::atomic::remove_stale_stages(out);
    let mut ck = match start {
        Some(start) => begin(start, data, cfg, out)?,
        None => resume_latest(data, cfg, out)?,
    };
    native::write_atomic(&RunDir::new(out).config(), cfg.to_toml().as_bytes())?;
    let n_out = ck.model.graph.infer_shapes().ok().and_then(|s| s.last().map(|s| s.iter().product::<usize>()));
    if let (Some(&c), Some(n_out)) = (data.classes.iter().max(), n_out)
        && c >= n_out
    {
        return Err(Error::Data(format!("class index {c} does not fit the model's {n_out} outputs")));
    }
    eprintln!(
        "training {} on {} ({} train / {} val / {} test images, {} classes) for {} epochs on {device}, {} threads, {}",
        ck.model.graph.name,
        data.class_names.join(","),
        data.train.len(),
        data.val.as_ref().map_or(0, |v| v.len()),
        data.test.len(),
        data.classes.len(),
        cfg.epochs,
        crate::engine::threads(),
        cfg.precision
    );
    // Recorded in the model when the run began; the data's statistics only for an older model.
    let norm = model_normalize(&mut ck.model, &data.stats)?;
    let mut run = Run::new(cfg, data, out, &ck.model, ck.plan.clone(), norm.clone())?;
    let (net, state) = run.run_to_end(ck)?;
    let final_test = evaluate(&*net, &data.test, &norm, EVAL_BATCH_SIZE)?;
    final_test.check_finite("the final model on the test split")?;
    let summary = Summary {
        epochs: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_top1: state.best_val_top1,
        test_top1_at_best_val: state.best_test_top1,
        final_test,
        seconds: state.seconds,
        predicted_seconds: state.predicted_seconds,
        classes: data.class_names.clone(),
    };
    if let Some(p) = state.predicted_seconds {
        eprintln!(
            "trained in {:.1} minutes; predicted {:.1} ({:+.1}%)",
            state.seconds / 60.0,
            p / 60.0,
            100.0 * (p - state.seconds) / state.seconds.max(1e-9)
        );
    }
    native::write_json(&RunDir::new(out).summary(), &summary)?;
    Ok(summary)
}

/// A fresh run in `out`: whatever an earlier run left there removed, and the first checkpoint
/// (epoch `start.epoch`, batch 0) written.
fn begin(start: Start, data: &RunData, cfg: &TrainConfig, out: &Path) -> Result<Checkpoint> {
    let mut model = start.model;
    model.check_finite().map_err(|e| Error::file(&cfg.model, format!("cannot train this model: {e}")))?;
    model_normalize(&mut model, &data.stats)?;
    let cost = check_memory(cfg, &model, data, cfg.epochs.saturating_sub(start.epoch))?;
    if let Some(c) = &cost {
        let f = &c.fine_tune;
        eprintln!(
            "predicted: {:.1} minutes ({} epochs of {} batches at {:.1} ms and {} images evaluated; table {})",
            f.seconds / 60.0,
            f.epochs,
            f.steps_per_epoch,
            f.step_ms,
            f.eval_images,
            c.table.display()
        );
    }
    for old in [checkpoint::DIR, "best", "last"] {
        let p = out.join(old);
        if p.exists() {
            crate::formats::atomic::remove_dir(&p)?;
        }
    }
    for old in ["log.csv", "summary.json", "state.json"] {
        let _ = std::fs::remove_file(out.join(old));
    }
    let mut state = RunState::start(cfg.seed, start.epoch);
    state.classes = data.class_names.clone();
    state.precision = cfg.precision;
    state.predicted_seconds = cost.map(|c| c.fine_tune.seconds);
    let dir = checkpoint::save(out, &model, &Weights::default(), &state, start.plan.as_deref(), cfg.keep_checkpoints)?;
    Ok(Checkpoint { dir, model, optimizer: Weights::default(), state, plan: start.plan })
}

/// The newest intact checkpoint of the run in `out`, checked against the data given.
fn resume_latest(data: &RunData, cfg: &TrainConfig, out: &Path) -> Result<Checkpoint> {
    let ck = checkpoint::load_latest(out)?
        .ok_or_else(|| Error::file(out, "nothing to resume: this run folder holds no checkpoint"))?;
    if !ck.state.classes.is_empty() && ck.state.classes != data.class_names {
        return Err(Error::Data(format!(
            "the run trained on classes [{}] but the data given has [{}]: resuming on other classes would \
             mix two tasks; give the data the run began with",
            ck.state.classes.join(", "),
            data.class_names.join(", ")
        )));
    }
    check_precision(cfg, &ck)?;
    check_memory(cfg, &ck.model, data, cfg.epochs.saturating_sub(ck.state.epochs_done))?;
    eprintln!("resuming from {} (epoch {}, batch {})", ck.dir.display(), ck.state.epochs_done, ck.state.batch);
    Ok(ck)
}

/// A checkpoint continues only at the precision it was trained in (`cfg.precision` resolved):
/// the same run in another number format is another run.
fn check_precision(cfg: &TrainConfig, ck: &Checkpoint) -> Result<()> {
    if ck.state.precision == cfg.precision {
        return Ok(());
    }
    Err(Error::file(
        ck.dir.join("state.json"),
        format!(
            "the run trained in {} and this resume would train in {}: a resume continues the run as it began; \
             resume with --precision {} (or start a new run in {})",
            ck.state.precision, cfg.precision, ck.state.precision, cfg.precision
        ),
    ))
}

/// Bytes of the data a run holds in memory (decoded images; memory-mapped ones are paged by the
/// OS, not held).
fn data_bytes(data: &RunData) -> u64 {
    [Some(&data.train), data.val.as_ref(), Some(&data.test)]
        .into_iter()
        .flatten()
        .map(|d| d.images.owned_bytes() as u64 + 2 * d.labels.len() as u64)
        .sum()
}

/// What the rest of a run will cost, predicted on this device's training-cost table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCost {
    /// The table it was predicted on.
    pub table: PathBuf,
    pub prediction: crate::analysis::train_cost::Prediction,
    /// Peak memory with the run's data and prefetched batches.
    pub peak_bytes: f64,
    pub fine_tune: crate::analysis::train_cost::FineTuneCost,
}

/// Batches prepared ahead of the one in use (the loader's), which the table's measurement on
/// synthetic data did not hold.
const BATCHES_AHEAD: u64 = 4;

/// The predicted cost of training `model` on `data` as `cfg` says for `epochs` more epochs, on
/// the table `cfg.cost_table` names or the cache holds for it (None where there is none).
pub fn predict_run(cfg: &TrainConfig, model: &Model, data: &RunData, epochs: usize) -> Result<Option<RunCost>> {
    let Some((table, path)) =
        crate::metrics::train_cost::find(model, cfg.batch_size, cfg.device, cfg.precision, cfg.cost_table.as_deref())?
    else {
        return Ok(None);
    };
    RunCost::of_table(&table, &path, cfg, model, data, epochs).map(Some)
}

impl RunCost {
    /// The cost of `epochs` of training `model` on `data` as `cfg` says, on `table` (read from
    /// `path`).
    pub fn of_table(
        table: &crate::analysis::train_cost::TrainCostTable,
        path: &Path,
        cfg: &TrainConfig,
        model: &Model,
        data: &RunData,
        epochs: usize,
    ) -> Result<RunCost> {
        use crate::analysis::train_cost::FineTuneCost;
        let mut p = table.predict_at(&model.graph, cfg.batch_size)?;
        // A distilling run also runs its teacher on every batch: priced as the teacher's
        // evaluation on the same table (a prediction not checked against a measured run).
        if let Some(d) = &cfg.distill {
            let teacher = crate::formats::load_model(&RunDir::model_path(&d.teacher))?;
            match table.predict_at(&teacher.graph, cfg.batch_size) {
                Ok(t) => p.step_ms += t.eval_ms_per_image * cfg.batch_size as f64,
                Err(e) => eprintln!("note: the teacher's pass is not in the predicted step ({e})"),
            }
        }
        let input: usize = model.graph.input_shape()?.iter().product();
        let peak = p.peak_bytes + (data_bytes(data) + BATCHES_AHEAD * (cfg.batch_size * input * 4) as u64) as f64;
        let eval_images = data.val.as_ref().map_or(0, |v| v.len()) + data.test.len();
        let fine_tune = FineTuneCost::new(&p, epochs, cfg.batches_per_epoch(data.train.len()), eval_images);
        Ok(RunCost { table: path.to_path_buf(), prediction: p, peak_bytes: peak, fine_tune })
    }
}

fn need_table(cfg: &TrainConfig, model: &Model, what: &str) -> Error {
    Error::config(
        what,
        format!(
            "needs a training-cost table of {} at batch {} in {} on this device, and none is in the cache: measure it \
             once with `edgeprune bench train-cost --model <the unpruned model> --batch {} --threads {} --precision {}`, \
             or give one with --cost-table",
            model.graph.name, cfg.batch_size, cfg.precision, cfg.batch_size, cfg.threads, cfg.precision
        ),
    )
}

/// Where `cfg.max_train_minutes` would be exceeded and `cfg.fit_to_budget` is set: the config
/// with each epoch drawing the largest share of the training split that fits (and a line saying
/// so); `cfg` unchanged otherwise. An error where not even one batch per epoch fits.
pub fn fit_to_budget(
    cfg: &TrainConfig,
    model: &Model,
    data: &RunData,
    epochs: usize,
) -> Result<(TrainConfig, Option<String>)> {
    let (Some(minutes), true) = (cfg.max_train_minutes, cfg.fit_to_budget) else { return Ok((cfg.clone(), None)) };
    let cost = predict_run(cfg, model, data, epochs)?.ok_or_else(|| need_table(cfg, model, "fit_to_budget"))?;
    if cost.fine_tune.seconds <= 60.0 * minutes {
        return Ok((cfg.clone(), None));
    }
    let f = &cost.fine_tune;
    let per_epoch_ms = 60e3 * minutes / epochs.max(1) as f64 - f.eval_images as f64 * f.eval_ms_per_image;
    let batches = (per_epoch_ms / f.step_ms.max(1e-9)).floor();
    if batches < 1.0 {
        return Err(Error::config(
            "max_train_minutes",
            format!(
                "{epochs} epochs of {} cannot fit in {minutes} minutes even at one batch each: each epoch's evaluation \
                 is predicted at {:.2} minutes and a step at {:.1} ms (table {}); give fewer epochs or a longer budget",
                model.graph.name,
                f.eval_images as f64 * f.eval_ms_per_image / 60e3,
                f.step_ms,
                cost.table.display()
            ),
        ));
    }
    // Just under `batches` whole batches, so that rounding up to whole batches stays within them.
    let share = ((batches * cfg.batch_size as f64 - 0.5) / data.train.len().max(1) as f64).min(1.0);
    let share = cfg.epoch_fraction.map_or(share, |e| e.min(share));
    let mut out = cfg.clone();
    out.epoch_fraction = Some(share);
    let after = predict_run(&out, model, data, epochs)?.map_or(0.0, |c| c.fine_tune.seconds);
    let line = format!(
        "fit to budget: {epochs} epochs predicted at {:.1} minutes, over the {minutes} allowed; each epoch now trains on \
         {:.1}% of the training split ({} batches, predicted {:.1} minutes; table {})",
        f.seconds / 60.0,
        100.0 * share,
        out.batches_per_epoch(data.train.len()),
        after / 60.0,
        cost.table.display()
    );
    Ok((out, Some(line)))
}

/// Refuses a run whose peak memory exceeds `cfg.max_memory` (by default, the memory the machine
/// has available), whose step exceeds `cfg.max_step_ms`, or whose `epochs` left exceed
/// `cfg.max_train_minutes`. Memory is predicted on the device's training-cost table where one is
/// found (see [`predict_run`]), else estimated from the graph alone (an estimate meant to err high).
/// The predicted cost where a table was found.
fn check_memory(cfg: &TrainConfig, model: &Model, data: &RunData, epochs: usize) -> Result<Option<RunCost>> {
    let what = format!("training {}", model.graph.name);
    let found =
        crate::metrics::train_cost::find(model, cfg.batch_size, cfg.device, cfg.precision, cfg.cost_table.as_deref())?;
    let cost = found.as_ref().map(|(t, p)| RunCost::of_table(t, p, cfg, model, data, epochs)).transpose()?;
    match (&cost, &found) {
        (Some(c), Some((table, _))) => {
            let limit = cfg.max_memory.or_else(crate::analysis::memory::available_bytes);
            if let Some(limit) = limit
                && c.peak_bytes > limit as f64
            {
                let rest = c.peak_bytes - c.prediction.peak_bytes;
                let fits = table.largest_batch_within(&model.graph, limit as f64 - rest)?;
                let hint = match fits {
                    Some(b) => format!("lower the batch size (at most {b} fits) or raise the limit"),
                    None => "not even a batch of 1 fits: raise the limit".to_string(),
                };
                return Err(Error::config(
                    "max_memory",
                    format!(
                        "{what} at batch size {} is predicted to peak at {} ({} for the network, {} for the data held; \
                         training-cost table {}), more than the limit of {}{}; {hint}",
                        cfg.batch_size,
                        crate::analysis::memory::human(c.peak_bytes as u64),
                        crate::analysis::memory::human(c.prediction.peak_bytes as u64),
                        crate::analysis::memory::human(rest as u64),
                        c.table.display(),
                        crate::analysis::memory::human(limit),
                        if cfg.max_memory.is_none() { " (the memory this machine has available now)" } else { "" },
                    ),
                ));
            }
        }
        _ => crate::analysis::memory::training(&model.graph, cfg.batch_size, data_bytes(data))?
            .check_or_available(cfg.max_memory, &what)?,
    }
    if cfg.max_step_ms.is_none() && cfg.max_train_minutes.is_none() {
        return Ok(cost);
    }
    let key = if cfg.max_step_ms.is_some() { "max_step_ms" } else { "max_train_minutes" };
    let c = cost.as_ref().ok_or_else(|| need_table(cfg, model, key))?;
    if let Some(ms) = cfg.max_step_ms
        && c.prediction.step_ms > ms
    {
        return Err(Error::config(
            "max_step_ms",
            format!(
                "a training step of {} at batch size {} is predicted at {:.1} ms (table {}), more than the {ms} ms allowed",
                model.graph.name,
                cfg.batch_size,
                c.prediction.step_ms,
                c.table.display()
            ),
        ));
    }
    if let Some(minutes) = cfg.max_train_minutes
        && c.fine_tune.seconds > 60.0 * minutes
    {
        let f = &c.fine_tune;
        let per_epoch = f.seconds / f.epochs.max(1) as f64;
        let epochs_fit = (60.0 * minutes / per_epoch.max(1e-9)).floor() as usize;
        return Err(Error::config(
            "max_train_minutes",
            format!(
                "{epochs} epochs of {} ({} batches of {} each, {:.1} ms per step, and {} images evaluated per epoch) are \
                 predicted to take {:.1} minutes (table {}), more than the {minutes} allowed; {} fit, or --fit-to-budget \
                 trains each epoch on the share of the data that fits",
                model.graph.name,
                f.steps_per_epoch,
                cfg.batch_size,
                f.step_ms,
                f.eval_images,
                f.seconds / 60.0,
                c.table.display(),
                match epochs_fit {
                    0 => "not one epoch would".to_string(),
                    1 => "1 epoch would".to_string(),
                    n => format!("{n} epochs would"),
                }
            ),
        ));
    }
    Ok(cost)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// The run folder's paths, for callers that read a finished run.
pub fn best_model_dir(out: &Path) -> PathBuf {
    RunDir::new(out).best()
}
