//! One integration test per torchvision CNN family (issue "Your network, your images").
//!
//! tests/reference/torchvision/make.py builds each family from torchvision's own model class at a
//! reduced width, exports it as a user would (TorchScript exporter, opset 17, BatchNorm kept) and
//! records onnxruntime's logits on 4 pseudo-random images. For every family:
//! (1) edgeprune imports the file and matches onnxruntime within 1e-4 (absolute; logits are of
//!     order one);
//! (2) analysis finds the groups the family is known to have, this many of them prunable;
//! (3) pruning 30% of the parameters (the paper criterion, global ranking, the CLI's default
//!     limits) removes between 25 and 35% of them;
//! (4) the pruned network exported to ONNX imports back to the same graph and weights and, where
//!     a Python with onnxruntime is found (see `common::reference::python`), onnxruntime gives
//!     edgeprune's pruned outputs within 1e-4.
//! The transformers (ViT, Swin, MaxViT) are refused with an error naming the node at fault and
//! every op type the model uses that import does not support.

mod common;

use std::path::{Path, PathBuf};

use common::reference::{errors, images, onnx_run, predict, python, read_safetensors, write_input};
use edgeprune::analysis;
use edgeprune::criteria::Criterion;
use edgeprune::engine::Device;
use edgeprune::formats;
use edgeprune::ir::Model;
use edgeprune::surgery::planner::{Limits, Scope, Target};
use edgeprune::workflow::PruneRequest;

const TOL: f64 = 1e-4;
/// make.py's `SEED` and batch.
const SEED: u32 = 7;
const BATCH: usize = 4;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/torchvision")
}

fn prune30(m: &Model) -> Model {
    let request = PruneRequest {
        criterion: Criterion::Paper,
        scope: Scope::Global,
        target: Target::Params(30.0),
        limits: Limits { min_share: 0.1, ..Limits::default() },
        batch_size: 128,
        max_batches: 1,
        seed: 0,
        device: Device::Cpu,
    };
    request.run(&mut m.clone(), None).unwrap().model
}

/// Checks one family; `groups` and `prunable` are what analysis is known to find.
fn family(name: &str, groups: usize, prunable: usize) {
    let m = formats::load_model(&dir().join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let shape = m.graph.input_shape().unwrap();
    let x = images(shape, BATCH, SEED);
    let y = read_safetensors(&dir().join(format!("{name}.safetensors")));
    let (abs, rel) = errors(&predict(&m, &x, BATCH), y.get_f32("y").unwrap(), BATCH);
    eprintln!(
        "{name}: {} params, input {shape:?}, vs onnxruntime max abs {abs:.2e} (rel {rel:.2e})",
        m.graph.num_parameters()
    );
    assert!(abs <= TOL, "{name}: imported vs onnxruntime max abs {abs:.2e}");

    let found = analysis::groups(&m.graph).unwrap();
    let can = found.iter().filter(|g| g.prunable()).count();
    eprintln!("{name}: {can} of {} groups prunable", found.len());
    assert_eq!((found.len(), can), (groups, prunable), "{name}: (groups, prunable)");

    let pruned = prune30(&m);
    let (before, after) = (m.graph.num_parameters(), pruned.graph.num_parameters());
    let removed = 100.0 * (before - after) as f64 / before as f64;
    eprintln!("{name}: pruned {before} -> {after} parameters ({removed:.1}% removed)");
    assert!((25.0..=35.0).contains(&removed), "{name}: {removed:.1}% of the parameters removed");
    let ours = predict(&pruned, &x, BATCH);
    assert!(ours.iter().all(|v| v.is_finite()), "{name}: pruned outputs not finite");

    let t = tempfile::tempdir().unwrap();
    let exported = t.path().join(format!("{name}.p30.onnx"));
    formats::export_onnx(&pruned, &exported, false).unwrap();
    let back = formats::load_model(&exported).unwrap();
    assert_eq!(back.graph, pruned.graph, "{name}: export -> import changed the graph");
    assert_eq!(back.weights, pruned.weights, "{name}: export -> import changed the weights");
    let py = match python() {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("SKIPPED {name} in onnxruntime: no Python with onnxruntime (set EDGEPRUNE_PYTHON)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (input, output) = (t.path().join("x.safetensors"), t.path().join("y.safetensors"));
    write_input(&pruned, &x, BATCH, &input);
    onnx_run(&py, &[(exported, input, output.clone())]);
    let (abs, rel) = errors(read_safetensors(&output).get_f32("y").unwrap(), &ours, BATCH);
    eprintln!("{name}: pruned export in onnxruntime vs edgeprune max abs {abs:.2e} (rel {rel:.2e})");
    assert!(abs <= TOL, "{name}: pruned export in onnxruntime vs edgeprune max abs {abs:.2e}");
}

/// A family edgeprune does not import (the transformers): refused with an error that names the
/// ONNX node at fault and every op type of the model import does not support.
fn refused(name: &str) {
    let e = formats::load_model(&dir().join(format!("{name}.onnx"))).unwrap_err().to_string();
    eprintln!("{name}: {e}");
    assert!(e.contains(&format!("{name}.onnx: node `")), "{name}: {e}");
    assert!(e.contains("unsupported op type(s): ") && e.contains("Softmax"), "{name}: {e}");
}

macro_rules! families {
    ($($name:ident: $groups:expr, $prunable:expr;)* @refused $($no:ident),*) => {
        $(#[test] fn $name() { family(stringify!($name), $groups, $prunable); })*
        $(#[test] fn $no() { refused(stringify!($no)); })*

        /// Every family make.py writes has its test here.
        #[test]
        fn every_committed_family_is_tested() {
            let tested = [$(stringify!($name)),*, $(stringify!($no)),*];
            let committed = common::reference::onnx_stems(&dir());
            let mut t: Vec<String> = tested.iter().map(|s| s.to_string()).collect();
            t.sort();
            assert_eq!(committed, t);
        }
    };
}

families! {
    alexnet: 9, 7;
    vgg: 12, 10;
    resnet: 14, 12;
    resnext: 15, 13;
    wide_resnet: 15, 13;
    densenet: 30, 28;
    googlenet: 59, 57;
    inception_v3: 96, 94;
    squeezenet: 27, 25;
    mobilenet_v2: 27, 25;
    mobilenet_v3_small: 28, 26;
    mobilenet_v3_large: 32, 30;
    mnasnet: 27, 25;
    efficientnet: 42, 40;
    efficientnet_v2: 18, 16;
    regnet_x: 16, 14;
    regnet_y: 21, 19;
    shufflenet_v2: 21, 19;
    convnext: 11, 9;
    @refused vit, swin, maxvit
}
