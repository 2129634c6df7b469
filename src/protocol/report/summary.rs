//! The aware - agnostic deltas and the paper's summary of a sweep.

use super::*;

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
    /// The label-free pipeline (`aware-unlabeled`), where the sweep ran it: its accuracy, std and
    /// seeds, and its gap to the labelled aware pipeline (`aware_unlabeled - aware`, pp).
    pub aware_unlabeled: Option<f64>,
    pub aware_unlabeled_std: Option<f64>,
    pub aware_unlabeled_seeds: usize,
    pub unlabeled_gap: Option<f64>,
}

/// The paper's summary restricted to one network, with its spread over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkSummary {
    pub network: String,
    /// (subset) pairs and (subset, level) points with a delta.
    pub pairs: usize,
    pub points: usize,
    /// Mean over the network's pairs of the pair's mean delta (means over seeds), and the
    /// largest single delta, in pp.
    pub mean_delta_pp: Option<f64>,
    pub max_delta_pp: Option<f64>,
    /// The same mean delta computed on each seed's cells alone (seed, pp), and its sample std
    /// over seeds (None below two seeds).
    pub seed_mean_deltas: Vec<(u64, f64)>,
    pub seed_std_pp: Option<f64>,
}

/// The paper's mean delta on each seed's cells alone, for `network` (all networks when None):
/// per seed, the mean over (network, subset) pairs of the mean over levels of aware - agnostic,
/// where both pipelines have that seed's cell.
pub fn seed_mean_deltas(cells: &[Cell], network: Option<&str>) -> Vec<(u64, f64)> {
    use std::collections::BTreeMap;
    let mut acc: BTreeMap<(u64, String, String, i64), [Option<f64>; 2]> = BTreeMap::new();
    for c in cells.iter().filter(|c| network.is_none_or(|n| c.network == n)) {
        let slot = match c.pipe() {
            Some(Pipe::Aware) => 0,
            Some(Pipe::Agnostic) => 1,
            _ => continue,
        };
        let Some(a) = c.test_top1.filter(|a| a.is_finite()) else { continue };
        let key = (c.seed, c.network.clone(), c.subset.clone(), Level::of(c.level).0);
        acc.entry(key).or_default()[slot] = Some(100.0 * a);
    }
    let mut pairs: BTreeMap<(u64, String, String), Vec<f64>> = BTreeMap::new();
    for ((seed, net, sub, _), [aw, ag]) in acc {
        if let (Some(aw), Some(ag)) = (aw, ag) {
            pairs.entry((seed, net, sub)).or_default().push(aw - ag);
        }
    }
    let mut seeds: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for ((seed, ..), ds) in pairs {
        seeds.entry(seed).or_default().push(ds.iter().sum::<f64>() / ds.len() as f64);
    }
    seeds.into_iter().map(|(s, m)| (s, m.iter().sum::<f64>() / m.len() as f64)).collect()
}

fn sample_std(v: &[f64]) -> Option<f64> {
    (v.len() > 1).then(|| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    })
}

fn network_summaries(
    cells: &[Cell],
    nets: &[NetworkData],
    rows: &[DeltaRow],
    pairs: &[PairMean],
) -> Vec<NetworkSummary> {
    nets.iter()
        .map(|n| {
            let mine: Vec<&PairMean> = pairs.iter().filter(|p| p.network == n.network).collect();
            let ds: Vec<f64> = rows.iter().filter(|r| r.network == n.network).filter_map(|r| r.delta).collect();
            let seeds = seed_mean_deltas(cells, Some(&n.network));
            let per: Vec<f64> = seeds.iter().map(|s| s.1).collect();
            NetworkSummary {
                network: n.network.clone(),
                pairs: mine.len(),
                points: ds.len(),
                mean_delta_pp: mean(mine.iter().map(|p| p.mean_delta_pp)),
                max_delta_pp: ds.iter().copied().reduce(f64::max),
                seed_std_pp: sample_std(&per),
                seed_mean_deltas: seeds,
            }
        })
        .collect()
}

/// How the label-free pipeline did against the labelled ones, over the points where both ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnlabeledSummary {
    /// (network, subset, level) points with both `aware-unlabeled` and `aware`.
    pub points: usize,
    /// Mean over those points of `aware_unlabeled - aware` (pp), with its sample std over points.
    pub mean_gap_pp: f64,
    pub gap_std_pp: Option<f64>,
    pub min_gap_pp: f64,
    pub max_gap_pp: f64,
    /// Points with both `aware-unlabeled` and `agnostic`, and those where the label-free one was
    /// strictly more accurate.
    pub points_vs_agnostic: usize,
    pub beats_agnostic: usize,
    /// Means over the label-free cells of the inferred subset's precision and recall against the
    /// true classes, and of the pseudo-labels' accuracy; cells counted.
    pub subset_precision: Option<f64>,
    pub subset_recall: Option<f64>,
    pub pseudo_label_accuracy: Option<f64>,
    pub cells: usize,
}

fn unlabeled_summary(cells: &[Cell], rows: &[DeltaRow]) -> Option<UnlabeledSummary> {
    let mine: Vec<&Cell> = cells.iter().filter(|c| c.pipe() == Some(Pipe::AwareUnlabeled)).collect();
    if mine.is_empty() {
        return None;
    }
    let gaps: Vec<f64> = rows.iter().filter_map(|r| r.unlabeled_gap).collect();
    let vs: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.aware_unlabeled.zip(r.agnostic)).collect();
    let n = gaps.len();
    let mean_gap = if n > 0 { gaps.iter().sum::<f64>() / n as f64 } else { f64::NAN };
    let std = (n > 1).then(|| (gaps.iter().map(|g| (g - mean_gap).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    Some(UnlabeledSummary {
        points: n,
        mean_gap_pp: mean_gap,
        gap_std_pp: std,
        min_gap_pp: gaps.iter().copied().fold(f64::INFINITY, f64::min),
        max_gap_pp: gaps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        points_vs_agnostic: vs.len(),
        beats_agnostic: vs.iter().filter(|(u, g)| u > g).count(),
        subset_precision: mean(mine.iter().filter_map(|c| c.subset_precision)),
        subset_recall: mean(mine.iter().filter_map(|c| c.subset_recall)),
        pseudo_label_accuracy: mean(mine.iter().filter_map(|c| c.pseudo_label_accuracy)),
        cells: mine.len(),
    })
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
    /// What the levels are percents of: `params`, `gops` or `latency` (see the recipe's `level_of`).
    pub level_of: String,
    /// The training budgets the cells name (one for a sweep of one recipe; none in sweeps from
    /// before the column).
    pub budgets: Vec<String>,
    /// Per (network, subset, pipeline), the mean training steps its cells took.
    pub train_steps: Vec<StepsRow>,
    /// Per network: the mean and max delta, and the mean delta's spread over seeds.
    #[serde(default)]
    pub per_network: Vec<NetworkSummary>,
    /// The mean delta on each seed's cells alone, over all networks, and its std over seeds.
    #[serde(default)]
    pub seed_mean_deltas: Vec<(u64, f64)>,
    #[serde(default)]
    pub seed_std_pp: Option<f64>,
    /// Every (network, subset, level) delta, for figures quoted at one point (pets at 50%).
    #[serde(default)]
    pub point_deltas: Vec<DeltaAt>,
    /// The label-free pipeline against the labelled ones, where the sweep ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlabeled: Option<UnlabeledSummary>,
    /// The formula, in words.
    pub definition: String,
    /// Files written, relative to the output folder.
    pub files: Vec<String>,
}

pub(super) const DEFINITION: &str = "For each (subset, network) pair, delta(p) = aware(p) - agnostic(p) in percentage points of \
     test top-1 on the subset (each a mean over seeds), at every level p where both pipelines have a result. \
     mean delta = mean over pairs of (mean over p of delta(p)); max delta = max over all pairs and levels of delta(p).";

pub(super) fn delta_rows(nets: &[NetworkData]) -> Vec<DeltaRow> {
    let mut rows = Vec::new();
    for n in nets {
        for s in &n.subsets {
            let unpruned = s.unpruned.as_ref().and_then(Point::acc);
            for level in s.levels() {
                let aw = s.at(Pipe::Aware).get(&level).and_then(|p| p.top1);
                let ag = s.at(Pipe::Agnostic).get(&level).and_then(|p| p.top1);
                let un = s.at(Pipe::AwareUnlabeled).get(&level).and_then(|p| p.top1);
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
                    aware_unlabeled: un.map(|s| s.mean),
                    aware_unlabeled_std: multi(un),
                    aware_unlabeled_seeds: un.map_or(0, |s| s.n),
                    unlabeled_gap: un.zip(aw).map(|(u, a)| u.mean - a.mean),
                });
            }
        }
    }
    rows
}

pub(super) fn summarize(cells: &[Cell], nets: &[NetworkData], rows: &[DeltaRow]) -> ReportSummary {
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
    let per_network = network_summaries(cells, nets, rows, &pair_means);
    let overall_seeds = seed_mean_deltas(cells, None);
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
        level_of: level_of(cells).unwrap_or(LevelOf::Params).to_string(),
        budgets: budgets(cells),
        train_steps: steps_rows(cells),
        per_network,
        point_deltas: rows
            .iter()
            .filter_map(|r| {
                let d = r.delta?;
                Some(DeltaAt { network: r.network.clone(), subset: r.subset.clone(), level: r.level, delta_pp: d })
            })
            .collect(),
        seed_std_pp: sample_std(&overall_seeds.iter().map(|s| s.1).collect::<Vec<_>>()),
        seed_mean_deltas: overall_seeds,
        unlabeled: unlabeled_summary(cells, rows),
        definition: DEFINITION.to_string(),
        files: Vec::new(),
    }
}

/// The training steps of one (network, subset, pipeline), over its cells that record them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepsRow {
    pub network: String,
    pub subset: String,
    pub pipeline: String,
    pub mean_steps: f64,
    pub cells: usize,
}

/// The distinct non-empty budgets of the cells, in order of first appearance.
fn budgets(cells: &[Cell]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        let b = c.budget.trim();
        if !b.is_empty() && !out.iter().any(|o| o == b) {
            out.push(b.to_string());
        }
    }
    out
}

/// Mean training steps per (network, subset, pipeline), in order of first appearance.
fn steps_rows(cells: &[Cell]) -> Vec<StepsRow> {
    let mut out: Vec<StepsRow> = Vec::new();
    for c in cells {
        let Some(steps) = c.train_steps.filter(|s| s.is_finite()) else { continue };
        match out.iter_mut().find(|r| r.network == c.network && r.subset == c.subset && r.pipeline == c.pipeline) {
            Some(r) => {
                r.mean_steps += (steps - r.mean_steps) / (r.cells + 1) as f64;
                r.cells += 1;
            }
            None => out.push(StepsRow {
                network: c.network.clone(),
                subset: c.subset.clone(),
                pipeline: c.pipeline.clone(),
                mean_steps: steps,
                cells: 1,
            }),
        }
    }
    out
}

/// What the pruned cells' levels are percents of: one kind for a whole sweep (an empty column is
/// `params`, as in sweeps from before it); `None` where they mix kinds or name none known.
pub(super) fn level_of(cells: &[Cell]) -> Option<LevelOf> {
    let mut kinds = cells
        .iter()
        .filter(|c| matches!(c.pipe(), Some(Pipe::Aware | Pipe::AwareUnlabeled | Pipe::Agnostic)))
        .map(|c| {
            let t = c.level_of.trim();
            if t.is_empty() { Ok(LevelOf::Params) } else { t.parse::<LevelOf>() }
        });
    let first = kinds.next().unwrap_or(Ok(LevelOf::Params)).ok()?;
    kinds.all(|k| k.is_ok_and(|k| k == first)).then_some(first)
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
