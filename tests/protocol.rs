//! The ADaPT sweep end to end on a tiny ImageFolder dataset written by the test: every pipeline,
//! resuming an interrupted sweep without redoing finished cells, the report, DaPR search, and the
//! CLI running each cell in its own process.

use std::path::{Path, PathBuf};

use edgeprune::formats::native;
use edgeprune::ir::Model;
use edgeprune::protocol::{Recipe, pipeline, report, search, sweep};
use edgeprune::zoo;

mod common;

fn write_dataset(root: &Path) {
    common::write_image_folder(root, &["red", "green", "blue", "grey"], (20, 6), 16, common::tinted);
}

/// A tiny sweep; `measure_costs` adds the device-cost benchmarks to the cells that prune.
fn setup(measure_costs: bool) -> (tempfile::TempDir, Recipe, PathBuf) {
    setup_with(measure_costs, "max_batches = 2", "[30, 60]")
}

/// As [`setup`], with the recipe's budget line and levels given.
fn setup_with(measure_costs: bool, budget: &str, levels: &str) -> (tempfile::TempDir, Recipe, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    write_dataset(&data);
    let model = Model::init(zoo::build("projection_residual", 4).unwrap(), 0).unwrap();
    native::save(&model, &t.path().join("pretrained")).unwrap();
    let text = format!(
        r#"name = "tiny"
data = "{data}"
levels = {levels}
epochs = 3
fine_tune_epochs = 1
{budget}
batch_size = 8
threads = 2
criterion_batches = 2
measure_costs = {measure_costs}

[[networks]]
name = "net"
model = "{model}"
arch = "resnet20"

[[subsets]]
name = "rg"
classes = ["red", "green"]

[[subsets]]
name = "rand2"
random = 2
seed = 3
"#,
        data = data.display(),
        model = t.path().join("pretrained").display(),
    );
    let rp = t.path().join("recipe.toml");
    std::fs::write(&rp, text).unwrap();
    let recipe = Recipe::load(&rp).unwrap();
    let root = t.path().join("sweep");
    (t, recipe, root)
}

#[test]
fn sweep_resume_report_and_search() {
    let (_t, recipe, root) = setup(false);
    let rows = sweep::run(&recipe, &root, &[], true).unwrap();
    // 2 unpruned + 2 subsets x 2 levels x (aware + agnostic).
    assert_eq!(rows.len(), 2 + 2 * 2 * 2);
    for r in &rows {
        let acc = r.test_top1.unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r:?}");
        if r.pipeline != "unpruned" {
            let removed = r.params_removed_percent.unwrap();
            assert!((removed - r.level).abs() < 8.0, "level {} removed {removed}", r.level);
            assert!(r.gops_after.unwrap() < r.gops_before.unwrap());
        }
    }
    // The aware cells retrain from epoch n_f + 1 = 2; their logs hold epochs 2 and 3 only.
    let log = std::fs::read_to_string(root.join("net/rg/aware-p30-s0/run/log.csv")).unwrap();
    let epochs: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(epochs, ["2", "3"]);

    // Interrupt: one cell loses its result. Rerunning redoes that cell only.
    let victim = pipeline::CellId::Aware { net: "net".into(), subset: "rg".into(), level: 6000, seed: 0 };
    let other = root.join("net/rg/aware-p30-s0/metrics.json");
    let before = std::fs::metadata(&other).unwrap().modified().unwrap();
    std::fs::remove_file(pipeline::cell_dir(&root, &victim).join("metrics.json")).unwrap();
    let rows2 = sweep::run(&recipe, &root, &[], true).unwrap();
    assert_eq!(rows2.len(), rows.len());
    assert_eq!(std::fs::metadata(&other).unwrap().modified().unwrap(), before, "finished cells are not rerun");

    let summary = report::write_report(&rows2, &root.join("report")).unwrap();
    assert_eq!(summary.pairs, 2);
    assert!(summary.mean_delta_pp.is_some());
    for f in ["report.md", "deltas.csv", "summary.json", "acc_vs_level_net.svg", "acc_vs_level_net.png"] {
        assert!(root.join("report").join(f).exists(), "{f}");
    }

    let r = search::search(&recipe, &root, "net", "rg", search::Options { in_process: true, ..Default::default() })
        .unwrap();
    assert!(!r.probes.is_empty() && r.probes.len() <= 5, "{r:?}");
    assert_eq!(r.probes[0].level, 50.0);
    let gops: f64 = r.probes.iter().map(|p| p.retrain_gops.expect("every probe's compute")).sum();
    assert!(gops > 0.0 && r.total_retrain_gops == Some(gops), "{r:?}");
    for p in &r.probes {
        assert!(p.retrain_seconds.is_some_and(|s| s > 0.0), "{p:?}");
        assert!(p.predicted_retrain_seconds.is_none_or(|s| s > 0.0 && s.is_finite()), "{p:?}");
    }
    if let Some(l) = r.level {
        assert!(r.probes.iter().any(|p| p.level == l && p.reaches_reference));
    }
    // cost_opt stops at the first probe that reaches the reference (the probes are cached: the
    // same cells, no rerun): its probes are memory_opt's up to that one.
    let c = search::search(
        &recipe,
        &root,
        "net",
        "rg",
        search::Options { in_process: true, mode: search::Mode::CostOpt, ..Default::default() },
    )
    .unwrap();
    let first = r.probes.iter().position(|p| p.reaches_reference);
    match first {
        Some(k) => {
            assert_eq!(c.probes.len(), k + 1, "{c:?}");
            assert_eq!(c.level, Some(r.probes[k].level));
        }
        None => assert_eq!((c.probes.len(), c.level), (r.probes.len(), None)),
    }
    for (a, b) in c.probes.iter().zip(&r.probes) {
        assert_eq!((a.level, a.test_top1), (b.level, b.test_top1));
    }

    // The report's other figures. The channel sets: one epoch-0-vs-n_f comparison per aware cell
    // (one seed: none between seeds), each at most the number of groups either plan prunes.
    let channels = report::channels::collect(&recipe, &root).unwrap();
    assert_eq!(channels.len(), 2 * 2, "{channels:?}");
    for c in &channels {
        assert_eq!(c.comparison, report::channels::EPOCH0_VS_NF);
        assert!(c.groups > 0 && (0.0..=c.groups as f64).contains(&c.difference), "{c:?}");
    }
    // Latency measured after the sweep, from the plans: every result cell, pruned ones faster
    // in GOps and timed, the unpruned one at its own latency; and the search's probes off the
    // grid, as `search` leaves its result in the folder.
    std::fs::write(root.join("search-net-rg.json"), serde_json::to_string(&r).unwrap()).unwrap();
    let lat = edgeprune::protocol::latency::measure(&recipe, &root, edgeprune::engine::Runtime::Libtorch, 3, |_, _| {})
        .unwrap();
    let grid: Vec<f64> = rows2.iter().filter(|c| c.pipeline == "aware").map(|c| c.level).collect();
    let mut off_grid: Vec<f64> = r.probes.iter().map(|p| p.level).filter(|l| !grid.contains(l)).collect();
    off_grid.sort_by(f64::total_cmp);
    off_grid.dedup();
    assert_eq!(lat.len(), rows2.len() + off_grid.len(), "{lat:?}");
    for l in &off_grid {
        assert!(lat.iter().any(|x| x.pipeline == "aware" && x.level == *l), "probe at {l}% not timed: {lat:?}");
    }
    assert!(lat.iter().all(|l| l.ms_per_image_after > 0.0 && l.ms_per_image_before > 0.0), "{lat:?}");
    assert!(lat.iter().filter(|l| l.pipeline == "unpruned").all(|l| l.ms_per_image_after == l.ms_per_image_before));
    let mut with_latency = rows2.clone();
    assert_eq!(edgeprune::protocol::latency::fill(&mut with_latency, &lat), (rows2.len(), 0));
    let extras = report::Extras { channels, searches: vec![r.clone(), c.clone()], latency: lat.clone() };
    report::write_report_with(&with_latency, &extras, &root.join("report2")).unwrap();
    for f in [
        "channel_sets.csv",
        "channel_sets_net.png",
        "search_cost.csv",
        "search_tops_net.svg",
        "acc_vs_latency_net.png",
        "search_payback.csv",
    ] {
        assert!(root.join("report2").join(f).exists(), "{f}");
    }
    let probes = std::fs::read_to_string(root.join("report2/search_cost.csv")).unwrap();
    assert_eq!(probes.lines().count(), 1 + r.probes.len() + c.probes.len(), "{probes}");
    // The payback of each search: the found network's latency from the rows just measured.
    let payback = std::fs::read_to_string(root.join("report2/search_payback.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(payback.as_bytes());
    let cols = rdr.headers().unwrap().clone();
    let found = cols.iter().position(|h| h == "ms_per_image_found").unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 2, "{payback}");
    for (row, s) in rows.iter().zip([&r, &c]) {
        assert_eq!(row[found].is_empty(), s.level.is_none(), "{payback}");
    }
}

/// The fair scaled budget: each pipeline's epochs draw the same share of its own training split,
/// so the agnostic pipeline (all four classes) takes twice the steps of the aware one (two), and
/// the report says so.
#[test]
fn epoch_fraction_scales_each_pipelines_own_data() {
    let (_t, recipe, root) = setup_with(false, "epoch_fraction = 0.5", "[50]");
    let rows = sweep::run(&recipe, &root, &["net/rg".to_string()], true).unwrap();
    // Per class 80% of 20 images train: the subset has 32 training images, all classes 64. Half
    // of each, in batches of 8, for 3 epochs.
    let steps = |p: &str| rows.iter().find(|r| r.pipeline == p).and_then(|r| r.train_steps);
    assert_eq!(steps("aware"), Some(3.0 * 2.0), "{rows:?}");
    assert_eq!(steps("agnostic"), Some(3.0 * 4.0), "{rows:?}");
    assert_eq!(steps("unpruned"), None);
    for r in &rows {
        assert!(r.budget.contains("epoch_fraction = 0.5"), "{r:?}");
    }
    // The aware cell's retraining log (epochs 2 and 3) saw 2 batches of 8 per epoch.
    let m: pipeline::CellMetrics =
        serde_json::from_str(&std::fs::read_to_string(root.join("net/rg/aware-p50-s0/metrics.json")).unwrap()).unwrap();
    assert_eq!(m.row.unwrap().train_steps, Some(6.0));
    report::write_report(&rows, &root.join("report")).unwrap();
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    assert!(md.contains("Training budget: 3 epochs, each of 50.0% of the pipeline's own training split"), "{md}");
    assert!(md.contains("| net | rg | agnostic | 12 | 1 |"), "{md}");

    // Both budgets at once are refused, naming the key.
    let mut both = recipe.clone();
    both.max_batches = Some(2);
    let e = both.validate().unwrap_err().to_string();
    assert!(e.contains("epoch_fraction") && e.contains("max_batches"), "{e}");
    let mut bad = recipe;
    bad.epoch_fraction = Some(1.5);
    assert!(bad.validate().unwrap_err().to_string().contains("1.5 is not in (0, 1]"));
}

#[test]
fn the_cli_runs_cells_in_child_processes() {
    let (t, recipe, root) = setup(true);
    let rp = t.path().join("recipe.toml");
    let (out, text) = common::output(common::bin().args([
        "experiment",
        rp.to_str().unwrap(),
        "-o",
        root.to_str().unwrap(),
        "--only",
        "net/rg",
    ]));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ETA") && text.contains("mean_delta_pp"), "{text}");
    let rows = report::read_cells(&root.join("cells.csv")).unwrap();
    assert_eq!(rows.len(), 1 + 2 * 2);
    let m: pipeline::CellMetrics =
        serde_json::from_str(&std::fs::read_to_string(root.join("net/rg/aware-p30-s0/metrics.json")).unwrap()).unwrap();
    assert!(m.peak_rss_bytes.unwrap() > 0);
    let c = &m.costs;
    for v in [
        c.train_step_ms_before,
        c.train_step_ms_after,
        c.infer_ms_per_image_b1_before,
        c.infer_ms_per_image_b128_after,
        c.data_ms_per_batch,
        c.prune_seconds,
    ] {
        assert!(v.unwrap() > 0.0, "{c:?}");
    }
    assert!(!m.row.unwrap().energy_joules.is_empty(), "a figure or `unavailable`");
    let _ = recipe;
}

#[test]
fn shipped_recipes_parse() {
    for f in [
        "recipes/adapt-cifar10-resnet20.toml",
        "recipes/adapt-cifar100-paper.toml",
        "recipes/demo.toml",
        "recipes/fair-cifar10-resnet20.toml",
        "recipes/fair-cifar10-resnet20-unlabeled.toml",
    ] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let r = Recipe::load(&p).unwrap_or_else(|e| panic!("{f}: {e}"));
        for n in &r.networks {
            r.resolve(n).unwrap();
        }
        assert!(!pipeline::cells(&r).is_empty());
    }
    let r = Recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/adapt-cifar100-paper.toml")).unwrap();
    let sq = r.resolve(&r.networks[3]).unwrap();
    assert_eq!(sq.aware.to_string(), "0 0.0008 5 0.02 15 0.004 25 0.0008");
    assert_eq!(sq.weight_decay, 2e-4);
}

/// A sweep whose levels are shares of the measured latency (`level_of = "latency"`): each cell
/// that prunes plans on the device's latency table (measured once, then reused from the cache),
/// and the report says what its levels are. Needs ONNX Runtime (see engine_zoo.rs).
#[test]
fn latency_levels_plan_on_the_devices_table() {
    if !common::onnxruntime_or_skip("latency_levels_plan_on_the_devices_table") {
        return;
    }
    let (t, _, root) = setup(false);
    // ResNet-20 rather than the tiny network: its floor is far below its unpruned latency, so
    // load from tests running beside it cannot put 20% out of reach.
    let model = Model::init(zoo::build("resnet20", 4).unwrap(), 0).unwrap();
    native::save(&model, &t.path().join("pretrained")).unwrap();
    let rp = t.path().join("recipe.toml");
    let text = std::fs::read_to_string(&rp).unwrap().replace(
        "levels = [30, 60]",
        "levels = [20, 99.99]\nlevel_of = \"latency\"\nruntime = \"ort\"\nlatency_batch = 1\nthreads = 1",
    );
    std::fs::write(&rp, text.replace("threads = 2\n", "")).unwrap();
    let cache = t.path().join("cache");
    let run = || {
        common::output(common::bin().env("EDGEPRUNE_CACHE", &cache).args([
            "experiment",
            rp.to_str().unwrap(),
            "-o",
            root.to_str().unwrap(),
            "--only",
            "net/rg",
        ]))
    };
    let (out, text) = run();
    assert!(out.status.success(), "{text}");
    let tables: Vec<_> = std::fs::read_dir(cache.join("latency")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(tables.len(), 1, "one table for the network, runtime, batch and threads: {tables:?}");
    // Levels are shares of the unpruned network's latency as the table predicts it.
    let table: edgeprune::analysis::latency::LatencyTable =
        serde_json::from_str(&std::fs::read_to_string(&tables[0]).unwrap()).unwrap();
    let pretrained = native::load(&t.path().join("pretrained")).unwrap();
    let unpruned_ms = table.predict(&pretrained.graph).unwrap();
    let (net, subset) = ("net".to_string(), "rg".to_string());
    for cell in [
        pipeline::CellId::Aware { net: net.clone(), subset, level: 2000, seed: 0 },
        pipeline::CellId::AgnosticTrain { net, level: 2000, seed: 0 },
    ] {
        let plan = pipeline::cell_dir(&root, &cell).join("plan.json");
        let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
        let target = plan["made_by"]["target"]["latency_ms"].as_f64().unwrap_or_else(|| panic!("{cell:?}: {plan}"));
        assert!(
            (target - 0.8 * unpruned_ms).abs() < 1e-9 * unpruned_ms.max(1.0),
            "{cell:?}: {target} vs {unpruned_ms}"
        );
        assert!(plan["predicted"]["latency_ms_after"].as_f64().unwrap() <= target, "{cell:?}: {plan}");
    }
    let rows = report::read_cells(&root.join("cells.csv")).unwrap();
    assert!(rows.iter().filter(|r| r.pipeline != "unpruned").all(|r| r.level_of == "latency"), "{rows:?}");
    // Cells whose level is past the network's floor on this device's table are not run: the
    // sweep records them in unreachable.csv instead of failing. Whether 99.99% is past it depends
    // on the table just measured, so the floor is computed here from that same table.
    let groups = edgeprune::analysis::groups(&pretrained.graph).unwrap();
    let limits = edgeprune::surgery::planner::Limits::default();
    let (full, floor) =
        edgeprune::surgery::planner::latency_floor(&pretrained.graph, &groups, &table, &limits).unwrap();
    let max = 100.0 * (1.0 - floor / full);
    let unreachable = std::fs::read_to_string(root.join("unreachable.csv")).unwrap_or_default();
    let at_99 = rows.iter().any(|r| r.level == 99.99);
    if max < 99.99 {
        assert!(!at_99 && text.contains("beyond net's floor"), "{max}: {rows:?}\n{text}");
        assert!(unreachable.starts_with("cell,level_percent,max_reachable_percent\n"), "{unreachable}");
        for cell in ["net/rg/aware-p99.99-s0,99.99,", "net/rg/agnostic-p99.99-s0,99.99,"] {
            assert!(unreachable.contains(&format!("{cell}{max:.3}")), "{cell} missing in {unreachable}");
        }
    } else {
        assert!(at_99 && unreachable.is_empty(), "{max}: {rows:?}\n{unreachable}");
    }
    let summary = report::write_report(&rows, &root.join("report")).unwrap();
    assert_eq!(summary.level_of, "latency");
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    assert!(md.contains("Levels are % of latency removed (on the device's table)"), "{md}");
    // A rerun measures nothing again: the table is reused.
    let _ = std::fs::remove_file(root.join("net/rg/aware-p20-s0/metrics.json"));
    let (out, text) = run();
    assert!(out.status.success() && text.contains("(reused)"), "{text}");
    // DaPR over latency levels probes only levels the device can reach.
    let (out, text) = common::output(common::bin().env("EDGEPRUNE_CACHE", &cache).args([
        "search",
        rp.to_str().unwrap(),
        "--network",
        "net",
        "--subset",
        "rg",
        "-o",
        root.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{text}");
    let max: f64 = text
        .split("latency levels reach at most ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    for probe in text.lines().filter_map(|l| l.trim().strip_prefix("probe p = ")) {
        let level: f64 = probe.split('%').next().unwrap().parse().unwrap();
        assert!(level <= max, "probed {level}% past the reachable {max}%: {text}");
    }
}

/// `experiment --shard I/N`: two shards started at once into one folder end with the very cells
/// of one unsharded run (the same accuracies, bit for bit: CPU, fixed threads), every shared
/// cell (fine-tunes, agnostic retrainings) run by exactly one of them, and `report` merges what
/// both finished.
#[test]
fn two_shards_at_once_give_the_cells_of_one_unsharded_run() {
    let (t, recipe, _) = setup(false);
    let rp = t.path().join("recipe.toml");
    let (one, sharded) = (t.path().join("one"), t.path().join("sharded"));
    let (out, text) = common::output(common::bin().arg("experiment").arg(&rp).arg("-o").arg(&one));
    assert!(out.status.success(), "{text}");
    let shard = |i: usize| {
        common::bin()
            .arg("experiment")
            .arg(&rp)
            .arg("-o")
            .arg(&sharded)
            .args(["--shard", &format!("{i}/2")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (shard(0), shard(1));
    let texts: Vec<String> = [a, b]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{text}");
            text
        })
        .collect();
    let all = pipeline::cells(&recipe);
    for id in &all {
        let runs: usize = texts.iter().map(|t| t.lines().filter(|l| *l == format!("running cell {id}")).count()).sum();
        assert_eq!(runs, 1, "{id} ran {runs} times across the shards:\n{}\n---\n{}", texts[0], texts[1]);
    }
    assert!(texts.iter().all(|t| t.contains("edgeprune report")), "{texts:?}");
    assert!(!sharded.join("report").exists(), "shards leave the report to `report`");
    let count = |pat: &str| texts.iter().map(|t| t.matches(pat).count()).sum::<usize>();
    eprintln!(
        "shared cells waited for: {}, taken from the other shard: {}",
        count(", waiting for it"),
        count("finished by another process")
    );
    let (out, text) = common::output(common::bin().arg("report").arg(&sharded));
    assert!(out.status.success(), "{text}");
    let key = |rows: Vec<report::Cell>| {
        let mut k: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {:?} {:?} {:?} {:?}",
                    r.network,
                    r.subset,
                    r.pipeline,
                    r.level,
                    r.seed,
                    r.test_top1,
                    r.val_top1,
                    r.params_after,
                    r.train_steps
                )
            })
            .collect();
        k.sort();
        k
    };
    let merged = report::read_cells(&sharded.join("cells.csv")).unwrap();
    let expected = key(sweep::collect(&recipe, &one).unwrap());
    assert_eq!(
        expected.len(),
        all.iter()
            .filter(|c| !matches!(c, pipeline::CellId::FineTune { .. } | pipeline::CellId::AgnosticTrain { .. }))
            .count()
    );
    assert_eq!(key(merged), expected);
    assert!(sharded.join("report/report.md").exists());
}
