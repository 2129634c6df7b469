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
//! networks measured on the device (the unpruned network, uniformly pruned ones, ones at
//! multiples of 8, ones pruned unevenly along the depth, ones at random shares per group):
//!
//! `step_ms = k_units * units_ms + k_bn * off-16 BatchNorm Mpositions + c`
//!
//! where `units_ms` is the units' summed step time from the table and the second term counts, at
//! the batch, the spatial positions of the BatchNorms whose channel count is not a multiple of
//! 16. That term is what the units alone do not show well enough: libtorch's channels-last
//! BatchNorm trains several times slower per channel off a multiple of 16 (see
//! [`Features::bn_off16_positions`]), and in a whole network that costs far more than the units'
//! tables price it (ResNet-20 at 16/32/64 channels trains in
//! 192 ms per batch of 128 on this machine, 10% pruned uniformly, every count off 16, in 342 ms,
//! where the units' sums differ by 15%; in PyTorch's profiler the BatchNorms are 44 of 254 ms at
//! 16/32/64 and 170 of 349 at 15/29/58). Both coefficients are fitted non-negative.
//! Measured against pruned networks none of the fit saw (results/train-cost-model/), this beat
//! the terms tried before or beside it: the units' ms off a multiple of 8, GMACs and Mparams fit
//! the calibration networks as well or better, but extrapolate badly to networks pruned by a
//! global ranking (SqueezeNet at 50% by global L1 ranking: 110 ms measured, 151 predicted with
//! them, 111 ms of units alone), and the rest's elements, the latency model's term, fitted worse.
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

/// Version of the table file layout, or of what its figures measure; a table of another version is
/// stale. (8: the engine's costs changed: jemalloc as the allocator, dense small-map
/// convolutions, dense gradients into concatenations. 9: a calibration step is the fastest of
/// `metrics::train_cost::ROUNDS` processes' medians, not one process's.)
pub const FORMAT: u32 = 9;

/// What a network's training cost is predicted from, at the table's batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Features {
    /// The units' summed training-step ms at the table's batch.
    pub units_ms: f64,
    /// Spatial positions (H x W, per image) of the BatchNorm nodes whose channel count is not a
    /// multiple of 16, summed: libtorch's channels-last BatchNorm trains several times slower per
    /// channel off a multiple of 16 (measured in PyTorch 2.13 on this machine, the same with
    /// ATen's AVX2 kernels: a BatchNorm training step over 128 x 16 x 16 positions takes 72 us per
    /// channel at 16, 32 and 64 channels, 319 at 8, 238 at 20, 168 at 24, 194 at 28, 106 at 40; in
    /// a whole ResNet-20 at 15/29/58 channels the BatchNorms take 170 ms of a 349 ms step, at
    /// 16/32/64 44 ms of 254).
    pub bn_off16_positions: f64,
    /// Output elements of every node, per image.
    pub activations_per_image: f64,
    pub params: f64,
}

impl Features {
    /// The features of `graph` (the table's network, pruned or not) on `units`, the training
    /// unit table of the unpruned network at the training batch.
    pub fn of(units: &LatencyTable, graph: &Graph) -> Result<Features> {
        let p = Predictor::new(units, graph)?;
        let counts = p.own_counts();
        let (units_ms, _, _) = p.parts(&counts);
        let shapes = graph.infer_shapes()?;
        let activations_per_image = graph
            .nodes
            .iter()
            .zip(&shapes)
            .filter(|(n, _)| !matches!(n.op, crate::ir::Op::Input { .. }))
            .map(|(_, s)| s.iter().product::<usize>() as f64)
            .sum();
        let bn_off16_positions = graph
            .nodes
            .iter()
            .zip(&shapes)
            .filter(|(n, s)| matches!(n.op, crate::ir::Op::BatchNorm2d { .. }) && !s[0].is_multiple_of(16))
            .map(|(_, s)| s[1..].iter().product::<usize>() as f64)
            .sum();
        let params = crate::analysis::cost(graph)?.params as f64;
        Ok(Features { units_ms, bn_off16_positions, activations_per_image, params })
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
        Self::fit_weighted(terms, x, y, &vec![1.0; y.len()])
    }

    /// As [`fit`](Self::fit), minimising the squared *relative* error `((fit - y) / y)^2`: what
    /// the predictor is judged on. With absolute errors one slow outlier among the calibration
    /// networks pulls the fit up for all (in bf16 on ResNet-20 one network measured at 350 ms
    /// between neighbours at 87 and 149: 27.1% mean error on the benchmark's networks, 19.8% with
    /// relative errors; in fp32 over four networks 7.9% against 6.9%). `y` must be positive.
    pub fn fit_relative(terms: &[&str], x: &[Vec<f64>], y: &[f64]) -> Result<Linear> {
        if y.iter().any(|v| v.is_nan() || *v <= 0.0) {
            return Err(Error::config("train cost", "a relative fit needs positive measurements"));
        }
        Self::fit_weighted(terms, x, y, &y.iter().map(|v| 1.0 / v).collect::<Vec<_>>())
    }

    /// Weighted least squares (row `r` counted `w[r]^2` times), non-negative as [`fit`](Self::fit).
    fn fit_weighted(terms: &[&str], x: &[Vec<f64>], y: &[f64], w: &[f64]) -> Result<Linear> {
        let k = terms.len();
        if x.len() != y.len() || w.len() != y.len() || x.iter().any(|r| r.len() != k) || y.is_empty() {
            return Err(Error::config("train cost", "a fit needs one row of every term per measurement"));
        }
        if x.iter().flatten().chain(y).chain(w).any(|v| !v.is_finite()) {
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
            for ((r, &yv), &wr) in x.iter().zip(y).zip(w) {
                let v: Vec<f64> = row(r).into_iter().map(|e| e * wr).collect();
                for i in 0..n {
                    for j in 0..n {
                        a[i][j] += v[i] * v[j];
                    }
                    a[i][n] += v[i] * yv * wr;
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

pub const STEP_TERMS: [&str; 2] = ["units_ms", "bn_off16_mpositions"];
pub const EVAL_TERMS: [&str; 2] = ["units_ms_per_image", "activation_melements_per_image"];
pub const MEMORY_TERMS: [&str; 2] = ["parameter_bytes", "activation_bytes"];

/// The step model's inputs: the units' ms and the off-16 BatchNorms' Mpositions at `batch`.
pub fn step_row(f: &Features, batch: usize) -> Vec<f64> {
    vec![f.units_ms, f.bn_off16_positions * batch as f64 / 1e6]
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
        self.step = Linear::fit_relative(&STEP_TERMS, &x, &y)?;
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

    #[test]
    fn the_relative_fit_recovers_a_law_and_is_not_pulled_by_one_outlier() {
        let x: Vec<Vec<f64>> = (1..=12).map(|i| vec![10.0 * i as f64]).collect();
        let mut y: Vec<f64> = x.iter().map(|r| 0.5 * r[0] + 4.0).collect();
        let l = Linear::fit_relative(&["a"], &x, &y).unwrap();
        assert!((l.coef[0] - 0.5).abs() < 1e-9 && (l.intercept - 4.0).abs() < 1e-6, "{l:?}");
        // One measurement 3x too slow, among the largest: the relative fit's errors on the others
        // stay smaller than the absolute fit's.
        y[10] *= 3.0;
        let rel = Linear::fit_relative(&["a"], &x, &y).unwrap();
        let abs = Linear::fit(&["a"], &x, &y).unwrap();
        let err = |l: &Linear| -> f64 {
            (0..12).filter(|&i| i != 10).map(|i| ((l.eval(&x[i]) - y[i]) / y[i]).abs()).sum::<f64>() / 11.0
        };
        assert!(err(&rel) < err(&abs), "relative {} absolute {}", err(&rel), err(&abs));
        assert!(Linear::fit_relative(&["a"], &[vec![1.0]], &[0.0]).is_err());
        assert!(Linear::fit_relative(&["a"], &[vec![1.0]], &[f64::NAN]).is_err());
    }
}
