//! Measuring a model on a run's splits, and training one from a start point.

use std::path::Path;

use crate::engine::{self, Device};
use crate::error::Result;
use crate::ir::Model;
use crate::train::{self, EVAL_BATCH_SIZE, EvalStats, RunData, Start, Summary, TrainConfig, evaluate};

/// A model's accuracy on a run's test split and, where one is held out, its validation split.
#[derive(Debug, Clone, Copy)]
pub struct SplitStats {
    pub test: EvalStats,
    pub val: Option<EvalStats>,
}

/// Normalises `model` as it records (else as `data` says, recorded into it), builds it on
/// `device` and evaluates the test and validation splits; non-finite outputs are an error naming
/// `what` and the split.
pub fn evaluate_splits(model: &mut Model, data: &RunData, device: Device, what: &str) -> Result<SplitStats> {
    let norm = train::model_normalize(model, &data.stats)?;
    let net = engine::infer(model, device)?;
    let test = evaluate(&*net, &data.test, &norm, EVAL_BATCH_SIZE)?;
    test.check_finite(&format!("{what}: test split"))?;
    let val = data.val.as_ref().map(|v| evaluate(&*net, v, &norm, EVAL_BATCH_SIZE)).transpose()?;
    if let Some(v) = &val {
        v.check_finite(&format!("{what}: validation split"))?;
    }
    Ok(SplitStats { test, val })
}

/// Trains `start.model` in the run folder `run` as `cfg` says, from epoch `start.epoch` on;
/// if `run` already holds a checkpoint of this training (an interrupted process), resumes it
/// instead, so that the result is the one an uninterrupted run gives.
pub fn train_from(start: Start, data: &RunData, cfg: &TrainConfig, run: &Path) -> Result<Summary> {
    if train::can_resume(run)? { train::fit(None, data, cfg, run) } else { train::fit(Some(start), data, cfg, run) }
}
