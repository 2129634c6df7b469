//! Small networks with the structures pruning must handle beyond the paper's zoo: projection
//! residuals, inception-like branch concats, dense concats, grouped convs, squeeze-and-excitation
//! channel products, depthwise-separable blocks, a flatten of a 2x2 map into a linear layer, and a
//! MobileNetV3 block (hard-swish, hard-sigmoid gate), ShuffleNetV2 units (channel split by
//! slices, channel shuffle by a permutation), and a ConvNeXt block (layer norm over channels,
//! linear layers over channels, GELU, layer scale).
//! Used by the tests (pruning, ONNX) and available from the CLI by name.

use super::Builder;
use crate::ir::{Graph, Op};

pub const STRUCTURES: &[&str] = &[
    "projection_residual",
    "inception",
    "dense",
    "grouped",
    "squeeze_excite",
    "depthwise_separable",
    "flatten_2x2",
    "mobilenetv3_block",
    "shuffle_block",
    "convnext_block",
];

pub fn build(name: &str, classes: usize) -> Option<Graph> {
    Some(match name {
        "projection_residual" => projection_residual(classes),
        "inception" => inception(classes),
        "dense" => dense(classes),
        "grouped" => grouped(classes),
        "squeeze_excite" => squeeze_excite(classes),
        "depthwise_separable" => depthwise_separable(classes),
        "flatten_2x2" => flatten_2x2(classes),
        "mobilenetv3_block" => mobilenetv3_block(classes),
        "shuffle_block" => shuffle_block(classes),
        "convnext_block" => convnext_block(classes),
        _ => return None,
    })
}

fn cbr(b: &mut Builder, name: &str, x: &str, out: usize, k: usize, s: usize, groups: usize) -> String {
    let y = b.conv(&format!("{name}.conv"), x, out, k, s, k / 2, groups, false);
    let y = b.bn(&format!("{name}.bn"), &y);
    b.relu(&format!("{name}.relu"), &y)
}

fn head(b: &mut Builder, x: &str, classes: usize) {
    let x = b.add("pool", Op::GlobalAvgPool, &[x]);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    b.linear("fc", &x, classes);
}

/// Two residual blocks: one with a strided 1x1 conv + BN projection, one with an identity.
pub fn projection_residual(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let y = cbr(&mut b, "b1.a", &x, 12, 3, 2, 1);
    let y = b.conv("b1.b.conv", &y, 12, 3, 1, 1, 1, false);
    let y = b.bn("b1.b.bn", &y);
    let p = b.conv("b1.proj.conv", &x, 12, 1, 2, 0, 1, false);
    let p = b.bn("b1.proj.bn", &p);
    let s = b.add("b1.add", Op::Add, &[&y, &p]);
    let x = b.relu("b1.relu", &s);
    let y = cbr(&mut b, "b2.a", &x, 12, 3, 1, 1);
    let y = b.conv("b2.b.conv", &y, 12, 3, 1, 1, 1, false);
    let y = b.bn("b2.b.bn", &y);
    let s = b.add("b2.add", Op::Add, &[&y, &x]);
    let x = b.relu("b2.relu", &s);
    head(&mut b, &x, classes);
    b.finish("projection_residual")
}

/// An inception-like block: 1x1, 3x3 and pooled 1x1 branches concatenated, then a conv.
pub fn inception(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let a = cbr(&mut b, "inc.b1", &x, 6, 1, 1, 1);
    let m = cbr(&mut b, "inc.b2a", &x, 4, 1, 1, 1);
    let m = cbr(&mut b, "inc.b2b", &m, 6, 3, 1, 1);
    let p = b.add(
        "inc.pool",
        Op::MaxPool2d { kernel_size: [3, 3], stride: [1, 1], padding: [1, 1], ceil_mode: false },
        &[&x],
    );
    let p = cbr(&mut b, "inc.b3", &p, 5, 1, 1, 1);
    let c = b.add("inc.cat", Op::Concat, &[&a, &m, &p]);
    let x = cbr(&mut b, "after", &c, 10, 3, 2, 1);
    head(&mut b, &x, classes);
    b.finish("inception")
}

/// A dense block: each layer reads the concat of the stem and all earlier layers.
pub fn dense(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let stem = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let mut feats = vec![stem];
    for i in 0..3 {
        let inp = if feats.len() == 1 {
            feats[0].clone()
        } else {
            let refs: Vec<&str> = feats.iter().map(|s| s.as_str()).collect();
            b.add(format!("dense{i}.cat"), Op::Concat, &refs)
        };
        feats.push(cbr(&mut b, &format!("dense{i}"), &inp, 4, 3, 1, 1));
    }
    let refs: Vec<&str> = feats.iter().map(|s| s.as_str()).collect();
    let x = b.add("dense.out", Op::Concat, &refs);
    let x = cbr(&mut b, "transition", &x, 8, 1, 1, 1);
    head(&mut b, &x, classes);
    b.finish("dense")
}

/// A grouped 3x3 conv (groups = 4) between plain convs, as in ResNeXt.
pub fn grouped(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let x = cbr(&mut b, "reduce", &x, 16, 1, 1, 1);
    let x = cbr(&mut b, "grouped", &x, 16, 3, 1, 4);
    let x = cbr(&mut b, "expand", &x, 12, 1, 1, 1);
    head(&mut b, &x, classes);
    b.finish("grouped")
}

/// A squeeze-and-excitation block: x * sigmoid(fc2(relu(fc1(gap(x))))), the fcs as 1x1 convs.
pub fn squeeze_excite(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "stem", "input", 12, 3, 1, 1);
    let s = b.add("se.pool", Op::GlobalAvgPool, &[&x]);
    let s = b.conv("se.fc1", &s, 4, 1, 1, 0, 1, true);
    let s = b.relu("se.relu", &s);
    let s = b.conv("se.fc2", &s, 12, 1, 1, 0, 1, true);
    let s = b.add("se.gate", Op::Sigmoid, &[&s]);
    let x = b.add("se.scale", Op::Mul, &[&x, &s]);
    let x = cbr(&mut b, "after", &x, 8, 3, 2, 1);
    head(&mut b, &x, classes);
    b.finish("squeeze_excite")
}

/// MobileNet-style depthwise-separable convs with ReLU6.
pub fn depthwise_separable(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let x = b.conv("dw1.conv", &x, 8, 3, 2, 1, 8, false);
    let x = b.bn("dw1.bn", &x);
    let x = b.add("dw1.relu6", Op::ReLU6, &[&x]);
    let x = b.conv("pw1.conv", &x, 16, 1, 1, 0, 1, false);
    let x = b.bn("pw1.bn", &x);
    let x = b.add("pw1.relu6", Op::ReLU6, &[&x]);
    let x = b.conv("dw2.conv", &x, 16, 3, 1, 1, 16, false);
    let x = b.bn("dw2.bn", &x);
    let x = b.add("dw2.relu6", Op::ReLU6, &[&x]);
    let x = b.conv("pw2.conv", &x, 10, 1, 1, 0, 1, false);
    head(&mut b, &x, classes);
    b.finish("depthwise_separable")
}

/// A MobileNetV3 inverted residual: expand, hard-swish, depthwise, a squeeze-and-excitation gate
/// with hard-sigmoid, project, and the residual sum.
pub fn mobilenetv3_block(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = b.conv("stem.conv", "input", 8, 3, 2, 1, 1, false);
    let x = b.bn("stem.bn", &x);
    let stem = b.add("stem.hswish", Op::HardSwish, &[&x]);
    let x = b.conv("block.expand", &stem, 16, 1, 1, 0, 1, false);
    let x = b.bn("block.expand_bn", &x);
    let x = b.add("block.hswish1", Op::HardSwish, &[&x]);
    let x = b.conv("block.dw", &x, 16, 3, 1, 1, 16, false);
    let x = b.bn("block.dw_bn", &x);
    let x = b.add("block.hswish2", Op::HardSwish, &[&x]);
    let s = b.add("block.se.pool", Op::GlobalAvgPool, &[&x]);
    let s = b.conv("block.se.fc1", &s, 8, 1, 1, 0, 1, true);
    let s = b.relu("block.se.relu", &s);
    let s = b.conv("block.se.fc2", &s, 16, 1, 1, 0, 1, true);
    let s = b.add("block.se.gate", Op::HardSigmoid, &[&s]);
    let x = b.add("block.se.scale", Op::Mul, &[&x, &s]);
    let x = b.conv("block.project", &x, 8, 1, 1, 0, 1, false);
    let x = b.bn("block.project_bn", &x);
    let x = b.add("block.add", Op::Add, &[&stem, &x]);
    head(&mut b, &x, classes);
    b.finish("mobilenetv3_block")
}

/// `nn.ChannelShuffle(groups)` on `channels` channels: output j is input (j % g) * (C / g) + j / g.
fn shuffle(b: &mut Builder, name: &str, x: &str, channels: usize, groups: usize) -> String {
    let per = channels / groups;
    let order = (0..channels).map(|j| (j % groups) * per + j / groups).collect();
    b.add(name, Op::ChannelPermute { order }, &[x])
}

/// Two ShuffleNetV2 units: a downsampling one (both branches convolve the input, concatenated and
/// shuffled) and a basic one (the channels split in halves by slices, the second half convolved,
/// concatenated with the first and shuffled).
pub fn shuffle_block(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let stem = cbr(&mut b, "stem", "input", 8, 3, 1, 1);
    let l = b.conv("down.left.dw", &stem, 8, 3, 2, 1, 8, false);
    let l = b.bn("down.left.dw_bn", &l);
    let l = cbr(&mut b, "down.left.pw", &l, 6, 1, 1, 1);
    let r = cbr(&mut b, "down.right.pw1", &stem, 6, 1, 1, 1);
    let r = b.conv("down.right.dw", &r, 6, 3, 2, 1, 6, false);
    let r = b.bn("down.right.dw_bn", &r);
    let r = cbr(&mut b, "down.right.pw2", &r, 6, 1, 1, 1);
    let x = b.add("down.cat", Op::Concat, &[&l, &r]);
    let x = shuffle(&mut b, "down.shuffle", &x, 12, 2);
    let x1 = b.add("unit.x1", Op::ChannelSlice { start: 0, end: 6 }, &[&x]);
    let x2 = b.add("unit.x2", Op::ChannelSlice { start: 6, end: 12 }, &[&x]);
    let r = cbr(&mut b, "unit.pw1", &x2, 6, 1, 1, 1);
    let r = b.conv("unit.dw", &r, 6, 3, 1, 1, 6, false);
    let r = b.bn("unit.dw_bn", &r);
    let r = cbr(&mut b, "unit.pw2", &r, 6, 1, 1, 1);
    let x = b.add("unit.cat", Op::Concat, &[&x1, &r]);
    let x = shuffle(&mut b, "unit.shuffle", &x, 12, 2);
    head(&mut b, &x, classes);
    b.finish("shuffle_block")
}

/// A ConvNeXt stem and block: patchify conv + LayerNorm2d, then depthwise 7x7, LayerNorm2d,
/// a linear layer over the channels to 4x, GELU, back to 1x, layer scale and the residual sum;
/// the head normalises the pooled channels before the classifier.
pub fn convnext_block(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = b.conv("stem.conv", "input", 8, 2, 2, 0, 1, true);
    let stem = b.add("stem.norm", Op::LayerNorm2d { num_features: 8, eps: 1e-6 }, &[&x]);
    let x = b.conv("block.dw", &stem, 8, 7, 1, 3, 8, true);
    let x = b.add("block.norm", Op::LayerNorm2d { num_features: 8, eps: 1e-6 }, &[&x]);
    let x = b.add("block.pw1", Op::Linear { in_features: 8, out_features: 32, bias: true }, &[&x]);
    let x = b.add("block.gelu", Op::GELU, &[&x]);
    let x = b.add("block.pw2", Op::Linear { in_features: 32, out_features: 8, bias: true }, &[&x]);
    let x = b.add("block", Op::LayerScale { num_features: 8 }, &[&x]);
    let x = b.add("block.add", Op::Add, &[&stem, &x]);
    let x = b.add("pool", Op::GlobalAvgPool, &[&x]);
    let x = b.add("head.norm", Op::LayerNorm2d { num_features: 8, eps: 1e-6 }, &[&x]);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    b.linear("fc", &x, classes);
    b.finish("convnext_block")
}

/// Convs down to a 2x2 map, flattened (4 features per channel) into a hidden linear layer with
/// dropout, then the classifier.
pub fn flatten_2x2(classes: usize) -> Graph {
    let mut b = Builder::new([3, 16, 16]);
    let x = cbr(&mut b, "c1", "input", 8, 3, 2, 1);
    let x = b.max_pool("pool1", &x, 2, 2);
    let x = cbr(&mut b, "c2", &x, 12, 3, 2, 1);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    let x = b.linear("fc1", &x, 20);
    let x = b.relu("fc1.relu", &x);
    let x = b.add("drop", Op::Dropout { p: 0.5 }, &[&x]);
    b.linear("fc2", &x, classes);
    b.finish("flatten_2x2")
}
