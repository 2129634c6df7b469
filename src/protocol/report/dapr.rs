//! The DaPR searches' figures: each probe's accuracy against the search's cumulative cost (its
//! retraining compute in TOps, and its measured seconds), with the unpruned model's accuracy
//! that a probe must reach, each point labelled with its level. Read from the JSON files
//! `edgeprune search` writes (`search-<network>-<subset>.json` in the sweep folder).
//!
//! A `cost_opt` search runs the first probes of the `memory_opt` one on the same cells; where a
//! (network, subset) has both, the figure draws `memory_opt` (the longer walk), and the CSV has
//! both.
//!
//! With the latency of the found networks (`bench sweep-latency` in the searches' folder), each
//! search is also set against inference time: how many images the network it found must infer
//! before the time it saves adds up to the search's own ([`payback`]).

use super::*;
use crate::protocol::latency::LatencyRow;
use crate::protocol::search::{Mode, SearchResult};

pub const SEARCH_CSV: &str = "search_cost.csv";

/// Reads every `*.json` in `dirs` (or the files themselves) that is a search result; other JSON
/// files in a folder are passed over, a named file that is not one is refused.
pub fn read(paths: &[std::path::PathBuf]) -> Result<Vec<SearchResult>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                let text = crate::formats::read_text(&f)?;
                if let Ok(r) = serde_json::from_str::<SearchResult>(&text) {
                    out.push(r);
                }
            }
        } else {
            let text = crate::formats::read_text(p)?;
            out.push(
                serde_json::from_str(&text)
                    .map_err(|e| Error::file(p, format!("not a search result of `edgeprune search`: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// One probe with the search's cost so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct ProbeRow<'a> {
    network: &'a str,
    subset: &'a str,
    mode: Mode,
    pipeline: String,
    probe: usize,
    level: f64,
    skipped: bool,
    test_top1: Option<f64>,
    reaches_reference: bool,
    reference_top1: f64,
    cumulative_seconds: f64,
    cumulative_retrain_tops: Option<f64>,
}

fn rows(r: &SearchResult) -> Vec<ProbeRow<'_>> {
    let (mut secs, mut tops) = (0.0, Some(0.0));
    r.probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            secs += p.seconds;
            tops = match (tops, p.retrain_gops, p.skipped) {
                (t, _, true) => t,
                (Some(t), Some(g), false) => Some(t + g / 1e3),
                _ => None,
            };
            ProbeRow {
                network: &r.network,
                subset: &r.subset,
                mode: r.mode,
                pipeline: r.pipeline.to_string(),
                probe: i + 1,
                level: p.level,
                skipped: p.skipped,
                test_top1: p.test_top1,
                reaches_reference: p.reaches_reference,
                reference_top1: r.reference_top1,
                cumulative_seconds: round4(secs),
                cumulative_retrain_tops: tops.map(round4),
            }
        })
        .collect()
}

pub(super) fn write_csv(path: &Path, searches: &[SearchResult]) -> Result<()> {
    let header = [
        "network",
        "subset",
        "mode",
        "pipeline",
        "probe",
        "level",
        "skipped",
        "test_top1",
        "reaches_reference",
        "reference_top1",
        "cumulative_seconds",
        "cumulative_retrain_tops",
    ];
    write_rows(path, &header, &searches.iter().flat_map(rows).collect::<Vec<_>>())
}

/// `rows` as CSV at `path`; with no rows, `header` alone (csv writes a header only with the first
/// record).
fn write_rows<T: Serialize>(path: &Path, header: &[&str], rows: &[T]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    if rows.is_empty() {
        w.write_record(header).map_err(|e| Error::file(path, e.to_string()))?;
    }
    for r in rows {
        w.serialize(r).map_err(|e| Error::file(path, e.to_string()))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// The searches a network's figure draws: per subset and pipeline `memory_opt` where there is
/// one, else `cost_opt`.
pub(super) fn drawn<'a>(searches: &'a [SearchResult], network: &str) -> Vec<&'a SearchResult> {
    let mut out: Vec<&SearchResult> = Vec::new();
    for s in searches.iter().filter(|s| s.network == network) {
        match out.iter().position(|o| o.subset == s.subset && o.pipeline == s.pipeline) {
            Some(i) if out[i].mode == Mode::CostOpt && s.mode == Mode::MemoryOpt => out[i] = s,
            Some(_) => {}
            None => out.push(s),
        }
    }
    out
}

/// Which cost a search figure has on its x axis.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Cost {
    Tops,
    Seconds,
}

/// Probe accuracy (%) against the search's cumulative cost, one curve per subset, and the
/// unpruned accuracy each must reach as a dotted line.
pub(super) struct SearchPlot<'a> {
    pub(super) network: &'a str,
    pub(super) searches: Vec<&'a SearchResult>,
    pub(super) cost: Cost,
}

impl Plot for SearchPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let mut curves = Vec::new();
        let mut refs = Vec::new();
        for (i, s) in self.searches.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let (points, labels): (Vec<(f64, f64)>, Vec<String>) = rows(s)
                .iter()
                .filter_map(|r| {
                    let x = match self.cost {
                        Cost::Tops => r.cumulative_retrain_tops?,
                        Cost::Seconds => r.cumulative_seconds,
                    };
                    Some(((x, 100.0 * r.test_top1?), format!("{}%", tick(&r.level))))
                })
                .unzip();
            let label = match s.pipeline {
                Pipe::AwareUnlabeled => format!("{} label-free ({})", s.subset, mode_name(s.mode)),
                _ => format!("{} ({})", s.subset, mode_name(s.mode)),
            };
            curves.push(Curve { label, color, mark: Mark::Circle, points, labels });
            refs.push((format!("{} unpruned", s.subset), color, 100.0 * s.reference_top1));
        }
        let (_, x1) =
            padded(curves.iter().flat_map(|c| c.points.iter().map(|p| p.0)), 0.05, 0.0, f64::INFINITY, (0.0, 1.0));
        let ys = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)).chain(refs.iter().map(|r| r.2));
        let frame = Frame {
            title: format!("{}: DaPR probe accuracy vs cumulative search cost", self.network),
            x_desc: match self.cost {
                Cost::Tops => "cumulative retraining compute of the search (TOps)",
                Cost::Seconds => "cumulative seconds of the search (measured)",
            },
            y_desc: ACC_DESC,
            x: (0.0, x1),
            y: padded(ys, 0.08, 0.0, 100.0, (0.0, 100.0)),
            legend: SeriesLabelPosition::LowerRight,
        };
        draw_xy(root, frame, &curves, &refs)
    }
}

pub const PAYBACK_CSV: &str = "search_payback.csv";

/// A search against the inference time of the network it found: how many images that network
/// must infer before the time it saves per image (unpruned minus found, at batch 1) adds up to
/// the search's seconds. Latencies are the rows `bench sweep-latency` measured for the search's
/// cells (None where there is no row, or no level was found).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct PaybackRow {
    pub(super) network: String,
    pub(super) subset: String,
    pub(super) mode: Mode,
    pub(super) pipeline: String,
    pub(super) seed: u64,
    pub(super) level_found: Option<f64>,
    pub(super) probes: usize,
    pub(super) search_seconds: f64,
    pub(super) runtime: Option<String>,
    pub(super) ms_per_image_unpruned: Option<f64>,
    pub(super) ms_per_image_found: Option<f64>,
    /// Unpruned over found latency.
    pub(super) speedup: Option<f64>,
    /// None where the found network is not faster (it never pays back) or a latency is missing.
    pub(super) break_even_images: Option<f64>,
    /// The search's seconds in inferences of the found network.
    pub(super) search_in_inferences: Option<f64>,
    /// The probes' retraining as the device's training-cost table predicts it on an idle device
    /// (None where a probe that ran has no prediction), and the break-even on it: measured
    /// seconds include whatever else the machine was doing.
    pub(super) predicted_retrain_seconds: Option<f64>,
    pub(super) predicted_break_even_images: Option<f64>,
}

pub(super) fn payback(searches: &[SearchResult], latency: &[LatencyRow]) -> Vec<PaybackRow> {
    searches
        .iter()
        .map(|s| {
            let pipeline = s.pipeline.to_string();
            let row = s.level.and_then(|level| {
                latency.iter().find(|r| {
                    r.network == s.network
                        && r.subset == s.subset
                        && r.pipeline == pipeline
                        && r.seed == s.seed
                        && (r.level - level).abs() < 1e-6
                        && r.ms_per_image_before.is_finite()
                        && r.ms_per_image_after.is_finite()
                        && r.ms_per_image_after > 0.0
                })
            });
            let (before, after) = (row.map(|r| r.ms_per_image_before), row.map(|r| r.ms_per_image_after));
            let saved = row.map(|r| r.ms_per_image_before - r.ms_per_image_after);
            let predicted: Option<f64> =
                s.probes.iter().filter(|p| !p.skipped).map(|p| p.predicted_retrain_seconds).sum();
            let predicted = predicted.filter(|p| p.is_finite() && s.probes.iter().any(|p| !p.skipped));
            PaybackRow {
                network: s.network.clone(),
                subset: s.subset.clone(),
                mode: s.mode,
                pipeline,
                seed: s.seed,
                level_found: s.level,
                probes: s.probes.len(),
                search_seconds: round4(s.total_seconds),
                runtime: row.map(|r| r.runtime.clone()),
                ms_per_image_unpruned: before.map(round4),
                ms_per_image_found: after.map(round4),
                speedup: before.zip(after).map(|(b, a)| round4(b / a)),
                break_even_images: saved.filter(|d| *d > 0.0).map(|d| (1e3 * s.total_seconds / d).ceil()),
                search_in_inferences: after.map(|a| (1e3 * s.total_seconds / a).round()),
                predicted_retrain_seconds: predicted.map(round4),
                predicted_break_even_images: predicted
                    .zip(saved.filter(|d| *d > 0.0))
                    .map(|(p, d)| (1e3 * p / d).ceil()),
            }
        })
        .collect()
}

pub(super) fn write_payback_csv(path: &Path, rows: &[PaybackRow]) -> Result<()> {
    let header = [
        "network",
        "subset",
        "mode",
        "pipeline",
        "seed",
        "level_found",
        "probes",
        "search_seconds",
        "runtime",
        "ms_per_image_unpruned",
        "ms_per_image_found",
        "speedup",
        "break_even_images",
        "search_in_inferences",
        "predicted_retrain_seconds",
        "predicted_break_even_images",
    ];
    write_rows(path, &header, rows)
}

/// A count of images in words: 950, 12.3k, 4.56M.
fn images(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.3}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

pub(super) fn payback_markdown(rows: &[PaybackRow]) -> String {
    let mut md = format!(
        "## DaPR: search time vs inference time\n\nA search pays for itself once the network it found has inferred \
         so many images that the time it saves per image (the unpruned network's latency minus the found one's, at \
         batch 1, timed by `edgeprune bench sweep-latency` in the folder the search ran in) adds up to the search's \
         seconds (its probes' pruning, retraining and evaluation, measured where the search ran; the fine-tune the \
         probes share is left out, as the data-aware pipeline runs it whether it searches or not). Where the device \
         has a training-cost table, the probes' retraining as it predicts it on an idle device, and the break-even on \
         that (retraining only: the probes' pruning and evaluation left out). Rows: [{PAYBACK_CSV}]({PAYBACK_CSV}).\n\n\
         | network | subset | mode | level found | probes | search seconds | unpruned ms/image | found ms/image | speed-up | break-even images | search in inferences of the found network | predicted retraining seconds | break-even on them |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    for r in rows {
        let label = if r.pipeline == "aware" { r.subset.clone() } else { format!("{} ({})", r.subset, r.pipeline) };
        let be = match (r.break_even_images, r.ms_per_image_found) {
            (Some(n), _) => images(n),
            (None, Some(_)) => "never (not faster)".to_string(),
            (None, None) => "-".to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {label} | {} | {} | {} | {:.0} | {} | {} | {} | {be} | {} | {} | {} |",
            r.network,
            mode_name(r.mode),
            r.level_found.map_or("none".to_string(), |l| format!("{}%", tick(&l))),
            r.probes,
            r.search_seconds,
            f(r.ms_per_image_unpruned, 3),
            f(r.ms_per_image_found, 3),
            r.speedup.map_or("-".to_string(), |v| format!("{v:.2}x")),
            r.search_in_inferences.map_or("-".to_string(), images),
            f(r.predicted_retrain_seconds, 0),
            r.predicted_break_even_images.map_or("-".to_string(), images),
        );
    }
    if rows.iter().all(|r| r.ms_per_image_found.is_none()) {
        md += "\nNo latency row matches a search's found network here: time them with `edgeprune bench sweep-latency \
               --sweep DIR` in the folder the searches ran in, and give that folder to `report --search`.\n";
    }
    md + "\n"
}

/// Per search with a break-even: the seconds the found network has saved, less the search's,
/// against the images it has inferred (a straight line from minus the search's seconds, through
/// zero at the break-even). memory_opt solid with circles, cost_opt dashed with triangles.
pub(super) struct PaybackPlot<'a> {
    pub(super) network: &'a str,
    pub(super) rows: &'a [PaybackRow],
}

impl Plot for PaybackPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let rows: Vec<&PaybackRow> =
            self.rows.iter().filter(|r| r.network == self.network && r.break_even_images.is_some()).collect();
        let mut subsets: Vec<&str> = rows.iter().map(|r| r.subset.as_str()).collect();
        subsets.sort_unstable();
        subsets.dedup();
        // x in millions of images, to one and a half times the latest break-even.
        let x1 = 1.5 * rows.iter().filter_map(|r| r.break_even_images).fold(0.0, f64::max) / 1e6;
        let x1 = if x1 > 0.0 { x1 } else { 1.0 };
        let curves: Vec<Curve> = rows
            .iter()
            .filter_map(|r| {
                let (b, a, n) = (r.ms_per_image_unpruned?, r.ms_per_image_found?, r.break_even_images?);
                let i = subsets.iter().position(|s| *s == r.subset).unwrap_or(0);
                let net = |x: f64| x * 1e6 * (b - a) / 1e3 - r.search_seconds;
                Some(Curve {
                    label: format!("{} ({}, {}%)", r.subset, mode_name(r.mode), tick(&r.level_found?)),
                    color: PALETTE[i % PALETTE.len()],
                    mark: if r.mode == Mode::MemoryOpt { Mark::Circle } else { Mark::Triangle },
                    points: vec![(0.0, net(0.0)), (n / 1e6, 0.0), (x1, net(x1))],
                    // The break-evens are in the table: labels at the crossings would overlap.
                    labels: vec![String::new(); 3],
                })
            })
            .collect();
        let ys = curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)).chain([0.0]);
        let frame = Frame {
            title: format!("{}: DaPR search time vs inference time saved", self.network),
            x_desc: "images inferred by the found network (millions)",
            y_desc: "seconds saved less the search's seconds",
            x: (0.0, x1),
            y: padded(ys, 0.08, f64::NEG_INFINITY, f64::INFINITY, (-1.0, 1.0)),
            // The lines rise from below zero at the left: the upper left is free.
            legend: SeriesLabelPosition::UpperLeft,
        };
        draw_xy(root, frame, &curves, &[("break-even".to_string(), BLACK, 0.0)])
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::MemoryOpt => "memory_opt",
        Mode::CostOpt => "cost_opt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::search::Probe;

    fn probe(level: f64, top1: Option<f64>, seconds: f64, gops: Option<f64>, skipped: bool) -> Probe {
        Probe {
            level,
            test_top1: top1,
            reaches_reference: top1.is_some_and(|t| t >= 0.8),
            skipped,
            epochs: 10.0,
            seconds,
            predicted_retrain_seconds: None,
            retrain_seconds: None,
            retrain_gops: gops,
        }
    }

    fn search(mode: Mode, probes: Vec<Probe>) -> SearchResult {
        SearchResult {
            network: "resnet20".into(),
            subset: "pets".into(),
            mode,
            pipeline: Pipe::Aware,
            seed: 0,
            reference_top1: 0.8,
            level: Some(50.0),
            max_retrain_minutes: None,
            probes,
            total_epochs: 0.0,
            total_seconds: 0.0,
            total_retrain_gops: None,
        }
    }

    #[test]
    fn costs_accumulate_over_probes_and_a_skipped_probe_adds_no_compute() {
        let s = search(
            Mode::MemoryOpt,
            vec![
                probe(50.0, Some(0.85), 30.0, Some(2000.0), false),
                probe(75.0, None, 0.5, None, true),
                probe(60.0, Some(0.79), 20.0, Some(1000.0), false),
            ],
        );
        let r = rows(&s);
        assert_eq!(r.iter().map(|r| r.cumulative_seconds).collect::<Vec<_>>(), vec![30.0, 30.5, 50.5]);
        assert_eq!(
            r.iter().map(|r| r.cumulative_retrain_tops).collect::<Vec<_>>(),
            vec![Some(2.0), Some(2.0), Some(3.0)]
        );
        // A probe whose compute is unknown leaves the rest unknown.
        let s = search(
            Mode::MemoryOpt,
            vec![probe(50.0, Some(0.9), 1.0, None, false), probe(75.0, Some(0.9), 1.0, Some(5.0), false)],
        );
        assert_eq!(rows(&s).iter().map(|r| r.cumulative_retrain_tops).collect::<Vec<_>>(), vec![None, None]);
    }

    #[test]
    fn a_figure_draws_memory_opt_over_cost_opt_of_the_same_subset() {
        let c = search(Mode::CostOpt, vec![probe(50.0, Some(0.85), 1.0, Some(1.0), false)]);
        let m = search(Mode::MemoryOpt, vec![probe(50.0, Some(0.85), 1.0, Some(1.0), false)]);
        for order in [vec![c.clone(), m.clone()], vec![m.clone(), c.clone()]] {
            let d = drawn(&order, "resnet20");
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].mode, Mode::MemoryOpt);
        }
        assert!(drawn(&[c], "alexnet").is_empty());
    }

    fn lat(subset: &str, level: f64, seed: u64, before: f64, after: f64) -> LatencyRow {
        LatencyRow {
            network: "resnet20".into(),
            subset: subset.into(),
            pipeline: "aware".into(),
            level,
            seed,
            runtime: "onnxruntime".into(),
            ms_per_image_before: before,
            ms_per_image_after: after,
        }
    }

    #[test]
    fn the_break_even_is_the_search_seconds_over_the_time_saved_per_image() {
        let mut s = search(Mode::MemoryOpt, vec![probe(50.0, Some(0.85), 30.0, None, false)]);
        s.total_seconds = 300.0;
        // Rows of another level, another seed and another subset must not be taken.
        let rows = [
            lat("pets", 40.0, 0, 1.0, 0.2),
            lat("pets", 50.0, 1, 1.0, 0.2),
            lat("vehicles", 50.0, 0, 1.0, 0.2),
            lat("pets", 50.0, 0, 1.0, 0.4),
        ];
        let p = payback(std::slice::from_ref(&s), &rows);
        assert_eq!(p.len(), 1);
        let r = &p[0];
        assert_eq!((r.ms_per_image_unpruned, r.ms_per_image_found), (Some(1.0), Some(0.4)));
        // 300 s over 0.6 ms saved per image: 500,000 images; the search is 750,000 inferences.
        assert_eq!(r.break_even_images, Some(500_000.0));
        assert_eq!(r.search_in_inferences, Some(750_000.0));
        assert_eq!(r.speedup, Some(2.5));
        // No probe has a prediction: none is claimed; with one, the break-even on it.
        assert_eq!((r.predicted_retrain_seconds, r.predicted_break_even_images), (None, None));
        let mut t = s.clone();
        t.probes[0].predicted_retrain_seconds = Some(60.0);
        let p = payback(&[t], &rows);
        assert_eq!((p[0].predicted_retrain_seconds, p[0].predicted_break_even_images), (Some(60.0), Some(100_000.0)));
        // A found network that is not faster never pays back; without a row nothing is claimed.
        let p = payback(std::slice::from_ref(&s), &[lat("pets", 50.0, 0, 1.0, 1.1)]);
        assert_eq!(p[0].break_even_images, None);
        assert!(payback_markdown(&p).contains("never (not faster)"));
        let p = payback(std::slice::from_ref(&s), &[]);
        assert_eq!((p[0].ms_per_image_found, p[0].break_even_images), (None, None));
        assert!(payback_markdown(&p).contains("No latency row"));
        // A search that found no level has no network to time.
        s.level = None;
        assert_eq!(payback(&[s], &rows)[0].ms_per_image_found, None);
    }

    #[test]
    fn a_report_with_timed_searches_writes_the_payback_table_and_figure() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = search(Mode::MemoryOpt, vec![probe(50.0, Some(0.85), 30.0, Some(2.0), false)]);
        s.total_seconds = 30.0;
        let cells = vec![Cell {
            network: "resnet20".into(),
            subset: "pets".into(),
            pipeline: "aware".into(),
            level: 50.0,
            test_top1: Some(0.85),
            ..Cell::default()
        }];
        let extras = Extras { searches: vec![s], latency: vec![lat("pets", 50.0, 0, 1.0, 0.5)], ..Extras::default() };
        let summary = write_report_with(&cells, &extras, dir.path()).unwrap();
        for f in [PAYBACK_CSV, "search_payback_resnet20.svg", "search_payback_resnet20.png"] {
            assert!(summary.files.iter().any(|x| x == f), "{f} not in {:?}", summary.files);
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let csv = std::fs::read_to_string(dir.path().join(PAYBACK_CSV)).unwrap();
        assert!(csv.lines().nth(1).unwrap().contains(",60000.0,"), "{csv}");
        let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
        assert!(md.contains("search time vs inference time") && md.contains("| 60.0k |"), "{md}");
    }

    #[test]
    fn a_named_file_that_is_not_a_search_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("other.json");
        std::fs::write(&f, "{\"a\": 1}").unwrap();
        let e = read(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(e.contains("other.json"), "{e}");
        // In a folder it is passed over; a search result is read.
        let s = search(Mode::CostOpt, vec![probe(50.0, Some(0.85), 1.0, Some(1.0), false)]);
        std::fs::write(dir.path().join("search.json"), serde_json::to_string(&s).unwrap()).unwrap();
        let got = read(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].subset, "pets");
    }
}
