//! Channel slices, permutations and ShuffleNet's channel shuffle: the forms torch exports, and
//! the ones import refuses (each error naming the node).

use super::*;

fn shuffle_model() -> Model {
    model("shuffle_block")
}

fn proto() -> ModelProto {
    to_proto(&shuffle_model(), ExportOptions::default()).unwrap()
}

fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(data_type::INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// The permutation `down.shuffle` (a Gather in edgeprune's export) written instead as torch's
/// channel shuffle: Reshape to [N, 2, 6, 8, 8], Transpose (0, 2, 1, 3, 4), Reshape to `back`.
fn torch_shuffle(m: &mut ModelProto, back: &[i64]) {
    let g = graph(m);
    let at = g.node.iter().position(|n| n.name() == "down.shuffle").unwrap();
    let input = g.node[at].input[0].clone();
    g.initializer.push(i64_init("shape5", &[-1, 2, 6, 8, 8]));
    g.initializer.push(i64_init("shape4", back));
    g.node.splice(
        at..=at,
        [
            onnx_node("Reshape", "/down/Reshape", &[&input, "shape5"], "r5", vec![]),
            onnx_node("Transpose", "/down/Transpose", &["r5"], "t5", vec![ints_attr("perm", &[0, 2, 1, 3, 4])]),
            onnx_node("Reshape", "/down/Reshape_1", &["t5", "shape4"], "down.shuffle", vec![]),
        ],
    );
}

#[test]
fn torch_channel_shuffle_becomes_the_permutation() {
    let want = shuffle_model();
    let Some(Op::ChannelPermute { order }) = want.graph.node("down.shuffle").map(|n| n.op.clone()) else {
        panic!("the structure has a permutation")
    };
    assert_eq!(order, vec![0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]);
    for back in [[-1, 12, 8, 8], [0, -1, 8, 8]] {
        let mut m = proto();
        torch_shuffle(&mut m, &back);
        let got = import(&m).unwrap();
        let p = got.graph.nodes.iter().find(|n| matches!(n.op, Op::ChannelPermute { .. }) && n.inputs[0] == "down.cat");
        assert_eq!(p.map(|n| &n.op), Some(&Op::ChannelPermute { order: order.clone() }), "back to {back:?}");
    }
}

#[test]
fn shuffle_slice_and_gather_errors_name_the_node() {
    let mut m = proto();
    torch_shuffle(&mut m, &[-1, 6, 16, 8]);
    assert_err(&m, &["/down/Reshape_1", "only a Reshape back to [N, 12, 8, 8]"]);
    let mut m = proto();
    torch_shuffle(&mut m, &[-1, 12, 8, 8]);
    *attr(node(&mut m, "/down/Transpose"), "perm") = ints_attr("perm", &[0, 1, 2, 4, 3]);
    assert_err(&m, &["/down/Transpose", "only a channel shuffle's Transpose (0, 2, 1, 3, 4)"]);
    let mut m = proto();
    torch_shuffle(&mut m, &[-1, 12, 8, 8]);
    init(&mut m, "shape5").int64_data = vec![-1, 5, 2, 8, 8];
    assert_err(&m, &["/down/Reshape", "not a channel shuffle"]);

    // Slices along other axes, with a step, or empty.
    let slice_input = |m: &mut ModelProto, k: usize| node(m, "unit.x2").input[k].clone();
    let mut m = proto();
    let axes = slice_input(&mut m, 3);
    init(&mut m, &axes).int64_data = vec![2];
    init(&mut m, &axes).raw_data = None;
    assert_err(&m, &["unit.x2", "only along the channels"]);
    let mut m = proto();
    let starts = slice_input(&mut m, 1);
    init(&mut m, &starts).raw_data = None;
    init(&mut m, &starts).int64_data = vec![12];
    assert_err(&m, &["unit.x2", "is empty"]);
    let mut m = proto();
    graph(&mut m).initializer.push(i64_init("two", &[2]));
    node(&mut m, "unit.x2").input.push("two".into());
    assert_err(&m, &["unit.x2", "step 2"]);

    // A Gather of channels that is not a permutation of all of them.
    let mut m = proto();
    let order = node(&mut m, "down.shuffle").input[1].clone();
    init(&mut m, &order).raw_data = None;
    init(&mut m, &order).int64_data = vec![0, 0, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11];
    assert_err(&m, &["down.shuffle", "permutation of all 12 channels"]);
}

#[test]
fn shape_arithmetic_folds_div_sub_and_cast() {
    // Slice ends computed as torch.chunk exports them: (C + 1) / 2, cast, times 1 and 2.
    let mut m = proto();
    let g = graph(&mut m);
    let at = g.node.iter().position(|n| n.name() == "unit.x1").unwrap();
    let x = g.node[at].input[0].clone();
    g.initializer.extend([i64_init("one", &[1]), i64_init("two", &[2]), i64_init("zero", &[0])]);
    let nodes = [
        onnx_node("Shape", "/unit/Shape", &[&x], "s", vec![]),
        onnx_node("Gather", "/unit/Gather", &["s", "one"], "c", vec![int_attr("axis", 0)]),
        onnx_node("Add", "/unit/Add", &["c", "one"], "c1", vec![]),
        onnx_node("Div", "/unit/Div", &["c1", "two"], "half", vec![]),
        onnx_node("Cast", "/unit/Cast", &["half"], "half64", vec![int_attr("to", 7)]),
        onnx_node("Sub", "/unit/Sub", &["half64", "zero"], "end1", vec![]),
        onnx_node("Mul", "/unit/Mul", &["half64", "two"], "end2", vec![]),
    ];
    g.node.splice(at..at, nodes);
    let x1 = g.node.iter_mut().find(|n| n.name() == "unit.x1").unwrap();
    x1.input = vec![x.clone(), "zero".into(), "end1".into(), "one".into()];
    let x2 = g.node.iter_mut().find(|n| n.name() == "unit.x2").unwrap();
    x2.input = vec![x, "half64".into(), "end2".into(), "one".into()];
    let got = import(&m).unwrap();
    let want = shuffle_model();
    for name in ["unit.x1", "unit.x2"] {
        assert_eq!(got.graph.node(name).map(|n| &n.op), want.graph.node(name).map(|n| &n.op), "{name}");
    }
    // Division by zero in shape arithmetic is an error, not a panic.
    init(&mut m, "two").int64_data = vec![0];
    assert_err(&m, &["/unit/Div", "by zero"]);
}

fn convnext() -> ModelProto {
    to_proto(&model("convnext_block"), ExportOptions::default()).unwrap()
}

#[test]
fn convnext_block_round_trips_through_torch_forms() {
    // edgeprune's export writes torch's forms (Transpose, LayerNormalization, MatMul + Add,
    // Div/Erf/Add/Mul/Mul, Mul by a [C, 1, 1] constant); importing it gives the model back.
    let m = model("convnext_block");
    let back = import(&convnext()).unwrap();
    assert_eq!(back.graph, m.graph);
    assert_eq!(back.weights, m.weights);
    // The GELU's two products in the other order, 0.5 first: x * 0.5 * (1 + erf(x / sqrt 2)).
    let mut p = convnext();
    let x = node(&mut p, "block.gelu.div").input[0].clone();
    let half = node(&mut p, "block.gelu").input[1].clone();
    let one_plus = node(&mut p, "block.gelu.mul").input[1].clone();
    node(&mut p, "block.gelu.mul").input = vec![x, half];
    node(&mut p, "block.gelu").input = vec!["block.gelu.mul".into(), one_plus];
    assert_eq!(import(&p).unwrap().graph, m.graph);
}

#[test]
fn channels_last_errors_name_the_node() {
    let mut m = convnext();
    *attr(node(&mut m, "block.norm.nhwc"), "axis") = int_attr("axis", 1);
    assert_err(&m, &["block.norm.nhwc", "only over the channels"]);
    let mut m = convnext();
    *attr(node(&mut m, "block.norm.to_nhwc"), "perm") = ints_attr("perm", &[0, 1, 3, 2]);
    assert_err(&m, &["block.norm.to_nhwc", "Transpose (perm Some([0, 1, 3, 2]))"]);
    // A channel-first map into MatMul would contract its width.
    let mut m = convnext();
    let nchw = node(&mut m, "block.pw1.to_nhwc").input[0].clone();
    node(&mut m, "block.pw1.matmul").input[0] = nchw;
    assert_err(&m, &["block.pw1.matmul", "channel-first feature map"]);
    // Div by anything but sqrt 2, Erf outside a GELU, a scale that is not per channel.
    let mut m = convnext();
    let c = node(&mut m, "block.gelu.div").input[1].clone();
    node(&mut m, &c).attribute[0].t.as_mut().unwrap().raw_data = Some(2f32.to_le_bytes().to_vec());
    assert_err(&m, &["block.gelu.div", "only by sqrt 2"]);
    let mut m = convnext();
    let x = node(&mut m, "block.gelu.div").input[0].clone();
    node(&mut m, "block.gelu.erf").input[0] = x;
    assert_err(&m, &["block.gelu.erf", "only inside an exact GELU"]);
    let mut m = convnext();
    init(&mut m, "block.layer_scale").dims = vec![1, 8, 1];
    assert_err(&m, &["`block`", "per-channel scale"]);
    // A GELU step read by anything else.
    let mut m = convnext();
    let erf = node(&mut m, "block.gelu.erf").output[0].clone();
    node(&mut m, "block.pw2.to_nhwc").input[0] = erf;
    assert_err(&m, &["block.pw2.to_nhwc", "part of an exact GELU"]);
}
