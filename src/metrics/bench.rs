//! Micro-benchmarks of the engine on synthetic data: one training step, and inference. Data is
//! made outside the timed part; the device is synchronised before each clock stops.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{TimeStats, peak_rss_bytes};
use crate::engine::{self, Device, Precision, SgdConfig};
use crate::error::Result;
use crate::ir::Model;

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub what: String,
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub device: String,
    /// libtorch or onnxruntime.
    pub runtime: String,
    /// The training step's precision (fp32 or bf16; fp32 for inference).
    pub precision: String,
    pub warmup: usize,
    pub step_seconds: TimeStats,
    pub images_per_second: f64,
    pub peak_rss_bytes: Option<u64>,
}

fn random_batch(model: &Model, batch: usize, seed: u64) -> Result<(Vec<f32>, Vec<i64>, usize)> {
    let per: usize = model.graph.input_shape()?.iter().product();
    let classes = *model.graph.infer_shapes()?[model.graph.output_index()?].first().unwrap_or(&1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = (0..batch * per).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let y = (0..batch).map(|_| rng.random_range(0..classes as i64)).collect();
    Ok((x, y, classes))
}

fn finish(
    what: &str,
    model: &Model,
    batch: usize,
    device: Device,
    runtime: engine::Runtime,
    warmup: usize,
    times: &[f64],
) -> BenchResult {
    let stats = TimeStats::from_samples(times).expect("at least one step");
    BenchResult {
        what: what.into(),
        model: model.graph.name.clone(),
        batch,
        threads: crate::engine::threads(),
        device: device.to_string(),
        runtime: runtime.to_string(),
        precision: Precision::Fp32.to_string(),
        warmup,
        images_per_second: batch as f64 / stats.median,
        step_seconds: stats,
        peak_rss_bytes: peak_rss_bytes(),
    }
}

/// Times `steps` SGD steps (forward, cross-entropy, backward, update) at `precision` after
/// `warmup` untimed ones.
pub fn train_step(
    model: &Model,
    batch: usize,
    steps: usize,
    warmup: usize,
    device: Device,
    precision: Precision,
) -> Result<BenchResult> {
    let (x, y, _) = random_batch(model, batch, 0)?;
    let mut net = engine::trainer(model, device)?;
    net.set_precision(precision);
    net.set_optimizer(SgdConfig { momentum: 0.9, weight_decay: 1e-4, nesterov: false });
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps.max(1) {
        let t = Instant::now();
        net.train_step(&x, &y, 0.01)?;
        device.synchronize();
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let r = finish("train-step", model, batch, device, engine::Runtime::Libtorch, warmup, &times);
    Ok(BenchResult { precision: net.precision().to_string(), ..r })
}

/// Times `steps` forward passes in inference mode in `runtime` (ONNX Runtime runs the model as
/// `edgeprune export` writes it).
pub fn infer(
    model: &Model,
    batch: usize,
    steps: usize,
    warmup: usize,
    device: Device,
    runtime: engine::Runtime,
) -> Result<BenchResult> {
    let (x, _, _) = random_batch(model, batch, 0)?;
    let net = engine::infer_with(model, device, runtime)?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps.max(1) {
        let t = Instant::now();
        net.predict(&x, batch)?;
        device.synchronize();
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(finish("infer", model, batch, device, runtime, warmup, &times))
}

/// Times the training loader on real data: `steps` augmented, normalised batches of `batch`
/// images fitted to `model`'s input (random resized crops when the stored images are larger,
/// padded crops otherwise) after `warmup` untimed ones (which also empty the loader's prefetch
/// queue). Nothing else runs, so each batch is waited for while the loader's thread makes it:
/// the time to prepare one batch, to set against a training step's.
pub fn data(
    model: &Model,
    data: &crate::train::RunData,
    batch: usize,
    steps: usize,
    warmup: usize,
) -> Result<BenchResult> {
    use crate::data::{Augment, Loader, LoaderConfig};
    let images = std::sync::Arc::new(data.train.clone());
    let size = model.graph.image_size()?;
    let cfg = |epoch| LoaderConfig {
        batch_size: batch,
        shuffle: true,
        augment: Some(Augment::default()),
        norm: data.stats.clone(),
        seed: 0,
        epoch,
        size: Some(size),
    };
    let mut epoch = 0;
    let mut loader = Loader::new(images.clone(), cfg(epoch));
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let b = match loader.next() {
            Some(b) => b,
            None => {
                epoch += 1;
                loader = Loader::new(images.clone(), cfg(epoch));
                loader.next().expect("a non-empty dataset has a batch")
            }
        };
        std::hint::black_box(&b);
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(finish("data (training loader)", model, batch, Device::Cpu, engine::Runtime::Libtorch, warmup, &times))
}
