//! Inputs that are well-formed but make no sense get an error that says what is wrong: a plan
//! that prunes every channel of a group, a subset naming an unknown class, a pruning level outside
//! 0..100, an empty dataset.

use std::path::Path;

use edgeprune::criteria::{self, Criterion};
use edgeprune::data::{self, Split};
use edgeprune::ir::Model;
use edgeprune::protocol::recipe::Recipe;
use edgeprune::surgery::planner::{self, Limits, Scope, Target};
use edgeprune::surgery::{self, GroupPlan, Plan};
use edgeprune::{analysis, zoo};

mod common;

fn resnet20() -> Model {
    Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap()
}

fn err_of<T: std::fmt::Debug>(r: edgeprune::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn a_plan_that_prunes_every_channel_of_a_group_is_refused() {
    let model = resnet20();
    let groups = analysis::groups(&model.graph).unwrap();
    let g = groups.iter().find(|g| g.prunable()).unwrap();
    let plan = Plan::new("resnet20", vec![GroupPlan { name: g.name.clone(), size: g.size, keep: vec![] }]);
    // Through the JSON file, as `edgeprune prune --plan` reads it.
    let plan = Plan::from_json(&plan.to_json(), Path::new("plan.json")).unwrap();
    let e = err_of(surgery::apply(&model, &plan));
    assert!(e.contains(&g.name) && e.contains("keeps no channel") && e.contains(&g.size.to_string()), "{e}");

    // The same group twice, each keeping half: together they would remove every channel.
    let half = g.size / 2;
    let plan = Plan::new(
        "resnet20",
        vec![
            GroupPlan { name: g.name.clone(), size: g.size, keep: (0..half).collect() },
            GroupPlan { name: g.name.clone(), size: g.size, keep: (half..g.size).collect() },
        ],
    );
    let e = err_of(surgery::apply(&model, &plan));
    assert!(e.contains(&g.name) && e.contains("twice"), "{e}");
}

/// A CIFAR-10 test file with one image of each class given.
fn cifar10(labels: &[u8]) -> data::Dataset {
    let bytes: Vec<u8> = labels.iter().flat_map(|&l| [vec![l], vec![l; 3072]].concat()).collect();
    data::cifar10_from_bytes(&bytes, Path::new("test_batch.bin")).unwrap()
}

#[test]
fn a_subset_naming_an_unknown_class_lists_the_known_ones() {
    let ds = cifar10(&[3, 5]);
    let e = err_of(data::resolve_subset(&ds, &["cat".into(), "wolf".into()]));
    assert!(e.contains("unknown class `wolf`"), "{e}");
    for name in data::CIFAR10_CLASSES {
        assert!(e.contains(name), "`{name}` missing from: {e}");
    }
    // CIFAR-100: the classes and the superclasses, abbreviated.
    let bytes = [vec![data::CIFAR100_FINE_TO_COARSE[7], 7], vec![0; 3072]].concat();
    let ds = data::cifar100_from_bytes(&bytes, Path::new("test.bin")).unwrap();
    let e = err_of(data::resolve_subset(&ds, &["kitten".into()]));
    assert!(
        e.contains("kitten") && e.contains("apple") && e.contains("100 in all") && e.contains("superclasses"),
        "{e}"
    );
    // A train config's subset goes through the same resolution; the config itself parses.
    let cfg = edgeprune::train::TrainConfig::from_toml("subset = [\"cat\", \"wolf\"]\n").unwrap();
    let e = err_of(data::resolve_subset(&cifar10(&[3]), &cfg.subset));
    assert!(e.contains("wolf") && e.contains("airplane"), "{e}");
}

fn recipe_with_levels(levels: &str) -> edgeprune::Result<Recipe> {
    let text = format!(
        "name = \"t\"\nlevels = {levels}\n[[networks]]\nname = \"resnet20\"\nmodel = \"m\"\n[[subsets]]\nname = \"pets\"\nclasses = [\"cat\", \"dog\"]\n"
    );
    let r: Recipe = toml::from_str(&text).map_err(|e| edgeprune::Error::config("recipe", e.to_string()))?;
    r.validate()?;
    Ok(r)
}

#[test]
fn a_level_outside_0_to_100_is_refused() {
    recipe_with_levels("[10, 50.5, 99]").unwrap();
    for (levels, needle) in [("[0]", "0"), ("[100]", "100"), ("[-5]", "-5"), ("[50, 150]", "150"), ("[nan]", "NaN")] {
        let e = err_of(recipe_with_levels(levels));
        assert!(e.contains("levels") && e.contains(needle) && e.contains("percentage"), "{levels}: {e}");
    }
    // `edgeprune prune --level` and `--gops-level` reach the planner's check.
    let model = resnet20();
    let groups = analysis::groups(&model.graph).unwrap();
    let scores = criteria::score(Criterion::L1, &model, &groups, None, 0).unwrap();
    for target in [Target::Params(100.0), Target::Params(-1.0), Target::Gops(250.0), Target::Params(f64::NAN)] {
        let e = err_of(planner::make_plan(&model.graph, &groups, &scores, &target, Scope::Global, &Limits::default()));
        assert!(e.contains("level") && e.contains("percentage"), "{target:?}: {e}");
    }
}

#[test]
fn prune_on_the_command_line_refuses_a_level_outside_0_to_100() {
    let tmp = tempfile::tempdir().unwrap();
    for level in ["150", "-10", "100"] {
        let (out, text) = common::output(
            common::bin()
                .args(["prune", "resnet20", "--criterion", "l1", &format!("--level={level}"), "-o"])
                .arg(tmp.path().join("out")),
        );
        assert!(!out.status.success(), "--level {level} was accepted");
        assert!(text.contains("level") && text.contains(level.trim_start_matches('-')), "{level}: {text}");
        assert!(!tmp.path().join("out").exists(), "--level {level} wrote a model");
    }
    // A data-driven criterion refuses the level before it looks for data.
    let (out, text) = common::output(
        common::bin()
            .args(["prune", "resnet20", "--criterion", "taylor", "--level=150", "-o"])
            .arg(tmp.path().join("out"))
            .current_dir(tmp.path()),
    );
    assert!(!out.status.success() && text.contains("150") && !text.contains("dataset"), "{text}");
}

#[test]
fn an_empty_dataset_is_an_error_naming_the_file() {
    // A CIFAR binary file of 0 bytes.
    for e in [
        err_of(data::cifar10_from_bytes(&[], Path::new("data_batch_3.bin"))),
        err_of(data::cifar100_from_bytes(&[], Path::new("train.bin"))),
    ] {
        assert!((e.contains("data_batch_3.bin") || e.contains("train.bin")) && e.contains("empty"), "{e}");
    }
    // An ImageFolder archive with no images at all, and one with train images but no test ones.
    let tar = common::tar_gz;
    let empty = tar(&[("README.md", b"no images here")]);
    for split in [Split::Train, Split::Test] {
        let e = err_of(data::archive_from_bytes(&empty, Path::new("images.tar.gz"), split));
        assert!(e.contains("images.tar.gz") && e.contains("no images"), "{e}");
    }
    let mut png = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(2, 2).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let train_only = tar(&[("train/cat/a.png", png.get_ref())]);
    let e = err_of(data::archive_from_bytes(&train_only, Path::new("images.tar.gz"), Split::Train));
    assert!(e.contains("images.tar.gz") && e.contains("different classes") && e.contains("cat"), "{e}");
    let e = err_of(data::archive_from_bytes(&train_only, Path::new("images.tar.gz"), Split::Test));
    assert!(e.contains("images.tar.gz") && e.contains("test") && e.contains("no images"), "{e}");
    // An archive that is not gzip at all.
    let e = err_of(data::archive_from_bytes(b"", Path::new("images.tar.gz"), Split::Train));
    assert!(e.contains("images.tar.gz"), "{e}");
}

#[test]
fn a_graph_too_wide_to_analyse_is_an_error_not_an_allocation() {
    let text = r#"{"format": "edgeprune-graph", "version": 1, "name": "g", "output": "r", "nodes": [
        {"name": "input", "op": {"type": "input", "shape": [2147483647, 1, 1]}},
        {"name": "r", "op": {"type": "relu"}, "inputs": ["input"]}]}"#;
    let g = edgeprune::formats::native::graph_from_json(text, Path::new("graph.json")).unwrap();
    let e = err_of(analysis::groups(&g));
    assert!(e.contains("`input`") && e.contains("too many"), "{e}");
}

#[test]
fn a_recipe_with_a_huge_epoch_budget_is_refused_and_scales_without_overflow() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/toml_config/recipe-huge-epochs.toml"),
    )
    .unwrap();
    let r: Recipe = toml::from_str(&text).unwrap();
    // Such a budget is refused when the recipe is read (issue: late validation) ...
    let e = r.validate().unwrap_err().to_string();
    assert!(e.contains("epochs") && e.contains("more than 100000"), "{e}");
    // ... and the scaling itself still does not overflow.
    let h = r.resolve(&r.networks[0]).unwrap();
    // n_f = 5/30 of the budget, as for any budget (it wrapped around before).
    let expected = i64::MAX as f64 * 5.0 / 30.0;
    assert!((h.fine_tune_epochs as f64 / expected - 1.0).abs() < 1e-9, "{}", h.fine_tune_epochs);
}

#[test]
fn images_that_only_claim_a_large_size_fail_before_memory_is_taken_for_them() {
    // One real 4096x4096 PNG, then 399 headers that claim the same size and hold no pixels: the
    // decoder's buffer grows by batches, so this fails on the second image instead of reserving
    // 400 x 48 MiB first.
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/image_tar/header-bomb.tar.gz"),
    )
    .unwrap();
    let e = err_of(data::archive_from_bytes(&bytes, Path::new("bomb.tar.gz"), Split::Train));
    assert!(e.contains("bomb.tar.gz") && e.contains("member `train/a/0") && e.contains("decode"), "{e}");
}
