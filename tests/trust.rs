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

/// `train` of a fresh ResNet-20 on `data` for `epochs` epochs of one batch of 8 images into `out`.
fn quick_train<'a>(data: &'a str, epochs: &'a str, out: &'a str) -> Vec<&'a str> {
    let args = ["--model", "resnet20", "--data", data, "--epochs", epochs, "--max-batches", "1", "--batch-size", "8"];
    [&["train"][..], &args, &["-o", out]].concat()
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
    for (name, key, value) in
        [("nan", "conv1.weight", f32::NAN), ("inf", "conv1.weight", f32::INFINITY), ("negvar", "bn1.running_var", -1.0)]
    {
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
            "train",
            "--model",
            "resnet20",
            "--data",
            d,
            "--epochs",
            epochs,
            "--max-batches",
            "1",
            "--batch-size",
            "8",
            "--lr-schedule",
            "0 1e10",
            "--threads",
            "1",
            "-o",
            "lr",
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

// ---- 3. no output deletes or silently replaces a user's files ----

#[test]
fn train_refuses_a_users_folder_and_replaces_a_run_only_when_told() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    let mine = cwd.join("mine");
    std::fs::create_dir_all(mine.join("best")).unwrap();
    std::fs::create_dir_all(mine.join("checkpoints")).unwrap();
    std::fs::write(mine.join("best/notes.txt"), "my notes").unwrap();
    std::fs::write(mine.join("checkpoints/keep.bin"), "mine").unwrap();
    std::fs::write(mine.join("log.csv"), "my,log\n").unwrap();
    let quick = ["--model", "resnet20", "--data", d, "--epochs", "1", "--max-batches", "1", "--batch-size", "8"];
    fn train<'a>(quick: &[&'a str], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        [&["train"][..], quick, &["-o", out], extra].concat()
    }
    for extra in [&[][..], &["--overwrite"][..]] {
        let text = fails(&train(&quick, "mine", extra), cwd);
        assert!(text.contains("not empty and is not an edgeprune training run") && text.contains("best"), "{text}");
    }
    assert_eq!(std::fs::read_to_string(mine.join("best/notes.txt")).unwrap(), "my notes");
    assert_eq!(std::fs::read_to_string(mine.join("checkpoints/keep.bin")).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(mine.join("log.csv")).unwrap(), "my,log\n");

    ok(&train(&quick, "run", &[]), cwd);
    let before = std::fs::read(cwd.join("run/best/weights.safetensors")).unwrap();
    let text = fails(&train(&quick, "run", &[]), cwd);
    assert!(text.contains("already holds a finished run") && text.contains("--overwrite"), "{text}");
    assert_eq!(std::fs::read(cwd.join("run/best/weights.safetensors")).unwrap(), before);
    let text = ok(&[train(&quick, "run", &[]), vec!["--overwrite", "--seed", "5"]].concat(), cwd);
    assert!(text.contains("done: 1 epochs"), "{text}");
}

#[test]
fn model_and_file_outputs_are_never_replaced_silently() {
    let (t, _data) = workdir();
    let cwd = t.path();
    ok(&["init", "resnet20", "--num-classes", "3", "-o", "m"], cwd);
    let text = fails(&["init", "resnet20", "--num-classes", "3", "--seed", "1", "-o", "m"], cwd);
    assert!(text.contains("already holds an edgeprune model folder; --overwrite"), "{text}");
    ok(&["init", "resnet20", "--num-classes", "3", "--seed", "1", "-o", "m", "--overwrite"], cwd);
    std::fs::create_dir_all(cwd.join("docs")).unwrap();
    std::fs::write(cwd.join("docs/paper.tex"), "x").unwrap();
    let text = fails(&["init", "resnet20", "-o", "docs", "--overwrite"], cwd);
    assert!(text.contains("paper.tex"), "{text}");
    assert!(!cwd.join("docs/graph.json").exists());
    std::fs::write(cwd.join("m.onnx"), "my file").unwrap();
    let text = fails(&["export", "m", "-o", "m.onnx"], cwd);
    assert!(text.contains("already exists") && text.contains("--overwrite"), "{text}");
    assert_eq!(std::fs::read_to_string(cwd.join("m.onnx")).unwrap(), "my file");
    ok(&["export", "m", "-o", "m.onnx", "--overwrite"], cwd);
    let text =
        fails(&["prune", "m", "--level", "30", "--criterion", "l1", "-o", "p", "--plan-out", "docs/paper.tex"], cwd);
    assert!(text.contains("paper.tex") && text.contains("already exists"), "{text}");
    assert_eq!(std::fs::read_to_string(cwd.join("docs/paper.tex")).unwrap(), "x");
    // A dangling symbolic link as the output is named as such.
    std::os::unix::fs::symlink(cwd.join("nowhere"), cwd.join("dangling")).unwrap();
    let text = fails(&["init", "resnet20", "-o", "dangling"], cwd);
    assert!(text.contains("dangling link"), "{text}");
}

// ---- 4. one process per run folder ----

#[test]
fn a_second_train_on_the_same_folder_is_refused_naming_the_first() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    let args = [
        "train",
        "--model",
        "resnet20",
        "--data",
        d,
        "--epochs",
        "50",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "-o",
        "run",
    ];
    let mut first = common::bin().args(args).current_dir(cwd).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Wait until the first holds the lock (its pid is in the lock file).
    let lock = cwd.join("run/.edgeprune.lock");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != first.id().to_string()) {
        assert!(t0.elapsed().as_secs() < 60, "the first run never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for extra in [&["--overwrite"][..], &[][..]] {
        let text = fails(&[&args[..], extra].concat(), cwd);
        assert!(text.contains(&format!("in use by edgeprune process {}", first.id())), "{text}");
    }
    let text = fails(&["train", "--resume", "run"], cwd);
    assert!(text.contains(&format!("process {}", first.id())), "{text}");
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock died with the process: the run resumes.
    let text = ok(&["train", "--resume", "run", "--epochs", "1"], cwd);
    assert!(text.contains("done"), "{text}");
}

// ---- 6. outputs never overwrite inputs ----

#[test]
fn an_output_that_is_an_input_is_refused() {
    let (t, _data) = workdir();
    let cwd = t.path();
    ok(&["init", "resnet20", "--num-classes", "3", "-o", "m"], cwd);
    let weights = std::fs::read(cwd.join("m/weights.safetensors")).unwrap();
    for args in [
        &["export", "m", "-o", "m/weights.safetensors", "--overwrite"][..],
        &["export", "m", "-o", "m/../m/graph.json", "--overwrite"][..],
        &[
            "prune",
            "m",
            "--level",
            "30",
            "--criterion",
            "l1",
            "-o",
            "p",
            "--plan-out",
            "m/weights.safetensors",
            "--overwrite",
        ][..],
        &["prune", "m", "--level", "30", "--criterion", "l1", "-o", "m", "--overwrite"][..],
    ] {
        let text = fails(args, cwd);
        assert!(text.contains("would overwrite the input"), "{args:?}: {text}");
    }
    // A training run replacing the folder that holds its own starting model.
    let d = cwd.join("data");
    common::write_image_folder(&d, &["a", "b"], (8, 2), 32, common::tinted);
    let quick = ["--data", d.to_str().unwrap(), "--epochs", "1", "--max-batches", "1", "--batch-size", "8"];
    ok(&[&["train", "--model", "resnet20", "-o", "run"][..], &quick].concat(), cwd);
    let text = fails(&[&["train", "--model", "run/best", "-o", "run", "--overwrite"][..], &quick].concat(), cwd);
    assert!(text.contains("would overwrite the input run/best"), "{text}");
    assert!(cwd.join("run/best/graph.json").exists());
    std::os::unix::fs::symlink(cwd.join("m/weights.safetensors"), cwd.join("w.link")).unwrap();
    let text = fails(&["export", "m", "-o", "w.link", "--overwrite"], cwd);
    assert!(text.contains("would overwrite the input"), "{text}");
    assert_eq!(std::fs::read(cwd.join("m/weights.safetensors")).unwrap(), weights);
    ok(&["prune", "m", "--level", "30", "--criterion", "l1", "-o", "p", "--plan-out", "p.json"], cwd);
}

// ---- 8. names never escape their folder; 10, 13. recipes are checked when read ----

/// A recipe over the test's dataset and a 3-class model folder `m` (made if missing).
fn recipe(cwd: &Path, data: &Path, name: &str, subset: &str, extra: &str) -> PathBuf {
    if !cwd.join("m/graph.json").exists() {
        ok(&["init", "resnet20", "--num-classes", "3", "-o", "m"], cwd);
    }
    let text = format!(
        "name = \"{name}\"\ndata = \"{}\"\nlevels = [50]\nepochs = 2\nmax_batches = 1\nbatch_size = 8\nthreads = 1\nmeasure_costs = false\n{extra}\n\
         [[networks]]\nname = \"resnet20\"\nmodel = \"{}\"\n\n[[subsets]]\n{subset}\n",
        data.display(),
        cwd.join("m").display()
    );
    let p = cwd.join("recipe.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn recipe_names_that_are_paths_are_refused() {
    let (t, data) = workdir();
    let cwd = t.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    for (name, subset, key) in [
        ("../../X", "name = \"s\"\nclasses = [\"red\"]", "name"),
        ("/abs/path", "name = \"s\"\nclasses = [\"red\"]", "name"),
        (".hidden", "name = \"s\"\nclasses = [\"red\"]", "name"),
        ("ok", "name = \"../../../X\"\nclasses = [\"red\"]", "subsets.name"),
        ("ok", "name = \"a/b\"\nclasses = [\"red\"]", "subsets.name"),
    ] {
        let r = recipe(&cwd, &data, name, subset, "");
        let text = fails(&["experiment", r.to_str().unwrap(), "--in-process"], &cwd);
        assert!(text.contains(key) && text.contains("one plain path component"), "{name}/{subset}: {text}");
    }
    assert!(!t.path().join("X").exists() && !cwd.join("runs").exists());
}

#[test]
fn bad_grids_and_budgets_are_refused_before_any_folder_is_made() {
    let (t, data) = workdir();
    let cwd = t.path();
    let red = "name = \"s\"\nclasses = [\"red\", \"green\"]";
    let levels: Vec<String> = (1..=99).map(|l| l.to_string()).collect();
    let seeds: Vec<String> = (0..1000).map(|s| s.to_string()).collect();
    for (extra, subset, want) in [
        (format!("seeds = [{}]\n", seeds.join(",")), red.to_string(), "= 297000 cells, more than the 20000"),
        ("epochs = 9223372036854775807\n".into(), red.into(), "epochs"),
        ("pipelines = [\"aware\"]\nepochs = 1\n".into(), red.into(), "at least 2"),
        (
            String::new(),
            "name = \"s\"\nrandom = 1000000000".into(),
            "random = 1000000000, but the dataset has 3 classes",
        ),
        (String::new(), "name = \"s\"\nclasses = [\"purple\"]".into(), "purple"),
    ] {
        // The levels line of `recipe` is replaced for the grid case.
        let r = recipe(cwd, &data, "g", &subset, "");
        let text = std::fs::read_to_string(&r).unwrap();
        let text = if want.contains("cells") {
            text.replace("levels = [50]", &format!("levels = [{}]", levels.join(",")))
        } else {
            text
        };
        let text = text.replace("epochs = 2\n", "");
        std::fs::write(&r, format!("{extra}{text}")).unwrap();
        let out = fails(&["experiment", r.to_str().unwrap(), "--in-process"], cwd);
        assert!(out.contains(want), "{want}: {out}");
        assert!(!cwd.join("runs/g").exists(), "{want}: a folder was made");
    }
    // A network whose model does not exist is named before any folder is made.
    let r = recipe(cwd, &data, "g", red, "");
    let text = std::fs::read_to_string(&r).unwrap().replace(&cwd.join("m").display().to_string(), "/no/such/model");
    std::fs::write(&r, text).unwrap();
    let out = fails(&["experiment", r.to_str().unwrap(), "--in-process"], cwd);
    assert!(out.contains("network `resnet20`") && out.contains("/no/such/model"), "{out}");
    assert!(!cwd.join("runs/g").exists());
}

#[test]
fn a_duplicate_channels_group_and_an_inconsistent_or_foreign_resume_are_refused() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    ok(&["init", "resnet20", "--num-classes", "3", "-o", "m"], cwd);
    let text = fails(&["prune", "m", "--channels", "conv1=8,conv1=4", "-o", "p"], cwd);
    assert!(text.contains("`conv1` twice"), "{text}");
    ok(&quick_train(d, "1", "run"), cwd);
    // Renamed classes: the same images under other names.
    let other = cwd.join("other");
    common::write_image_folder(&other, &["rouge", "vert", "bleu"], (24, 8), 32, common::tinted);
    let text = fails(&["train", "--resume", "run", "--epochs", "2", "--data", other.to_str().unwrap()], cwd);
    assert!(text.contains("rouge") && text.contains("red"), "{text}");
    // A state claiming more epochs than its history (edited by hand: no checksums to catch it,
    // as in checkpoints written before checksums, and no older checkpoint to fall back to).
    std::fs::remove_dir_all(cwd.join("run/checkpoints/e0000-b000000")).unwrap();
    std::fs::remove_file(cwd.join("run/checkpoints/e0001-b000000/checksums.json")).unwrap();
    let state = cwd.join("run/checkpoints/e0001-b000000/state.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["epochs_done"] = 7.into();
    std::fs::write(&state, serde_json::to_string(&v).unwrap()).unwrap();
    let text = fails(&["train", "--resume", "run", "--epochs", "8"], cwd);
    assert!(text.contains("state.json") && text.contains("log row 1 is epoch 1"), "{text}");
}

// ---- 9, 11, 12. no panics, hangs or exhaustion ----

#[test]
fn absurd_sizes_are_refused_before_allocation() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    for args in [
        &["init", "resnet20", "--num-classes", "100000000", "-o", "x"][..],
        &["inspect", "resnet20", "--num-classes", "100000000"][..],
        &["bench", "infer", "--num-classes", "10000000"][..],
        &["train", "--data", d, "--num-classes", "100000000", "-o", "x"][..],
    ] {
        let (out, text) = common::output(common::bin().args(args).current_dir(cwd));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(text.contains("num_classes") && text.contains("1..=100000"), "{args:?}: {text}");
    }
    // A batch whose estimate is about twice this machine's available memory (ResNet-20 inference
    // needs about 0.43 MB per image).
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let batch = (kb * 1024 / 200_000).max(65536).to_string();
    let text = fails(&["bench", "infer", "--batch", &batch], cwd);
    assert!(text.contains("available") && text.contains("--max-memory"), "{text}");
    let text = ok(&["bench", "infer", "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "100000"], cwd);
    assert!(text.contains("100000 threads asked for"), "{text}");
}

#[test]
fn model_files_that_are_fifos_or_devices_are_refused_at_once() {
    let (t, _data) = workdir();
    let cwd = t.path();
    ok(&["init", "resnet20", "--num-classes", "3", "-o", "m"], cwd);
    let fifo = cwd.join("fifo");
    std::fs::create_dir_all(&fifo).unwrap();
    std::fs::copy(cwd.join("m/weights.safetensors"), fifo.join("weights.safetensors")).unwrap();
    let c = std::ffi::CString::new(fifo.join("graph.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let zero = cwd.join("zero");
    std::fs::create_dir_all(&zero).unwrap();
    std::fs::copy(cwd.join("m/graph.json"), zero.join("graph.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.join("weights.safetensors")).unwrap();
    for (dir, file) in [("fifo", "graph.json"), ("zero", "weights.safetensors")] {
        let mut child =
            common::bin().args(["inspect", dir]).current_dir(cwd).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed().as_secs() > 30 {
                child.kill().unwrap();
                panic!("{dir}: inspect hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(!status.success());
        assert!(err.contains(file) && err.contains("not a regular file"), "{dir}: {err}");
    }
}

// ---- 14. one clear sentence ----

#[test]
fn errors_say_it_once_and_name_what_is_wrong() {
    let (t, _data) = workdir();
    let cwd = t.path();
    let text = fails(&["train", "--config", "missing.toml"], cwd);
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
    assert!(!text.contains("os error"), "{text}");
    // A dataset with a channel that never varies.
    let flat = cwd.join("flat");
    common::write_image_folder(&flat, &["a", "b"], (4, 2), 32, |c, i, x, _| {
        [((x + i) % 7) as u8 * 30, 128, c as u8 * 90]
    });
    let text = fails(&["train", "--data", flat.to_str().unwrap(), "--epochs", "1", "-o", "r"], cwd);
    assert!(text.contains("flat") && text.contains("channel 1") && text.contains("standard deviation 0"), "{text}");
}

// ---- 7. checkpoints are verified ----

#[test]
fn a_corrupt_newest_checkpoint_is_skipped_with_a_warning_and_the_run_resumes() {
    let (t, data) = workdir();
    let cwd = t.path();
    let d = data.to_str().unwrap();
    ok(&quick_train(d, "2", "run"), cwd);
    let newest = cwd.join("run/checkpoints/e0002-b000000");
    let w = newest.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n / 2..n / 2 + 64].fill(0);
    std::fs::write(&w, &bytes).unwrap();
    let text = ok(&["train", "--resume", "run", "--epochs", "3"], cwd);
    assert!(text.contains("e0002-b000000") && text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("falling back to the intact checkpoint") && text.contains("e0001-b000000"), "{text}");
    assert!(text.contains("done: 3 epochs"), "{text}");
    let log = std::fs::read_to_string(cwd.join("run/log.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "epochs 1..3, epoch 2 redone: {log}");
}

// ---- 5. children die with their parent ----

/// The pids of `pid`'s children (Linux).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; its status line says so.
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| !s.contains("State:\tZ"))
}

#[test]
fn a_killed_sweep_takes_its_running_cell_with_it() {
    let (t, data) = workdir();
    let cwd = t.path();
    // A fine-tune cell of many epochs: it runs long enough to be killed mid-way.
    let r = recipe(cwd, &data, "long", "name = \"s\"\nclasses = [\"red\", \"green\"]", "pipelines = [\"aware\"]\n");
    let text = std::fs::read_to_string(&r).unwrap().replace("epochs = 2\nmax_batches = 1\n", "epochs = 3000\n");
    std::fs::write(&r, text).unwrap();
    let mut sweep = common::bin()
        .args(["experiment", r.to_str().unwrap()])
        .current_dir(cwd)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let cell = loop {
        if let Some(c) = children(sweep.id()).into_iter().find(|&c| cmdline(c).contains("finetune")) {
            break c;
        }
        assert!(t0.elapsed().as_secs() < 120, "the fine-tune cell never started");
        assert!(sweep.try_wait().unwrap().is_none(), "the sweep ended early");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(alive(cell), "the cell ended by itself: it cannot show that it is killed");
    sweep.kill().unwrap(); // SIGKILL: no handler of the sweep's runs
    sweep.wait().unwrap();
    let t0 = std::time::Instant::now();
    while alive(cell) {
        assert!(t0.elapsed().as_secs() < 10, "cell {cell} outlived its sweep: {}", cmdline(cell));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
