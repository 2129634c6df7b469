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
    /// ReLU and ReLU6 nodes that may overwrite their input (see [`relu_in_place`]).
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
    /// The convolutions computed as one matrix product in training passes (see [`DenseConv`]),
    /// by node index.
    dense: BTreeMap<usize, DenseConv>,
}

/// A convolution over a map with at most half as many positions as its kernel has taps (AlexNet's
/// 3x3 convolutions on 2x2 maps), computed in training passes as one matrix product of the flattened input with the
/// convolution's full linear map: a matrix of (output channel, output position) x (input channel,
/// input position) whose entries are the kernel taps that join each pair of positions (zero where
/// none does). It does fewer multiply-adds than the convolution (none on padding), and libtorch's
/// matrix products are far more efficient there than oneDNN's convolution backward on tiny maps:
/// forward and backward of a 3x3 convolution 384 -> 256 on 2x2 maps at batch 128 in bf16, 18 ms
/// against 9 ms; the CIFAR AlexNet's whole bf16 training step about 1.4x faster, its fp32 step about
/// 1.07x. At 4x4 maps with 5x5 kernels (16 positions, 25 taps) the convolution stayed faster. The
/// taps are gathered by a product with a fixed 0/1 matrix, which is exact and whose backward sums
/// the gradient of each tap over the position pairs it joins.
struct DenseConv {
    /// [kh * kw, positions out * positions in], 0/1: column (p, q) holds a 1 in the row of the tap
    /// joining output position p to input position q.
    taps: Tensor,
    /// `taps` in bf16, for bf16 training steps.
    taps_bf16: Tensor,
    out_positions: i64,
    in_positions: i64,
    out_hw: [i64; 2],
}

/// The largest dense matrix (elements) a convolution is converted to.
const DENSE_CONV_MAX_ELEMENTS: usize = 1 << 24;

impl DenseConv {
    /// The dense form of a convolution `op` with input shape `[C, H, W]`, where it pays.
    fn plan(op: &Op, input: &[usize], dev: tch::Device) -> Option<DenseConv> {
        let &Op::Conv2d { out_channels, kernel_size: k, stride, padding, dilation, groups, .. } = op else {
            return None;
        };
        let [c, h, w] = input[..] else { return None };
        if groups != 1 || 2 * h * w > k[0] * k[1] {
            return None;
        }
        let out = |n: usize, i: usize| {
            (n + 2 * padding[i]).checked_sub(dilation[i] * (k[i] - 1) + 1).map(|d| d / stride[i] + 1)
        };
        let (oh, ow) = (out(h, 0)?, out(w, 1)?);
        let elements = [out_channels, oh, ow, c, h, w].iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if elements.is_none_or(|e| e > DENSE_CONV_MAX_ELEMENTS) {
            return None;
        }
        let (l, q) = (oh * ow, h * w);
        let mut taps = vec![0f32; k[0] * k[1] * l * q];
        for (p, (pi, pj)) in (0..oh).flat_map(|i| (0..ow).map(move |j| (i, j))).enumerate() {
            for (qq, (qi, qj)) in (0..h).flat_map(|i| (0..w).map(move |j| (i, j))).enumerate() {
                // Input row qi = pi * stride + ki * dilation - padding, for which ki?
                let tap = |q: usize, p: usize, i: usize| {
                    let d = (q + padding[i]).checked_sub(p * stride[i])?;
                    (d % dilation[i] == 0 && d / dilation[i] < k[i]).then_some(d / dilation[i])
                };
                if let (Some(ki), Some(kj)) = (tap(qi, pi, 0), tap(qj, pj, 1)) {
                    taps[(ki * k[1] + kj) * l * q + p * q + qq] = 1.0;
                }
            }
        }
        let taps = Tensor::from_slice(&taps).reshape([(k[0] * k[1]) as i64, (l * q) as i64]).to_device(dev);
        Some(DenseConv {
            taps_bf16: taps.to_kind(Kind::BFloat16),
            taps,
            out_positions: l as i64,
            in_positions: q as i64,
            out_hw: [oh as i64, ow as i64],
        })
    }

    /// The convolution of `x` ([N, C, H, W]) with `weight` ([O, C, kh, kw]) and `bias`, as
    /// [N, O, OH, OW] in the layout `layout`.
    fn forward(&self, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, layout: Layout) -> Result<Tensor> {
        let (l, q) = (self.out_positions, self.in_positions);
        let ws = weight.size();
        let (o, c) = (ws[0], ws[1]);
        let taps = if weight.kind() == Kind::BFloat16 { &self.taps_bf16 } else { &self.taps };
        let dense = weight
            .reshape([o * c, ws[2] * ws[3]])
            .f_matmul(taps)
            .map_err(tch_err)?
            .reshape([o, c, l, q])
            .permute([0, 2, 1, 3])
            .reshape([o * l, c * q]);
        let b = bias.map(|b| b.unsqueeze(1).expand([o, l], false).reshape([o * l]));
        let n = x.size()[0];
        let y = x.reshape([n, c * q]).f_linear(&dense, b.as_ref()).map_err(tch_err)?;
        let y = y.reshape([n, o, self.out_hw[0], self.out_hw[1]]);
        Ok(if layout == Layout::ChannelsLast { channels_last(y) } else { y })
    }
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

/// Which ReLU and ReLU6 nodes may run in place, overwriting their input: those whose input is read
/// by nothing else and comes from an op that owns a fresh output tensor and does not need that
/// output for its own backward pass (conv, BN, linear, add, concat, pools). This saves one
/// activation buffer per conv-BN-ReLU (ReLU6's in-place form is `hardtanh_`, whose backward reads
/// its result, as ReLU's does). Autograd checks tensor versions, so a wrong choice here would fail
/// loudly at backward, never silently.
fn relu_in_place(graph: &Graph, inputs: &[Vec<usize>], output: usize) -> Result<Vec<bool>> {
    let consumers = graph.consumers()?;
    Ok(graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            if !matches!(node.op, Op::ReLU | Op::ReLU6) {
                return false;
            }
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

/// `t` itself (no copy), but as a chain of views whose backward hands the gradient on as a dense
/// tensor: a concatenation's backward passes each part a strided slice of its gradient, and
/// libtorch's BatchNorm backward takes a generic path on a strided gradient that is about 8x slower
/// (SqueezeNet's fire modules concatenate two BatchNorm outputs: 170 ms against 20 ms for one pair at
/// 128x128x16x16, bf16). The views are the tensor's memory order flattened and unflattened again;
/// the backward of the unflattening reshapes the strided gradient, which copies it densely once
/// (a copy a convolution's backward would make anyway). Tensors that are not dense in some
/// dimension order pass unchanged.
fn dense_backward(t: &Tensor) -> Tensor {
    let sizes = t.size();
    let strides = t.stride();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    // The memory order: dimensions by decreasing stride (ties kept in index order).
    order.sort_by_key(|&d| std::cmp::Reverse(strides[d]));
    let mut expected = 1i64;
    for &d in order.iter().rev() {
        if sizes[d] != 1 && strides[d] != expected {
            return t.shallow_clone();
        }
        expected *= sizes[d];
    }
    let perm: Vec<i64> = order.iter().map(|&d| d as i64).collect();
    let mut inverse = vec![0i64; perm.len()];
    for (k, &d) in order.iter().enumerate() {
        inverse[d] = k as i64;
    }
    let in_order = t.permute(&perm);
    in_order.reshape([-1]).view(in_order.size().as_slice()).permute(&inverse)
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
        // Dense convolutions on the CPU, where they were measured to pay.
        let mut dense = BTreeMap::new();
        if device == Device::Cpu {
            let shapes = graph.infer_shapes()?;
            for (i, node) in graph.nodes.iter().enumerate() {
                if let Some(d) = inputs[i].first().and_then(|&j| DenseConv::plan(&node.op, &shapes[j], tdev)) {
                    dense.insert(i, d);
                }
            }
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
            dense,
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
                // Training only: the dense matrix is rebuilt from the weights at every pass, which a
                // training step's backward repays and a small inference batch does not.
                &Op::Conv2d { bias, .. } if train && self.dense.contains_key(&i) => {
                    let b = bias.then(|| low(self.t(name, "bias"), lp));
                    self.dense[&i].forward(
                        &low(arg(0), lp),
                        &low(self.t(name, "weight"), lp),
                        b.as_ref(),
                        self.layout,
                    )?
                }
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
                Op::ReLU | Op::ReLU6 if self.relu_in_place[i] && !keep.contains(&self.inputs[i][0]) => {
                    let mut v = vals[self.inputs[i][0]].take().expect("input computed before use");
                    if node.op == Op::ReLU { v.relu_() } else { v.relu6_() }
                }
                Op::ReLU => arg(0).relu(),
                // hardtanh(0, 6), as torch.nn.ReLU6: no gradient at the bounds themselves.
                Op::ReLU6 => arg(0).relu6(),
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
                    // In training, each part through `dense_backward`: its gradient comes back dense.
                    let part = |k| if train { dense_backward(arg(k)) } else { arg(k).shallow_clone() };
                    let parts: Vec<Tensor> = (0..self.inputs[i].len()).map(part).collect();
                    if parts.iter().all(|p| p.kind() == parts[0].kind()) {
                        Tensor::f_cat(&parts, 1).map_err(tch_err)?
                    } else {
                        // Mixed bf16 and fp32 parts (bf16 training): joined in fp32.
                        let parts: Vec<Tensor> = parts.iter().map(full).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{SgdConfig, Train};
    use crate::ir::Node;
    use crate::zoo::Builder;

    fn batch(model: &Model, n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let &[c, h, w] = model.graph.input_shape().unwrap() else { panic!("an image input") };
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
        };
        let x = (0..n * c * h * w).map(|_| next()).collect();
        let y = (0..n).map(|i| (i % 3) as i64).collect();
        (x, y)
    }

    /// One SGD step; the loss, the logits before it and the gradients.
    fn step(net: &mut Network, x: &[f32], y: &[i64]) -> (f64, Vec<f32>, Weights) {
        net.set_optimizer(SgdConfig { momentum: 0.9, weight_decay: 1e-4, nesterov: false });
        let logits = net.predict(x, y.len()).unwrap();
        let s = net.train_step(x, y, 0.05).unwrap();
        (s.loss, logits, net.gradients().unwrap())
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
    }

    fn assert_same(what: &str, a: &(f64, Vec<f32>, Weights), b: &(f64, Vec<f32>, Weights), tol: f32) {
        assert!((a.0 - b.0).abs() <= tol as f64 * a.0.abs(), "{what}: loss {} vs {}", a.0, b.0);
        assert!(max_rel(&a.1, &b.1) <= tol, "{what}: logits differ by {}", max_rel(&a.1, &b.1));
        assert_eq!(a.2.tensors.keys().collect::<Vec<_>>(), b.2.tensors.keys().collect::<Vec<_>>());
        for (k, ga) in &a.2.tensors {
            let (ga, gb) = (ga.as_f32().unwrap(), b.2.tensors[k].as_f32().unwrap());
            let e = max_rel(ga, gb);
            assert!(e <= tol, "{what}: gradient of {k} differs by {e:.2e}");
        }
    }

    /// Convolutions on maps small enough for the dense form, with strides, dilation, bias or none.
    fn small_map_graph() -> Graph {
        let mut b = Builder::new([5, 2, 2]);
        let x = b.conv("c1", "input", 6, 3, 1, 1, 1, false);
        let x = b.bn("bn1", &x);
        let x = b.relu("r1", &x);
        let x = b.conv("c2", &x, 7, 3, 1, 1, 1, true);
        let x = b.add(
            "c3",
            Op::Conv2d {
                in_channels: 7,
                out_channels: 4,
                kernel_size: [3, 3],
                stride: [2, 2],
                padding: [2, 2],
                dilation: [2, 2],
                groups: 1,
                bias: true,
            },
            &[&x],
        );
        let x = b.add("flatten", Op::Flatten, &[&x]);
        b.linear("fc", &x, 3);
        b.finish("small-maps")
    }

    #[test]
    fn dense_convolutions_match_the_convolutions_they_replace() {
        let model = Model::init(small_map_graph(), 3).unwrap();
        let (x, y) = batch(&model, 8, 1);
        for layout in [Layout::Contiguous, Layout::ChannelsLast] {
            let mut dense = Network::with_layout(&model, Device::Cpu, layout).unwrap();
            assert_eq!(dense.dense.len(), 3, "all three convolutions take the dense form");
            let mut conv = Network::with_layout(&model, Device::Cpu, layout).unwrap();
            conv.dense.clear();
            assert_same(&format!("{layout:?}"), &step(&mut conv, &x, &y), &step(&mut dense, &x, &y), 1e-5);
        }
    }

    #[test]
    fn dense_form_only_where_the_map_is_small_against_the_kernel() {
        let plan = |shape: &[usize], k: usize, groups: usize| {
            let op = Op::Conv2d {
                in_channels: shape[0],
                out_channels: 8 * groups,
                kernel_size: [k, k],
                stride: [1, 1],
                padding: [k / 2, k / 2],
                dilation: [1, 1],
                groups,
                bias: false,
            };
            DenseConv::plan(&op, shape, tch::Device::Cpu).is_some()
        };
        assert!(plan(&[16, 2, 2], 3, 1));
        assert!(plan(&[16, 1, 1], 3, 1));
        assert!(!plan(&[16, 4, 4], 5, 1), "16 positions against 25 taps: the convolution is faster");
        assert!(!plan(&[16, 4, 4], 3, 1));
        assert!(!plan(&[16, 2, 2], 3, 2), "grouped convolutions keep the convolution");
        assert!(plan(&[1 << 16, 2, 2], 3, 1));
        assert!(!plan(&[1 << 18, 2, 2], 3, 1), "a dense matrix over the cap is not built");
    }

    #[test]
    fn dense_backward_is_a_view_of_the_same_memory() {
        for t in [
            Tensor::randn([2, 3, 4, 5], (Kind::Float, tch::Device::Cpu)),
            channels_last(Tensor::randn([2, 3, 4, 5], (Kind::Float, tch::Device::Cpu))),
        ] {
            let v = dense_backward(&t);
            assert_eq!(v.size(), t.size());
            assert_eq!(v.stride(), t.stride());
            assert_eq!(v.data_ptr(), t.data_ptr());
        }
        // The gradient through a concatenation is the matching slice of the concatenation's.
        let a = channels_last(Tensor::randn([2, 3, 4, 5], (Kind::Float, tch::Device::Cpu))).set_requires_grad(true);
        let c = channels_last(Tensor::randn([2, 2, 4, 5], (Kind::Float, tch::Device::Cpu)));
        let g = Tensor::randn([2, 5, 4, 5], (Kind::Float, tch::Device::Cpu));
        (Tensor::cat(&[dense_backward(&a), c], 1) * &g).sum(Kind::Float).backward();
        assert_eq!(f64::try_from((a.grad() - g.narrow(1, 0, 3)).abs().max()).unwrap(), 0.0);
        // Not dense in any order (a slice along channels): passed on as it is.
        let t = Tensor::randn([2, 6, 4, 5], (Kind::Float, tch::Device::Cpu)).narrow(1, 1, 3);
        assert_eq!(dense_backward(&t).stride(), t.stride());
    }

    /// `graph` with an Identity before every ReLU and ReLU6, which keeps them from running in place.
    fn without_in_place(graph: &Graph) -> Graph {
        let mut nodes = Vec::new();
        for n in &graph.nodes {
            if matches!(n.op, Op::ReLU | Op::ReLU6) {
                let pre = format!("{}.pre", n.name);
                nodes.push(Node { name: pre.clone(), op: Op::Identity, inputs: n.inputs.clone() });
                nodes.push(Node { inputs: vec![pre], ..n.clone() });
            } else {
                nodes.push(n.clone());
            }
        }
        Graph { nodes, ..graph.clone() }
    }

    #[test]
    fn in_place_relu_and_relu6_train_as_out_of_place_ones() {
        // Depthwise-separable convolutions with ReLU6 after BatchNorm, and a fire-like concatenation
        // of two BatchNorm outputs under one ReLU.
        let mut b = Builder::new([3, 8, 8]);
        let x = b.conv("c1", "input", 8, 3, 1, 1, 1, false);
        let x = b.bn("bn1", &x);
        let x = b.add("r1", Op::ReLU6, &[&x]);
        let x = b.conv("dw", &x, 8, 3, 1, 1, 8, false);
        let x = b.bn("bn2", &x);
        let x = b.add("r2", Op::ReLU6, &[&x]);
        let e1 = b.conv("e1", &x, 6, 1, 1, 0, 1, true);
        let e1 = b.bn("bn3", &e1);
        let e3 = b.conv("e3", &x, 6, 3, 1, 1, 1, true);
        let e3 = b.bn("bn4", &e3);
        let c = b.add("cat", Op::Concat, &[&e1, &e3]);
        let x = b.relu("r3", &c);
        let x = b.add("gap", Op::GlobalAvgPool, &[&x]);
        let x = b.add("flatten", Op::Flatten, &[&x]);
        b.linear("fc", &x, 3);
        let graph = b.finish("in-place");
        let model = Model::init(graph.clone(), 5).unwrap();
        // Scale the first BatchNorm so that ReLU6 clips at 6 for some inputs.
        let mut weights = model.weights.clone();
        let w = weights.tensors.get_mut("bn1.weight").unwrap();
        w.as_f32_mut().unwrap().fill(8.0);
        let model = Model::new(graph.clone(), weights.clone()).unwrap();
        let plain = Model::new(without_in_place(&graph), weights).unwrap();
        let (x, y) = batch(&model, 6, 2);
        let mut a = Network::new(&model, Device::Cpu).unwrap();
        assert_eq!(a.relu_in_place.iter().filter(|&&v| v).count(), 3, "r1, r2, r3 run in place");
        let mut b = Network::new(&plain, Device::Cpu).unwrap();
        assert!(b.relu_in_place.iter().all(|&v| !v));
        assert_same("in place", &step(&mut b, &x, &y), &step(&mut a, &x, &y), 0.0);
    }
}
