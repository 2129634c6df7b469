//! The cost of training a (pruned) network on this device before paying it: the time of one
//! training step (forward, loss, backward, SGD update), the peak memory of the training process,
//! the time of an evaluation pass, and so of a whole fine-tune. `metrics::train_cost` measures the
//! tables this module reads.
//!
//! The model shares the latency tables' machinery (`analysis::latency`, `metrics::latency`): a
//! network's units (every conv and linear layer, with the BatchNorm and activation it absorbs)
//! are priced by the time of a training step of the unit alone in the engine at the training
//! batch (forward in training mode, backward to its weights and its input, SGD update), measured
//! over a grid of its channel counts; the whole step is fitted on training steps of whole
//! networks measured on the device (the unpruned network, uniformly pruned ones, and ones at
//! multiples of 8):
//!
//! `step_ms = k_units * units_ms + k_off * off-8 units_ms + k_macs * GMACs + k_params * Mparams + c`
//!
//! where `units_ms` is the units' summed step time from the table, off-8 units_ms the same sum
//! over the units whose input or output count is not a multiple of 8 (in a whole network such
//! units train much slower than alone: on this machine libtorch trains ResNet-20 at its 16/32/64
//! channels in 254 ms per batch of 128, at 10% fewer parameters, every count off a multiple of 8,
//! in 381 ms, and at 75% of its channels, multiples of 8, in 229 ms, where the units' table sums
//! differ by 5%), GMACs the forward multiply-accumulates at the batch, and the parameters what
//! the optimizer updates. Each coefficient is fitted non-negative. (The rest's elements, the
//! latency model's term, and the same split at multiples of 8 were tried in their place and
//! fitted worse: on ResNet-20, 23.3% mean error against 14-17%.)
//! (Priced by their forward time in inference instead, the units missed that staircase too.)
//!
//! Memory is fitted the same way on the peak resident size of one training process per
//! calibration network (a fresh process each: the peak never goes down), at two batch sizes so
//! that what grows with the batch is told apart from what does not:
//!
//! `peak = m_base + m_weights * parameter bytes + m_act * activation bytes at the batch`
//!
//! Evaluation (inference at the evaluation batch, no gradients) is fitted per image on
//! `units_ms / batch` and the activation elements per image.

use serde::{Deserialize, Serialize};

use super::latency::{LatencyTable, Predictor, TableKey};
use crate::error::{Error, Result};
use crate::ir::Graph;

/// Version of the table file layout; a table of another version is stale.
pub const FORMAT: u32 = 4;

/// What a network's training cost is predicted from, at the table's batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Features {
    /// The units' summed training-step ms at the table's batch.
    pub units_ms: f64,
    /// The same sum over the units whose input or output count is not a multiple of 8.
    pub off8_units_ms: f64,
    /// Output elements of every node, per image.
    pub activations_per_image: f64,
    pub params: f64,
    /// Multiply-accumulates of a forward pass, per image.
    pub macs_per_image: f64,
}

impl Features {
    /// The features of `graph` (the table's network, pruned or not) on `units`, the training
    /// unit table of the unpruned network at the training batch.
    pub fn of(units: &LatencyTable, graph: &Graph) -> Result<Features> {
        let p = Predictor::new(units, graph)?;
        let counts = p.own_counts();
        let (units_ms, _, _) = p.parts(&counts);
        let off8_units_ms = p.units_where(&counts, |cin, cout| !cin.is_multiple_of(8) || !cout.is_multiple_of(8));
        let shapes = graph.infer_shapes()?;
        let activations_per_image = graph
            .nodes
            .iter()
            .zip(&shapes)
            .filter(|(n, _)| !matches!(n.op, crate::ir::Op::Input { .. }))
            .map(|(_, s)| s.iter().product::<usize>() as f64)
            .sum();
        let cost = crate::analysis::cost(graph)?;
        let (params, macs_per_image) = (cost.params as f64, cost.macs as f64);
        Ok(Features { units_ms, off8_units_ms, activations_per_image, params, macs_per_image })
    }
}

/// A linear model `y = sum coef[i] * x[i] + intercept`, each named term fitted non-negative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    pub terms: Vec<String>,
    pub coef: Vec<f64>,
    pub intercept: f64,
}

impl Linear {
    pub fn eval(&self, x: &[f64]) -> f64 {
        self.intercept + self.coef.iter().zip(x).map(|(c, x)| c * x).sum::<f64>()
    }

    /// Least squares of `y` on the columns of `x` and an intercept, with every coefficient
    /// non-negative: a column whose coefficient comes out negative (noise on correlated columns)
    /// is dropped and the rest refitted. The intercept may take either sign.
    pub fn fit(terms: &[&str], x: &[Vec<f64>], y: &[f64]) -> Result<Linear> {
        let k = terms.len();
        if x.len() != y.len() || x.iter().any(|r| r.len() != k) || y.is_empty() {
            return Err(Error::config("train cost", "a fit needs one row of every term per measurement"));
        }
        if x.iter().flatten().chain(y).any(|v| !v.is_finite()) {
            return Err(Error::config("train cost", "a measurement or feature is not finite"));
        }
        let mut active: Vec<usize> = (0..k).collect();
        loop {
            // Columns scaled to unit mean magnitude, for a well-conditioned normal matrix.
            let scale: Vec<f64> = (0..k)
                .map(|c| {
                    let m = x.iter().map(|r| r[c].abs()).sum::<f64>() / x.len() as f64;
                    if m > 0.0 { m } else { 1.0 }
                })
                .collect();
            let cols: Vec<usize> = active.clone();
            let n = cols.len() + 1;
            let row =
                |r: &[f64]| -> Vec<f64> { cols.iter().map(|&c| r[c] / scale[c]).chain(std::iter::once(1.0)).collect() };
            let mut a = vec![vec![0.0; n + 1]; n];
            for (r, &yv) in x.iter().zip(y) {
                let v = row(r);
                for i in 0..n {
                    for j in 0..n {
                        a[i][j] += v[i] * v[j];
                    }
                    a[i][n] += v[i] * yv;
                }
            }
            let sol = if y.len() >= n { super::latency::solve(a) } else { None };
            match sol {
                Some(s) => {
                    let worst = (0..cols.len()).filter(|&i| s[i] < 0.0).min_by(|&i, &j| s[i].total_cmp(&s[j]));
                    if let Some(i) = worst {
                        active.remove(i);
                        continue;
                    }
                    let mut coef = vec![0.0; k];
                    for (i, &c) in cols.iter().enumerate() {
                        coef[c] = s[i] / scale[c];
                    }
                    return Ok(Linear {
                        terms: terms.iter().map(|t| t.to_string()).collect(),
                        coef,
                        intercept: s[n - 1],
                    });
                }
                // Singular (a constant column, too few points): drop the last term and refit.
                None if !active.is_empty() => {
                    active.pop();
                }
                None => {
                    let mean = y.iter().sum::<f64>() / y.len() as f64;
                    return Ok(Linear {
                        terms: terms.iter().map(|t| t.to_string()).collect(),
                        coef: vec![0.0; k],
                        intercept: mean,
                    });
                }
            }
        }
    }
}

/// One whole network measured for the fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainCalibration {
    /// "unpruned", "uniform 50% of parameters", ...
    pub what: String,
    pub features: Features,
    /// Median ms of a training step at the table's batch (None: measured for memory only).
    pub step_ms: Option<f64>,
    /// Median ms per image of inference at the evaluation batch.
    pub eval_ms_per_image: Option<f64>,
    /// The batch the peak was measured at, and the peak resident bytes of that training process.
    pub memory_batch: usize,
    pub peak_bytes: Option<f64>,
}

/// The training-cost table of one network at one batch size, thread count and device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainCostTable {
    /// What it was measured for (its `format` is this module's [`FORMAT`]); stale when any field
    /// differs from the current one.
    pub key: TableKey,
    pub network: String,
    /// The units' training steps measured alone at the training batch (a latency table of
    /// training steps: its whole-network terms unused), which the features are read from.
    pub units: LatencyTable,
    /// The batch size the evaluation time is fitted at.
    pub eval_batch: usize,
    pub step: Linear,
    pub eval: Linear,
    pub memory: Linear,
    pub calibration: Vec<TrainCalibration>,
    pub build_seconds: f64,
}

/// A predicted training cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub batch: usize,
    pub step_ms: f64,
    pub peak_bytes: f64,
    pub eval_ms_per_image: f64,
}

/// A whole fine-tune, predicted: epochs of training steps and an evaluation pass each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FineTuneCost {
    pub epochs: usize,
    pub steps_per_epoch: usize,
    /// Images evaluated after each epoch (validation and test splits).
    pub eval_images: usize,
    pub step_ms: f64,
    pub eval_ms_per_image: f64,
    pub seconds: f64,
}

impl FineTuneCost {
    pub fn new(p: &Prediction, epochs: usize, steps_per_epoch: usize, eval_images: usize) -> FineTuneCost {
        let per_epoch_ms = steps_per_epoch as f64 * p.step_ms + eval_images as f64 * p.eval_ms_per_image;
        FineTuneCost {
            epochs,
            steps_per_epoch,
            eval_images,
            step_ms: p.step_ms,
            eval_ms_per_image: p.eval_ms_per_image,
            seconds: epochs as f64 * per_epoch_ms / 1e3,
        }
    }
}

pub const STEP_TERMS: [&str; 4] = ["units_ms", "off8_units_ms", "gmacs", "mparams"];
pub const EVAL_TERMS: [&str; 2] = ["units_ms_per_image", "activation_melements_per_image"];
pub const MEMORY_TERMS: [&str; 2] = ["parameter_bytes", "activation_bytes"];

/// The step model's inputs: the units' ms, the rest's Melements at `batch`, Mparams.
pub fn step_row(f: &Features, batch: usize) -> Vec<f64> {
    let b = batch as f64 / 1e6;
    vec![f.units_ms, f.off8_units_ms, f.macs_per_image * b / 1e3, f.params / 1e6]
}
/// The evaluation model's inputs per image (units' ms over the table's batch).
pub fn eval_row(f: &Features, table_batch: usize) -> Vec<f64> {
    vec![f.units_ms / table_batch as f64, f.activations_per_image / 1e6]
}
/// The memory model's inputs at `batch`: parameter bytes and activation bytes (f32).
pub fn memory_row(f: &Features, batch: usize) -> Vec<f64> {
    vec![4.0 * f.params, 4.0 * f.activations_per_image * batch as f64]
}

impl TrainCostTable {
    /// The predicted cost of training `graph` at the table's batch (peak memory at `batch`, any
    /// batch size: the memory model is fitted across two).
    pub fn predict(&self, graph: &Graph) -> Result<Prediction> {
        self.predict_at(graph, self.key.batch)
    }

    /// As [`predict`](Self::predict), with the peak memory at `batch`; the step time is the
    /// table's batch's.
    pub fn predict_at(&self, graph: &Graph, batch: usize) -> Result<Prediction> {
        let f = Features::of(&self.units, graph)?;
        let p = Prediction {
            batch,
            step_ms: self.step.eval(&step_row(&f, self.key.batch)).max(0.0),
            peak_bytes: self.memory.eval(&memory_row(&f, batch)).max(0.0),
            eval_ms_per_image: self.eval.eval(&eval_row(&f, self.key.batch)).max(0.0),
        };
        if ![p.step_ms, p.peak_bytes, p.eval_ms_per_image].iter().all(|v| v.is_finite()) {
            return Err(Error::config("train cost table", "the prediction is not finite"));
        }
        Ok(p)
    }

    /// The largest batch size whose predicted peak is at most `limit` bytes, if any.
    pub fn largest_batch_within(&self, graph: &Graph, limit: f64) -> Result<Option<usize>> {
        let f = Features::of(&self.units, graph)?;
        let at = |b: usize| self.memory.eval(&memory_row(&f, b));
        if at(1) > limit {
            return Ok(None);
        }
        let (mut lo, mut hi) = (1usize, 2usize);
        while hi <= 1 << 16 && at(hi) <= limit {
            lo = hi;
            hi *= 2;
        }
        if hi > 1 << 16 {
            return Ok(Some(1 << 16));
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if at(mid) <= limit { lo = mid } else { hi = mid }
        }
        Ok(Some(lo))
    }

    /// Checks what a file can get wrong: finite coefficients of the right sizes.
    pub fn check(&self) -> Result<()> {
        self.units.check()?;
        for (name, l, n) in [
            ("step", &self.step, STEP_TERMS.len()),
            ("eval", &self.eval, EVAL_TERMS.len()),
            ("memory", &self.memory, MEMORY_TERMS.len()),
        ] {
            if l.coef.len() != n || l.terms.len() != n || !l.coef.iter().chain([&l.intercept]).all(|v| v.is_finite()) {
                return Err(Error::config(name, "train cost table: the model is not finite or has the wrong terms"));
            }
        }
        Ok(())
    }

    /// Fits the three models on the calibration measurements.
    pub fn fit(&mut self) -> Result<()> {
        let b = self.key.batch;
        let with = |get: fn(&TrainCalibration) -> Option<f64>| {
            self.calibration.iter().filter_map(move |c| get(c).map(|y| (c, y)))
        };
        let (x, y): (Vec<_>, Vec<_>) = with(|c| c.step_ms).map(|(c, y)| (step_row(&c.features, b), y)).unzip();
        self.step = Linear::fit(&STEP_TERMS, &x, &y)?;
        let (x, y): (Vec<_>, Vec<_>) =
            with(|c| c.eval_ms_per_image).map(|(c, y)| (eval_row(&c.features, b), y)).unzip();
        self.eval = Linear::fit(&EVAL_TERMS, &x, &y)?;
        let (x, y): (Vec<_>, Vec<_>) =
            with(|c| c.peak_bytes).map(|(c, y)| (memory_row(&c.features, c.memory_batch), y)).unzip();
        self.memory = Linear::fit(&MEMORY_TERMS, &x, &y)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_linear_law_and_keeps_terms_non_negative() {
        let x: Vec<Vec<f64>> = (0..12).map(|i| vec![i as f64, (i * i) as f64 * 0.5 + 3.0]).collect();
        let y: Vec<f64> = x.iter().map(|r| 2.0 * r[0] + 0.25 * r[1] + 7.0).collect();
        let l = Linear::fit(&["a", "b"], &x, &y).unwrap();
        assert!(
            (l.coef[0] - 2.0).abs() < 1e-9 && (l.coef[1] - 0.25).abs() < 1e-9 && (l.intercept - 7.0).abs() < 1e-6,
            "{l:?}"
        );
        // y falls with column b: its coefficient would be negative, so b is dropped.
        let y: Vec<f64> = x.iter().map(|r| 2.0 * r[0] - 0.1 * r[1] + 30.0).collect();
        let l = Linear::fit(&["a", "b"], &x, &y).unwrap();
        assert_eq!(l.coef[1], 0.0, "{l:?}");
        assert!(l.coef[0] >= 0.0);
        // One point: the mean.
        let l = Linear::fit(&["a"], &[vec![1.0]], &[5.0]).unwrap();
        assert_eq!(l.eval(&[3.0]), 5.0);
        assert!(Linear::fit(&["a"], &[vec![f64::NAN]], &[1.0]).is_err());
    }
}
