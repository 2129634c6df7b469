//! Checkpoints of a training run. Each is a folder `checkpoints/eEEEE-bBBBBBB` (epochs finished,
//! batches done in the next epoch) holding everything needed to continue exactly:
//!
//! - `graph.json`, `weights.safetensors`: the model (a model folder: any command loads it);
//! - `optimizer.safetensors`: the SGD momentum buffers;
//! - `state.json`: the epoch and batch, the learning-rate scale after divergence roll-backs, the
//!   best-validation record, the per-epoch log so far, the random-number position, and the
//!   precision of the training steps;
//! - `plan.json`: the pruning plan applied to the model before this training, when there was one.
//!
//! Every random draw of training is a pure function of (seed, epoch, batch): the data order and
//! augmentation come from ChaCha8(seed, epoch), skipped ahead by the batches already done, and
//! libtorch's generator (dropout) is reseeded from (seed, epoch, batch) before every step. So the
//! position *is* the random state, and resuming replays the same draws.
//!
//! A checkpoint is written through a [`StagedDir`]: it appears whole or not at all, and the
//! previous ones are removed only after the new one is in place. Non-finite weights are refused,
//! so no checkpoint (and no "best" model) ever holds a NaN.
//!
//! Each checkpoint also holds `checksums.json`, the SHA-256 of each of its other files. A resume
//! ([`load_latest`]) verifies them and falls back to the newest intact checkpoint, with a warning
//! naming each bad one; rotation never removes the newest checkpoint that verifies. (Checkpoints
//! written before checksums existed are read unverified.)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::EpochLog;
use crate::error::{Error, Result};
use crate::formats::atomic::{self, StagedDir};
use crate::formats::native;
use crate::ir::{Model, Weights};

pub const DIR: &str = "checkpoints";
const STATE_FILE: &str = "state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PLAN_FILE: &str = "plan.json";
const CHECKSUMS_FILE: &str = "checksums.json";
const STATE_VERSION: u32 = 2;

/// Sums over the batches done so far in an unfinished epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub version: u32,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Batches done in epoch `epochs_done` (0 at an epoch boundary).
    pub batch: usize,
    pub partial: Partial,
    /// The seed: with (`epochs_done`, `batch`), every random draw of the run.
    pub seed: u64,
    pub best_epoch: Option<usize>,
    pub best_val_top1: Option<f64>,
    pub best_test_top1: Option<f64>,
    /// Training seconds so far, over every process that worked on the run.
    pub seconds: f64,
    /// Factor on the schedule's learning rate (below 1 after divergence roll-backs).
    pub lr_scale: f64,
    /// Roll-backs after a non-finite loss or weight so far.
    pub divergences: usize,
    /// The per-epoch log of the finished epochs.
    pub history: Vec<EpochLog>,
    /// The class names the run trains on, in label order (empty in checkpoints written before
    /// they were recorded): a resume on data whose classes differ is refused.
    #[serde(default)]
    pub classes: Vec<String>,
    /// The precision of the run's training steps (never auto; fp32 in checkpoints written
    /// before it was recorded, which is what those runs trained in): a resume at another
    /// precision is refused.
    #[serde(default, with = "crate::formats::via_str")]
    pub precision: crate::engine::Precision,
    /// The run's training seconds as predicted at its start on the device's training-cost table
    /// (None where there was none, and in checkpoints written before it was recorded).
    #[serde(default)]
    pub predicted_seconds: Option<f64>,
}

impl RunState {
    pub fn start(seed: u64, start_epoch: usize) -> Self {
        RunState {
            version: STATE_VERSION,
            epochs_done: start_epoch,
            batch: 0,
            partial: Partial::default(),
            seed,
            best_epoch: None,
            best_val_top1: None,
            best_test_top1: None,
            seconds: 0.0,
            lr_scale: 1.0,
            divergences: 0,
            history: vec![],
            classes: vec![],
            precision: crate::engine::Precision::Fp32,
            predicted_seconds: None,
        }
    }

    /// Every number of the state is finite (JSON has no NaN: serde would write `null`, which
    /// cannot be read back, and the run could never be resumed). The error names the field.
    pub fn check_finite(&self) -> Result<()> {
        let mut fields: Vec<(String, f64)> = vec![
            ("partial.loss_sum".into(), self.partial.loss_sum),
            ("partial.seconds".into(), self.partial.seconds),
            ("seconds".into(), self.seconds),
            ("lr_scale".into(), self.lr_scale),
        ];
        fields.extend(self.best_val_top1.map(|v| ("best_val_top1".into(), v)));
        fields.extend(self.best_test_top1.map(|v| ("best_test_top1".into(), v)));
        for r in &self.history {
            let e = r.epoch;
            for (k, v) in [
                ("lr", Some(r.lr)),
                ("train_loss", Some(r.train_loss)),
                ("train_top1", Some(r.train_top1)),
                ("val_loss", r.val_loss),
                ("val_top1", r.val_top1),
                ("test_loss", Some(r.test_loss)),
                ("test_top1", Some(r.test_top1)),
                ("test_top5", Some(r.test_top5)),
                ("seconds", Some(r.seconds)),
                ("images_per_second", Some(r.images_per_second)),
            ] {
                fields.extend(v.map(|v| (format!("history[epoch {e}].{k}"), v)));
            }
        }
        match fields.into_iter().find(|(_, v)| !v.is_finite()) {
            Some((k, v)) => {
                Err(Error::config(k, format!("is {v}: refusing to write a run state that cannot be read back")))
            }
            None => Ok(()),
        }
    }

    /// The history agrees with the position: one row per finished epoch, numbered in order up to
    /// `epochs_done`; the best epoch is one of them.
    fn check_consistent(&self) -> std::result::Result<(), String> {
        if self.history.len() > self.epochs_done {
            return Err(format!("{} log rows for {} finished epochs", self.history.len(), self.epochs_done));
        }
        let first = self.epochs_done - self.history.len() + 1;
        for (i, r) in self.history.iter().enumerate() {
            if r.epoch != first + i {
                return Err(format!(
                    "log row {} is epoch {}, expected {} (epochs_done {})",
                    i + 1,
                    r.epoch,
                    first + i,
                    self.epochs_done
                ));
            }
        }
        if let Some(b) = self.best_epoch
            && (b > self.epochs_done || b == 0)
        {
            return Err(format!("best epoch {b} is not a finished epoch (epochs_done {})", self.epochs_done));
        }
        Ok(())
    }

    /// The checkpoint folder name of this position.
    pub fn name(&self) -> String {
        format!("e{:04}-b{:06}", self.epochs_done, self.batch)
    }
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: Model,
    pub optimizer: Weights,
    pub state: RunState,
    pub plan: Option<String>,
}

/// The checkpoints of run folder `out`, oldest first (stages of killed writes are skipped).
pub fn list(out: &Path) -> Result<Vec<PathBuf>> {
    let dir = out.join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(vec![]) };
    let mut found = vec![];
    for e in entries {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if parse_name(&name).is_some() {
            found.push(e.path());
        }
    }
    found.sort();
    Ok(found)
}

fn parse_name(name: &str) -> Option<(usize, usize)> {
    let (e, b) = name.strip_prefix('e')?.split_once("-b")?;
    (e.len() == 4 && b.len() == 6).then_some(())?;
    Some((e.parse().ok()?, b.parse().ok()?))
}

/// The newest checkpoint of `out`, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    Ok(list(out)?.pop())
}

/// Writes a checkpoint of `out` and keeps only the newest `keep` of them (at least 1).
pub fn save(
    out: &Path,
    model: &Model,
    optimizer: &Weights,
    state: &RunState,
    plan: Option<&str>,
    keep: usize,
) -> Result<PathBuf> {
    let root = out.join(DIR);
    let dest = root.join(state.name());
    for (what, w) in [("weight", &model.weights), ("momentum", optimizer)] {
        if let Some((key, ..)) = w.first_non_finite() {
            return Err(Error::tensor(key, format!("non-finite {what}: refusing to checkpoint {}", dest.display())));
        }
    }
    state.check_finite()?;
    atomic::remove_stale_stages(&root);
    let stage = StagedDir::new(&dest)?;
    let delay = test_delay();
    let mut sums = std::collections::BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        stage.write(name, bytes)?;
        sums.insert(name.to_string(), sha256_hex(bytes));
        Ok(())
    };
    put(native::WEIGHTS_FILE, &native::weights_to_safetensors(&model.weights))?;
    std::thread::sleep(delay);
    put(OPTIMIZER_FILE, &native::weights_to_safetensors(optimizer))?;
    std::thread::sleep(delay);
    if let Some(p) = plan {
        put(PLAN_FILE, p.as_bytes())?;
    }
    put(STATE_FILE, native::json_text(&dest.join(STATE_FILE), state)?.as_bytes())?;
    std::thread::sleep(delay);
    put(native::GRAPH_FILE, native::graph_to_json(&model.graph).as_bytes())?;
    stage.write(CHECKSUMS_FILE, native::json_text(&dest.join(CHECKSUMS_FILE), &sums)?.as_bytes())?;
    stage.commit()?;
    rotate(out, keep)?;
    Ok(dest)
}

/// Removes all but the newest `keep` checkpoints (at least 1), never the newest one that verifies:
/// if every kept one is corrupt, that one stays too.
fn rotate(out: &Path, keep: usize) -> Result<()> {
    let all = list(out)?;
    let cut = all.len().saturating_sub(keep.max(1));
    let (old, kept) = all.split_at(cut);
    let spare =
        if kept.iter().any(|d| verify(d).is_ok()) { None } else { old.iter().rev().find(|d| verify(d).is_ok()) };
    for dir in old {
        if Some(dir) != spare {
            atomic::remove_dir(dir)?;
        }
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks each file of a checkpoint against its recorded SHA-256. Ok(false): an older checkpoint
/// with no checksums (it cannot be verified).
pub fn verify(dir: &Path) -> Result<bool> {
    let p = dir.join(CHECKSUMS_FILE);
    if !p.exists() {
        return Ok(false);
    }
    let text = crate::formats::read_text(&p)?;
    let sums: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| Error::file(&p, e.to_string()))?;
    for required in [native::WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE, native::GRAPH_FILE] {
        if !sums.contains_key(required) {
            return Err(Error::file(&p, format!("has no checksum for {required}")));
        }
    }
    for (name, want) in &sums {
        if name.contains('/') || name.starts_with('.') {
            return Err(Error::file(&p, format!("names `{name}`, which is not a file of the checkpoint")));
        }
        let f = dir.join(name);
        let got = sha256_hex(&crate::formats::read_file(&f, crate::formats::MAX_BINARY_BYTES)?);
        if &got != want {
            return Err(Error::file(
                &f,
                format!("checksum mismatch (SHA-256 {got}, recorded {want}): the file is corrupt"),
            ));
        }
    }
    Ok(true)
}

/// The newest checkpoint of `out` that verifies and loads, warning about each newer one that does
/// not (it is left in place, and replaced when the run passes its position again).
pub fn load_latest(out: &Path) -> Result<Option<Checkpoint>> {
    let all = list(out)?;
    let mut bad = vec![];
    for dir in all.iter().rev() {
        match verify(dir).and_then(|_| load(dir)) {
            Ok(ck) => {
                if !bad.is_empty() {
                    eprintln!("warning: falling back to the intact checkpoint {}", dir.display());
                }
                return Ok(Some(ck));
            }
            Err(e) => {
                eprintln!("warning: checkpoint {} is unusable: {e}", dir.display());
                bad.push(dir.clone());
            }
        }
    }
    if bad.is_empty() {
        return Ok(None);
    }
    Err(Error::file(out, format!("no intact checkpoint: all {} are corrupt (see the warnings above)", bad.len())))
}

/// Reads the checkpoint folder `dir`.
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let model = native::load(dir)?;
    let p = dir.join(OPTIMIZER_FILE);
    let bytes = crate::formats::read_file(&p, crate::formats::MAX_BINARY_BYTES)?;
    let optimizer = native::weights_from_safetensors(&bytes, &p)?;
    let p = dir.join(STATE_FILE);
    let text = crate::formats::read_text(&p)?;
    let state: RunState = serde_json::from_str(&text).map_err(|e| Error::file(&p, e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(Error::file(&p, format!("state version {} (this build reads {STATE_VERSION})", state.version)));
    }
    state.check_consistent().map_err(|e| Error::file(&p, e))?;
    let plan = read_plan(dir)?;
    Ok(Checkpoint { dir: dir.to_path_buf(), model, optimizer, state, plan })
}

/// The text of the pruning plan kept in a model, cell or checkpoint folder (`plan.json`), if any.
pub fn read_plan(dir: &Path) -> Result<Option<String>> {
    let p = dir.join(PLAN_FILE);
    if !p.exists() {
        return Ok(None);
    }
    crate::formats::read_text(&p).map(Some)
}

/// The first tensor holding a NaN or an infinity (see [`Weights::first_non_finite`]).
pub fn first_non_finite(w: &Weights) -> Option<&str> {
    w.first_non_finite().map(|(k, ..)| k)
}

/// A pause between the files of a checkpoint, set only by the crash tests
/// (`EDGEPRUNE_TEST_CHECKPOINT_DELAY_MS`) to widen the window in which they kill a write.
fn test_delay() -> std::time::Duration {
    let ms = std::env::var("EDGEPRUNE_TEST_CHECKPOINT_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    std::time::Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::HostTensor;

    fn tiny() -> Model {
        Model::init(crate::zoo::structures::build("flatten_2x2", 3).unwrap(), 0).unwrap()
    }

    #[test]
    fn names_sort_by_position_and_old_ones_are_pruned() {
        let out = tempfile::tempdir().unwrap();
        let m = tiny();
        let mut st = RunState::start(1, 0);
        for (e, b) in [(0, 0), (0, 7), (1, 0), (10, 0)] {
            st.epochs_done = e;
            st.batch = b;
            save(out.path(), &m, &Weights::default(), &st, Some("{}"), 2).unwrap();
        }
        let names: Vec<String> =
            list(out.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["e0001-b000000", "e0010-b000000"]);
        let ck = load(&latest(out.path()).unwrap().unwrap()).unwrap();
        assert_eq!(ck.state, st);
        assert_eq!(ck.model, m);
        assert_eq!(ck.plan.as_deref(), Some("{}"));
        assert_eq!(parse_name("e0001-b00000"), None);
        assert_eq!(parse_name(".stage-e0001-b000000.12"), None);
    }

    #[test]
    fn corrupt_checkpoints_are_detected_skipped_and_the_last_intact_one_is_kept() {
        let out = tempfile::tempdir().unwrap();
        let m = tiny();
        let mut st = RunState::start(1, 0);
        let mut dirs = vec![];
        for e in 1..=2 {
            st.epochs_done = e;
            dirs.push(save(out.path(), &m, &Weights::default(), &st, None, 2).unwrap());
        }
        assert!(verify(&dirs[1]).unwrap());
        // Zeroed bytes in the newest checkpoint's weights, same length.
        let w = dirs[1].join(native::WEIGHTS_FILE);
        let mut bytes = std::fs::read(&w).unwrap();
        let n = bytes.len();
        bytes[n - 16..].fill(0);
        std::fs::write(&w, &bytes).unwrap();
        assert!(verify(&dirs[1]).unwrap_err().to_string().contains("checksum mismatch"));
        let ck = load_latest(out.path()).unwrap().unwrap();
        assert_eq!(ck.dir, dirs[0], "falls back to the intact one");
        // Rotation keeps the intact one while every kept checkpoint is corrupt.
        rotate(out.path(), 1).unwrap();
        assert_eq!(list(out.path()).unwrap(), dirs);
        // A new intact checkpoint lets it go.
        st.epochs_done = 3;
        save(out.path(), &m, &Weights::default(), &st, None, 1).unwrap();
        assert_eq!(list(out.path()).unwrap().len(), 1);
        // All corrupt: an error, not a silent resume.
        let only = latest(out.path()).unwrap().unwrap();
        std::fs::write(only.join(STATE_FILE), "{}").unwrap();
        assert!(load_latest(out.path()).unwrap_err().to_string().contains("no intact checkpoint"));
    }

    #[test]
    fn non_finite_weights_are_never_checkpointed() {
        let out = tempfile::tempdir().unwrap();
        let mut m = tiny();
        let key = m.weights.tensors.keys().find(|k| k.ends_with("weight")).unwrap().clone();
        let t = m.weights.tensors.get_mut(&key).unwrap();
        t.as_f32_mut().unwrap()[0] = f32::NAN;
        let e = save(out.path(), &m, &Weights::default(), &RunState::start(0, 0), None, 2).unwrap_err().to_string();
        assert!(e.contains(&key) && e.contains("non-finite"), "{e}");
        assert!(list(out.path()).unwrap().is_empty());
        let mut opt = Weights::default();
        opt.insert("x", HostTensor::f32(vec![1], vec![f32::INFINITY]));
        assert!(save(out.path(), &tiny(), &opt, &RunState::start(0, 0), None, 2).is_err());
    }
}
