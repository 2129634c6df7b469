//! The network as data: nodes in topological order, each consuming earlier nodes' outputs by name.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::op::{Op, TensorSpec};
use crate::error::{Error, Result};

/// One node: an op, its inputs (names of earlier nodes) and its name. The name doubles as the
/// PyTorch module path of the op's tensors (`layer1.0.conv1` owns `layer1.0.conv1.weight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub op: Op,
    #[serde(default)]
    pub inputs: Vec<String>,
}

/// A per-image shape: [C, H, W] for feature maps, [F] after a flatten or a linear layer.
pub type Shape = Vec<usize>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// A free name for the network ("resnet20").
    pub name: String,
    pub nodes: Vec<Node>,
    /// The node whose output is the network's output (the logits).
    pub output: String,
    /// Per-channel input normalisation the network was trained with, `(x / 255 - mean) / std`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
}

/// Per-channel normalisation of input pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// One finite mean and one positive finite standard deviation per input channel.
    pub fn check(&self, channels: usize) -> Result<()> {
        let err = |m: String| Err(Error::node("input", format!("normalize: {m}")));
        if self.mean.len() != channels || self.std.len() != channels {
            return err(format!(
                "{} means and {} stds for an input of {channels} channels (one of each per channel)",
                self.mean.len(),
                self.std.len()
            ));
        }
        for (c, (m, s)) in self.mean.iter().zip(&self.std).enumerate() {
            if !m.is_finite() {
                return err(format!("the mean of channel {c} is {m}; it must be a finite number"));
            }
            if !(*s > 0.0 && s.is_finite()) {
                return err(format!("the std of channel {c} is {s}; it must be positive and finite"));
            }
        }
        Ok(())
    }
}

/// Maximum elements of one per-image activation or tensor we accept from a file (2^31).
pub const MAX_ELEMENTS: usize = 1 << 31;

impl Graph {
    pub fn index(&self) -> HashMap<&str, usize> {
        self.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect()
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Input node indices of every node, resolved once; the graph must be valid.
    pub fn input_indices(&self) -> Result<Vec<Vec<usize>>> {
        let idx = self.index();
        self.nodes
            .iter()
            .map(|n| {
                n.inputs
                    .iter()
                    .map(|i| {
                        idx.get(i.as_str()).copied().ok_or_else(|| Error::node(&n.name, format!("unknown input `{i}`")))
                    })
                    .collect()
            })
            .collect()
    }

    /// Index of the output node.
    pub fn output_index(&self) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == self.output)
            .ok_or_else(|| Error::node(&self.output, "the graph output names no node"))
    }

    /// Consumers of each node (indices of the nodes that read it).
    pub fn consumers(&self) -> Result<Vec<Vec<usize>>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for (i, ins) in self.input_indices()?.into_iter().enumerate() {
            for j in ins {
                if !out[j].contains(&i) {
                    out[j].push(i);
                }
            }
        }
        Ok(out)
    }

    /// The input node's per-image shape.
    pub fn input_shape(&self) -> Result<&[usize]> {
        match self.nodes.first().map(|n| &n.op) {
            Some(Op::Input { shape }) => Ok(shape),
            _ => Err(Error::node(
                self.nodes.first().map(|n| n.name.as_str()).unwrap_or("<empty>"),
                "the first node must be the `input` op",
            )),
        }
    }

    /// Height and width of the input images (a `[C, H, W]` input), for the data loaders.
    pub fn image_size(&self) -> Result<[usize; 2]> {
        match self.input_shape()? {
            &[_, h, w] => Ok([h, w]),
            s => Err(Error::node(&self.nodes[0].name, format!("the input is {s:?}, not images [C, H, W]"))),
        }
    }

    /// Checks the structure (unique names, one input first, inputs defined before use, arity,
    /// attributes) and infers every node's output shape. Errors name the node at fault.
    pub fn infer_shapes(&self) -> Result<Vec<Shape>> {
        if self.nodes.is_empty() {
            return Err(Error::node("<graph>", "the graph has no nodes"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let err = |msg: String| Error::node(&node.name, msg);
            if node.name.is_empty() {
                return Err(Error::node(format!("#{i}"), "node name is empty"));
            }
            if seen.insert(&node.name, i).is_some() {
                return Err(err("duplicate node name".into()));
            }
            let is_input = matches!(node.op, Op::Input { .. });
            if is_input != (i == 0) {
                return Err(err("the `input` op must be the first node, and only it".into()));
            }
            let (n, at_least) = node.op.arity();
            let k = node.inputs.len();
            if (at_least && k < n) || (!at_least && k != n) {
                return Err(err(format!(
                    "{} takes {}{} input(s), got {k}",
                    node.op.type_name(),
                    if at_least { "at least " } else { "" },
                    n
                )));
            }
            let mut ins: Vec<&Shape> = Vec::with_capacity(k);
            for name in &node.inputs {
                match seen.get(name.as_str()) {
                    Some(&j) if j < i => ins.push(&shapes[j]),
                    _ => return Err(err(format!("input `{name}` is not an earlier node (unknown, later, or itself)"))),
                }
            }
            let shape = infer_one(&node.op, &ins).map_err(err)?;
            let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            match elems {
                Some(e) if e > 0 && e <= MAX_ELEMENTS => {}
                _ => return Err(err(format!("output shape {shape:?} is empty or too large"))),
            }
            for spec in node.op.tensors() {
                let elems = spec.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if elems.is_none_or(|e| e > MAX_ELEMENTS) {
                    return Err(err(format!("tensor `{}` of shape {:?} is too large", spec.suffix, spec.shape)));
                }
            }
            shapes.push(shape);
        }
        if !seen.contains_key(self.output.as_str()) {
            return Err(Error::node(&self.output, "the graph output names no node"));
        }
        if let Some(n) = &self.normalize {
            n.check(shapes[0][0])?;
        }
        Ok(shapes)
    }

    /// Every tensor the graph's nodes own, as (state_dict key, spec), in node order.
    pub fn tensor_specs(&self) -> Vec<(String, TensorSpec)> {
        self.nodes
            .iter()
            .flat_map(|n| n.op.tensors().into_iter().map(move |s| (format!("{}.{}", n.name, s.suffix), s)))
            .collect()
    }

    /// Number of trainable parameters (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn num_parameters(&self) -> usize {
        self.tensor_specs()
            .iter()
            .filter(|(_, s)| s.kind == super::op::TensorKind::Parameter)
            .map(|(_, s)| s.shape.iter().product::<usize>())
            .sum()
    }
}

fn conv_out(len: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Result<usize, String> {
    if s == 0 || k == 0 || d == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    let too_large = || format!("kernel {k}, dilation {d} or padding {p} is too large");
    let span = d.checked_mul(k - 1).and_then(|s| s.checked_add(1)).ok_or_else(too_large)?;
    let padded = p.checked_mul(2).and_then(|p2| p2.checked_add(len)).ok_or_else(too_large)?;
    if padded < span {
        return Err(format!("input size {len} (padding {p}) is smaller than the kernel span {span}"));
    }
    let num = padded - span;
    let mut out = if ceil { num.div_ceil(s) + 1 } else { num / s + 1 };
    // PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * s >= len + p {
        out -= 1;
    }
    Ok(out)
}

fn spatial(shape: &Shape, what: &str) -> Result<(usize, usize, usize), String> {
    match shape.as_slice() {
        &[c, h, w] => Ok((c, h, w)),
        _ => Err(format!("{what} needs a [C, H, W] input, got {shape:?}")),
    }
}

fn infer_one(op: &Op, ins: &[&Shape]) -> Result<Shape, String> {
    Ok(match op {
        Op::Input { shape } => {
            if shape.len() != 3 {
                return Err(format!("input shape must be [C, H, W], got {shape:?}"));
            }
            shape.clone()
        }
        &Op::Conv2d { in_channels, out_channels, kernel_size, stride, padding, dilation, groups, .. } => {
            let (c, h, w) = spatial(ins[0], "conv2d")?;
            if c != in_channels {
                return Err(format!("in_channels is {in_channels} but the input has {c} channels"));
            }
            if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 || out_channels == 0 {
                return Err(format!(
                    "groups ({groups}) must divide in_channels ({in_channels}) and out_channels ({out_channels}), both positive"
                ));
            }
            let oh = conv_out(h, kernel_size[0], stride[0], padding[0], dilation[0], false)?;
            let ow = conv_out(w, kernel_size[1], stride[1], padding[1], dilation[1], false)?;
            vec![out_channels, oh, ow]
        }
        &Op::BatchNorm2d { num_features, eps, momentum } => {
            let (c, _, _) = spatial(ins[0], "batch_norm2d")?;
            if c != num_features {
                return Err(format!("num_features is {num_features} but the input has {c} channels"));
            }
            if !(eps > 0.0 && eps.is_finite() && (0.0..=1.0).contains(&momentum)) {
                return Err(format!("eps ({eps}) must be positive and momentum ({momentum}) in [0, 1]"));
            }
            ins[0].clone()
        }
        Op::ReLU | Op::ReLU6 | Op::Sigmoid | Op::HardSwish | Op::HardSigmoid | Op::Identity | Op::GELU => {
            ins[0].clone()
        }
        &Op::LayerNorm2d { num_features, eps } => {
            let (c, _, _) = spatial(ins[0], "layer_norm2d")?;
            if c != num_features {
                return Err(format!("num_features is {num_features} but the input has {c} channels"));
            }
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(format!("eps ({eps}) must be positive"));
            }
            ins[0].clone()
        }
        &Op::LayerScale { num_features } => {
            let (c, _, _) = spatial(ins[0], "layer_scale")?;
            if c != num_features {
                return Err(format!("num_features is {num_features} but the input has {c} channels"));
            }
            ins[0].clone()
        }
        &Op::Dropout { p } => {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("dropout p must be in [0, 1), got {p}"));
            }
            ins[0].clone()
        }
        &Op::MaxPool2d { kernel_size, stride, padding, ceil_mode }
        | &Op::AvgPool2d { kernel_size, stride, padding, ceil_mode, .. } => {
            let (c, h, w) = spatial(ins[0], op.type_name())?;
            if padding[0] > kernel_size[0] / 2 || padding[1] > kernel_size[1] / 2 {
                return Err(format!("padding {padding:?} must be at most half of the kernel {kernel_size:?}"));
            }
            let oh = conv_out(h, kernel_size[0], stride[0], padding[0], 1, ceil_mode)?;
            let ow = conv_out(w, kernel_size[1], stride[1], padding[1], 1, ceil_mode)?;
            vec![c, oh, ow]
        }
        Op::GlobalAvgPool => {
            let (c, _, _) = spatial(ins[0], "global_avg_pool")?;
            vec![c, 1, 1]
        }
        Op::Add => {
            for s in &ins[1..] {
                if *s != ins[0] {
                    return Err(format!("add needs equal shapes, got {:?} and {s:?}", ins[0]));
                }
            }
            ins[0].clone()
        }
        Op::Mul => {
            let (a, b) = (ins[0], ins[1]);
            if a == b {
                a.clone()
            } else {
                let (ca, ha, wa) = spatial(a, "mul")?;
                let (cb, hb, wb) = spatial(b, "mul")?;
                if ca != cb || !((hb == 1 && wb == 1) || (ha == 1 && wa == 1)) {
                    return Err(format!("mul needs equal shapes or a [C, 1, 1] factor, got {a:?} and {b:?}"));
                }
                vec![ca, ha.max(hb), wa.max(wb)]
            }
        }
        Op::Concat => {
            let (_, h, w) = spatial(ins[0], "concat")?;
            let mut c = 0;
            for s in ins {
                let (ci, hi, wi) = spatial(s, "concat")?;
                if (hi, wi) != (h, w) {
                    return Err(format!("concat needs equal spatial sizes, got {:?} and {s:?}", ins[0]));
                }
                c += ci;
            }
            vec![c, h, w]
        }
        Op::Flatten => vec![ins[0].iter().product()],
        Op::ChannelPermute { order } => {
            let c = ins[0].first().copied().unwrap_or(0);
            let mut seen = vec![false; c];
            for &k in order {
                if k >= c || std::mem::replace(&mut seen[k], true) {
                    return Err(format!("order must be a permutation of the input's {c} channels, got {order:?}"));
                }
            }
            if order.len() != c {
                return Err(format!("order lists {} channels but the input has {c}", order.len()));
            }
            ins[0].clone()
        }
        &Op::ChannelSlice { start, end } => {
            let c = ins[0].first().copied().unwrap_or(0);
            if start >= end || end > c {
                return Err(format!("channels {start}..{end} are not a non-empty range of the input's {c}"));
            }
            let mut s = ins[0].clone();
            s[0] = end - start;
            s
        }
        &Op::Linear { in_features, out_features, .. } => {
            if out_features == 0 {
                return Err("out_features must be positive".into());
            }
            match ins[0].as_slice() {
                &[f] if f == in_features => vec![out_features],
                &[c, h, w] if c == in_features => vec![out_features, h, w],
                s => {
                    return Err(format!(
                        "linear needs {in_features} input features (a flat input, or the channels of a feature \
                         map), got {s:?}"
                    ));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ceil_mode_matches_pytorch() {
        // torch.nn.MaxPool2d(3, 2, ceil_mode=True)(torch.zeros(1,1,6,6)).shape == (1,1,3,3)
        assert_eq!(conv_out(6, 3, 2, 0, 1, true).unwrap(), 3);
        // ... and floor mode gives 2
        assert_eq!(conv_out(6, 3, 2, 0, 1, false).unwrap(), 2);
        // MaxPool2d(2, 2, padding=1, ceil_mode=True) on 5: ceil((5+2-2)/2)+1 = 4, last window
        // starts at 6 >= 5+1, so 3.
        assert_eq!(conv_out(5, 2, 2, 1, 1, true).unwrap(), 3);
        assert!(conv_out(2, 5, 1, 0, 1, false).is_err());
    }

    #[test]
    fn huge_attributes_are_errors_not_overflows() {
        assert!(conv_out(4, 3, 1, 1 << 63, 1, false).unwrap_err().contains("too large"));
        assert!(conv_out(4, 1 << 62, 1, 0, 8, false).unwrap_err().contains("too large"));
        let text = r#"{"name": "g", "output": "c", "nodes": [
            {"name": "input", "op": {"type": "input", "shape": [3, 1, 1]}},
            {"name": "c", "op": {"type": "conv2d", "in_channels": 3, "out_channels": 4,
             "kernel_size": [1099511627776, 1099511627776], "padding": [549755813888, 549755813888]},
             "inputs": ["input"]}]}"#;
        let g: Graph = serde_json::from_str(text).unwrap();
        let e = g.infer_shapes().unwrap_err().to_string();
        assert!(e.contains("`c`") && e.contains("tensor `weight`") && e.contains("too large"), "{e}");
    }
}
