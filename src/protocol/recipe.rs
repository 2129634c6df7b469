//! An experiment recipe (TOML): networks, subsets, levels, seeds, pipelines, and the training
//! hyperparameters, with the protocol's per-network defaults. Unknown keys are an error.

use crate::criteria::Criterion;
use crate::engine::Device;
use crate::surgery::planner::Scope;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::Schedule;

/// The pipelines compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Fine-tune on the subset, rank, prune, retrain on the subset (on the device).
    Aware,
    /// As `aware`, on the subset's images without their labels: the classes inferred from the
    /// unpruned teacher's predictions, fine-tuning and retraining by distillation from it
    /// ([`crate::workflow::unlabeled`]).
    #[serde(rename = "aware-unlabeled")]
    AwareUnlabeled,
    /// Prune the original at epoch 0, retrain on all classes, test on the subset (baseline).
    Agnostic,
    /// The original model tested on the subset.
    Unpruned,
}

impl Pipeline {
    /// The pipeline named `name` (`aware`, `aware-unlabeled`, `agnostic` or `unpruned`, any case).
    pub fn parse(name: &str) -> Option<Pipeline> {
        match name.trim().to_ascii_lowercase().as_str() {
            "aware" => Some(Pipeline::Aware),
            "aware-unlabeled" | "aware_unlabeled" => Some(Pipeline::AwareUnlabeled),
            "agnostic" => Some(Pipeline::Agnostic),
            "unpruned" => Some(Pipeline::Unpruned),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pipeline::Aware => "aware",
            Pipeline::AwareUnlabeled => "aware-unlabeled",
            Pipeline::Agnostic => "agnostic",
            Pipeline::Unpruned => "unpruned",
        })
    }
}

/// A pretrained network of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Label used in folders and reports.
    pub name: String,
    /// The pretrained model folder (trained on all classes).
    pub model: PathBuf,
    /// Architecture whose protocol hyperparameters apply (alexnet, resnet20, resnet56,
    /// mobilenetv2, squeezenet); default: `name`.
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub aware_lr_schedule: Option<Schedule>,
    #[serde(default)]
    pub agnostic_lr_schedule: Option<Schedule>,
    #[serde(default)]
    pub weight_decay: Option<f64>,
}

/// A class subset: explicit class (or CIFAR-100 superclass) names, or a seeded random draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetSpec {
    pub name: String,
    #[serde(default)]
    pub classes: Vec<String>,
    /// Draw this many classes at random (with `seed`) instead of naming them.
    #[serde(default)]
    pub random: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

fn default_latency_batch() -> usize {
    1
}

/// What a recipe's pruning levels are percents of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LevelOf {
    #[default]
    Params,
    Gops,
    Latency,
}

impl LevelOf {
    /// How a level reads on an axis or in a table's header.
    pub fn describe(self) -> &'static str {
        match self {
            LevelOf::Params => "% of parameters removed",
            LevelOf::Gops => "% of GOps removed",
            LevelOf::Latency => "% of latency removed (on the device's table)",
        }
    }
}

impl std::str::FromStr for LevelOf {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "params" => Ok(LevelOf::Params),
            "gops" => Ok(LevelOf::Gops),
            "latency" => Ok(LevelOf::Latency),
            other => Err(Error::config("level_of", format!("`{other}` is none of params, gops, latency"))),
        }
    }
}

impl std::fmt::Display for LevelOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LevelOf::Params => "params",
            LevelOf::Gops => "gops",
            LevelOf::Latency => "latency",
        })
    }
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}
fn default_pipelines() -> Vec<Pipeline> {
    vec![Pipeline::Aware, Pipeline::Agnostic, Pipeline::Unpruned]
}
fn default_criterion() -> Criterion {
    Criterion::Paper
}
fn default_scope() -> Scope {
    Scope::Global
}
fn default_epochs() -> usize {
    30
}
fn default_batch() -> usize {
    128
}
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
fn default_device() -> Device {
    Device::Cpu
}
fn default_true() -> bool {
    true
}
fn default_momentum() -> f64 {
    0.9
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Names the sweep's folder.
    pub name: String,
    #[serde(default)]
    pub data: Option<PathBuf>,
    pub networks: Vec<NetworkSpec>,
    pub subsets: Vec<SubsetSpec>,
    /// Pruning levels: percent of what `level_of` names removed.
    pub levels: Vec<f64>,
    /// What a level is a percent of: `params` (the paper), `gops`, or `latency` (the unpruned
    /// model's latency in `runtime` at `latency_batch` as this device's latency table predicts
    /// it: the plan is made on that table, see `prune --latency`).
    #[serde(default, with = "crate::formats::via_str")]
    pub level_of: LevelOf,
    /// The batch size a `latency` level is of.
    #[serde(default = "default_latency_batch")]
    pub latency_batch: usize,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default = "default_pipelines")]
    pub pipelines: Vec<Pipeline>,
    #[serde(default = "default_criterion", with = "crate::formats::via_str")]
    pub criterion: Criterion,
    #[serde(default = "default_scope", with = "crate::formats::via_str")]
    pub scope: Scope,
    /// Total epoch budget (the protocol: 30). The protocol's schedules and n_f are scaled to it
    /// unless a network gives its own schedules.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// n_f, the data-aware fine-tuning epochs before pruning; default 5 scaled to `epochs`.
    #[serde(default)]
    pub fine_tune_epochs: Option<usize>,
    /// Cap on batches per epoch, the same for every pipeline (quick trials); unset: whole epochs.
    #[serde(default)]
    pub max_batches: Option<usize>,
    /// The fair scaled budget: each epoch of each pipeline draws this share of that pipeline's
    /// own training split, fresh each epoch (the agnostic pipeline, on all classes, takes as many
    /// more steps as it has more data, as in the protocol's whole epochs). Not with `max_batches`.
    #[serde(default)]
    pub epoch_fraction: Option<f64>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Per class, this share of the training images trains; the rest validates (protocol: 0.8).
    #[serde(default)]
    pub train_fraction: Option<f64>,
    /// Batches of local data the data-driven criteria look at.
    #[serde(default)]
    pub criterion_batches: Option<usize>,
    /// Measure device costs (train step, inference at batch 1 and 128, data time) in the cells
    /// that prune.
    #[serde(default = "default_true")]
    pub measure_costs: bool,
    /// The runtime inference latency is measured in: `libtorch` (the engine) or `ort` (ONNX
    /// Runtime, what most deployments run, on the model as exported).
    #[serde(default, with = "crate::formats::via_str")]
    pub runtime: crate::engine::Runtime,
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default = "default_device", with = "crate::formats::via_str")]
    pub device: Device,
    /// The precision of every training of the sweep: fp32 (default), bf16 mixed precision, or
    /// auto (bf16 where the CPU has bf16 instructions; each cell's run records what it resolved to).
    #[serde(default, with = "crate::formats::via_str")]
    pub precision: crate::engine::Precision,
    /// Each training also checkpoints every this many minutes (between batches if need be), on
    /// top of every epoch.
    #[serde(default)]
    pub checkpoint_minutes: Option<f64>,
    /// Refuse a cell whose estimated peak memory (bytes, or with a K/M/G suffix) exceeds this.
    #[serde(default)]
    pub max_memory: Option<String>,
    /// How the `aware-unlabeled` pipeline tells the classes and distils (the `[unlabeled]` table).
    #[serde(default)]
    pub unlabeled: UnlabeledSpec,
}

/// The `aware-unlabeled` pipeline's settings: the subset rule
/// ([`crate::workflow::subset::SubsetRule`]) and the distillation ([`crate::train::DistillConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnlabeledSpec {
    pub min_confidence: f64,
    pub min_share: f64,
    pub temperature: f64,
    pub alpha: f64,
    pub pseudo_min_confidence: f64,
}

impl Default for UnlabeledSpec {
    fn default() -> Self {
        let (rule, d) = (crate::workflow::subset::SubsetRule::default(), crate::train::DistillConfig::default());
        UnlabeledSpec {
            min_confidence: rule.min_confidence,
            min_share: rule.min_share,
            temperature: d.temperature,
            alpha: d.alpha,
            pseudo_min_confidence: d.pseudo_min_confidence,
        }
    }
}

impl UnlabeledSpec {
    pub fn rule(&self) -> crate::workflow::subset::SubsetRule {
        crate::workflow::subset::SubsetRule { min_confidence: self.min_confidence, min_share: self.min_share }
    }
}

/// The protocol's hyperparameters for an architecture (docs/protocol.md, "Training hyperparameters"):
/// weight decay, data-aware LR steps at epochs 0/5/15/25, data-agnostic at 0/10/20.
pub fn protocol_defaults(arch: &str) -> Result<(f64, [f64; 4], [f64; 3])> {
    Ok(match arch {
        "alexnet" => (5e-4, [1e-4, 1e-3, 1e-4, 1e-5], [1e-3, 1e-4, 1e-5]),
        "resnet20" | "resnet56" => (1e-4, [1e-3, 1e-2, 1e-3, 1e-4], [1e-2, 1e-3, 1e-4]),
        "mobilenetv2" => (5e-4, [1e-3, 1e-2, 1e-3, 1e-4], [1e-2, 1e-3, 1e-4]),
        "squeezenet" => (2e-4, [8e-4, 2e-2, 4e-3, 8e-4], [2e-2, 4e-3, 8e-4]),
        other => {
            return Err(Error::config(
                "arch",
                format!(
                    "no protocol hyperparameters for `{other}`; give arch = one of alexnet, resnet20, resnet56, mobilenetv2, squeezenet, or the schedules and weight_decay"
                ),
            ));
        }
    })
}

/// The protocol's data-aware hyperparameters for `arch` at a budget of `epochs` (weight decay,
/// schedule, n_f), as a recipe resolves them: for a single adaptation outside a sweep.
pub fn aware_defaults(arch: &str, epochs: usize) -> Result<Resolved> {
    let (wd, aware, agnostic) = protocol_defaults(arch)?;
    Ok(Resolved {
        weight_decay: wd,
        aware: steps(&[0, 5, 15, 25], &aware, epochs),
        agnostic: steps(&[0, 10, 20], &agnostic, epochs),
        fine_tune_epochs: scale(5, epochs).max(1).min(epochs.saturating_sub(1)).max(1),
    })
}

/// An epoch of the 30-epoch protocol scaled to a budget of `epochs`.
fn scale(e: usize, epochs: usize) -> usize {
    // In f64: `e * epochs` overflows for a recipe's huge `epochs` (exact alike below 2^53).
    (e as f64 * epochs as f64 / 30.0).round() as usize
}

/// Hyperparameters of one network, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    pub weight_decay: f64,
    pub aware: Schedule,
    pub agnostic: Schedule,
    pub fine_tune_epochs: usize,
}

fn steps(epochs: &[usize], lrs: &[f64], budget: usize) -> Schedule {
    let mut out: Vec<(usize, f64)> = Vec::new();
    for (&e, &lr) in epochs.iter().zip(lrs) {
        let e = scale(e, budget);
        match out.last_mut() {
            Some(last) if last.0 == e => last.1 = lr,
            _ => out.push((e, lr)),
        }
    }
    Schedule { steps: out }
}

/// The most cells one sweep may hold (a grid larger than this is refused when the recipe is read).
pub const MAX_CELLS: usize = 20_000;

impl Recipe {
    /// Checks what the recipe names outside itself, before any folder is made: every network's
    /// model loads, and every subset resolves against the dataset (named classes exist, a random
    /// draw asks for no more classes than there are, and each class fits the model's outputs).
    pub fn check_inputs(&self) -> Result<()> {
        for n in &self.networks {
            let m = crate::formats::load_model(&n.model)
                .map_err(|e| Error::config(format!("network `{}`", n.name), format!("model: {e}")))?;
            m.check_finite().map_err(|e| Error::config(format!("network `{}`", n.name), e.to_string()))?;
        }
        // The training split's class names are all a subset needs (no test split, no statistics).
        let source = crate::data::Source::detect(&crate::data::locate(self.data.as_deref())?)?;
        let train = source.load(crate::data::Split::Train)?;
        let all = &train.classes;
        for s in &self.subsets {
            let key = format!("subset `{}`", s.name);
            if let Some(k) = s.random {
                if k > all.len() {
                    return Err(Error::config(key, format!("random = {k}, but the dataset has {} classes", all.len())));
                }
            } else {
                crate::data::resolve_subset(&train, &s.classes).map_err(|e| Error::config(key, e.to_string()))?;
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::formats::read_text(path)?;
        let r: Recipe = toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        r.validate().map_err(|e| e.in_file(path))?;
        Ok(r)
    }

    pub fn validate(&self) -> Result<()> {
        // Names become folder names: each must be one plain path component.
        crate::formats::outdir::check_name("name", &self.name)?;
        for n in &self.networks {
            crate::formats::outdir::check_name("networks.name", &n.name)?;
        }
        for s in &self.subsets {
            crate::formats::outdir::check_name("subsets.name", &s.name)?;
        }
        let cells =
            [self.networks.len(), self.subsets.len(), self.levels.len().max(1), self.seeds.len(), self.pipelines.len()];
        let total = cells.iter().fold(1usize, |a, &b| a.saturating_mul(b));
        if total > MAX_CELLS {
            return Err(Error::config(
                "recipe",
                format!(
                    "the grid is {} networks x {} subsets x {} levels x {} seeds x {} pipelines = {total} cells, \
                     more than the {MAX_CELLS} one sweep may hold; split it into several recipes",
                    cells[0], cells[1], cells[2], cells[3], cells[4]
                ),
            ));
        }
        if self.epochs > crate::train::MAX_EPOCHS {
            return Err(Error::config("epochs", format!("{} is more than {}", self.epochs, crate::train::MAX_EPOCHS)));
        }
        if (self.pipelines.contains(&Pipeline::Aware) || self.pipelines.contains(&Pipeline::AwareUnlabeled))
            && self.epochs < 2
        {
            return Err(Error::config(
                "epochs",
                format!(
                    "{}: the aware pipelines need at least 2 (n_f fine-tuning epochs, then retraining)",
                    self.epochs
                ),
            ));
        }
        if let Some(m) = &self.max_memory {
            crate::analysis::memory::parse_bytes(m)?;
        }
        let u = &self.unlabeled;
        for (k, v) in [
            ("unlabeled.min_confidence", u.min_confidence),
            ("unlabeled.min_share", u.min_share),
            ("unlabeled.alpha", u.alpha),
            ("unlabeled.pseudo_min_confidence", u.pseudo_min_confidence),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(k, format!("{v} is not in [0, 1]")));
            }
        }
        if !(u.temperature > 0.0 && u.temperature.is_finite()) {
            return Err(Error::config("unlabeled.temperature", format!("{} must be a positive number", u.temperature)));
        }
        crate::train::check_checkpoint_minutes(self.checkpoint_minutes)?;
        if self.networks.is_empty() || self.subsets.is_empty() {
            return Err(Error::config("recipe", "needs at least one network and one subset"));
        }
        for &l in &self.levels {
            if !(l > 0.0 && l < 100.0) {
                return Err(Error::config("levels", format!("{l} is not a percentage in (0, 100)")));
            }
        }
        if self.levels.is_empty() && self.pipelines.iter().any(|p| *p != Pipeline::Unpruned) {
            return Err(Error::config("levels", "the aware and agnostic pipelines need at least one level"));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.threads == 0 || self.latency_batch == 0 {
            return Err(Error::config("recipe", "epochs, batch_size, latency_batch and threads must be at least 1"));
        }
        if self.level_of == LevelOf::Latency && self.scope != Scope::Global {
            return Err(Error::config(
                "scope",
                "latency levels rank all channels together by importance per ms saved: use scope = \"global\"",
            ));
        }
        if self.max_batches == Some(0) {
            return Err(Error::config("max_batches", "must be at least 1"));
        }
        if let Some(f) = self.epoch_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::config("epoch_fraction", format!("{f} is not in (0, 1]")));
            }
            if self.max_batches.is_some() {
                return Err(Error::config(
                    "epoch_fraction",
                    "give either epoch_fraction (a share of each pipeline's own data) or max_batches (one cap for all), not both",
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.subsets {
            if !names.insert(&s.name) {
                return Err(Error::config("subsets", format!("subset name `{}` is used twice", s.name)));
            }
            if s.classes.is_empty() == s.random.is_none() {
                return Err(Error::config(
                    format!("subset `{}`", s.name),
                    "give either classes or random (a class count)",
                ));
            }
            if s.random == Some(0) {
                return Err(Error::config(format!("subset `{}`", s.name), "random must be at least 1"));
            }
        }
        for n in &self.networks {
            self.resolve(n)?;
        }
        if let Some(nf) = self.fine_tune_epochs
            && nf >= self.epochs
        {
            return Err(Error::config(
                "fine_tune_epochs",
                format!("{nf} leaves no retraining epoch of {}", self.epochs),
            ));
        }
        Ok(())
    }

    /// The training budget in words, as the report states it.
    pub fn budget(&self) -> String {
        match (self.epoch_fraction, self.max_batches) {
            (Some(f), _) => format!(
                "{} epochs, each of {:.1}% of the pipeline's own training split (epoch_fraction = {f})",
                self.epochs,
                100.0 * f
            ),
            (None, Some(m)) => format!(
                "{} epochs, each capped at {m} batches of {} for every pipeline (max_batches = {m})",
                self.epochs, self.batch_size
            ),
            (None, None) => format!("{} whole epochs of each pipeline's own training split", self.epochs),
        }
    }

    /// A network's hyperparameters: its own overrides, else the protocol's scaled to `epochs`.
    pub fn resolve(&self, n: &NetworkSpec) -> Result<Resolved> {
        let arch = n.arch.as_deref().unwrap_or(&n.name);
        let defaults = protocol_defaults(arch);
        let need = n.aware_lr_schedule.is_none() || n.agnostic_lr_schedule.is_none() || n.weight_decay.is_none();
        let (wd, aware, agnostic) = match (defaults, need) {
            (Ok(d), _) => d,
            (Err(e), true) => return Err(e),
            (Err(_), false) => (0.0, [0.0; 4], [0.0; 3]),
        };
        let budget = self.epochs;
        let nf = self.fine_tune_epochs.unwrap_or_else(|| scale(5, budget).max(1)).min(budget.saturating_sub(1)).max(1);
        Ok(Resolved {
            weight_decay: n.weight_decay.unwrap_or(wd),
            aware: n.aware_lr_schedule.clone().unwrap_or_else(|| steps(&[0, 5, 15, 25], &aware, budget)),
            agnostic: n.agnostic_lr_schedule.clone().unwrap_or_else(|| steps(&[0, 10, 20], &agnostic, budget)),
            fine_tune_epochs: nf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(extra: &str) -> Result<Recipe> {
        let text = format!(
            "name = \"t\"\nlevels = [10, 50]\n{extra}\n[[networks]]\nname = \"resnet20\"\nmodel = \"m\"\n[[subsets]]\nname = \"pets\"\nclasses = [\"cat\", \"dog\"]\n"
        );
        let r: Recipe = toml::from_str(&text).map_err(|e| Error::config("recipe", e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    #[test]
    fn protocol_schedules_scale_to_the_budget() {
        let r = recipe("").unwrap();
        let h = r.resolve(&r.networks[0]).unwrap();
        assert_eq!(h.aware.to_string(), "0 0.001 5 0.01 15 0.001 25 0.0001");
        assert_eq!(h.agnostic.to_string(), "0 0.01 10 0.001 20 0.0001");
        assert_eq!((h.fine_tune_epochs, h.weight_decay), (5, 1e-4));
        let r = recipe("epochs = 6").unwrap();
        let h = r.resolve(&r.networks[0]).unwrap();
        assert_eq!(h.aware.to_string(), "0 0.001 1 0.01 3 0.001 5 0.0001");
        assert_eq!(h.agnostic.to_string(), "0 0.01 2 0.001 4 0.0001");
        assert_eq!(h.fine_tune_epochs, 1);
    }

    #[test]
    fn bad_recipes_are_refused() {
        for (extra, needle) in [
            ("levels2 = 3", "levels2"),
            ("fine_tune_epochs = 30", "fine_tune_epochs"),
            ("criterion = \"magic\"", "magic"),
            ("epochs = 0", "epochs"),
            ("runtime = \"tvm\"", "libtorch, ort"),
            ("level_of = \"flops\"", "none of params, gops, latency"),
            ("level_of = \"latency\"\nscope = \"layer\"", "use scope = \"global\""),
            ("level_of = \"latency\"\nlatency_batch = 0", "latency_batch"),
        ] {
            let e = recipe(extra).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
        assert_eq!(recipe("runtime = \"ort\"").unwrap().runtime, crate::engine::Runtime::OnnxRuntime);
        assert_eq!(recipe("").unwrap().runtime, crate::engine::Runtime::Libtorch);
        assert_eq!(recipe("").unwrap().level_of, LevelOf::Params);
        let r = recipe("level_of = \"latency\"\nlatency_batch = 8").unwrap();
        assert_eq!((r.level_of, r.latency_batch), (LevelOf::Latency, 8));
        assert_eq!(recipe("level_of = \"gops\"").unwrap().level_of, LevelOf::Gops);
        let text = "name = \"t\"\nlevels = [120]\n[[networks]]\nname = \"resnet20\"\nmodel = \"m\"\n[[subsets]]\nname = \"s\"\nclasses = [\"cat\"]\n";
        let r: Recipe = toml::from_str(text).unwrap();
        assert!(r.validate().unwrap_err().to_string().contains("120"));
    }
}
