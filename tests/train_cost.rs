//! The training-cost predictor end to end on a small network: the device's table measured once
//! (each calibration network's step and peak in a process of its own) and then reused, a pruned
//! model priced on its parent's table, and the budgets that use it: `--max-memory` with the
//! predicted peak and the largest batch that fits, `--max-train-minutes` refusing a fine-tune
//! that would not finish, or fitting it with `--fit-to-budget`.

use std::path::Path;

use edgeprune::formats::native;
use edgeprune::ir::Model;
use edgeprune::zoo;

mod common;
use common::{bin, output};

const CLASSES: [&str; 4] = ["red", "green", "blue", "grey"];

fn cmd(cache: &Path, args: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.env("EDGEPRUNE_CACHE", cache).args(args);
    c
}

#[test]
fn the_table_prices_pruned_models_and_the_budgets_use_it() {
    let t = tempfile::tempdir().unwrap();
    let (cache, data) = (t.path().join("cache"), t.path().join("data"));
    common::write_image_folder(&data, &CLASSES, (20, 5), 16, common::tinted);
    let model = Model::init(zoo::build("projection_residual", 4).unwrap(), 0).unwrap();
    let m = t.path().join("model");
    native::save(&model, &m).unwrap();
    let ms = m.to_str().unwrap();
    let ds = data.to_str().unwrap();

    // Measured once, then reused.
    let args = ["bench", "train-cost", "--model", ms, "--batch", "8", "--threads", "1"];
    let (out, text) = output(&mut cmd(&cache, &args));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(measured now)") && text.contains("predicted for"), "{text}");
    let tables: Vec<_> = std::fs::read_dir(cache.join("train-cost")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let (out, text) = output(&mut cmd(&cache, &args));
    assert!(out.status.success() && text.contains("(reused)"), "{text}");
    // A table of an older format is measured again, never used.
    let text = std::fs::read_to_string(&tables[0]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["key"]["format"] = 1.into();
    std::fs::write(&tables[0], v.to_string()).unwrap();
    let (out, text) = output(&mut cmd(&cache, &args));
    assert!(out.status.success() && text.contains("measured again: format was `1`"), "{text}");
    let table: edgeprune::analysis::train_cost::TrainCostTable =
        serde_json::from_str(&std::fs::read_to_string(&tables[0]).unwrap()).unwrap();
    assert!(table.calibration.len() >= 13 && table.calibration.iter().all(|c| c.peak_bytes.unwrap() > 1e7));

    // A pruned model is priced on its parent's table (no new table), and less than the parent.
    let pruned = t.path().join("pruned");
    let (out, text) = output(&mut cmd(&cache, &["prune", ms, "--level", "50", "--out", pruned.to_str().unwrap()]));
    assert!(out.status.success(), "{text}");
    let pm = native::load(&pruned).unwrap();
    let (p_parent, p_pruned) = (table.predict(&model.graph).unwrap(), table.predict(&pm.graph).unwrap());
    assert!(p_pruned.peak_bytes < p_parent.peak_bytes, "{p_pruned:?} vs {p_parent:?}");
    assert!(p_pruned.step_ms > 0.0 && p_pruned.step_ms.is_finite());
    let ps = pruned.to_str().unwrap();
    let args = ["inspect", ps, "--train-cost", "--batch", "8", "--threads", "1", "--epochs", "3", "--images", "64,40"];
    let (out, text) = output(&mut cmd(&cache, &args));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(tables[0].to_str().unwrap()) && !text.contains("measuring it now"), "{text}");
    assert!(text.contains("a fine-tune of 3 epochs x 8 batches"), "{text}");
    assert_eq!(std::fs::read_dir(cache.join("train-cost")).unwrap().count(), 1);

    let train = |extra: &[&str], out_dir: &str| {
        let mut c = cmd(&cache, &["train", "--model", ps, "--data", ds, "--batch-size", "8", "--threads", "1"]);
        c.args(["--epochs", "2", "-o"]).arg(t.path().join(out_dir)).args(extra);
        output(&mut c)
    };
    // Memory: refused with the predicted peak, the table, and the largest batch that fits.
    let (out, text) = train(&["--max-memory", "60M"], "small");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("predicted to peak") && text.contains("training-cost table"), "{text}");
    assert!(!t.path().join("small/checkpoints").exists(), "nothing may start");

    // Time: the run's prediction, from the library, against a budget of half of it.
    let run_data = edgeprune::train::RunData::load(Some(&data), &[], 0.8, &[3, 16, 16]).unwrap();
    let cfg = edgeprune::train::TrainConfig { batch_size: 8, threads: 1, epochs: 2, ..Default::default() };
    edgeprune::engine::set_threads(1);
    let cost = edgeprune::train::RunCost::of_table(&table, &tables[0], &cfg, &pm, &run_data, 2).unwrap();
    let minutes = cost.fine_tune.seconds / 60.0;
    let half = format!("{}", minutes * 0.55);
    let (out, text) = train(&["--max-train-minutes", &half], "slow");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("max_train_minutes") && text.contains("predicted to take"), "{text}");
    let (out, text) = train(&["--max-train-minutes", &half, "--fit-to-budget"], "fitted");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("fit to budget"), "{text}");
    let config = std::fs::read_to_string(t.path().join("fitted/config.toml")).unwrap();
    let share: f64 = config
        .lines()
        .find_map(|l| l.strip_prefix("epoch_fraction = "))
        .unwrap_or_else(|| panic!("{config}"))
        .parse()
        .unwrap();
    assert!(share > 0.0 && share < 1.0, "{config}");
    let (out, text) = train(&["--max-step-ms", "0.0001"], "step");
    assert!(!out.status.success() && text.contains("max_step_ms"), "{text}");

    // DaPR reports each probe's retraining, measured and predicted on the table.
    let recipe = t.path().join("recipe.toml");
    let text = format!(
        "name = \"dapr\"\ndata = \"{ds}\"\nlevels = [50]\nepochs = 2\nfine_tune_epochs = 1\nmax_batches = 2\n\
         batch_size = 8\nthreads = 1\ncriterion_batches = 1\nmeasure_costs = false\n\n\
         [[networks]]\nname = \"net\"\nmodel = \"{ms}\"\narch = \"resnet20\"\n\n\
         [[subsets]]\nname = \"rg\"\nclasses = [\"red\", \"green\"]\n"
    );
    std::fs::write(&recipe, text).unwrap();
    let mut c = cmd(&cache, &["search", recipe.to_str().unwrap(), "--network", "net", "--subset", "rg", "-o"]);
    let (out, text) = output(c.arg(t.path().join("dapr")));
    assert!(out.status.success(), "{text}");
    let probe = text.lines().find(|l| l.starts_with("probe")).unwrap_or_else(|| panic!("{text}"));
    assert!(probe.contains("retraining") && !probe.contains("predicted -)"), "{probe}");
    // With a retraining budget no probe can meet, every probe is skipped before it retrains: the
    // search climbs to 95% and reports that nothing fits, and no probe cell was run.
    let mut c = cmd(&cache, &["search", recipe.to_str().unwrap(), "--network", "net", "--subset", "rg", "-o"]);
    let budget = t.path().join("dapr-budget");
    let (out, text) = output(c.arg(&budget).args(["--max-retrain-minutes", "0.000001"]));
    assert!(out.status.success(), "{text}");
    let skipped = text.lines().filter(|l| l.starts_with("probe") && l.contains("skipped")).count();
    assert_eq!(skipped, 5, "50, 75, 85, 90, 95%:\n{text}");
    assert!(text.contains("within the retraining budget"), "{text}");
    assert!(budget.join("net/rg/finetune-s0/metrics.json").exists(), "the probes' fine-tune runs");
    assert!(!budget.join("net/rg/aware-p50-s0/metrics.json").exists(), "a skipped probe must not run");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(budget.join("search-net-rg.json")).unwrap()).unwrap();
    assert!(json["probes"].as_array().unwrap().iter().all(|p| p["skipped"] == true && p["test_top1"].is_null()));

    // Tables are per precision: a bf16 run is not priced on the fp32 table; it says how to measure
    // its own, which is then kept beside the fp32 one and found.
    let (out, text) = train(&["--max-train-minutes", "5", "--precision", "bf16"], "bf16-none");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("in bf16") && text.contains("--precision bf16"), "{text}");
    let args = ["bench", "train-cost", "--model", ms, "--batch", "8", "--threads", "1", "--precision", "bf16"];
    let (out, text) = output(&mut cmd(&cache, &args));
    assert!(out.status.success() && text.contains("(measured now)") && text.contains("bf16 mixed precision"), "{text}");
    let names: Vec<String> = std::fs::read_dir(cache.join("train-cost"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.len() == 2 && names.iter().any(|n| n.contains("-train-bf16-b8-")), "{names:?}");
    let (out, text) = train(&["--max-train-minutes", "60", "--precision", "bf16"], "bf16-priced");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("bf16"), "{text}");

    // Without a table, a time budget says how to measure one.
    let empty = t.path().join("empty-cache");
    let mut c = cmd(&empty, &["train", "--model", ps, "--data", ds, "--batch-size", "8", "--epochs", "1"]);
    let (out, text) = output(c.args(["--max-train-minutes", "5", "-o"]).arg(t.path().join("none")));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bench train-cost"), "{text}");
}
