//! Training and evaluation loops: epochs over a [`Loader`], the learning-rate schedule, top-1/top-5
//! evaluation, the best-validation checkpoint, a per-epoch CSV log and resumable run folders.
//! The engine does the arithmetic; this module decides what to run and records what happened.

mod config;
mod schedule;

pub use config::TrainConfig;
pub use schedule::Schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::data::{self, Augment, Dataset, Loader, Normalize, Split};
use crate::engine::{Device, Network, SgdConfig};
use crate::error::{Error, Result};
use crate::formats::{self, native};
use crate::ir::{self, Model};

/// Accuracy and loss of a model on a dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub count: usize,
}

/// Evaluates in inference mode (BatchNorm running statistics, no dropout).
pub fn evaluate(net: &Network, ds: &Dataset, norm: &Normalize, batch_size: usize) -> Result<EvalStats> {
    if ds.is_empty() {
        return Err(Error::Data("cannot evaluate on an empty dataset".into()));
    }
    let classes = net.num_outputs()?;
    let loader = Loader::new(Arc::new(ds.clone()), batch_size, false, None, *norm, 0, 0);
    let (mut loss, mut top1, mut top5) = (0.0f64, 0usize, 0usize);
    for batch in loader {
        let logits = net.predict(&batch.images, batch.len())?;
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            let label = label as usize;
            if label >= classes {
                return Err(Error::Data(format!("label {label} does not fit the model's {classes} outputs")));
            }
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
            loss += lse - row[label] as f64;
            let better = row.iter().filter(|&&v| v > row[label]).count();
            top1 += (better == 0) as usize;
            top5 += (better < 5) as usize;
        }
    }
    let n = ds.len();
    Ok(EvalStats { loss: loss / n as f64, top1: top1 as f64 / n as f64, top5: top5 as f64 / n as f64, count: n })
}

/// The data of a run: the training images (augmented), the validation images held out of the
/// training split, and the test images, all restricted to the chosen classes.
pub struct RunData {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Dataset,
    pub classes: Vec<usize>,
    pub class_names: Vec<String>,
    /// Classes of the whole dataset (the width of a classifier head for it).
    pub num_dataset_classes: usize,
    /// Normalisation computed on the whole training split (all classes).
    pub stats: Normalize,
}

impl RunData {
    pub fn load(data: Option<&Path>, subset: &[String], train_fraction: f64) -> Result<Self> {
        let src = data::Source::detect(&data::locate(data)?)?;
        let train_all = src.load(Split::Train)?;
        let test_all = src.load(Split::Test)?;
        let (mean, std) = train_all.channel_stats();
        let classes = if subset.is_empty() {
            (0..train_all.classes.len()).collect()
        } else {
            data::resolve_subset(&train_all, subset)?
        };
        let train = train_all.filter_classes(&classes);
        let test = test_all.filter_classes(&classes);
        let (train, val) = if train_fraction < 1.0 {
            let (t, v) = data::train_val_split(&train, train_fraction);
            (t, Some(v))
        } else {
            (train, None)
        };
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data(format!("the subset {subset:?} leaves no training or test images")));
        }
        Ok(RunData {
            class_names: classes.iter().map(|&c| train_all.classes[c].clone()).collect(),
            num_dataset_classes: train_all.classes.len(),
            train,
            val,
            test,
            classes,
            stats: Normalize { mean, std },
        })
    }
}

/// Normalisation of a model: its own if it records one, else the data's (recorded into it).
pub fn model_normalize(model: &mut Model, data_stats: &Normalize) -> Normalize {
    match &model.graph.normalize {
        Some(n) if n.mean.len() == 3 => {
            Normalize { mean: [n.mean[0], n.mean[1], n.mean[2]], std: [n.std[0], n.std[1], n.std[2]] }
        }
        _ => {
            model.graph.normalize =
                Some(ir::Normalize { mean: data_stats.mean.to_vec(), std: data_stats.std.to_vec() });
            *data_stats
        }
    }
}

/// Loads a model: a zoo name builds a freshly initialised network, anything else is a path.
pub fn load_or_build(spec: &str, num_classes: usize, seed: u64) -> Result<Model> {
    if (crate::zoo::NETWORKS.contains(&spec) || crate::zoo::structures::STRUCTURES.contains(&spec))
        && !Path::new(spec).exists()
    {
        Model::init(crate::zoo::build(spec, num_classes)?, seed)
    } else {
        formats::load_model(Path::new(spec))
    }
}

/// One row of the per-epoch log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Where a run stands, saved after every epoch so that `--resume` continues it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub best_epoch: Option<usize>,
    pub best_val_top1: Option<f64>,
    pub best_test_top1: Option<f64>,
    pub seconds: f64,
}

/// What a finished run reports (written as summary.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    pub best_val_top1: Option<f64>,
    /// Test accuracy at the epoch of best validation accuracy (the protocol's figure).
    pub test_top1_at_best_val: Option<f64>,
    pub final_test: EvalStats,
    pub seconds: f64,
    pub classes: Vec<String>,
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    native::write_atomic(path, serde_json::to_string_pretty(v).expect("serialisable").as_bytes())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, e.to_string()))
}

/// Trains as `cfg` says, writing everything into `out`. With `resume`, continues the run that
/// `out` holds from its last finished epoch.
pub fn train(cfg: &TrainConfig, out: &Path, resume: bool) -> Result<Summary> {
    cfg.validate()?;
    let data = RunData::load(cfg.data.as_deref(), &cfg.subset, cfg.train_fraction)?;
    let model = if resume {
        None
    } else {
        Some(load_or_build(&cfg.model, cfg.num_classes.unwrap_or(data.num_dataset_classes), cfg.seed)?)
    };
    fit(model, &data, cfg, out, 0)
}

/// Trains `model` on `data` for epochs `start_epoch + 1 ..= cfg.epochs` (the learning rate of
/// epoch e is `cfg.lr_schedule.lr_at(e - 1)`), with a fresh optimizer, writing the run folder
/// `out`. With `model` None, resumes the run in `out` from its last finished epoch, with its
/// optimizer state. `cfg.model`, `cfg.data` and `cfg.subset` are not read: the caller chose them.
pub fn fit(model: Option<Model>, data: &RunData, cfg: &TrainConfig, out: &Path, start_epoch: usize) -> Result<Summary> {
    cfg.validate()?;
    let device: Device = cfg.device.parse()?;
    crate::engine::set_threads(cfg.threads);
    crate::engine::manual_seed(cfg.seed);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let last_dir = out.join("last");
    let state_path = out.join("state.json");
    let log_path = out.join("log.csv");

    native::write_atomic(&out.join("config.toml"), cfg.to_toml().as_bytes())?;
    let resume = model.is_none();
    let (mut model, mut state) = match model {
        None => {
            let state: RunState = read_json(&state_path)?;
            (formats::load_model(&last_dir)?, state)
        }
        Some(model) => {
            let _ = std::fs::remove_file(&log_path);
            let state = RunState {
                epochs_done: start_epoch,
                best_epoch: None,
                best_val_top1: None,
                best_test_top1: None,
                seconds: 0.0,
            };
            (model, state)
        }
    };
    let norm = model_normalize(&mut model, &data.stats);
    let mut net = Network::new(&model, device)?;
    net.set_optimizer(SgdConfig { momentum: cfg.momentum, weight_decay: cfg.weight_decay, nesterov: cfg.nesterov });
    if resume && last_dir.join("optimizer.safetensors").exists() {
        let p = last_dir.join("optimizer.safetensors");
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        net.load_optimizer_state(&native::weights_from_safetensors(&bytes, &p)?)?;
    }
    let n_out = net.num_outputs()?;
    if let Some(&c) = data.classes.iter().max()
        && c >= n_out
    {
        return Err(Error::Data(format!("class index {c} does not fit the model's {n_out} outputs")));
    }

    let train = Arc::new(data.train.clone());
    eprintln!(
        "training {} on {} ({} train / {} val / {} test images, {} classes) for {} epochs on {device}, {} threads",
        model.graph.name,
        data.class_names.join(","),
        data.train.len(),
        data.val.as_ref().map_or(0, |v| v.len()),
        data.test.len(),
        data.classes.len(),
        cfg.epochs,
        crate::engine::threads()
    );
    let mut log = csv_log(&log_path, resume)?;
    for epoch in state.epochs_done..cfg.epochs {
        let lr = cfg.lr_schedule.lr_at(epoch);
        let aug = cfg.augment.then_some(Augment { crop_padding: 4, hflip: true });
        let loader = Loader::new(train.clone(), cfg.batch_size, true, aug, norm, cfg.seed, epoch as u64);
        let n_batches = cfg.max_batches.map_or(loader.len_batches(), |m| m.min(loader.len_batches()));
        let pb = progress(n_batches as u64, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for batch in loader.take(n_batches) {
            let s = net.train_step(&batch.images, &batch.labels, lr)?;
            loss_sum += s.loss * s.count as f64;
            correct += s.correct;
            seen += s.count;
            pb.inc(1);
            let ips = seen as f64 / t0.elapsed().as_secs_f64();
            let msg = format!(
                "loss {:.3} acc {:.1}% {ips:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            );
            // Without a terminal the bar is hidden: report every tenth of the epoch instead.
            let done = pb.position() as usize;
            if pb.is_hidden() && (done * 10 / n_batches) != ((done - 1) * 10 / n_batches) {
                eprintln!("epoch {}/{}: {done}/{n_batches} batches, {msg}", epoch + 1, cfg.epochs);
            }
            pb.set_message(msg);
        }
        device.synchronize();
        let train_secs = t0.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let val = data.val.as_ref().map(|v| evaluate(&net, v, &norm, 256)).transpose()?;
        let test = evaluate(&net, &data.test, &norm, 256)?;
        let row = EpochLog {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            val_loss: val.map(|v| v.loss),
            val_top1: val.map(|v| v.top1),
            test_loss: test.loss,
            test_top1: test.top1,
            test_top5: test.top5,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_second: seen as f64 / train_secs,
        };
        eprintln!(
            "epoch {:>3} lr {:<8} train loss {:.4} acc {:.2}% | val {} | test acc {:.2}% top5 {:.2}% | {:.0}s, {:.0} img/s",
            row.epoch,
            lr,
            row.train_loss,
            100.0 * row.train_top1,
            row.val_top1.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v)),
            100.0 * test.top1,
            100.0 * test.top5,
            row.seconds,
            row.images_per_second
        );
        log.serialize(&row).map_err(|e| Error::file(&log_path, e.to_string()))?;
        log.flush().map_err(|e| Error::io(&log_path, e))?;

        // Best checkpoint: by validation accuracy from `best_from_epoch` on (by test accuracy
        // only when no validation split is held out).
        let score = val.map_or(test.top1, |v| v.top1);
        let improved = epoch + 1 > cfg.best_from_epoch && state.best_val_top1.is_none_or(|b| score > b);
        let current = net.model()?;
        if improved {
            native::save(&current, &out.join("best"))?;
            state.best_epoch = Some(epoch + 1);
            state.best_val_top1 = Some(score);
            state.best_test_top1 = Some(test.top1);
        }
        native::save(&current, &last_dir)?;
        native::write_atomic(
            &last_dir.join("optimizer.safetensors"),
            &native::weights_to_safetensors(&net.optimizer_state()?),
        )?;
        state.epochs_done = epoch + 1;
        state.seconds += t0.elapsed().as_secs_f64();
        write_json(&state_path, &state)?;
    }
    let final_test = evaluate(&net, &data.test, &norm, 256)?;
    let summary = Summary {
        epochs: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_top1: state.best_val_top1,
        test_top1_at_best_val: state.best_test_top1,
        final_test,
        seconds: state.seconds,
        classes: data.class_names.clone(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    Ok(summary)
}

fn csv_log(path: &Path, append: bool) -> Result<csv::Writer<std::fs::File>> {
    let exists = append && path.exists();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(exists)
        .write(true)
        .truncate(!exists)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    Ok(csv::WriterBuilder::new().has_headers(!exists).from_writer(f))
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(len: u64, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// The run folder's paths, for callers that read a finished run.
pub fn best_model_dir(out: &Path) -> PathBuf {
    out.join("best")
}
