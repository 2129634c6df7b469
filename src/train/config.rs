//! A training recipe: every knob of a run, readable from a TOML file (unknown keys are an error)
//! and overridable from the command line. A run folder keeps the resolved recipe as config.toml.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Schedule;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// A zoo network name (fresh weights) or a model folder.
    pub model: String,
    /// Dataset location; unset: $EDGEPRUNE_DATA, ./data, ../shared/data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Class or superclass names to train and test on; empty: all classes.
    pub subset: Vec<String>,
    /// Output width for a zoo network; unset: the dataset's number of classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr_schedule: Schedule,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Per class, this fraction of the training images trains; the rest validates.
    pub train_fraction: f64,
    /// Training augmentation: a horizontal flip, and a random crop: padded by 4 when the images
    /// have the network's input size (CIFAR), else a random resized crop to it (ImageNet style).
    pub augment: bool,
    /// The smallest share of an image's area a random resized crop takes (torchvision's 0.08).
    pub crop_min_scale: f64,
    /// The best checkpoint is chosen among epochs after this one (the protocol's n_f).
    pub best_from_epoch: usize,
    /// Stop each epoch after this many batches (quick runs and tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batches: Option<usize>,
    /// Each epoch trains on this share of the training split (a fresh random draw each epoch: the
    /// first batches of that epoch's shuffle), so that budgets scale alike for datasets of any
    /// size (the protocol's fair scaled budget). With `max_batches`, the smaller of the two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_fraction: Option<f64>,
    pub seed: u64,
    pub threads: usize,
    #[serde(with = "crate::formats::via_str")]
    pub device: crate::engine::Device,
    /// The precision of the training steps: fp32, bf16 (mixed precision, see
    /// [`crate::engine::Precision`]) or auto (bf16 where the CPU has bf16 instructions). A run
    /// resolves auto when it begins and keeps what it resolved to (config.toml and every
    /// checkpoint record it); a resume at another precision is refused.
    #[serde(with = "crate::formats::via_str")]
    pub precision: crate::engine::Precision,
    /// Checkpoint after every this many epochs (and always after the last and the best).
    pub checkpoint_epochs: usize,
    /// Also checkpoint when this many minutes have passed since the last checkpoint, between
    /// batches if need be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_minutes: Option<f64>,
    /// Checkpoints kept on disk (the newest ones).
    pub keep_checkpoints: usize,
    /// Roll-backs allowed after a non-finite loss or weight before the run stops.
    pub nan_retries: usize,
    /// Factor on the learning rate after each roll-back.
    pub nan_lr_factor: f64,
    /// Refuse to start when the estimated peak memory (bytes) exceeds this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
    /// Refuse to start a run whose predicted time (the training steps and evaluations still to
    /// do) exceeds this many minutes; needs a training-cost table (`bench train-cost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_train_minutes: Option<f64>,
    /// Refuse to start a run whose predicted training step exceeds this many ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_step_ms: Option<f64>,
    /// Where `max_train_minutes` would be exceeded, train each epoch on the largest share of the
    /// training split that fits (`epoch_fraction`) instead of refusing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fit_to_budget: bool,
    /// The training-cost table to predict with (default: the cache's table of this network, or
    /// of the network it was pruned from, at this batch and thread count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_table: Option<PathBuf>,
    /// Train towards a teacher's outputs instead of the images' labels (label-free adaptation):
    /// the labels of the training split are never read. Kept last: a TOML table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
}

/// Knowledge distillation from a teacher (the `[distill]` table of a recipe): each training step
/// runs the teacher, in evaluation mode and fp32, on the very batch the student sees (augmented:
/// the teacher's outputs are computed on the fly, one inference pass per step, since a random
/// crop and flip change them), and trains on [`crate::engine::Distill`]'s loss: `alpha` of
/// `T^2 KL` over `classes` at temperature `T`, `1 - alpha` of the cross-entropy on the teacher's
/// top class among `classes` where its probability (among them, at T = 1) is at least
/// `pseudo_min_confidence`. A run's training accuracy is then its agreement with the teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher's model folder (or run folder).
    pub teacher: PathBuf,
    /// Output indices the soft targets and pseudo-labels are restricted to; empty: every output.
    pub classes: Vec<usize>,
    pub temperature: f64,
    pub alpha: f64,
    pub pseudo_min_confidence: f64,
}

impl Default for DistillConfig {
    /// T = 4, alpha = 0.9 (Hinton et al.'s usual setting), pseudo-labels from 0.5.
    fn default() -> Self {
        DistillConfig {
            teacher: PathBuf::new(),
            classes: vec![],
            temperature: 4.0,
            alpha: 0.9,
            pseudo_min_confidence: 0.5,
        }
    }
}

impl DistillConfig {
    fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| Err(Error::config(format!("distill.{k}"), m));
        if self.teacher.as_os_str().is_empty() {
            return bad("teacher", "names no model: give the teacher's model folder".into());
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} must be a positive number", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad("alpha", format!("{} is not in [0, 1]", self.alpha));
        }
        if !(0.0..=1.0).contains(&self.pseudo_min_confidence) {
            return bad("pseudo_min_confidence", format!("{} is not in [0, 1]", self.pseudo_min_confidence));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(c) = self.classes.iter().find(|&&c| !seen.insert(c)) {
            return bad("classes", format!("class {c} is listed twice"));
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "resnet20".into(),
            data: None,
            subset: vec![],
            num_classes: None,
            epochs: 30,
            batch_size: 128,
            lr_schedule: Schedule::constant(0.01),
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            train_fraction: crate::data::PROTOCOL_TRAIN_FRACTION,
            augment: true,
            crop_min_scale: 0.08,
            best_from_epoch: 0,
            max_batches: None,
            epoch_fraction: None,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            device: crate::engine::Device::Cpu,
            precision: crate::engine::Precision::Fp32,
            checkpoint_epochs: 1,
            checkpoint_minutes: None,
            keep_checkpoints: 2,
            nan_retries: 3,
            nan_lr_factor: 0.5,
            max_memory: None,
            max_train_minutes: None,
            max_step_ms: None,
            fit_to_budget: false,
            cost_table: None,
            distill: None,
        }
    }
}

impl TrainConfig {
    /// Reads a recipe; errors name the file and the key or line at fault.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = crate::formats::read_text(path)?;
        Self::from_toml(&text).map_err(|e| e.in_file(path))
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| Error::config("recipe", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("configs serialise")
    }

    /// The training steps of one epoch over a training split of `images` images: every batch of
    /// it (the last may be smaller), or `epoch_fraction` of its images rounded up to whole
    /// batches (at least one), and at most `max_batches`.
    pub fn batches_per_epoch(&self, images: usize) -> usize {
        let full = images.div_ceil(self.batch_size.max(1));
        let scaled = match self.epoch_fraction {
            Some(f) => ((f * images as f64 / self.batch_size.max(1) as f64).ceil() as usize).clamp(1, full.max(1)),
            None => full,
        };
        self.max_batches.map_or(scaled, |m| m.min(scaled)).min(full)
    }

    /// Checks every value once, before anything runs.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, m: String| Err(Error::config(k, m));
        if self.epochs == 0 || self.epochs > super::MAX_EPOCHS {
            return bad("epochs", format!("{} is not in 1..={}", self.epochs, super::MAX_EPOCHS));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 16 {
            return bad("batch_size", format!("{} is not in 1..=65536", self.batch_size));
        }
        if !(self.train_fraction > 0.0 && self.train_fraction <= 1.0) {
            return bad("train_fraction", format!("{} is not in (0, 1]", self.train_fraction));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", format!("{} is not in [0, 1)", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", format!("{} must be finite and non-negative", self.weight_decay));
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1".into());
        }
        if !(self.crop_min_scale > 0.0 && self.crop_min_scale <= 1.0) {
            return bad("crop_min_scale", format!("{} is not in (0, 1]", self.crop_min_scale));
        }
        if self.max_batches == Some(0) {
            return bad("max_batches", "must be at least 1".into());
        }
        if let Some(f) = self.epoch_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return bad("epoch_fraction", format!("{f} is not in (0, 1]"));
        }
        if self.checkpoint_epochs == 0 {
            return bad("checkpoint_epochs", "must be at least 1".into());
        }
        for (k, v) in [("max_train_minutes", self.max_train_minutes), ("max_step_ms", self.max_step_ms)] {
            if let Some(v) = v
                && !(v > 0.0 && v.is_finite())
            {
                return bad(k, format!("{v} must be a positive number"));
            }
        }
        if self.fit_to_budget && self.max_train_minutes.is_none() {
            return bad("fit_to_budget", "needs max_train_minutes, the budget to fit".into());
        }
        check_checkpoint_minutes(self.checkpoint_minutes)?;
        if self.keep_checkpoints == 0 {
            return bad("keep_checkpoints", "must be at least 1".into());
        }
        if !(self.nan_lr_factor > 0.0 && self.nan_lr_factor < 1.0) {
            return bad("nan_lr_factor", format!("{} is not in (0, 1)", self.nan_lr_factor));
        }
        if self.max_memory == Some(0) {
            return bad("max_memory", "must be a positive number of bytes".into());
        }
        if let Some(d) = &self.distill {
            d.validate()?;
        }
        Ok(())
    }
}

/// Values given on a command line for a run; `None` (or `false`) keeps the recipe's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub data: Option<PathBuf>,
    pub subset: Option<Vec<String>>,
    pub num_classes: Option<usize>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr_schedule: Option<Schedule>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub train_fraction: Option<f64>,
    pub no_augment: bool,
    pub max_batches: Option<usize>,
    pub epoch_fraction: Option<f64>,
    pub seed: Option<u64>,
    pub threads: Option<usize>,
    pub device: Option<crate::engine::Device>,
    pub precision: Option<crate::engine::Precision>,
    pub checkpoint_epochs: Option<usize>,
    pub checkpoint_minutes: Option<f64>,
    pub max_memory: Option<u64>,
    pub max_train_minutes: Option<f64>,
    pub max_step_ms: Option<f64>,
    pub fit_to_budget: bool,
    pub cost_table: Option<PathBuf>,
}

impl TrainConfig {
    /// Applies command-line values. A resumed run keeps its config.toml: only `epochs` (to extend
    /// it), `data` (moved), `threads`, the checkpoint frequency, the budgets and `precision` (which
    /// must then be the run's own, checked against its checkpoint) may change; any other value
    /// given is an error naming its flag.
    pub fn apply(&mut self, o: Overrides, resuming: bool) -> Result<()> {
        if resuming {
            for (given, flag) in [
                (o.model.is_some(), "--model"),
                (o.subset.is_some(), "--subset"),
                (o.batch_size.is_some(), "--batch-size"),
                (o.lr_schedule.is_some(), "--lr-schedule"),
                (o.seed.is_some(), "--seed"),
                (o.max_batches.is_some(), "--max-batches"),
                (o.epoch_fraction.is_some(), "--epoch-fraction"),
                (o.momentum.is_some(), "--momentum"),
                (o.weight_decay.is_some(), "--weight-decay"),
                (o.train_fraction.is_some(), "--train-fraction"),
                (o.num_classes.is_some(), "--num-classes"),
                (o.no_augment, "--no-augment"),
                (o.device.is_some(), "--device"),
            ] {
                if given {
                    return Err(Error::config(flag, "cannot change when resuming: the run keeps its config.toml"));
                }
            }
        }
        // Allowed in both cases.
        if let Some(e) = o.epochs {
            self.epochs = e;
        }
        if o.data.is_some() {
            self.data = o.data;
        }
        if let Some(t) = o.threads {
            self.threads = t;
        }
        if let Some(n) = o.checkpoint_epochs {
            self.checkpoint_epochs = n;
        }
        if o.checkpoint_minutes.is_some() {
            self.checkpoint_minutes = o.checkpoint_minutes;
        }
        if o.max_memory.is_some() {
            self.max_memory = o.max_memory;
        }
        // On a resume, checked against the checkpoint's precision when the run restarts.
        if let Some(p) = o.precision {
            self.precision = p;
        }
        // Budgets and the table they are priced on may change on resume too.
        if o.max_train_minutes.is_some() {
            self.max_train_minutes = o.max_train_minutes;
        }
        if o.max_step_ms.is_some() {
            self.max_step_ms = o.max_step_ms;
        }
        if o.cost_table.is_some() {
            self.cost_table = o.cost_table;
        }
        if o.fit_to_budget {
            if resuming {
                return Err(Error::config(
                    "--fit-to-budget",
                    "cannot change when resuming: it changes the epochs' share of the data, which the run keeps",
                ));
            }
            self.fit_to_budget = true;
        }
        // A fresh run only (refused above when resuming).
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = o.$f { self.$f = v; } )* };
        }
        set!(model, subset, lr_schedule, batch_size, momentum, weight_decay, train_fraction, seed, device);
        if o.num_classes.is_some() {
            self.num_classes = o.num_classes;
        }
        if o.max_batches.is_some() {
            self.max_batches = o.max_batches;
        }
        if o.epoch_fraction.is_some() {
            self.epoch_fraction = o.epoch_fraction;
        }
        if o.no_augment {
            self.augment = false;
        }
        self.validate()
    }
}

/// `checkpoint_minutes`, where given, is a positive finite number (train configs and recipes).
pub(crate) fn check_checkpoint_minutes(minutes: Option<f64>) -> Result<()> {
    match minutes {
        Some(m) if !(m > 0.0 && m.is_finite()) => {
            Err(Error::config("checkpoint_minutes", format!("{m} must be a positive number of minutes")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_per_epoch_scales_with_the_split() {
        let c = TrainConfig { batch_size: 8, ..TrainConfig::default() };
        assert_eq!(c.batches_per_epoch(65), 9, "the last batch may be smaller");
        let f = TrainConfig { epoch_fraction: Some(0.25), ..c.clone() };
        assert_eq!(f.batches_per_epoch(64), 2);
        assert_eq!(f.batches_per_epoch(640), 20, "ten times the data, ten times the steps");
        assert_eq!(f.batches_per_epoch(3), 1, "at least one batch");
        assert_eq!(f.batches_per_epoch(0), 0);
        assert_eq!(TrainConfig { max_batches: Some(5), ..f.clone() }.batches_per_epoch(640), 5);
        assert_eq!(TrainConfig { epoch_fraction: Some(1.0), ..c }.batches_per_epoch(65), 9);
        let e = TrainConfig::from_toml("epoch_fraction = 0").unwrap_err().to_string();
        assert!(e.contains("epoch_fraction") && e.contains("(0, 1]"), "{e}");
    }

    #[test]
    fn recipe_round_trip_and_defaults() {
        let c = TrainConfig::from_toml("epochs = 5\nlr_schedule = \"0 0.1 3 0.01\"\nsubset = [\"cat\", \"dog\"]\n")
            .unwrap();
        assert_eq!(c.epochs, 5);
        assert_eq!(c.lr_schedule.lr_at(4), 0.01);
        assert_eq!(c.batch_size, 128);
        assert_eq!(TrainConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_resumed_run_takes_only_the_overrides_that_keep_it_the_same_run() {
        let mut c = TrainConfig::default();
        let o = Overrides { seed: Some(3), ..Overrides::default() };
        let e = c.clone().apply(o.clone(), true).unwrap_err().to_string();
        assert!(e.contains("--seed") && e.contains("resuming"), "{e}");
        c.apply(o, false).unwrap();
        assert_eq!(c.seed, 3);
        c.apply(Overrides { epochs: Some(50), threads: Some(1), ..Overrides::default() }, true).unwrap();
        assert_eq!((c.epochs, c.threads, c.seed), (50, 1, 3));
        assert!(c.apply(Overrides { epochs: Some(0), ..Overrides::default() }, true).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = TrainConfig::from_toml("epochs = 5\nlearning_rate = 0.1\n").unwrap_err().to_string();
        assert!(e.contains("learning_rate") && e.contains("line 2"), "{e}");
        let e = TrainConfig::from_toml("momentum = 1.5\n").unwrap_err().to_string();
        assert!(e.contains("momentum"), "{e}");
        let e = TrainConfig::from_toml("lr_schedule = \"5 0.1\"\n").unwrap_err().to_string();
        assert!(e.contains("epoch 0"), "{e}");
        let e = TrainConfig::from_toml("device = \"tpu\"\n").unwrap_err().to_string();
        assert!(e.contains("tpu"), "{e}");
        let e = TrainConfig::from_toml("precision = \"fp16\"\n").unwrap_err().to_string();
        assert!(e.contains("fp16") && e.contains("fp32, bf16, auto"), "{e}");
    }

    #[test]
    fn precision_reads_writes_and_defaults_to_fp32() {
        use crate::engine::Precision;
        assert_eq!(TrainConfig::default().precision, Precision::Fp32);
        assert_eq!(TrainConfig::from_toml("epochs = 2\n").unwrap().precision, Precision::Fp32, "old recipes");
        for p in [Precision::Fp32, Precision::Bf16, Precision::Auto] {
            let c = TrainConfig { precision: p, ..TrainConfig::default() };
            assert_eq!(TrainConfig::from_toml(&c.to_toml()).unwrap().precision, p);
        }
        // A resume may name a precision (checked against the checkpoint when the run restarts).
        let mut c = TrainConfig::default();
        c.apply(Overrides { precision: Some(Precision::Bf16), ..Overrides::default() }, true).unwrap();
        assert_eq!(c.precision, Precision::Bf16);
        assert_ne!(Precision::Auto.resolve(crate::engine::Device::Cpu), Precision::Auto);
        assert_eq!(Precision::Fp32.resolve(crate::engine::Device::Cpu), Precision::Fp32);
    }
}
