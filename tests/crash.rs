//! Crash safety end to end: real fine-tunes and sweeps run as child processes and are killed with
//! SIGKILL at random moments (some while a checkpoint is being written), then resumed, until they
//! finish. After every kill, every checkpoint on disk must load and no finished epoch may be lost;
//! at the end the result must be bit for bit the one of an uninterrupted run (CPU, fixed threads).
//! Also: divergence roll-back, the memory limit, and a failing disk under a checkpoint write.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edgeprune::train::checkpoint;
use rand::{Rng, SeedableRng};

mod common;
use common::{bin, output};

/// Three classes of 32x32 images that differ in colour.
fn write_dataset(root: &Path) {
    common::write_image_folder(root, &["red", "green", "blue"], (40, 10), 32, common::tinted);
}

/// A training recipe that checkpoints often: every epoch, and every ~0.1 s between batches.
const RECIPE: &str = r#"model = "resnet20"
epochs = 6
batch_size = 8
lr_schedule = "0 0.05 4 0.005"
threads = 2
checkpoint_minutes = 0.0015
keep_checkpoints = 3
"#;

fn train_cmd(dir: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.current_dir(dir).args(["train", "--data", data.to_str().unwrap()]).args(args);
    c.env("EDGEPRUNE_TEST_CHECKPOINT_DELAY_MS", "25");
    c
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group: kill it with everything it started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

/// Waits until the child exits (Some(success)), or until `deadline`, or until `stop()` holds.
fn wait_until(child: &mut Child, deadline: Instant, stop: impl Fn() -> bool) -> Option<bool> {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.success());
        }
        if Instant::now() >= deadline || stop() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn stage_in_progress(run: &Path) -> bool {
    std::fs::read_dir(run.join(checkpoint::DIR))
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".stage-")))
        .unwrap_or(false)
}

/// The position of the newest checkpoint, after checking that every checkpoint loads and that
/// its log holds every finished epoch.
fn check_checkpoints(run: &Path) -> Option<(usize, usize)> {
    let all = checkpoint::list(run).unwrap();
    for dir in &all {
        let ck = checkpoint::load(dir).unwrap_or_else(|e| panic!("checkpoint {} does not load: {e}", dir.display()));
        assert_eq!(ck.state.history.len(), ck.state.epochs_done, "{}", dir.display());
        assert!(checkpoint::first_non_finite(&ck.model.weights).is_none());
    }
    let ck = checkpoint::load(all.last()?).unwrap();
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap_or_default();
    assert!(log.lines().count().saturating_sub(1) >= ck.state.epochs_done, "log.csv lost epochs:\n{log}");
    Some((ck.state.epochs_done, ck.state.batch))
}

fn final_weights(run: &Path) -> Vec<u8> {
    let last = checkpoint::latest(run).unwrap().unwrap();
    assert!(last.ends_with("e0006-b000000"), "{}", last.display());
    std::fs::read(last.join("weights.safetensors")).unwrap()
}

#[test]
fn a_fine_tune_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    killed_and_resumed(&[], 10, 5);
}

/// The same in bf16 mixed precision (fewer kills: the point is that a bf16 run continues as the
/// uninterrupted bf16 run does, bit for bit); a resume at another precision is refused, naming
/// the run's own.
#[test]
fn a_bf16_fine_tune_resumes_to_the_uninterrupted_bf16_result_and_keeps_its_precision() {
    let t = killed_and_resumed(&["--precision", "bf16"], 3, 2);
    let run = t.path().join("run");
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("precision = \"bf16\""), "{cfg}");
    let ck = checkpoint::load_latest(&run).unwrap().unwrap();
    assert_eq!(ck.state.precision, edgeprune::engine::Precision::Bf16);
    let data = t.path().join("data");
    let (out, text) =
        output(&mut train_cmd(t.path(), &data, &["--resume", "run", "--epochs", "7", "--precision", "fp32"]));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("trained in bf16") && text.contains("--precision bf16"), "{text}");
    // Refused before anything was written: the run still says bf16 and resumes in it.
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("precision = \"bf16\""));
    let (out, text) = output(&mut train_cmd(t.path(), &data, &["--resume", "run", "--epochs", "7"]));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("bf16"), "{text}");
}

/// Trains the recipe (with `extra` flags) once uninterrupted and once killed at random moments
/// (`max_kills` times, at least `min_kills` must land) and resumed, and checks that both end with
/// the same bytes. Returns the folder holding both runs (`reference`, `run`) and the data.
fn killed_and_resumed(extra: &[&str], max_kills: usize, min_kills: usize) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    std::fs::write(t.path().join("recipe.toml"), RECIPE).unwrap();

    let fresh = |out: &'static str| -> Vec<&str> {
        let mut a = vec!["--config", "recipe.toml", "-o", out];
        a.extend_from_slice(extra);
        a
    };
    let (out, text) = output(&mut train_cmd(t.path(), &data, &fresh("reference")));
    assert!(out.status.success(), "{text}");
    let reference = final_weights(&t.path().join("reference"));

    let run = t.path().join("run");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut kills, mut kills_in_write, mut last_pos) = (0, 0, None);
    loop {
        let args: Vec<&str> =
            if checkpoint::latest(&run).unwrap().is_some() { vec!["--resume", "run"] } else { fresh("run") };
        let mut child = train_cmd(t.path(), &data, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // Alternate: kill at a random moment, or as soon as a checkpoint write is under way.
        let in_write = kills % 2 == 1;
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(300..2500));
        let finished = if kills >= max_kills {
            wait_until(&mut child, Instant::now() + Duration::from_secs(600), || false)
        } else if in_write {
            wait_until(&mut child, Instant::now() + Duration::from_secs(60), || stage_in_progress(&run))
        } else {
            wait_until(&mut child, deadline, || false)
        };
        match finished {
            Some(ok) => {
                assert!(ok, "the run failed by itself after {kills} kills");
                break;
            }
            None => {
                kills_in_write += usize::from(in_write && stage_in_progress(&run));
                kill_group(&mut child);
                kills += 1;
            }
        }
        let pos = check_checkpoints(&run);
        assert!(pos >= last_pos, "progress went back from {last_pos:?} to {pos:?}");
        last_pos = pos;
    }
    eprintln!(
        "fine-tune {extra:?}: {kills} kills, {kills_in_write} inside a checkpoint write, last position {last_pos:?}"
    );
    assert!(kills >= min_kills, "only {kills} kills: the run was too quick to test anything");
    assert!(kills_in_write >= 1, "no kill landed inside a checkpoint write");
    check_checkpoints(&run);
    assert!(final_weights(&run) == reference, "resumed run differs from the uninterrupted one after {kills} kills");
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    let epochs: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(epochs, ["1", "2", "3", "4", "5", "6"], "{log}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/best.json")).unwrap()).unwrap();
    let reference_best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("reference/best/best.json")).unwrap()).unwrap();
    assert_eq!(best, reference_best);
    t
}

/// A tiny two-class sweep on the dataset, with a pretrained model made by `init`.
fn sweep_setup(t: &Path) -> PathBuf {
    let data = t.join("data");
    write_dataset(&data);
    let (out, text) = output(bin().current_dir(t).args(["init", "resnet20", "--num-classes", "3", "-o", "pretrained"]));
    assert!(out.status.success(), "{text}");
    let recipe = format!(
        r#"name = "crash"
data = "{}"
levels = [30, 60]
epochs = 3
fine_tune_epochs = 1
max_batches = 4
batch_size = 8
threads = 2
criterion_batches = 2

[[networks]]
name = "net"
model = "{}"
arch = "resnet20"

[[subsets]]
name = "rg"
classes = ["red", "green"]
"#,
        data.display(),
        t.join("pretrained").display()
    );
    std::fs::write(t.join("recipe.toml"), recipe).unwrap();
    t.join("recipe.toml")
}

fn finished_cells(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "metrics.json") {
                found.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    found.sort();
    found
}

fn accuracies(root: &Path) -> Vec<(String, String, String, String)> {
    let mut r = csv::Reader::from_path(root.join("cells.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (s, p, l, a) = (col("subset"), col("pipeline"), col("level"), col("test_top1"));
    let mut rows: Vec<_> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[s].to_string(), rec[p].to_string(), rec[l].to_string(), rec[a].to_string())
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn a_sweep_killed_at_random_moments_never_reruns_finished_cells() {
    let t = tempfile::tempdir().unwrap();
    let recipe = sweep_setup(t.path());
    let r = recipe.to_str().unwrap();
    let (out, text) = output(bin().current_dir(t.path()).args(["experiment", r, "-o", "reference"]));
    assert!(out.status.success(), "{text}");

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut kills = 0;
    let mut done_before: Vec<(PathBuf, Vec<u8>)> = vec![];
    loop {
        let mut child = bin()
            .current_dir(t.path())
            .args(["experiment", r, "-o", "sweep"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(if kills < 6 { rng.random_range(500..4000) } else { 600_000 });
        match wait_until(&mut child, Instant::now() + wait, || false) {
            Some(ok) => {
                assert!(ok, "the sweep failed by itself after {kills} kills");
                break;
            }
            None => {
                kill_group(&mut child);
                kills += 1;
            }
        }
        // Finished cells are never touched again.
        let done = finished_cells(&t.path().join("sweep"));
        for (p, bytes) in &done_before {
            let now = done.iter().find(|(q, _)| q == p).unwrap_or_else(|| panic!("{} vanished", p.display()));
            assert!(&now.1 == bytes, "{} was rewritten", p.display());
        }
        done_before = done;
    }
    eprintln!("sweep: {kills} kills, {} cells finished", done_before.len());
    assert!(kills >= 3, "only {kills} kills");
    for (p, bytes) in &done_before {
        assert!(&std::fs::read(p).unwrap() == bytes, "{} was rewritten by the last run", p.display());
    }
    assert_eq!(accuracies(&t.path().join("sweep")), accuracies(&t.path().join("reference")));
}

#[test]
fn divergence_rolls_back_with_a_smaller_learning_rate_and_gives_up_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    let base = ["--model", "resnet20", "--epochs", "3", "--batch-size", "8", "--max-batches", "5", "--threads", "2"];

    // A NaN written into the weights at epoch 2, batch 3: rolled back to the epoch-1 checkpoint,
    // retried at half the learning rate, and the run completes.
    let mut c = train_cmd(t.path(), &data, &base);
    c.args(["--lr-schedule", "0 0.05", "-o", "poisoned"]).env("EDGEPRUNE_TEST_POISON", "1:2");
    let (out, text) = output(&mut c);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rolling back") && text.contains("e0001-b000000"), "{text}");
    let log = std::fs::read_to_string(t.path().join("poisoned/log.csv")).unwrap();
    let lrs: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect();
    assert_eq!(lrs, ["0.05", "0.025", "0.025"], "{log}");
    let ck = checkpoint::load(&checkpoint::latest(&t.path().join("poisoned")).unwrap().unwrap()).unwrap();
    assert_eq!((ck.state.divergences, ck.state.lr_scale), (1, 0.5));

    // A learning rate that diverges at any of the allowed scales: a clear error, and no
    // non-finite model anywhere on disk.
    let mut c = train_cmd(t.path(), &data, &base);
    c.args(["--lr-schedule", "0 1e37", "-o", "diverged"]);
    let (out, text) = output(&mut c);
    assert!(!out.status.success());
    assert!(
        text.contains("diverged") && text.contains("roll-backs") && text.contains("last good checkpoint"),
        "{text}"
    );
    let run = t.path().join("diverged");
    check_checkpoints(&run);
    if run.join("best").exists() {
        let m = edgeprune::formats::load_model(&run.join("best")).unwrap();
        assert!(checkpoint::first_non_finite(&m.weights).is_none());
    }
}

#[test]
fn max_memory_refuses_before_starting_and_names_a_batch_that_fits() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    let args = ["--model", "resnet20", "--epochs", "1", "--batch-size", "4096", "--max-memory", "1G", "-o", "big"];
    let (out, text) = output(&mut train_cmd(t.path(), &data, &args));
    assert!(!out.status.success());
    assert!(text.contains("max_memory") && text.contains("batch size 4096") && text.contains("at most"), "{text}");
    assert!(!t.path().join("big/checkpoints").exists(), "nothing may start");
    let e = output(&mut train_cmd(t.path(), &data, &["--max-memory", "lots", "-o", "x"])).1;
    assert!(e.contains("lots") && e.contains("byte count"), "{e}");
    let args =
        ["--model", "resnet20", "--epochs", "1", "--batch-size", "8", "--max-batches", "1", "--max-memory", "8G"];
    let (out, text) = output(train_cmd(t.path(), &data, &args).args(["-o", "small"]));
    assert!(out.status.success(), "{text}");
}

#[test]
fn a_failing_disk_under_a_checkpoint_write_is_an_error_and_keeps_the_previous_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    let args = ["--model", "resnet20", "--epochs", "1", "--batch-size", "8", "--max-batches", "2", "-o", "run"];
    let (out, text) = output(&mut train_cmd(t.path(), &data, &args));
    assert!(out.status.success(), "{text}");
    let before = checkpoint::latest(&t.path().join("run")).unwrap().unwrap();
    let weights = std::fs::read(before.join("weights.safetensors")).unwrap();

    // Files may not grow past 64 KiB (the weights are ~1 MiB): every checkpoint write fails
    // the way it would on a full disk. SIGXFSZ is ignored so that write() returns an error.
    let mut c = train_cmd(t.path(), &data, &["--resume", "run", "--epochs", "2"]);
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (out, text) = output(&mut c);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("weights.safetensors") && text.contains("too large"), "{text}");
    assert_eq!(checkpoint::latest(&t.path().join("run")).unwrap().unwrap(), before);
    assert_eq!(std::fs::read(before.join("weights.safetensors")).unwrap(), weights);
    check_checkpoints(&t.path().join("run"));
    // With room again, the run resumes from it and finishes.
    let (out, text) = output(&mut train_cmd(t.path(), &data, &["--resume", "run", "--epochs", "2"]));
    assert!(out.status.success(), "{text}");
}
