//! IR -> ONNX opset 17: one ONNX node per IR node, its output value named after the IR node,
//! initializers named by the state_dict keys (BatchNorm's `num_batches_tracked`, which inference
//! does not use, is left out), float32 data as little-endian `raw_data`, a dynamic batch
//! dimension `batch`, and the graph name and input normalisation as model metadata.
//!
//! With `fold_bn`, a BatchNorm whose input is a convolution read by nothing else becomes that
//! convolution with scaled weights and a bias: `w' = w * g / sqrt(v + eps)`,
//! `b' = (b - m) * g / sqrt(v + eps) + beta` per output channel, computed in f64; the folded
//! convolution keeps the convolution's node and parameter names and writes the BatchNorm's value.

use std::collections::HashSet;

use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, TypeProtoValue, ValueInfoProto,
    attribute_type as at, data_type as dt,
};
use super::{EXPORT_OPSET, ExportOptions, META_NAME, META_NORMALIZE};
use crate::error::{Error, Result};
use crate::ir::{Model, Op, TensorData};

/// ONNX IR version of the files written (IR 8 goes with opset 17).
const IR_VERSION: i64 = 8;

/// The symbolic batch dimension.
const BATCH: &str = "batch";

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(at::INT), i: Some(v), ..Default::default() }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(at::INTS),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(at::FLOAT), f: Some(v), ..Default::default() }
}

fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(at::TENSOR), t: Some(t), ..Default::default() }
}

/// A float32 tensor with its data as little-endian bytes.
fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: (!name.is_empty()).then(|| name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(dt::FLOAT),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: vec![data.len() as i64],
        data_type: Some(dt::INT64),
        raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let dim = std::iter::once(DimensionValue::DimParam(BATCH.into()))
        .chain(dims.iter().map(|&d| DimensionValue::DimValue(d as i64)))
        .map(|v| Dimension { value: Some(v), denotation: None })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeProtoValue::TensorType(TypeProtoTensor {
                elem_type: Some(dt::FLOAT),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}

struct Writer {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// Every value name in use (node outputs, initializers, constants).
    names: HashSet<String>,
    /// Shared Constant outputs for ReLU6's bounds.
    clip_bounds: Option<(String, String)>,
}

impl Writer {
    fn node(&mut self, op: &str, name: &str, inputs: Vec<String>, output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            attribute,
            ..Default::default()
        });
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// A Constant node holding a float scalar; returns its output name.
    fn scalar(&mut self, base: &str, v: f32) -> String {
        let out = self.fresh(base);
        self.node("Constant", &out.clone(), vec![], &out, vec![attr_tensor("value", f32_tensor("", &[], &[v]))]);
        out
    }

    fn init(&mut self, key: &str, dims: &[usize], data: &[f32]) {
        self.inits.push(f32_tensor(key, dims, data));
    }

    /// A 1-D int64 initializer under a fresh name based on `base`; returns the name.
    fn ints(&mut self, base: &str, data: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(i64_tensor(&name, data));
        name
    }
}

fn f32s<'a>(model: &'a Model, key: &str) -> Result<&'a [f32]> {
    model.weights.get_f32(key)
}

pub fn export(model: &Model, opts: ExportOptions) -> Result<ModelProto> {
    let shapes = model.validate()?;
    let g = &model.graph;
    let ins = g.input_indices()?;
    let out = g.output_index()?;
    let folds = if opts.fold_bn { Folds::of(g)? } else { Folds::none(g.nodes.len()) };
    let mut w = Writer { nodes: Vec::new(), inits: Vec::new(), names: HashSet::new(), clip_bounds: None };
    for n in &g.nodes {
        w.names.insert(n.name.clone());
    }
    for (key, spec) in g.tensor_specs() {
        if spec.dtype != crate::ir::DType::F32 {
            continue;
        }
        if !w.names.insert(key.clone()) {
            return Err(Error::tensor(&key, "the state_dict key is also a node name; ONNX needs distinct value names"));
        }
    }

    for (i, node_ins) in ins.iter().enumerate() {
        let feature_map = node_ins.first().is_some_and(|&j| shapes[j].len() == 3);
        write_node(model, i, node_ins, feature_map, &folds, &mut w)?;
    }

    let mut metadata_props = vec![StringStringEntryProto { key: Some(META_NAME.into()), value: Some(g.name.clone()) }];
    if let Some(norm) = &g.normalize {
        let text = serde_json::to_string(norm).map_err(|e| Error::node("input", format!("normalize: {e}")))?;
        metadata_props.push(StringStringEntryProto { key: Some(META_NORMALIZE.into()), value: Some(text) });
    }
    let graph = GraphProto {
        node: w.nodes,
        name: Some(g.name.clone()),
        initializer: w.inits,
        input: vec![value_info(&g.nodes[0].name, &shapes[0])],
        output: vec![value_info(&g.output, &shapes[out])],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(EXPORT_OPSET) }],
        producer_name: Some("edgeprune".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props,
        ..Default::default()
    })
}

/// Which BatchNorms fold into the convolution before them: `into[i] = Some(j)` folds BN `i` into
/// conv `j` (read by nothing else, not the output), which is then not written itself
/// (`folded[j]`).
struct Folds {
    into: Vec<Option<usize>>,
    folded: Vec<bool>,
}

impl Folds {
    fn none(n: usize) -> Self {
        Folds { into: vec![None; n], folded: vec![false; n] }
    }

    /// The pairs [`crate::ir::fold::foldable`] finds, as the inference network folds them.
    fn of(g: &crate::ir::Graph) -> Result<Self> {
        let mut f = Folds::none(g.nodes.len());
        for (j, i) in crate::ir::fold::foldable(g)? {
            f.into[i] = Some(j);
            f.folded[j] = true;
        }
        Ok(f)
    }
}

/// The ONNX nodes (and initializers) of node `i`, whose inputs are the nodes `ins`.
/// `feature_map`: the (first) input is a [C, H, W] map, not a flat vector.
fn write_node(model: &Model, i: usize, ins: &[usize], feature_map: bool, folds: &Folds, w: &mut Writer) -> Result<()> {
    let g = &model.graph;
    let n = &g.nodes[i];
    let x = || ins.iter().map(|&j| g.nodes[j].name.clone()).collect::<Vec<_>>();
    let key = |s: &str| format!("{}.{s}", n.name);
    match &n.op {
        Op::Input { .. } => {}
        Op::Conv2d { .. } if folds.folded[i] => {}
        &Op::Conv2d { kernel_size, stride, padding, dilation, groups, bias, out_channels, .. } => {
            let mut inputs = x();
            inputs.push(key("weight"));
            let wt = model.weights.get(&key("weight"))?;
            w.init(&key("weight"), &wt.shape, f32s(model, &key("weight"))?);
            if bias {
                inputs.push(key("bias"));
                w.init(&key("bias"), &[out_channels], f32s(model, &key("bias"))?);
            }
            w.node("Conv", &n.name, inputs, &n.name, conv_attrs(kernel_size, stride, padding, dilation, groups));
        }
        &Op::BatchNorm2d { num_features, eps, momentum } => {
            if let Some(j) = folds.into[i] {
                fold_conv(model, j, i, w)?;
                return Ok(());
            }
            let mut inputs = x();
            for s in ["weight", "bias", "running_mean", "running_var"] {
                inputs.push(key(s));
                w.init(&key(s), &[num_features], f32s(model, &key(s))?);
            }
            let attrs = vec![attr_float("epsilon", eps as f32), attr_float("momentum", (1.0 - momentum) as f32)];
            w.node("BatchNormalization", &n.name, inputs, &n.name, attrs);
        }
        Op::ReLU => w.node("Relu", &n.name, x(), &n.name, vec![]),
        Op::ReLU6 => {
            let (lo, hi) = match &w.clip_bounds {
                Some(b) => b.clone(),
                None => {
                    let b = (w.scalar("relu6_min", 0.0), w.scalar("relu6_max", 6.0));
                    w.clip_bounds = Some(b.clone());
                    b
                }
            };
            let mut inputs = x();
            inputs.extend([lo, hi]);
            w.node("Clip", &n.name, inputs, &n.name, vec![]);
        }
        Op::Sigmoid => w.node("Sigmoid", &n.name, x(), &n.name, vec![]),
        Op::HardSwish => w.node("HardSwish", &n.name, x(), &n.name, vec![]),
        Op::HardSigmoid => {
            let attrs = vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)];
            w.node("HardSigmoid", &n.name, x(), &n.name, attrs)
        }
        &Op::MaxPool2d { kernel_size, stride, padding, ceil_mode } => {
            let attrs = pool_attrs(kernel_size, stride, padding, ceil_mode);
            w.node("MaxPool", &n.name, x(), &n.name, attrs);
        }
        &Op::AvgPool2d { kernel_size, stride, padding, ceil_mode, count_include_pad } => {
            let mut attrs = pool_attrs(kernel_size, stride, padding, ceil_mode);
            attrs.push(attr_int("count_include_pad", count_include_pad as i64));
            w.node("AveragePool", &n.name, x(), &n.name, attrs);
        }
        Op::GlobalAvgPool => w.node("GlobalAveragePool", &n.name, x(), &n.name, vec![]),
        Op::Add => {
            let op = if n.inputs.len() == 2 { "Add" } else { "Sum" };
            w.node(op, &n.name, x(), &n.name, vec![]);
        }
        Op::Mul => w.node("Mul", &n.name, x(), &n.name, vec![]),
        Op::Concat => w.node("Concat", &n.name, x(), &n.name, vec![attr_int("axis", 1)]),
        Op::Flatten => w.node("Flatten", &n.name, x(), &n.name, vec![attr_int("axis", 1)]),
        &Op::Linear { in_features, out_features, bias } if feature_map => {
            w.init(&key("weight"), &[out_features, in_features], f32s(model, &key("weight"))?);
            if bias {
                w.init(&key("bias"), &[out_features], f32s(model, &key("bias"))?);
            }
            channels_last_linear(&n.name, &x()[0], bias, w);
        }
        &Op::Linear { in_features, out_features, bias } => {
            let mut inputs = x();
            inputs.push(key("weight"));
            w.init(&key("weight"), &[out_features, in_features], f32s(model, &key("weight"))?);
            if bias {
                inputs.push(key("bias"));
                w.init(&key("bias"), &[out_features], f32s(model, &key("bias"))?);
            }
            w.node("Gemm", &n.name, inputs, &n.name, vec![attr_int("transB", 1)]);
        }
        &Op::Dropout { p } => {
            let ratio = w.scalar(&format!("{}.ratio", n.name), p as f32);
            let mut inputs = x();
            inputs.push(ratio);
            w.node("Dropout", &n.name, inputs, &n.name, vec![]);
        }
        Op::Identity => w.node("Identity", &n.name, x(), &n.name, vec![]),
        Op::ChannelPermute { order } => {
            let idx: Vec<i64> = order.iter().map(|&k| k as i64).collect();
            let mut inputs = x();
            inputs.push(w.ints(&key("order"), &idx));
            w.node("Gather", &n.name, inputs, &n.name, vec![attr_int("axis", 1)]);
        }
        &Op::LayerNorm2d { num_features, eps } => {
            for s in ["weight", "bias"] {
                w.init(&key(s), &[num_features], f32s(model, &key(s))?);
            }
            let t = w.fresh(&format!("{}.to_nhwc", n.name));
            w.node("Transpose", &t.clone(), x(), &t, vec![attr_ints("perm", &[0, 2, 3, 1])]);
            let ln = w.fresh(&format!("{}.nhwc", n.name));
            let attrs = vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)];
            w.node("LayerNormalization", &ln.clone(), vec![t, key("weight"), key("bias")], &ln, attrs);
            w.node("Transpose", &n.name, vec![ln], &n.name, vec![attr_ints("perm", &[0, 3, 1, 2])]);
        }
        Op::GELU => gelu(&n.name, &x()[0], w),
        &Op::LayerScale { num_features } => {
            w.init(&key("layer_scale"), &[num_features, 1, 1], f32s(model, &key("layer_scale"))?);
            let mut inputs = x();
            inputs.push(key("layer_scale"));
            w.node("Mul", &n.name, inputs, &n.name, vec![]);
        }
        &Op::ChannelSlice { start, end } => {
            let mut inputs = x();
            inputs.push(w.ints(&key("starts"), &[start as i64]));
            inputs.push(w.ints(&key("ends"), &[end as i64]));
            inputs.push(w.ints(&key("axes"), &[1]));
            w.node("Slice", &n.name, inputs, &n.name, vec![]);
        }
    }
    Ok(())
}

/// A Linear over the channels of a feature map as torch exports `nn.Linear` on ConvNeXt's
/// channels-last view: Transpose to NHWC, MatMul by the transposed weight (initializer
/// `<name>.weight`, [out, in]), Add the bias, Transpose back; the output is `name`.
fn channels_last_linear(name: &str, x: &str, bias: bool, w: &mut Writer) {
    let t = w.fresh(&format!("{name}.to_nhwc"));
    w.node("Transpose", &t.clone(), vec![x.to_string()], &t, vec![attr_ints("perm", &[0, 2, 3, 1])]);
    let wt = w.fresh(&format!("{name}.weight_t"));
    w.node("Transpose", &wt.clone(), vec![format!("{name}.weight")], &wt, vec![attr_ints("perm", &[1, 0])]);
    let mut y = w.fresh(&format!("{name}.matmul"));
    w.node("MatMul", &y.clone(), vec![t, wt], &y, vec![]);
    if bias {
        let b = w.fresh(&format!("{name}.add_bias"));
        w.node("Add", &b.clone(), vec![y, format!("{name}.bias")], &b, vec![]);
        y = b;
    }
    w.node("Transpose", name, vec![y], name, vec![attr_ints("perm", &[0, 3, 1, 2])]);
}

/// Exact GELU as torch exports it at opsets below 20 (which have no Gelu op):
/// x * (1 + erf(x / sqrt 2)) * 0.5; the output is `name`.
fn gelu(name: &str, x: &str, w: &mut Writer) {
    let sqrt2 = w.scalar(&format!("{name}.sqrt2"), std::f32::consts::SQRT_2);
    let d = w.fresh(&format!("{name}.div"));
    w.node("Div", &d.clone(), vec![x.to_string(), sqrt2], &d, vec![]);
    let e = w.fresh(&format!("{name}.erf"));
    w.node("Erf", &e.clone(), vec![d], &e, vec![]);
    let one = w.scalar(&format!("{name}.one"), 1.0);
    let a = w.fresh(&format!("{name}.add"));
    w.node("Add", &a.clone(), vec![e, one], &a, vec![]);
    let m = w.fresh(&format!("{name}.mul"));
    w.node("Mul", &m.clone(), vec![x.to_string(), a], &m, vec![]);
    let half = w.scalar(&format!("{name}.half"), 0.5);
    w.node("Mul", name, vec![m, half], name, vec![]);
}

fn conv_attrs(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
) -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &kernel),
        attr_ints("strides", &stride),
        attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
        attr_ints("dilations", &dilation),
        attr_int("group", groups as i64),
    ]
}

fn pool_attrs(kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], ceil_mode: bool) -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &kernel),
        attr_ints("strides", &stride),
        attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
        attr_int("ceil_mode", ceil_mode as i64),
    ]
}

/// Writes convolution `j` with BatchNorm `i` folded into it; the output is the BatchNorm's value.
fn fold_conv(model: &Model, j: usize, i: usize, w: &mut Writer) -> Result<()> {
    let g = &model.graph;
    let (conv, bn) = (&g.nodes[j], &g.nodes[i]);
    let &Op::Conv2d { kernel_size, stride, padding, dilation, groups, bias, out_channels, .. } = &conv.op else {
        return Err(Error::node(&conv.name, "not a convolution"));
    };
    let &Op::BatchNorm2d { eps, .. } = &bn.op else { return Err(Error::node(&bn.name, "not a batch norm")) };
    let bnk = |s: &str| format!("{}.{s}", bn.name);
    let (gamma, beta) = (f32s(model, &bnk("weight"))?, f32s(model, &bnk("bias"))?);
    let (mean, var) = (f32s(model, &bnk("running_mean"))?, f32s(model, &bnk("running_var"))?);
    let wkey = format!("{}.weight", conv.name);
    let bkey = format!("{}.bias", conv.name);
    let wt = model.weights.get(&wkey)?;
    let TensorData::F32(weight) = &wt.data else { return Err(Error::tensor(&wkey, "expected float32")) };
    let b0 = if bias { Some(f32s(model, &bkey)?) } else { None };
    let (new_w, new_b) = crate::ir::fold::fold_into_conv(weight, b0, [gamma, beta, mean, var], eps);
    w.init(&wkey, &wt.shape, &new_w);
    w.names.insert(bkey.clone());
    w.init(&bkey, &[out_channels], &new_b);
    let x = g.input_indices()?[j].iter().map(|&k| g.nodes[k].name.clone()).collect::<Vec<_>>();
    let mut inputs = x;
    inputs.extend([wkey, bkey]);
    w.node("Conv", &conv.name, inputs, &bn.name, conv_attrs(kernel_size, stride, padding, dilation, groups));
    Ok(())
}
