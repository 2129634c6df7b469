//! Files the importer must refuse, each with an error naming what is wrong, and never a panic.

use super::*;

#[test]
fn rejects_empty_garbage_and_truncated_files() {
    let bytes = base().encode_to_vec();
    let e = from_bytes(&[], Path::new(FILE)).unwrap_err().to_string();
    assert!(e.contains(FILE) && e.contains("empty"), "{e}");
    let e = from_bytes(b"hello, not a protobuf", Path::new(FILE)).unwrap_err().to_string();
    assert!(e.contains(FILE), "{e}");
    // Cut anywhere before the end of the graph (the metadata follows it), the file is invalid.
    let mut no_meta = base();
    no_meta.metadata_props.clear();
    let graph_end = no_meta.encode_to_vec().len();
    for cut in (0..graph_end).step_by(7).chain([graph_end - 1]) {
        let e = from_bytes(&bytes[..cut], Path::new(FILE)).err().unwrap_or_else(|| panic!("cut at {cut} imports"));
        assert!(e.to_string().contains(FILE));
    }
}

#[test]
fn corrupted_files_never_panic() {
    let bytes = base().encode_to_vec();
    let mut k: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        k ^= k << 13;
        k ^= k >> 7;
        k ^= k << 17;
        k
    };
    let mut failed = 0;
    for _ in 0..600 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if from_bytes(&b, Path::new(FILE)).is_err() {
            failed += 1;
        }
    }
    assert!(failed > 50, "only {failed} corrupted files were rejected");
}

#[test]
fn rejects_huge_declared_shapes_before_allocating() {
    // 2^80 elements: overflows.
    let mut m = base();
    init(&mut m, "fc2.weight").dims = vec![1 << 40, 1 << 40];
    assert_err(&m, &["fc2.weight", "too large"]);
    // 2^30 floats (4 GiB) declared, 1600 bytes present: rejected before any allocation.
    let mut m = base();
    init(&mut m, "fc2.weight").dims = vec![1 << 20, 1 << 10];
    assert_err(&m, &["fc2.weight", "declares shape [1048576, 1024]", "holds 800 bytes"]);
    let mut m = base();
    init(&mut m, "fc2.weight").dims = vec![-4, 5];
    assert_err(&m, &["fc2.weight", "negative"]);
    // Typed data instead of raw bytes.
    let mut m = base();
    let t = init(&mut m, "c1.bn.weight");
    t.raw_data = None;
    t.float_data = vec![1.0; 3];
    assert_err(&m, &["c1.bn.weight", "holds 3 float_data values"]);
    // A Constant node declaring a huge tensor.
    let mut m = base();
    let big = TensorProto { dims: vec![1 << 30], data_type: Some(data_type::FLOAT), ..Default::default() };
    let n = node(&mut m, "drop.ratio");
    n.attribute = vec![AttributeProto {
        name: Some("value".into()),
        r#type: Some(attribute_type::TENSOR),
        t: Some(big),
        ..Default::default()
    }];
    assert_err(&m, &["drop.ratio", "Constant", "holds 0 float_data values"]);
    // A huge graph input.
    let mut m = base();
    let input = &mut graph(&mut m).input[0];
    let Some(TypeProtoValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else { panic!() };
    t.shape.as_mut().unwrap().dim[2].value = Some(DimensionValue::DimValue(1 << 40));
    assert_err(&m, &["graph input `input`", "dimension 2"]);
    let mut m = base();
    let input = &mut graph(&mut m).input[0];
    let Some(TypeProtoValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else { panic!() };
    for d in 1..4 {
        t.shape.as_mut().unwrap().dim[d].value = Some(DimensionValue::DimValue(1 << 20));
    }
    assert!(err(&m).contains(FILE));
    // Kernel attributes out of range.
    let mut m = base();
    attr(node(&mut m, "pool1"), "strides").ints = vec![1 << 40, 2];
    assert_err(&m, &["pool1", "MaxPool", "strides"]);
}

#[test]
fn rejects_wrong_types() {
    let mut m = base();
    let t = init(&mut m, "c1.conv.weight");
    let n = t.raw_data.as_ref().unwrap().len() / 4;
    t.data_type = Some(data_type::INT64);
    t.raw_data = Some(vec![0; n * 8]);
    assert_err(&m, &["c1.conv", "Conv", "opset 17", "float32"]);

    let mut m = base();
    init(&mut m, "c1.bn.weight").data_type = Some(data_type::FLOAT16);
    assert_err(&m, &["c1.bn", "BatchNormalization", "FLOAT16"]);

    let mut m = base();
    let a = attr(node(&mut m, "c1.conv"), "kernel_shape");
    a.r#type = Some(attribute_type::FLOATS);
    a.floats = vec![3.0, 3.0];
    assert_err(&m, &["c1.conv", "kernel_shape", "must be INTS, got FLOATS"]);

    let mut m = base();
    node(&mut m, "c1.conv").attribute.push(int_attr("bogus", 1));
    assert_err(&m, &["c1.conv", "unexpected attribute `bogus`"]);

    let mut m = base();
    let input = &mut graph(&mut m).input[0];
    let Some(TypeProtoValue::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() else { panic!() };
    t.elem_type = Some(data_type::INT64);
    assert_err(&m, &["graph input `input`", "INT64"]);

    // A constant where a feature map is needed, and the reverse.
    let mut m = base();
    node(&mut m, "c1.relu").input = vec!["c1.bn.weight".into()];
    assert_err(&m, &["c1.relu", "Relu", "constant"]);
    let mut m = base();
    node(&mut m, "c1.conv").input[1] = "input".into();
    assert_err(&m, &["c1.conv", "must be a constant"]);
}

#[test]
fn rejects_cycles_dangling_inputs_and_duplicates() {
    let mut m = base();
    node(&mut m, "c1.conv").input[0] = "c1.relu".into();
    assert_err(&m, &["cycle", "`c1.conv` -> `c1.bn` -> `c1.relu` -> `c1.conv`"]);
    let mut m = base();
    node(&mut m, "fc1.relu").input[0] = "fc1.relu".into();
    assert_err(&m, &["cycle", "`fc1.relu` -> `fc1.relu`"]);

    let mut m = base();
    node(&mut m, "c2.bn").input[0] = "nowhere".into();
    assert_err(&m, &["c2.bn", "BatchNormalization", "`nowhere` is dangling"]);
    let mut m = base();
    graph(&mut m).output[0].name = Some("nowhere".into());
    assert_err(&m, &["graph output `nowhere`"]);

    let mut m = base();
    node(&mut m, "c2.bn").output[0] = "c1.bn".into();
    assert_err(&m, &["c2.bn", "`c1.bn` is already produced by node `c1.bn`"]);
    let mut m = base();
    node(&mut m, "c2.bn").output[0] = "fc1.bias".into();
    assert_err(&m, &["c2.bn", "already defined by an initializer"]);
    let mut m = base();
    let dup = init(&mut m, "fc1.bias").clone();
    graph(&mut m).initializer.push(dup);
    assert_err(&m, &["initializer `fc1.bias` is defined twice"]);
}

#[test]
fn rejects_unknown_ops_and_opsets_naming_the_node() {
    let mut m = base();
    node(&mut m, "c1.relu").op_type = Some("LeakyRelu".into());
    assert_err(&m, &["node `c1.relu` (LeakyRelu, opset 17)", "unsupported op", "Conv, BatchNormalization, Relu"]);
    let mut m = base();
    node(&mut m, "c1.relu").domain = Some("com.microsoft".into());
    assert_err(&m, &["com.microsoft::Relu", "unsupported op"]);

    for v in [12, 19] {
        let mut m = base();
        m.opset_import[0].version = Some(v);
        assert_err(&m, &[&format!("opset {v} is not supported"), "13 to 18"]);
    }
    let mut m = base();
    m.opset_import[0].domain = Some("ai.onnx.ml".into());
    assert_err(&m, &["no opset of the default ONNX domain"]);
    let mut m = base();
    m.graph = None;
    assert_err(&m, &["no graph"]);
}

#[test]
fn the_unsupported_op_error_lists_every_unsupported_op_of_the_model() {
    let mut m = base();
    let names: Vec<String> = graph(&mut m).node.iter().map(|n| n.name().to_string()).collect();
    let relus: Vec<&String> = names.iter().filter(|n| n.ends_with("relu")).collect();
    assert!(relus.len() >= 2, "{names:?}");
    for r in &relus {
        node(&mut m, r).op_type = Some("Gelu".into());
    }
    node(&mut m, names.iter().find(|n| n.ends_with("pool")).unwrap_or(&names[1])).op_type = Some("Einsum".into());
    let e = err(&m);
    assert!(
        e.contains(&format!("In all, the model uses 2 unsupported op type(s): Gelu ({}), Einsum (1)", relus.len())),
        "{e}"
    );
}

#[test]
fn rejects_unsupported_forms_of_supported_ops() {
    type Mutation = Box<dyn Fn(&mut ModelProto)>;
    let cases: Vec<(Mutation, &[&str])> = vec![
        (Box::new(|m| attr(node(m, "c1.conv"), "pads").ints = vec![1, 1, 0, 0]), &["c1.conv", "asymmetric padding"]),
        (
            Box::new(|m| {
                let n = node(m, "c1.conv");
                n.attribute.retain(|a| a.name() != "pads");
                n.attribute.push(AttributeProto {
                    name: Some("auto_pad".into()),
                    r#type: Some(attribute_type::STRING),
                    s: Some(b"SAME_UPPER".to_vec()),
                    ..Default::default()
                });
            }),
            &["c1.conv", "auto_pad SAME_UPPER"],
        ),
        (Box::new(|m| node(m, "c1.bn").attribute.push(int_attr("training_mode", 1))), &["c1.bn", "training_mode"]),
        (Box::new(|m| attr(node(m, "flatten"), "axis").i = Some(2)), &["flatten", "axis 2"]),
        (Box::new(|m| node(m, "fc2").attribute.push(float_attr("alpha", 2.0))), &["fc2", "Gemm", "alpha 2"]),
        (
            Box::new(|m| {
                let n = node(m, "fc1.relu");
                n.op_type = Some("Clip".into());
                n.attribute = vec![float_attr("min", 0.0), float_attr("max", 5.0)];
            }),
            &["fc1.relu", "Clip", "ReLU6"],
        ),
        (
            Box::new(|m| {
                let t = init(m, "c2.conv.weight");
                t.data_location = Some(DATA_LOCATION_EXTERNAL);
            }),
            &["c2.conv", "external file"],
        ),
        (
            Box::new(|m| {
                let g = graph(m);
                let mut extra = g.input[0].clone();
                extra.name = Some("second".into());
                g.input.push(extra);
            }),
            &["2 inputs", "second"],
        ),
        (
            Box::new(|m| {
                let g = graph(m);
                let mut extra = g.output[0].clone();
                extra.name = Some("c1.relu".into());
                g.output.push(extra);
            }),
            &["2 outputs"],
        ),
        (
            Box::new(|m| {
                let g = graph(m);
                g.node.push(onnx_node("Constant", "shape", &[], "shape", vec![ints_attr("value_ints", &[0, 12, -1])]));
                let f = g.node.iter_mut().find(|n| n.name() == "flatten").unwrap();
                f.op_type = Some("Reshape".into());
                f.attribute.clear();
                f.input.push("shape".into());
                let k = g.node.len() - 1;
                g.node.swap(0, k);
            }),
            &["flatten", "Reshape to [0, 12, -1]"],
        ),
        (
            Box::new(|m| {
                let g = graph(m);
                g.node.push(onnx_node("Constant", "shape", &[], "shape", vec![ints_attr("value_ints", &[0, 47])]));
                let f = g.node.iter_mut().find(|n| n.name() == "flatten").unwrap();
                f.op_type = Some("Reshape".into());
                f.attribute.clear();
                f.input.push("shape".into());
                let k = g.node.len() - 1;
                g.node.swap(0, k);
            }),
            &["flatten", "Reshape to [N, 47] but the input holds 48"],
        ),
    ];
    for (mutate, needles) in cases {
        let mut m = base();
        mutate(&mut m);
        assert_err(&m, needles);
    }
}
