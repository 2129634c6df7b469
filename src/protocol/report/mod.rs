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
//! - per network, `acc_vs_level_<network>.{svg,png}` and `acc_vs_gops_<network>.{svg,png}`;
//! - where cells have a measured batch-1 latency (measured by the cells, or filled from
//!   `latency.csv`, see `protocol::latency`): per network `acc_vs_latency_<network>.{svg,png}`;
//! - with the sweep's plans ([`Extras::channels`], `channels::collect`): `channel_sets.csv` and
//!   per network `channel_sets_<network>.{svg,png}`, how far the pruned channels move between
//!   epoch 0 and n_f and between seeds;
//! - with DaPR search results ([`Extras::searches`]): `search_cost.csv` and per network
//!   `search_tops_<network>` and `search_seconds_<network>` (SVG, PNG), each probe's accuracy
//!   against the search's cumulative cost; and `search_payback.csv` with per network
//!   `search_payback_<network>` (SVG, PNG): the search's seconds against the inference time the
//!   network it found saves, from the latency rows ([`Extras::latency`]) of its cells.
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

use super::recipe::LevelOf;
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
    /// What `level` is a percent of: `params` (also when empty, as in sweeps from before the
    /// column), `gops` or `latency` (see the recipe's `level_of`).
    pub level_of: String,
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
    /// The training budget the sweep used, in words (see the recipe's `epoch_fraction` and
    /// `max_batches`); empty in sweeps from before the column.
    pub budget: String,
    /// Training steps (batches) the pipeline took on its way to this model: fine-tuning and
    /// retraining for `aware`, retraining on all classes for `agnostic`, none for `unpruned`.
    pub train_steps: Option<f64>,
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
    /// Label-free cells: the classes the teacher inferred (names, space-separated), their
    /// precision and recall against the true subset, and the share of the local images whose
    /// pseudo-label is right. Empty for the other pipelines.
    pub inferred_classes: String,
    pub subset_precision: Option<f64>,
    pub subset_recall: Option<f64>,
    pub pseudo_label_accuracy: Option<f64>,
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
            return Err(format!(
                "`pipeline` = `{}` is none of aware, aware-unlabeled, agnostic, unpruned",
                self.pipeline
            ));
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

mod aggregate;
pub mod channels;
pub mod dapr;
mod markdown;
mod plots;
mod summary;
#[cfg(test)]
mod tests;

use aggregate::*;
use markdown::*;
use plots::*;
use summary::*;
pub use summary::{DeltaAt, DeltaRow, PairMean, ReportSummary, StepsRow, deltas, summarize_cells};

/// What a report can show beyond its cells: the sweep's pruning plans compared, and DaPR searches.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub channels: Vec<channels::ChannelRow>,
    pub searches: Vec<crate::protocol::search::SearchResult>,
    /// Networks timed after the sweep (`bench sweep-latency`), DaPR's probes among them: the
    /// searches' payback is read from them.
    pub latency: Vec<crate::protocol::latency::LatencyRow>,
}

/// Write the report of `cells` into `out_dir` (created if missing) and return its summary.
pub fn write_report(cells: &[Cell], out_dir: &Path) -> Result<ReportSummary> {
    write_report_with(cells, &Extras::default(), out_dir)
}

/// As [`write_report`], with the figures of `extras` where it has any.
pub fn write_report_with(cells: &[Cell], extras: &Extras, out_dir: &Path) -> Result<ReportSummary> {
    let Some(level_of) = summary::level_of(cells) else {
        let mut kinds: Vec<&str> = cells.iter().map(|c| c.level_of.trim()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        return Err(Error::config(
            "level_of",
            format!(
                "the cells' levels are percents of different things ({}): one report takes one kind",
                kinds.iter().map(|k| if k.is_empty() { "params" } else { k }).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
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
        write_plot(out_dir, &level_stem, &LevelPlot(n, level_of), &mut files)?;
        write_plot(out_dir, &gops_stem, &GopsPlot(n), &mut files)?;
        plots.push((level_stem, gops_stem));
    }
    let mut md_extra = String::new();
    for n in nets.iter().filter(|n| LatencyPlot::any(n)) {
        let stem = format!("acc_vs_latency_{}", plot_stem(&n.network));
        write_plot(out_dir, &stem, &LatencyPlot(n), &mut files)?;
        let _ = writeln!(
            md_extra,
            "## {}: accuracy vs measured latency\n\nInference at batch 1, measured on the device (by the cells, or after the \
             sweep by `edgeprune bench sweep-latency`).\n\n![accuracy vs latency]({stem}.svg) ([PNG]({stem}.png))\n",
            n.network
        );
    }
    if !extras.channels.is_empty() {
        channels::write_csv(&out_dir.join(channels::CHANNELS_CSV), &extras.channels)?;
        files.push(channels::CHANNELS_CSV.to_string());
        let _ = writeln!(
            md_extra,
            "## How far the pruned channels move\n\nPer level, the difference between two pruning plans, \
             summed over the groups either prunes: 1 - |A ∩ B| / |A ∪ B| of the channels each removes (0: the same \
             channels; at most the number of groups). *epoch 0 vs n_f*: the data-agnostic plan (the original model \
             ranked at epoch 0) against each seed's data-aware plan (ranked after fine-tuning on the subset), \
             mean over seeds; *between seeds*: the data-aware plans of two seeds, mean over pairs. Rows: \
             [{}]({}).\n",
            channels::CHANNELS_CSV,
            channels::CHANNELS_CSV
        );
        let mut names: Vec<&str> = extras.channels.iter().map(|r| r.network.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for net in names {
            let stem = format!("channel_sets_{}", plot_stem(net));
            let rows = extras.channels.iter().filter(|r| r.network == net).collect();
            write_plot(out_dir, &stem, &channels::ChannelPlot { network: net, rows }, &mut files)?;
            let _ = writeln!(md_extra, "![{net}: channel sets]({stem}.svg) ([PNG]({stem}.png))\n");
        }
    }
    if !extras.searches.is_empty() {
        dapr::write_csv(&out_dir.join(dapr::SEARCH_CSV), &extras.searches)?;
        files.push(dapr::SEARCH_CSV.to_string());
        let _ = writeln!(
            md_extra,
            "## DaPR: accuracy vs cumulative search cost\n\nEach probe of the search in the order it ran, at the \
             search's cost so far: its retraining compute (3 x the pruned network's inference GOps x the images \
             retrained on) and its measured seconds; the dotted line is the unpruned accuracy a probe must reach. \
             Rows: [{}]({}).\n",
            dapr::SEARCH_CSV,
            dapr::SEARCH_CSV
        );
        let mut names: Vec<&str> = extras.searches.iter().map(|s| s.network.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for net in names {
            for (cost, what) in [(dapr::Cost::Tops, "tops"), (dapr::Cost::Seconds, "seconds")] {
                let stem = format!("search_{what}_{}", plot_stem(net));
                let plot = dapr::SearchPlot { network: net, searches: dapr::drawn(&extras.searches, net), cost };
                write_plot(out_dir, &stem, &plot, &mut files)?;
                let _ = writeln!(md_extra, "![{net}: search cost ({what})]({stem}.svg) ([PNG]({stem}.png))\n");
            }
        }
        let payback = dapr::payback(&extras.searches, &extras.latency);
        dapr::write_payback_csv(&out_dir.join(dapr::PAYBACK_CSV), &payback)?;
        files.push(dapr::PAYBACK_CSV.to_string());
        md_extra += &dapr::payback_markdown(&payback);
        let mut names: Vec<&str> =
            payback.iter().filter(|r| r.break_even_images.is_some()).map(|r| r.network.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for net in names {
            let stem = format!("search_payback_{}", plot_stem(net));
            write_plot(out_dir, &stem, &dapr::PaybackPlot { network: net, rows: &payback }, &mut files)?;
            let _ = writeln!(md_extra, "![{net}: search time vs inference time]({stem}.svg) ([PNG]({stem}.png))\n");
        }
    }
    summary.files = files;

    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| Error::file(out_dir.join(SUMMARY_JSON), e.to_string()))?;
    write_text(&out_dir.join(SUMMARY_JSON), &(json + "\n"))?;
    write_text(&out_dir.join(REPORT_MD), &(markdown(&summary, &nets, &plots) + &md_extra))?;
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
