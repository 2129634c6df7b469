//! Latency tables measured on this device (see `analysis::latency` for the model they feed):
//! each unit of a network timed alone in the runtime over a grid of its channel counts, the rest
//! fitted on whole-network measurements, kept in a file per network, runtime, batch size and
//! thread count, and rebuilt when any of those, the runtime's library or the processor changes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::analysis::latency::{
    self, Axis, Calibration, ConvLayouts, FORMAT, LatencyTable, Layout, TableKey, Unit, UnitTable,
};
use crate::engine::{self, Device, Infer, Runtime};
use crate::error::{Error, Result};
use crate::ir::{Graph, Model, Node, Op, Shape};
use crate::surgery::planner::{self, Limits, Scope, Target};

/// How long one measurement of a unit runs: at least `MIN_REPS` runs and `MIN_SECONDS`, at most
/// `MAX_REPS` runs, after `WARMUP` untimed ones; the median is kept.
const WARMUP: usize = 3;
const MIN_REPS: usize = 20;
const MAX_REPS: usize = 2000;
const MIN_SECONDS: f64 = 0.01;
/// A whole network is timed for longer: it is what tables are checked against.
const WHOLE_SECONDS: f64 = 0.3;
/// Levels (percent of parameters, removed alike from every group) of the whole networks the
/// table's network-level terms are fitted on.
pub const CALIBRATION_LEVELS: [f64; 10] = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0];
/// Input counts a convolution's layout is probed at (past them its period carries the pattern).
const LAYOUT_PROBES: usize = 48;
/// Shares of channels kept, rounded to multiples of 8, of more whole networks fitted on.
pub const CALIBRATION_ALIGNED: [f64; 3] = [0.75, 0.5, 0.25];

/// How `runtime` lays out unit `u` by input count, read off ONNX Runtime's optimised graph of
/// one-unit networks (which convolutions run blocked, which inputs it reorders); none for
/// libtorch, linear layers and grouped convolutions. `seen` caches it by the conv's shape.
fn probe_layout(
    graph: &Graph,
    shapes: &[Shape],
    u: &Unit,
    runtime: Runtime,
    seen: &mut std::collections::HashMap<String, ConvLayouts>,
) -> Result<Option<ConvLayouts>> {
    let node = &graph.nodes[u.node];
    if runtime != Runtime::OnnxRuntime || !matches!(node.op, Op::Conv2d { .. }) || u.groups > 1 {
        return Ok(None);
    }
    let cout = shapes[u.node][0];
    let key =
        format!("{:?} {:?} {}", node.op.resized(Some(1), 1), &shapes[u.input][1..], if u.depthwise { 0 } else { cout });
    if let Some(l) = seen.get(&key) {
        return Ok(Some(l.clone()));
    }
    let probes = (1..=LAYOUT_PROBES)
        .map(|c| {
            let m = unit_model(graph, shapes, u, c, if u.depthwise { c } else { cout })?;
            let ops = engine::onnxruntime::optimized_ops(&m)?;
            let has = |op: &str| ops.iter().any(|(d, o)| d == "com.microsoft.nchwc" && o == op);
            Ok(if !has("Conv") {
                Layout::Plain
            } else if has("ReorderInput") {
                Layout::Blocked
            } else {
                Layout::Direct
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let l = ConvLayouts::from_probes(&probes);
    seen.insert(key, l.clone());
    Ok(Some(l))
}

/// Median ms of `net` on a fixed random batch, timed for at least `min_seconds`.
pub fn time_ms(net: &dyn Infer, shape: &[usize], batch: usize, device: Device, min_seconds: f64) -> Result<f64> {
    let per: usize = shape.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let x: Vec<f32> = (0..batch * per).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    for _ in 0..WARMUP {
        net.predict(&x, batch)?;
    }
    device.synchronize();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < MAX_REPS && (times.len() < MIN_REPS || start.elapsed().as_secs_f64() < min_seconds) {
        let t = Instant::now();
        std::hint::black_box(net.predict(&x, batch)?);
        device.synchronize();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median ms of a whole model at `batch` in `runtime`.
pub fn model_ms(model: &Model, runtime: Runtime, batch: usize, device: Device) -> Result<f64> {
    let net = engine::infer_with(model, device, runtime)?;
    time_ms(net.as_ref(), model.graph.input_shape()?, batch, device, WHOLE_SECONDS)
}

/// Median ms of two models measured in turn (`rounds` times each, alternating, so that load on
/// the machine falls on both alike): the median of each one's rounds.
pub fn compare_ms(
    a: &Model,
    b: &Model,
    runtime: Runtime,
    batch: usize,
    device: Device,
    rounds: usize,
) -> Result<(f64, f64)> {
    let (na, nb) = (engine::infer_with(a, device, runtime)?, engine::infer_with(b, device, runtime)?);
    let (sa, sb) = (a.graph.input_shape()?.to_vec(), b.graph.input_shape()?.to_vec());
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        ta.push(time_ms(na.as_ref(), &sa, batch, device, WHOLE_SECONDS)?);
        tb.push(time_ms(nb.as_ref(), &sb, batch, device, WHOLE_SECONDS)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(ta), median(tb)))
}

/// The unit alone as a network: its input at `cin` channels (a flat input as [cin, 1, 1] and a
/// flatten), the layer at `cin -> cout`, the BN and activation it absorbs, and a flatten (the
/// runtimes give out flat outputs).
pub fn unit_model(graph: &Graph, shapes: &[Shape], u: &Unit, cin: usize, cout: usize) -> Result<Model> {
    let node = &graph.nodes[u.node];
    let in_shape = &shapes[u.input];
    let mut nodes = Vec::new();
    let mut prev = "unit.input".to_string();
    let push = |nodes: &mut Vec<Node>, name: String, op: Op, input: &str| {
        nodes.push(Node {
            name: name.clone(),
            op,
            inputs: if input.is_empty() { vec![] } else { vec![input.to_string()] },
        });
        name
    };
    if in_shape.len() == 1 {
        push(&mut nodes, prev.clone(), Op::Input { shape: vec![cin, 1, 1] }, "");
        prev = push(&mut nodes, "unit.flat".into(), Op::Flatten, &prev);
    } else {
        push(&mut nodes, prev.clone(), Op::Input { shape: vec![cin, in_shape[1], in_shape[2]] }, "");
    }
    prev = push(&mut nodes, node.name.clone(), node.op.resized(Some(cin), cout), &prev);
    for &a in &u.absorbed {
        prev = push(&mut nodes, graph.nodes[a].name.clone(), graph.nodes[a].op.resized(None, cout), &prev);
    }
    if shapes[u.node].len() > 1 {
        prev = push(&mut nodes, "unit.out".into(), Op::Flatten, &prev);
    }
    let g = Graph { name: format!("{}.unit", node.name), nodes, output: prev, normalize: None };
    Model::init(g, 0)
}

/// SHA-256 of a graph's nodes, hex: what a table was measured for.
pub fn graph_hash(graph: &Graph) -> Result<String> {
    let bytes = serde_json::to_vec(&graph.nodes).map_err(|e| Error::config("graph", e.to_string()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The processor: model name, architecture and logical CPUs.
pub fn device_name() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("CPU part"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown processor", |(_, v)| v.trim());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model} ({}, {cpus} logical CPUs)", std::env::consts::ARCH)
}

/// The runtime and the library file this process has loaded for it (path, size, modification
/// time), read from the process's memory map once a network has been made in it.
pub fn runtime_name(runtime: Runtime) -> String {
    let lib = match runtime {
        Runtime::OnnxRuntime => "libonnxruntime",
        Runtime::Libtorch => "libtorch_cpu",
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let path = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.contains(lib));
    let file = path.map_or("library not found in the memory map".to_string(), |p| {
        let meta = std::fs::metadata(p).ok();
        let mtime =
            meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        format!("{p}, {} bytes, modified {}", meta.map_or(0, |m| m.len()), mtime.map_or(0, |d| d.as_secs()))
    });
    format!("{runtime} ({file})")
}

/// The key a table for `model` in `runtime` at `batch` has on this machine now. Makes one
/// network in the runtime so that its library is loaded.
pub fn current_key(model: &Model, runtime: Runtime, batch: usize, device: Device) -> Result<TableKey> {
    drop(engine::infer_with(model, device, runtime)?);
    Ok(TableKey {
        format: FORMAT,
        graph: graph_hash(&model.graph)?,
        runtime: runtime_name(runtime),
        batch,
        threads: engine::threads(),
        device: format!("{} on {device}", device_name()),
    })
}

/// The counts an axis is measured at: its grid when pruning can change it, else its full count.
fn axis_counts(full: usize, varies: bool, multiple: usize, factor: usize, points: usize) -> (Vec<usize>, Vec<usize>) {
    if !varies || full / factor.max(1) <= 1 {
        return (vec![full], vec![]);
    }
    let (c, f) = latency::grid_of(full / factor, multiple, points);
    (c.into_iter().map(|x| x * factor).collect(), f.into_iter().map(|x| x * factor).collect())
}

/// What a unit is timed doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitTiming {
    /// Inference in a runtime (the latency tables).
    Infer(Runtime),
    /// A training step in the engine at a precision: forward in training mode, backward to the
    /// weights and to the input (as every unit but the first has it in a network), SGD update
    /// (the training-cost tables). Fine scans are coarser (at most 16 points): each point is a step.
    Train(engine::Precision),
}

/// Training steps timed per point of a training unit table (after `TRAIN_WARMUP`); the median.
const TRAIN_REPS: usize = 5;
const TRAIN_WARMUP: usize = 2;

/// Median ms of training steps of `m` at `batch` and `precision` (see [`UnitTiming::Train`]).
fn train_unit_ms(m: &Model, batch: usize, device: Device, precision: engine::Precision) -> Result<f64> {
    let per: usize = m.graph.input_shape()?.iter().product();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let x: Vec<f32> = (0..batch * per).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let mut net = engine::trainer(m, device)?;
    net.set_precision(precision);
    net.set_optimizer(engine::SgdConfig { momentum: 0.9, weight_decay: 1e-4, nesterov: false });
    let mut times = Vec::new();
    for i in 0..TRAIN_WARMUP + TRAIN_REPS {
        let t = Instant::now();
        net.surrogate_step(&x, batch, 1e-6)?;
        device.synchronize();
        if i >= TRAIN_WARMUP {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Each unit of `model` (unpruned) timed alone over the grid of its channel counts, as `how`
/// says. `more` is the number of measurements the caller makes afterwards (for the progress bar).
pub fn measure_units(model: &Model, how: UnitTiming, batch: usize, device: Device) -> Result<Vec<UnitTable>> {
    let graph = &model.graph;
    let shapes = model.validate()?;
    let groups = crate::analysis::groups(graph)?;
    let varying = latency::varying(graph, &groups);
    let units = latency::units(graph)?;
    let points = match how {
        UnitTiming::Infer(_) => 32,
        UnitTiming::Train(_) => 16,
    };
    // What each unit is measured at, to size the progress bar before measuring.
    struct Todo {
        cin: (Vec<usize>, Vec<usize>),
        cout: (Vec<usize>, Vec<usize>),
    }
    let todo: Vec<Todo> = units
        .iter()
        .map(|u| {
            let (cin, cout) = (shapes[u.input][0], shapes[u.node][0]);
            // A linear layer after a flatten sees each channel as H x W inputs: its input count
            // moves in steps of that.
            let factor = match (&graph.nodes[u.input].op, graph.nodes[u.input].inputs.first()) {
                (Op::Flatten, Some(before)) => {
                    graph.index().get(before.as_str()).map_or(1, |&b| cin / shapes[b][0].max(1))
                }
                _ => 1,
            };
            if u.depthwise {
                // One count (input = output): read from its scan alone; its grid is the full count.
                let (_, scan) = axis_counts(cout, varying[u.node], 1, 1, points);
                return Todo { cin: (vec![cin], vec![]), cout: (vec![cout], scan) };
            }
            Todo {
                cin: axis_counts(cin, varying[u.input], u.groups, factor.max(1), points),
                cout: axis_counts(cout, varying[u.node], u.groups, 1, points),
            }
        })
        .collect();
    let total: usize = todo.iter().map(|t| t.cin.0.len() * t.cout.0.len() + t.cin.1.len() + t.cout.1.len()).sum();
    let what = match how {
        UnitTiming::Infer(r) => format!("latency table {} ({r}, batch {batch})", graph.name),
        UnitTiming::Train(p) => format!("training unit table {} (batch {batch}, {p})", graph.name),
    };
    let bar = crate::train::progress(total as u64, &what);
    let measure = |u: &Unit, cin: usize, cout: usize| -> Result<f64> {
        let m = unit_model(graph, &shapes, u, cin, cout)?;
        let ms = match how {
            UnitTiming::Infer(runtime) => {
                let net = engine::infer_with(&m, device, runtime)?;
                time_ms(net.as_ref(), m.graph.input_shape()?, batch, device, MIN_SECONDS)?
            }
            UnitTiming::Train(p) => train_unit_ms(&m, batch, device, p)?,
        };
        bar.inc(1);
        Ok(ms)
    };
    let mut tables = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (u, t) in units.iter().zip(&todo) {
        let node = &graph.nodes[u.node];
        bar.set_message(node.name.clone());
        let (cin_full, cout_full) = (shapes[u.input][0], shapes[u.node][0]);
        let mut coarse_ms = Vec::new();
        for &i in &t.cin.0 {
            for &o in &t.cout.0 {
                coarse_ms.push(measure(u, i, o)?);
            }
        }
        let fine_out = t
            .cout
            .1
            .iter()
            .map(|&o| Ok((o, measure(u, if u.depthwise { o } else { cin_full }, o)?)))
            .collect::<Result<_>>()?;
        let fine_in = t.cin.1.iter().map(|&i| Ok((i, measure(u, i, cout_full)?))).collect::<Result<_>>()?;
        let layout = match how {
            UnitTiming::Infer(runtime) => probe_layout(graph, &shapes, u, runtime, &mut seen)?,
            UnitTiming::Train(_) => None,
        };
        tables.push(UnitTable {
            node: node.name.clone(),
            op: node.op.type_name().to_string(),
            absorbed: u.absorbed.iter().map(|&a| graph.nodes[a].name.clone()).collect(),
            depthwise: u.depthwise,
            cin: Axis { full: cin_full, coarse: t.cin.0.clone(), fine: fine_in },
            cout: Axis { full: cout_full, coarse: t.cout.0.clone(), fine: fine_out },
            coarse_ms,
            layout,
        });
    }
    bar.finish_and_clear();
    Ok(tables)
}

/// Measures the table of `model` (unpruned) in `runtime` at `batch`.
pub fn build(model: &Model, runtime: Runtime, batch: usize, device: Device, key: TableKey) -> Result<LatencyTable> {
    let t0 = Instant::now();
    let graph = &model.graph;
    let groups = crate::analysis::groups(graph)?;
    let tables = measure_units(model, UnitTiming::Infer(runtime), batch, device)?;
    let bar = crate::train::progress(
        (CALIBRATION_LEVELS.len() + CALIBRATION_ALIGNED.len()) as u64,
        &format!("latency table {} ({runtime}, batch {batch}): whole networks", graph.name),
    );
    let mut table = LatencyTable::new(key, &graph.name, tables);
    // The whole-network terms, from the unpruned network and four uniformly pruned ones.
    let mut calibration = Vec::new();
    let nets = CALIBRATION_LEVELS.iter().map(|&l| (l, true)).chain(CALIBRATION_ALIGNED.iter().map(|&s| (s, false)));
    for (level, is_uniform) in nets {
        let what = match (is_uniform, level) {
            (true, 0.0) => "unpruned".to_string(),
            (true, l) => format!("uniform {l}% of parameters"),
            (false, s) => format!("{:.0}% of each group's channels, multiples of 8", 100.0 * s),
        };
        bar.set_message(format!("whole network, {what}"));
        let m = match (is_uniform, level) {
            (true, 0.0) => model.clone(),
            (true, l) => uniform(model, &groups, l)?,
            (false, s) => aligned(model, &groups, s)?,
        };
        let measured_ms = model_ms(&m, runtime, batch, device)?;
        let predictor = latency::Predictor::new(&table, &m.graph)?;
        let (units_ms, rest_elements, reorder_elements) = predictor.parts(&predictor.own_counts());
        calibration.push(Calibration { what, measured_ms, units_ms, rest_elements, reorder_elements });
        bar.inc(1);
    }
    bar.finish_and_clear();
    table.fit_rest(calibration);
    table.build_seconds = t0.elapsed().as_secs_f64();
    table.check()?;
    Ok(table)
}

/// `model` with `level` percent of its parameters removed by the same share from every group
/// (the first channels of each: latency does not depend on which).
pub fn uniform(model: &Model, groups: &[crate::analysis::Group], level: f64) -> Result<Model> {
    let scores: Vec<Vec<f64>> = groups.iter().map(|g| (0..g.size).map(|k| k as f64).collect()).collect();
    let plan =
        planner::make_plan(&model.graph, groups, &scores, &Target::Params(level), Scope::Layer, &Limits::default())?;
    crate::surgery::apply(model, &plan)
}

/// `model` with every prunable group kept at `share` of its channels rounded to a multiple of 8
/// (at least 8): the counts runtimes with blocked layouts run fastest, as the latency planner
/// picks them, for calibration beside the uniform levels' arbitrary counts.
pub fn aligned(model: &Model, groups: &[crate::analysis::Group], share: f64) -> Result<Model> {
    let scores: Vec<Vec<f64>> = groups.iter().map(|g| (0..g.size).map(|k| k as f64).collect()).collect();
    let counts = groups
        .iter()
        .filter(|g| g.prunable() && g.size > 8)
        .map(|g| (g.name.clone(), (((g.size as f64 * share) / 8.0).round() as usize * 8).clamp(8, g.size)))
        .collect();
    let plan =
        planner::make_plan(&model.graph, groups, &scores, &Target::Channels(counts), Scope::Layer, &Limits::default())?;
    crate::surgery::apply(model, &plan)
}

/// Where a table is kept by default: the cache, one file per network, runtime, batch, threads.
pub fn default_path(model: &Model, runtime: Runtime, batch: usize) -> Result<PathBuf> {
    let root = crate::formats::cache_root()
        .ok_or_else(|| Error::config("latency table", "no HOME to keep it in; set EDGEPRUNE_CACHE or give a file"))?;
    let hash = graph_hash(&model.graph)?;
    let safe: String = model
        .graph
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    Ok(root.join("latency").join(format!(
        "{safe}-{}-{}-b{batch}-t{}.json",
        &hash[..12],
        match runtime {
            Runtime::OnnxRuntime => "ort",
            Runtime::Libtorch => "libtorch",
        },
        engine::threads()
    )))
}

/// Whether a table was read or measured, and why it was measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Reused(PathBuf),
    Built(PathBuf),
    /// Rebuilt: the stored one was stale; the field that changed.
    Rebuilt(PathBuf, String),
}

impl Source {
    /// "`what` PATH (reused)", "... (measured now)" or "... (measured again: why)".
    pub fn describe(&self, what: &str) -> String {
        match self {
            Source::Reused(p) => format!("{what} {} (reused)", p.display()),
            Source::Built(p) => format!("{what} {} (measured now)", p.display()),
            Source::Rebuilt(p, why) => format!("{what} {} (measured again: {why})", p.display()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("latency table"))
    }
}

/// The field in which two keys differ.
pub fn stale_field(old: &TableKey, new: &TableKey) -> Option<String> {
    let fields = [
        ("format", old.format.to_string(), new.format.to_string()),
        ("network", old.graph.clone(), new.graph.clone()),
        ("runtime", old.runtime.clone(), new.runtime.clone()),
        ("batch", old.batch.to_string(), new.batch.to_string()),
        ("threads", old.threads.to_string(), new.threads.to_string()),
        ("device", old.device.clone(), new.device.clone()),
    ];
    fields.into_iter().find(|(_, a, b)| a != b).map(|(k, a, b)| format!("{k} was `{a}`, is `{b}`"))
}

/// The table of `model` in `runtime` at `batch`: read from `path` (default: the cache) when it
/// is current, else measured and written there. A file that is not a latency table is refused,
/// never replaced; a stale one is measured again, never used.
pub fn load_or_build(
    model: &Model,
    runtime: Runtime,
    batch: usize,
    device: Device,
    path: Option<&Path>,
) -> Result<(LatencyTable, Source)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_path(model, runtime, batch)?,
    };
    let key = current_key(model, runtime, batch, device)?;
    let mut stale = None;
    if path.exists() {
        let text = crate::formats::read_text(&path)?;
        let old: LatencyTable = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                &path,
                format!("is not an edgeprune latency table ({e}); it is left as it is: give another file"),
            )
        })?;
        old.check().map_err(|e| e.in_file(&path))?;
        match stale_field(&old.key, &key) {
            None => return Ok((old, Source::Reused(path))),
            Some(why) => stale = Some(why),
        }
    }
    let table = build(model, runtime, batch, device, key)?;
    let source = store(&path, &table, stale)?;
    Ok((table, source))
}

/// Writes a table just measured to `path` (its folder made if missing): `Built`, or `Rebuilt`
/// with why the one there was stale (latency and training-cost tables alike).
pub fn store<T: serde::Serialize + serde::de::DeserializeOwned>(
    path: &Path,
    table: &T,
    stale: Option<String>,
) -> Result<Source> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    crate::formats::native::write_json(path, table)?;
    let path = path.to_path_buf();
    Ok(match stale {
        Some(why) => Source::Rebuilt(path, why),
        None => Source::Built(path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    #[test]
    fn unit_models_are_the_layer_at_the_asked_counts() {
        let g = zoo::build("resnet20", 10).unwrap();
        let shapes = g.infer_shapes().unwrap();
        for u in latency::units(&g).unwrap() {
            let (cin, cout) = (shapes[u.input][0], shapes[u.node][0]);
            let (ci, co) = ((cin / 2).max(1), (cout / 2).max(1));
            let m = unit_model(&g, &shapes, &u, ci, co).unwrap();
            let s = m.validate().unwrap();
            assert_eq!(m.graph.input_shape().unwrap()[0], ci);
            let layer = m.graph.nodes.iter().position(|n| n.name == g.nodes[u.node].name).unwrap();
            assert_eq!(s[layer][0], co, "{}", g.nodes[u.node].name);
            assert_eq!(s.last().unwrap().len(), 1, "flat output");
            assert_eq!(
                m.graph.nodes.len(),
                2 + u.absorbed.len() + usize::from(shapes[u.node].len() > 1) + usize::from(shapes[u.input].len() == 1)
            );
        }
    }

    #[test]
    fn keys_name_the_field_that_changed() {
        let k = TableKey {
            format: FORMAT,
            graph: "a".into(),
            runtime: "r".into(),
            batch: 1,
            threads: 2,
            device: "d".into(),
        };
        assert_eq!(stale_field(&k, &k), None);
        let other = TableKey { batch: 64, ..k.clone() };
        assert_eq!(stale_field(&k, &other).unwrap(), "batch was `1`, is `64`");
        let other = TableKey { device: "e".into(), ..k.clone() };
        assert!(stale_field(&k, &other).unwrap().starts_with("device"));
    }
}
