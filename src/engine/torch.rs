//! libtorch (through tch): the training backend, and the only code that touches tch. Builds a
//! network from an IR [`Model`], runs forward and backward passes and SGD steps on a device chosen
//! at run time.

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use super::{ChannelStats, Device, Infer, Layout, Precision, SgdConfig, StepStats, Train};
use crate::error::{Error, Result};
use crate::ir::{DType, Graph, HostTensor, Model, Op, TensorData, TensorKind, Weights};

/// The libtorch device for `d`, after checking it exists in this build and on this machine.
pub(super) fn device(d: Device) -> Result<tch::Device> {
    match d {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(i) => {
            let n = tch::Cuda::device_count();
            if !tch::Cuda::is_available() || n <= 0 {
                Err(Error::Engine(format!(
                    "device {d} requested, but CUDA is not available: this libtorch has no CUDA \
                     support or no GPU is visible. Point LIBTORCH at a CUDA build of libtorch 2.13 \
                     and rebuild, or use --device cpu"
                )))
            } else if i as i64 >= n {
                Err(Error::Engine(format!("device {d} requested, but only {n} CUDA device(s) are visible")))
            } else {
                Ok(tch::Device::Cuda(i))
            }
        }
    }
}

pub(super) fn synchronize(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

pub(super) fn set_threads(n: usize) {
    tch::set_num_threads(n as i32);
}

pub(super) fn threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

pub(super) fn manual_seed(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// A network on a device, ready to run and train.
pub struct Network {
    graph: Graph,
    inputs: Vec<Vec<usize>>,
    last_use: Vec<usize>,
    /// ReLU nodes that may overwrite their input (see [`relu_in_place`]).
    relu_in_place: Vec<bool>,
    output: usize,
    device: Device,
    tdev: tch::Device,
    layout: Layout,
    /// The precision of training steps (never `Auto`).
    precision: Precision,
    /// All tensors by state_dict key; parameters require gradients.
    tensors: BTreeMap<String, Tensor>,
    params: Vec<String>,
    sgd: Option<(SgdConfig, BTreeMap<String, Tensor>)>,
    /// Gradients of the last training step, in `params` order.
    grads: Vec<Tensor>,
    /// The index tensor of each channel permutation, by node index.
    orders: BTreeMap<usize, Tensor>,
}

fn tch_err(e: tch::TchError) -> Error {
    Error::Engine(e.to_string())
}

fn to_tch(t: &HostTensor, dev: tch::Device) -> Tensor {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let x = match &t.data {
        TensorData::F32(v) => Tensor::from_slice(v),
        TensorData::I64(v) => Tensor::from_slice(v),
    };
    x.reshape(&shape).to_device(dev)
}

/// Which ReLU nodes may run in place, overwriting their input: those whose input is read by
/// nothing else and comes from an op that owns a fresh output tensor and does not need that
/// output for its own backward pass (conv, BN, linear, add, concat, pools). This saves one
/// activation buffer per conv-BN-ReLU. Autograd checks tensor versions, so a wrong choice here
/// would fail loudly at backward, never silently.
fn relu_in_place(graph: &Graph, inputs: &[Vec<usize>], output: usize) -> Result<Vec<bool>> {
    let consumers = graph.consumers()?;
    Ok(graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let Op::ReLU = node.op else { return false };
            let j = inputs[i][0];
            j != output
                && consumers[j].len() == 1
                && inputs[i].len() == 1
                && matches!(
                    graph.nodes[j].op,
                    Op::Conv2d { .. }
                        | Op::BatchNorm2d { .. }
                        | Op::Linear { .. }
                        | Op::Add
                        | Op::Concat
                        | Op::MaxPool2d { .. }
                        | Op::AvgPool2d { .. }
                        | Op::GlobalAvgPool
                )
        })
        .collect())
}

/// The same values in channels-last (NHWC) memory order, still indexed as NCHW: libtorch's
/// oneDNN convolutions run markedly faster on CPU with this layout.
fn channels_last(t: Tensor) -> Tensor {
    if t.dim() == 4 { t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) } else { t }
}

/// `t` in bfloat16 where `low` is set (a cast autograd differentiates, so gradients reach the
/// fp32 master weights as fp32); `t` itself otherwise. Keeps the memory format.
fn low(t: &Tensor, low: bool) -> Tensor {
    if low && t.kind() == Kind::Float { t.to_kind(Kind::BFloat16) } else { t.shallow_clone() }
}

/// `t` in fp32 (a no-op handle when it is already).
fn full(t: &Tensor) -> Tensor {
    if t.kind() == Kind::BFloat16 { t.to_kind(Kind::Float) } else { t.shallow_clone() }
}

fn to_host(t: &Tensor) -> Result<HostTensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let t = t.detach().to_device(tch::Device::Cpu).contiguous().flatten(0, -1);
    Ok(match t.kind() {
        Kind::Int64 => HostTensor::i64(shape, Vec::<i64>::try_from(&t).map_err(tch_err)?),
        _ => HostTensor::f32(shape, Vec::<f32>::try_from(&t.to_kind(Kind::Float)).map_err(tch_err)?),
    })
}

impl Network {
    /// Builds the network on `device` in that device's faster layout.
    pub fn new(model: &Model, device: Device) -> Result<Self> {
        Self::with_layout(model, device, Layout::default_for(device))
    }

    /// A network for inference only: BatchNorm folded into the convolutions before it
    /// ([`crate::ir::fold`]), no parameter tracked for gradients, in the device's faster layout.
    pub fn for_inference(model: &Model, device: Device) -> Result<Self> {
        let folded = crate::ir::fold::fold_batch_norms(model)?;
        Self::build(&folded, device, Layout::default_for(device), false)
    }

    pub fn with_layout(model: &Model, device: Device, layout: Layout) -> Result<Self> {
        Self::build(model, device, layout, true)
    }

    fn build(model: &Model, device: Device, layout: Layout, trainable: bool) -> Result<Self> {
        let tdev = self::device(device)?;
        model.validate()?;
        let graph = model.graph.clone();
        let inputs = graph.input_indices()?;
        let output = graph.output_index()?;
        let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
        for (i, ins) in inputs.iter().enumerate() {
            for &j in ins {
                last_use[j] = last_use[j].max(i);
            }
        }
        last_use[output] = usize::MAX;
        let relu_in_place = relu_in_place(&graph, &inputs, output)?;
        let mut tensors = BTreeMap::new();
        let mut params = Vec::new();
        for (key, spec) in graph.tensor_specs() {
            let mut t = to_tch(model.weights.get(&key)?, tdev);
            if layout == Layout::ChannelsLast {
                t = channels_last(t);
            }
            let t = if spec.kind == TensorKind::Parameter {
                params.push(key.clone());
                t.set_requires_grad(trainable)
            } else {
                t
            };
            tensors.insert(key, t);
        }
        let mut orders = BTreeMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            if let Op::ChannelPermute { order } = &node.op {
                let idx: Vec<i64> = order.iter().map(|&k| k as i64).collect();
                orders.insert(i, Tensor::from_slice(&idx).to_device(tdev));
            }
        }
        Ok(Network {
            orders,
            graph,
            inputs,
            last_use,
            relu_in_place,
            output,
            device,
            tdev,
            layout,
            precision: Precision::Fp32,
            tensors,
            params,
            sgd: None,
            grads: Vec::new(),
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    fn t(&self, node: &str, suffix: &str) -> &Tensor {
        &self.tensors[&format!("{node}.{suffix}")]
    }

    /// Runs the graph; also returns the outputs of the nodes in `keep` (which are then neither
    /// freed early nor overwritten in place). In training mode at bf16 precision, convolutions
    /// and linear layers compute in bf16 (see [`Precision`]); the output comes back in fp32.
    fn forward_t(&self, x: &Tensor, train: bool, keep: &[usize]) -> Result<(Tensor, Vec<Tensor>)> {
        let lp = train && self.precision == Precision::Bf16;
        let n = self.graph.nodes.len();
        let mut vals: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        let mut kept: Vec<Option<Tensor>> = (0..keep.len()).map(|_| None).collect();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let arg = |k: usize| vals[self.inputs[i][k]].as_ref().expect("inputs computed before use");
            let name = node.name.as_str();
            let y = match &node.op {
                Op::Input { .. } => x.shallow_clone(),
                &Op::Conv2d { stride, padding, dilation, groups, bias, .. } => {
                    let b = bias.then(|| low(self.t(name, "bias"), lp));
                    low(arg(0), lp)
                        .f_conv2d(
                            &low(self.t(name, "weight"), lp),
                            b.as_ref(),
                            [stride[0] as i64, stride[1] as i64],
                            [padding[0] as i64, padding[1] as i64],
                            [dilation[0] as i64, dilation[1] as i64],
                            groups as i64,
                        )
                        .map_err(tch_err)?
                }
                &Op::BatchNorm2d { eps, momentum, .. } => {
                    if train {
                        let nbt = self.t(name, "num_batches_tracked");
                        tch::no_grad(|| {
                            let _ = nbt.shallow_clone().g_add_scalar_(1);
                        });
                    }
                    arg(0)
                        .f_batch_norm(
                            Some(self.t(name, "weight")),
                            Some(self.t(name, "bias")),
                            Some(self.t(name, "running_mean")),
                            Some(self.t(name, "running_var")),
                            train,
                            momentum,
                            eps,
                            true,
                        )
                        .map_err(tch_err)?
                }
                Op::ReLU if self.relu_in_place[i] && !keep.contains(&self.inputs[i][0]) => {
                    let mut v = vals[self.inputs[i][0]].take().expect("input computed before use");
                    v.relu_()
                }
                Op::ReLU => arg(0).relu(),
                Op::ReLU6 => arg(0).clamp(0.0, 6.0),
                Op::Sigmoid => arg(0).sigmoid(),
                Op::HardSwish => arg(0).hardswish(),
                Op::HardSigmoid => arg(0).hardsigmoid(),
                &Op::MaxPool2d { kernel_size, stride, padding, ceil_mode } => arg(0)
                    .f_max_pool2d(
                        [kernel_size[0] as i64, kernel_size[1] as i64],
                        [stride[0] as i64, stride[1] as i64],
                        [padding[0] as i64, padding[1] as i64],
                        [1, 1],
                        ceil_mode,
                    )
                    .map_err(tch_err)?,
                &Op::AvgPool2d { kernel_size, stride, padding, ceil_mode, count_include_pad } => arg(0)
                    .f_avg_pool2d(
                        [kernel_size[0] as i64, kernel_size[1] as i64],
                        [stride[0] as i64, stride[1] as i64],
                        [padding[0] as i64, padding[1] as i64],
                        ceil_mode,
                        count_include_pad,
                        None::<i64>,
                    )
                    .map_err(tch_err)?,
                Op::GlobalAvgPool => arg(0).adaptive_avg_pool2d([1, 1]),
                Op::Add => {
                    // Type promotion makes a bf16 + fp32 sum fp32; the sum runs on in that type.
                    let mut s = arg(0) + arg(1);
                    for k in 2..self.inputs[i].len() {
                        s = &s + arg(k);
                    }
                    s
                }
                Op::Mul => arg(0) * arg(1),
                Op::Concat => {
                    let parts: Vec<&Tensor> = (0..self.inputs[i].len()).map(arg).collect();
                    if parts.iter().all(|p| p.kind() == parts[0].kind()) {
                        Tensor::f_cat(&parts, 1).map_err(tch_err)?
                    } else {
                        // Mixed bf16 and fp32 parts (bf16 training): joined in fp32.
                        let parts: Vec<Tensor> = parts.into_iter().map(full).collect();
                        Tensor::f_cat(&parts, 1).map_err(tch_err)?
                    }
                }
                Op::Flatten => arg(0).flatten(1, -1),
                &Op::Linear { bias, .. } => {
                    let b = bias.then(|| low(self.t(name, "bias"), lp));
                    let w = low(self.t(name, "weight"), lp);
                    let x = low(arg(0), lp);
                    if x.dim() == 4 {
                        // Over the channels at every position: on the channels-last view, as torch does.
                        x.permute([0, 2, 3, 1]).f_linear(&w, b.as_ref()).map_err(tch_err)?.permute([0, 3, 1, 2])
                    } else {
                        x.f_linear(&w, b.as_ref()).map_err(tch_err)?
                    }
                }
                // LayerNorm in fp32 (autocast would give it bf16 input): its statistics are the most
                // sensitive to rounding; the next conv or linear layer casts back to bf16.
                &Op::LayerNorm2d { num_features, eps } => full(arg(0))
                    .permute([0, 2, 3, 1])
                    .f_layer_norm(
                        [num_features as i64],
                        Some(self.t(name, "weight")),
                        Some(self.t(name, "bias")),
                        eps,
                        true,
                    )
                    .map_err(tch_err)?
                    .permute([0, 3, 1, 2]),
                Op::GELU => arg(0).gelu("none"),
                Op::LayerScale { .. } => arg(0) * self.t(name, "layer_scale"),
                &Op::Dropout { p } => arg(0).dropout(p, train),
                Op::Identity => arg(0).shallow_clone(),
                Op::ChannelPermute { .. } => {
                    let order = self.orders.get(&i).expect("an index tensor for every permutation");
                    arg(0).f_index_select(1, order).map_err(tch_err)?
                }
                &Op::ChannelSlice { start, end } => arg(0).narrow(1, start as i64, (end - start) as i64),
            };
            if let Some(k) = keep.iter().position(|&k| k == i) {
                kept[k] = Some(y.shallow_clone());
            }
            vals[i] = Some(y);
            for &j in &self.inputs[i] {
                if self.last_use[j] == i {
                    vals[j] = None;
                }
            }
        }
        let kept = kept.into_iter().map(|t| t.expect("kept nodes computed")).collect();
        Ok((full(&vals[self.output].take().expect("output computed")), kept))
    }

    /// SGD with momentum and weight decay as `torch.optim.SGD`, in place, from fresh gradients.
    fn sgd_update(&mut self, params: &[Tensor], grads: &[Tensor], lr: f64) -> Result<()> {
        let (cfg, bufs) = self.sgd.as_mut().ok_or_else(|| Error::Engine("no optimizer set".into()))?;
        let cfg = *cfg;
        tch::no_grad(|| {
            for ((k, p), g) in self.params.iter().zip(params).zip(grads) {
                let mut d = if cfg.weight_decay != 0.0 { g + p * cfg.weight_decay } else { g.shallow_clone() };
                if cfg.momentum != 0.0 {
                    let b = match bufs.get_mut(k) {
                        Some(b) => {
                            let _ = b.g_mul_scalar_(cfg.momentum).g_add_(&d);
                            b.shallow_clone()
                        }
                        None => {
                            let b = d.detach().copy();
                            bufs.insert(k.clone(), b.shallow_clone());
                            b
                        }
                    };
                    d = if cfg.nesterov { d + &b * cfg.momentum } else { b };
                }
                let _ = p.shallow_clone().g_add_(&(d * -lr));
            }
        });
        Ok(())
    }

    fn batch_tensor(&self, images: &[f32], n: usize) -> Result<Tensor> {
        let shape = self.graph.input_shape()?;
        let per: usize = shape.iter().product();
        if images.len() != n * per {
            return Err(Error::Engine(format!("batch holds {} values, expected {n} x {shape:?}", images.len())));
        }
        let dims: Vec<i64> = std::iter::once(n as i64).chain(shape.iter().map(|&d| d as i64)).collect();
        let x = Tensor::from_slice(images).reshape(&dims).to_device(self.tdev);
        Ok(if self.layout == Layout::ChannelsLast { channels_last(x) } else { x })
    }
}

impl Infer for Network {
    /// Width of the network output (the number of classes).
    fn num_outputs(&self) -> Result<usize> {
        let shapes = self.graph.infer_shapes()?;
        match shapes[self.output].as_slice() {
            &[n] => Ok(n),
            s => Err(Error::node(&self.graph.output, format!("the output must be flat logits, got shape {s:?}"))),
        }
    }

    /// Logits for `n` images (`images` is n x C x H x W, row-major), in evaluation mode.
    fn predict(&self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        let x = self.batch_tensor(images, n)?;
        let (y, _) = tch::no_grad(|| self.forward_t(&x, false, &[]))?;
        Vec::<f32>::try_from(&y.to_device(tch::Device::Cpu).contiguous().flatten(0, -1)).map_err(tch_err)
    }
}

impl Train for Network {
    fn set_precision(&mut self, p: Precision) {
        self.precision = p.resolve(self.device);
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    /// Per-channel statistics of the outputs of `nodes` on one batch, in inference mode (BN
    /// running statistics), with gradients of the cross-entropy loss: for each node, per
    /// channel, summed over the batch: |mean over positions of activation x gradient| (first-order
    /// Taylor), the mean activation, and the fraction of zero activations (APoZ).
    /// Nothing is updated: weights, BN statistics and the optimizer stay as they were.
    fn channel_statistics(&self, images: &[f32], labels: &[i64], nodes: &[usize]) -> Result<Vec<ChannelStats>> {
        let n = labels.len();
        let x = self.batch_tensor(images, n)?;
        let y = Tensor::from_slice(labels).to_device(self.tdev);
        let (logits, acts) = self.forward_t(&x, false, nodes)?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0).map_err(tch_err)?;
        let grads = Tensor::f_run_backward(&[&loss], &acts, false, false).map_err(tch_err)?;
        let host = |t: Tensor| -> Result<Vec<f64>> {
            Vec::<f64>::try_from(&t.to_kind(Kind::Double).to_device(tch::Device::Cpu).contiguous()).map_err(tch_err)
        };
        tch::no_grad(|| {
            acts.iter()
                .zip(&grads)
                .map(|(a, g)| {
                    // Activations are [N, C, H, W] or [N, F]: reduce over everything but N and C.
                    let a = a.detach();
                    let a3 = a.reshape([n as i64, a.size()[1], -1]);
                    let g3 = g.reshape([n as i64, a.size()[1], -1]);
                    let taylor =
                        (&a3 * &g3).mean_dim(2, false, Kind::Float).abs().sum_dim_intlist(0, false, Kind::Float);
                    let mean = a3.mean_dim(2, false, Kind::Float).sum_dim_intlist(0, false, Kind::Float);
                    let zeros = a3.eq(0.0).to_kind(Kind::Float).mean_dim(2, false, Kind::Float).sum_dim_intlist(
                        0,
                        false,
                        Kind::Float,
                    );
                    Ok(ChannelStats { taylor: host(taylor)?, mean: host(mean)?, zeros: host(zeros)?, count: n })
                })
                .collect()
        })
    }

    /// Replaces the optimizer (and drops its momentum), as a fresh `torch.optim.SGD`.
    fn set_optimizer(&mut self, cfg: SgdConfig) {
        self.sgd = Some((cfg, BTreeMap::new()));
    }

    /// One training step on a batch: zero gradients, forward in training mode, cross-entropy,
    /// backward, SGD update with learning rate `lr`.
    fn train_step(&mut self, images: &[f32], labels: &[i64], lr: f64) -> Result<StepStats> {
        let n = labels.len();
        let x = self.batch_tensor(images, n)?;
        let y = Tensor::from_slice(labels).to_device(self.tdev);
        let (logits, _) = self.forward_t(&x, true, &[])?;
        let loss = logits.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0).map_err(tch_err)?;
        // Gradients as fresh tensors (torch.autograd.grad), nothing accumulated into `.grad`.
        // Shallow handles on the weights (the update writes through them in place).
        let params: Vec<Tensor> = self.params.iter().map(|k| self.tensors[k].shallow_clone()).collect();
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = Tensor::f_run_backward(&[&loss], &refs, false, false).map_err(tch_err)?;
        let loss_v = loss.double_value(&[]);
        let correct = logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]) as usize;
        if !loss_v.is_finite() {
            // No update: the caller sees the loss and decides (the weights stay as they were).
            self.grads = grads;
            return Ok(StepStats { loss: loss_v, correct, count: n });
        }
        self.sgd_update(&params, &grads, lr)?;
        self.grads = grads;
        Ok(StepStats { loss: loss_v, correct, count: n })
    }

    fn distill_step(&mut self, images: &[f32], target: &super::Distill<'_>, lr: f64) -> Result<StepStats> {
        let outputs = self.num_outputs()?;
        let per: usize = self.graph.input_shape()?.iter().product();
        let n = images.len() / per.max(1);
        target.check(n, outputs)?;
        let x = self.batch_tensor(images, n)?;
        let (logits, _) = self.forward_t(&x, true, &[])?;
        let logits = logits.f_to_kind(Kind::Float).map_err(tch_err)?;
        let teacher = Tensor::from_slice(target.teacher_logits).view([n as i64, outputs as i64]).to_device(self.tdev);
        let (s, t) = if target.classes.is_empty() {
            (logits.shallow_clone(), teacher)
        } else {
            let idx = Tensor::from_slice(target.classes).to_device(self.tdev);
            (logits.f_index_select(1, &idx).map_err(tch_err)?, teacher.f_index_select(1, &idx).map_err(tch_err)?)
        };
        let temp = target.temperature;
        let log_ps = (&s / temp).f_log_softmax(1, Kind::Float).map_err(tch_err)?;
        let log_pt = (&t / temp).f_log_softmax(1, Kind::Float).map_err(tch_err)?;
        let kd = (log_pt.exp() * (&log_pt - &log_ps)).sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float)
            * (temp * temp);
        let loss = match target.labels {
            Some(labels) if target.alpha < 1.0 && labels.iter().any(|&l| l != super::Distill::IGNORE) => {
                let y = Tensor::from_slice(labels).to_device(self.tdev);
                let ce = logits
                    .f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, super::Distill::IGNORE, 0.0)
                    .map_err(tch_err)?;
                kd * target.alpha + ce * (1.0 - target.alpha)
            }
            _ => kd * target.alpha,
        };
        let params: Vec<Tensor> = self.params.iter().map(|k| self.tensors[k].shallow_clone()).collect();
        let refs: Vec<&Tensor> = params.iter().collect();
        let grads = Tensor::f_run_backward(&[&loss], &refs, false, false).map_err(tch_err)?;
        let loss_v = loss.double_value(&[]);
        let correct = s.argmax(1, false).eq_tensor(&t.argmax(1, false)).sum(Kind::Int64).int64_value(&[]) as usize;
        if loss_v.is_finite() {
            self.sgd_update(&params, &grads, lr)?;
        }
        self.grads = grads;
        Ok(StepStats { loss: loss_v, correct, count: n })
    }

    fn surrogate_step(&mut self, images: &[f32], n: usize, lr: f64) -> Result<()> {
        let x = self.batch_tensor(images, n)?.set_requires_grad(true);
        let (out, _) = self.forward_t(&x, true, &[])?;
        let loss = out.f_mean(Kind::Float).map_err(tch_err)?;
        let params: Vec<Tensor> = self.params.iter().map(|k| self.tensors[k].shallow_clone()).collect();
        let mut wrt: Vec<&Tensor> = params.iter().collect();
        wrt.push(&x);
        let mut grads = Tensor::f_run_backward(&[&loss], &wrt, false, false).map_err(tch_err)?;
        grads.pop();
        self.sgd_update(&params, &grads, lr)?;
        self.grads = grads;
        Ok(())
    }

    /// The first parameter or buffer (by key) holding a NaN or an infinity, if any: one pass over
    /// the weights on the device, read back as one small vector.
    fn first_non_finite_parameter(&self) -> Result<Option<String>> {
        let keys: Vec<&String> = self.tensors.keys().collect();
        let sums: Vec<Tensor> = tch::no_grad(|| {
            keys.iter().map(|k| self.tensors[*k].f_sum(Kind::Double)).collect::<Result<_, _>>().map_err(tch_err)
        })?;
        let finite = Tensor::f_stack(&sums, 0).and_then(|t| t.f_isfinite()).map_err(tch_err)?;
        let finite = Vec::<bool>::try_from(&finite.to_device(tch::Device::Cpu)).map_err(tch_err)?;
        Ok(finite.iter().position(|f| !f).map(|i| keys[i].clone()))
    }

    /// Writes a NaN into the first floating-point parameter, as a numerical fault would: used by
    /// the tests of divergence handling.
    fn corrupt_for_test(&mut self) -> Result<()> {
        let key = self.params.first().ok_or_else(|| Error::Engine("the network has no parameters".into()))?;
        tch::no_grad(|| {
            let mut first = self.tensors[key].shallow_clone();
            while first.dim() > 0 {
                first = first.f_get(0)?;
            }
            first.f_fill_(f64::NAN).map(|_| ())
        })
        .map_err(tch_err)
    }

    /// The current weights and buffers, copied to the host.
    fn weights(&self) -> Result<Weights> {
        let mut w = Weights::default();
        for (k, t) in &self.tensors {
            w.insert(k.clone(), to_host(t)?);
        }
        Ok(w)
    }

    fn model(&self) -> Result<Model> {
        Model::new(self.graph.clone(), self.weights()?)
    }

    /// Gradients of the last training step, by parameter key.
    fn gradients(&self) -> Result<Weights> {
        let mut w = Weights::default();
        for (k, g) in self.params.iter().zip(&self.grads) {
            w.insert(k.clone(), to_host(g)?);
        }
        Ok(w)
    }

    /// The optimizer's momentum buffers, by parameter key (empty before the first step).
    fn optimizer_state(&self) -> Result<Weights> {
        let mut w = Weights::default();
        if let Some((_, bufs)) = &self.sgd {
            for (k, b) in bufs {
                w.insert(k.clone(), to_host(b)?);
            }
        }
        Ok(w)
    }

    /// Restores momentum buffers saved by [`Train::optimizer_state`].
    fn load_optimizer_state(&mut self, state: &Weights) -> Result<()> {
        let (_, bufs) = self.sgd.as_mut().ok_or_else(|| Error::Engine("no optimizer set".into()))?;
        bufs.clear();
        for (k, t) in &state.tensors {
            let p = self.tensors.get(k).ok_or_else(|| Error::tensor(k, "momentum for an unknown parameter"))?;
            let dims: Vec<usize> = p.size().iter().map(|&d| d as usize).collect();
            if dims != t.shape || t.dtype() != DType::F32 {
                return Err(Error::tensor(k, format!("momentum shape {:?}, parameter shape {dims:?}", t.shape)));
            }
            bufs.insert(k.clone(), to_tch(t, self.tdev));
        }
        Ok(())
    }
}
