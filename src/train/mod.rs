//! Training and evaluation loops: epochs over a [`Loader`], the learning-rate schedule, top-1/top-5
//! evaluation, the best-validation checkpoint, a per-epoch CSV log and resumable run folders.
//! The engine does the arithmetic; this module decides what to run and records what happened.

pub mod checkpoint;
mod config;
mod evaluate;
mod run_dir;
mod rundata;
mod schedule;

pub(crate) use config::check_checkpoint_minutes;
pub use config::{Overrides, TrainConfig};
pub use evaluate::{EVAL_BATCH_SIZE, EvalStats, evaluate};
pub use run_dir::RunDir;
pub use rundata::{RunData, load_or_build, model_normalize};
pub use schedule::Schedule;

use checkpoint::{Checkpoint, Partial, RunState};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::data::{Augment, Dataset, Loader, Normalize};
use crate::engine::{self, Device, SgdConfig, Train};
use crate::error::{Error, Result};
use crate::formats::atomic::StagedDir;
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
    pub classes: Vec<String>,
}

fn write_json<T: Serialize + for<'de> Deserialize<'de>>(path: &Path, v: &T) -> Result<()> {
    native::write_json(path, v)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    native::read_json(path)
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
    let data = RunData::load(cfg.data.as_deref(), &cfg.subset, cfg.train_fraction)?;
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
    let _lock = lock_run_dir(out)?;
    // What a killed process was writing or removing (`best/` stages, removed folders).
    crate::formats::atomic::remove_stale_stages(out);

    let mut ck = match start {
        Some(start) => {
            let mut model = start.model;
            model.check_finite().map_err(|e| Error::file(&cfg.model, format!("cannot train this model: {e}")))?;
            model_normalize(&mut model, &data.stats)?;
            check_memory(cfg, &model, data)?;
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
            let dir = checkpoint::save(
                out,
                &model,
                &Weights::default(),
                &state,
                start.plan.as_deref(),
                cfg.keep_checkpoints,
            )?;
            Checkpoint { dir, model, optimizer: Weights::default(), state, plan: start.plan }
        }
        None => {
            let ck = checkpoint::load_latest(out)?
                .ok_or_else(|| Error::file(out, "nothing to resume: this run folder holds no checkpoint"))?;
            let dir = ck.dir.clone();
            if !ck.state.classes.is_empty() && ck.state.classes != data.class_names {
                return Err(Error::Data(format!(
                    "the run trained on classes [{}] but the data given has [{}]: resuming on other classes would \
                     mix two tasks; give the data the run began with",
                    ck.state.classes.join(", "),
                    data.class_names.join(", ")
                )));
            }
            check_memory(cfg, &ck.model, data)?;
            eprintln!("resuming from {} (epoch {}, batch {})", dir.display(), ck.state.epochs_done, ck.state.batch);
            ck
        }
    };
    native::write_atomic(&RunDir::new(out).config(), cfg.to_toml().as_bytes())?;
    let n_out = ck.model.graph.infer_shapes().ok().and_then(|s| s.last().map(|s| s.iter().product::<usize>()));
    if let (Some(&c), Some(n_out)) = (data.classes.iter().max(), n_out)
        && c >= n_out
    {
        return Err(Error::Data(format!("class index {c} does not fit the model's {n_out} outputs")));
    }
    eprintln!(
        "training {} on {} ({} train / {} val / {} test images, {} classes) for {} epochs on {device}, {} threads",
        ck.model.graph.name,
        data.class_names.join(","),
        data.train.len(),
        data.val.as_ref().map_or(0, |v| v.len()),
        data.test.len(),
        data.classes.len(),
        cfg.epochs,
        crate::engine::threads()
    );

    // Recorded in the model when the run began; the data's statistics only for an older model.
    let norm = model_normalize(&mut ck.model, &data.stats)?;
    let mut run = Run {
        cfg,
        data,
        out,
        device,
        train: Arc::new(data.train.clone()),
        plan: ck.plan.clone(),
        norm: norm.clone(),
        poison: test_poison(),
    };
    let (mut net, mut state) = run.restore(ck)?;
    loop {
        match run.epochs(&mut *net, &mut state)? {
            None => break,
            Some(why) => {
                let back =
                    checkpoint::load_latest(out)?.ok_or_else(|| Error::file(out, "no checkpoint to roll back to"))?;
                let dir = back.dir.clone();
                if state.divergences >= cfg.nan_retries {
                    return Err(Error::Engine(format!(
                        "training diverged ({why}) and {} roll-backs with a smaller learning rate did not help \
                         (lr scale now {}); the last good checkpoint is {}",
                        state.divergences,
                        state.lr_scale,
                        dir.display()
                    )));
                }
                let (divergences, scale) = (state.divergences + 1, state.lr_scale * cfg.nan_lr_factor);
                eprintln!("{why}: rolling back to {} with the learning rate scaled by {scale}", dir.display());
                (net, state) = run.restore(back)?;
                state.divergences = divergences;
                state.lr_scale = scale;
            }
        }
    }
    let final_test = evaluate(&*net, &data.test, &norm, EVAL_BATCH_SIZE)?;
    final_test.check_finite("the final model on the test split")?;
    let summary = Summary {
        epochs: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_top1: state.best_val_top1,
        test_top1_at_best_val: state.best_test_top1,
        final_test,
        seconds: state.seconds,
        classes: data.class_names.clone(),
    };
    write_json(&RunDir::new(out).summary(), &summary)?;
    Ok(summary)
}

/// Refuses a run whose estimated peak memory exceeds `cfg.max_memory` (by default, the memory
/// the machine has available).
fn check_memory(cfg: &TrainConfig, model: &Model, data: &RunData) -> Result<()> {
    let data_bytes = [Some(&data.train), data.val.as_ref(), Some(&data.test)]
        .into_iter()
        .flatten()
        .map(|d| d.images.len() as u64 + 2 * d.labels.len() as u64)
        .sum();
    crate::analysis::memory::training(&model.graph, cfg.batch_size, data_bytes)?
        .check_or_available(cfg.max_memory, &format!("training {}", model.graph.name))
}

/// What every epoch of a fit needs.
struct Run<'a> {
    cfg: &'a TrainConfig,
    data: &'a RunData,
    out: &'a Path,
    device: Device,
    train: Arc<Dataset>,
    plan: Option<String>,
    /// The input normalisation the model records (set from the data when the run began).
    norm: Normalize,
    poison: Option<(usize, usize)>,
}

/// The seed of libtorch's generator before the step at (`epoch`, `batch`).
fn step_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    // SplitMix64 finaliser over the three numbers: neighbouring steps get unrelated seeds.
    let mut z =
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (batch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Run<'_> {
    /// A network and state from a checkpoint; the log and the best model are made to agree with it.
    fn restore(&self, ck: Checkpoint) -> Result<(Box<dyn Train>, RunState)> {
        if ck.state.seed != self.cfg.seed {
            let why = format!("seed {} differs from the checkpoint's {}", self.cfg.seed, ck.state.seed);
            return Err(Error::file(ck.dir.join("state.json"), why));
        }
        let mut net = engine::trainer(&ck.model, self.device)?;
        let cfg = self.cfg;
        net.set_optimizer(SgdConfig { momentum: cfg.momentum, weight_decay: cfg.weight_decay, nesterov: cfg.nesterov });
        net.load_optimizer_state(&ck.optimizer)?;
        write_log(&RunDir::new(self.out).log(), &ck.state.history)?;
        // The best model is written right after the checkpoint of its epoch; a crash in between
        // leaves it behind its record, and that checkpoint is the best model.
        let best = RunDir::new(self.out).best();
        let marker: Option<BestMarker> = read_json(&best.join(BEST_FILE)).ok();
        if ck.state.best_epoch.is_some()
            && marker.map(|m| m.epoch) != ck.state.best_epoch
            && ck.state.best_epoch == Some(ck.state.epochs_done)
            && ck.state.batch == 0
        {
            save_best(&best, &ck.model, &ck.state)?;
        }
        Ok((net, ck.state))
    }

    /// Trains until the last epoch (None) or until a loss or weight stops being finite (Some(why)).
    fn epochs(&mut self, net: &mut dyn Train, st: &mut RunState) -> Result<Option<String>> {
        let (cfg, data, norm) = (self.cfg, self.data, &self.norm);
        let mut last_checkpoint = Instant::now();
        while st.epochs_done < cfg.epochs {
            let epoch = st.epochs_done;
            let lr = cfg.lr_schedule.lr_at(epoch) * st.lr_scale;
            let aug = cfg.augment.then_some(Augment { crop_padding: 4, hflip: true });
            let loader = Loader::starting_at(
                self.train.clone(),
                crate::data::LoaderConfig {
                    batch_size: cfg.batch_size,
                    shuffle: true,
                    augment: aug,
                    norm: norm.clone(),
                    seed: cfg.seed,
                    epoch: epoch as u64,
                },
                st.batch,
            );
            let n_batches = cfg.max_batches.map_or(loader.len_batches(), |m| m.min(loader.len_batches()));
            let pb = progress(n_batches as u64, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
            pb.set_position(st.batch as u64);
            let t0 = Instant::now();
            let base = st.partial;
            let mut p = st.partial;
            for batch in loader.take(n_batches.saturating_sub(st.batch)) {
                crate::engine::manual_seed(step_seed(cfg.seed, epoch, st.batch));
                if self.poison.take_if(|&mut (e, b)| (e, b) == (epoch, st.batch)).is_some() {
                    net.corrupt_for_test()?;
                }
                let s = net.train_step(&batch.images, &batch.labels, lr)?;
                if !s.loss.is_finite() {
                    return Ok(Some(format!("loss is {} at epoch {} batch {}", s.loss, epoch + 1, st.batch + 1)));
                }
                if let Some(key) = net.first_non_finite_parameter()? {
                    return Ok(Some(format!(
                        "parameter `{key}` is not finite after epoch {} batch {}",
                        epoch + 1,
                        st.batch + 1
                    )));
                }
                p.loss_sum += s.loss * s.count as f64;
                p.correct += s.correct;
                p.seen += s.count;
                st.batch += 1;
                pb.inc(1);
                let ips = (p.seen - base.seen) as f64 / t0.elapsed().as_secs_f64();
                let msg = format!(
                    "loss {:.3} acc {:.1}% {ips:.0} img/s",
                    p.loss_sum / p.seen as f64,
                    100.0 * p.correct as f64 / p.seen as f64
                );
                // Without a terminal the bar is hidden: report every tenth of the epoch instead.
                let done = st.batch;
                if pb.is_hidden() && (done * 10 / n_batches) != ((done - 1) * 10 / n_batches) {
                    eprintln!("epoch {}/{}: {done}/{n_batches} batches, {msg}", epoch + 1, cfg.epochs);
                }
                pb.set_message(msg);
                if cfg.checkpoint_minutes.is_some_and(|m| last_checkpoint.elapsed().as_secs_f64() >= 60.0 * m)
                    && st.batch < n_batches
                {
                    let secs = t0.elapsed().as_secs_f64();
                    st.partial = Partial { seconds: base.seconds + secs, ..p };
                    self.checkpoint(net, st)?;
                    last_checkpoint = Instant::now();
                }
            }
            self.device.synchronize();
            let train_secs = base.seconds + t0.elapsed().as_secs_f64();
            pb.finish_and_clear();
            let val = data.val.as_ref().map(|v| evaluate(net, v, norm, EVAL_BATCH_SIZE)).transpose()?;
            let test = evaluate(net, &data.test, norm, EVAL_BATCH_SIZE)?;
            // A network whose outputs are not finite has diverged, whatever its training loss
            // said: it is never logged, never a best epoch, and the run rolls back.
            for (split, s) in [("validation", val), ("test", Some(test))] {
                if let Some(s) = s.filter(|s| !s.is_finite()) {
                    return Ok(Some(format!(
                        "{split} outputs are not finite after epoch {} ({} of {} images)",
                        epoch + 1,
                        s.non_finite.max(1),
                        s.count
                    )));
                }
            }
            if !p.loss_sum.is_finite() {
                return Ok(Some(format!("the training loss of epoch {} is not finite", epoch + 1)));
            }
            let row = EpochLog {
                epoch: epoch + 1,
                lr,
                train_loss: p.loss_sum / p.seen.max(1) as f64,
                train_top1: p.correct as f64 / p.seen.max(1) as f64,
                val_loss: val.map(|v| v.loss),
                val_top1: val.map(|v| v.top1),
                test_loss: test.loss,
                test_top1: test.top1,
                test_top5: test.top5,
                seconds: base.seconds + t0.elapsed().as_secs_f64(),
                images_per_second: if train_secs > 0.0 { p.seen as f64 / train_secs } else { 0.0 },
            };
            eprintln!(
                "epoch {:>3} lr {:<8} train loss {:.4} acc {:.2}% | val {} | test acc {:.2}% top5 {:.2}% | {:.0}s, {:.0} img/s",
                row.epoch,
                lr,
                row.train_loss,
                100.0 * row.train_top1,
                row.val_top1.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v)),
                100.0 * test.top1,
                100.0 * test.top5,
                row.seconds,
                row.images_per_second
            );
            // Best: by validation accuracy after `best_from_epoch` (by test accuracy only when
            // no validation split is held out).
            let score = val.map_or(test.top1, |v| v.top1);
            let improved = epoch + 1 > cfg.best_from_epoch && st.best_val_top1.is_none_or(|b| score > b);
            if improved {
                st.best_epoch = Some(epoch + 1);
                st.best_val_top1 = Some(score);
                st.best_test_top1 = Some(test.top1);
            }
            st.seconds += row.seconds;
            st.history.push(row);
            st.epochs_done = epoch + 1;
            st.batch = 0;
            st.partial = Partial::default();
            write_log(&RunDir::new(self.out).log(), &st.history)?;
            let due = st.epochs_done.is_multiple_of(cfg.checkpoint_epochs.max(1))
                || st.epochs_done == cfg.epochs
                || improved
                || cfg.checkpoint_minutes.is_some_and(|m| last_checkpoint.elapsed().as_secs_f64() >= 60.0 * m);
            if due {
                let model = self.checkpoint(net, st)?;
                last_checkpoint = Instant::now();
                if improved {
                    save_best(&RunDir::new(self.out).best(), &model, st)?;
                }
            }
        }
        Ok(None)
    }

    fn checkpoint(&self, net: &dyn Train, st: &RunState) -> Result<Model> {
        let model = net.model()?;
        checkpoint::save(
            self.out,
            &model,
            &net.optimizer_state()?,
            st,
            self.plan.as_deref(),
            self.cfg.keep_checkpoints,
        )?;
        Ok(model)
    }
}

const BEST_FILE: &str = "best.json";

/// Which epoch the best model folder holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct BestMarker {
    epoch: usize,
    val_top1: Option<f64>,
    test_top1: Option<f64>,
}

fn save_best(dir: &Path, model: &Model, st: &RunState) -> Result<()> {
    if let Some((key, ..)) = model.weights.first_non_finite() {
        return Err(Error::tensor(key, "non-finite weight: refusing to save it as the best model"));
    }
    let marker = BestMarker {
        epoch: st.best_epoch.unwrap_or(st.epochs_done),
        val_top1: st.best_val_top1,
        test_top1: st.best_test_top1,
    };
    let stage = StagedDir::new(dir)?;
    stage.write(native::WEIGHTS_FILE, &native::weights_to_safetensors(&model.weights))?;
    stage.write(native::GRAPH_FILE, native::graph_to_json(&model.graph).as_bytes())?;
    stage.write(BEST_FILE, native::json_text(&dir.join(BEST_FILE), &marker)?.as_bytes())?;
    stage.commit()
}

/// Rewrites the per-epoch CSV log whole (a reader never sees a half-written row).
fn write_log(path: &Path, rows: &[EpochLog]) -> Result<()> {
    let mut w = csv::WriterBuilder::new().has_headers(true).from_writer(vec![]);
    if rows.is_empty() {
        w.write_record(LOG_HEADER).map_err(|e| Error::file(path, e.to_string()))?;
    }
    for r in rows {
        w.serialize(r).map_err(|e| Error::file(path, e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| Error::file(path, e.to_string()))?;
    native::write_atomic(path, &bytes)
}

const LOG_HEADER: [&str; 11] = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "test_loss",
    "test_top1",
    "test_top5",
    "seconds",
    "images_per_second",
];

/// A fault injected by the crash tests (`EDGEPRUNE_TEST_POISON=EPOCH:BATCH`, zero-based): a NaN
/// written into the weights before that step, once per process.
fn test_poison() -> Option<(usize, usize)> {
    let v = std::env::var("EDGEPRUNE_TEST_POISON").ok()?;
    let (e, b) = v.split_once(':')?;
    Some((e.parse().ok()?, b.parse().ok()?))
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
