//! The DaPR searches' figures: each probe's accuracy against the search's cumulative cost (its
//! retraining compute in TOps, and its measured seconds), with the unpruned model's accuracy
//! that a probe must reach, each point labelled with its level. Read from the JSON files
//! `edgeprune search` writes (`search-<network>-<subset>.json` in the sweep folder).
//!
//! A `cost_opt` search runs the first probes of the `memory_opt` one on the same cells; where a
//! (network, subset) has both, the figure draws `memory_opt` (the longer walk), and the CSV has
//! both.

use super::*;
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
    let mut w = csv::Writer::from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    let all: Vec<ProbeRow> = searches.iter().flat_map(rows).collect();
    if all.is_empty() {
        w.write_record([
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
        ])
        .map_err(|e| Error::file(path, e.to_string()))?;
    }
    for r in all {
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
