//! How far the channels a pipeline prunes move: the paper's comparison of the channel sets pruned
//! at epoch 0 and at epoch n_f, and between seeds.
//!
//! For two plans of one network the difference is `sum over groups of 1 - |A ∩ B| / |A ∪ B|`,
//! where A and B are the channels each plan removes from the group (a group neither plan prunes
//! counts 0; one that one plan prunes and the other does not counts 1). Per (network, subset,
//! level) of a sweep:
//! - *epoch 0 against n_f*: the data-agnostic plan (the original model ranked at epoch 0, by the
//!   same criterion, to the same level) against the data-aware plan of each seed (the model
//!   ranked after its n_f fine-tuning epochs on the subset);
//! - *between seeds*: the data-aware plans of every two seeds.
//!
//! The plans are the cells' `plan.json`, so this needs the sweep folder, not only its cells.csv.

use super::*;
use crate::protocol::pipeline::{CellDir, CellId};
use crate::protocol::recipe::Recipe;
use crate::surgery::Plan;

pub const CHANNELS_CSV: &str = "channel_sets.csv";

/// One comparison of two plans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRow {
    pub network: String,
    pub subset: String,
    pub level: f64,
    /// `epoch0_vs_nf` or `between_seeds`.
    pub comparison: String,
    /// The data-aware plan's seed (for `epoch0_vs_nf`: the agnostic plan's is the same), and for
    /// `between_seeds` the other seed.
    pub seed: u64,
    pub other_seed: Option<u64>,
    /// The difference summed over groups (see the module).
    pub difference: f64,
    /// Groups pruned by either plan: the largest the difference can be.
    pub groups: usize,
}

pub const EPOCH0_VS_NF: &str = "epoch0_vs_nf";
pub const BETWEEN_SEEDS: &str = "between_seeds";

/// The difference of two plans of one network and the groups either prunes. An error names the
/// group whose sizes differ (plans of different networks).
pub fn difference(a: &Plan, b: &Plan) -> Result<(f64, usize)> {
    let removed = |p: &Plan| -> BTreeMap<String, (usize, Vec<bool>)> {
        p.groups
            .iter()
            .map(|g| {
                let mut gone = vec![true; g.size];
                for &k in g.keep.iter().filter(|&&k| k < g.size) {
                    gone[k] = false;
                }
                (g.name.clone(), (g.size, gone))
            })
            .collect()
    };
    let (ra, rb) = (removed(a), removed(b));
    let mut names: Vec<&String> = ra.keys().chain(rb.keys()).collect();
    names.sort();
    names.dedup();
    let (mut sum, mut groups) = (0.0, 0);
    for name in names {
        let (sa, ga) = ra.get(name).map_or((None, None), |(s, g)| (Some(*s), Some(g)));
        let (sb, gb) = rb.get(name).map_or((None, None), |(s, g)| (Some(*s), Some(g)));
        if let (Some(x), Some(y)) = (sa, sb)
            && x != y
        {
            return Err(Error::config(
                name.as_str(),
                format!("the plans give this group {x} and {y} channels: they are not plans of one network"),
            ));
        }
        let n = sa.or(sb).unwrap_or(0);
        let at = |g: Option<&Vec<bool>>, k: usize| g.is_some_and(|g| g[k]);
        let inter = (0..n).filter(|&k| at(ga, k) && at(gb, k)).count();
        let union = (0..n).filter(|&k| at(ga, k) || at(gb, k)).count();
        if union > 0 {
            sum += 1.0 - inter as f64 / union as f64;
            groups += 1;
        }
    }
    Ok((sum, groups))
}

/// Every comparison the sweep folder `root` of `recipe` has the plans for (cells not run yet are
/// left out).
pub fn collect(recipe: &Recipe, root: &Path) -> Result<Vec<ChannelRow>> {
    let load = |id: &CellId| -> Result<Option<Plan>> {
        let p = CellDir::of(root, id).plan();
        if p.is_file() { Plan::load(&p).map(Some) } else { Ok(None) }
    };
    let mut rows = Vec::new();
    for net in &recipe.networks {
        for subset in &recipe.subsets {
            for &level in &recipe.levels {
                let key = (level * 100.0).round() as u32;
                let mut aware = Vec::new();
                for &seed in &recipe.seeds {
                    let id = CellId::Aware { net: net.name.clone(), subset: subset.name.clone(), level: key, seed };
                    if let Some(p) = load(&id)? {
                        aware.push((seed, p));
                    }
                }
                let row = |comparison: &str, seed: u64, other_seed: Option<u64>, (difference, groups): (f64, usize)| {
                    ChannelRow {
                        network: net.name.clone(),
                        subset: subset.name.clone(),
                        level,
                        comparison: comparison.to_string(),
                        seed,
                        other_seed,
                        difference,
                        groups,
                    }
                };
                for (seed, p) in &aware {
                    let id = CellId::AgnosticTrain { net: net.name.clone(), level: key, seed: *seed };
                    if let Some(q) = load(&id)? {
                        rows.push(row(EPOCH0_VS_NF, *seed, None, difference(&q, p)?));
                    }
                }
                for (i, (sa, pa)) in aware.iter().enumerate() {
                    for (sb, pb) in &aware[i + 1..] {
                        rows.push(row(BETWEEN_SEEDS, *sa, Some(*sb), difference(pa, pb)?));
                    }
                }
            }
        }
    }
    Ok(rows)
}

pub(super) fn write_csv(path: &Path, rows: &[ChannelRow]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).map_err(|e| Error::file(path, e.to_string()))?;
    if rows.is_empty() {
        w.write_record(["network", "subset", "level", "comparison", "seed", "other_seed", "difference", "groups"])
            .map_err(|e| Error::file(path, e.to_string()))?;
    }
    for r in rows {
        w.serialize(ChannelRow { difference: round4(r.difference), ..r.clone() })
            .map_err(|e| Error::file(path, e.to_string()))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// One subset's curve of one comparison: (level, mean difference) points.
pub(super) type ChannelCurve = (String, &'static str, Vec<(f64, f64)>);

/// Per subset and comparison of one network, the mean difference over seeds (or seed pairs) at
/// each level.
pub(super) fn curves(rows: &[&ChannelRow]) -> Vec<ChannelCurve> {
    let mut subsets: Vec<&str> = Vec::new();
    for r in rows {
        if !subsets.contains(&r.subset.as_str()) {
            subsets.push(&r.subset);
        }
    }
    let mut out = Vec::new();
    for s in subsets {
        for kind in [EPOCH0_VS_NF, BETWEEN_SEEDS] {
            let mut at: BTreeMap<Level, Vec<f64>> = BTreeMap::new();
            for r in rows.iter().filter(|r| r.subset == s && r.comparison == kind) {
                at.entry(Level::of(r.level)).or_default().push(r.difference);
            }
            let pts: Vec<(f64, f64)> =
                at.into_iter().filter_map(|(l, v)| Some((l.pct(), aggregate::mean(v)?))).collect();
            if !pts.is_empty() {
                out.push((s.to_string(), kind, pts));
            }
        }
    }
    out
}

/// The channel-set differences of one network against the pruning level.
pub(super) struct ChannelPlot<'a> {
    pub(super) network: &'a str,
    pub(super) rows: Vec<&'a ChannelRow>,
}

impl Plot for ChannelPlot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PlotResult
    where
        DB::ErrorType: 'static,
    {
        let cs = curves(&self.rows);
        let mut colors: Vec<&str> = Vec::new();
        let curves: Vec<Curve> = cs
            .iter()
            .map(|(subset, kind, pts)| {
                if !colors.contains(&subset.as_str()) {
                    colors.push(subset);
                }
                let i = colors.iter().position(|c| c == subset).unwrap_or(0);
                let (mark, what) = if *kind == EPOCH0_VS_NF {
                    (Mark::Circle, "epoch 0 vs n_f")
                } else {
                    (Mark::Triangle, "between seeds")
                };
                Curve {
                    label: format!("{subset} {what}"),
                    color: PALETTE[i % PALETTE.len()],
                    mark,
                    points: pts.clone(),
                    labels: vec![],
                }
            })
            .collect();
        let max_level = self.rows.iter().map(|r| r.level).fold(0.0, f64::max);
        let (_, y1) = padded(
            curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)).chain([0.0]),
            0.08,
            0.0,
            f64::INFINITY,
            (0.0, 1.0),
        );
        let frame = Frame {
            title: format!("{}: how far the pruned channels move", self.network),
            x_desc: "pruning level (% of parameters)",
            y_desc: "sum over layers of 1 - |A∩B|/|A∪B| (pruned sets)",
            x: (0.0, (max_level + 5.0).clamp(10.0, 100.0)),
            y: (0.0, y1),
            legend: SeriesLabelPosition::UpperRight,
        };
        draw_xy(root, frame, &curves, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surgery::GroupPlan;

    fn plan(groups: &[(&str, usize, &[usize])]) -> Plan {
        Plan::new(
            "net",
            groups.iter().map(|(n, s, k)| GroupPlan { name: n.to_string(), size: *s, keep: k.to_vec() }).collect(),
        )
    }

    #[test]
    fn difference_is_one_minus_jaccard_of_the_removed_sets_summed_over_groups() {
        // g1: A removes {0,1}, B removes {1,2}: 1 - 1/3. g2: both remove {3}: 0. g3: only B prunes: 1.
        let a = plan(&[("g1", 4, &[2, 3]), ("g2", 4, &[0, 1, 2])]);
        let b = plan(&[("g1", 4, &[0, 3]), ("g2", 4, &[0, 1, 2]), ("g3", 2, &[0])]);
        let (d, n) = difference(&a, &b).unwrap();
        assert!((d - (1.0 - 1.0 / 3.0 + 0.0 + 1.0)).abs() < 1e-12, "{d}");
        assert_eq!(n, 3);
        // Symmetric, and zero against itself.
        assert_eq!(difference(&b, &a).unwrap(), (d, n));
        assert_eq!(difference(&a, &a).unwrap(), (0.0, 2));
        // A group kept whole in both counts for nothing.
        let whole = plan(&[("g1", 4, &[0, 1, 2, 3])]);
        assert_eq!(difference(&whole, &whole).unwrap(), (0.0, 0));
    }

    #[test]
    fn plans_of_different_networks_are_refused_naming_the_group() {
        let a = plan(&[("layer1", 4, &[0])]);
        let b = plan(&[("layer1", 8, &[0])]);
        let e = difference(&a, &b).unwrap_err().to_string();
        assert!(e.contains("layer1") && e.contains('4') && e.contains('8'), "{e}");
    }

    #[test]
    fn curves_average_seeds_per_level_and_comparison() {
        let r = |comparison: &str, level: f64, seed: u64, d: f64| ChannelRow {
            network: "n".into(),
            subset: "pets".into(),
            level,
            comparison: comparison.into(),
            seed,
            other_seed: None,
            difference: d,
            groups: 3,
        };
        let rows = [r(EPOCH0_VS_NF, 50.0, 0, 1.0), r(EPOCH0_VS_NF, 50.0, 1, 2.0), r(BETWEEN_SEEDS, 50.0, 0, 0.5)];
        let refs: Vec<&ChannelRow> = rows.iter().collect();
        let c = curves(&refs);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], ("pets".to_string(), EPOCH0_VS_NF, vec![(50.0, 1.5)]));
        assert_eq!(c[1], ("pets".to_string(), BETWEEN_SEEDS, vec![(50.0, 0.5)]));
    }
}
