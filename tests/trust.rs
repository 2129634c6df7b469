//! The defects hostile testing found (issue "Numbers that never lie, runs that never lose data"),
//! each seen where a user sees it: by running the binary. Non-finite outputs never count as
//! correct; a diverging run stays resumable; outputs never destroy inputs or a user's files; a
//! run folder is locked; checkpoints are verified; names never escape their folder; absurd sizes
//! are refused before anything is allocated.

use std::path::{Path, PathBuf};

use edgeprune::formats::native;
use edgeprune::ir::Model;
use edgeprune::zoo;

mod common;

fn run(args: &[&str], cwd: &Path) -> (bool, String) {
    let (out, text) = common::output(common::bin().args(args).current_dir(cwd));
    (out.status.success(), text)
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let (good, text) = run(args, cwd);
    assert!(good, "edgeprune {args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let (good, text) = run(args, cwd);
    assert!(!good, "edgeprune {args:?} should fail:\n{text}");
    text
}

/// A working folder with a three-class 32x32 ImageFolder dataset in `data/`.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_image_folder(&data, &["red", "green", "blue"], (24, 8), 32, common::tinted);
    (t, data)
}

/// A fresh 3-class ResNet-20 model folder at `dir`, with `edit` applied to its weights.
fn model_with(dir: &Path, edit: impl FnOnce(&mut Model)) {
    let mut m = Model::init(zoo::build("resnet20", 3).unwrap(), 0).unwrap();
    edit(&mut m);
    native::save(&m, dir).unwrap();
}

fn set(m: &mut Model, key: &str, value: f32) {
    m.weights.tensors.get_mut(key).unwrap().as_f32_mut().unwrap()[0] = value;
}

// ---- 1. non-finite outputs are never correct ----

#[test]
fn a_nan_weight_or_negative_variance_scores_zero_and_eval_fails() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    for (name, key, value) in [
        ("nan", "conv1.weight", f32::NAN),
        ("inf", "conv1.weight", f32::INFINITY),
        ("negvar", "bn1.running_var", -1.0),
    ] {
        model_with(&cwd.join(name), |m| set(m, key, value));
        let text = fails(&["eval", name, "--data", d], cwd);
        assert!(text.contains("of 24 images gave NaN or infinite outputs"), "{name}: {text}");
        if name != "inf" {
            // (an infinite weight is ReLU'd away on some images: those may still be right)
            assert!(text.contains("top-1 0.00%") && text.contains("top-5 0.00%"), "{name}: {text}");
            assert!(text.contains("24 of 24 images"), "{name}: {text}");
        }
        assert!(text.contains(key), "{name}: the cause is named: {text}");
        let out = common::bin()
            .args(["eval", name, "--data", d, "--allow-non-finite", "--json"])
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if name != "inf" {
            assert_eq!(json["top1"], 0.0, "{json}");
            assert_eq!(json["non_finite"], 24, "{json}");
        }
        // Export refuses the model, and writes nothing.
        let text = fails(&["export", name, "-o", &format!("{name}.onnx")], cwd);
        assert!(text.contains("refusing to export") && text.contains(key), "{text}");
        assert!(!cwd.join(format!("{name}.onnx")).exists());
        // Training refuses to start from it.
        let text = fails(&["train", "--model", name, "--data", d, "--epochs", "1", "-o", &format!("run-{name}")], cwd);
        assert!(text.contains(key), "{text}");
    }
    // A healthy model of the same shape scores and exits 0.
    model_with(&cwd.join("healthy"), |_| {});
    let text = ok(&["eval", "healthy", "--data", d], cwd);
    assert!(!text.contains("NaN or infinite"), "{text}");
}

#[test]
fn a_diverging_run_never_reports_a_best_epoch_and_stays_resumable() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    let args = |epochs: &'static str| {
        vec![
            "train", "--model", "resnet20", "--data", d, "--epochs", epochs, "--max-batches", "1", "--batch-size", "8",
            "--lr-schedule", "0 1e10", "--threads", "1", "-o", "lr",
        ]
    };
    let text = fails(&args("3"), cwd);
    assert!(!text.contains("100.00%"), "a diverged network scored: {text}");
    assert!(text.contains("training diverged"), "{text}");
    assert!(text.contains("not finite"), "{text}");
    assert!(!cwd.join("lr/best").exists(), "a diverged epoch became the best model");
    // Every state.json written reads back, so resuming gives the same divergence error, not a
    // parse error.
    let text = fails(&["train", "--resume", "lr", "--epochs", "4"], cwd);
    assert!(!text.contains("invalid type"), "{text}");
    assert!(text.contains("training diverged"), "{text}");
}

#[test]
fn import_refuses_a_non_finite_mean_or_std() {
    let (t, _data) = workdir();
    let cwd = t.path();
    model_with(&cwd.join("m"), |_| {});
    ok(&["export", "m", "-o", "m.onnx"], cwd);
    for (mean, std, what) in [("nan,0,0", "1,1,1", "mean of channel 0"), ("0,0,0", "1,inf,1", "std of channel 1")] {
        let text = fails(&["import", "m.onnx", "--mean", mean, "--std", std, "-o", "imp"], cwd);
        assert!(text.contains(what), "{text}");
        assert!(!cwd.join("imp/graph.json").exists());
    }
}
