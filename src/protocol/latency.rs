//! The inference latency of a sweep's networks, measured after the sweep on a quiet machine
//! (`edgeprune bench sweep-latency`): a sweep that ran beside other work (`measure_costs =
//! false`) has no device costs, but a pruned network's latency depends only on its shape, which
//! the cell's plan gives. Each finished cell's plan (the grid's cells, and the probes of the DaPR
//! searches whose results are in the folder) is applied to the original network and the
//! result timed at batch 1 in a runtime (the deployed one: ONNX Runtime), as a cell with
//! `measure_costs` times it; identical plans are timed once. The rows go to `latency.csv` in the
//! sweep folder, and `report` sets the cells' batch-1 latency columns from it, for the
//! accuracy-vs-latency figure: one runtime and one quiet measurement for every cell, in place of
//! whatever the cells measured (the fair ResNet-20 sweep's first cells timed themselves beside
//! other training: 6.5 ms per image for the unpruned network, 0.9 ms on a quiet machine).

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::pipeline::{self, CellDir, CellId};
use super::recipe::Recipe;
use super::report::Cell;
use crate::error::{Error, Result};
use crate::surgery::Plan;

pub const LATENCY_CSV: &str = "latency.csv";

/// One cell's networks timed: the original and the cell's, in ms per image at batch 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    pub network: String,
    pub subset: String,
    pub pipeline: String,
    pub level: f64,
    pub seed: u64,
    pub runtime: String,
    pub ms_per_image_before: f64,
    pub ms_per_image_after: f64,
}

/// Times every finished cell of the sweep in `root` (see the module) in `runtime`; `steps` timed
/// inferences (after 5 untimed) per network, the median kept. `progress(done, total)` after each.
pub fn measure(
    recipe: &Recipe,
    root: &Path,
    runtime: crate::engine::Runtime,
    steps: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<LatencyRow>> {
    let device = recipe.device;
    crate::engine::set_threads(recipe.threads);
    let time = |m: &crate::ir::Model| -> Result<f64> {
        let r = crate::metrics::bench::infer(m, 1, steps.max(1), 5, device, runtime)?;
        let ms = 1e3 * r.step_seconds.median;
        if !ms.is_finite() || ms <= 0.0 {
            return Err(Error::Engine(format!("{}: the measured latency is {ms} ms", m.graph.name)));
        }
        Ok(ms)
    };
    let mut cells: Vec<CellId> = pipeline::cells(recipe).into_iter().filter(|id| pipeline::is_done(root, id)).collect();
    // DaPR's probes (`search` into this folder) are cells too, at levels the grid may not have:
    // their networks are timed as well, for the search's payback (`report`).
    for id in search_probes(root)? {
        if pipeline::is_done(root, &id) && !cells.contains(&id) {
            cells.push(id);
        }
    }
    let mut rows = Vec::new();
    let mut originals: HashMap<String, (crate::ir::Model, f64)> = HashMap::new();
    let mut timed: HashMap<(String, String), f64> = HashMap::new();
    for (i, id) in cells.iter().enumerate() {
        let (net, subset, pipe, level, seed, plan) = match id {
            CellId::Unpruned { net, subset } => (net, subset, "unpruned", 0, 0, None),
            CellId::Aware { net, subset, level, seed } => {
                (net, subset, "aware", *level, *seed, Some(CellDir::of(root, id).plan()))
            }
            CellId::AwareUnlabeled { net, subset, level, seed } => {
                (net, subset, "aware-unlabeled", *level, *seed, Some(CellDir::of(root, id).plan()))
            }
            CellId::Agnostic { net, subset, level, seed } => {
                let train = CellId::AgnosticTrain { net: net.clone(), level: *level, seed: *seed };
                (net, subset, "agnostic", *level, *seed, Some(CellDir::of(root, &train).plan()))
            }
            CellId::FineTune { .. } | CellId::FineTuneUnlabeled { .. } | CellId::AgnosticTrain { .. } => continue,
        };
        if !originals.contains_key(net) {
            let spec = recipe
                .networks
                .iter()
                .find(|n| &n.name == net)
                .ok_or_else(|| Error::config("networks", format!("the recipe has no network `{net}`")))?;
            let m = crate::formats::load_model(&spec.model)?;
            let ms = time(&m)?;
            originals.insert(net.clone(), (m, ms));
        }
        let (original, before) = &originals[net];
        let after = match plan {
            None => *before,
            Some(p) => {
                let plan = Plan::load(&p)?;
                let key = (net.clone(), plan.to_json());
                match timed.get(&key) {
                    Some(ms) => *ms,
                    None => {
                        let pruned = crate::surgery::apply(original, &plan)
                            .map_err(|e| Error::file(&p, format!("the plan does not apply to {net}: {e}")))?;
                        let ms = time(&pruned)?;
                        timed.insert(key, ms);
                        ms
                    }
                }
            }
        };
        rows.push(LatencyRow {
            network: net.clone(),
            subset: subset.clone(),
            pipeline: pipe.to_string(),
            level: level as f64 / 100.0,
            seed,
            runtime: runtime.to_string(),
            ms_per_image_before: *before,
            ms_per_image_after: after,
        });
        progress(i + 1, cells.len());
    }
    Ok(rows)
}

/// The cells the DaPR searches in `root` (their `search-*.json`) ran as probes, skipped ones left out.
fn search_probes(root: &Path) -> Result<Vec<CellId>> {
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    for s in super::report::dapr::read(&[root.to_path_buf()])? {
        for p in s.probes.iter().filter(|p| !p.skipped) {
            let (net, subset, level, seed) =
                (s.network.clone(), s.subset.clone(), (p.level * 100.0).round() as u32, s.seed);
            out.push(match s.pipeline {
                super::Pipeline::AwareUnlabeled => CellId::AwareUnlabeled { net, subset, level, seed },
                _ => CellId::Aware { net, subset, level, seed },
            });
        }
    }
    Ok(out)
}

pub fn write(path: &Path, rows: &[LatencyRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| Error::file(path, e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| Error::file(path, e.to_string()))?;
    crate::formats::native::write_atomic(path, &bytes)
}

pub fn read(path: &Path) -> Result<Vec<LatencyRow>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    r.deserialize()
        .enumerate()
        .map(|(i, row)| row.map_err(|e| Error::file(path, format!("line {}: {e}", i + 2))))
        .collect()
}

/// Sets the batch-1 latency columns of `cells` from `rows` (same network, subset, pipeline,
/// level and seed), replacing what a cell measured itself; a cell without a row keeps its own
/// (and is counted apart). Returns (cells set, cells left with a latency of their own).
pub fn fill(cells: &mut [Cell], rows: &[LatencyRow]) -> (usize, usize) {
    let key = |n: &str, s: &str, p: &str, l: f64, seed: u64| {
        (n.to_string(), s.to_string(), p.to_string(), (l * 100.0).round() as i64, seed)
    };
    let by: HashMap<_, &LatencyRow> =
        rows.iter().map(|r| (key(&r.network, &r.subset, &r.pipeline, r.level, r.seed), r)).collect();
    let (mut set, mut own) = (0, 0);
    for c in cells.iter_mut() {
        match by.get(&key(&c.network, &c.subset, &c.pipeline, c.level, c.seed)) {
            Some(r) => {
                c.infer_ms_per_image_b1_before = Some(r.ms_per_image_before);
                c.infer_ms_per_image_b1_after = Some(r.ms_per_image_after);
                set += 1;
            }
            None if c.infer_ms_per_image_b1_after.is_some() => own += 1,
            None => {}
        }
    }
    (set, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pipeline: &str, level: f64, seed: u64, after: f64) -> LatencyRow {
        LatencyRow {
            network: "resnet20".into(),
            subset: "pets".into(),
            pipeline: pipeline.into(),
            level,
            seed,
            runtime: "ort".into(),
            ms_per_image_before: 1.0,
            ms_per_image_after: after,
        }
    }

    #[test]
    fn fill_matches_cells_and_replaces_what_a_cell_measured() {
        let cell = |pipeline: &str, level: f64, seed: u64, measured: Option<f64>| Cell {
            network: "resnet20".into(),
            subset: "pets".into(),
            pipeline: pipeline.into(),
            level,
            seed,
            infer_ms_per_image_b1_after: measured,
            ..Cell::default()
        };
        let mut cells = vec![
            cell("aware", 50.0, 0, None),
            cell("aware", 50.0, 1, Some(0.9)),
            cell("agnostic", 30.0, 0, None),
            cell("aware", 70.0, 0, Some(0.3)),
        ];
        let rows = [row("aware", 50.0, 0, 0.5), row("aware", 50.0, 1, 0.4), row("agnostic", 50.0, 0, 0.6)];
        assert_eq!(fill(&mut cells, &rows), (2, 1));
        assert_eq!(cells[0].infer_ms_per_image_b1_after, Some(0.5));
        assert_eq!(cells[0].infer_ms_per_image_b1_before, Some(1.0));
        assert_eq!(cells[1].infer_ms_per_image_b1_after, Some(0.4), "the measurement afterwards replaces the cell's");
        assert_eq!(cells[2].infer_ms_per_image_b1_after, None, "no row for that level");
        assert_eq!(cells[3].infer_ms_per_image_b1_after, Some(0.3), "no row: the cell keeps its own");
    }

    #[test]
    fn rows_round_trip_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(LATENCY_CSV);
        let rows = vec![row("aware", 50.0, 0, 0.5), row("unpruned", 0.0, 0, 1.0)];
        write(&p, &rows).unwrap();
        assert_eq!(read(&p).unwrap(), rows);
        let text = std::fs::read_to_string(&p).unwrap() + "resnet20,pets,aware,x,0,ort,1,1\n";
        std::fs::write(&p, text).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains(LATENCY_CSV), "{e}");
    }
}
