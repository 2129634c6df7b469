//! Label-free adaptation on a small dataset the test writes: a teacher trained here on four
//! tinted classes tells which two a device sees, its pseudo-labels and distillation train the
//! student without the images' labels ever being read, the `aware-unlabeled` pipeline runs in a
//! sweep beside the labelled ones, and data with no subset stops before pruning.

use std::path::{Path, PathBuf};

use edgeprune::data::Dataset;
use edgeprune::engine::Device;
use edgeprune::formats::native;
use edgeprune::ir::Model;
use edgeprune::protocol::recipe::Pipeline;
use edgeprune::protocol::{Recipe, report, search, sweep};
use edgeprune::train::{self, DistillConfig, RunData, Start, TrainConfig};
use edgeprune::workflow::subset::SubsetRule;
use edgeprune::workflow::unlabeled;
use edgeprune::zoo;

mod common;

const CLASSES: [&str; 4] = ["red", "green", "blue", "grey"];
const INPUT: [usize; 3] = [3, 16, 16];

/// The dataset, and a teacher trained on all four classes (its best model folder).
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    edgeprune::engine::set_threads(2);
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_image_folder(&data, &CLASSES, (40, 10), 16, common::tinted);
    let all = RunData::load(Some(data.as_path()), &[], 0.8, &INPUT).unwrap();
    let cfg = TrainConfig {
        epochs: 4,
        batch_size: 16,
        lr_schedule: train::Schedule::constant(0.05),
        threads: 2,
        ..TrainConfig::default()
    };
    let model = Model::init(zoo::build("projection_residual", 4).unwrap(), 0).unwrap();
    let run = t.path().join("teacher");
    let s = train::fit(Some(Start { model, plan: None, epoch: 0 }), &all, &cfg, &run).unwrap();
    assert!(s.final_test.top1 >= 0.9, "the teacher did not learn the tints: {s:?}");
    let teacher = train::RunDir::new(&run).best();
    (t, data, teacher)
}

fn local(data: &Path, classes: &[&str]) -> RunData {
    let names: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    RunData::load(Some(data), &names, 1.0, &INPUT).unwrap()
}

fn same_images(a: &Dataset, b: &Dataset) -> bool {
    a.shape == b.shape && a.all_images() == b.all_images()
}

#[test]
fn the_images_labels_are_never_read() {
    let (t, data, teacher_dir) = setup();
    let teacher = edgeprune::formats::load_model(&teacher_dir).unwrap();
    let rule = SubsetRule::default();
    let honest = local(&data, &["red", "green"]);
    let truth = honest.classes.clone();
    // The same images with every training label replaced by a wrong class.
    let mut lying = local(&data, &["red", "green"]);
    for l in lying.train.labels.iter_mut() {
        *l = 3 - *l;
    }
    let a = unlabeled::prepare(&teacher, honest, &rule, 0.8, Device::Cpu, Some(&truth)).unwrap();
    let b = unlabeled::prepare(&teacher, lying, &rule, 0.8, Device::Cpu, Some(&truth)).unwrap();
    eprintln!("{}", a.found.histogram);
    assert_eq!(a.found.classes, vec![1, 3]);
    assert_eq!(a.found.class_names, vec!["green", "red"]);
    assert_eq!((a.found.precision, a.found.recall), (Some(1.0), Some(1.0)));
    assert!(a.found.pseudo_label_accuracy.unwrap() >= 0.9, "{:?}", a.found);
    assert_eq!(a.found.images, 80);
    // What the teacher made of them does not depend on the labels.
    assert_eq!(a.found.classes, b.found.classes);
    assert_eq!(a.data.train.labels, b.data.train.labels);
    assert!(same_images(&a.data.train, &b.data.train));
    let (va, vb) = (a.data.val.as_ref().unwrap(), b.data.val.as_ref().unwrap());
    assert_eq!(va.labels, vb.labels);
    assert!(same_images(va, vb));
    assert_eq!(a.data.train.len() + va.len(), 80);

    // Nor does a distilling run: the same log, figure for figure, from the same start.
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 16,
        lr_schedule: train::Schedule::constant(0.02),
        max_batches: Some(3),
        threads: 2,
        distill: Some(unlabeled::distill_config(&teacher_dir, &a.found)),
        ..TrainConfig::default()
    };
    let fit = |d: &RunData, name: &str| {
        let start = Start { model: teacher.clone(), plan: None, epoch: 0 };
        train::fit(Some(start), d, &cfg, &t.path().join(name)).unwrap();
        std::fs::read_to_string(t.path().join(name).join("log.csv")).unwrap()
    };
    let (la, lb) = (fit(&a.data, "a"), fit(&b.data, "b"));
    let strip_seconds = |log: &str| -> Vec<String> {
        // Columns: epoch, lr, train_loss, train_top1, val_loss, val_top1, test_loss, test_top1, test_top5, ...
        log.lines().map(|l| l.split(',').take(9).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(strip_seconds(&la), strip_seconds(&lb));
    // The run kept its distillation in its config, for an exact resume.
    let kept = TrainConfig::from_toml_file(&t.path().join("a/config.toml")).unwrap();
    assert_eq!(kept.distill, cfg.distill);
}

#[test]
fn a_distilling_run_refuses_a_teacher_that_does_not_fit() {
    let (t, data, teacher_dir) = setup();
    let student = Model::init(zoo::build("projection_residual", 3).unwrap(), 0).unwrap();
    let d = local(&data, &["blue", "green"]);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        max_batches: Some(1),
        threads: 2,
        distill: Some(DistillConfig { teacher: teacher_dir.clone(), ..DistillConfig::default() }),
        ..TrainConfig::default()
    };
    let e = train::fit(Some(Start { model: student, plan: None, epoch: 0 }), &d, &cfg, &t.path().join("x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot teach") && e.contains("[4]") && e.contains("[3]"), "{e}");
    let bad = DistillConfig { teacher: teacher_dir, temperature: 0.0, ..DistillConfig::default() };
    let e = TrainConfig { distill: Some(bad), ..cfg }.validate().unwrap_err().to_string();
    assert!(e.contains("distill.temperature"), "{e}");
}

#[test]
fn data_without_a_subset_stops_before_pruning_with_the_histogram() {
    let (_t, data, teacher_dir) = setup();
    let teacher = edgeprune::formats::load_model(&teacher_dir).unwrap();
    // Every class seen alike. (The teacher is unsure of grey, the untinted class, at the default
    // rule; among four classes a top-1 has probability at least 1/4, so at 0.25 every
    // prediction counts.)
    let every = SubsetRule { min_confidence: 0.25, min_share: 0.05 };
    let e = match unlabeled::prepare(&teacher, local(&data, &[]), &every, 0.8, Device::Cpu, None) {
        Ok(u) => panic!("a subset found in every class's images: {:?}", u.found),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("every one of its 4 classes") && e.contains("grey") && e.contains("confident"), "{e}");
    // A teacher that knows nothing is confident about nothing.
    let fresh = Model::init(zoo::build("projection_residual", 4).unwrap(), 7).unwrap();
    let strict = SubsetRule { min_confidence: 0.9, min_share: 0.05 };
    let e =
        unlabeled::prepare(&fresh, local(&data, &["red"]), &strict, 0.8, Device::Cpu, None).err().unwrap().to_string();
    assert!(e.contains("about no class") && e.contains("red"), "{e}");
}

#[test]
fn a_sweep_runs_the_label_free_pipeline_beside_the_labelled_ones() {
    let (t, data, teacher_dir) = setup();
    let text = format!(
        r#"name = "tiny"
data = "{data}"
levels = [50]
epochs = 3
fine_tune_epochs = 1
max_batches = 2
batch_size = 8
threads = 2
criterion_batches = 2
measure_costs = false
pipelines = ["aware", "aware-unlabeled", "agnostic", "unpruned"]

[[networks]]
name = "net"
model = "{model}"
arch = "resnet20"

[[subsets]]
name = "rg"
classes = ["red", "green"]

[unlabeled]
temperature = 2.0
"#,
        data = data.display(),
        model = teacher_dir.display(),
    );
    let rp = t.path().join("recipe.toml");
    std::fs::write(&rp, text).unwrap();
    let recipe = Recipe::load(&rp).unwrap();
    assert_eq!(recipe.unlabeled.temperature, 2.0);
    let root = t.path().join("sweep");
    let rows = sweep::run(&recipe, &root, &[], true).unwrap();
    let row = rows.iter().find(|r| r.pipeline == "aware-unlabeled").expect("a label-free row");
    assert_eq!(row.inferred_classes, "green red");
    assert_eq!((row.subset_precision, row.subset_recall), (Some(1.0), Some(1.0)));
    assert!(row.test_top1.is_some_and(|a| a.is_finite()) && row.val_top1.is_some(), "{row:?}");
    assert!(row.params_removed_percent.is_some_and(|p| p > 0.0), "{row:?}");
    // The fine-tune and the pruned cell distilled from the unpruned network over the two classes.
    for cell in ["finetune-unlabeled-s0", "aware-unlabeled-p50-s0"] {
        let dir = root.join("net/rg").join(cell);
        let cfg = TrainConfig::from_toml_file(&dir.join("run/config.toml")).unwrap();
        let d = cfg.distill.unwrap_or_else(|| panic!("{cell}: no distillation"));
        assert_eq!((d.classes, d.temperature, d.teacher), (vec![1, 3], 2.0, teacher_dir.clone()));
        let found: unlabeled::Found = native::read_json(&dir.join("inferred.json")).unwrap();
        assert_eq!(found.class_names, vec!["green", "red"]);
    }
    assert!(root.join("net/rg/aware-unlabeled-p50-s0/plan.json").is_file());

    // DaPR over label-free probes (the first is the cell the sweep ran at 50%).
    let opts = |m| search::Options {
        in_process: true,
        mode: search::Mode::CostOpt,
        pipeline: Some(Pipeline::AwareUnlabeled),
        max_retrain_minutes: m,
        ..Default::default()
    };
    let r = search::search(&recipe, &root, "net", "rg", opts(None)).unwrap();
    assert_eq!(r.pipeline, Pipeline::AwareUnlabeled);
    assert_eq!(r.probes[0].level, 50.0);
    assert!(r.probes.iter().all(|p| p.retrain_seconds.is_some() && p.predicted_retrain_seconds.is_none()), "{r:?}");
    for p in &r.probes {
        assert!(root.join(format!("net/rg/aware-unlabeled-p{}-s0/metrics.json", p.level)).is_file());
    }
    let e = search::search(&recipe, &root, "net", "rg", opts(Some(5.0))).unwrap_err().to_string();
    assert!(e.contains("teacher"), "{e}");
    report::write_report(&rows, &root.join("report")).unwrap();
    let md = std::fs::read_to_string(root.join("report/report.md")).unwrap();
    assert!(md.contains("| level (%) | aware | aware-unlabeled | gap to aware (pp) | agnostic |"), "{md}");
    assert!(
        md.contains("Label-free") && md.contains("| inferred classes: precision / recall | 100.0% / 100.0% |"),
        "{md}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["unlabeled"]["points"], 1, "{summary}");
    let deltas = std::fs::read_to_string(root.join("report/deltas.csv")).unwrap();
    assert!(deltas.lines().next().unwrap().contains("aware_unlabeled"), "{deltas}");
}

#[test]
fn adapt_on_a_folder_of_unlabeled_images() {
    let (t, data, teacher_dir) = setup();
    // The device's images: red and green ones, of another size than the network's input, in one
    // folder with no class folders.
    let local = t.path().join("camera");
    std::fs::create_dir_all(&local).unwrap();
    for (c, class) in [(0usize, "red"), (1, "green")] {
        for i in 0..24u32 {
            let img = image::RgbImage::from_fn(20, 18, |x, y| image::Rgb(common::tinted(c, i, x, y)));
            img.save(local.join(format!("{class}-{i:03}.png"))).unwrap();
        }
    }
    let out = t.path().join("adapted");
    let args = |extra: &[&str]| {
        let mut c = common::bin();
        c.arg("adapt").arg(&teacher_dir).arg("--data").arg(&local).arg("-o").arg(&out);
        c.args(["--level", "30", "--epochs", "2", "--fine-tune-epochs", "1", "--batch-size", "8"]);
        c.args(["--lr-schedule", "0 0.01", "--threads", "2", "--class-names", "blue,green,grey,red"]);
        c.args(extra);
        c
    };
    let (o, text) = common::output(&mut args(&[]));
    assert!(o.status.success(), "{text}");
    assert!(text.contains("inferred classes: green, red"), "{text}");
    assert!(text.contains("agreement with the teacher on") && text.contains("removed"), "{text}");
    assert!(!text.contains("test top-1 on the labelled"), "{text}");
    let r: unlabeled::AdaptReport = native::read_json(&out.join("adapt.json")).unwrap();
    assert_eq!(r.found.class_names, vec!["green", "red"]);
    assert_eq!((r.found.images, r.found.precision), (48, None));
    assert!(r.agreement.is_some_and(|a| (0.0..=1.0).contains(&a)) && r.params_after < r.params_before, "{r:?}");
    let adapted = edgeprune::formats::load_model(&out.join("model")).unwrap();
    assert_eq!(edgeprune::analysis::cost(&adapted.graph).unwrap().params, r.params_after);
    // The folder is not run over without --resume; with it, the finished runs are taken as they are.
    let (o, text) = common::output(&mut args(&[]));
    assert!(!o.status.success() && text.contains("--resume"), "{text}");
    let (o, text) = common::output(&mut args(&["--resume"]));
    assert!(o.status.success(), "{text}");
    // Bad input names what is at fault.
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = common::bin();
    c.arg("adapt").arg(&teacher_dir).arg("--data").arg(&empty).args(["--level", "30", "-o"]).arg(t.path().join("o2"));
    let (o, text) = common::output(&mut c);
    assert!(!o.status.success() && text.contains("empty") && text.contains("no .jpg, .jpeg or .png"), "{text}");
    let mut c = common::bin();
    c.arg("adapt").arg(&teacher_dir).arg("--data").arg(&local).args(["--level", "30", "--class-names", "a,b"]);
    c.arg("-o").arg(t.path().join("o3"));
    let (o, text) = common::output(&mut c);
    assert!(!o.status.success() && text.contains("2 names for the model's 4 classes"), "{text}");
    // The labelled dataset with its labels ignored: the subset's test images are the measure.
    let mut c = common::bin();
    c.arg("adapt").arg(&teacher_dir).arg("--data").arg(&data).args(["--subset", "blue,green", "--level", "30"]);
    c.args(["--epochs", "2", "--fine-tune-epochs", "1", "--batch-size", "8", "--lr-schedule", "0 0.01"]);
    c.arg("-o").arg(t.path().join("o4"));
    let (o, text) = common::output(&mut c);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("precision 100.00% recall 100.00%") && text.contains("test top-1 on the labelled"), "{text}");
}
