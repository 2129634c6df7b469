//! The CIFAR networks of the paper (docs/protocol.md), built as IR graphs with the state_dict names of
//! the usual PyTorch CIFAR implementations, for any number of classes.

mod builder;
pub mod structures;

pub use builder::Builder;

use crate::error::{Error, Result};
use crate::ir::{Graph, Op};

/// Names accepted by [`build`].
pub const NETWORKS: &[&str] = &["alexnet", "resnet20", "resnet56", "mobilenetv2", "squeezenet"];

/// Builds a zoo network by name for 3x32x32 images and `num_classes` outputs.
/// The most output classes a zoo network may be built with (ImageNet-21k has 21,841): a larger
/// count is refused before any weight is allocated.
pub const MAX_CLASSES: usize = 100_000;

pub fn build(name: &str, num_classes: usize) -> Result<Graph> {
    if num_classes == 0 || num_classes > MAX_CLASSES {
        return Err(Error::config("num_classes", format!("{num_classes} is not in 1..={MAX_CLASSES}")));
    }
    Ok(match name {
        "alexnet" => alexnet(num_classes),
        "resnet20" => resnet(3, num_classes, "resnet20"),
        "resnet56" => resnet(9, num_classes, "resnet56"),
        "mobilenetv2" => mobilenetv2(num_classes),
        "squeezenet" => squeezenet(num_classes),
        other if structures::STRUCTURES.contains(&other) => structures::build(other, num_classes).expect("listed"),
        other => {
            return Err(Error::config(
                "model",
                format!(
                    "unknown zoo network `{other}`; known: {}, and the test structures {}",
                    NETWORKS.join(", "),
                    structures::STRUCTURES.join(", ")
                ),
            ));
        }
    })
}

/// CIFAR AlexNet: five convs with bias and no BN, three max-pools, one linear layer.
pub fn alexnet(num_classes: usize) -> Graph {
    let mut b = Builder::new([3, 32, 32]);
    let x = b.conv("features.0", "input", 64, 11, 4, 5, 1, true);
    let x = b.relu("features.1", &x);
    let x = b.max_pool("features.2", &x, 2, 2);
    let x = b.conv("features.3", &x, 192, 5, 1, 2, 1, true);
    let x = b.relu("features.4", &x);
    let x = b.max_pool("features.5", &x, 2, 2);
    let x = b.conv("features.6", &x, 384, 3, 1, 1, 1, true);
    let x = b.relu("features.7", &x);
    let x = b.conv("features.8", &x, 256, 3, 1, 1, 1, true);
    let x = b.relu("features.9", &x);
    let x = b.conv("features.10", &x, 256, 3, 1, 1, 1, true);
    let x = b.relu("features.11", &x);
    let x = b.max_pool("features.12", &x, 2, 2);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    b.linear("classifier", &x, num_classes);
    b.finish("alexnet")
}

/// CIFAR ResNet (He et al. 2016) with `n` basic blocks per stage (n = 3: ResNet-20, n = 9:
/// ResNet-56), 16/32/64 channels, and 1x1 conv + BN projection shortcuts where the shape changes.
pub fn resnet(n: usize, num_classes: usize, name: &str) -> Graph {
    let mut b = Builder::new([3, 32, 32]);
    let x = b.conv("conv1", "input", 16, 3, 1, 1, 1, false);
    let x = b.bn("bn1", &x);
    let mut x = b.relu("relu", &x);
    for (stage, planes) in [16usize, 32, 64].into_iter().enumerate() {
        for blk in 0..n {
            let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
            let p = format!("layer{}.{blk}", stage + 1);
            let y = b.conv(&format!("{p}.conv1"), &x, planes, 3, stride, 1, 1, false);
            let y = b.bn(&format!("{p}.bn1"), &y);
            let y = b.relu(&format!("{p}.relu1"), &y);
            let y = b.conv(&format!("{p}.conv2"), &y, planes, 3, 1, 1, 1, false);
            let y = b.bn(&format!("{p}.bn2"), &y);
            let short = if stride != 1 || b.channels(&x) != planes {
                let s = b.conv(&format!("{p}.shortcut.0"), &x, planes, 1, stride, 0, 1, false);
                b.bn(&format!("{p}.shortcut.1"), &s)
            } else {
                x.clone()
            };
            let s = b.add(format!("{p}.add"), Op::Add, &[&y, &short]);
            x = b.relu(&format!("{p}.relu2"), &s);
        }
    }
    let x = b.add("avgpool", Op::GlobalAvgPool, &[&x]);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    b.linear("linear", &x, num_classes);
    b.finish(name)
}

/// CIFAR MobileNetV2: stem stride 1, inverted residual blocks (expand 1x1, depthwise 3x3,
/// project 1x1, each with BN), identity shortcut where stride 1 and in == out, conv shortcut
/// where stride 1 and in != out; 320 -> 1280 conv, 4x4 average pool, linear.
pub fn mobilenetv2(num_classes: usize) -> Graph {
    const CFG: [(usize, usize, usize, usize); 7] =
        [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];
    let mut b = Builder::new([3, 32, 32]);
    let x = b.conv("conv1", "input", 32, 3, 1, 1, 1, false);
    let x = b.bn("bn1", &x);
    let mut x = b.relu("relu1", &x);
    let mut i = 0;
    for (t, c, n, s) in CFG {
        for k in 0..n {
            let stride = if k == 0 { s } else { 1 };
            let p = format!("layers.{i}");
            let inp = b.channels(&x);
            let planes = t * inp;
            let y = b.conv(&format!("{p}.conv1"), &x, planes, 1, 1, 0, 1, false);
            let y = b.bn(&format!("{p}.bn1"), &y);
            let y = b.relu(&format!("{p}.relu1"), &y);
            let y = b.conv(&format!("{p}.conv2"), &y, planes, 3, stride, 1, planes, false);
            let y = b.bn(&format!("{p}.bn2"), &y);
            let y = b.relu(&format!("{p}.relu2"), &y);
            let y = b.conv(&format!("{p}.conv3"), &y, c, 1, 1, 0, 1, false);
            let y = b.bn(&format!("{p}.bn3"), &y);
            x = if stride == 1 {
                let short = if inp != c {
                    let s = b.conv(&format!("{p}.shortcut.0"), &x, c, 1, 1, 0, 1, false);
                    b.bn(&format!("{p}.shortcut.1"), &s)
                } else {
                    x.clone()
                };
                b.add(format!("{p}.add"), Op::Add, &[&y, &short])
            } else {
                y
            };
            i += 1;
        }
    }
    let x = b.conv("conv2", &x, 1280, 1, 1, 0, 1, false);
    let x = b.bn("bn2", &x);
    let x = b.relu("relu2", &x);
    let k = b.spatial(&x);
    let x = b.avg_pool("avgpool", &x, k);
    let x = b.add("flatten", Op::Flatten, &[&x]);
    b.linear("linear", &x, num_classes);
    b.finish("mobilenetv2")
}

/// CIFAR SqueezeNet (v1.0 fire modules with BN after every conv): conv 3-96 k3 + BN, max-pools,
/// fire2..fire9, a 1x1 conv classifier 512 -> classes, global average pool.
pub fn squeezenet(num_classes: usize) -> Graph {
    fn fire(b: &mut Builder, name: &str, x: &str, squeeze: usize, expand: usize) -> String {
        let s = b.conv(&format!("{name}.conv1"), x, squeeze, 1, 1, 0, 1, true);
        let s = b.bn(&format!("{name}.bn1"), &s);
        let s = b.relu(&format!("{name}.relu1"), &s);
        let e1 = b.conv(&format!("{name}.conv2"), &s, expand, 1, 1, 0, 1, true);
        let e1 = b.bn(&format!("{name}.bn2"), &e1);
        let e3 = b.conv(&format!("{name}.conv3"), &s, expand, 3, 1, 1, 1, true);
        let e3 = b.bn(&format!("{name}.bn3"), &e3);
        let c = b.add(format!("{name}.cat"), Op::Concat, &[&e1, &e3]);
        b.relu(&format!("{name}.relu2"), &c)
    }
    let mut b = Builder::new([3, 32, 32]);
    let x = b.conv("conv1", "input", 96, 3, 1, 1, 1, true);
    let x = b.bn("bn1", &x);
    let x = b.relu("relu", &x);
    let x = b.max_pool("maxpool1", &x, 2, 2);
    let x = fire(&mut b, "fire2", &x, 16, 64);
    let x = fire(&mut b, "fire3", &x, 16, 64);
    let x = fire(&mut b, "fire4", &x, 32, 128);
    let x = b.max_pool("maxpool2", &x, 2, 2);
    let x = fire(&mut b, "fire5", &x, 32, 128);
    let x = fire(&mut b, "fire6", &x, 48, 192);
    let x = fire(&mut b, "fire7", &x, 48, 192);
    let x = fire(&mut b, "fire8", &x, 64, 256);
    let x = b.max_pool("maxpool3", &x, 2, 2);
    let x = fire(&mut b, "fire9", &x, 64, 256);
    let x = b.conv("conv2", &x, num_classes, 1, 1, 0, 1, true);
    let x = b.add("avgpool", Op::GlobalAvgPool, &[&x]);
    b.add("flatten", Op::Flatten, &[&x]);
    b.finish("squeezenet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_paper() {
        // docs/protocol.md, "Networks": trainable parameters for 100 classes.
        assert_eq!(build("alexnet", 100).unwrap().num_parameters(), 2_495_396);
        assert_eq!(build("resnet20", 100).unwrap().num_parameters(), 278_324);
        assert_eq!(build("mobilenetv2", 100).unwrap().num_parameters(), 2_412_212);
        assert_eq!(build("squeezenet", 100).unwrap().num_parameters(), 781_156);
    }

    #[test]
    fn any_number_of_classes() {
        for name in NETWORKS {
            for classes in [1, 10, 100, 1000] {
                let g = build(name, classes).unwrap();
                let shapes = g.infer_shapes().unwrap();
                assert_eq!(shapes[g.output_index().unwrap()], vec![classes], "{name}");
            }
        }
        // ResNet-56 for 10 classes: 0.85M parameters with projection shortcuts.
        let r56 = build("resnet56", 10).unwrap().num_parameters();
        assert!((850_000..870_000).contains(&r56), "{r56}");
        assert!(build("vgg", 10).is_err());
        assert!(build("resnet20", 0).is_err());
    }
}
