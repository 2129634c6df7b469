//! DaPR: the binary search over pruning levels p in [5, 95] (step 5, starting at 50) for the
//! largest level whose data-aware retrained accuracy on the subset still reaches the unpruned
//! model's (`memory_opt`), or for the first level probed that reaches it (`cost_opt`). Each
//! probe is an ordinary data-aware cell of the sweep, so probes are cached and a search resumes
//! where it stopped. With a retraining budget, a probe whose retraining is
//! predicted (on the device's training-cost table, for the network the probe would retrain) to
//! take longer is skipped: it is not run and counts as out of reach, and the search goes on
//! among the higher levels, whose smaller networks retrain faster.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::pipeline::{self, CellId};
use super::recipe::{Pipeline, Recipe};
use super::sweep;
use crate::error::{Error, Result};

/// What the search optimises, as the reference code's two modes: `MemoryOpt` finds the largest
/// level that keeps the unpruned accuracy (the smallest network); `CostOpt` stops at the first
/// probe that keeps it (the least search).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    MemoryOpt,
    CostOpt,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "memory_opt" | "memory-opt" => Ok(Mode::MemoryOpt),
            "cost_opt" | "cost-opt" => Ok(Mode::CostOpt),
            other => Err(Error::config("--mode", format!("unknown mode `{other}`; use memory_opt or cost_opt"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub level: f64,
    /// None for a skipped probe.
    pub test_top1: Option<f64>,
    pub reaches_reference: bool,
    /// Not run: its retraining was predicted to take longer than the budget.
    pub skipped: bool,
    pub epochs: f64,
    /// The probe cell's seconds (pruning, retraining, evaluation).
    pub seconds: f64,
    /// Its retraining's seconds as predicted on the device's training-cost table (None where
    /// the cache has no table for the network at the recipe's batch and threads) and as measured.
    pub predicted_retrain_seconds: Option<f64>,
    pub retrain_seconds: Option<f64>,
    /// The compute of its retraining, in GOps: 3 x the pruned network's inference GOps per image
    /// (forward and backward) x the images its retraining epochs trained on (evaluation left out).
    pub retrain_gops: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    pub network: String,
    pub subset: String,
    pub mode: Mode,
    /// The pipeline whose cells were the probes: `aware` (labelled) or `aware-unlabeled`.
    #[serde(default = "aware")]
    pub pipeline: Pipeline,
    /// The seed of the probes' cells (0 in results from before the field).
    #[serde(default)]
    pub seed: u64,
    pub reference_top1: f64,
    /// The largest level found that reaches the reference (None: not even 5%, or none within
    /// the retraining budget).
    pub level: Option<f64>,
    /// The retraining budget in minutes, if one was set.
    pub max_retrain_minutes: Option<f64>,
    pub probes: Vec<Probe>,
    pub total_epochs: f64,
    pub total_seconds: f64,
    /// The probes' retraining compute summed, in GOps (None if a probe's is unknown).
    pub total_retrain_gops: Option<f64>,
}

fn aware() -> Pipeline {
    Pipeline::Aware
}

/// A finished cell's test accuracy, epochs and seconds, and (given the recipe's batch size and
/// the share of its epochs that retrain) its retraining's compute in GOps.
fn top1(root: &Path, id: &CellId, batch: usize, retrain_share: f64) -> Result<(f64, f64, f64, Option<f64>)> {
    let cell = pipeline::CellDir::of(root, id);
    let p = cell.metrics();
    let m = cell.read_metrics()?;
    let row = m.row.ok_or_else(|| Error::file(&p, "no result row"))?;
    let acc = row.test_top1.ok_or_else(|| Error::file(&p, "no test accuracy"))?;
    let gops = match (row.gops_after, row.train_steps) {
        (Some(g), Some(steps)) => Some(3.0 * g * batch as f64 * steps * retrain_share),
        _ => None,
    };
    Ok((acc, row.epochs.unwrap_or(0.0), m.seconds, gops))
}

/// How a search runs: the seed of its probes, cells in this process or in children, the
/// retraining budget (minutes) and the mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub seed: u64,
    pub in_process: bool,
    pub max_retrain_minutes: Option<f64>,
    pub mode: Mode,
    /// The pipeline probed: `Aware` (the default) or `AwareUnlabeled`.
    pub pipeline: Option<Pipeline>,
}

/// Searches for one (network, subset, seed), running the probes not yet done; with
/// `max_retrain_minutes`, skipping those predicted to retrain for longer (see the module notes).
pub fn search(recipe: &Recipe, root: &Path, network: &str, subset: &str, o: Options) -> Result<SearchResult> {
    let Options { seed, in_process, max_retrain_minutes, mode, pipeline: probed } = o;
    let probed = probed.unwrap_or(Pipeline::Aware);
    match probed {
        Pipeline::Aware => {}
        Pipeline::AwareUnlabeled if max_retrain_minutes.is_some() => {
            return Err(Error::config(
                "--max-retrain-minutes",
                "the training-cost table does not price the teacher's pass of a label-free retraining: \
                 search aware-unlabeled without a retraining budget",
            ));
        }
        Pipeline::AwareUnlabeled => {}
        other => {
            return Err(Error::config(
                "--pipeline",
                format!("DaPR probes data-aware cells: aware or aware-unlabeled, not {other}"),
            ));
        }
    }
    if !recipe.pipelines.contains(&probed) {
        return Err(Error::config("--pipeline", format!("the recipe does not run the {probed} pipeline")));
    }
    if let Some(m) = max_retrain_minutes
        && !(m > 0.0 && m.is_finite())
    {
        return Err(Error::config("--max-retrain-minutes", format!("{m} must be a positive number of minutes")));
    }
    let run = |id: &CellId| -> Result<()> {
        let mut cells: Vec<CellId> = pipeline::input_of(id).into_iter().collect();
        cells.push(id.clone());
        sweep::run_cells(recipe, root, &cells, in_process)
    };
    // A data-aware cell's steps cover its fine-tune and its retraining alike (one split, one
    // budget): the retraining is the epochs after n_f.
    let spec = recipe
        .networks
        .iter()
        .find(|n| n.name == network)
        .ok_or_else(|| Error::config("--network", format!("the recipe has no network `{network}`")))?;
    let nf = recipe.resolve(spec)?.fine_tune_epochs;
    let retrain_share = recipe.epochs.saturating_sub(nf) as f64 / recipe.epochs.max(1) as f64;
    let (net, sub) = (network.to_string(), subset.to_string());
    let reference = CellId::Unpruned { net: net.clone(), subset: sub.clone() };
    run(&reference)?;
    let (ref_acc, ..) = top1(root, &reference, recipe.batch_size, 1.0)?;
    eprintln!("DaPR {network}/{subset}: unpruned reference {:.2}%", 100.0 * ref_acc);
    // Levels 5, 10, ..., 95 as indices 1..=19; find the largest index whose probe reaches the
    // reference, assuming accuracy falls with the level.
    let (mut lo, mut hi) = (1u32, 19u32);
    // Latency levels stop at the device's floor: a level past it is not probed (it would not
    // plan), it falls short.
    if let Some(max) = pipeline::max_latency_level(recipe, network)? {
        hi = hi.min((max / 5.0).floor() as u32);
        eprintln!("DaPR {network}/{subset}: latency levels reach at most {max:.1}% here: probing up to {}%", 5 * hi);
    }
    let mut best = None;
    let mut probes = Vec::new();
    let mut mid = if hi >= 10 { 10 } else { (lo + hi) / 2 }; // 50%, or within reach
    while lo <= hi {
        let level = 5 * mid;
        let id = match probed {
            Pipeline::AwareUnlabeled => {
                CellId::AwareUnlabeled { net: net.clone(), subset: sub.clone(), level: level * 100, seed }
            }
            _ => CellId::Aware { net: net.clone(), subset: sub.clone(), level: level * 100, seed },
        };
        if let Some(minutes) = max_retrain_minutes
            && !pipeline::is_done(root, &id)
        {
            // The probe's fine-tune first: the network it would retrain is pruned from it.
            if let Some(ft) = pipeline::input_of(&id) {
                sweep::run_cells(recipe, root, &[ft], in_process)?;
            }
            let predicted = pipeline::predicted_retraining(recipe, root, &id)?.ok_or_else(|| {
                Error::config(
                    "--max-retrain-minutes",
                    format!(
                        "needs a training-cost table of network `{network}` at batch {} in {} on this device, and none \
                         is in the cache: measure it once with `edgeprune bench train-cost --model <its model> --batch {} \
                         --threads {} --precision {}`",
                        recipe.batch_size, recipe.precision, recipe.batch_size, recipe.threads, recipe.precision
                    ),
                )
            })?;
            if predicted > 60.0 * minutes {
                eprintln!(
                    "  probe p = {level}%: skipped, its retraining is predicted at {predicted:.0}s, over the budget of {:.0}s",
                    60.0 * minutes
                );
                probes.push(Probe {
                    level: level as f64,
                    test_top1: None,
                    reaches_reference: false,
                    skipped: true,
                    epochs: 0.0,
                    seconds: 0.0,
                    predicted_retrain_seconds: Some(predicted),
                    retrain_seconds: None,
                    retrain_gops: Some(0.0),
                });
                lo = mid + 1;
                mid = (lo + hi) / 2;
                continue;
            }
        }
        run(&id)?;
        let (acc, epochs, secs, gops) = top1(root, &id, recipe.batch_size, retrain_share)?;
        let ok = acc >= ref_acc;
        let (predicted, measured) = pipeline::retraining_cost(recipe, root, &id)?;
        let cost = match (predicted, measured) {
            (Some(p), Some(m)) => format!("; retraining {m:.0}s, predicted {p:.0}s"),
            (None, Some(m)) => format!("; retraining {m:.0}s (no training-cost table to predict it)"),
            _ => String::new(),
        };
        eprintln!("  probe p = {level}%: {:.2}% -> {}{cost}", 100.0 * acc, if ok { "reaches" } else { "falls short" });
        probes.push(Probe {
            level: level as f64,
            test_top1: Some(acc),
            reaches_reference: ok,
            skipped: false,
            epochs,
            seconds: secs,
            predicted_retrain_seconds: predicted,
            retrain_seconds: measured,
            retrain_gops: gops,
        });
        if ok {
            best = Some(level as f64);
            if mode == Mode::CostOpt {
                break;
            }
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
        mid = (lo + hi) / 2;
    }
    let total_epochs = probes.iter().map(|p| p.epochs).sum();
    let total_seconds = probes.iter().map(|p| p.seconds).sum();
    let total_retrain_gops = probes.iter().map(|p| p.retrain_gops).sum();
    Ok(SearchResult {
        network: network.into(),
        subset: subset.into(),
        mode,
        pipeline: probed,
        seed,
        reference_top1: ref_acc,
        level: best,
        max_retrain_minutes,
        probes,
        total_epochs,
        total_seconds,
        total_retrain_gops,
    })
}
