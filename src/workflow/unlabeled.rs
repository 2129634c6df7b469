//! Local data without labels (issue "Label-free adaptation"): the unpruned network is the teacher.
//! It is run once over the device's images (center crops, no augmentation) to tell which classes
//! the device sees ([`super::subset`]); each image is then labelled with the teacher's top class
//! among those (a pseudo-label), and the images are split per pseudo-label into training and
//! validation shares. The pseudo-labels serve what needs a label but must not read one: the
//! validation split (accuracy there is the student's agreement with the teacher, which chooses
//! the best epoch), the split itself, and the data-driven criteria (Taylor scores the
//! cross-entropy against the teacher's top class, the zero-temperature limit of the distillation
//! loss; activation and APoZ need no label). Training itself distils from the teacher's outputs
//! on each augmented batch ([`crate::train::DistillConfig`]). The images' own labels are never
//! read; the test split keeps its labels, for the protocol to measure against the truth.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::subset::{self, Inferred, SubsetRule};
use crate::data::{self, Dataset, Loader, LoaderConfig, Normalize};
use crate::engine::{self, Device, Infer};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::train::{self, DistillConfig, EVAL_BATCH_SIZE, RunData};

/// The teacher's logits on every image of `ds` (images at the network's input size), in order.
pub fn teacher_logits(teacher: &dyn Infer, ds: &Dataset, norm: &Normalize) -> Result<Vec<f32>> {
    if ds.is_empty() {
        return Err(Error::Data("no local images to run the teacher on".into()));
    }
    let loader = Loader::new(
        Arc::new(ds.clone()),
        LoaderConfig {
            batch_size: EVAL_BATCH_SIZE,
            shuffle: false,
            augment: None,
            norm: norm.clone(),
            seed: 0,
            epoch: 0,
            size: None,
        },
    );
    let mut out = Vec::with_capacity(ds.len() * teacher.num_outputs()?);
    for batch in loader {
        out.extend(teacher.predict(&batch.images, batch.len())?);
    }
    Ok(out)
}

/// The top class among `classes` of each row of `logits` (`k` columns).
pub fn pseudo_labels(logits: &[f32], k: usize, classes: &[usize]) -> Vec<u16> {
    logits
        .chunks_exact(k)
        .map(|row| {
            let top = classes.iter().copied().max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("a class");
            top as u16
        })
        .collect()
}

/// What the teacher found on the local images: the inferred classes and how well they match the
/// true ones where those are known.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    /// Class indices of the dataset, ascending.
    pub classes: Vec<usize>,
    pub class_names: Vec<String>,
    /// Images the teacher labelled.
    pub images: usize,
    /// Of them, the ones whose pseudo-label is confident (top probability among the inferred
    /// classes at least the rule's `min_confidence`).
    pub confident: usize,
    pub rule_min_confidence: f64,
    pub rule_min_share: f64,
    /// Precision and recall of `classes` against the true subset, where it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    /// Share of the images whose pseudo-label is their true label, where it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_label_accuracy: Option<f64>,
    /// The prediction histogram, one line per class.
    pub histogram: String,
}

/// Run data for label-free adaptation, and what the teacher found.
pub struct Unlabeled {
    pub data: RunData,
    pub found: Found,
}

/// Turns `local` (its training split taken as the device's images, their labels unread; it must
/// hold no validation split, which is made here from pseudo-labels) into run data for label-free adaptation
/// by `teacher`: the subset inferred under `rule`, every image pseudo-labelled, and the pool
/// split per pseudo-label, `train_fraction` training and the rest validation. The test split is
/// kept as it is. `truth`, where given, are the true classes (the protocol's check, reported in
/// [`Found`], never used).
pub fn prepare(
    teacher: &Model,
    local: RunData,
    rule: &SubsetRule,
    train_fraction: f64,
    device: Device,
    truth: Option<&[usize]>,
) -> Result<Unlabeled> {
    if !(train_fraction > 0.0 && train_fraction < 1.0) {
        return Err(Error::config(
            "train_fraction",
            format!(
                "{train_fraction}: label-free adaptation holds out a share of the images to validate on, so it must be in (0, 1)"
            ),
        ));
    }
    let mut teacher = teacher.clone();
    let norm = train::model_normalize(&mut teacher, &local.stats)?;
    let size = teacher.graph.image_size()?;
    let net = engine::infer(&teacher, device)?;
    let k = net.num_outputs()?;
    let names = &local.train.classes.clone();
    if names.len() != k {
        return Err(Error::Data(format!(
            "the teacher has {k} outputs but the data names {} classes: label-free adaptation needs the teacher's \
             classes in the data's order",
            names.len()
        )));
    }
    if local.val.is_some() {
        return Err(Error::config(
            "train_fraction",
            "the local data was split by its labels: load it whole (train_fraction 1) for label-free adaptation",
        ));
    }
    let pool = local.train;
    let logits = teacher_logits(&*net, &pool.clone().center_crop(size), &norm)?;
    let inferred: Inferred = subset::infer(&logits, pool.len(), k, rule, names)?;
    let pseudo = pseudo_labels(&logits, k, &inferred.classes);
    let confident = logits
        .chunks_exact(k)
        .filter(|row| {
            let m = inferred.classes.iter().map(|&c| row[c]).fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = inferred.classes.iter().map(|&c| ((row[c] - m) as f64).exp()).sum();
            1.0 / z >= rule.min_confidence
        })
        .count();
    let pseudo_label_accuracy = truth
        .map(|_| pool.labels.iter().zip(&pseudo).filter(|(a, b)| a == b).count() as f64 / pool.len().max(1) as f64);
    let (precision, recall) = match truth {
        Some(t) => {
            let (p, r) = subset::scores(&inferred.classes, t);
            (Some(p), Some(r))
        }
        None => (None, None),
    };
    let class_names: Vec<String> = inferred.classes.iter().map(|&c| names[c].clone()).collect();
    let found = Found {
        classes: inferred.classes.clone(),
        class_names: class_names.clone(),
        images: pool.len(),
        confident,
        rule_min_confidence: rule.min_confidence,
        rule_min_share: rule.min_share,
        precision,
        recall,
        pseudo_label_accuracy,
        histogram: inferred.histogram.describe(names),
    };
    let relabelled = Dataset { labels: pseudo, coarse_labels: None, ..pool };
    let (train, val) = data::train_val_split(&relabelled, train_fraction);
    if train.is_empty() || val.is_empty() {
        return Err(Error::Data(format!(
            "{} local images leave no training or no validation images at train_fraction {train_fraction}",
            relabelled.len()
        )));
    }
    let data = RunData {
        train,
        val: Some(val.center_crop(size)),
        test: local.test,
        classes: inferred.classes,
        class_names,
        num_dataset_classes: local.num_dataset_classes,
        stats: local.stats,
    };
    Ok(Unlabeled { data, found })
}

/// The distillation of a label-free run: from the model at `teacher`, restricted to `found`'s
/// classes, with the defaults of [`DistillConfig`].
pub fn distill_config(teacher: &Path, found: &Found) -> DistillConfig {
    DistillConfig { teacher: teacher.to_path_buf(), classes: found.classes.clone(), ..DistillConfig::default() }
}

/// A whole label-free adaptation for one device (`edgeprune adapt`): from the teacher, fine-tune
/// by distillation for `fine_tune_epochs`, prune as `prune` says (data-driven criteria on the
/// pseudo-labels), retrain by distillation up to `train.epochs`, as the protocol's
/// `aware-unlabeled` cells do.
#[derive(Debug, Clone)]
pub struct AdaptRequest {
    /// The teacher's model folder (the network to adapt).
    pub teacher: std::path::PathBuf,
    pub rule: SubsetRule,
    /// The share of the local images that trains; the rest validates (agreement with the teacher).
    pub train_fraction: f64,
    pub prune: super::PruneRequest,
    /// The training of both phases: `epochs` in all, its schedule, batch size and so on; its
    /// `distill` gives the temperature, alpha and pseudo-label confidence (teacher and classes
    /// are set here).
    pub train: crate::train::TrainConfig,
    pub fine_tune_epochs: usize,
}

/// What an adaptation did, written as `adapt.json` in its folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptReport {
    pub found: Found,
    pub criterion: String,
    pub params_before: usize,
    pub params_after: usize,
    pub gops_before: f64,
    pub gops_after: f64,
    /// The student's agreement with the teacher (top-1 among the inferred classes) on the held-out
    /// local images: after fine-tuning, and of the adapted model (its best epoch).
    pub agreement_fine_tuned: Option<f64>,
    pub agreement: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Local images held out to measure the agreement on.
    pub held_out: usize,
    /// Test accuracy on labelled test images, where the local data came with them (a labelled
    /// dataset read with its training labels ignored): at the best epoch by agreement.
    pub test_top1: Option<f64>,
    pub prune_seconds: f64,
    pub train_seconds: f64,
    /// The adapted model's folder.
    pub model: std::path::PathBuf,
}

/// Sub-folders and files of an adaptation folder.
pub const ADAPT_REPORT: &str = "adapt.json";

/// Runs `req` on `local` (prepared as [`prepare`] says; where `labelled_test` is false its test
/// split is replaced by the held-out local images; `truth`, where known, the true classes, as
/// for [`prepare`]) into the folder `out`: `finetune/` and
/// `retrain/` (run folders, resumed where an earlier process stopped), `plan.json`, `inferred.json`,
/// `model/` (the adapted model) and [`ADAPT_REPORT`].
pub fn adapt(
    req: &AdaptRequest,
    local: RunData,
    labelled_test: bool,
    truth: Option<&[usize]>,
    out: &Path,
) -> Result<AdaptReport> {
    use crate::formats::native;
    use crate::train::{RunDir, Start, TrainConfig};
    let nf = req.fine_tune_epochs;
    if nf == 0 || nf >= req.train.epochs {
        return Err(Error::config(
            "fine_tune_epochs",
            format!("{nf} must be at least 1 and below the {} epochs in all (then the retraining)", req.train.epochs),
        ));
    }
    req.prune.check()?;
    let teacher = crate::formats::load_model(&RunDir::model_path(&req.teacher))?;
    let device = req.prune.device;
    let mut u = prepare(&teacher, local, &req.rule, req.train_fraction, device, truth)?;
    eprintln!("adapt: the teacher sees {:?}\n{}", u.found.class_names, u.found.histogram);
    if !labelled_test {
        u.data.test = u.data.val.clone().expect("prepare holds out a validation split");
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    native::write_json(&out.join("inferred.json"), &u.found)?;
    let base = req.train.distill.clone().unwrap_or_default();
    let distill = DistillConfig { teacher: req.teacher.clone(), classes: u.found.classes.clone(), ..base };
    let data = &u.data;
    let t0 = std::time::Instant::now();
    let ft = TrainConfig { epochs: nf, best_from_epoch: 0, distill: Some(distill.clone()), ..req.train.clone() };
    let ft_run = out.join("finetune");
    let ft_sum = super::train_from(Start { model: teacher.clone(), plan: None, epoch: 0 }, data, &ft, &ft_run)?;
    let mut tuned = crate::train::last_model(&ft_run)?;
    let pruned = req.prune.run(&mut tuned, Some(data))?;
    if !pruned.at_minimum.is_empty() {
        eprintln!("note: the plan leaves groups at their minimum: {}", pruned.at_minimum.join(", "));
    }
    let plan = pruned.plan.to_json();
    native::write_atomic(&out.join("plan.json"), plan.as_bytes())?;
    let re = TrainConfig { best_from_epoch: nf, distill: Some(distill), ..req.train.clone() };
    let re_run = out.join("retrain");
    let start = Start { model: pruned.model.clone(), plan: Some(plan.clone()), epoch: nf };
    let s = super::train_from(start, data, &re, &re_run)?;
    let train_seconds = t0.elapsed().as_secs_f64() - pruned.seconds();
    let adapted = crate::formats::load_model(&RunDir::new(&re_run).best())?;
    let model_dir = out.join("model");
    native::save(&adapted, &model_dir)?;
    native::write_atomic(&model_dir.join("plan.json"), plan.as_bytes())?;
    let (cb, ca) = (crate::analysis::cost(&teacher.graph)?, crate::analysis::cost(&adapted.graph)?);
    let report = AdaptReport {
        found: u.found.clone(),
        criterion: req.prune.criterion.to_string(),
        params_before: cb.params,
        params_after: ca.params,
        gops_before: cb.gops,
        gops_after: ca.gops,
        agreement_fine_tuned: ft_sum.best_val_top1,
        agreement: s.best_val_top1,
        best_epoch: s.best_epoch,
        held_out: data.val.as_ref().map_or(0, |v| v.len()),
        test_top1: if labelled_test { s.test_top1_at_best_val } else { None },
        prune_seconds: pruned.seconds(),
        train_seconds,
        model: model_dir,
    };
    native::write_json(&out.join(ADAPT_REPORT), &report)?;
    Ok(report)
}
