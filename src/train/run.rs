//! One training run's epochs: the steps of each epoch (with checkpoints every few minutes), its
//! evaluation and log line, the best model, and the roll-back when the run diverges.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Checkpoint, Partial, RunState};
use super::{EVAL_BATCH_SIZE, EpochLog, RunData, RunDir, TrainConfig, evaluate};
use crate::data::{Augment, Dataset, Loader, LoaderConfig, Normalize};
use crate::engine::{self, Device, SgdConfig, Train};
use crate::error::{Error, Result};
use crate::formats::atomic::StagedDir;
use crate::formats::native;
use crate::ir::Model;

/// What every epoch of a fit needs.
pub(super) struct Run<'a> {
    cfg: &'a TrainConfig,
    data: &'a RunData,
    out: &'a Path,
    device: Device,
    train: Arc<Dataset>,
    plan: Option<String>,
    /// The input normalisation the model records (set from the data when the run began).
    norm: Normalize,
    poison: Option<(usize, usize)>,
    /// The network's input height and width: what the training loader gives out.
    input_hw: [usize; 2],
    /// The teacher of a distilling run (`cfg.distill`).
    teacher: Option<Teacher>,
}

/// A distilling run's teacher: its inference network and the classes it is restricted to.
struct Teacher {
    net: Box<dyn engine::Infer>,
    classes: Vec<i64>,
    outputs: usize,
}

impl Teacher {
    /// The teacher of `cfg`, checked against the student `model` and the run's normalisation:
    /// the same input shape, outputs and normalisation, so that it sees what the student sees.
    fn load(cfg: &super::DistillConfig, model: &Model, norm: &Normalize, device: Device) -> Result<Self> {
        let path = RunDir::model_path(&cfg.teacher);
        let teacher = crate::formats::load_model(&path)?;
        let bad = |why: String| Err(Error::file(&path, format!("cannot teach this network: {why}")));
        let (ti, si) = (teacher.graph.input_shape()?.to_vec(), model.graph.input_shape()?.to_vec());
        if ti != si {
            return bad(format!("its input is {ti:?}, the student's {si:?}"));
        }
        let out = |m: &Model| -> Result<Vec<usize>> { Ok(m.graph.infer_shapes()?[m.graph.output_index()?].clone()) };
        let (to, so) = (out(&teacher)?, out(model)?);
        if to != so || to.len() != 1 {
            return bad(format!("its output is {to:?}, the student's {so:?} (both must be one vector of classes)"));
        }
        if let Some(n) = &teacher.graph.normalize
            && n != norm
        {
            return bad(format!(
                "it normalises its input with mean {:?} std {:?}, the student with mean {:?} std {:?}",
                n.mean, n.std, norm.mean, norm.std
            ));
        }
        if let Some(c) = cfg.classes.iter().find(|&&c| c >= to[0]) {
            return bad(format!("distill.classes names class {c}, but it has {} outputs", to[0]));
        }
        Ok(Teacher {
            net: engine::infer(&teacher, device)?,
            classes: cfg.classes.iter().map(|&c| c as i64).collect(),
            outputs: to[0],
        })
    }

    /// The teacher's logits on a batch of `n` images, and its pseudo-labels: the top class among
    /// `classes` where its probability among them is at least `min_confidence`, else
    /// [`engine::Distill::IGNORE`].
    fn targets(&self, images: &[f32], n: usize, min_confidence: f64) -> Result<(Vec<f32>, Vec<i64>)> {
        let logits = self.net.predict(images, n)?;
        let all: Vec<i64> = (0..self.outputs as i64).collect();
        let cols = if self.classes.is_empty() { &all } else { &self.classes };
        let labels = logits
            .chunks_exact(self.outputs)
            .map(|row| {
                let (top, m) = cols
                    .iter()
                    .map(|&c| (c, row[c as usize]))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("at least one class");
                let z: f64 = cols.iter().map(|&c| ((row[c as usize] - m) as f64).exp()).sum();
                if 1.0 / z >= min_confidence { top } else { engine::Distill::IGNORE }
            })
            .collect();
        Ok((logits, labels))
    }
}

/// Whether a stretch of training went through, or diverged (and why).
enum Outcome<T> {
    Done(T),
    Diverged(String),
}

/// What an epoch's training steps gave: the learning rate, running sums and times.
struct Batches {
    lr: f64,
    sums: Partial,
    /// Seconds of training steps in the epoch (including those before a resume).
    train_seconds: f64,
    /// When this process began the epoch's steps, and the seconds of the epoch before that.
    t0: Instant,
    base_seconds: f64,
}

/// The epoch's line on the console.
fn print_row(row: &EpochLog) {
    eprintln!(
        "epoch {:>3} lr {:<8} train loss {:.4} acc {:.2}% | val {} | test acc {:.2}% top5 {:.2}% | {:.0}s, {:.0} img/s",
        row.epoch,
        row.lr,
        row.train_loss,
        100.0 * row.train_top1,
        row.val_top1.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v)),
        100.0 * row.test_top1,
        100.0 * row.test_top5,
        row.seconds,
        row.images_per_second
    );
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

impl<'a> Run<'a> {
    pub(super) fn new(
        cfg: &'a TrainConfig,
        data: &'a RunData,
        out: &'a Path,
        model: &Model,
        plan: Option<String>,
        norm: Normalize,
    ) -> Result<Self> {
        Ok(Run {
            cfg,
            data,
            out,
            device: cfg.device,
            train: Arc::new(data.train.clone()),
            plan,
            norm: norm.clone(),
            poison: test_poison(),
            input_hw: model.graph.image_size()?,
            teacher: cfg.distill.as_ref().map(|d| Teacher::load(d, model, &norm, cfg.device)).transpose()?,
        })
    }

    /// A network and state from a checkpoint; the log and the best model are made to agree with it.
    fn restore(&self, ck: Checkpoint) -> Result<(Box<dyn Train>, RunState)> {
        if ck.state.seed != self.cfg.seed {
            let why = format!("seed {} differs from the checkpoint's {}", self.cfg.seed, ck.state.seed);
            return Err(Error::file(ck.dir.join("state.json"), why));
        }
        if ck.state.precision != self.cfg.precision {
            let why = format!("precision {} differs from the checkpoint's {}", self.cfg.precision, ck.state.precision);
            return Err(Error::file(ck.dir.join("state.json"), why));
        }
        let mut net = engine::trainer(&ck.model, self.device)?;
        net.set_precision(self.cfg.precision);
        let cfg = self.cfg;
        net.set_optimizer(SgdConfig { momentum: cfg.momentum, weight_decay: cfg.weight_decay, nesterov: cfg.nesterov });
        net.load_optimizer_state(&ck.optimizer)?;
        write_log(&RunDir::new(self.out).log(), &ck.state.history)?;
        // The best model is written right after the checkpoint of its epoch; a crash in between
        // leaves it behind its record, and that checkpoint is the best model.
        let best = RunDir::new(self.out).best();
        let marker: Option<BestMarker> = native::read_json(&best.join(BEST_FILE)).ok();
        if ck.state.best_epoch.is_some()
            && marker.map(|m| m.epoch) != ck.state.best_epoch
            && ck.state.best_epoch == Some(ck.state.epochs_done)
            && ck.state.batch == 0
        {
            save_best(&best, &ck.model, &ck.state)?;
        }
        Ok((net, ck.state))
    }

    /// Trains to the last epoch, rolling back to the newest intact checkpoint (with the learning
    /// rate scaled by `cfg.nan_lr_factor`) whenever the run diverges, at most `cfg.nan_retries`
    /// times.
    pub(super) fn run_to_end(&mut self, ck: Checkpoint) -> Result<(Box<dyn Train>, RunState)> {
        let (mut net, mut state) = self.restore(ck)?;
        while let Some(why) = self.epochs(&mut *net, &mut state)? {
            let out = self.out;
            let back =
                checkpoint::load_latest(out)?.ok_or_else(|| Error::file(out, "no checkpoint to roll back to"))?;
            let dir = back.dir.clone();
            if state.divergences >= self.cfg.nan_retries {
                return Err(Error::Engine(format!(
                    "training diverged ({why}) and {} roll-backs with a smaller learning rate did not help \
                     (lr scale now {}); the last good checkpoint is {}",
                    state.divergences,
                    state.lr_scale,
                    dir.display()
                )));
            }
            let (divergences, scale) = (state.divergences + 1, state.lr_scale * self.cfg.nan_lr_factor);
            eprintln!("{why}: rolling back to {} with the learning rate scaled by {scale}", dir.display());
            (net, state) = self.restore(back)?;
            state.divergences = divergences;
            state.lr_scale = scale;
        }
        Ok((net, state))
    }

    /// Trains until the last epoch (None) or until a loss, weight or output stops being finite
    /// (Some(why)).
    fn epochs(&mut self, net: &mut dyn Train, st: &mut RunState) -> Result<Option<String>> {
        let mut last_checkpoint = Instant::now();
        while st.epochs_done < self.cfg.epochs {
            let batches = match self.batches(net, st, &mut last_checkpoint)? {
                Outcome::Done(b) => b,
                Outcome::Diverged(why) => return Ok(Some(why)),
            };
            if let Outcome::Diverged(why) = self.end_epoch(net, st, batches, &mut last_checkpoint)? {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }

    /// The rest of the current epoch's training steps, from `st.batch` on, with a checkpoint
    /// every `cfg.checkpoint_minutes`.
    fn batches(
        &mut self,
        net: &mut dyn Train,
        st: &mut RunState,
        last_checkpoint: &mut Instant,
    ) -> Result<Outcome<Batches>> {
        let cfg = self.cfg;
        let epoch = st.epochs_done;
        let lr = cfg.lr_schedule.lr_at(epoch) * st.lr_scale;
        let aug = cfg.augment.then_some(Augment { min_scale: cfg.crop_min_scale, ..Augment::default() });
        let loader = Loader::starting_at(
            self.train.clone(),
            LoaderConfig {
                batch_size: cfg.batch_size,
                shuffle: true,
                augment: aug,
                norm: self.norm.clone(),
                seed: cfg.seed,
                epoch: epoch as u64,
                size: Some(self.input_hw),
            },
            st.batch,
        );
        let n_batches = cfg.batches_per_epoch(self.train.len());
        let pb = super::progress(n_batches as u64, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
        pb.set_position(st.batch as u64);
        let t0 = Instant::now();
        let base = st.partial;
        let mut p = st.partial;
        for batch in loader.take(n_batches.saturating_sub(st.batch)) {
            crate::engine::manual_seed(step_seed(cfg.seed, epoch, st.batch));
            if self.poison.take_if(|&mut (e, b)| (e, b) == (epoch, st.batch)).is_some() {
                net.corrupt_for_test()?;
            }
            let s = match (&self.teacher, &cfg.distill) {
                (Some(t), Some(d)) => {
                    let n = batch.labels.len();
                    let (logits, pseudo) = t.targets(&batch.images, n, d.pseudo_min_confidence)?;
                    let target = engine::Distill {
                        teacher_logits: &logits,
                        classes: &t.classes,
                        temperature: d.temperature,
                        alpha: d.alpha,
                        labels: Some(&pseudo),
                    };
                    net.distill_step(&batch.images, &target, lr)?
                }
                _ => net.train_step(&batch.images, &batch.labels, lr)?,
            };
            if !s.loss.is_finite() {
                return Ok(Outcome::Diverged(format!(
                    "loss is {} at epoch {} batch {}",
                    s.loss,
                    epoch + 1,
                    st.batch + 1
                )));
            }
            if let Some(key) = net.first_non_finite_parameter()? {
                let why = format!("parameter `{key}` is not finite after epoch {} batch {}", epoch + 1, st.batch + 1);
                return Ok(Outcome::Diverged(why));
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
                st.partial = Partial { seconds: base.seconds + t0.elapsed().as_secs_f64(), ..p };
                self.checkpoint(net, st)?;
                *last_checkpoint = Instant::now();
            }
        }
        self.device.synchronize();
        pb.finish_and_clear();
        let train_seconds = base.seconds + t0.elapsed().as_secs_f64();
        Ok(Outcome::Done(Batches { lr, sums: p, train_seconds, t0, base_seconds: base.seconds }))
    }

    /// Evaluates the epoch's model, logs it, keeps it if it is the best so far, and checkpoints.
    fn end_epoch(
        &mut self,
        net: &mut dyn Train,
        st: &mut RunState,
        b: Batches,
        last_checkpoint: &mut Instant,
    ) -> Result<Outcome<()>> {
        let (cfg, data, norm) = (self.cfg, self.data, &self.norm);
        let epoch = st.epochs_done;
        let val = data.val.as_ref().map(|v| evaluate(net, v, norm, EVAL_BATCH_SIZE)).transpose()?;
        let test = evaluate(net, &data.test, norm, EVAL_BATCH_SIZE)?;
        // A network whose outputs are not finite has diverged, whatever its training loss
        // said: it is never logged, never a best epoch, and the run rolls back.
        for (split, s) in [("validation", val), ("test", Some(test))] {
            if let Some(s) = s.filter(|s| !s.is_finite()) {
                return Ok(Outcome::Diverged(format!(
                    "{split} outputs are not finite after epoch {} ({} of {} images)",
                    epoch + 1,
                    s.non_finite.max(1),
                    s.count
                )));
            }
        }
        let p = b.sums;
        if !p.loss_sum.is_finite() {
            return Ok(Outcome::Diverged(format!("the training loss of epoch {} is not finite", epoch + 1)));
        }
        let row = EpochLog {
            epoch: epoch + 1,
            lr: b.lr,
            train_loss: p.loss_sum / p.seen.max(1) as f64,
            train_top1: p.correct as f64 / p.seen.max(1) as f64,
            val_loss: val.map(|v| v.loss),
            val_top1: val.map(|v| v.top1),
            test_loss: test.loss,
            test_top1: test.top1,
            test_top5: test.top5,
            seconds: b.base_seconds + b.t0.elapsed().as_secs_f64(),
            images_per_second: if b.train_seconds > 0.0 { p.seen as f64 / b.train_seconds } else { 0.0 },
        };
        print_row(&row);
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
            *last_checkpoint = Instant::now();
            if improved {
                save_best(&RunDir::new(self.out).best(), &model, st)?;
            }
        }
        Ok(Outcome::Done(()))
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
