//! Top-1/top-5 accuracy and loss of a network on a dataset, with non-finite outputs counted
//! (never as correct).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Loader, Normalize};
use crate::engine::Infer;
use crate::error::{Error, Result};

/// Accuracy and loss of a model on a dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// Mean cross-entropy over the images whose outputs are all finite (0 when there are none).
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub count: usize,
    /// Images whose outputs hold a NaN or an infinity: each counts as a wrong prediction.
    #[serde(default)]
    pub non_finite: usize,
}

impl EvalStats {
    /// Whether every output was finite: only then are the figures a result.
    pub fn is_finite(&self) -> bool {
        self.non_finite == 0 && self.loss.is_finite()
    }

    /// An error naming `what` (e.g. the model and split) unless every output was finite.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if self.is_finite() {
            return Ok(());
        }
        Err(Error::Engine(format!(
            "{what}: {} of {} images gave non-finite outputs (NaN or infinity); the model is broken \
             (look for non-finite weights or a negative BatchNorm running_var)",
            self.non_finite, self.count
        )))
    }
}

/// Top-1 and top-5 correctness of one row of logits. A row holding a NaN or an infinity is never
/// correct: comparisons with NaN are false, so counting the logits above the label's would
/// otherwise find none and call it right.
fn rank_of_label(row: &[f32], label: usize) -> Option<usize> {
    if row.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some(row.iter().filter(|&&v| v > row[label]).count())
}

/// Evaluates in inference mode (BatchNorm running statistics, no dropout).
pub fn evaluate(net: &dyn Infer, ds: &Dataset, norm: &Normalize, batch_size: usize) -> Result<EvalStats> {
    if ds.is_empty() {
        return Err(Error::Data("cannot evaluate on an empty dataset".into()));
    }
    let classes = net.num_outputs()?;
    let loader = Loader::new(
        Arc::new(ds.clone()),
        crate::data::LoaderConfig {
            batch_size,
            shuffle: false,
            augment: None,
            norm: norm.clone(),
            seed: 0,
            epoch: 0,
            size: None,
        },
    );
    let (mut loss, mut top1, mut top5, mut non_finite) = (0.0f64, 0usize, 0usize, 0usize);
    for batch in loader {
        let logits = net.predict(&batch.images, batch.len())?;
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            let label = label as usize;
            if label >= classes {
                return Err(Error::Data(format!("label {label} does not fit the model's {classes} outputs")));
            }
            let Some(better) = rank_of_label(row, label) else {
                non_finite += 1;
                continue;
            };
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            loss += lse - row[label] as f64;
            top1 += (better == 0) as usize;
            top5 += (better < 5) as usize;
        }
    }
    let n = ds.len();
    let finite = n - non_finite;
    Ok(EvalStats {
        loss: if finite == 0 { 0.0 } else { loss / finite as f64 },
        top1: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        count: n,
        non_finite,
    })
}

/// Batch size of every evaluation edgeprune runs itself (it changes nothing but speed and memory).
pub const EVAL_BATCH_SIZE: usize = 256;
