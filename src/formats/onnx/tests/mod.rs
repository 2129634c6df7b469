//! Unit tests: export -> import round trips on every zoo network and structure, the import paths
//! torch's exports do not exercise (Clip attributes, Dropout, Identity, Constant nodes, Gemm
//! without transB, Sum), and hostile files (truncated, corrupted, wrong types, huge declared
//! shapes, cycles, dangling inputs, unknown ops): each a clear error naming the file and node,
//! never a panic.

use std::path::Path;

use prost::Message;

use super::proto::*;
use super::*;
use crate::ir::{Graph, HostTensor, Node, Normalize, Op};
use crate::zoo;

const FILE: &str = "hostile.onnx";

mod channels;
mod rejects;

/// A zoo network with fresh weights and non-trivial BatchNorm parameters and statistics.
fn model(name: &str) -> Model {
    let mut m = Model::init(zoo::build(name, 10).unwrap(), 5).unwrap();
    let mut k = 0u32;
    for (key, t) in m.weights.tensors.iter_mut() {
        let bn_vector = t.shape.len() == 1 && !key.ends_with(".bias") || key.contains("running");
        if let (true, Some(v)) = (bn_vector, t.as_f32_mut()) {
            for x in v.iter_mut() {
                k = k.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *x = 0.5 + (k >> 16) as f32 / 65_536.0;
            }
        }
    }
    m
}

fn import(m: &ModelProto) -> Result<Model> {
    from_bytes(&m.encode_to_vec(), Path::new(FILE))
}

fn err(m: &ModelProto) -> String {
    match import(m) {
        Ok(_) => panic!("the import should fail"),
        Err(e) => e.to_string(),
    }
}

fn assert_err(m: &ModelProto, needles: &[&str]) {
    let e = err(m);
    assert!(e.contains(FILE), "the error must name the file: {e}");
    for n in needles {
        assert!(e.contains(n), "expected `{n}` in: {e}");
    }
}

/// The exported flatten_2x2 structure (conv, BN, ReLU, max pool, flatten, linear, dropout).
fn base() -> ModelProto {
    to_proto(&model("flatten_2x2"), ExportOptions::default()).unwrap()
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

fn node<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    graph(m).node.iter_mut().find(|n| n.name() == name).unwrap_or_else(|| panic!("no node {name}"))
}

fn init<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    graph(m).initializer.iter_mut().find(|t| t.name() == name).unwrap_or_else(|| panic!("no initializer {name}"))
}

fn attr<'a>(n: &'a mut NodeProto, name: &str) -> &'a mut AttributeProto {
    n.attribute.iter_mut().find(|a| a.name() == name).unwrap()
}

fn onnx_node(op: &str, name: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(name.into()),
        op_type: Some(op.into()),
        attribute,
        ..Default::default()
    }
}

fn f32_init(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::FLOAT),
        float_data: data,
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_type::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::FLOAT), f: Some(v), ..Default::default() }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(attribute_type::INT), i: Some(v), ..Default::default() }
}

#[test]
fn every_zoo_network_and_structure_round_trips() {
    for name in zoo::NETWORKS.iter().chain(zoo::structures::STRUCTURES) {
        let mut m = model(name);
        m.graph.normalize = Some(Normalize { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] });
        let bytes = to_bytes(&m, ExportOptions::default()).unwrap();
        let back = from_bytes(&bytes, Path::new("x.onnx")).unwrap();
        assert_eq!(back.graph, m.graph, "{name}");
        assert_eq!(back.weights, m.weights, "{name}");
    }
}

#[test]
fn identity_sum_and_dropout_round_trip() {
    let mut b = zoo::Builder::new([3, 8, 8]);
    let a = b.conv("a", "input", 4, 3, 1, 1, 1, true);
    let c = b.conv("c", "input", 4, 1, 1, 0, 1, false);
    let i = b.add("same", Op::Identity, &[&a]);
    let s = b.add("sum3", Op::Add, &[&a, &c, &i]);
    let r = b.add("r6", Op::ReLU6, &[&s]);
    let r2 = b.add("r6b", Op::ReLU6, &[&r]);
    let p = b.add(
        "avg",
        Op::AvgPool2d {
            kernel_size: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            ceil_mode: true,
            count_include_pad: false,
        },
        &[&r2],
    );
    let f = b.add("flat", Op::Flatten, &[&p]);
    let d = b.add("drop", Op::Dropout { p: 0.25 }, &[&f]);
    b.linear("out", &d, 3);
    let m = Model::init(b.finish("odd"), 1).unwrap();
    let proto = to_proto(&m, ExportOptions::default()).unwrap();
    let ops: Vec<&str> = proto.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
    assert!(ops.contains(&"Sum") && ops.contains(&"Identity") && ops.contains(&"Dropout"), "{ops:?}");
    // ReLU6's bounds are shared constants.
    assert_eq!(ops.iter().filter(|o| **o == "Constant").count(), 3, "{ops:?}");
    assert_eq!(import(&proto).unwrap(), m);
}

#[test]
fn fold_bn_folds_only_convs_feeding_only_a_batch_norm() {
    let m = model("resnet20");
    let folded = from_bytes(&to_bytes(&m, ExportOptions { fold_bn: true }).unwrap(), Path::new("f.onnx")).unwrap();
    assert!(!folded.graph.nodes.iter().any(|n| matches!(n.op, Op::BatchNorm2d { .. })));
    let bns = m.graph.nodes.iter().filter(|n| matches!(n.op, Op::BatchNorm2d { .. })).count();
    assert_eq!(folded.graph.nodes.len(), m.graph.nodes.len() - bns);
    // conv1 -> bn1: w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps).
    let w = m.weights.get_f32("conv1.weight").unwrap();
    let (g, beta) = (m.weights.get_f32("bn1.weight").unwrap(), m.weights.get_f32("bn1.bias").unwrap());
    let (mean, var) = (m.weights.get_f32("bn1.running_mean").unwrap(), m.weights.get_f32("bn1.running_var").unwrap());
    let s: Vec<f64> = (0..16).map(|o| g[o] as f64 / (var[o] as f64 + 1e-5).sqrt()).collect();
    let fw = folded.weights.get_f32("conv1.weight").unwrap();
    let fb = folded.weights.get_f32("conv1.bias").unwrap();
    for (k, (&a, &b)) in w.iter().zip(fw).enumerate() {
        assert!(((a as f64 * s[k / 27]) - b as f64).abs() < 1e-6);
    }
    for o in 0..16 {
        assert!((beta[o] as f64 - mean[o] as f64 * s[o] - fb[o] as f64).abs() < 1e-6);
    }
    // The node after the folded BN reads the folded conv.
    assert_eq!(folded.graph.node("relu").unwrap().inputs, vec!["conv1".to_string()]);

    // A conv whose output is also read elsewhere keeps its BatchNorm.
    let mut b = zoo::Builder::new([3, 8, 8]);
    let c = b.conv("c", "input", 4, 3, 1, 1, 1, false);
    let n = b.bn("n", &c);
    b.add("sum", Op::Add, &[&c, &n]);
    let m = Model::init(b.finish("shared"), 0).unwrap();
    let back = import(&to_proto(&m, ExportOptions { fold_bn: true }).unwrap()).unwrap();
    assert_eq!(back, m);
}

/// A graph in the forms torch does not write: Clip bounds as attributes, Identity of a constant
/// and of a feature map, Dropout with a ratio, Reshape by a Constant node, Gemm without transB.
#[test]
fn imports_the_less_common_forms() {
    let mut m = base();
    let g = graph(&mut m);
    let c = 12 * 4 * 4;
    g.node = vec![
        onnx_node("Identity", "alias", &["w0"], "conv.weight", vec![]),
        onnx_node(
            "Conv",
            "/features/conv/Conv",
            &["input", "conv.weight"],
            "t1",
            vec![ints_attr("kernel_shape", &[4, 4]), ints_attr("strides", &[4, 4]), int_attr("group", 1)],
        ),
        onnx_node("Clip", "/features/act/Clip", &["t1"], "t2", vec![float_attr("min", 0.0), float_attr("max", 6.0)]),
        onnx_node("Identity", "/features/Identity", &["t2"], "t3", vec![]),
        onnx_node("Constant", "ratio", &[], "ratio", vec![float_attr("value_float", 0.125)]),
        onnx_node("Dropout", "/drop/Dropout", &["t3", "ratio"], "t4", vec![]),
        onnx_node("Constant", "shape", &[], "shape", vec![ints_attr("value_ints", &[0, -1])]),
        onnx_node("Reshape", "/Reshape", &["t4", "shape"], "t5", vec![]),
        onnx_node("Gemm", "/head/Gemm", &["t5", "head.weight"], "logits", vec![int_attr("transB", 0)]),
        onnx_node("Relu", "/dead/Relu", &["t5"], "unused", vec![]),
        onnx_node("LSTM", "/dead/LSTM", &["unused"], "unused2", vec![]),
    ];
    let w: Vec<f32> = (0..12 * 3 * 16).map(|i| i as f32 * 0.01).collect();
    let h: Vec<f32> = (0..c * 5).map(|i| i as f32).collect();
    g.initializer = vec![f32_init("w0", &[12, 3, 4, 4], w.clone()), f32_init("head.weight", &[c as i64, 5], h.clone())];
    g.output[0].name = Some("logits".into());
    let got = import(&m).unwrap();
    let names: Vec<(&str, &str)> = got.graph.nodes.iter().map(|n| (n.name.as_str(), n.op.type_name())).collect();
    assert_eq!(
        names,
        [
            ("input", "input"),
            ("conv", "conv2d"),
            ("features.act", "relu6"),
            ("features.identity", "identity"),
            ("drop", "dropout"),
            ("reshape", "flatten"),
            ("head", "linear"),
        ]
    );
    assert_eq!(got.graph.node("drop").unwrap().op, Op::Dropout { p: 0.125 });
    assert_eq!(got.weights.get_f32("conv.weight").unwrap(), w.as_slice());
    // Gemm without transB holds [in, out]: the IR's weight is its transpose.
    let hw = got.weights.get_f32("head.weight").unwrap();
    assert_eq!(got.weights.get("head.weight").unwrap().shape, vec![5, c]);
    assert_eq!(hw[1], h[5]);
    assert_eq!(hw[c], h[1]);
    assert_eq!(got.graph.output, "head");
}

#[test]
fn reduce_mean_over_the_spatial_axes_is_a_global_pool() {
    for (keepdims, axes_input, expect) in [
        (0, false, vec!["input", "conv2d", "global_avg_pool", "flatten", "linear"]),
        (1, true, vec!["input", "conv2d", "global_avg_pool", "flatten", "linear"]),
    ] {
        let mut m = base();
        let g = graph(&mut m);
        let mut reduce_inputs = vec!["t1"];
        let mut attrs = vec![int_attr("keepdims", keepdims)];
        if axes_input {
            reduce_inputs.push("axes");
        } else {
            attrs.push(ints_attr("axes", &[-1, 2]));
        }
        g.node = vec![
            onnx_node("Conv", "/conv/Conv", &["input", "conv.weight"], "t1", vec![ints_attr("kernel_shape", &[3, 3])]),
            onnx_node("Constant", "axes", &[], "axes", vec![ints_attr("value_ints", &[2, 3])]),
            onnx_node("ReduceMean", "/ReduceMean", &reduce_inputs, "t2", attrs),
            onnx_node("Flatten", "/Flatten", &["t2"], "t3", vec![]),
            onnx_node("Gemm", "/head/Gemm", &["t3", "head.weight"], "logits", vec![int_attr("transB", 1)]),
        ];
        g.initializer = vec![
            f32_init("conv.weight", &[6, 3, 3, 3], vec![0.1; 162]),
            f32_init("head.weight", &[5, 6], vec![0.2; 30]),
        ];
        g.output[0].name = Some("logits".into());
        let got = import(&m).unwrap();
        let mut ops: Vec<&str> = got.graph.nodes.iter().map(|n| n.op.type_name()).collect();
        // keepdims 0 gives [N, C] already; the Flatten after it is then a no-op flatten.
        ops.dedup();
        assert_eq!(ops, expect, "keepdims {keepdims}");
    }
    let mut m = base();
    let g = graph(&mut m);
    g.node = vec![
        onnx_node("Conv", "/conv/Conv", &["input", "conv.weight"], "t1", vec![ints_attr("kernel_shape", &[3, 3])]),
        onnx_node("ReduceMean", "/ReduceMean", &["t1"], "logits", vec![ints_attr("axes", &[1])]),
    ];
    g.initializer = vec![f32_init("conv.weight", &[6, 3, 3, 3], vec![0.1; 162])];
    g.output[0].name = Some("logits".into());
    assert_err(&m, &["/ReduceMean", "ReduceMean", "[1]", "spatial axes"]);
}

#[test]
fn matmul_add_becomes_a_linear_only_when_the_add_is_its_sole_reader() {
    let mut m = base();
    let g = graph(&mut m);
    g.node.retain(|n| !["fc1", "fc1.relu", "drop", "fc2"].contains(&n.name()));
    g.node.push(onnx_node("MatMul", "/MatMul", &["flatten", "onnx::MatMul_9"], "mm", vec![]));
    g.node.push(onnx_node("Add", "/Add", &["mm", "fc.bias"], "logits", vec![]));
    g.initializer.retain(|t| !t.name().starts_with("fc"));
    g.initializer.push(f32_init("onnx::MatMul_9", &[48, 10], vec![0.5; 480]));
    g.initializer.push(f32_init("fc.bias", &[10], vec![1.0; 10]));
    g.output[0].name = Some("logits".into());
    let got = import(&m).unwrap();
    assert_eq!(got.graph.output, "fc");
    assert_eq!(got.graph.node("fc").unwrap().op, Op::Linear { in_features: 48, out_features: 10, bias: true });
    assert_eq!(got.weights.get_f32("fc.bias").unwrap(), &[1.0; 10]);

    // The MatMul's output also read by another node: the Add cannot become its bias.
    let g = graph(&mut m);
    g.node.push(onnx_node("Add", "/Add_1", &["mm", "logits"], "logits2", vec![]));
    g.output[0].name = Some("logits2".into());
    assert_err(&m, &["/Add", "fc.bias", "bias of a MatMul"]);
}

/// `x.view(x.size(0), -1)`: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
fn view_chain(m: &mut ModelProto, gather_from: &str, tail: &[i64]) {
    let g = graph(m);
    let i64s = |name: &str, dims: &[i64], v: &[i64]| TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(data_type::INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    };
    g.initializer.extend([i64s("zero", &[], &[0]), i64s("axes", &[1], &[0]), i64s("tail", &[tail.len() as i64], tail)]);
    let k = g.node.iter().position(|n| n.name() == "flatten").unwrap();
    g.node[k] = onnx_node("Reshape", "/Reshape", &["c2.relu", "/Concat_output_0"], "flatten", vec![]);
    g.node.splice(
        k..k,
        [
            onnx_node("Shape", "/Shape", &["c2.relu"], "/Shape_output_0", vec![]),
            onnx_node("Gather", "/Gather", &[gather_from, "zero"], "/Gather_output_0", vec![int_attr("axis", 0)]),
            onnx_node("Unsqueeze", "/Unsqueeze", &["/Gather_output_0", "axes"], "/Unsqueeze_output_0", vec![]),
            onnx_node(
                "Concat",
                "/Concat",
                &["/Unsqueeze_output_0", "tail"],
                "/Concat_output_0",
                vec![int_attr("axis", 0)],
            ),
        ],
    );
}

#[test]
fn imports_the_shape_arithmetic_of_view() {
    let mut m = base();
    view_chain(&mut m, "/Shape_output_0", &[-1]);
    let got = import(&m).unwrap();
    assert_eq!(got.graph.node("reshape").unwrap().op, Op::Flatten);
    assert_eq!(got.graph.nodes.len(), model("flatten_2x2").graph.nodes.len());
    let mut m = base();
    view_chain(&mut m, "/Shape_output_0", &[48]);
    import(&m).unwrap();

    let mut m = base();
    view_chain(&mut m, "/Shape_output_0", &[12, -1]);
    assert_err(&m, &["/Reshape", "Reshape to [N, 12, -1]"]);
    let mut m = base();
    view_chain(&mut m, "/Shape_output_0", &[47]);
    assert_err(&m, &["/Reshape", "[N, 47] but the input holds 48"]);
    let mut m = base();
    view_chain(&mut m, "c2.relu", &[-1]);
    assert_err(&m, &["/Gather", "only along the channels (axis 1)"]);
    let mut m = base();
    node(&mut m, "c2.conv").input[0] = "/Shape_output_0".into();
    view_chain(&mut m, "/Shape_output_0", &[-1]);
    node(&mut m, "/Shape").input[0] = "c1.relu".into();
    assert_err(&m, &["c2.conv", "is a shape"]);
}

#[test]
fn shape_errors_name_the_onnx_node() {
    // A conv weight that does not fit its input: reported by the IR checks, named as in the file.
    let mut m = base();
    let t = init(&mut m, "c2.conv.weight");
    t.dims[1] = 4;
    t.raw_data = Some(vec![0; 12 * 4 * 9 * 4]);
    assert_err(&m, &["node `c2.conv` (Conv)", "imported as `c2.conv`", "in_channels"]);
}

#[test]
fn torch_names_become_module_paths() {
    let mut m = base();
    for n in graph(&mut m).node.iter_mut() {
        let name = match n.name() {
            "c1.relu" => "/layer1/layer1.0/relu/Relu",
            // A module with a submodule: its own ops are named inside it.
            "pool1" => "/layer1/layer1.0/MaxPool",
            "fc1.relu" => "/head/Relu",
            "flatten" => "/head/Flatten",
            _ => continue,
        };
        n.name = Some(name.into());
    }
    let got = import(&m).unwrap();
    for want in ["layer1.0.relu", "layer1.0.maxpool", "head.relu", "head.flatten"] {
        assert!(got.graph.node(want).is_some(), "no node {want} in {:?}", got.graph.nodes);
    }
    // The rest keep their exported names, which are the IR's.
    let orig = model("flatten_2x2");
    for n in ["c1.conv", "c1.bn", "c2.conv", "fc1", "drop", "fc2"] {
        assert_eq!(got.graph.node(n).map(|x| &x.op), orig.graph.node(n).map(|x| &x.op), "{n}");
    }
}

#[test]
fn export_rejects_names_onnx_cannot_hold() {
    let g = Graph {
        name: "clash".into(),
        nodes: vec![
            Node { name: "input".into(), op: Op::Input { shape: vec![1, 4, 4] }, inputs: vec![] },
            Node {
                name: "c".into(),
                op: Op::Conv2d {
                    in_channels: 1,
                    out_channels: 1,
                    kernel_size: [1, 1],
                    stride: [1, 1],
                    padding: [0, 0],
                    dilation: [1, 1],
                    groups: 1,
                    bias: false,
                },
                inputs: vec!["input".into()],
            },
            Node { name: "c.weight".into(), op: Op::ReLU, inputs: vec!["c".into()] },
        ],
        output: "c.weight".into(),
        normalize: None,
    };
    let mut w = crate::ir::Weights::default();
    w.insert("c.weight", HostTensor::f32(vec![1, 1, 1, 1], vec![1.0]));
    let m = Model::new(g, w).unwrap();
    let e = to_bytes(&m, ExportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("c.weight") && e.contains("distinct"), "{e}");
}
