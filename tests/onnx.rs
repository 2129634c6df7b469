//! ONNX import and export against onnxruntime.
//!
//! The reference files in tests/reference/onnx/ were exported by PyTorch (TorchScript exporter,
//! opsets 13 to 18, BatchNorm kept and folded) and run by onnxruntime; see make_onnx.py there.
//! (a) edgeprune's outputs on every imported model match onnxruntime's committed outputs within
//! 1e-4 (absolute, and relative to the largest output);
//! (b) each imported model pruned at 50% of its parameters, exported (BatchNorm kept and folded)
//! and run in onnxruntime gives edgeprune's pruned outputs within 1e-4, with fewer parameters;
//! the zoo networks built here are exported and run the same way. This needs a Python with
//! onnxruntime, from `$EDGEPRUNE_PYTHON` or ~/.cache/edgeprune/pyref/bin/python; without one the
//! test prints a notice and skips (with `$EDGEPRUNE_PYTHON` set, a failing Python is an error);
//! (c) import -> export -> import gives the same graph and weights; exporting with BatchNorm
//! folded gives the same outputs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::reference::{errors, images, onnx_stems, predict, python, read_safetensors};

use edgeprune::analysis;
use edgeprune::criteria::{Criterion, score};
use edgeprune::formats::{self, native, onnx};
use edgeprune::ir::{HostTensor, Model, Op, Weights};
use edgeprune::surgery::{
    self,
    planner::{Limits, Scope, Target, make_plan},
};
use edgeprune::zoo;

const TOL: f64 = 1e-4;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/onnx")
}

/// The committed cases (file stems), sorted.
fn cases() -> Vec<String> {
    let v = onnx_stems(&reference_dir());
    assert!(v.len() >= 20, "reference files missing: {v:?}");
    v
}

fn tensors(path: &Path) -> Weights {
    read_safetensors(path)
}

/// The case's input (x, its batch size) and onnxruntime's output.
fn io(case: &str) -> (Vec<f32>, usize, Vec<f32>) {
    let t = tensors(&reference_dir().join(format!("{case}.safetensors")));
    let x = t.get("x").unwrap();
    (x.as_f32().unwrap().to_vec(), x.shape[0], t.get_f32("y").unwrap().to_vec())
}

fn load(case: &str) -> Model {
    // Through the generic loader, as every command does.
    formats::load_model(&reference_dir().join(format!("{case}.onnx"))).unwrap_or_else(|e| panic!("{case}: {e}"))
}

#[test]
fn a_imported_models_match_onnxruntime() {
    let mut worst = (0f64, 0f64);
    for case in cases() {
        let m = load(&case);
        let (x, n, y) = io(&case);
        let (abs, rel) = errors(&predict(&m, &x, n), &y, n);
        eprintln!("(a) {case:<28} {:>7} params  max abs {abs:.2e}  rel {rel:.2e}", m.graph.num_parameters());
        assert!(abs <= TOL && rel <= TOL, "{case}: max abs {abs:.2e}, rel {rel:.2e}");
        worst = (worst.0.max(abs), worst.1.max(rel));
    }
    eprintln!("(a) worst: max abs {:.2e}, rel {:.2e}", worst.0, worst.1);
}

#[test]
fn a_torch_names_are_kept() {
    let kept = load("resnet20.kept");
    let zoo = zoo::build("resnet20", 10).unwrap();
    // Every parameterised node of the zoo network is found under its PyTorch name.
    let keys: Vec<String> = zoo.tensor_specs().into_iter().map(|(k, _)| k).collect();
    let got: Vec<String> = kept.graph.tensor_specs().into_iter().map(|(k, _)| k).collect();
    assert_eq!(got, keys);
    // With BatchNorm folded, the unfolded layers keep their names too.
    let folded = load("resnet20.folded");
    assert!(folded.weights.tensors.contains_key("linear.weight"));
    assert!(folded.graph.node("linear").is_some());
}

#[test]
fn c_import_export_import_is_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let m = load(&case);
        let path = dir.path().join(format!("{case}.onnx"));
        formats::export_onnx(&m, &path, false).unwrap();
        let back = formats::load_model(&path).unwrap();
        assert_eq!(back.graph, m.graph, "{case}");
        assert_eq!(back.weights, m.weights, "{case}");
        // A second export is byte for byte the first.
        let again = onnx::to_bytes(&back, onnx::ExportOptions::default()).unwrap();
        assert_eq!(again, std::fs::read(&path).unwrap(), "{case}");
    }
}

#[test]
fn c_folded_export_gives_the_same_outputs() {
    for case in cases().into_iter().filter(|c| c.ends_with(".kept")) {
        let m = load(&case);
        let bytes = onnx::to_bytes(&m, onnx::ExportOptions { fold_bn: true }).unwrap();
        let folded = onnx::from_bytes(&bytes, Path::new("folded.onnx")).unwrap();
        assert!(folded.graph.nodes.len() < m.graph.nodes.len(), "{case}: nothing folded");
        let (x, n, _) = io(&case);
        let (abs, rel) = errors(&predict(&folded, &x, n), &predict(&m, &x, n), n);
        assert!(abs <= TOL && rel <= TOL, "{case}: folded vs kept max abs {abs:.2e}, rel {rel:.2e}");
    }
}

/// A zoo network with He-scaled weights (PyTorch's default initialisation, which the IR's follows,
/// shrinks the signal layer by layer), random BatchNorm parameters and statistics, and the
/// classifier (the last conv or linear layer; what follows it in the zoo is linear) scaled so that
/// the largest logit on `x` is 5, as the references are (see make_onnx.py).
fn zoo_model(name: &str, seed: u64, x: &[f32], n: usize) -> Model {
    let mut m = Model::init(zoo::build(name, 10).unwrap(), seed).unwrap();
    let mut k = seed as u32 ^ 0x2545_f491;
    let mut next = move || {
        k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (k >> 8) as f32 / (1u32 << 24) as f32
    };
    for (key, t) in m.weights.tensors.iter_mut() {
        let rank = t.shape.len();
        let Some(v) = t.as_f32_mut() else { continue };
        if rank >= 2 {
            // uniform(+-1/sqrt(fan_in)) * sqrt(6) has He's variance 2 / fan_in.
            v.iter_mut().for_each(|x| *x *= 6f32.sqrt());
        } else if key.ends_with("running_var") || (rank == 1 && key.ends_with(".weight")) {
            v.iter_mut().for_each(|x| *x = 0.5 + next());
        } else if key.ends_with("running_mean") || key.ends_with(".bias") {
            v.iter_mut().for_each(|x| *x = 0.2 * next() - 0.1);
        }
    }
    let scale = 5.0 / predict(&m, x, n).iter().fold(0f32, |a, y| a.max(y.abs()));
    let last = m.graph.nodes.iter().rev().find(|n| matches!(n.op, Op::Conv2d { .. } | Op::Linear { .. })).unwrap();
    for key in [format!("{}.weight", last.name), format!("{}.bias", last.name)] {
        if let Some(v) = m.weights.tensors.get_mut(&key).and_then(|t| t.as_f32_mut()) {
            v.iter_mut().for_each(|w| *w *= scale);
        }
    }
    m
}

fn prune_half(m: &Model) -> Model {
    let groups = analysis::groups(&m.graph).unwrap();
    let scores = score(Criterion::Paper, m, &groups, None, 0).unwrap();
    let plan = make_plan(&m.graph, &groups, &scores, &Target::Params(50.0), Scope::Global, &Limits::default()).unwrap();
    surgery::apply(m, &plan).unwrap()
}

#[test]
fn b_pruned_exports_run_in_onnxruntime() {
    let py = match python() {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!(
                "SKIPPED b_pruned_exports_run_in_onnxruntime: no Python with onnxruntime (set EDGEPRUNE_PYTHON, or \
                 install torch/onnxruntime in ~/.cache/edgeprune/pyref)"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    // (label, model, input, batch, params before pruning or 0)
    let mut jobs: Vec<(String, Model, Vec<f32>, usize, usize)> = Vec::new();
    for case in cases() {
        let m = load(&case);
        let (x, n, _) = io(&case);
        let pruned = prune_half(&m);
        let (before, after) = (m.graph.num_parameters(), pruned.graph.num_parameters());
        assert!(after < before, "{case}: {after} parameters after pruning, {before} before");
        jobs.push((format!("{case}.pruned"), pruned, x, n, before));
    }
    for (i, name) in zoo::NETWORKS.iter().enumerate() {
        let x = images(&[3, 32, 32], 2, i as u32);
        let m = zoo_model(name, i as u64, &x, 2);
        jobs.push((format!("zoo.{name}"), m, x, 2, 0));
    }
    let mut args: Vec<PathBuf> = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/onnx_run.py")];
    let mut expected = Vec::new();
    for (label, m, x, n, before) in &jobs {
        let input = dir.path().join(format!("{label}.x.safetensors"));
        let mut w = Weights::default();
        let mut shape = vec![*n];
        shape.extend(m.graph.input_shape().unwrap());
        w.insert("x", HostTensor::f32(shape, x.clone()));
        std::fs::write(&input, native::weights_to_safetensors(&w)).unwrap();
        let ours = predict(m, x, *n);
        for fold in [false, true] {
            let tag = format!("{label}{}", if fold { ".folded" } else { "" });
            let model = dir.path().join(format!("{tag}.onnx"));
            formats::export_onnx(m, &model, fold).unwrap();
            let out = dir.path().join(format!("{tag}.y.safetensors"));
            args.extend([model, input.clone(), out.clone()]);
            expected.push((tag, out, ours.clone(), *n, m.graph.num_parameters(), *before));
        }
    }
    let run = Command::new(&py).args(&args).output().unwrap();
    assert!(run.status.success(), "onnxruntime failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let mut worst = (0f64, 0f64);
    for (tag, out, ours, n, params, before) in expected {
        let (abs, rel) = errors(tensors(&out).get_f32("y").unwrap(), &ours, n);
        let counts =
            if before > 0 { format!("{before:>7} -> {params:>7} params") } else { format!("{params:>18} params") };
        eprintln!("(b) {tag:<38} {counts}  max abs {abs:.2e}  rel {rel:.2e}");
        assert!(abs <= TOL && rel <= TOL, "{tag}: onnxruntime vs edgeprune max abs {abs:.2e}, rel {rel:.2e}");
        worst = (worst.0.max(abs), worst.1.max(rel));
    }
    eprintln!("(b) worst: max abs {:.2e}, rel {:.2e}", worst.0, worst.1);
}

/// The argmax of every image of `ds`, as edgeprune's evaluation scores it.
fn predictions(m: &Model, ds: &edgeprune::data::Dataset) -> Vec<u8> {
    let (logits, classes) = common::logits(m, ds);
    logits
        .chunks_exact(classes)
        .map(|row| row.iter().enumerate().fold(0, |a, (i, v)| if *v > row[a] { i } else { a }) as u8)
        .collect()
}

fn digits(p: &[u8]) -> String {
    p.iter().map(|d| char::from(b'0' + d)).collect()
}

/// How many positions of two equally long prediction strings differ.
fn mismatches(a: &str, b: &str) -> usize {
    assert_eq!(a.len(), b.len());
    a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count()
}

/// Issue 5, point 4: a CNN trained in PyTorch on CIFAR-10 (scripts/onnx_e2e/train_torch_cnn.py;
/// the ONNX file and PyTorch's 10,000 test predictions are committed in
/// tests/reference/onnx_e2e/) keeps its accuracy when edgeprune imports it, and once pruned,
/// fine-tuned on cats and dogs and exported, onnxruntime scores it as edgeprune does.
/// Needs CIFAR-10 (../shared/data) and a Python with onnxruntime.
#[test]
fn d_a_pytorch_trained_cnn_end_to_end() {
    let py = match python() {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("SKIPPED d_a_pytorch_trained_cnn_end_to_end: no Python with onnxruntime");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let refdir = root.join("tests/reference/onnx_e2e");
    let torch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(refdir.join("torch_eval.json")).unwrap()).unwrap();
    let floats = |k: &str| torch[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<_>>();
    let (mean, std) = (floats("mean"), floats("std"));
    let mut m = onnx::load(&refdir.join("cnn.onnx")).unwrap();
    m.graph.normalize = Some(edgeprune::ir::Normalize { mean: mean.clone(), std: std.clone() });

    // (1) edgeprune scores the imported network as PyTorch did, image by image.
    let data = edgeprune::train::RunData::load(Some(&root.join("../shared/data")), &[], 0.8, &[3, 32, 32]).unwrap();
    let ours = digits(&predictions(&m, &data.test));
    let theirs = torch["predictions"].as_str().unwrap();
    let labels = digits(&data.test.labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
    let (ours_top1, torch_top1) = (1.0 - mismatches(&ours, &labels) as f64 / 1e4, torch["test_top1"].as_f64().unwrap());
    let differ = mismatches(&ours, theirs);
    eprintln!("imported: edgeprune {ours_top1:.4}, PyTorch {torch_top1:.4}, {differ} of 10000 predictions differ");
    assert!((ours_top1 - torch_top1).abs() < 1e-9, "edgeprune {ours_top1} vs PyTorch {torch_top1}");
    assert!(differ <= 2, "{differ} predictions differ from PyTorch's");

    // (2) Prune half the parameters, fine-tune briefly on cats and dogs, export, and score the
    // export in onnxruntime on the same images.
    let pets = edgeprune::train::RunData::load(
        Some(&root.join("../shared/data")),
        &["cat".into(), "dog".into()],
        0.8,
        &[3, 32, 32],
    )
    .unwrap();
    let pruned = prune_half(&m);
    assert!(pruned.graph.num_parameters() * 10 < m.graph.num_parameters() * 6);
    let t = tempfile::tempdir().unwrap();
    let cfg = edgeprune::train::TrainConfig {
        epochs: 1,
        batch_size: 64,
        max_batches: Some(15),
        lr_schedule: "0 0.01".parse().unwrap(),
        threads: 2,
        ..Default::default()
    };
    let start = edgeprune::train::Start { model: pruned, plan: None, epoch: 0 };
    edgeprune::train::fit(Some(start), &pets, &cfg, &t.path().join("ft")).unwrap();
    let tuned = formats::load_model(&t.path().join("ft/best")).unwrap();
    let ours = digits(&predictions(&tuned, &pets.test));
    let pet_labels = digits(&pets.test.labels.iter().map(|&l| l as u8).collect::<Vec<_>>());
    let ours_top1 = 1.0 - mismatches(&ours, &pet_labels) as f64 / ours.len() as f64;

    let onnx_path = t.path().join("tuned.onnx");
    formats::export_onnx(&tuned, &onnx_path, false).unwrap();
    let bin = t.path().join("bin");
    edgeprune::data::write_cifar10_binary(&data.test, &data.test, &bin).unwrap();
    let f = |v: &[f32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let classes = pets.classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let run = Command::new(&py)
        .arg(root.join("scripts/onnx_e2e/ort_eval.py"))
        .args([onnx_path.to_str().unwrap(), bin.to_str().unwrap(), &f(&mean), &f(&std), &classes])
        .output()
        .unwrap();
    assert!(run.status.success(), "onnxruntime failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let ort: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let differ = mismatches(&ours, ort["predictions"].as_str().unwrap());
    let ort_top1 = ort["top1"].as_f64().unwrap();
    eprintln!(
        "pruned + fine-tuned on cat/dog: edgeprune {ours_top1:.4}, onnxruntime {ort_top1:.4}, {differ} of {} differ",
        ours.len()
    );
    assert!(differ <= 1, "{differ} predictions differ between edgeprune and onnxruntime");
    assert!((ours_top1 - ort_top1).abs() <= 1.0 / ours.len() as f64 + 1e-9);
}
