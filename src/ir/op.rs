//! The closed set of operations a network is made of. Attributes follow PyTorch's modules
//! (`nn.Conv2d`, `nn.BatchNorm2d`, ...) so that a user can read a graph file without a manual.

use serde::{Deserialize, Serialize};

fn one() -> usize {
    1
}
fn pair_one() -> [usize; 2] {
    [1, 1]
}
fn pair_zero() -> [usize; 2] {
    [0, 0]
}
fn yes() -> bool {
    true
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}
fn ln_eps() -> f64 {
    1e-6
}

/// One operation. Every op produces exactly one tensor, named after its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The network input: one image of `shape` = [channels, height, width].
    Input {
        shape: Vec<usize>,
    },
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        #[serde(default = "pair_one")]
        stride: [usize; 2],
        #[serde(default = "pair_zero")]
        padding: [usize; 2],
        #[serde(default = "pair_one")]
        dilation: [usize; 2],
        #[serde(default = "one")]
        groups: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    BatchNorm2d {
        num_features: usize,
        #[serde(default = "bn_eps")]
        eps: f64,
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    #[serde(rename = "relu")]
    ReLU,
    #[serde(rename = "relu6")]
    ReLU6,
    Sigmoid,
    /// `nn.Hardswish`: x * relu6(x + 3) / 6.
    #[serde(rename = "hardswish")]
    HardSwish,
    /// `nn.Hardsigmoid`: relu6(x + 3) / 6.
    #[serde(rename = "hardsigmoid")]
    HardSigmoid,
    MaxPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        #[serde(default = "pair_zero")]
        padding: [usize; 2],
        #[serde(default)]
        ceil_mode: bool,
    },
    AvgPool2d {
        kernel_size: [usize; 2],
        stride: [usize; 2],
        #[serde(default = "pair_zero")]
        padding: [usize; 2],
        #[serde(default)]
        ceil_mode: bool,
        #[serde(default = "yes")]
        count_include_pad: bool,
    },
    /// `nn.AdaptiveAvgPool2d(1)`: [C, H, W] -> [C, 1, 1].
    GlobalAvgPool,
    /// Elementwise sum of two or more inputs of the same shape.
    Add,
    /// Elementwise product of two inputs; one may be [C, 1, 1] against [C, H, W]
    /// (squeeze-and-excitation).
    Mul,
    /// Concatenation along the channel axis.
    Concat,
    /// [C, H, W] -> [C * H * W], in PyTorch's (channel-major) order.
    Flatten,
    /// `nn.Linear` on a flat input; on a [C, H, W] feature map it maps the channels at every
    /// position (as ConvNeXt's `nn.Linear` on the channels-last view does), [C, H, W] -> [out, H, W].
    Linear {
        in_features: usize,
        out_features: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Dropout {
        p: f64,
    },
    Identity,
    /// Output channel j is input channel `order[j]`; `order` is a permutation of the input's
    /// channels. A channel shuffle (`nn.ChannelShuffle`, ShuffleNet's reshape-transpose-reshape)
    /// is one; after pruning, the permutation of the channels left.
    ChannelPermute {
        order: Vec<usize>,
    },
    /// Input channels `start .. end` (`x[:, start:end]`, a piece of `torch.chunk` or `split` along
    /// the channels).
    ChannelSlice {
        start: usize,
        end: usize,
    },
    /// Layer normalisation over the channels at every position, with a weight and a bias per
    /// channel (torchvision's `LayerNorm2d`; `nn.LayerNorm(C)` on the channels-last view, as
    /// ConvNeXt uses it).
    LayerNorm2d {
        num_features: usize,
        #[serde(default = "ln_eps")]
        eps: f64,
    },
    /// `nn.GELU()`, exact: x * (1 + erf(x / sqrt 2)) / 2.
    #[serde(rename = "gelu")]
    GELU,
    /// Channel c times a learned factor, the tensor `layer_scale` of shape [C, 1, 1] (ConvNeXt's
    /// layer scale, named as torchvision's CNBlock names it).
    LayerScale {
        num_features: usize,
    },
}

/// What an op does to the channel axis (axis 0 of every per-image tensor). This is the one place
/// that pruning groups ([`crate::analysis::groups`]), surgery and the planner learn an op's
/// channel semantics from; [`Op::slicing`] says how each of its tensors follows its channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMap {
    /// The network input: its channels are the data's and cannot be removed.
    Input,
    /// Fresh output channels, each computed from every input channel (a dense conv, a linear layer).
    Create,
    /// Output channel i is input channel i (BatchNorm, activations, pools, dropout, identity).
    PassThrough,
    /// Output channel i ties channel i of every input (Add, Mul): a join, e.g. a residual add.
    Tie,
    /// Input k's channel i is output channel offset_k + i, offset_k the channels of inputs before k.
    Concat,
    /// Channel c of a [C, H, W] input is features c*H*W .. (c+1)*H*W of the output.
    Flatten,
    /// Output channel i is computed from input channel i alone (a depthwise conv).
    Depthwise,
    /// Output channel j is input channel `order[j]` (a permutation).
    Permute(Vec<usize>),
    /// Output channel i is input channel `start + i`; the input's other channels do not reach
    /// the output.
    Slice { start: usize },
    /// Fresh output channels in `groups` equal blocks, block b computed from input block b alone
    /// (a grouped conv): input and output channels may each be removed only the same number from
    /// every block, so that the blocks stay equal.
    Grouped { groups: usize },
    /// Neither the input's nor the output's channels may be removed, for this reason (said of the
    /// node, e.g. "is a grouped conv ...").
    Frozen(String),
}

/// How one tensor of an op is sliced when channels are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    /// Axis 0 follows the op's output channels.
    pub by_output: bool,
    /// Axis 1 follows the op's input channels.
    pub by_input: bool,
}

/// Whether a named tensor of a node is trained or only tracked (BatchNorm's running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    Parameter,
    Buffer,
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    F32,
    I64,
}

/// One tensor a node owns, named `<node>.<suffix>` as in a PyTorch state_dict.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    pub dtype: DType,
}

impl Op {
    /// The op's name as written in graph files.
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm2d { .. } => "batch_norm2d",
            Op::ReLU => "relu",
            Op::ReLU6 => "relu6",
            Op::Sigmoid => "sigmoid",
            Op::HardSwish => "hardswish",
            Op::HardSigmoid => "hardsigmoid",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat => "concat",
            Op::Flatten => "flatten",
            Op::Linear { .. } => "linear",
            Op::Dropout { .. } => "dropout",
            Op::Identity => "identity",
            Op::ChannelPermute { .. } => "channel_permute",
            Op::ChannelSlice { .. } => "channel_slice",
            Op::LayerNorm2d { .. } => "layer_norm2d",
            Op::GELU => "gelu",
            Op::LayerScale { .. } => "layer_scale",
        }
    }

    /// How many inputs the op takes: exact, or at least (for Add and Concat).
    pub fn arity(&self) -> (usize, bool) {
        match self {
            Op::Input { .. } => (0, false),
            Op::Add | Op::Concat => (2, true),
            Op::Mul => (2, false),
            _ => (1, false),
        }
    }

    /// The tensors this op owns, in state_dict order.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let p = |suffix, shape| TensorSpec { suffix, shape, kind: TensorKind::Parameter, dtype: DType::F32 };
        let b = |suffix, shape| TensorSpec { suffix, shape, kind: TensorKind::Buffer, dtype: DType::F32 };
        match *self {
            Op::Conv2d { in_channels, out_channels, kernel_size, groups, bias, .. } => {
                let mut v =
                    vec![p("weight", vec![out_channels, in_channels / groups.max(1), kernel_size[0], kernel_size[1]])];
                if bias {
                    v.push(p("bias", vec![out_channels]));
                }
                v
            }
            Op::BatchNorm2d { num_features: c, .. } => vec![
                p("weight", vec![c]),
                p("bias", vec![c]),
                b("running_mean", vec![c]),
                b("running_var", vec![c]),
                TensorSpec {
                    suffix: "num_batches_tracked",
                    shape: vec![],
                    kind: TensorKind::Buffer,
                    dtype: DType::I64,
                },
            ],
            Op::Linear { in_features, out_features, bias } => {
                let mut v = vec![p("weight", vec![out_features, in_features])];
                if bias {
                    v.push(p("bias", vec![out_features]));
                }
                v
            }
            Op::LayerNorm2d { num_features: c, .. } => vec![p("weight", vec![c]), p("bias", vec![c])],
            Op::LayerScale { num_features: c } => vec![p("layer_scale", vec![c, 1, 1])],
            _ => vec![],
        }
    }

    /// What the op does to the channel axis.
    pub fn channel_map(&self) -> ChannelMap {
        match *self {
            Op::Input { .. } => ChannelMap::Input,
            Op::Conv2d { groups: 1, .. } | Op::Linear { .. } => ChannelMap::Create,
            Op::Conv2d { groups, in_channels, out_channels, .. } => {
                if groups == in_channels && groups == out_channels {
                    ChannelMap::Depthwise
                } else {
                    ChannelMap::Grouped { groups }
                }
            }
            Op::BatchNorm2d { .. }
            | Op::ReLU
            | Op::ReLU6
            | Op::Sigmoid
            | Op::HardSwish
            | Op::HardSigmoid
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Identity
            | Op::GELU
            | Op::LayerScale { .. } => ChannelMap::PassThrough,
            // Each channel is normalised by statistics over all of them: removing one changes
            // the others' values (as removing a channel before a softmax would), but the op stays
            // valid with its weight and bias sliced, and fine-tuning follows.
            Op::LayerNorm2d { .. } => ChannelMap::PassThrough,
            Op::Add | Op::Mul => ChannelMap::Tie,
            Op::Concat => ChannelMap::Concat,
            Op::Flatten => ChannelMap::Flatten,
            Op::ChannelPermute { ref order } => ChannelMap::Permute(order.clone()),
            Op::ChannelSlice { start, .. } => ChannelMap::Slice { start },
        }
    }

    /// How the tensor `suffix` of this op follows its channels; None for a tensor it does not own.
    pub fn slicing(&self, suffix: &str) -> Option<Slicing> {
        let (out, out_in, whole) = (
            Slicing { by_output: true, by_input: false },
            Slicing { by_output: true, by_input: true },
            Slicing { by_output: false, by_input: false },
        );
        match (self, suffix) {
            // A depthwise conv's weight has one column per output channel: its input side follows
            // its output. A grouped conv's has in_channels / groups columns per block (surgery
            // keeps each block's own kept inputs).
            (&Op::Conv2d { groups, in_channels, out_channels, .. }, "weight") => {
                Some(if groups > 1 && groups == in_channels && groups == out_channels { out } else { out_in })
            }
            (Op::Conv2d { bias: true, .. }, "bias") => Some(out),
            (Op::Linear { .. }, "weight") => Some(out_in),
            (Op::Linear { bias: true, .. }, "bias") => Some(out),
            (Op::BatchNorm2d { .. }, "weight" | "bias" | "running_mean" | "running_var") => Some(out),
            (Op::BatchNorm2d { .. }, "num_batches_tracked") => Some(whole),
            (Op::LayerNorm2d { .. }, "weight" | "bias") | (Op::LayerScale { .. }, "layer_scale") => Some(out),
            _ => None,
        }
    }

    /// Whether some tensor of the op is sliced by its output channels (a producer of them).
    pub fn slices_output(&self) -> bool {
        self.tensors().iter().any(|t| self.slicing(t.suffix).is_some_and(|s| s.by_output))
    }

    /// Whether some tensor of the op is sliced by its input channels (a consumer of them).
    pub fn slices_input(&self) -> bool {
        self.tensors().iter().any(|t| self.slicing(t.suffix).is_some_and(|s| s.by_input))
    }

    /// The op with `input` input channels (where it has an input) and `output` output channels,
    /// as surgery leaves it; ops without channel attributes are unchanged.
    pub fn resized(&self, input: Option<usize>, output: usize) -> Op {
        let mut op = self.clone();
        let depthwise = self.channel_map() == ChannelMap::Depthwise;
        match &mut op {
            Op::Conv2d { in_channels, out_channels, groups, .. } => {
                *in_channels = input.unwrap_or(*in_channels);
                *out_channels = output;
                if depthwise {
                    *groups = output;
                }
            }
            Op::BatchNorm2d { num_features, .. }
            | Op::LayerNorm2d { num_features, .. }
            | Op::LayerScale { num_features } => *num_features = output,
            Op::Linear { in_features, out_features, .. } => {
                *in_features = input.unwrap_or(*in_features);
                *out_features = output;
            }
            Op::Input { .. }
            | Op::ReLU
            | Op::ReLU6
            | Op::Sigmoid
            | Op::HardSwish
            | Op::HardSigmoid
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::Flatten
            | Op::Dropout { .. }
            | Op::Identity
            | Op::ChannelPermute { .. }
            | Op::ChannelSlice { .. }
            | Op::GELU => {}
        }
        op
    }

    /// The op once surgery keeps the input channels `kept_in` and the output channels
    /// `kept_out` (each increasing): a permutation or slice re-indexed to the channels left.
    /// Errors if the kept channels do not correspond (the pruning groups guarantee they do).
    pub fn reindexed(&self, kept_in: &[usize], kept_out: &[usize]) -> std::result::Result<Op, String> {
        let new_index = |c: usize| kept_in.binary_search(&c).ok();
        Ok(match *self {
            Op::ChannelPermute { ref order } => {
                let mut new = Vec::with_capacity(kept_out.len());
                for &j in kept_out {
                    let c = *order.get(j).ok_or_else(|| format!("kept output channel {j} is out of range"))?;
                    new.push(
                        new_index(c).ok_or_else(|| {
                            format!("output channel {j} is kept but its input channel {c} is removed")
                        })?,
                    );
                }
                if new.len() != kept_in.len() {
                    return Err(format!(
                        "a permutation must keep as many channels on both sides: {} in, {} out",
                        kept_in.len(),
                        new.len()
                    ));
                }
                Op::ChannelPermute { order: new }
            }
            Op::ChannelSlice { start, end } => {
                let inside: Vec<usize> = kept_in.iter().copied().filter(|c| (start..end).contains(c)).collect();
                let expected: Vec<usize> = kept_out.iter().map(|&i| i + start).collect();
                if inside != expected {
                    return Err(format!(
                        "the kept output channels {kept_out:?} are not the kept input channels {inside:?} of                          {start}..{end}"
                    ));
                }
                let s = kept_in.iter().filter(|&&c| c < start).count();
                Op::ChannelSlice { start: s, end: s + inside.len() }
            }
            _ => self.clone(),
        })
    }

    /// Trainable parameters the op owns.
    pub fn num_parameters(&self) -> u64 {
        self.tensors()
            .iter()
            .filter(|t| t.kind == TensorKind::Parameter)
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Multiply-accumulates per image, given the op's output shape.
    pub fn macs(&self, out_shape: &[usize]) -> u64 {
        match *self {
            Op::Conv2d { in_channels, kernel_size, groups, .. } => {
                let per_out = (in_channels / groups.max(1)) * kernel_size[0] * kernel_size[1];
                (out_shape.iter().product::<usize>() as u64).saturating_mul(per_out as u64)
            }
            // On a feature map, once per position.
            Op::Linear { in_features, .. } => {
                (out_shape.iter().product::<usize>() as u64).saturating_mul(in_features as u64)
            }
            _ => 0,
        }
    }
}
