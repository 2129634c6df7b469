//! Cells grouped by network, subset and pipeline, aggregated over seeds (mean and spread).

use super::*;

/// A pruning level as a key: thousandths of a percent, so that 5, 5.0 and 5.000 are one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Level(pub(super) i64);

impl Level {
    pub(super) fn of(pct: f64) -> Self {
        Level((pct * 1000.0).round() as i64)
    }
    pub(super) fn pct(self) -> f64 {
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
pub(super) struct Stat {
    pub(super) n: usize,
    pub(super) mean: f64,
    /// Sample (n - 1) standard deviation; 0 for a single value.
    pub(super) std: f64,
}

pub(super) fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let std = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { 0.0 };
    Some(Stat { n, mean, std })
}

pub(super) fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    stat(values).map(|s| s.mean)
}

/// One point (network, subset, pipeline, level): its cells averaged over seeds.
#[derive(Clone, Debug, Default)]
pub(super) struct Point {
    /// Test top-1 in percent.
    pub(super) top1: Option<Stat>,
    pub(super) params_removed_percent: Option<f64>,
    pub(super) gops_before: Option<f64>,
    pub(super) gops_after: Option<f64>,
    pub(super) costs: Costs,
}

/// The device costs of a point, means over seeds.
#[derive(Clone, Debug, Default)]
pub(super) struct Costs {
    pub(super) train_step_ms_before: Option<f64>,
    pub(super) train_step_ms_after: Option<f64>,
    pub(super) prune_seconds: Option<f64>,
    pub(super) data_ms_per_batch: Option<f64>,
    pub(super) infer_b1_before: Option<f64>,
    pub(super) infer_b1_after: Option<f64>,
    pub(super) infer_b128_before: Option<f64>,
    pub(super) infer_b128_after: Option<f64>,
    pub(super) peak_rss_mib: Option<f64>,
    pub(super) energy: Option<Energy>,
}

impl Costs {
    pub(super) fn any(&self) -> bool {
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
    pub(super) fn of(cells: &[&Cell]) -> Self {
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

    pub(super) fn acc(&self) -> Option<f64> {
        self.top1.map(|s| s.mean)
    }
}

/// One (network, subset): its points per pruned pipeline and level, and its unpruned reference.
#[derive(Clone, Debug, Default)]
pub(super) struct SubsetData {
    pub(super) subset: String,
    /// Per pruned pipeline (not `Unpruned`), its points by level.
    pub(super) pruned: BTreeMap<Pipe, BTreeMap<Level, Point>>,
    pub(super) unpruned: Option<Point>,
}

static NO_POINTS: BTreeMap<Level, Point> = BTreeMap::new();

impl SubsetData {
    /// The points of one pruned pipeline by level (empty if it has none).
    pub(super) fn at(&self, pipe: Pipe) -> &BTreeMap<Level, Point> {
        self.pruned.get(&pipe).unwrap_or(&NO_POINTS)
    }

    /// The levels where any pruned pipeline has a cell, ascending.
    pub(super) fn levels(&self) -> Vec<Level> {
        let mut l: Vec<Level> = self.pruned.values().flat_map(|m| m.keys()).copied().collect();
        l.sort();
        l.dedup();
        l
    }

    /// The original model's GOps: from the unpruned cells, else from any pruned cell's `gops_before`.
    pub(super) fn gops_unpruned(&self) -> Option<f64> {
        self.unpruned
            .as_ref()
            .and_then(|p| p.gops_before.or(p.gops_after))
            .or_else(|| self.pruned.values().flat_map(|m| m.values()).find_map(|p| p.gops_before))
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct NetworkData {
    pub(super) network: String,
    pub(super) subsets: Vec<SubsetData>,
}

/// All cells grouped: networks, then subsets, in order of first appearance in the CSV.
pub(super) fn group(cells: &[Cell]) -> Vec<NetworkData> {
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
            Pipe::Unpruned => d.unpruned = Some(p),
            pruned => {
                d.pruned.entry(*pruned).or_default().insert(*level, p);
            }
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
