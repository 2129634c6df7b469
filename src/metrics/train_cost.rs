//! Training-cost tables measured on this device (see `analysis::train_cost` for the model they
//! feed): each unit's training step timed alone over its channel grid (the latency tables'
//! machinery, `metrics::latency::measure_units`), and training steps, evaluation passes and peak
//! memory of whole networks (unpruned, uniformly pruned, at multiples of 8, pruned unevenly along
//! the depth, each group at a random share), each training step measured in a process of its own
//! so that its peak resident size is that network's. Kept in a file per network, batch and thread
//! count, and rebuilt when any of those, the engine's library or the processor changes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::analysis::latency::TableKey;
use crate::analysis::train_cost::{FORMAT, Features, Linear, TrainCalibration, TrainCostTable};
use crate::engine::{Device, Precision, Runtime};
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::metrics::latency as lat;

/// Steps timed per calibration network (after `WARMUP_STEPS` untimed ones); the median is kept.
pub const STEPS: usize = 8;
pub const WARMUP_STEPS: usize = 3;
/// Each network's step is measured in this many processes, in rounds over all the networks
/// measured together (so that each network's measurements are minutes apart), and the fastest
/// round's median is kept: other work on shared cores only ever adds time, and on a shared
/// 2-core machine one network's median moved by up to 40% between two processes minutes apart
/// (results/train-cost-model/README.md). The table predicts the step on an otherwise idle device.
pub const ROUNDS: usize = 3;
/// Networks pruned unevenly along the depth, for calibration beside the uniform ones: each
/// prunable group, in graph order, keeps a share going linearly from the first to the second
/// figure. Ranked pruning is uneven (a global ranking by magnitude takes more channels from
/// some layers than others): SqueezeNet's CIFAR-10 baseline pruned 50% by global L1 ranking keeps
/// 10 of conv1's 96 channels and 6-14 of the first fire modules', and 158-199 of 192-256 in the
/// late expand layers. Fitted on uniform networks alone, the model missed SqueezeNet pruned by
/// global L1 ranking by 27-46% at 30-90%; with the first four of these by 18-52%, and with 8
/// networks at random shares too by 16-46% (results/train-cost-model/README.md).
const CALIBRATION_SKEWED: [(f64, f64); 6] = [(0.9, 0.3), (0.3, 0.9), (0.7, 0.15), (0.15, 0.7), (0.1, 1.0), (1.0, 0.1)];

/// Networks whose every prunable group keeps a share of its channels drawn at random from
/// 0.1..1 (seeded `RANDOM_SEED + k`): pruned networks as the device will meet them, with counts
/// off every multiple. The benchmark's networks are pruned otherwise (ranked globally, or at a
/// random per-layer level by a random criterion), so none of them is fitted on.
const CALIBRATION_RANDOM: usize = 8;
const RANDOM_SEED: u64 = 1000;

/// `model` with each prunable group keeping `share(i)` of its channels (i: the group's place
/// among the prunable groups, in graph order; `n`: their number less one), at least one channel
/// (a multiple of its blocks).
fn with_shares(
    model: &Model,
    groups: &[crate::analysis::Group],
    mut share: impl FnMut(usize, usize) -> f64,
) -> Result<Model> {
    use crate::surgery::planner::{self, Limits, Scope, Target};
    let prunable: Vec<&crate::analysis::Group> = groups.iter().filter(|g| g.prunable() && g.size > 1).collect();
    let n = prunable.len().max(2) - 1;
    let counts = prunable
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let multiple = g.blocks.max(1);
            let keep =
                ((g.size as f64 * share(i, n) / multiple as f64).round() as usize * multiple).clamp(multiple, g.size);
            (g.name.clone(), keep)
        })
        .collect();
    let scores: Vec<Vec<f64>> = groups.iter().map(|g| (0..g.size).map(|k| k as f64).collect()).collect();
    let plan =
        planner::make_plan(&model.graph, groups, &scores, &Target::Channels(counts), Scope::Layer, &Limits::default())?;
    crate::surgery::apply(model, &plan)
}

/// `model` with each prunable group keeping a share of its channels that goes linearly from
/// `first` (the first group) to `last` (the last).
fn skewed(model: &Model, groups: &[crate::analysis::Group], first: f64, last: f64) -> Result<Model> {
    with_shares(model, groups, |i, n| first + (last - first) * i as f64 / n as f64)
}

/// `model` with each prunable group keeping a random share of its channels (see
/// [`CALIBRATION_RANDOM`]).
fn random_shares(model: &Model, groups: &[crate::analysis::Group], seed: u64) -> Result<Model> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    with_shares(model, groups, |_, _| rng.random_range(0.1..1.0))
}
/// Evaluation passes timed per calibration network.
const EVAL_STEPS: usize = 3;

/// Where a table is kept by default: the cache, one file per network, precision, batch and
/// threads (`<network>-<hash>-train-[bf16-]b<batch>-t<threads>.json`); `precision` resolved.
pub fn default_path(model: &Model, batch: usize, precision: Precision) -> Result<PathBuf> {
    let latency = lat::default_path(model, Runtime::Libtorch, batch)?;
    let marker = match precision {
        Precision::Bf16 => "-train-bf16-",
        _ => "-train-",
    };
    let name = latency.file_name().map(|n| n.to_string_lossy().replace("-libtorch-", marker)).unwrap_or_default();
    let root = crate::formats::cache_root().ok_or_else(|| {
        Error::config("train cost table", "no HOME to keep it in; set EDGEPRUNE_CACHE or give a file")
    })?;
    Ok(root.join("train-cost").join(name))
}

/// The key a training-cost table of `model` at `batch` and `precision` has on this machine now
/// (fp32 tables keep the key they had before precisions existed).
pub fn current_key(model: &Model, batch: usize, device: Device, precision: Precision) -> Result<TableKey> {
    let k = lat::current_key(model, Runtime::Libtorch, batch, device)?;
    let runtime = match precision.resolve(device) {
        Precision::Bf16 => format!("{} training, SGD with momentum, bf16 mixed precision", k.runtime),
        _ => format!("{} training, SGD with momentum", k.runtime),
    };
    Ok(TableKey { format: FORMAT, runtime, ..k })
}

/// Runs `exe bench train-step` on `model` (saved in a scratch folder) in a process of its own:
/// the median step in ms and that process's peak resident bytes.
fn step_in_child(
    exe: &Path,
    model: &Model,
    batch: usize,
    steps: usize,
    device: Device,
    precision: Precision,
) -> Result<(f64, f64)> {
    // A scratch folder of this process's own, removed when done.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Scratch(std::env::temp_dir().join(format!("edgeprune-train-cost-{}-{n}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let path = dir.0.join("model");
    crate::formats::native::save(model, &path)?;
    let out = std::process::Command::new(exe)
        .args(["bench", "train-step", "--json", "--model"])
        .arg(&path)
        .args(["--batch", &batch.to_string(), "--steps", &steps.to_string(), "--warmup"])
        .arg(WARMUP_STEPS.to_string())
        .args(["--threads", &crate::engine::threads().to_string(), "--device", &device.to_string()])
        .args(["--precision", &precision.to_string()])
        .output()
        .map_err(|e| Error::io(exe, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::file(
            exe,
            format!("`bench train-step` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Error::file(exe, format!("`bench train-step --json` printed {line:?}: {e}")))?;
    let ms = v["step_seconds"]["median"].as_f64().map(|s| 1e3 * s);
    let peak = v["peak_rss_bytes"].as_f64();
    match (ms, peak) {
        (Some(ms), Some(peak)) if ms.is_finite() && peak > 0.0 => Ok((ms, peak)),
        _ => Err(Error::file(exe, format!("`bench train-step --json` gave no step time and peak: {line}"))),
    }
}

/// Measures each `(model, batch)`'s training step and peak in processes of its own, `rounds`
/// times over all of them (see [`ROUNDS`]): the fastest median step in ms of each, and the median
/// of its peaks. `progress()` after each measurement.
pub fn measure_rounds(
    exe: &Path,
    nets: &[(&Model, usize)],
    device: Device,
    precision: Precision,
    rounds: usize,
    mut progress: impl FnMut(),
) -> Result<Vec<(f64, f64)>> {
    let precision = precision.resolve(device);
    let mut seen: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); nets.len()];
    for _ in 0..rounds.max(1) {
        for (i, (m, b)) in nets.iter().enumerate() {
            let (ms, peak) = step_in_child(exe, m, *b, STEPS, device, precision)?;
            seen[i].0.push(ms);
            seen[i].1.push(peak);
            progress();
        }
    }
    Ok(seen
        .into_iter()
        .map(|(ms, mut peaks)| {
            peaks.sort_by(f64::total_cmp);
            (ms.into_iter().fold(f64::INFINITY, f64::min), peaks[peaks.len() / 2])
        })
        .collect())
}

/// Measures the table of `model` (unpruned) at `batch` and `precision` (training steps; the
/// evaluation passes are fp32, as evaluation is). `exe` is an edgeprune binary, run once per
/// calibration network so that each peak is that network's alone.
pub fn build(
    model: &Model,
    batch: usize,
    device: Device,
    precision: Precision,
    exe: &Path,
    key: TableKey,
) -> Result<TrainCostTable> {
    let t0 = Instant::now();
    let precision = precision.resolve(device);
    let units = lat::measure_units(model, lat::UnitTiming::Train(precision), batch, device)?;
    let latency = crate::analysis::latency::LatencyTable::new(key.clone(), &model.graph.name, units);
    let groups = crate::analysis::groups(&model.graph)?;
    let eval_batch = crate::train::EVAL_BATCH_SIZE;
    // The latency table's networks, and two for memory alone at half the batch.
    let mut nets: Vec<(String, Model, usize, bool)> = Vec::new();
    for &l in &lat::CALIBRATION_LEVELS {
        let m = if l == 0.0 { model.clone() } else { lat::uniform(model, &groups, l)? };
        let what = if l == 0.0 { "unpruned".to_string() } else { format!("uniform {l}% of parameters") };
        nets.push((what, m, batch, true));
    }
    for &s in &lat::CALIBRATION_ALIGNED {
        nets.push((
            format!("{:.0}% of each group's channels, multiples of 8", 100.0 * s),
            lat::aligned(model, &groups, s)?,
            batch,
            true,
        ));
    }
    for &(first, last) in &CALIBRATION_SKEWED {
        let what = format!("each group keeps {:.0}% (first) to {:.0}% (last)", 100.0 * first, 100.0 * last);
        nets.push((what, skewed(model, &groups, first, last)?, batch, true));
    }
    for k in 0..CALIBRATION_RANDOM as u64 {
        let seed = RANDOM_SEED + k;
        nets.push((format!("random share per group (seed {seed})"), random_shares(model, &groups, seed)?, batch, true));
    }
    let half = (batch / 2).max(1);
    if half != batch {
        for l in [0.0, 50.0] {
            let m = if l == 0.0 { model.clone() } else { lat::uniform(model, &groups, l)? };
            nets.push((format!("uniform {l}% at batch {half}, memory"), m, half, false));
        }
    }
    let n_timed = nets.iter().filter(|n| n.3).count();
    let bar = crate::train::progress(
        (ROUNDS * n_timed + nets.len()) as u64,
        &format!("train cost table {} (batch {batch}, {precision})", model.graph.name),
    );
    // The timed networks' steps in rounds over all of them; the memory-only ones once below.
    bar.set_message(format!("training steps, {ROUNDS} rounds"));
    let timed_nets: Vec<(&Model, usize)> = nets.iter().filter(|n| n.3).map(|n| (&n.1, n.2)).collect();
    let mut steps = measure_rounds(exe, &timed_nets, device, precision, ROUNDS, || bar.inc(1))?.into_iter();
    let mut calibration = Vec::new();
    for (what, m, b, timed) in nets {
        bar.set_message(what.clone());
        let features = Features::of(&latency, &m.graph)?;
        let (ms, peak) = match timed {
            true => steps.next().ok_or_else(|| Error::Engine("a calibration network was not measured".into()))?,
            false => step_in_child(exe, &m, b, 1, device, precision)?,
        };
        let eval = if timed {
            let r = crate::metrics::bench::infer(&m, eval_batch, EVAL_STEPS, 1, device, Runtime::Libtorch)?;
            Some(1e3 * r.step_seconds.median / eval_batch as f64)
        } else {
            None
        };
        calibration.push(TrainCalibration {
            what,
            features,
            step_ms: timed.then_some(ms),
            eval_ms_per_image: eval,
            memory_batch: b,
            peak_bytes: Some(peak),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let empty = |terms: &[&str]| Linear {
        terms: terms.iter().map(|t| t.to_string()).collect(),
        coef: vec![0.0; terms.len()],
        intercept: 0.0,
    };
    use crate::analysis::train_cost::{EVAL_TERMS, MEMORY_TERMS, STEP_TERMS};
    let mut table = TrainCostTable {
        key,
        network: model.graph.name.clone(),
        units: latency,
        eval_batch,
        step: empty(&STEP_TERMS),
        eval: empty(&EVAL_TERMS),
        memory: empty(&MEMORY_TERMS),
        calibration,
        build_seconds: 0.0,
    };
    table.fit()?;
    table.build_seconds = t0.elapsed().as_secs_f64();
    table.check()?;
    Ok(table)
}

/// The training-cost table of `model` at `batch`: read from `path` (default: the cache) when it
/// is current, else measured (running `exe`) and written there. A file that is not such a table
/// is refused, never replaced; a stale one is measured again, never used.
pub fn load_or_build(
    model: &Model,
    batch: usize,
    device: Device,
    precision: Precision,
    path: Option<&Path>,
    exe: &Path,
) -> Result<(TrainCostTable, lat::Source)> {
    let precision = precision.resolve(device);
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_path(model, batch, precision)?,
    };
    let key = current_key(model, batch, device, precision)?;
    let mut stale = None;
    if path.exists() {
        let text = crate::formats::read_text(&path)?;
        // A table of another format version is stale (rebuilt) even where its fields differ.
        let format = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["key"]["format"].as_u64());
        match format {
            Some(f) if f != FORMAT as u64 => stale = Some(format!("format was `{f}`, is `{FORMAT}`")),
            _ => {
                let old: TrainCostTable = serde_json::from_str(&text).map_err(|e| {
                    Error::file(
                        &path,
                        format!(
                            "is not an edgeprune training-cost table ({e}); it is left as it is: give another file"
                        ),
                    )
                })?;
                old.check().map_err(|e| e.in_file(&path))?;
                match lat::stale_field(&old.key, &key) {
                    None => return Ok((old, lat::Source::Reused(path))),
                    Some(why) => stale = Some(why),
                }
            }
        }
    }
    let table = build(model, batch, device, precision, exe, key)?;
    let source = lat::store(&path, &table, stale)?;
    Ok((table, source))
}

/// A training-cost table that can price `model` at `batch` on this machine now, and its file:
/// the one at `path` when given (refused, naming why, when it cannot), else in the cache the
/// table of this network or of any network it was pruned from (same network name, batch and
/// thread count, every node of `model` in its units at no more channels than it measured), current
/// in everything but the graph. None where the cache holds none.
pub fn find(
    model: &Model,
    batch: usize,
    device: Device,
    precision: Precision,
    path: Option<&Path>,
) -> Result<Option<(TrainCostTable, PathBuf)>> {
    let precision = precision.resolve(device);
    // The current key makes a network in the engine: only worth it where there is a table to check.
    let usable = |t: &TrainCostTable, key: &TableKey| -> std::result::Result<(), String> {
        let k = &t.key;
        let mut fields = key.clone();
        fields.graph = k.graph.clone();
        if let Some(why) = lat::stale_field(k, &fields) {
            return Err(format!("it is stale: {why}"));
        }
        let shapes = model.graph.infer_shapes().map_err(|e| e.to_string())?;
        let index = model.graph.index();
        for u in &t.units.units {
            if let Some(&n) = index.get(u.node.as_str())
                && shapes[n][0] > u.cout.full
            {
                return Err(format!(
                    "node `{}` has {} channels, more than the table's {}",
                    u.node, shapes[n][0], u.cout.full
                ));
            }
        }
        Features::of(&t.units, &model.graph).map(|_| ()).map_err(|e| format!("it is for another network ({e})"))
    };
    let read = |p: &Path| -> Result<TrainCostTable> {
        let t: TrainCostTable = serde_json::from_str(&crate::formats::read_text(p)?)
            .map_err(|e| Error::file(p, format!("is not an edgeprune training-cost table ({e})")))?;
        t.check().map_err(|e| e.in_file(p))?;
        Ok(t)
    };
    if let Some(p) = path {
        let t = read(p)?;
        usable(&t, &current_key(model, batch, device, precision)?)
            .map_err(|why| Error::file(p, format!("cannot price {}: {why}", model.graph.name)))?;
        return Ok(Some((t, p.to_path_buf())));
    }
    let own = default_path(model, batch, precision)?;
    let Some(dir) = own.parent() else { return Ok(None) };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let name = own.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // "<network>-<hash12>-train-b<batch>-t<threads>.json": the same network name and suffix.
    let (stem, suffix) = match (name.rfind("-train-"), name.len().checked_sub(12 + "-train-".len())) {
        (Some(i), Some(_)) if i >= 13 => (name[..i - 13].to_string(), name[i..].to_string()),
        _ => return Ok(None),
    };
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let f = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            f.starts_with(&format!("{stem}-")) && f.ends_with(&suffix) && f.len() == stem.len() + 13 + suffix.len()
        })
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let key = current_key(model, batch, device, precision)?;
    // This network's own table first.
    candidates.sort_by_key(|p| *p != own);
    for p in candidates {
        if let Ok(t) = read(&p)
            && usable(&t, &key).is_ok()
        {
            return Ok(Some((t, p)));
        }
    }
    Ok(None)
}
