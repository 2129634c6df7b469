//! The command line end to end on a tiny ImageFolder dataset that the test writes itself:
//! init, inspect, train (with a subset, a recipe, resume), eval, bench, and clear errors.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

fn run(args: &[&str], cwd: &Path) -> Output {
    common::bin().args(args).current_dir(cwd).output().expect("edgeprune runs")
}

/// A latency budget in libtorch: the table is measured once, kept, reused, measured again when
/// stale; the result is predicted within the budget, measured and printed beside it (or refused
/// as not faster, with both numbers); a budget below the floor and a file that is not a table
/// are refused.
#[test]
fn prune_to_a_latency_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    ok(&["init", "resnet20", "--num-classes", "4", "-o", "net"], cwd);
    let lib = ["--runtime", "libtorch", "--threads", "1"];
    let prune = |net: &'static str, extra: &[&'static str], table: &'static str, out: &'static str| {
        let mut v = vec!["prune", net];
        v.extend(extra);
        v.extend(lib);
        v.extend(["--latency-table", table, "-o", out]);
        v
    };
    let text =
        String::from_utf8_lossy(&run_ok_or_refused(&prune("net", &["--latency", "0.8x"], "t.json", "fast"), cwd))
            .to_string();
    assert!(text.contains("(measured now)") && text.contains("latency budget"), "{text}");
    if cwd.join("fast").exists() {
        assert!(text.contains("measured (speed-up") && text.contains("; predicted"), "{text}");
        assert!(cwd.join("fast/plan.json").exists());
    }
    let table: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cwd.join("t.json")).unwrap()).unwrap();
    assert_eq!(table["key"]["batch"], 1);
    // A small network for the rest (its table is quick to measure; it is mostly per-op overhead
    // in libtorch, so any real budget is below its floor).
    ok(&["init", "depthwise_separable", "--num-classes", "4", "-o", "small"], cwd);
    let floor = |extra: &[&'static str], out: &'static str| {
        let mut args = vec!["--latency-ms", "0.000001"];
        args.extend(extra);
        let out = run(&prune("small", &args, "s.json", out), cwd);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    // Below the floor: refused with the smallest latency reachable, nothing written.
    let text = floor(&[], "never");
    assert!(
        text.contains("cannot be reached") && text.contains("predicted at") && !cwd.join("never").exists(),
        "{text}"
    );
    // The same network, runtime and batch: reused. Another batch: stale, measured again.
    let text = floor(&[], "never");
    assert!(text.contains("(reused)"), "{text}");
    let text = floor(&["--batch", "2"], "never");
    assert!(text.contains("measured again: batch was `1`, is `2`"), "{text}");
    // A file that is not a latency table is refused and left as it was.
    std::fs::write(cwd.join("mine.json"), "{\"mine\": 1}").unwrap();
    let text = fails(&prune("small", &["--latency", "0.5x"], "mine.json", "x"), cwd);
    assert!(text.contains("not an edgeprune latency table"), "{text}");
    assert_eq!(std::fs::read_to_string(cwd.join("mine.json")).unwrap(), "{\"mine\": 1}");
}

/// Output of a run that either succeeded or refused a plan as not faster (both are right).
fn run_ok_or_refused(args: &[&str], cwd: &Path) -> Vec<u8> {
    let out = run(args, cwd);
    let mut text = out.stdout.clone();
    text.extend(&out.stderr);
    let s = String::from_utf8_lossy(&text);
    assert!(out.status.success() || s.contains("not faster where it runs"), "edgeprune {args:?}:\n{s}");
    text
}

fn ok(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "edgeprune {args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let out = run(args, cwd);
    assert!(!out.status.success(), "edgeprune {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Three classes that differ in colour and texture, so that a network can learn them in a few
/// epochs (not in one: `a_short_training_learns` watches the loss fall).
fn write_dataset(root: &Path) {
    common::write_image_folder(root, &["circle", "square", "stripe"], (40, 12), 32, |c, i, x, y| {
        let noise = ((x * 7 + y * 13 + i * 31) % 17) as u8;
        match c {
            0 => [200 + noise, 30, 30],
            1 => [30, 200 - noise, 30],
            _ => [30, 30, if (x / 4) % 2 == 0 { 220 } else { 40 + noise }],
        }
    });
}

fn workdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    (t, data)
}

#[test]
fn train_eval_resume_and_inspect() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();

    let text = ok(&["inspect", "resnet20", "--num-classes", "100"], cwd);
    assert!(text.contains("278324 parameters"), "{text}");

    let recipe = cwd.join("recipe.toml");
    std::fs::write(
        &recipe,
        "model = \"resnet20\"\nepochs = 1\nbatch_size = 16\nlr_schedule = \"0 0.05\"\nthreads = 2\n",
    )
    .unwrap();
    let text = ok(&["train", "--config", "recipe.toml", "--data", d, "--subset", "circle,stripe", "-o", "run"], cwd);
    assert!(text.contains("done: 1 epochs"), "{text}");
    let run = cwd.join("run");
    for f in [
        "config.toml",
        "log.csv",
        "summary.json",
        "best/graph.json",
        "best/best.json",
        "checkpoints/e0001-b000000/optimizer.safetensors",
        "checkpoints/e0001-b000000/state.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // Extend the finished run by one epoch: the log gains exactly one row.
    ok(&["train", "--resume", "--epochs", "2", "-o", "run"], cwd);
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().nth(2).unwrap().starts_with("2,"), "{log}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["epochs"], 2);
    assert_eq!(summary["classes"], serde_json::json!(["circle", "stripe"]));

    // The model keeps the dataset's 3-way head and its normalisation; eval on the subset and
    // on all classes.
    let text = ok(&["eval", "run/best", "--data", d, "--subset", "circle,stripe", "--json"], cwd);
    let s: serde_json::Value = serde_json::from_str(&text[..text.rfind('}').unwrap() + 1]).unwrap();
    assert_eq!(s["count"], 24);
    let text = ok(&["eval", "run/best", "--data", d], cwd);
    assert!(text.contains("36 images of test (3 classes)"), "{text}");
    let g = std::fs::read_to_string(run.join("best/graph.json")).unwrap();
    assert!(g.contains("\"normalize\""), "the trained model records its normalisation");

    let text = ok(&["bench", "infer", "--model", "run/best", "--batch", "4", "--steps", "2", "--warmup", "1"], cwd);
    assert!(text.contains("img/s") && text.contains("peak RSS"), "{text}");
}

#[test]
fn a_short_training_learns() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    ok(
        &[
            "train",
            "--model",
            "resnet20",
            "--data",
            d,
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--lr-schedule",
            "0 0.05",
            "--train-fraction",
            "1",
            "-o",
            "run",
        ],
        cwd,
    );
    let log = std::fs::read_to_string(cwd.join("run/log.csv")).unwrap();
    let losses: Vec<f64> = log.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert!(losses[3] < 0.5 * losses[0], "training loss should fall: {losses:?}");
    let text = ok(&["eval", "run/best", "--data", d, "--json"], cwd);
    let s: serde_json::Value = serde_json::from_str(&text[..text.rfind('}').unwrap() + 1]).unwrap();
    assert!(s["top1"].as_f64().unwrap() > 0.6, "three easy classes: {s}");
}

#[test]
fn errors_are_clear() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    let e = fails(&["train", "--data", d, "--subset", "circle,triangle", "-o", "x"], cwd);
    assert!(e.contains("triangle"), "{e}");
    std::fs::write(cwd.join("bad.toml"), "epochs = 1\nlearning_rate = 3\n").unwrap();
    let e = fails(&["train", "--config", "bad.toml", "-o", "x"], cwd);
    assert!(e.contains("learning_rate") && e.contains("bad.toml"), "{e}");
    let e = fails(&["train", "--data", d, "--device", "cuda", "--epochs", "1", "-o", "x"], cwd);
    assert!(e.contains("CUDA"), "{e}");
    let e = fails(&["eval", "no/such/model", "--data", d], cwd);
    assert!(e.contains("no/such/model"), "{e}");
    let e = fails(&["train", "--data", "/nonexistent/data", "-o", "x"], cwd);
    assert!(e.contains("/nonexistent/data"), "{e}");
    let e = fails(&["eval", "x", "--batch-size", "0"], cwd);
    assert!(e.contains("--batch-size"), "{e}");
    let e = fails(&["bench", "infer", "--batch", "0"], cwd);
    assert!(e.contains("--batch"), "{e}");
    let e = fails(&["inspect", "vgg"], cwd);
    assert!(e.contains("vgg"), "{e}");
    // No data anywhere: the message says where it looked and how to get CIFAR.
    let empty = tempfile::tempdir().unwrap();
    let e = fails(&["train", "--epochs", "1", "-o", "x"], empty.path());
    assert!(e.contains("EDGEPRUNE_DATA") && e.contains("cifar-10"), "{e}");
}

#[test]
fn prune_replay_retrain() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    ok(&["init", "resnet20", "--num-classes", "3", "-o", "full"], cwd);
    let text =
        ok(&["prune", "full", "--level", "40", "--criterion", "paper", "--plan-out", "p.json", "-o", "p40"], cwd);
    let removed: f64 = text.split("% removed").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert!((removed - 40.0).abs() <= 2.0, "{text}");
    // Replaying the plan gives the identical model.
    ok(&["prune", "full", "--plan", "p.json", "-o", "replay"], cwd);
    for f in ["graph.json", "weights.safetensors"] {
        assert_eq!(
            std::fs::read(cwd.join("p40").join(f)).unwrap(),
            std::fs::read(cwd.join("replay").join(f)).unwrap(),
            "{f}"
        );
    }
    let text = ok(&["inspect", "p40", "--against", "full"], cwd);
    assert!(text.contains("->") && text.contains("of the parameters"), "{text}");
    // Latency before and after in the engine (ONNX Runtime's is checked in tests/engine_zoo.rs);
    // an unknown runtime is refused before any work, naming the ones there are.
    let text =
        ok(&["prune", "full", "--level", "40", "--measure-latency", "--runtime", "libtorch", "-o", "p40-lat"], cwd);
    assert!(text.contains("latency at batch 1 in libtorch:") && text.contains("speed-up"), "{text}");
    let text =
        fails(&["prune", "full", "--level", "40", "--measure-latency", "--runtime", "tvm", "-o", "p40-tvm"], cwd);
    assert!(text.contains("libtorch, ort") && !cwd.join("p40-tvm").exists(), "{text}");
    for (budget, needle) in [("0.5", "give a share"), ("1.5x", "in (0, 1)"), ("fastms", "use e.g. 0.5x")] {
        let text = fails(&["prune", "full", "--latency", budget, "-o", "p-bad"], cwd);
        assert!(text.contains(needle) && !cwd.join("p-bad").exists(), "{budget}: {text}");
    }
    // Data-driven criteria on the local data, a GOps target, per-layer scope.
    for crit in ["taylor", "activation", "apoz"] {
        ok(
            &[
                "prune",
                "full",
                "--gops-level",
                "30",
                "--scope",
                "layer",
                "--criterion",
                crit,
                "--data",
                d,
                "--batches",
                "2",
                "-o",
                crit,
            ],
            cwd,
        );
    }
    // A data-driven criterion with no data anywhere: says where it looked.
    let full = cwd.join("full");
    let e = fails(
        &["prune", full.to_str().unwrap(), "--level", "30", "--criterion", "taylor", "-o", "x"],
        empty_dir().path(),
    );
    assert!(e.contains("EDGEPRUNE_DATA"), "{e}");
    let e = fails(&["prune", "full", "--channels", "linear=2", "-o", "x"], cwd);
    assert!(e.contains("network output"), "{e}");
    let e = fails(&["prune", "full", "--level", "130", "-o", "x"], cwd);
    assert!(e.contains("130"), "{e}");
    // The pruned model trains on the local data.
    ok(
        &[
            "train",
            "--model",
            "p40",
            "--data",
            d,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--lr-schedule",
            "0 0.05",
            "-o",
            "retrain",
        ],
        cwd,
    );
    let log = std::fs::read_to_string(cwd.join("retrain/log.csv")).unwrap();
    let losses: Vec<f64> = log.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert!(losses[1] < losses[0], "{losses:?}");
}

fn empty_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn eval_inspect_and_export_take_a_run_folder_for_its_best_model() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    ok(
        &[
            "train",
            "--model",
            "resnet20",
            "--data",
            d,
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--batch-size",
            "8",
            "-o",
            "run",
        ],
        cwd,
    );
    let by_run = ok(&["eval", "run", "--data", d, "--json"], cwd);
    let by_best = ok(&["eval", "run/best", "--data", d, "--json"], cwd);
    let top1 = |t: &str| t.lines().find(|l| l.contains("\"top1\"")).unwrap().to_string();
    assert_eq!(top1(&by_run), top1(&by_best));
    assert!(ok(&["inspect", "run"], cwd).contains("total:"));
    ok(&["export", "run", "-o", "run.onnx"], cwd);
    assert!(cwd.join("run.onnx").exists());
}
