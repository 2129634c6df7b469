//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_regressions.rs`: one function
//! per loader, each feeding untrusted bytes through the real parsing and validation path (and the
//! analysis that follows a load). Errors are the expected outcome for most inputs; a panic, an
//! abort, a hang or a huge allocation is a bug. Nothing here touches the compute engine.

use std::path::Path;
use std::sync::OnceLock;

use crate::data::Split;
use crate::ir::{Graph, Model};
use crate::protocol::recipe::Recipe;
use crate::surgery::Plan;
use crate::train::TrainConfig;
use crate::{analysis, data, formats, surgery, zoo};

/// The names of the targets, as folders of `fuzz/corpus/` and `tests/fuzz_regressions/`.
pub const TARGETS: &[&str] =
    &["graph_json", "safetensors", "onnx", "plan_json", "toml_config", "cifar", "image", "image_tar", "idx"];

/// Runs the target called `name` on `bytes`; false if there is no such target.
pub fn run(name: &str, bytes: &[u8]) -> bool {
    match name {
        "graph_json" => graph_json(bytes),
        "safetensors" => safetensors(bytes),
        "onnx" => onnx(bytes),
        "plan_json" => plan_json(bytes),
        "toml_config" => toml_config(bytes),
        "cifar" => cifar(bytes),
        "image" => image(bytes),
        "image_tar" => image_tar(bytes),
        "idx" => idx(bytes),
        _ => return false,
    }
    true
}

/// What a loaded graph goes through next: cost model and pruning groups.
fn analyse(graph: &Graph) {
    let _ = analysis::cost(graph);
    let _ = analysis::groups(graph);
}

/// `graph.json`: JSON parse, header check, shape inference; then cost and groups.
pub fn graph_json(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(graph) = formats::native::graph_from_json(text, Path::new("graph.json")) {
        analyse(&graph);
    }
}

/// A small graph the weights targets check against (flatten_2x2: conv, BN, flatten into linear).
fn small_graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(|| zoo::structures::flatten_2x2(10))
}

/// `weights.safetensors`: parse, then check against a graph as a model folder load does.
pub fn safetensors(bytes: &[u8]) {
    if let Ok(weights) = formats::native::weights_from_safetensors(bytes, Path::new("weights.safetensors")) {
        let _ = Model::new(small_graph().clone(), weights);
    }
}

/// An `.onnx` file: the full import (protobuf decode, graph, initializers, weights); then cost
/// and groups of the imported graph.
pub fn onnx(bytes: &[u8]) {
    if let Ok(model) = formats::onnx::from_bytes(bytes, Path::new("model.onnx")) {
        analyse(&model.graph);
    }
}

/// The model plans are applied to: ResNet-20 with fresh weights, built once.
fn plan_model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let graph = zoo::build("resnet20", 10).expect("resnet20 is in the zoo");
        Model::init(graph, 0).expect("resnet20 initialises")
    })
}

/// `plan.json`: parse, then validate and apply to ResNet-20.
pub fn plan_json(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(plan) = Plan::from_json(text, Path::new("plan.json")) {
        let _ = surgery::apply(plan_model(), &plan);
    }
}

/// A TOML recipe: as a training config, and as an experiment recipe (validated, every network's
/// hyperparameters resolved).
pub fn toml_config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(cfg) = TrainConfig::from_toml(text) {
        let _ = cfg.to_toml();
    }
    if let Ok(recipe) = toml::from_str::<Recipe>(text)
        && recipe.validate().is_ok()
    {
        for n in &recipe.networks {
            let _ = recipe.resolve(n);
        }
    }
}

/// A CIFAR binary file, read both as a CIFAR-10 batch and as a CIFAR-100 file.
pub fn cifar(bytes: &[u8]) {
    let _ = data::cifar10_from_bytes(bytes, Path::new("data_batch_1.bin"));
    let _ = data::cifar100_from_bytes(bytes, Path::new("train.bin"));
}

/// One encoded image (PNG or JPEG), decoded as an ImageFolder image is.
pub fn image(bytes: &[u8]) {
    let _ = data::image_from_bytes(bytes, "train/cat/0.png");
}

/// An IDX images file and labels file: the bytes split at the first byte's share of the length,
/// read as the two files of an MNIST-style split.
pub fn idx(bytes: &[u8]) {
    let Some((&cut, rest)) = bytes.split_first() else { return };
    let at = rest.len() * usize::from(cut) / 256;
    let (images, labels) = rest.split_at(at);
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    if let Ok(ds) = data::idx_from_bytes(images, Path::new("images"), labels, Path::new("labels"), classes) {
        let _ = ds.fit(data::fit::Target { channels: 3, size: Some([8, 8]) });
    }
}

/// A `.tar.gz` ImageFolder: both splits read and decoded.
pub fn image_tar(bytes: &[u8]) {
    for split in [Split::Train, Split::Test] {
        let _ = data::archive_from_bytes(bytes, Path::new("images.tar.gz"), split);
    }
}
