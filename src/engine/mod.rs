//! The compute engine, behind two small interfaces: [`Infer`] (logits for a batch of images:
//! what evaluation needs, and where a deployed runtime such as ONNX Runtime sits) and [`Train`]
//! (SGD steps, per-channel statistics with gradients, weights and optimizer state in and out:
//! what training and the data-driven criteria need). libtorch implements both ([`Network`], in
//! `torch.rs`, the only file that touches tch); ONNX Runtime implements [`Infer`]
//! ([`OrtNetwork`], in `onnxruntime.rs`, the only file that touches `ort`), chosen by [`Runtime`].
//! The rest of edgeprune builds networks through [`trainer`], [`infer`] and [`infer_with`] and
//! sees plain host data only (IR [`Weights`], `Vec<f32>`).

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::ir::{Model, Weights};

pub mod onnxruntime;
mod torch;

pub use onnxruntime::OrtNetwork;
pub use torch::Network;

/// Which runtime runs inference: libtorch (the training engine) or ONNX Runtime (what most edge
/// deployments run; its library is loaded at run time, see [`onnxruntime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    #[default]
    Libtorch,
    OnnxRuntime,
}

impl Runtime {
    pub const NAMES: &[&str] = &["libtorch", "ort"];
}

impl FromStr for Runtime {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "libtorch" | "torch" => Ok(Runtime::Libtorch),
            "ort" | "onnxruntime" => Ok(Runtime::OnnxRuntime),
            other => Err(Error::config(
                "runtime",
                format!("unknown runtime `{other}`; the runtimes are {}", Runtime::NAMES.join(", ")),
            )),
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Runtime::Libtorch => "libtorch",
            Runtime::OnnxRuntime => "onnxruntime",
        })
    }
}

/// Where tensors live and compute runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
                Some(i) => Ok(Device::Cuda(i)),
                None => Err(Error::config("device", format!("`{s}` is not a device; use cpu, cuda or cuda:N"))),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Device {
    /// Checks that the device exists in this build and on this machine.
    pub fn check(self) -> Result<()> {
        torch::device(self).map(|_| ())
    }

    /// Waits for queued work to finish (for timing).
    pub fn synchronize(self) {
        torch::synchronize(self)
    }
}

/// The number format of a training step's convolutions and matrix products. `Bf16` is mixed
/// precision as PyTorch's bf16 autocast does it: convolutions and linear layers compute in
/// bfloat16 (their inputs and a bf16 copy of the weights cast on the way in), BatchNorm takes
/// the bf16 activations with fp32 affine weights and fp32 running statistics, the loss is
/// computed in fp32, and the master weights, gradients and optimizer state stay fp32. One
/// difference: LayerNorm runs in fp32 here (autocast feeds it bf16). Only
/// training steps use it: evaluation, inference and the data-driven criteria run in fp32.
/// `Auto` is bf16 where the CPU has bf16 instructions ([`Precision::native_bf16`]), fp32
/// elsewhere; it is resolved once, when a run starts ([`Precision::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Auto,
}

impl Precision {
    pub const NAMES: &[&str] = &["fp32", "bf16", "auto"];

    /// Whether `device` computes bf16 natively: on CPU, the AVX512-BF16 (x86-64) or BF16
    /// (aarch64) instructions, detected at run time. CUDA devices answer false here (no portable
    /// check through the engine): ask for `bf16` explicitly on a GPU that has it.
    pub fn native_bf16(device: Device) -> bool {
        match device {
            Device::Cpu => cpu_has_bf16(),
            Device::Cuda(_) => false,
        }
    }

    /// The concrete precision (never `Auto`) for `device`.
    pub fn resolve(self, device: Device) -> Precision {
        match self {
            Precision::Auto if Precision::native_bf16(device) => Precision::Bf16,
            Precision::Auto => Precision::Fp32,
            p => p,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(target_arch = "aarch64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_aarch64_feature_detected!("bf16")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has_bf16() -> bool {
    false
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            other => Err(Error::config(
                "precision",
                format!("unknown precision `{other}`; the precisions are {}", Precision::NAMES.join(", ")),
            )),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        })
    }
}

/// Sets the training backend's CPU threads (intra-op parallelism), capped at the machine's CPU
/// count (more only oversubscribes the cores, and an absurd count makes libgomp abort): a capped
/// request is reported once.
pub fn set_threads(n: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let n = if n > cpus {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED
            .call_once(|| eprintln!("warning: {n} threads asked for, but this machine has {cpus} CPUs; using {cpus}"));
        cpus
    } else {
        n.max(1)
    };
    torch::set_threads(n);
}

/// The training backend's CPU threads.
pub fn threads() -> usize {
    torch::threads()
}

/// Seeds the training backend's own generator (dropout masks).
pub fn manual_seed(seed: u64) {
    torch::manual_seed(seed)
}

/// SGD as PyTorch's `torch.optim.SGD` (no dampening): d = g + wd * p; b = m * b + d (b = d at the
/// first step); p -= lr * (nesterov ? d + m * b : b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

/// Per-channel sums over a batch of one node's output (see [`Network::channel_statistics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    pub taylor: Vec<f64>,
    pub mean: Vec<f64>,
    pub zeros: Vec<f64>,
    /// Images summed over.
    pub count: usize,
}

/// Loss and correct predictions of one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// What [`Train::distill_step`] trains towards: a teacher's outputs on the same batch, for
/// local data without labels (knowledge distillation, Hinton et al. 2015).
///
/// The loss is `alpha * T^2 * KL(softmax(t / T) || softmax(s / T))` over `classes` (the teacher's
/// logits `t` and the student's `s` both restricted to those columns, so the classes the device
/// does not see take no probability), mean over the batch as PyTorch's `kl_div(...,
/// reduction="batchmean")`, plus `(1 - alpha) *` the cross-entropy of the student's full logits
/// against `labels` (pseudo-labels) where given. A label [`Distill::IGNORE`] leaves its image out
/// of the cross-entropy (PyTorch's `ignore_index`: a pseudo-label the teacher is not confident
/// about); where every label of the batch is ignored, the loss is the distillation term alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distill<'a> {
    /// The teacher's logits, batch x outputs, row-major.
    pub teacher_logits: &'a [f32],
    /// Output indices the distillation is restricted to; empty: every output.
    pub classes: &'a [i64],
    /// The softmax temperature T (> 0).
    pub temperature: f64,
    /// Weight of the distillation term, in [0, 1].
    pub alpha: f64,
    /// Hard targets for the `1 - alpha` cross-entropy term (one per image), if any.
    pub labels: Option<&'a [i64]>,
}

impl Distill<'_> {
    /// The label of an image left out of the cross-entropy term (PyTorch's default `ignore_index`).
    pub const IGNORE: i64 = -100;

    /// Checks what a caller can get wrong, for a batch of `n` images and a network of `outputs`.
    pub fn check(&self, n: usize, outputs: usize) -> Result<()> {
        let bad = |m: String| Err(Error::config("distillation", m));
        if self.teacher_logits.len() != n * outputs {
            return bad(format!(
                "{} teacher logits for {n} images of {outputs} outputs (want {})",
                self.teacher_logits.len(),
                n * outputs
            ));
        }
        if let Some(i) = self.teacher_logits.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "teacher logit {i} (image {}, output {}) is not finite",
                i / outputs.max(1),
                i % outputs.max(1)
            ));
        }
        if let Some(c) = self.classes.iter().find(|&&c| c < 0 || c as usize >= outputs) {
            return bad(format!("class {c} is not one of the network's {outputs} outputs"));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!("the temperature must be positive, not {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad(format!("alpha must be in [0, 1], not {}", self.alpha));
        }
        match self.labels {
            Some(l) if l.len() != n => bad(format!("{} labels for {n} images", l.len())),
            Some(l) if l.iter().any(|&c| c != Self::IGNORE && (c < 0 || c as usize >= outputs)) => {
                bad(format!("a label is not one of the network's {outputs} outputs (nor {}, ignored)", Self::IGNORE))
            }
            None if self.alpha < 1.0 => {
                bad(format!("alpha {} leaves a cross-entropy term but no labels are given", self.alpha))
            }
            _ => Ok(()),
        }
    }
}

/// Memory layout of 4-D tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// PyTorch's default NCHW order.
    Contiguous,
    /// NHWC order (PyTorch's `channels_last`): 20-25% faster training steps on CPU.
    ChannelsLast,
}

impl Layout {
    /// The faster layout for a device.
    pub fn default_for(device: Device) -> Layout {
        match device {
            Device::Cpu => Layout::ChannelsLast,
            Device::Cuda(_) => Layout::Contiguous,
        }
    }
}

/// Inference on batches of images: what evaluation needs of a network, and the seam where a
/// deployed runtime (e.g. ONNX Runtime) sits beside libtorch.
pub trait Infer {
    /// Width of the network output (the number of classes).
    fn num_outputs(&self) -> Result<usize>;
    /// Logits for `n` images (`images` is n x C x H x W, row-major), in evaluation mode.
    fn predict(&self, images: &[f32], n: usize) -> Result<Vec<f32>>;
}

/// A network being trained: what the training loop, the data-driven criteria and checkpoints
/// need of a backend. Everything in and out is host data.
pub trait Train: Infer {
    /// Sets the precision of the training steps from now on (`Auto` is resolved for the
    /// network's device). The weights and the optimizer state are fp32 either way.
    fn set_precision(&mut self, p: Precision);
    /// The precision of the training steps (never `Auto`).
    fn precision(&self) -> Precision;
    /// Replaces the optimizer (and drops its momentum), as a fresh `torch.optim.SGD`.
    fn set_optimizer(&mut self, cfg: SgdConfig);
    /// One training step on a batch: forward in training mode, cross-entropy, backward, and an
    /// SGD update with learning rate `lr` (none if the loss is not finite).
    fn train_step(&mut self, images: &[f32], labels: &[i64], lr: f64) -> Result<StepStats>;
    /// One training step towards a teacher's outputs ([`Distill`]): forward in training mode,
    /// the distillation loss, backward, SGD update (none if the loss is not finite). `correct`
    /// counts the images whose top class among `classes` is the teacher's.
    fn distill_step(&mut self, images: &[f32], target: &Distill<'_>, lr: f64) -> Result<StepStats>;
    /// A training step for timing a piece of a network alone: forward in training mode, the
    /// mean of the output as the loss, backward to the weights and to the input (as a layer
    /// inside a network computes both), and the SGD update with learning rate `lr`.
    fn surrogate_step(&mut self, images: &[f32], n: usize, lr: f64) -> Result<()>;
    /// Per-channel statistics of the outputs of `nodes` on one batch, in inference mode, with
    /// gradients of the cross-entropy loss; nothing is updated.
    fn channel_statistics(&self, images: &[f32], labels: &[i64], nodes: &[usize]) -> Result<Vec<ChannelStats>>;
    /// The first parameter or buffer (by key) holding a NaN or an infinity, if any.
    fn first_non_finite_parameter(&self) -> Result<Option<String>>;
    /// The current weights and buffers.
    fn weights(&self) -> Result<Weights>;
    /// The current model (graph and weights).
    fn model(&self) -> Result<Model>;
    /// Gradients of the last training step, by parameter key.
    fn gradients(&self) -> Result<Weights>;
    /// The optimizer's momentum buffers, by parameter key (empty before the first step).
    fn optimizer_state(&self) -> Result<Weights>;
    /// Restores momentum buffers saved by [`Train::optimizer_state`].
    fn load_optimizer_state(&mut self, state: &Weights) -> Result<()>;
    /// Writes a NaN into the first floating-point parameter, as a numerical fault would: for the
    /// tests of divergence handling.
    fn corrupt_for_test(&mut self) -> Result<()>;
}

/// A network to train (or to score channels with gradients) on `device`: libtorch's.
pub fn trainer(model: &Model, device: Device) -> Result<Box<dyn Train>> {
    Ok(Box::new(Network::new(model, device)?))
}

/// A network to run inference with on `device`: libtorch's, with BatchNorm folded into the
/// convolutions ([`Network::for_inference`]).
pub fn infer(model: &Model, device: Device) -> Result<Box<dyn Infer>> {
    Ok(Box::new(Network::for_inference(model, device)?))
}

/// A network to run inference with in `runtime` on `device`: libtorch's, or ONNX Runtime's (its
/// CPU work on as many threads as the engine is set to use).
pub fn infer_with(model: &Model, device: Device, runtime: Runtime) -> Result<Box<dyn Infer>> {
    match runtime {
        Runtime::Libtorch => infer(model, device),
        Runtime::OnnxRuntime => Ok(Box::new(OrtNetwork::new(model, device, threads())?)),
    }
}
