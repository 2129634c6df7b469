//! The report of a sweep: from its summary CSV (`cells.csv`, one row per cell) to the paper's
//! numbers, tables and plots.
//!
//! A cell is one (network, subset, pipeline, level, seed) run. The seeds of a point (network,
//! subset, pipeline, level) are averaged (the sample standard deviation is shown where there are
//! more than one). The headline numbers follow the reference code (docs/protocol.md, "How the reference
//! code computes it"): for each (subset, network) pair, `delta(p) = aware(p) - agnostic(p)` in
//! percentage points at every level p where both pipelines have a result; the mean delta is the
//! mean over pairs of the pair's mean over its levels; the max delta is the largest single
//! `delta(p)`.
//!
//! [`write_report`] writes into its output folder:
//! - `deltas.csv`: one row per (network, subset, level), accuracies in %, delta in pp;
//! - `summary.json`: the [`ReportSummary`];
//! - `report.md`: the summary, per network and subset the accuracy tables, the device costs and
//!   the plots;
//! - per network, `acc_vs_level_<network>.{svg,png}` and `acc_vs_gops_<network>.{svg,png}`.
//!
//! A half-finished sweep (a pipeline or a level missing) is reported as far as it goes: missing
//! entries are left empty (`-`), and deltas are taken only where both pipelines exist.
//!
//! Plots are drawn with `plotters`, the same drawing code for both backends. Text needs no system
//! font: the SVG holds `<text>` elements, and the PNG's text is rasterised with `ab_glyph` from
//! DejaVu Sans, embedded in the binary by the `dejavu` crate (text layout of both backends uses
//! it).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file names written by [`write_report`] (plots are named per network).
pub const DELTAS_CSV: &str = "deltas.csv";
pub const SUMMARY_JSON: &str = "summary.json";
pub const REPORT_MD: &str = "report.md";

pub use super::recipe::Pipeline as Pipe;

/// The energy of a cell: joules, or `unavailable` where the device has no energy meter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Energy {
    Joules(f64),
    Unavailable,
}

/// One row of a sweep's `cells.csv`: one (network, subset, pipeline, level, seed) run.
///
/// Columns are matched by name; an empty field (or an absent column) is `None` (or an empty
/// string). `pipeline` is `aware`, `agnostic` or `unpruned`; `level` is the target percent of
/// parameters removed (0 for unpruned); accuracies are fractions in [0, 1]; `energy_joules` is a
/// number, `unavailable` or empty (see [`Cell::energy`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cell {
    pub network: String,
    pub subset: String,
    pub pipeline: String,
    pub level: f64,
    pub seed: u64,
    pub criterion: String,
    pub params_before: Option<f64>,
    pub params_after: Option<f64>,
    pub params_removed_percent: Option<f64>,
    pub gops_before: Option<f64>,
    pub gops_after: Option<f64>,
    pub test_top1: Option<f64>,
    pub val_top1: Option<f64>,
    pub best_epoch: Option<f64>,
    pub epochs: Option<f64>,
    pub seconds: Option<f64>,
    pub train_step_ms_before: Option<f64>,
    pub train_step_ms_after: Option<f64>,
    pub prune_seconds: Option<f64>,
    pub data_ms_per_batch: Option<f64>,
    pub infer_ms_per_image_b1_before: Option<f64>,
    pub infer_ms_per_image_b1_after: Option<f64>,
    pub infer_ms_per_image_b128_before: Option<f64>,
    pub infer_ms_per_image_b128_after: Option<f64>,
    pub peak_rss_bytes: Option<f64>,
    pub energy_joules: String,
}

impl Cell {
    /// The pipeline, where `pipeline` names one.
    pub fn pipe(&self) -> Option<Pipe> {
        Pipe::parse(&self.pipeline)
    }

    /// The energy: `None` where the field is empty or not understood.
    pub fn energy(&self) -> Option<Energy> {
        let t = self.energy_joules.trim();
        if t.is_empty() {
            None
        } else if t.eq_ignore_ascii_case("unavailable") {
            Some(Energy::Unavailable)
        } else {
            t.parse::<f64>().ok().filter(|j| j.is_finite()).map(Energy::Joules)
        }
    }

    /// What is wrong with a parsed row, if anything.
    fn check(&self) -> std::result::Result<(), String> {
        if self.network.trim().is_empty() {
            return Err("empty `network`".into());
        }
        if self.subset.trim().is_empty() {
            return Err("empty `subset`".into());
        }
        if self.pipe().is_none() {
            return Err(format!("`pipeline` = `{}` is none of aware, agnostic, unpruned", self.pipeline));
        }
        if !(0.0..=100.0).contains(&self.level) {
            return Err(format!("`level` = {} is not a percent in [0, 100]", self.level));
        }
        for (name, v) in [("test_top1", self.test_top1), ("val_top1", self.val_top1)] {
            if let Some(v) = v
                && !(0.0..=1.0).contains(&v)
            {
                return Err(format!("`{name}` = {v} is not a fraction in [0, 1]"));
            }
        }
        if !self.energy_joules.trim().is_empty() && self.energy().is_none() {
            return Err(format!("`energy_joules` = `{}` is neither a number nor `unavailable`", self.energy_joules));
        }
        Ok(())
    }
}

/// Read a sweep's `cells.csv`. Errors name the file, the line and, where it applies, the column.
pub fn read_cells(path: &Path) -> Result<Vec<Cell>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(std::io::BufReader::new(file));
    let headers = rdr.headers().map_err(|e| csv_error(path, &e, None, None))?.clone();
    for required in ["network", "subset", "pipeline", "level"] {
        if !headers.iter().any(|h| h == required) {
            return Err(Error::file(path, format!("line 1: no column `{required}` in the header")));
        }
    }
    let mut cells = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, &e, Some(&headers), None)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let cell: Cell =
            record.deserialize(Some(&headers)).map_err(|e| csv_error(path, &e, Some(&headers), Some(&record)))?;
        cell.check().map_err(|msg| Error::file(path, format!("line {line}: {msg}")))?;
        cells.push(cell);
    }
    Ok(cells)
}

/// A csv error as the crate's error, naming the line and the column.
fn csv_error(
    path: &Path,
    e: &csv::Error,
    headers: Option<&csv::StringRecord>,
    record: Option<&csv::StringRecord>,
) -> Error {
    let line = e.position().map(|p| p.line());
    let msg = match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let column = err.field().and_then(|i| headers.and_then(|h| h.get(i as usize)));
            let value = err.field().and_then(|i| record.and_then(|r| r.get(i as usize)));
            match (column, value) {
                (Some(c), Some(v)) => format!("column `{c}` = `{v}`: {}", err.kind()),
                (Some(c), None) => format!("column `{c}`: {}", err.kind()),
                _ => err.kind().to_string(),
            }
        }
        csv::ErrorKind::Io(io) => io.to_string(),
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 in field {}", err.field() + 1),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the header has {expected_len}")
        }
        _ => e.to_string(),
    };
    match line {
        Some(l) => Error::file(path, format!("line {l}: {msg}")),
        None => Error::file(path, msg),
    }
}

// ------------------------------------------------------------------------------------------------
// Aggregation over seeds

/// A pruning level as a key: thousandths of a percent, so that 5, 5.0 and 5.000 are one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Level(i64);

impl Level {
    fn of(pct: f64) -> Self {
        Level((pct * 1000.0).round() as i64)
    }
    fn pct(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 { write!(f, "{}", self.0 / 1000) } else { write!(f, "{}", self.pct()) }
    }
}

/// Mean and sample standard deviation of a few values.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    n: usize,
    mean: f64,
    /// Sample (n - 1) standard deviation; 0 for a single value.
    std: f64,
}

fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Some(Stat { n, mean, std })
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    stat(values).map(|s| s.mean)
}

/// One point (network, subset, pipeline, level): its cells averaged over seeds.
#[derive(Clone, Debug, Default)]
struct Point {
    /// Test top-1 in percent.
    top1: Option<Stat>,
    params_removed_percent: Option<f64>,
    gops_before: Option<f64>,
    gops_after: Option<f64>,
    costs: Costs,
}

/// The device costs of a point, means over seeds.
#[derive(Clone, Debug, Default)]
struct Costs {
    train_step_ms_before: Option<f64>,
    train_step_ms_after: Option<f64>,
    prune_seconds: Option<f64>,
    data_ms_per_batch: Option<f64>,
    infer_b1_before: Option<f64>,
    infer_b1_after: Option<f64>,
    infer_b128_before: Option<f64>,
    infer_b128_after: Option<f64>,
    peak_rss_mib: Option<f64>,
    energy: Option<Energy>,
}

impl Costs {
    fn any(&self) -> bool {
        [
            self.train_step_ms_before,
            self.train_step_ms_after,
            self.prune_seconds,
            self.data_ms_per_batch,
            self.infer_b1_before,
            self.infer_b1_after,
            self.infer_b128_before,
            self.infer_b128_after,
            self.peak_rss_mib,
        ]
        .iter()
        .any(Option::is_some)
            || matches!(self.energy, Some(Energy::Joules(_)))
    }
}

impl Point {
    fn of(cells: &[&Cell]) -> Self {
        let m = |f: fn(&Cell) -> Option<f64>| mean(cells.iter().filter_map(|c| f(c)));
        let joules: Vec<f64> = cells
            .iter()
            .filter_map(|c| match c.energy() {
                Some(Energy::Joules(j)) => Some(j),
                _ => None,
            })
            .collect();
        let energy = match mean(joules) {
            Some(j) => Some(Energy::Joules(j)),
            None if cells.iter().any(|c| c.energy() == Some(Energy::Unavailable)) => Some(Energy::Unavailable),
            None => None,
        };
        Point {
            top1: stat(cells.iter().filter_map(|c| c.test_top1).map(|a| 100.0 * a)),
            params_removed_percent: m(|c| c.params_removed_percent),
            gops_before: m(|c| c.gops_before),
            gops_after: m(|c| c.gops_after),
            costs: Costs {
                train_step_ms_before: m(|c| c.train_step_ms_before),
                train_step_ms_after: m(|c| c.train_step_ms_after),
                prune_seconds: m(|c| c.prune_seconds),
                data_ms_per_batch: m(|c| c.data_ms_per_batch),
                infer_b1_before: m(|c| c.infer_ms_per_image_b1_before),
                infer_b1_after: m(|c| c.infer_ms_per_image_b1_after),
                infer_b128_before: m(|c| c.infer_ms_per_image_b128_before),
                infer_b128_after: m(|c| c.infer_ms_per_image_b128_after),
                peak_rss_mib: m(|c| c.peak_rss_bytes.map(|b| b / (1024.0 * 1024.0))),
                energy,
            },
        }
    }

    fn acc(&self) -> Option<f64> {
        self.top1.map(|s| s.mean)
    }
}

/// One (network, subset): its points per pipeline and level, and its unpruned reference.
#[derive(Clone, Debug, Default)]
struct SubsetData {
    subset: String,
    aware: BTreeMap<Level, Point>,
    agnostic: BTreeMap<Level, Point>,
    unpruned: Option<Point>,
}

impl SubsetData {
    /// The levels where either pruned pipeline has a cell, ascending.
    fn levels(&self) -> Vec<Level> {
        let mut l: Vec<Level> = self.aware.keys().chain(self.agnostic.keys()).copied().collect();
        l.sort();
        l.dedup();
        l
    }

    /// The original model's GOps: from the unpruned cells, else from any pruned cell's `gops_before`.
    fn gops_unpruned(&self) -> Option<f64> {
        self.unpruned
            .as_ref()
            .and_then(|p| p.gops_before.or(p.gops_after))
            .or_else(|| self.aware.values().chain(self.agnostic.values()).find_map(|p| p.gops_before))
    }
}

#[derive(Clone, Debug, Default)]
struct NetworkData {
    network: String,
    subsets: Vec<SubsetData>,
}

/// All cells grouped: networks, then subsets, in order of first appearance in the CSV.
fn group(cells: &[Cell]) -> Vec<NetworkData> {
    let mut order: Vec<(String, Vec<String>)> = Vec::new();
    let mut buckets: BTreeMap<(&str, &str, Pipe, Level), Vec<&Cell>> = BTreeMap::new();
    for c in cells {
        // Rows naming no pipeline are left out (`read_cells` refuses them; the summary counts them).
        let Some(pipe) = c.pipe() else { continue };
        let i = match order.iter().position(|(n, _)| *n == c.network) {
            Some(i) => i,
            None => {
                order.push((c.network.clone(), Vec::new()));
                order.len() - 1
            }
        };
        if !order[i].1.contains(&c.subset) {
            order[i].1.push(c.subset.clone());
        }
        let level = if pipe == Pipe::Unpruned { Level(0) } else { Level::of(c.level) };
        buckets.entry((c.network.as_str(), c.subset.as_str(), pipe, level)).or_default().push(c);
    }
    let mut data: BTreeMap<(&str, &str), SubsetData> = BTreeMap::new();
    for ((network, subset, pipeline, level), cs) in &buckets {
        let d = data.entry((network, subset)).or_default();
        let p = Point::of(cs);
        match pipeline {
            Pipe::Aware => {
                d.aware.insert(*level, p);
            }
            Pipe::Agnostic => {
                d.agnostic.insert(*level, p);
            }
            Pipe::Unpruned => d.unpruned = Some(p),
        }
    }
    order
        .iter()
        .map(|(network, subsets)| NetworkData {
            network: network.clone(),
            subsets: subsets
                .iter()
                .map(|subset| SubsetData {
                    subset: subset.clone(),
                    ..data.remove(&(network.as_str(), subset.as_str())).unwrap_or_default()
                })
                .collect(),
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Deltas and the summary

/// One row of `deltas.csv`. Accuracies are test top-1 in percent (means over seeds), `delta` is
/// `aware - agnostic` in percentage points; empty where a pipeline has no result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeltaRow {
    pub network: String,
    pub subset: String,
    pub level: f64,
    pub aware: Option<f64>,
    pub agnostic: Option<f64>,
    pub delta: Option<f64>,
    pub unpruned: Option<f64>,
    /// Sample std over seeds, where more than one seed.
    pub aware_std: Option<f64>,
    pub agnostic_std: Option<f64>,
    pub aware_seeds: usize,
    pub agnostic_seeds: usize,
}

/// Where a delta was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaAt {
    pub network: String,
    pub subset: String,
    pub level: f64,
    pub delta_pp: f64,
}

/// The mean delta of one (subset, network) pair over its levels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairMean {
    pub network: String,
    pub subset: String,
    /// Levels with both pipelines present.
    pub levels: usize,
    pub mean_delta_pp: f64,
}

/// The paper's summary of a sweep (docs/protocol.md, "How the reference code computes it").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Mean over (subset, network) pairs of the pair's mean over levels of `aware - agnostic`, in
    /// percentage points; `None` where no level has both pipelines.
    pub mean_delta_pp: Option<f64>,
    /// The largest single `aware(p) - agnostic(p)`, in percentage points.
    pub max_delta_pp: Option<f64>,
    /// Where the largest delta occurred.
    pub max_delta_at: Option<DeltaAt>,
    /// The smallest single delta, in percentage points.
    pub min_delta_pp: Option<f64>,
    /// (subset, network) pairs with at least one delta.
    pub pairs: usize,
    /// Distinct levels among the deltas.
    pub levels: usize,
    /// (subset, network, level) points with a delta.
    pub points: usize,
    /// Points where aware was strictly more accurate than agnostic.
    pub aware_wins: usize,
    /// Each pair's mean delta.
    pub pair_means: Vec<PairMean>,
    /// Cells given, and those left out because `pipeline` names none of the three.
    pub cells: usize,
    pub skipped_cells: usize,
    pub networks: Vec<String>,
    pub subsets: Vec<String>,
    /// The formula, in words.
    pub definition: String,
    /// Files written, relative to the output folder.
    pub files: Vec<String>,
}

const DEFINITION: &str = "For each (subset, network) pair, delta(p) = aware(p) - agnostic(p) in percentage points of \
     test top-1 on the subset (each a mean over seeds), at every level p where both pipelines have a result. \
     mean delta = mean over pairs of (mean over p of delta(p)); max delta = max over all pairs and levels of delta(p).";

fn delta_rows(nets: &[NetworkData]) -> Vec<DeltaRow> {
    let mut rows = Vec::new();
    for n in nets {
        for s in &n.subsets {
            let unpruned = s.unpruned.as_ref().and_then(Point::acc);
            for level in s.levels() {
                let aw = s.aware.get(&level).and_then(|p| p.top1);
                let ag = s.agnostic.get(&level).and_then(|p| p.top1);
                let multi = |st: Option<Stat>| st.filter(|s| s.n > 1).map(|s| s.std);
                rows.push(DeltaRow {
                    network: n.network.clone(),
                    subset: s.subset.clone(),
                    level: level.pct(),
                    aware: aw.map(|s| s.mean),
                    agnostic: ag.map(|s| s.mean),
                    delta: aw.zip(ag).map(|(a, g)| a.mean - g.mean),
                    unpruned,
                    aware_std: multi(aw),
                    agnostic_std: multi(ag),
                    aware_seeds: aw.map_or(0, |s| s.n),
                    agnostic_seeds: ag.map_or(0, |s| s.n),
                });
            }
        }
    }
    rows
}

fn summarize(cells: &[Cell], nets: &[NetworkData], rows: &[DeltaRow]) -> ReportSummary {
    let mut pair_means = Vec::new();
    let mut max_at: Option<DeltaAt> = None;
    let mut min_delta: Option<f64> = None;
    let mut levels: Vec<Level> = Vec::new();
    let mut points = 0;
    let mut wins = 0;
    for n in nets {
        for s in &n.subsets {
            let ds: Vec<&DeltaRow> =
                rows.iter().filter(|r| r.network == n.network && r.subset == s.subset && r.delta.is_some()).collect();
            if ds.is_empty() {
                continue;
            }
            let mut sum = 0.0;
            for r in &ds {
                let d = r.delta.unwrap_or(0.0);
                sum += d;
                points += 1;
                if d > 0.0 {
                    wins += 1;
                }
                levels.push(Level::of(r.level));
                min_delta = Some(min_delta.map_or(d, |m| m.min(d)));
                if max_at.as_ref().is_none_or(|m| d > m.delta_pp) {
                    max_at = Some(DeltaAt {
                        network: r.network.clone(),
                        subset: r.subset.clone(),
                        level: r.level,
                        delta_pp: d,
                    });
                }
            }
            pair_means.push(PairMean {
                network: n.network.clone(),
                subset: s.subset.clone(),
                levels: ds.len(),
                mean_delta_pp: sum / ds.len() as f64,
            });
        }
    }
    levels.sort();
    levels.dedup();
    let mut subsets: Vec<String> = Vec::new();
    for s in nets.iter().flat_map(|n| &n.subsets) {
        if !subsets.contains(&s.subset) {
            subsets.push(s.subset.clone());
        }
    }
    ReportSummary {
        mean_delta_pp: mean(pair_means.iter().map(|p| p.mean_delta_pp)),
        max_delta_pp: max_at.as_ref().map(|m| m.delta_pp),
        max_delta_at: max_at,
        min_delta_pp: min_delta,
        pairs: pair_means.len(),
        levels: levels.len(),
        points,
        aware_wins: wins,
        pair_means,
        cells: cells.len(),
        skipped_cells: cells.iter().filter(|c| c.pipe().is_none()).count(),
        networks: nets.iter().map(|n| n.network.clone()).collect(),
        subsets,
        definition: DEFINITION.to_string(),
        files: Vec::new(),
    }
}

/// The summary of a set of cells, without writing anything.
pub fn summarize_cells(cells: &[Cell]) -> ReportSummary {
    let nets = group(cells);
    let rows = delta_rows(&nets);
    summarize(cells, &nets, &rows)
}

/// The rows of `deltas.csv` for a set of cells.
pub fn deltas(cells: &[Cell]) -> Vec<DeltaRow> {
    delta_rows(&group(cells))
}

// ------------------------------------------------------------------------------------------------
// Writing

/// Write the report of `cells` into `out_dir` (created if missing) and return its summary.
pub fn write_report(cells: &[Cell], out_dir: &Path) -> Result<ReportSummary> {
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let nets = group(cells);
    let rows = delta_rows(&nets);
    let mut summary = summarize(cells, &nets, &rows);

    let mut files = vec![DELTAS_CSV.to_string(), SUMMARY_JSON.to_string(), REPORT_MD.to_string()];
    write_deltas(&out_dir.join(DELTAS_CSV), &rows)?;

    let mut plots = Vec::new();
    for n in &nets {
        let stem = plot_stem(&n.network);
        let level_stem = format!("acc_vs_level_{stem}");
        let gops_stem = format!("acc_vs_gops_{stem}");
        write_plot(out_dir, &level_stem, &LevelPlot(n))?;
        write_plot(out_dir, &gops_stem, &GopsPlot(n))?;
        for s in [&level_stem, &gops_stem] {
            files.push(format!("{s}.svg"));
            files.push(format!("{s}.png"));
        }
        plots.push((level_stem, gops_stem));
    }
    summary.files = files;

    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| Error::file(out_dir.join(SUMMARY_JSON), e.to_string()))?;
    write_text(&out_dir.join(SUMMARY_JSON), &(json + "\n"))?;
    write_text(&out_dir.join(REPORT_MD), &markdown(&summary, &nets, &plots))?;
    Ok(summary)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Round for the CSV, so that it reads 72.3 and not 72.30000000000001.
fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn write_deltas(path: &Path, rows: &[DeltaRow]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    for r in rows {
        let rounded = DeltaRow {
            aware: r.aware.map(round4),
            agnostic: r.agnostic.map(round4),
            delta: r.delta.map(round4),
            unpruned: r.unpruned.map(round4),
            aware_std: r.aware_std.map(round4),
            agnostic_std: r.agnostic_std.map(round4),
            ..r.clone()
        };
        w.serialize(&rounded).map_err(|e| Error::file(path, e.to_string()))?;
    }
    if rows.is_empty() {
        // csv writes the header only with the first record: write it by hand.
        w.write_record([
            "network",
            "subset",
            "level",
            "aware",
            "agnostic",
            "delta",
            "unpruned",
            "aware_std",
            "agnostic_std",
            "aware_seeds",
            "agnostic_seeds",
        ])
        .map_err(|e| Error::file(path, e.to_string()))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// A network's name as a file-name part: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn plot_stem(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') { format!("_{s}") } else { s }
}

// ------------------------------------------------------------------------------------------------
// Markdown

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

fn acc_cell(p: Option<&Point>) -> String {
    match p.and_then(|p| p.top1) {
        Some(s) if s.n > 1 => format!("{:.2} ± {:.2} (n={})", s.mean, s.std, s.n),
        Some(s) => format!("{:.2}", s.mean),
        None => "-".to_string(),
    }
}

fn signed(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:+.2}"))
}

/// "aware / agnostic" where both exist and differ, else whichever exists.
fn pair_cell(a: Option<f64>, g: Option<f64>, digits: usize) -> String {
    match (a, g) {
        (Some(a), Some(g)) if format!("{a:.digits$}") == format!("{g:.digits$}") => format!("{a:.digits$}"),
        (Some(a), Some(g)) => format!("{a:.digits$} / {g:.digits$}"),
        (Some(a), None) => format!("{a:.digits$} / -"),
        (None, Some(g)) => format!("- / {g:.digits$}"),
        (None, None) => "-".to_string(),
    }
}

fn energy_cell(e: Option<Energy>) -> String {
    match e {
        Some(Energy::Joules(j)) => format!("{j:.1}"),
        Some(Energy::Unavailable) => "unavailable".to_string(),
        None => "-".to_string(),
    }
}

fn markdown(summary: &ReportSummary, nets: &[NetworkData], plots: &[(String, String)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Sweep report: data-aware vs data-agnostic pruning and retraining\n");
    let _ = writeln!(
        md,
        "{} cells; networks: {}; subsets: {}. Accuracies are test top-1 on the subset's test images, in %, \
         means over seeds (± sample std and the number of seeds where more than one). Deltas are in \
         percentage points (pp).\n",
        summary.cells,
        if summary.networks.is_empty() { "-".to_string() } else { summary.networks.join(", ") },
        if summary.subsets.is_empty() { "-".to_string() } else { summary.subsets.join(", ") },
    );

    if summary.skipped_cells > 0 {
        let _ = writeln!(
            md,
            "{} cells were left out: their `pipeline` is none of aware, agnostic, unpruned.\n",
            summary.skipped_cells
        );
    }
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "For each (subset, network) pair and each pruning level p where both pipelines have a result:\n\n\
         `delta(p) = aware(p) - agnostic(p)`\n\n\
         `mean delta = mean over pairs ( mean over p ( delta(p) ) )`, `max delta = max over pairs and p ( delta(p) )`\n"
    );
    let _ = writeln!(md, "| quantity | value |\n|---|---|");
    let _ = writeln!(md, "| mean delta | {} pp |", signed(summary.mean_delta_pp));
    let where_max = summary
        .max_delta_at
        .as_ref()
        .map(|m| format!(" ({}, {}, level {}%)", m.network, m.subset, Level::of(m.level)))
        .unwrap_or_default();
    let _ = writeln!(md, "| max delta | {} pp{where_max} |", signed(summary.max_delta_pp));
    let _ = writeln!(md, "| min delta | {} pp |", signed(summary.min_delta_pp));
    let _ = writeln!(md, "| (subset, network) pairs | {} |", summary.pairs);
    let _ = writeln!(md, "| levels | {} |", summary.levels);
    let _ = writeln!(
        md,
        "| aware beat agnostic | {} of {} (subset, network, level) points |",
        summary.aware_wins, summary.points
    );
    let _ = writeln!(md);
    if !summary.pair_means.is_empty() {
        let _ = writeln!(md, "| network | subset | levels | mean delta (pp) |\n|---|---|---|---|");
        for p in &summary.pair_means {
            let _ = writeln!(md, "| {} | {} | {} | {:+.2} |", p.network, p.subset, p.levels, p.mean_delta_pp);
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Per-level deltas: [{DELTAS_CSV}]({DELTAS_CSV}); this summary as JSON: [{SUMMARY_JSON}]({SUMMARY_JSON}).\n"
    );

    for (n, (level_stem, gops_stem)) in nets.iter().zip(plots) {
        let _ = writeln!(md, "## {}\n", n.network);
        let _ = writeln!(md, "![accuracy vs pruning level]({level_stem}.svg)\n");
        let _ = writeln!(md, "![accuracy vs GOps]({gops_stem}.svg)\n");
        let _ = writeln!(md, "PNG: [{level_stem}.png]({level_stem}.png), [{gops_stem}.png]({gops_stem}.png)\n");
        for s in &n.subsets {
            let _ = writeln!(md, "### {} / {}\n", n.network, s.subset);
            let unpruned = acc_cell(s.unpruned.as_ref());
            let levels = s.levels();
            if levels.is_empty() {
                let _ = writeln!(md, "Unpruned: {unpruned}. No pruned cells yet.\n");
                continue;
            }
            let _ = writeln!(
                md,
                "| level (%) | aware | agnostic | unpruned | delta (pp) | params removed % (aware / agnostic) | GOps after (aware / agnostic) |\n\
                 |---|---|---|---|---|---|---|"
            );
            for level in levels {
                let aw = s.aware.get(&level);
                let ag = s.agnostic.get(&level);
                let delta = aw.and_then(Point::acc).zip(ag.and_then(Point::acc)).map(|(a, g)| a - g);
                let _ = writeln!(
                    md,
                    "| {level} | {} | {} | {unpruned} | {} | {} | {} |",
                    acc_cell(aw),
                    acc_cell(ag),
                    signed(delta),
                    pair_cell(aw.and_then(|p| p.params_removed_percent), ag.and_then(|p| p.params_removed_percent), 1),
                    pair_cell(aw.and_then(|p| p.gops_after), ag.and_then(|p| p.gops_after), 4),
                );
            }
            let _ = writeln!(md);
        }
        costs_table(&mut md, n);
    }
    md
}

fn costs_table(md: &mut String, n: &NetworkData) {
    let mut rows = Vec::new();
    for s in &n.subsets {
        if let Some(p) = &s.unpruned
            && p.costs.any()
        {
            rows.push((s.subset.as_str(), Pipe::Unpruned, Level(0), p));
        }
        for level in s.levels() {
            for (pipeline, map) in [(Pipe::Aware, &s.aware), (Pipe::Agnostic, &s.agnostic)] {
                if let Some(p) = map.get(&level)
                    && p.costs.any()
                {
                    rows.push((s.subset.as_str(), pipeline, level, p));
                }
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "### {}: device costs\n", n.network);
    let _ = writeln!(
        md,
        "Means over seeds. Times in ms unless marked; inference per image at batch 1 and 128, with the model \
         before and after pruning.\n"
    );
    let _ = writeln!(
        md,
        "| subset | pipeline | level (%) | train step before | train step after | prune (s) | data per batch | \
         infer b1 before | infer b1 after | infer b128 before | infer b128 after | peak RSS (MiB) | energy (J) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (subset, pipeline, level, p) in rows {
        let c = &p.costs;
        let _ = writeln!(
            md,
            "| {subset} | {pipeline} | {level} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt(c.train_step_ms_before, 2),
            opt(c.train_step_ms_after, 2),
            opt(c.prune_seconds, 3),
            opt(c.data_ms_per_batch, 2),
            opt(c.infer_b1_before, 3),
            opt(c.infer_b1_after, 3),
            opt(c.infer_b128_before, 3),
            opt(c.infer_b128_after, 3),
            opt(c.peak_rss_mib, 1),
            energy_cell(c.energy),
        );
    }
    let _ = writeln!(md);
}

// ------------------------------------------------------------------------------------------------
// Plots

const PLOT_SIZE: (u32, u32) = (1000, 640);
const FONT: &str = "sans-serif";

/// Tableau 10: one colour per subset.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Register the embedded DejaVu Sans as the plots' font, once. Both backends lay text out with it.
fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
                .and_then(|()| plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()))
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
        })
        .clone()
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A chart that can be drawn on any plotters backend.
trait Plot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static;
}

/// Draw `plot` as `<stem>.svg` and `<stem>.png` in `dir`.
fn write_plot<P: Plot>(dir: &Path, stem: &str, plot: &P) -> Result<()> {
    let svg_path = dir.join(format!("{stem}.svg"));
    let png_path = dir.join(format!("{stem}.png"));
    ensure_font().map_err(|e| Error::file(&png_path, e))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        plot.draw(&root).map_err(|e| Error::file(&svg_path, format!("drawing: {e}")))?;
        root.present().map_err(|e| Error::file(&svg_path, format!("drawing: {e}")))?;
    }
    write_text(&svg_path, &svg)?;

    let (w, h) = PLOT_SIZE;
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, PLOT_SIZE).into_drawing_area();
        plot.draw(&root).map_err(|e| Error::file(&png_path, format!("drawing: {e}")))?;
        root.present().map_err(|e| Error::file(&png_path, format!("drawing: {e}")))?;
    }
    image::save_buffer_with_format(&png_path, &buf, w, h, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .map_err(|e| Error::file(&png_path, e.to_string()))
}

/// The unpruned model in a chart: a horizontal line at its accuracy, or a point (GOps, accuracy).
#[derive(Clone, Copy, Debug)]
enum Reference {
    Line(f64),
    Point(f64, f64),
}

/// A subset's points for the plots: (x, accuracy %) pairs per pipeline, and the unpruned model.
struct Series {
    subset: String,
    color: RGBColor,
    aware: Vec<(f64, f64)>,
    agnostic: Vec<(f64, f64)>,
    unpruned: Option<Reference>,
}

fn series(
    n: &NetworkData,
    x: impl Fn(Level, &Point) -> Option<f64>,
    reference: impl Fn(&SubsetData) -> Option<Reference>,
) -> Vec<Series> {
    n.subsets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let pts = |m: &BTreeMap<Level, Point>| -> Vec<(f64, f64)> {
                m.iter().filter_map(|(l, p)| Some((x(*l, p)?, p.acc()?))).collect()
            };
            Series {
                subset: s.subset.clone(),
                color: PALETTE[i % PALETTE.len()],
                aware: pts(&s.aware),
                agnostic: pts(&s.agnostic),
                unpruned: reference(s),
            }
        })
        .collect()
}

/// An axis range around `values`, padded by `pad` of its span, within `[lo, hi]`.
fn padded(values: impl IntoIterator<Item = f64>, pad: f64, lo: f64, hi: f64, empty: (f64, f64)) -> (f64, f64) {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return empty;
    }
    let mn = v.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = (mx - mn).max(1e-9);
    let (mut a, mut b) = ((mn - pad * span).max(lo), (mx + pad * span).min(hi));
    if b - a < 1e-6 {
        a = (mn - 1.0).max(lo);
        b = (mx + 1.0).min(hi);
        if b - a < 1e-6 {
            b = a + 1.0;
        }
    }
    (a, b)
}

/// The accuracy axis: every accuracy of the network's points, with a margin.
fn acc_range(n: &NetworkData) -> (f64, f64) {
    let accs = n
        .subsets
        .iter()
        .flat_map(|s| s.aware.values().chain(s.agnostic.values()).chain(s.unpruned.iter()).filter_map(Point::acc));
    padded(accs, 0.08, 0.0, 100.0, (0.0, 100.0))
}

fn solid(c: RGBColor) -> ShapeStyle {
    c.stroke_width(2)
}

/// Draw the pruned pipelines' series: aware solid with filled circles, agnostic dashed with
/// triangles; legend entries "<subset> aware" and "<subset> agnostic".
/// A tick label: at most 6 decimals, trailing zeros dropped (10, 72.5, 0.005).
fn tick(v: &f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// What a chart shows besides its series.
struct Frame<'a> {
    title: String,
    x_desc: &'a str,
    x: (f64, f64),
    y: (f64, f64),
    legend: SeriesLabelPosition,
}

/// Draw a chart: per subset, aware solid with filled circles, agnostic dashed with triangles, the
/// unpruned model dotted (a line) or a cross (a point); legend entries "<subset> <pipeline>".
fn draw_chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, frame: Frame<'_>, ss: &[Series]) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (x0, x1) = frame.x;
    let mut chart = ChartBuilder::on(root)
        .caption(frame.title, (FONT, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, frame.y.0..frame.y.1)?;
    chart
        .configure_mesh()
        .x_desc(frame.x_desc)
        .y_desc("top-1 accuracy on the subset (%)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(BLACK.mix(0.03))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for s in ss {
        let color = s.color;
        if !s.aware.is_empty() {
            chart
                .draw_series(LineSeries::new(s.aware.iter().copied(), solid(color)))?
                .label(format!("{} aware", s.subset))
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (24, 0)], solid(color))
                        + Circle::new((12, 0), 4, color.filled())
                });
            chart.draw_series(s.aware.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        if !s.agnostic.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(s.agnostic.iter().copied(), 8, 5, solid(color)))?
                .label(format!("{} agnostic", s.subset))
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + DashedPathElement::new(vec![(0, 0), (24, 0)], 6, 3, solid(color))
                        + TriangleMarker::new((12, 0), 5, color.filled())
                });
            chart.draw_series(s.agnostic.iter().map(|&p| TriangleMarker::new(p, 5, color.filled())))?;
        }
        match s.unpruned {
            Some(Reference::Line(acc)) => {
                chart
                    .draw_series(DashedLineSeries::new(vec![(x0, acc), (x1, acc)], 2, 5, solid(color)))?
                    .label(format!("{} unpruned", s.subset))
                    .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 2, 4, solid(color)));
            }
            Some(Reference::Point(g, acc)) => {
                let style = color.stroke_width(3);
                chart
                    .draw_series(std::iter::once(Cross::new((g, acc), 7, style)))?
                    .label(format!("{} unpruned", s.subset))
                    .legend(move |(x, y)| Cross::new((x + 12, y), 6, style));
            }
            None => {}
        }
    }
    chart
        .configure_series_labels()
        .position(frame.legend)
        .legend_area_size(30)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.6))
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// Accuracy vs pruning level, one colour per subset; the unpruned model as a dotted line.
struct LevelPlot<'a>(&'a NetworkData);

impl Plot for LevelPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.0;
        let ss = series(n, |l, _| Some(l.pct()), |s| s.unpruned.as_ref().and_then(Point::acc).map(Reference::Line));
        let max_level = n.subsets.iter().flat_map(|s| s.levels()).map(Level::pct).fold(0.0, f64::max);
        let frame = Frame {
            title: format!("{}: test top-1 on the subset vs pruning level", n.network),
            x_desc: "pruning level (% of parameters removed)",
            x: (0.0, (max_level + 5.0).clamp(10.0, 100.0)),
            y: acc_range(n),
            legend: SeriesLabelPosition::LowerLeft,
        };
        draw_chart(root, frame, &ss)
    }
}

/// Accuracy vs inference GOps: aware and agnostic points at their `gops_after`, the unpruned model
/// at `gops_before`.
struct GopsPlot<'a>(&'a NetworkData);

impl Plot for GopsPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.0;
        let mut ss = series(
            n,
            |_, p| p.gops_after,
            |s| Some(Reference::Point(s.gops_unpruned()?, s.unpruned.as_ref().and_then(Point::acc)?)),
        );
        for s in &mut ss {
            s.aware.sort_by(|a, b| a.0.total_cmp(&b.0));
            s.agnostic.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let xs = ss.iter().flat_map(|s| {
            let r = match s.unpruned {
                Some(Reference::Point(g, _)) => Some(g),
                _ => None,
            };
            s.aware.iter().chain(&s.agnostic).map(|p| p.0).chain(r)
        });
        let (_, x1) = padded(xs, 0.05, 0.0, f64::INFINITY, (0.0, 1.0));
        let frame = Frame {
            title: format!("{}: test top-1 on the subset vs inference GOps", n.network),
            x_desc: "inference GOps per image (after pruning; unpruned: before)",
            x: (0.0, x1),
            y: acc_range(n),
            legend: SeriesLabelPosition::LowerRight,
        };
        draw_chart(root, frame, &ss)
    }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(network: &str, subset: &str, pipeline: Pipe, level: f64, seed: u64, top1: Option<f64>) -> Cell {
        Cell {
            network: network.into(),
            subset: subset.into(),
            pipeline: pipeline.to_string(),
            level,
            seed,
            criterion: "paper".into(),
            params_before: Some(1000.0),
            params_after: Some(1000.0 * (1.0 - level / 100.0)),
            params_removed_percent: Some(level),
            gops_before: Some(0.04),
            gops_after: Some(0.04 * (1.0 - level / 100.0)),
            test_top1: top1,
            val_top1: top1,
            best_epoch: Some(10.0),
            epochs: Some(30.0),
            seconds: Some(1.0),
            ..Cell::default()
        }
    }

    /// Known answers:
    /// - (A, s1): level 10: aware seeds 0.8 and 0.6 (mean 70), agnostic 0.5 -> +20;
    ///   level 20: aware 0.6, agnostic 0.55 -> +5; pair mean 12.5.
    /// - (A, s2): level 10: aware 0.4, agnostic 0.5 -> -10; level 20: aware only -> no delta;
    ///   pair mean -10.
    /// - (B, s1): aware only -> no pair.
    /// - mean = (12.5 - 10) / 2 = 1.25; max = 20 at (A, s1, 10); 3 points, 2 wins, 2 levels.
    fn known() -> Vec<Cell> {
        use Pipe::*;
        vec![
            cell("A", "s1", Unpruned, 0.0, 0, Some(0.3)),
            cell("A", "s1", Aware, 10.0, 0, Some(0.8)),
            cell("A", "s1", Aware, 10.0, 1, Some(0.6)),
            cell("A", "s1", Agnostic, 10.0, 0, Some(0.5)),
            cell("A", "s1", Aware, 20.0, 0, Some(0.6)),
            cell("A", "s1", Agnostic, 20.0, 0, Some(0.55)),
            cell("A", "s2", Aware, 10.0, 0, Some(0.4)),
            cell("A", "s2", Agnostic, 10.0, 0, Some(0.5)),
            cell("A", "s2", Aware, 20.0, 0, Some(0.45)),
            cell("B", "s1", Aware, 10.0, 0, Some(0.9)),
        ]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn deltas_average_seeds_and_skip_missing_pipelines() {
        let rows = deltas(&known());
        let find = |n: &str, s: &str, l: f64| {
            rows.iter().find(|r| r.network == n && r.subset == s && close(r.level, l)).expect("row")
        };
        let r = find("A", "s1", 10.0);
        assert!(close(r.aware.unwrap(), 70.0));
        assert!(close(r.agnostic.unwrap(), 50.0));
        assert!(close(r.delta.unwrap(), 20.0));
        assert!(close(r.unpruned.unwrap(), 30.0));
        assert_eq!((r.aware_seeds, r.agnostic_seeds), (2, 1));
        // sample std of 80 and 60
        assert!(close(r.aware_std.unwrap(), 200f64.sqrt()));
        assert_eq!(r.agnostic_std, None);
        assert!(close(find("A", "s1", 20.0).delta.unwrap(), 5.0));
        assert!(close(find("A", "s2", 10.0).delta.unwrap(), -10.0));
        let half = find("A", "s2", 20.0);
        assert_eq!((half.agnostic, half.delta, half.unpruned), (None, None, None));
        assert!(close(half.aware.unwrap(), 45.0));
        assert_eq!(find("B", "s1", 10.0).delta, None);
        assert_eq!(rows.len(), 5);
    }

    #[test]
    fn summary_is_mean_over_pairs_of_mean_over_levels() {
        let s = summarize_cells(&known());
        assert!(close(s.mean_delta_pp.unwrap(), 1.25), "{:?}", s.mean_delta_pp);
        assert!(close(s.max_delta_pp.unwrap(), 20.0));
        let at = s.max_delta_at.unwrap();
        assert_eq!((at.network.as_str(), at.subset.as_str()), ("A", "s1"));
        assert!(close(at.level, 10.0));
        assert!(close(s.min_delta_pp.unwrap(), -10.0));
        assert_eq!((s.pairs, s.levels, s.points, s.aware_wins), (2, 2, 3, 2));
        assert_eq!(s.pair_means.len(), 2);
        assert!(close(s.pair_means[0].mean_delta_pp, 12.5));
        assert!(close(s.pair_means[1].mean_delta_pp, -10.0));
        assert_eq!(s.networks, vec!["A", "B"]);
        assert_eq!(s.subsets, vec!["s1", "s2"]);
        assert_eq!(s.cells, 10);
    }

    #[test]
    fn only_aware_cells_give_no_deltas() {
        let cells: Vec<Cell> = known().into_iter().filter(|c| c.pipe() == Some(Pipe::Aware)).collect();
        let s = summarize_cells(&cells);
        assert_eq!((s.mean_delta_pp, s.max_delta_pp, s.pairs, s.points), (None, None, 0, 0));
        let dir = tempfile::tempdir().unwrap();
        let s2 = write_report(&cells, dir.path()).unwrap();
        assert_eq!(s2.mean_delta_pp, None);
        let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
        assert!(md.contains("| mean delta | - pp |"), "{md}");
    }

    #[test]
    fn empty_sweep_writes_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let s = write_report(&[], dir.path()).unwrap();
        assert_eq!((s.pairs, s.cells), (0, 0));
        let csv = std::fs::read_to_string(dir.path().join(DELTAS_CSV)).unwrap();
        assert!(csv.starts_with("network,subset,level,aware,agnostic,delta,unpruned"));
    }

    #[test]
    fn levels_are_one_key_however_written() {
        assert_eq!(Level::of(5.0), Level::of(5.0000001));
        assert_eq!(Level::of(12.5).to_string(), "12.5");
        assert_eq!(Level::of(50.0).to_string(), "50");
    }

    const HEADER: &str = "network,subset,pipeline,level,seed,criterion,params_before,params_after,\
        params_removed_percent,gops_before,gops_after,test_top1,val_top1,best_epoch,epochs,seconds,\
        train_step_ms_before,train_step_ms_after,prune_seconds,data_ms_per_batch,\
        infer_ms_per_image_b1_before,infer_ms_per_image_b1_after,infer_ms_per_image_b128_before,\
        infer_ms_per_image_b128_after,peak_rss_bytes,energy_joules";

    #[test]
    fn reads_cells_with_missing_fields_and_unavailable_energy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cells.csv");
        let text = format!(
            "{HEADER}\n\
             resnet20,vehicles,aware,50,0,paper,278324,139000,50.06,0.041,0.02,0.9125,0.91,12,30,100.5,\
             10.5,6.25,0.8,1.2,0.5,0.3,0.05,0.03,1073741824,unavailable\n\
             resnet20,vehicles,unpruned,0,0,,278324,278324,0,0.041,0.041,0.5,,,,,,,,,,,,,,\n\
             resnet20,vehicles,agnostic,50,1,paper,278324,139000,50.1,0.041,0.02,0.8,0.8,20,30,90,,,,,,,,,,12.5\n"
        );
        std::fs::write(&p, text).unwrap();
        let cells = read_cells(&p).unwrap();
        assert_eq!(cells.len(), 3);
        assert_eq!(cells[0].pipe(), Some(Pipe::Aware));
        assert_eq!(cells[0].energy(), Some(Energy::Unavailable));
        assert_eq!(cells[0].peak_rss_bytes, Some(1073741824.0));
        assert_eq!(cells[1].criterion, "");
        assert_eq!(cells[1].val_top1, None);
        assert_eq!(cells[1].energy(), None);
        assert_eq!(cells[2].energy(), Some(Energy::Joules(12.5)));
        let s = summarize_cells(&cells);
        assert!(close(s.mean_delta_pp.unwrap(), 91.25 - 80.0));
    }

    #[test]
    fn bad_rows_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cells.csv");
        let good = "resnet20,vehicles,aware,50,0,paper,1,1,1,1,1,0.9,0.9,1,1,1,,,,,,,,,,";
        std::fs::write(
            &p,
            format!("{HEADER}\n{good}\nresnet20,vehicles,aware,50,0,paper,1,1,1,1,1,high,,,,,,,,,,,,,,\n"),
        )
        .unwrap();
        let e = read_cells(&p).unwrap_err().to_string();
        assert!(e.contains("cells.csv") && e.contains("line 3") && e.contains("`test_top1` = `high`"), "{e}");

        std::fs::write(&p, format!("{HEADER}\n{good}\n{good}\nresnet20,vehicles,clever,50,0,,,,,,,,,,,,,,,,,,,,,\n"))
            .unwrap();
        let e = read_cells(&p).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("pipeline"), "{e}");

        std::fs::write(&p, format!("{HEADER}\nresnet20,vehicles,aware,50,0,paper,1,1,1,1,1,91.2,,,,,,,,,,,,,,\n"))
            .unwrap();
        let e = read_cells(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("fraction"), "{e}");

        std::fs::write(&p, format!("{HEADER}\nresnet20,vehicles,aware\n")).unwrap();
        let e = read_cells(&p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");

        std::fs::write(&p, "network,subset,level\nresnet20,vehicles,50\n").unwrap();
        let e = read_cells(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`pipeline`"), "{e}");

        let e = read_cells(&dir.path().join("absent.csv")).unwrap_err().to_string();
        assert!(e.contains("absent.csv"), "{e}");
    }

    #[test]
    fn cells_round_trip_through_csv() {
        let cells = known();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cells.csv");
        let mut w = csv::Writer::from_path(&p).unwrap();
        for c in &cells {
            w.serialize(c).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        assert_eq!(read_cells(&p).unwrap(), cells);
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(plot_stem("resnet20"), "resnet20");
        assert_eq!(plot_stem("mobilenet v2/x"), "mobilenet_v2_x");
        assert_eq!(plot_stem(".."), "_..");
    }
}
