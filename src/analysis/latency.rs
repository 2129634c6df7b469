//! A latency model of one network in one runtime at one batch size, from tables measured on the
//! device (`metrics::latency` measures them; this module only reads them).
//!
//! The network is split into *units*: every convolution and linear layer, with the BatchNorm and
//! the activation that directly follow it (runtimes fold and fuse those into the layer). A unit's
//! latency is a function of its input and output channel counts, measured alone in the runtime:
//! - a coarse grid over both counts (a quarter, half, three quarters and all of each, and the
//!   smallest), interpolated bilinearly;
//! - a fine scan along each count with the other at full width, which shows the runtime's
//!   staircase (vector widths, blocked layouts, kernels chosen by shape); the coarse value is
//!   scaled by the fine scan's ratio to the coarse grid along that axis.
//!
//! A depthwise convolution has one count (input = output) and only the fine scan. Everything that
//! is not a unit (adds, pools, concatenations, activations after a join) is the *rest*: modelled
//! as `alpha * elements + beta`, where elements is the sum of those nodes' output sizes, with
//! alpha and beta fitted on whole-network measurements (the unpruned network and uniformly
//! pruned ones) so that they also absorb what measuring units alone gets wrong (a session's fixed
//! cost counted once per unit, the copies in and out).
//!
//! Where the runtime runs convolutions in more than one layout (ONNX Runtime's CPU provider:
//! blocked NCHWc or plain NCHW, by input channel count), each conv's layout by input count is in
//! its table, and the network's reorders are a term of their own: the elements reordered where a
//! producer's layout is not its consumer's, less what each unit alone paid (timed alone, a blocked
//! unit reorders its input and output; a chain of them in the network only at its ends), fitted
//! as ms per element in place of alpha (see [`LatencyTable::fit_rest`]).
//!
//! Prediction is a function of the channel counts of a network with the table's node names: the
//! unpruned network, any pruned one, or the planner's running counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::groups::Group;
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, Shape};

/// Version of the table file layout, or of what its figures measure; a table of another version is
/// stale. (Raised when the engine's costs changed: jemalloc as the allocator, dense small-map
/// convolutions, dense gradients into concatenations.)
pub const FORMAT: u32 = 3;

/// What a table was measured for. A table whose key differs from the current one in any field is
/// stale and is rebuilt, never used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableKey {
    pub format: u32,
    /// SHA-256 of the unpruned network's nodes (ops, attributes, wiring), hex.
    pub graph: String,
    /// The runtime and its library file (path, size, modification time).
    pub runtime: String,
    pub batch: usize,
    pub threads: usize,
    /// The processor (model name, architecture, logical CPUs).
    pub device: String,
}

/// One axis of a unit's table: the full count, the coarse grid's counts, and the fine scan
/// (count, ms) at the other axis's full count. An axis that pruning cannot change has only its
/// full count and no scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub full: usize,
    pub coarse: Vec<usize>,
    pub fine: Vec<(usize, f64)>,
}

impl Axis {
    pub fn varies(&self) -> bool {
        self.coarse.len() > 1 || self.fine.len() > 1
    }
}

/// The measured latency of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTable {
    /// The conv or linear node.
    pub node: String,
    /// Its op type ("conv2d", "linear").
    pub op: String,
    /// The BN and activation nodes measured with it.
    pub absorbed: Vec<String>,
    pub depthwise: bool,
    pub cin: Axis,
    pub cout: Axis,
    /// Milliseconds on the coarse grid, `cin.coarse.len() x cout.coarse.len()`, by cin then cout.
    pub coarse_ms: Vec<f64>,
    /// The layout the runtime runs this convolution in, by input count (probed; none where the
    /// runtime has a single layout, as libtorch here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<ConvLayouts>,
}

/// How a runtime lays out a convolution's tensors, read off the runtime on the device: ONNX
/// Runtime's CPU provider runs some convolutions in a blocked (NCHWc) layout and inserts
/// reorders where a producer's layout is not what its consumer reads. Which, depends on the input
/// channel count (the output count is padded to the block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayouts {
    /// For input counts 1, 2, ...: `p` plain, `d` blocked reading a plain input, `b` blocked
    /// reading a blocked input.
    pub by_cin: String,
    /// Past the probed counts the pattern repeats with this period (0: plain past them).
    pub period: usize,
}

/// A convolution's layout at one input count (see [`ConvLayouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    /// Blocked output, plain input.
    Direct,
    /// Blocked output and input.
    Blocked,
}

impl ConvLayouts {
    /// From the probed layout of input counts 1..=n: the pattern's period is the smallest power of
    /// two that repeats over the last 16 counts probed.
    pub fn from_probes(by_cin: &[Layout]) -> Self {
        let code = |l: &Layout| match l {
            Layout::Plain => 'p',
            Layout::Direct => 'd',
            Layout::Blocked => 'b',
        };
        let n = by_cin.len();
        let period = [1, 2, 4, 8, 16]
            .into_iter()
            .find(|&p| n >= 16 + p && (n - 16..n).all(|i| by_cin[i] == by_cin[i - p]))
            .unwrap_or(0);
        ConvLayouts { by_cin: by_cin.iter().map(code).collect(), period }
    }

    pub fn at(&self, cin: usize) -> Layout {
        let b = self.by_cin.as_bytes();
        let n = b.len();
        let i = match cin {
            0 => return Layout::Plain,
            c if c <= n => c - 1,
            _ if self.period == 0 || self.period > n => return Layout::Plain,
            c => n - self.period + (c - n - 1) % self.period,
        };
        match b[i] {
            b'd' => Layout::Direct,
            b'b' => Layout::Blocked,
            _ => Layout::Plain,
        }
    }
}

/// A whole-network measurement the rest model was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// "unpruned", "uniform 50%", ...
    pub what: String,
    pub measured_ms: f64,
    /// The sum of the units' table values for that network.
    pub units_ms: f64,
    pub rest_elements: f64,
    /// Elements the runtime reorders between layouts in that network, less those the units'
    /// measurements alone already paid for (see [`Predictor::parts`]).
    #[serde(default)]
    pub reorder_elements: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    pub key: TableKey,
    /// The network's name (for people reading the file).
    pub network: String,
    pub units: Vec<UnitTable>,
    /// What the units' table values are multiplied by in a whole network (a unit alone runs with
    /// its weights hot in cache and pays a session's fixed cost; fitted, see `fit_rest`).
    pub units_scale: f64,
    /// Rest model: ms per million output elements of the rest nodes, and a constant.
    pub rest_ms_per_melement: f64,
    pub rest_ms: f64,
    /// ms per million elements reordered between layouts (fitted; 0 where the runtime has one).
    #[serde(default)]
    pub reorder_ms_per_melement: f64,
    pub calibration: Vec<Calibration>,
    /// Seconds the measurements took.
    pub build_seconds: f64,
}

/// Piecewise-linear interpolation through `(x, y)` points sorted by x, extended linearly past
/// both ends from the end segments, never below zero.
fn interp(points: &[(usize, f64)], x: f64) -> f64 {
    match points {
        [] => 0.0,
        [(_, y)] => *y,
        _ => {
            let i = points.partition_point(|&(px, _)| (px as f64) < x).clamp(1, points.len() - 1);
            let ((x0, y0), (x1, y1)) = (points[i - 1], points[i]);
            let t = (x - x0 as f64) / (x1 as f64 - x0 as f64).max(1e-12);
            (y0 + t * (y1 - y0)).max(0.0)
        }
    }
}

/// A fine scan read as a staircase: the value at the first scanned count at or above `x` (a
/// runtime pays for a count as for the next one it was measured at: vector widths and blocked
/// layouts round up), linear past the last.
fn step_up(points: &[(usize, f64)], x: f64) -> f64 {
    let i = points.partition_point(|&(px, _)| (px as f64) < x - 1e-9);
    if i < points.len() { points[i].1 } else { interp(points, x) }
}

/// Segment index and weight of `x` on a sorted grid (extrapolating past the ends).
fn locate(grid: &[usize], x: f64) -> (usize, f64) {
    if grid.len() < 2 {
        return (0, 0.0);
    }
    let i = grid.partition_point(|&g| (g as f64) < x).clamp(1, grid.len() - 1);
    let (a, b) = (grid[i - 1] as f64, grid[i] as f64);
    (i - 1, (x - a) / (b - a).max(1e-12))
}

impl UnitTable {
    /// Bilinear interpolation on the coarse grid.
    fn coarse(&self, cin: f64, cout: f64) -> f64 {
        let (ni, no) = (self.cin.coarse.len(), self.cout.coarse.len());
        let at = |i: usize, o: usize| self.coarse_ms[i.min(ni - 1) * no + o.min(no - 1)];
        let (i, ti) = locate(&self.cin.coarse, cin);
        let (o, to) = locate(&self.cout.coarse, cout);
        let (i1, o1) = (if ni > 1 { i + 1 } else { i }, if no > 1 { o + 1 } else { o });
        let v = (1.0 - ti) * ((1.0 - to) * at(i, o) + to * at(i, o1)) + ti * ((1.0 - to) * at(i1, o) + to * at(i1, o1));
        v.max(0.0)
    }

    /// The unit's latency in ms at these channel counts.
    pub fn ms(&self, cin: usize, cout: usize) -> f64 {
        if self.depthwise {
            return step_up(&self.cout.fine, cout as f64);
        }
        let (ci, co) = (cin as f64, cout as f64);
        let mut v = self.coarse(ci, co);
        // The fine scans' staircase, as a ratio to the smooth coarse grid along each axis.
        let ratio = |fine: &[(usize, f64)], x: f64, coarse: f64| {
            let f = step_up(fine, x);
            if fine.len() > 1 && coarse > 1e-9 && f > 0.0 { f / coarse } else { 1.0 }
        };
        v *= ratio(&self.cout.fine, co, self.coarse(self.cin.full as f64, co));
        v *= ratio(&self.cin.fine, ci, self.coarse(ci, self.cout.full as f64));
        v
    }
}

/// A unit of a graph: the conv or linear node, the nodes folded into it, and its input node.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub node: usize,
    pub absorbed: Vec<usize>,
    pub input: usize,
    pub depthwise: bool,
    /// For a grouped (not depthwise) conv, its groups: both counts stay multiples of it.
    pub groups: usize,
}

/// The graph's units, in graph order: every Conv2d and Linear, with the BatchNorm and then the
/// activation (ReLU, ReLU6, HardSwish, GELU, Sigmoid, HardSigmoid) that are its sole consumers.
pub fn units(graph: &Graph) -> Result<Vec<Unit>> {
    let inputs = graph.input_indices()?;
    let consumers = graph.consumers()?;
    let sole = |n: usize| match consumers[n].as_slice() {
        [c] if graph.output_index().ok() != Some(n) => Some(*c),
        _ => None,
    };
    let mut out = Vec::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        let (depthwise, groups) = match &node.op {
            Op::Conv2d { in_channels, out_channels, groups, .. } => {
                let dw = *groups > 1 && *groups == *in_channels && *groups == *out_channels;
                (dw, if dw { 1 } else { *groups })
            }
            Op::Linear { .. } => (false, 1),
            _ => continue,
        };
        let mut absorbed = Vec::new();
        let mut last = n;
        if let Some(c) = sole(last).filter(|&c| matches!(graph.nodes[c].op, Op::BatchNorm2d { .. })) {
            absorbed.push(c);
            last = c;
        }
        if let Some(c) = sole(last).filter(|&c| {
            matches!(graph.nodes[c].op, Op::ReLU | Op::ReLU6 | Op::HardSwish | Op::GELU | Op::Sigmoid | Op::HardSigmoid)
        }) {
            absorbed.push(c);
        }
        let input = *inputs[n].first().ok_or_else(|| Error::node(&node.name, "has no input"))?;
        out.push(Unit { node: n, absorbed, input, depthwise, groups });
    }
    Ok(out)
}

/// Nodes whose output channel count pruning can change: those in a prunable group.
pub fn varying(graph: &Graph, groups: &[Group]) -> Vec<bool> {
    let mut v = vec![false; graph.nodes.len()];
    for g in groups.iter().filter(|g| g.prunable()) {
        for ch in &g.channels {
            for &(n, _) in &ch.elements {
                v[n] = true;
            }
        }
    }
    v
}

/// Counts a unit's axis is measured at: the coarse grid (about 1/8, 1/4, 1/2, 3/4 and all of
/// `full`) and the fine scan (every multiple of a power-of-two step giving at most 32 points,
/// with 1 and `full`). Counts are multiples of `multiple` (a grouped conv's groups).
pub fn grid(full: usize, multiple: usize) -> (Vec<usize>, Vec<usize>) {
    grid_of(full, multiple, 32)
}

/// As [`grid`], with a fine scan of at most `points` steps.
pub fn grid_of(full: usize, multiple: usize, points: usize) -> (Vec<usize>, Vec<usize>) {
    let m = multiple.max(1);
    let snap = |c: usize| (c.div_ceil(m) * m).clamp(m, full.max(m));
    let mut coarse: Vec<usize> =
        [full.div_ceil(8), full / 4, full / 2, full * 3 / 4, full].into_iter().map(snap).collect();
    coarse.sort_unstable();
    coarse.dedup();
    let step = full.div_ceil(points.max(1)).next_power_of_two();
    let mut fine: Vec<usize> =
        std::iter::once(1).chain((1..).map(|k| k * step).take_while(|&c| c < full)).chain([full]).map(snap).collect();
    fine.sort_unstable();
    fine.dedup();
    (coarse, fine)
}

/// The elements the rest nodes output at `counts` (per image): every node not `excluded` (the
/// units and the input).
fn rest_elements(shapes: &[Shape], counts: &[usize], excluded: &[bool]) -> f64 {
    shapes
        .iter()
        .enumerate()
        .filter(|(n, _)| !excluded[*n])
        .map(|(n, s)| (counts[n] * s[1..].iter().product::<usize>()) as f64)
        .sum()
}

/// The nodes outside the rest: the units with what they absorb, and the input.
fn excluded(graph: &Graph) -> Result<Vec<bool>> {
    let mut ex: Vec<bool> = graph.nodes.iter().map(|n| matches!(n.op, Op::Input { .. })).collect();
    for u in units(graph)? {
        ex[u.node] = true;
        u.absorbed.iter().for_each(|&a| ex[a] = true);
    }
    Ok(ex)
}

/// What a node does to a tensor's layout (see [`ConvLayouts`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Input,
    /// A unit's conv or linear node (index into the predictor's units).
    Unit(usize),
    /// Keeps its input's layout: what a unit absorbs, activations, BatchNorm, pools, dropout.
    Keeps,
    /// Blocked where all its inputs are, else plain.
    Add,
    /// Blocked where all its inputs are and each input count is a multiple of `period`.
    Concat,
    /// Reads plain tensors (flatten, products, ...).
    Plain,
}

/// A table prepared for one graph (the unpruned one or one with the same node names): predicts
/// its latency at any channel counts.
pub struct Predictor<'a> {
    table: &'a LatencyTable,
    /// (table unit, graph node, graph input node, last node of the unit)
    units: Vec<(usize, usize, usize, usize)>,
    excluded: Vec<bool>,
    shapes: Vec<Shape>,
    /// Per node: its inputs and its role in the layout walk (empty where no unit has layouts).
    inputs: Vec<Vec<usize>>,
    roles: Vec<Role>,
    output: usize,
}

impl<'a> Predictor<'a> {
    /// Matches the table's units to `graph`'s: every unit of the graph must be in the table with
    /// the same op, or the table is for another network.
    pub fn new(table: &'a LatencyTable, graph: &Graph) -> Result<Self> {
        let shapes = graph.infer_shapes()?;
        let by_name: HashMap<&str, usize> = table.units.iter().enumerate().map(|(i, u)| (u.node.as_str(), i)).collect();
        let mut matched = Vec::new();
        let mut roles: Vec<Role> = graph
            .nodes
            .iter()
            .map(|n| match n.op {
                Op::Input { .. } => Role::Input,
                Op::Add => Role::Add,
                Op::Concat => Role::Concat,
                Op::ReLU
                | Op::ReLU6
                | Op::Sigmoid
                | Op::HardSwish
                | Op::HardSigmoid
                | Op::GELU
                | Op::BatchNorm2d { .. }
                | Op::MaxPool2d { .. }
                | Op::AvgPool2d { .. }
                | Op::GlobalAvgPool
                | Op::Dropout { .. } => Role::Keeps,
                _ => Role::Plain,
            })
            .collect();
        for u in units(graph)? {
            let node = &graph.nodes[u.node];
            let &t = by_name.get(node.name.as_str()).ok_or_else(|| {
                Error::node(
                    &node.name,
                    format!("is not in the latency table of `{}`: the table is for another network", table.network),
                )
            })?;
            if table.units[t].op != node.op.type_name() {
                return Err(Error::node(
                    &node.name,
                    format!("is a {} here but a {} in the latency table", node.op.type_name(), table.units[t].op),
                ));
            }
            roles[u.node] = Role::Unit(matched.len());
            u.absorbed.iter().for_each(|&a| roles[a] = Role::Keeps);
            matched.push((t, u.node, u.input, u.absorbed.last().copied().unwrap_or(u.node)));
        }
        let layouts = matched.iter().any(|&(t, ..)| table.units[t].layout.is_some());
        let inputs = if layouts { graph.input_indices()? } else { Vec::new() };
        Ok(Predictor {
            table,
            units: matched,
            excluded: excluded(graph)?,
            shapes,
            inputs,
            roles,
            output: graph.output_index()?,
        })
    }

    /// The graph's own channel counts (node n outputs `counts[n]`).
    pub fn own_counts(&self) -> Vec<usize> {
        self.shapes.iter().map(|s| s[0]).collect()
    }

    /// Predicted ms at the graph's own channel counts.
    pub fn ms_of_graph(&self) -> f64 {
        self.ms(&self.own_counts())
    }

    /// Predicted ms when node n outputs `counts[n]` channels (the spatial sizes the graph's).
    pub fn ms(&self, counts: &[usize]) -> f64 {
        let (units, elements, reorders) = self.parts(counts);
        let t = self.table;
        t.units_scale * units
            + t.rest_ms_per_melement * elements / 1e6
            + t.reorder_ms_per_melement * reorders / 1e6
            + t.rest_ms
    }

    /// At `counts`: the units' sum, the rest's elements, and the elements the runtime reorders
    /// between layouts in the whole network less those each unit's own measurement reordered
    /// (a unit alone reads and writes plain tensors: a blocked one paid for reordering its input
    /// and output; in the network a chain of blocked units reorders only at its ends).
    pub fn parts(&self, counts: &[usize]) -> (f64, f64, f64) {
        let units: f64 = self.units.iter().map(|&(t, n, i, _)| self.table.units[t].ms(counts[i], counts[n])).sum();
        (units, rest_elements(&self.shapes, counts, &self.excluded), self.reorders(counts))
    }

    fn reorders(&self, counts: &[usize]) -> f64 {
        if self.inputs.is_empty() {
            return 0.0;
        }
        let size = |n: usize| (counts[n] * self.shapes[n][1..].iter().product::<usize>()) as f64;
        let n = self.roles.len();
        let (mut blocked, mut plain_copy, mut blocked_copy) = (vec![false; n], vec![false; n], vec![false; n]);
        let mut network = 0.0;
        let mut alone = 0.0;
        let period = self
            .units
            .iter()
            .filter_map(|&(t, ..)| self.table.units[t].layout.as_ref())
            .map(|l| l.period)
            .max()
            .unwrap_or(0);
        // Reorder tensor t once for all its consumers that read the other layout.
        let mut to_plain = |t: usize, blocked: &[bool], total: &mut f64| {
            if blocked[t] && !plain_copy[t] {
                plain_copy[t] = true;
                *total += size(t);
            }
        };
        for node in 0..n {
            let ins = &self.inputs[node];
            blocked[node] = match self.roles[node] {
                Role::Input => false,
                Role::Keeps => ins.first().is_some_and(|&i| blocked[i]),
                Role::Unit(k) => {
                    let (t, _, input, last) = self.units[k];
                    let layout = self.table.units[t].layout.as_ref().map_or(Layout::Plain, |l| l.at(counts[input]));
                    match layout {
                        Layout::Blocked => {
                            if !blocked[input] && !blocked_copy[input] {
                                blocked_copy[input] = true;
                                network += size(input);
                            }
                            alone += size(input) + size(last);
                        }
                        Layout::Direct | Layout::Plain => to_plain(input, &blocked, &mut network),
                    }
                    if layout == Layout::Direct {
                        alone += size(last);
                    }
                    layout != Layout::Plain
                }
                Role::Add | Role::Concat => {
                    let aligned = self.roles[node] == Role::Add
                        || ins.iter().all(|&i| period > 0 && counts[i].is_multiple_of(period));
                    if aligned && ins.iter().all(|&i| blocked[i]) {
                        true
                    } else {
                        ins.iter().for_each(|&i| to_plain(i, &blocked, &mut network));
                        false
                    }
                }
                Role::Plain => {
                    ins.iter().for_each(|&i| to_plain(i, &blocked, &mut network));
                    false
                }
            };
        }
        to_plain(self.output, &blocked, &mut network);
        network - alone
    }
}

impl LatencyTable {
    /// A table of measured units, before its whole-network terms are fitted (`fit_rest`).
    pub fn new(key: TableKey, network: &str, units: Vec<UnitTable>) -> Self {
        LatencyTable {
            key,
            network: network.to_string(),
            units,
            units_scale: 1.0,
            rest_ms_per_melement: 0.0,
            rest_ms: 0.0,
            reorder_ms_per_melement: 0.0,
            calibration: Vec::new(),
            build_seconds: 0.0,
        }
    }

    /// Predicted latency in ms of `graph` (the table's network, pruned or not).
    pub fn predict(&self, graph: &Graph) -> Result<f64> {
        Ok(Predictor::new(self, graph)?.ms_of_graph())
    }

    /// Fits `measured = scale * units + gamma * reordered elements + beta` on whole-network
    /// measurements by least squares where the runtime reorders between layouts, else
    /// `measured = scale * units + alpha * rest elements + beta`. Where the data cannot support a
    /// term (too few points, a column of zeros, or a fitted scale, slope or reorder cost that is
    /// not positive, as noise on close points gives), the term is dropped: gamma, then alpha,
    /// then the scale (left at 1). (Both gamma and alpha together overfit: on ResNet-20 in ONNX
    /// Runtime the rest's elements follow the units' closely, and the pair fitted on the
    /// calibration networks missed 27 pruned ones by 28-42% on average against 11% without alpha.)
    pub fn fit_rest(&mut self, calibration: Vec<Calibration>) {
        let rows: Vec<([f64; 4], f64)> = calibration
            .iter()
            .map(|c| ([c.units_ms, c.rest_elements / 1e6, c.reorder_elements / 1e6, 1.0], c.measured_ms))
            .collect();
        // `cols`: the fitted terms among 0 scale, 1 alpha, 2 gamma, 3 beta (always).
        let fit = |cols: &[usize]| -> Option<[f64; 4]> {
            if rows.len() < cols.len() {
                return None;
            }
            let use_scale = cols.contains(&0);
            // Residual after the fixed terms (scale 1 when not fitted).
            let y: Vec<f64> = rows.iter().map(|(x, y)| if use_scale { *y } else { y - x[0] }).collect();
            let k = cols.len();
            let mut a = vec![vec![0.0; k + 1]; k];
            for (r, (x, _)) in rows.iter().enumerate() {
                for i in 0..k {
                    for j in 0..k {
                        a[i][j] += x[cols[i]] * x[cols[j]];
                    }
                    a[i][k] += x[cols[i]] * y[r];
                }
            }
            let sol = solve(a)?;
            let mut out = [if use_scale { 0.0 } else { 1.0 }, 0.0, 0.0, 0.0];
            for (i, &c) in cols.iter().enumerate() {
                out[c] = sol[i];
            }
            (out[0] > 0.0 && out[1] >= 0.0 && out[2] >= 0.0).then_some(out)
        };
        let [scale, alpha, gamma, beta] =
            [&[0, 2, 3][..], &[0, 1, 3], &[0, 3], &[3]].into_iter().find_map(fit).unwrap_or([1.0, 0.0, 0.0, 0.0]);
        self.units_scale = scale;
        self.rest_ms_per_melement = alpha;
        self.reorder_ms_per_melement = gamma;
        self.rest_ms = beta;
        self.calibration = calibration;
    }

    /// Checks what a file can get wrong: finite non-negative times, grids the size they say,
    /// sorted counts.
    pub fn check(&self) -> Result<()> {
        let bad = |u: &UnitTable, what: &str| Error::node(&u.node, format!("latency table: {what}"));
        for u in &self.units {
            if u.coarse_ms.len() != u.cin.coarse.len() * u.cout.coarse.len()
                || u.cin.coarse.is_empty()
                || u.cout.coarse.is_empty()
            {
                return Err(bad(u, "the coarse grid's size does not match its counts"));
            }
            for axis in [&u.cin, &u.cout] {
                if !axis.coarse.windows(2).all(|w| w[0] < w[1]) || !axis.fine.windows(2).all(|w| w[0].0 < w[1].0) {
                    return Err(bad(u, "counts are not increasing"));
                }
                if axis.fine.iter().any(|p| !p.1.is_finite() || p.1 < 0.0) {
                    return Err(bad(u, "a time is not a finite non-negative number"));
                }
            }
            if u.coarse_ms.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(bad(u, "a time is not a finite non-negative number"));
            }
            if u.depthwise && u.cout.fine.is_empty() {
                return Err(bad(u, "a depthwise unit needs its scan"));
            }
        }
        let finite = self.rest_ms.is_finite()
            && self.rest_ms_per_melement.is_finite()
            && self.reorder_ms_per_melement.is_finite()
            && self.units_scale.is_finite();
        if !finite || self.units_scale <= 0.0 {
            return Err(Error::config("rest_ms", "latency table: the rest model is not finite"));
        }
        Ok(())
    }
}

/// Gaussian elimination with partial pivoting on an augmented k x (k+1) matrix; None if singular.
pub(crate) fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = a.len();
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        for r in 0..k {
            if r != c {
                let f = a[r][c] / a[c][c];
                let pivot = a[c].clone();
                for (x, p) in a[r].iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

/// An axis tabled from `at(count)`: the grid of a measured table where `varies`, else the full
/// count alone (for tests of what reads tables).
#[cfg(test)]
pub fn tabled_axis(full: usize, varies: bool, multiple: usize, at: impl Fn(usize) -> f64) -> Axis {
    if !varies {
        return Axis { full, coarse: vec![full], fine: vec![] };
    }
    let (coarse, fine) = grid(full, multiple);
    Axis { full, coarse, fine: fine.into_iter().map(|c| (c, at(c))).collect() }
}

/// A table computed from `f(cin, cout, unit)` instead of measured (for tests of what reads
/// tables): the same grids a measured table has, no rest.
#[cfg(test)]
pub fn synthetic(graph: &Graph, f: impl Fn(usize, usize, &Unit) -> f64) -> LatencyTable {
    let shapes = graph.infer_shapes().unwrap();
    let groups = super::groups(graph).unwrap();
    let varying = varying(graph, &groups);
    let units = units(graph)
        .unwrap()
        .into_iter()
        .map(|u| {
            let (ci, co) = (shapes[u.input][0], shapes[u.node][0]);
            let node = &graph.nodes[u.node];
            let mut t = if u.depthwise {
                let cin = Axis { full: ci, coarse: vec![ci], fine: vec![] };
                let mut cout = tabled_axis(co, varying[u.node], 1, |c| f(c, c, &u));
                cout.coarse = vec![co];
                UnitTable {
                    node: String::new(),
                    op: String::new(),
                    absorbed: vec![],
                    depthwise: true,
                    cin,
                    cout,
                    coarse_ms: vec![f(ci, co, &u)],
                    layout: None,
                }
            } else {
                let cin = tabled_axis(ci, varying[u.input], u.groups, |c| f(c, co, &u));
                let cout = tabled_axis(co, varying[u.node], u.groups, |c| f(ci, c, &u));
                tabled_grid(cin, cout, |i, o| f(i, o, &u))
            };
            t.node = node.name.clone();
            t.op = node.op.type_name().into();
            t.absorbed = u.absorbed.iter().map(|&a| graph.nodes[a].name.clone()).collect();
            t
        })
        .collect();
    let key = TableKey {
        format: FORMAT,
        graph: "synthetic".into(),
        runtime: "none".into(),
        batch: 1,
        threads: 1,
        device: "none".into(),
    };
    LatencyTable::new(key, &graph.name, units)
}

/// A conv unit on two tabled axes, its coarse grid filled from `f(cin, cout)`.
#[cfg(test)]
pub fn tabled_grid(cin: Axis, cout: Axis, f: impl Fn(usize, usize) -> f64) -> UnitTable {
    let coarse_ms =
        cin.coarse.iter().flat_map(|&i| cout.coarse.iter().map(move |&o| (i, o))).map(|(i, o)| f(i, o)).collect();
    UnitTable {
        node: "c".into(),
        op: "conv2d".into(),
        absorbed: vec![],
        depthwise: false,
        cin,
        cout,
        coarse_ms,
        layout: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    #[test]
    fn a_synthetic_table_predicts_its_own_function_at_the_grid_and_for_pruned_graphs() {
        let g = zoo::build("resnet20", 10).unwrap();
        let shapes = g.infer_shapes().unwrap();
        let t = synthetic(&g, |i, o, _| 1e-4 * (i * o) as f64 + 0.001);
        let truth: f64 =
            units(&g).unwrap().iter().map(|u| 1e-4 * (shapes[u.input][0] * shapes[u.node][0]) as f64 + 0.001).sum();
        assert!((t.predict(&g).unwrap() - truth).abs() < 1e-9);
        // Another network's graph is refused, naming the node.
        let other = zoo::build("alexnet", 10).unwrap();
        assert!(t.predict(&other).unwrap_err().to_string().contains("latency table"));
    }

    /// A unit whose true latency is `a * cin * cout + b * cout + c`, tabled on the grid.
    fn bilinear_unit(cin: usize, cout: usize) -> (UnitTable, impl Fn(usize, usize) -> f64) {
        let f = |i: usize, o: usize| 1e-4 * (i * o) as f64 + 1e-3 * o as f64 + 0.01;
        let u = tabled_grid(tabled_axis(cin, true, 1, |c| f(c, cout)), tabled_axis(cout, true, 1, |c| f(cin, c)), f);
        (u, f)
    }

    #[test]
    fn a_bilinear_cost_is_exact_on_the_scans_and_rounded_up_between() {
        let (u, f) = bilinear_unit(64, 96);
        // On scanned counts (multiples of 2 and of 4 here) the table is exact.
        for (i, o) in [(64, 96), (1, 1), (14, 76), (40, 8), (64, 52), (34, 96)] {
            let (p, t) = (u.ms(i, o), f(i, o));
            assert!((p - t).abs() < 1e-9 * t.max(1.0) + 1e-12, "({i},{o}): {p} vs {t}");
        }
        // Between them a count costs about as the next scanned one (steps of 2 and 4 here).
        for (i, o) in [(13, 77), (41, 7), (63, 50), (33, 95)] {
            let (p, t, up) = (u.ms(i, o), f(i, o), f(i.div_ceil(2) * 2, o.div_ceil(4) * 4));
            assert!(p >= t - 1e-12 && p <= 1.05 * up, "({i},{o}): {p} vs {t} (next scanned {up})");
        }
    }

    #[test]
    fn the_fine_scan_shows_the_staircase() {
        // Latency that steps every 8 output channels (a blocked layout), linear in the input.
        let step = |i: usize, o: usize| (o.div_ceil(8) * 8 * i) as f64 * 1e-4;
        let u = tabled_grid(tabled_axis(32, true, 1, |c| step(c, 64)), tabled_axis(64, true, 1, |c| step(32, c)), step);
        // 42 and 48 channels cost the same (one step), 49 costs a step more.
        assert!((u.ms(32, 42) - u.ms(32, 48)).abs() < 1e-9, "{} {}", u.ms(32, 42), u.ms(32, 48));
        assert!(u.ms(32, 49) > u.ms(32, 48) * 1.1 && (u.ms(32, 49) - u.ms(32, 56)).abs() < 1e-9);
        for (i, o) in [(16, 42), (32, 17), (8, 64)] {
            let (p, t) = (u.ms(i, o), step(i, o));
            assert!((p - t).abs() <= 0.02 * t, "({i},{o}): {p} vs {t}");
        }
    }

    #[test]
    fn grids_hold_the_ends_and_respect_groups() {
        let (c, f) = grid(64, 1);
        assert_eq!(c, vec![8, 16, 32, 48, 64]);
        assert_eq!((f[0], *f.last().unwrap(), f.len()), (1, 64, 33));
        let (c, f) = grid(96, 4);
        assert!(c.iter().chain(&f).all(|x| x % 4 == 0 && *x >= 4 && *x <= 96), "{c:?} {f:?}");
        let (c, f) = grid(1, 1);
        assert_eq!((c, f), (vec![1], vec![1]));
    }

    #[test]
    fn units_absorb_bn_and_activation_and_the_rest_is_what_is_left() {
        let g = zoo::build("resnet20", 10).unwrap();
        let us = units(&g).unwrap();
        let names: Vec<&str> = us.iter().map(|u| g.nodes[u.node].name.as_str()).collect();
        assert_eq!(names.len(), 22, "19 3x3 convs, 2 shortcut convs and the linear layer: {names:?}");
        let first = &us[0];
        assert_eq!(
            first.absorbed.iter().map(|&a| g.nodes[a].op.type_name()).collect::<Vec<_>>(),
            vec!["batch_norm2d", "relu"]
        );
        // A block's second conv is followed by its BN, then the Add: the ReLU after the Add is rest.
        let c2 = us.iter().find(|u| g.nodes[u.node].name == "layer1.0.conv2").unwrap();
        assert_eq!(c2.absorbed.len(), 1);
        let m = zoo::build("mobilenetv2", 10).unwrap();
        assert!(units(&m).unwrap().iter().any(|u| u.depthwise));
    }

    #[test]
    fn the_whole_network_fit_recovers_its_terms_and_drops_those_the_data_cannot_carry() {
        let key = TableKey {
            format: FORMAT,
            graph: "g".into(),
            runtime: "r".into(),
            batch: 1,
            threads: 1,
            device: "d".into(),
        };
        let mut t = LatencyTable::new(key, "n", vec![]);
        let cal = |m: f64, u: f64, e: f64| Calibration {
            what: "x".into(),
            measured_ms: m,
            units_ms: u,
            rest_elements: e,
            reorder_elements: 0.0,
        };
        // measured = 0.8 units + 0.5 ms per million elements + 0.1, recovered from four points.
        let truth = |u: f64, e: f64| 0.8 * u + 0.5 * e / 1e6 + 0.1;
        let pts = [(1.0, 2e6), (0.5, 1e6), (0.7, 0.2e6), (0.2, 1.5e6)];
        t.fit_rest(pts.iter().map(|&(u, e)| cal(truth(u, e), u, e)).collect());
        assert!((t.units_scale - 0.8).abs() < 1e-9 && (t.rest_ms_per_melement - 0.5).abs() < 1e-9, "{t:?}");
        assert!((t.rest_ms - 0.1).abs() < 1e-9, "{t:?}");
        // Two points cannot carry three terms: the slope goes, the scale and constant stay.
        t.fit_rest(vec![cal(3.0, 1.0, 2e6), cal(1.5, 0.5, 1e6)]);
        assert!((t.units_scale - 3.0).abs() < 1e-9 && t.rest_ms_per_melement == 0.0 && t.rest_ms.abs() < 1e-9, "{t:?}");
        // Slower when the units are cheaper: no positive scale fits, so only the constant moves.
        t.fit_rest(vec![cal(1.0, 2.0, 2e6), cal(2.0, 1.0, 1e6)]);
        assert_eq!((t.units_scale, t.rest_ms_per_melement), (1.0, 0.0));
        assert!((t.rest_ms - 0.0).abs() < 1e-9, "{t:?}");
        t.check().unwrap();
    }

    #[test]
    fn layouts_repeat_past_the_probes_and_reorders_count_only_where_layouts_meet() {
        use Layout::*;
        // As ONNX Runtime 1.32 here: blocked reading a plain input below 16, then blocked at
        // multiples of 4 and plain between.
        let probes: Vec<Layout> = (1..=48)
            .map(|c| {
                if c < 16 {
                    Direct
                } else if c % 4 == 0 {
                    Blocked
                } else {
                    Plain
                }
            })
            .collect();
        let l = ConvLayouts::from_probes(&probes);
        assert_eq!(l.period, 4);
        assert_eq!(
            (l.at(3), l.at(16), l.at(17), l.at(64), l.at(65), l.at(0)),
            (Direct, Blocked, Plain, Blocked, Plain, Plain)
        );
        assert_eq!(ConvLayouts::from_probes(&probes[..20]).period, 0, "too few probes to see a period");

        let model = crate::ir::Model::init(crate::zoo::build("resnet20", 10).unwrap(), 0).unwrap();
        let mut table = synthetic(&model.graph, |i, o, _| 1e-3 * (i * o) as f64);
        let p = Predictor::new(&table, &model.graph).unwrap();
        let counts = p.own_counts();
        assert_eq!(p.parts(&counts).2, 0.0, "no layouts, no reorders");
        for u in &mut table.units {
            if u.op == "conv2d" {
                u.layout = Some(l.clone());
            }
        }
        let p = Predictor::new(&table, &model.graph).unwrap();
        // Unpruned (16, 32, 64 channels): one blocked chain from the stem to the pool, reordered
        // once at its end, where each unit alone reordered its input and output: fewer reorders
        // in the network than alone.
        let unpruned = p.parts(&counts).2;
        assert!(unpruned < 0.0, "{unpruned}");
        // Every count plain (17, 33, 65... are off the multiples of 4): nothing blocked but the
        // stem (3 inputs: blocked output, reordered for its plain consumers, as alone).
        let plain: Vec<usize> = counts.iter().map(|&c| if c >= 16 { c + 1 } else { c }).collect();
        let stem = model.graph.nodes.iter().position(|n| n.name == "conv1").unwrap();
        let mut plain = plain;
        plain[stem] = 17;
        assert!(p.parts(&plain).2.abs() < 1e-9, "{}", p.parts(&plain).2);
        // The fitted reorder cost enters the prediction.
        let before = p.ms(&counts);
        let mut costly = table.clone();
        costly.reorder_ms_per_melement = 2.0;
        let q = Predictor::new(&costly, &model.graph).unwrap();
        assert!((q.ms(&counts) - before - 2.0 * unpruned / 1e6).abs() < 1e-12);
    }
}
