//! The cells of a sweep and how each runs. A cell is one unit of work with its own folder; it is
//! finished when its `metrics.json` exists (written last, atomically), so an interrupted sweep
//! reruns only unfinished cells, and a half-done training inside a cell resumes from its last
//! epoch.
//!
//! Work shared between cells is its own cell: the data-aware fine-tuning (n_f epochs on the
//! subset) is done once per (network, subset, seed) and reused by every level; the data-agnostic
//! retraining on all classes is done once per (network, level, seed) and tested on every subset.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::recipe::{LevelOf, NetworkSpec, Pipeline, Recipe, Resolved, SubsetSpec};
use super::report::Cell;
use crate::analysis;
use crate::data::{self, Loader};
use crate::engine::Device;
use crate::error::{Error, Result};
use crate::formats::{self, native};
use crate::ir::Model;
use crate::metrics::{self, bench};
use crate::surgery::planner;
use crate::train::{self, RunData, TrainConfig};
use crate::workflow::{self, PruneRequest};

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CellId {
    Unpruned {
        net: String,
        subset: String,
    },
    FineTune {
        net: String,
        subset: String,
        seed: u64,
    },
    Aware {
        net: String,
        subset: String,
        level: u32,
        seed: u64,
    },
    /// The label-free fine-tune: distillation from the unpruned teacher on the subset's images,
    /// their labels unread (shared by levels).
    FineTuneUnlabeled {
        net: String,
        subset: String,
        seed: u64,
    },
    AwareUnlabeled {
        net: String,
        subset: String,
        level: u32,
        seed: u64,
    },
    AgnosticTrain {
        net: String,
        level: u32,
        seed: u64,
    },
    Agnostic {
        net: String,
        subset: String,
        level: u32,
        seed: u64,
    },
}

impl CellId {
    /// The network and the level in percent of a pruned cell; None for unpruned and fine-tune cells.
    pub fn pruned_level(&self) -> Option<(&str, f64)> {
        match self {
            CellId::Aware { net, level, .. }
            | CellId::AwareUnlabeled { net, level, .. }
            | CellId::AgnosticTrain { net, level, .. }
            | CellId::Agnostic { net, level, .. } => Some((net.as_str(), *level as f64 / 100.0)),
            CellId::Unpruned { .. } | CellId::FineTune { .. } | CellId::FineTuneUnlabeled { .. } => None,
        }
    }
}

/// Levels are kept in hundredths of a percent, so that folder names are exact.
fn level_key(l: f64) -> u32 {
    (l * 100.0).round() as u32
}

fn level_str(k: u32) -> String {
    if k.is_multiple_of(100) { format!("{}", k / 100) } else { format!("{:.2}", k as f64 / 100.0) }
}

impl std::fmt::Display for CellId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellId::Unpruned { net, subset } => write!(f, "{net}/{subset}/unpruned"),
            CellId::FineTune { net, subset, seed } => write!(f, "{net}/{subset}/finetune-s{seed}"),
            CellId::Aware { net, subset, level, seed } => {
                write!(f, "{net}/{subset}/aware-p{}-s{seed}", level_str(*level))
            }
            CellId::FineTuneUnlabeled { net, subset, seed } => write!(f, "{net}/{subset}/finetune-unlabeled-s{seed}"),
            CellId::AwareUnlabeled { net, subset, level, seed } => {
                write!(f, "{net}/{subset}/aware-unlabeled-p{}-s{seed}", level_str(*level))
            }
            CellId::AgnosticTrain { net, level, seed } => {
                write!(f, "{net}/_all/agnostic-p{}-s{seed}", level_str(*level))
            }
            CellId::Agnostic { net, subset, level, seed } => {
                write!(f, "{net}/{subset}/agnostic-p{}-s{seed}", level_str(*level))
            }
        }
    }
}

impl std::str::FromStr for CellId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::config("cell", format!("`{s}` is not a cell id (network/subset/kind)"));
        let parts: Vec<&str> = s.split('/').collect();
        let [net, subset, kind] = parts.as_slice() else { return Err(bad()) };
        let (net, subset) = (net.to_string(), subset.to_string());
        let seed_of = |t: &str| t.strip_prefix('s').and_then(|x| x.parse::<u64>().ok()).ok_or_else(bad);
        let level_of = |t: &str| t.strip_prefix('p').and_then(|x| x.parse::<f64>().ok()).map(level_key).ok_or_else(bad);
        let toks: Vec<&str> = kind.split('-').collect();
        Ok(match toks.as_slice() {
            ["unpruned"] => CellId::Unpruned { net, subset },
            ["finetune", s] => CellId::FineTune { net, subset, seed: seed_of(s)? },
            ["aware", p, s] => CellId::Aware { net, subset, level: level_of(p)?, seed: seed_of(s)? },
            ["finetune", "unlabeled", s] => CellId::FineTuneUnlabeled { net, subset, seed: seed_of(s)? },
            ["aware", "unlabeled", p, s] => {
                CellId::AwareUnlabeled { net, subset, level: level_of(p)?, seed: seed_of(s)? }
            }
            ["agnostic", p, s] if subset == "_all" => {
                CellId::AgnosticTrain { net, level: level_of(p)?, seed: seed_of(s)? }
            }
            ["agnostic", p, s] => CellId::Agnostic { net, subset, level: level_of(p)?, seed: seed_of(s)? },
            _ => return Err(bad()),
        })
    }
}

/// Every cell of a recipe, in an order where each cell's inputs come before it.
pub fn cells(r: &Recipe) -> Vec<CellId> {
    let mut out = Vec::new();
    let has = |p: Pipeline| r.pipelines.contains(&p);
    for n in &r.networks {
        let net = n.name.clone();
        // The unpruned reference is also what the aware and agnostic cells are compared to.
        for s in &r.subsets {
            out.push(CellId::Unpruned { net: net.clone(), subset: s.name.clone() });
        }
        for &seed in &r.seeds {
            if has(Pipeline::Aware) {
                for s in &r.subsets {
                    out.push(CellId::FineTune { net: net.clone(), subset: s.name.clone(), seed });
                    for &l in &r.levels {
                        out.push(CellId::Aware { net: net.clone(), subset: s.name.clone(), level: level_key(l), seed });
                    }
                }
            }
            if has(Pipeline::AwareUnlabeled) {
                for s in &r.subsets {
                    out.push(CellId::FineTuneUnlabeled { net: net.clone(), subset: s.name.clone(), seed });
                    for &l in &r.levels {
                        let level = level_key(l);
                        out.push(CellId::AwareUnlabeled { net: net.clone(), subset: s.name.clone(), level, seed });
                    }
                }
            }
            if has(Pipeline::Agnostic) {
                for &l in &r.levels {
                    out.push(CellId::AgnosticTrain { net: net.clone(), level: level_key(l), seed });
                    for s in &r.subsets {
                        out.push(CellId::Agnostic {
                            net: net.clone(),
                            subset: s.name.clone(),
                            level: level_key(l),
                            seed,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The shared cell a cell reads from, if any.
pub fn input_of(id: &CellId) -> Option<CellId> {
    match id {
        CellId::Aware { net, subset, seed, .. } => {
            Some(CellId::FineTune { net: net.clone(), subset: subset.clone(), seed: *seed })
        }
        CellId::AwareUnlabeled { net, subset, seed, .. } => {
            Some(CellId::FineTuneUnlabeled { net: net.clone(), subset: subset.clone(), seed: *seed })
        }
        CellId::Agnostic { net, level, seed, .. } => {
            Some(CellId::AgnosticTrain { net: net.clone(), level: *level, seed: *seed })
        }
        _ => None,
    }
}

pub fn cell_dir(root: &Path, id: &CellId) -> PathBuf {
    root.join(id.to_string())
}

pub fn is_done(root: &Path, id: &CellId) -> bool {
    CellDir::of(root, id).metrics().exists()
}

/// The files of one cell's folder: its result (`metrics.json`), its training run (`run/`, a
/// [`train::RunDir`]), and for a cell that prunes, the plan it applied and the pruned model.
#[derive(Debug, Clone)]
pub struct CellDir(PathBuf);

impl CellDir {
    pub fn of(root: &Path, id: &CellId) -> Self {
        CellDir(cell_dir(root, id))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.json")
    }
    pub fn run(&self) -> train::RunDir {
        train::RunDir::new(self.0.join("run"))
    }
    pub fn plan(&self) -> PathBuf {
        self.0.join("plan.json")
    }
    pub fn pruned(&self) -> PathBuf {
        self.0.join("pruned")
    }
    /// What the teacher found on a label-free cell's local images ([`workflow::unlabeled::Found`]).
    pub fn inferred(&self) -> PathBuf {
        self.0.join("inferred.json")
    }
    /// The cell's result, as [`run_cell`] wrote it.
    pub fn read_metrics(&self) -> Result<CellMetrics> {
        native::read_json(&self.metrics())
    }
}

/// What a cell writes when it finishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellMetrics {
    pub cell: String,
    /// The result row (for unpruned, aware and agnostic cells; none for shared work).
    pub row: Option<Cell>,
    /// Sizes and device costs of the pruning step (the cost columns of a result row; for a
    /// shared cell, what the rows built on it carry).
    pub costs: Cell,
    pub seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    pub energy_joules: Option<f64>,
}

struct Ctx<'a> {
    recipe: &'a Recipe,
    net: &'a NetworkSpec,
    hyper: Resolved,
    device: Device,
}

fn find<'a, T>(items: &'a [T], name: &str, what: &str, get: impl Fn(&T) -> &str) -> Result<&'a T> {
    items
        .iter()
        .find(|x| get(x) == name)
        .ok_or_else(|| Error::config(what, format!("the recipe has no {what} `{name}`")))
}

impl<'a> Ctx<'a> {
    /// The context of network `net` of the recipe, with the engine set to the recipe's threads.
    fn of(recipe: &'a Recipe, net: &str) -> Result<Self> {
        let spec = find(&recipe.networks, net, "network", |n| &n.name)?;
        crate::engine::set_threads(recipe.threads);
        Ok(Ctx { recipe, net: spec, hyper: recipe.resolve(spec)?, device: recipe.device })
    }

    /// Seconds the data-aware retraining of `pruned` on `data` with `seed` is predicted to take
    /// on this device's training-cost table (None where the cache has none).
    fn predicted_retraining(&self, pruned: &Model, data: &RunData, seed: u64) -> Result<Option<f64>> {
        let (epochs, nf) = (self.recipe.epochs, self.hyper.fine_tune_epochs);
        let cfg = self.config(&self.hyper.aware, epochs, nf, seed)?;
        Ok(train::predict_run(&cfg, pruned, data, epochs - nf)?.map(|c| c.fine_tune.seconds))
    }

    fn subset_classes(&self, s: &SubsetSpec, all: &[String]) -> Vec<String> {
        match s.random {
            Some(k) => data::random_classes(all.len(), k, s.seed).into_iter().map(|c| all[c].clone()).collect(),
            None => s.classes.clone(),
        }
    }

    /// The class names of subset `subset` (a random subset drawn against the dataset's classes);
    /// none (all classes) for None.
    fn subset_names(&self, subset: Option<&str>) -> Result<Vec<String>> {
        let Some(name) = subset else { return Ok(vec![]) };
        let s = find(&self.recipe.subsets, name, "subset", |s| &s.name)?;
        if s.random.is_some() {
            let all = RunData::load(self.recipe.data.as_deref(), &[], 1.0, &self.input()?)?;
            Ok(self.subset_classes(s, &all.class_names))
        } else {
            Ok(s.classes.clone())
        }
    }

    fn data(&self, subset: Option<&str>) -> Result<RunData> {
        let fraction = self.recipe.train_fraction.unwrap_or(data::PROTOCOL_TRAIN_FRACTION);
        RunData::load(self.recipe.data.as_deref(), &self.subset_names(subset)?, fraction, &self.input()?)
    }

    /// The subset's images for the label-free pipeline: loaded whole, then the classes inferred,
    /// pseudo-labelled and split by the unpruned teacher (see [`workflow::unlabeled`]); the true
    /// classes are only compared with the inferred ones.
    fn unlabeled_data(&self, subset: &str) -> Result<workflow::unlabeled::Unlabeled> {
        let whole = RunData::load(self.recipe.data.as_deref(), &self.subset_names(Some(subset))?, 1.0, &self.input()?)?;
        let truth = whole.classes.clone();
        let fraction = self.recipe.train_fraction.unwrap_or(data::PROTOCOL_TRAIN_FRACTION);
        workflow::unlabeled::prepare(
            &self.pretrained()?,
            whole,
            &self.recipe.unlabeled.rule(),
            fraction,
            self.device,
            Some(&truth),
        )
    }

    /// `cfg` distilling from the unpruned network over the classes `found`.
    fn distilling(&self, cfg: TrainConfig, found: &workflow::unlabeled::Found) -> TrainConfig {
        let u = &self.recipe.unlabeled;
        TrainConfig {
            distill: Some(train::DistillConfig {
                temperature: u.temperature,
                alpha: u.alpha,
                pseudo_min_confidence: u.pseudo_min_confidence,
                ..workflow::unlabeled::distill_config(&self.net.model, found)
            }),
            ..cfg
        }
    }

    fn config(
        &self,
        schedule: &crate::train::Schedule,
        epochs: usize,
        best_from: usize,
        seed: u64,
    ) -> Result<TrainConfig> {
        Ok(TrainConfig {
            epochs,
            batch_size: self.recipe.batch_size,
            lr_schedule: schedule.clone(),
            momentum: self.recipe.momentum,
            weight_decay: self.hyper.weight_decay,
            train_fraction: self.recipe.train_fraction.unwrap_or(data::PROTOCOL_TRAIN_FRACTION),
            best_from_epoch: best_from,
            max_batches: self.recipe.max_batches,
            epoch_fraction: self.recipe.epoch_fraction,
            seed,
            threads: self.recipe.threads,
            device: self.recipe.device,
            precision: self.recipe.precision,
            checkpoint_minutes: self.recipe.checkpoint_minutes,
            max_memory: self.recipe.max_memory.as_deref().map(crate::analysis::memory::parse_bytes).transpose()?,
            ..TrainConfig::default()
        })
    }

    /// The input shape of the network, which the data is fitted to.
    fn input(&self) -> Result<Vec<usize>> {
        train::input_of(&self.net.model.to_string_lossy())
    }

    fn pretrained(&self) -> Result<Model> {
        formats::load_model(&self.net.model)
    }

    /// Scores, plans and prunes `model` at `level`, with local `data` for data-driven criteria;
    /// the plan and the pruned model are saved in the cell folder `dir` where one is given.
    fn prune(
        &self,
        model: &mut Model,
        data: &RunData,
        level: u32,
        seed: u64,
        dir: Option<&Path>,
    ) -> Result<(Model, f64)> {
        let level = level as f64 / 100.0;
        let target = match self.recipe.level_of {
            LevelOf::Params => planner::Target::Params(level),
            LevelOf::Gops => planner::Target::Gops(level),
            LevelOf::Latency => {
                // The device's table for this network (measured once, then read from the cache).
                let (table, source) = crate::metrics::latency::load_or_build(
                    model,
                    self.recipe.runtime,
                    self.recipe.latency_batch,
                    self.device,
                    None,
                )?;
                eprintln!("{source}");
                // Of the unpruned network's predicted latency, as `prune --latency 0.8x`.
                let ms = (1.0 - level / 100.0) * table.predict(&model.graph)?;
                planner::Target::Latency(planner::LatencyBudget { ms, table: Arc::new(table) })
            }
        };
        let request = PruneRequest {
            criterion: self.recipe.criterion,
            scope: self.recipe.scope,
            target,
            limits: planner::Limits::default(),
            batch_size: self.recipe.batch_size,
            max_batches: self.recipe.criterion_batches.unwrap_or(20),
            seed,
            device: self.device,
        };
        let pruned = request.run(model, Some(data))?;
        if !pruned.at_minimum.is_empty() {
            eprintln!("note: the plan leaves groups at their minimum: {}", pruned.at_minimum.join(", "));
        }
        if let Some(dir) = dir {
            let cell = CellDir(dir.to_path_buf());
            native::write_atomic(&cell.plan(), pruned.plan.to_json().as_bytes())?;
            native::save(&pruned.model, &cell.pruned())?;
        }
        let secs = pruned.seconds();
        Ok((pruned.model, secs))
    }

    /// Measured costs of running `before` and `after` (train step, inference, data loading);
    /// sizes only, unless the recipe measures costs.
    fn costs(&self, before: &Model, after: &Model, data: &RunData, prune_seconds: f64) -> Result<Cell> {
        let ms = |s: f64| 1e3 * s;
        let b = self.recipe.batch_size;
        let step = |m: &Model| -> Result<f64> {
            Ok(ms(bench::train_step(m, b, 5, 2, self.device, self.recipe.precision)?.step_seconds.median))
        };
        let infer = |m: &Model, n: usize| -> Result<f64> {
            let steps = if n == 1 { 30 } else { 5 };
            let r = bench::infer(m, n, steps, 2, self.device, self.recipe.runtime)?;
            Ok(ms(r.step_seconds.median) / n as f64)
        };
        let (cb, ca) = (analysis::cost(&before.graph)?, analysis::cost(&after.graph)?);
        let sizes = Cell { prune_seconds: Some(prune_seconds), ..sizes(&cb, &ca) };
        if !self.recipe.measure_costs {
            return Ok(sizes);
        }
        // Data time: preparing augmented, normalised batches, with nothing else running.
        let norm = data.stats.clone();
        let t = Instant::now();
        let n = Loader::new(
            Arc::new(data.train.clone()),
            data::LoaderConfig {
                batch_size: b,
                shuffle: true,
                augment: Some(data::Augment::default()),
                norm,
                seed: 0,
                epoch: 0,
                size: Some(before.graph.image_size()?),
            },
        )
        .take(10)
        .count();
        let data_ms = ms(t.elapsed().as_secs_f64()) / n.max(1) as f64;
        Ok(Cell {
            train_step_ms_before: Some(step(before)?),
            train_step_ms_after: Some(step(after)?),
            data_ms_per_batch: Some(data_ms),
            infer_ms_per_image_b1_before: Some(infer(before, 1)?),
            infer_ms_per_image_b1_after: Some(infer(after, 1)?),
            infer_ms_per_image_b128_before: Some(infer(before, 128)?),
            infer_ms_per_image_b128_after: Some(infer(after, 128)?),
            ..sizes
        })
    }

    /// A result row: the cell's identity and accuracy, with the cost columns of `costs`.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        subset: &str,
        pipeline: Pipeline,
        level: u32,
        seed: u64,
        test: f64,
        val: Option<f64>,
        costs: &Cell,
    ) -> Cell {
        Cell {
            network: self.net.name.clone(),
            subset: subset.to_string(),
            pipeline: pipeline.to_string(),
            level: level as f64 / 100.0,
            level_of: self.recipe.level_of.to_string(),
            seed,
            criterion: self.recipe.criterion.to_string(),
            budget: self.recipe.budget(),
            test_top1: Some(test),
            val_top1: val,
            ..costs.clone()
        }
    }
}

/// The size columns of a row: parameters and GOps before and after.
fn sizes(before: &analysis::Cost, after: &analysis::Cost) -> Cell {
    Cell {
        params_before: Some(before.params as f64),
        params_after: Some(after.params as f64),
        params_removed_percent: Some(100.0 * (1.0 - after.params as f64 / before.params as f64)),
        gops_before: Some(before.gops),
        gops_after: Some(after.gops),
        ..Cell::default()
    }
}

fn read_metrics(root: &Path, id: &CellId) -> Result<CellMetrics> {
    CellDir::of(root, id).read_metrics()
}

/// Trains in `dir/run` from epoch `start`, resuming a half-done run there; the plan the cell
/// applied (its plan.json) goes with the run's checkpoints.
fn fit_in(model: Model, data: &RunData, cfg: &TrainConfig, dir: &Path, start: usize) -> Result<train::Summary> {
    let plan = train::checkpoint::read_plan(dir)?;
    workflow::train_from(train::Start { model, plan, epoch: start }, data, cfg, CellDir(dir.to_path_buf()).run().path())
}

/// For a recipe whose levels are of latency: the largest level a cell of `network` can plan,
/// `100 (1 - floor / unpruned)`, both predicted on the device's table (measured now if it is not in the cache),
/// where the floor is the smallest network the limits allow. None for other kinds of level.
pub fn max_latency_level(recipe: &Recipe, network: &str) -> Result<Option<f64>> {
    if recipe.level_of != LevelOf::Latency {
        return Ok(None);
    }
    let net = find(&recipe.networks, network, "network", |n| &n.name)?;
    crate::engine::set_threads(recipe.threads);
    let model = formats::load_model(&net.model)?;
    let (table, source) =
        crate::metrics::latency::load_or_build(&model, recipe.runtime, recipe.latency_batch, recipe.device, None)?;
    eprintln!("{source}");
    let groups = analysis::groups(&model.graph)?;
    let (full, floor) = planner::latency_floor(&model.graph, &groups, &table, &planner::Limits::default())?;
    Ok(Some((100.0 * (1.0 - floor / full)).max(0.0)))
}

/// For a finished data-aware cell: its retraining's predicted seconds on this device's
/// training-cost table (the cache's, for the recipe's network at its batch and threads; None
/// where there is none) and its measured training seconds (the run's summary).
pub fn retraining_cost(recipe: &Recipe, root: &Path, id: &CellId) -> Result<(Option<f64>, Option<f64>)> {
    if let CellId::AwareUnlabeled { .. } = id {
        // Measured only: the table does not price the teacher's pass of each step.
        let cell = CellDir::of(root, id);
        return Ok((None, native::read_json::<train::Summary>(&cell.run().summary()).ok().map(|s| s.seconds)));
    }
    let CellId::Aware { net, subset, seed, .. } = id else {
        return Err(Error::config("cell", format!("{id} is not a data-aware cell")));
    };
    let cx = Ctx::of(recipe, net)?;
    let cell = CellDir::of(root, id);
    let measured = native::read_json::<train::Summary>(&cell.run().summary()).ok().map(|s| s.seconds);
    let pruned = formats::load_model(&cell.pruned())?;
    let predicted = cx.predicted_retraining(&pruned, &cx.data(Some(subset))?, *seed)?;
    Ok((predicted, measured))
}

/// For a data-aware cell not run yet whose fine-tune is done: its retraining's seconds as
/// predicted on this device's training-cost table (None where the cache has none), on the very
/// network the cell will retrain: pruned here as the cell prunes it (the same criterion, data,
/// level and seed), and not kept.
pub fn predicted_retraining(recipe: &Recipe, root: &Path, id: &CellId) -> Result<Option<f64>> {
    let CellId::Aware { net, subset, level, seed } = id else {
        return Err(Error::config("cell", format!("{id} is not a data-aware cell")));
    };
    let cx = Ctx::of(recipe, net)?;
    let ft = CellId::FineTune { net: net.clone(), subset: subset.clone(), seed: *seed };
    let mut tuned = train::last_model(CellDir::of(root, &ft).run().path())?;
    let data = cx.data(Some(subset))?;
    let (pruned, _) = cx.prune(&mut tuned, &data, *level, *seed, None)?;
    cx.predicted_retraining(&pruned, &data, *seed)
}

/// Runs one cell as [`run_cell`] does, unless another process (another shard of the sweep) is
/// running it: then waits on the cell's lock for that process to end, and takes its result when
/// it finished the cell (or runs the cell itself when it did not). So a shared cell that several
/// shards need runs once.
pub fn run_cell_waiting(recipe: &Recipe, root: &Path, id: &CellId) -> Result<CellMetrics> {
    let dir = cell_dir(root, id);
    let _lock = crate::formats::outdir::DirLock::acquire_waiting(&dir, &mut |who| {
        eprintln!("cell {id}: run by edgeprune {who}, waiting for it");
    })?;
    if is_done(root, id) {
        eprintln!("cell {id}: finished by another process");
        return CellDir::of(root, id).read_metrics();
    }
    run_cell(recipe, root, id)
}

/// Runs one cell of the recipe (its inputs must be done) and writes its metrics.json.
pub fn run_cell(recipe: &Recipe, root: &Path, id: &CellId) -> Result<CellMetrics> {
    eprintln!("running cell {id}");
    let t0 = Instant::now();
    let energy = metrics::energy::Meter::start();
    let net_name = match id {
        CellId::Unpruned { net, .. }
        | CellId::FineTune { net, .. }
        | CellId::Aware { net, .. }
        | CellId::FineTuneUnlabeled { net, .. }
        | CellId::AwareUnlabeled { net, .. }
        | CellId::AgnosticTrain { net, .. }
        | CellId::Agnostic { net, .. } => net,
    };
    let cx = Ctx::of(recipe, net_name)?;
    let device: Device = recipe.device;
    let dir = cell_dir(root, id);
    // One process per cell: a rerun while an earlier process of the same cell lives is refused.
    let _lock = crate::formats::outdir::DirLock::acquire(&dir)?;
    let nf = cx.hyper.fine_tune_epochs;
    let (row, costs) = match id {
        CellId::Unpruned { subset, .. } => {
            let data = cx.data(Some(subset))?;
            let mut model = cx.pretrained()?;
            let workflow::SplitStats { test, val } =
                workflow::evaluate_splits(&mut model, &data, device, &id.to_string())?;
            let c = analysis::cost(&model.graph)?;
            let costs = sizes(&c, &c);
            (Some(cx.row(subset, Pipeline::Unpruned, 0, 0, test.top1, val.map(|v| v.top1), &costs)), costs)
        }
        CellId::FineTune { subset, seed, .. } => {
            let data = cx.data(Some(subset))?;
            let cfg = cx.config(&cx.hyper.aware, nf, 0, *seed)?;
            fit_in(cx.pretrained()?, &data, &cfg, &dir, 0)?;
            (None, Cell::default())
        }
        CellId::Aware { net, subset, level, seed } => {
            let ft = CellId::FineTune { net: net.clone(), subset: subset.clone(), seed: *seed };
            let data = cx.data(Some(subset))?;
            // Loaded (and verified) once, from the newest intact checkpoint.
            let mut tuned = train::last_model(CellDir::of(root, &ft).run().path())?;
            let (pruned, secs) = cx.prune(&mut tuned, &data, *level, *seed, Some(&dir))?;
            let cfg = cx.config(&cx.hyper.aware, recipe.epochs, nf, *seed)?;
            let s = fit_in(pruned.clone(), &data, &cfg, &dir, nf)?;
            let costs = cx.costs(&tuned, &pruned, &data, secs)?;
            let test = s.test_top1_at_best_val.ok_or_else(|| Error::Data(format!("{id}: no best epoch")))?;
            let mut row = cx.row(subset, Pipeline::Aware, *level, *seed, test, s.best_val_top1, &costs);
            row.best_epoch = s.best_epoch.map(|e| e as f64);
            row.epochs = Some(s.epochs as f64);
            // Fine-tuning and retraining draw from the same split with the same budget.
            row.train_steps = Some((cfg.batches_per_epoch(data.train.len()) * recipe.epochs) as f64);
            (Some(row), costs)
        }
        CellId::FineTuneUnlabeled { subset, seed, .. } => {
            let u = cx.unlabeled_data(subset)?;
            eprintln!(
                "{id}: the teacher sees {:?} (precision {:.2}, recall {:.2}; pseudo-labels right on {:.1}%)\n{}",
                u.found.class_names,
                u.found.precision.unwrap_or(f64::NAN),
                u.found.recall.unwrap_or(f64::NAN),
                100.0 * u.found.pseudo_label_accuracy.unwrap_or(f64::NAN),
                u.found.histogram
            );
            native::write_json(&CellDir(dir.clone()).inferred(), &u.found)?;
            let cfg = cx.distilling(cx.config(&cx.hyper.aware, nf, 0, *seed)?, &u.found);
            fit_in(cx.pretrained()?, &u.data, &cfg, &dir, 0)?;
            (None, Cell::default())
        }
        CellId::AwareUnlabeled { net, subset, level, seed } => {
            let ft = CellId::FineTuneUnlabeled { net: net.clone(), subset: subset.clone(), seed: *seed };
            let u = cx.unlabeled_data(subset)?;
            native::write_json(&CellDir(dir.clone()).inferred(), &u.found)?;
            let data = &u.data;
            let mut tuned = train::last_model(CellDir::of(root, &ft).run().path())?;
            let (pruned, secs) = cx.prune(&mut tuned, data, *level, *seed, Some(&dir))?;
            let cfg = cx.distilling(cx.config(&cx.hyper.aware, recipe.epochs, nf, *seed)?, &u.found);
            let s = fit_in(pruned.clone(), data, &cfg, &dir, nf)?;
            let costs = cx.costs(&tuned, &pruned, data, secs)?;
            let test = s.test_top1_at_best_val.ok_or_else(|| Error::Data(format!("{id}: no best epoch")))?;
            let mut row = cx.row(subset, Pipeline::AwareUnlabeled, *level, *seed, test, s.best_val_top1, &costs);
            row.best_epoch = s.best_epoch.map(|e| e as f64);
            row.epochs = Some(s.epochs as f64);
            row.train_steps = Some((cfg.batches_per_epoch(data.train.len()) * recipe.epochs) as f64);
            row.inferred_classes = u.found.class_names.join(" ");
            row.subset_precision = u.found.precision;
            row.subset_recall = u.found.recall;
            row.pseudo_label_accuracy = u.found.pseudo_label_accuracy;
            (Some(row), costs)
        }
        CellId::AgnosticTrain { level, seed, .. } => {
            let data = cx.data(None)?;
            let mut original = cx.pretrained()?;
            let (pruned, secs) = cx.prune(&mut original, &data, *level, *seed, Some(&dir))?;
            let cfg = cx.config(&cx.hyper.agnostic, recipe.epochs, 0, *seed)?;
            fit_in(pruned.clone(), &data, &cfg, &dir, 0)?;
            let steps = (cfg.batches_per_epoch(data.train.len()) * recipe.epochs) as f64;
            (None, Cell { train_steps: Some(steps), ..cx.costs(&original, &pruned, &data, secs)? })
        }
        CellId::Agnostic { net, subset, level, seed } => {
            let tr = CellId::AgnosticTrain { net: net.clone(), level: *level, seed: *seed };
            let trained = read_metrics(root, &tr)?;
            let data = cx.data(Some(subset))?;
            let mut model = formats::load_model(&CellDir::of(root, &tr).run().best())?;
            let workflow::SplitStats { test, val } =
                workflow::evaluate_splits(&mut model, &data, device, &id.to_string())?;
            let row = cx.row(subset, Pipeline::Agnostic, *level, *seed, test.top1, val.map(|v| v.top1), &trained.costs);
            (Some(row), trained.costs)
        }
    };
    let m = CellMetrics {
        cell: id.to_string(),
        row,
        costs,
        seconds: t0.elapsed().as_secs_f64(),
        peak_rss_bytes: metrics::peak_rss_bytes(),
        energy_joules: energy.joules(),
    };
    let mut m = m;
    if let Some(r) = m.row.as_mut() {
        r.seconds = Some(m.seconds);
        r.peak_rss_bytes = m.peak_rss_bytes.map(|b| b as f64);
        r.energy_joules = m.energy_joules.map_or("unavailable".into(), |j| format!("{j:.1}"));
    }
    native::write_json(&CellDir(dir.clone()).metrics(), &m)?;
    Ok(m)
}
