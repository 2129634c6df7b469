//! Comparing edgeprune with reference numbers: onnxruntime run from a Python, output tolerances,
//! and the pseudo-random images the reference scripts regenerate instead of committing.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgeprune::engine::{Device, Infer, Layout, Network};
use edgeprune::formats::native;
use edgeprune::ir::{Graph, HostTensor, Model, Weights};
use rand::{Rng, SeedableRng};

/// A Python with onnxruntime, numpy and safetensors (scripts/onnx_run.py's needs), from
/// `$EDGEPRUNE_PYTHON` or ~/.cache/edgeprune/pyref/bin/python; `Ok(None)` when there is none,
/// an error when `$EDGEPRUNE_PYTHON` names one that lacks them.
pub fn python() -> Result<Option<String>, String> {
    let (py, explicit) = match std::env::var("EDGEPRUNE_PYTHON") {
        Ok(p) if !p.is_empty() => (p, true),
        _ => match std::env::var("HOME") {
            Ok(h) => (format!("{h}/.cache/edgeprune/pyref/bin/python"), false),
            Err(_) => return Ok(None),
        },
    };
    let ok = Command::new(&py)
        .args(["-c", "import onnxruntime, numpy, safetensors.numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    match (ok, explicit) {
        (true, _) => Ok(Some(py)),
        (false, true) => Err(format!("EDGEPRUNE_PYTHON={py} cannot import onnxruntime, numpy and safetensors")),
        (false, false) => Ok(None),
    }
}

/// The outputs of `n` images under edgeprune's engine (CPU, 2 threads).
pub fn predict(m: &Model, x: &[f32], n: usize) -> Vec<f32> {
    edgeprune::engine::set_threads(2);
    Network::with_layout(m, Device::Cpu, Layout::Contiguous).unwrap().predict(x, n).unwrap()
}

/// (max |a - b|, that relative to max |b|) for `n` images' outputs. Panics when the reference
/// outputs hardly depend on the image (their spread over the batch, the largest standard
/// deviation of an output, is under 1% of their magnitude): the comparison would check little
/// more than the last layer's bias.
pub fn errors(a: &[f32], b: &[f32], n: usize) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let abs = a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    let scale = b.iter().fold(0f64, |m, &y| m.max((y as f64).abs()));
    let k = b.len() / n;
    let spread = (0..k)
        .map(|j| {
            let v: Vec<f64> = (0..n).map(|i| b[i * k + j] as f64).collect();
            let mean = v.iter().sum::<f64>() / n as f64;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt()
        })
        .fold(0f64, f64::max);
    assert!(
        scale.is_finite() && spread > 0.01 * scale,
        "degenerate outputs: max |y| {scale:.3e}, spread over the images {spread:.3e}"
    );
    (abs, abs / scale)
}

/// `n` images of `shape`, uniform in [-2, 2), from a linear congruential generator seeded with
/// `seed` (tests/reference/torchvision/make.py has the same `images`).
pub fn images(shape: &[usize], n: usize, seed: u32) -> Vec<f32> {
    let mut k = seed;
    (0..n * shape.iter().product::<usize>())
        .map(|_| {
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (k >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

pub fn read_safetensors(path: &Path) -> Weights {
    native::weights_from_safetensors(&std::fs::read(path).unwrap(), path).unwrap()
}

/// Writes `x` (`n` images of the model's input shape) as the safetensors input scripts/onnx_run.py
/// reads.
pub fn write_input(m: &Model, x: &[f32], n: usize, path: &Path) {
    let mut w = Weights::default();
    let mut shape = vec![n];
    shape.extend(m.graph.input_shape().unwrap());
    w.insert("x", HostTensor::f32(shape, x.to_vec()));
    std::fs::write(path, native::weights_to_safetensors(&w)).unwrap();
}

/// Runs scripts/onnx_run.py on (model, input, output) triples; panics with its stderr on failure.
pub fn onnx_run(py: &str, jobs: &[(PathBuf, PathBuf, PathBuf)]) {
    let mut c = Command::new(py);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_run.py"));
    for (m, x, y) in jobs {
        c.args([m, x, y]);
    }
    let run = c.output().unwrap();
    assert!(run.status.success(), "onnxruntime failed:\n{}", String::from_utf8_lossy(&run.stderr));
}

/// Fresh weights with non-trivial BatchNorm (and LayerNorm) parameters and statistics, and layer
/// scales of order one (ConvNeXt starts them at 1e-6, which would hide its blocks).
pub fn model_of(graph: Graph, seed: u64) -> Model {
    let mut m = Model::init(graph, seed).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for (k, t) in m.weights.tensors.iter_mut() {
        let (lo, hi) = if k.ends_with("running_var")
            || k.ends_with(".layer_scale")
            || (k.ends_with(".weight") && t.shape.len() == 1)
        {
            (0.5, 1.5)
        } else if k.ends_with("running_mean") || (k.ends_with(".bias") && t.shape.len() == 1) {
            (-0.3, 0.3)
        } else {
            continue;
        };
        if let Some(v) = t.as_f32_mut() {
            v.iter_mut().for_each(|x| *x = rng.random_range(lo..hi));
        }
    }
    m
}

/// The stems of the `.onnx` files in `dir`, sorted.
pub fn onnx_stems(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "onnx").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}
