//! Turns importance scores and a target into a [`Plan`]: which channels of each group stay.
//!
//! Targets: a share of the model's parameters to remove (the paper's level p), a share of its
//! GOps, or explicit channel counts per group. Global scope ranks every prunable channel of the
//! model in one ascending list (the paper); layer scope removes the same share of every group.
//! The removed parameters and operations are counted exactly as channels go (a filter's own
//! weights, its BN entries, and the input slices of every consumer at their current widths), so
//! the level achieved is the level predicted.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::{GroupPlan, Plan};
use crate::analysis::latency::{LatencyTable, Predictor};
use crate::analysis::{Coupled, Group};
use crate::error::{Error, Result};
use crate::ir::Graph;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Target {
    /// Percent (0..100) of the model's parameters to remove.
    Params(f64),
    /// Percent (0..100) of the model's GOps to remove.
    Gops(f64),
    /// Channels to keep, by group name; other groups keep all.
    Channels(BTreeMap<String, usize>),
    /// A predicted latency on the device's table (see [`make_latency_plan`]); always global.
    Latency(LatencyBudget),
}

/// At most `ms` milliseconds per batch, predicted on `table` (the device, runtime and batch size
/// the budget is for).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBudget {
    pub ms: f64,
    pub table: std::sync::Arc<LatencyTable>,
}

impl Serialize for LatencyBudget {
    /// The budget and what it is for; the table itself is a file of its own.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("latency_ms", &self.ms)?;
        m.serialize_entry("runtime", &self.table.key.runtime)?;
        m.serialize_entry("batch", &self.table.key.batch)?;
        m.end()
    }
}

impl Target {
    /// Refuses a level outside [0, 100). Cheap, so callers can check it before any costly work
    /// (a data-driven criterion loading its data).
    pub fn check_level(&self) -> Result<()> {
        match self {
            Target::Params(p) | Target::Gops(p) if !(0.0..100.0).contains(p) => {
                Err(Error::config("level", format!("{p} is not a percentage in [0, 100)")))
            }
            Target::Latency(b) if !(b.ms.is_finite() && b.ms > 0.0) => {
                Err(Error::config("latency", format!("{} ms is not a positive latency", b.ms)))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// One ascending ranking over all prunable channels (the paper).
    Global,
    /// The same share removed from every prunable group.
    Layer,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Global => "global",
            Scope::Layer => "layer",
        })
    }
}

impl std::str::FromStr for Scope {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "global" => Ok(Scope::Global),
            "layer" => Ok(Scope::Layer),
            _ => Err(Error::config("scope", format!("`{s}`: use global or layer"))),
        }
    }
}

/// Limits on what a plan may remove. The paper's (the default): every layer keeps `min_channels`
/// filters; a residual group (one joined by Add/Mul) keeps at least `residual_min_share` of its
/// channels. `min_share` (0 in the paper) makes every group keep at least that share of its
/// channels: the guard against a global ranking of scores that are not comparable across layers
/// (raw L1 norms) emptying whole layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub min_channels: usize,
    pub residual_min_share: f64,
    pub min_share: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { min_channels: 2, residual_min_share: 0.25, min_share: 0.0 }
    }
}

impl Limits {
    /// Refuses shares outside [0, 1] and a minimum of no channel.
    pub fn check(&self) -> Result<()> {
        for (key, v) in [("residual_min_share", self.residual_min_share), ("min_share", self.min_share)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::config(key, format!("{v} is not a share in [0, 1]")));
            }
        }
        if self.min_channels == 0 {
            return Err(Error::config("min_channels", "every layer must keep at least one channel"));
        }
        Ok(())
    }
}

/// The groups `plan` leaves at the least the limits allow (and below their size): a sign that
/// the ranking would have removed more there, which a user should look at. "name (kept of size)".
pub fn at_minimum(groups: &[Group], plan: &Plan, limits: &Limits) -> Vec<String> {
    plan.groups
        .iter()
        .filter_map(|gp| {
            let g = groups.iter().find(|g| g.name == gp.name)?;
            (gp.keep.len() < g.size && gp.keep.len() <= min_keep(g, limits))
                .then(|| format!("{} ({} of {})", g.name, gp.keep.len(), g.size))
        })
        .collect()
}

/// Exact parameter and multiply-accumulate counts of a graph as channels are removed.
pub struct Counter<'a> {
    graph: &'a Graph,
    inputs: Vec<Vec<usize>>,
    consumers: Vec<Vec<usize>>,
    shapes: Vec<Vec<usize>>,
    /// Current channel count of every node output.
    cur: Vec<usize>,
    pub params: u64,
    pub macs: u64,
}

impl<'a> Counter<'a> {
    pub fn new(graph: &'a Graph) -> Result<Self> {
        let shapes = graph.infer_shapes()?;
        let mut c = Counter {
            graph,
            inputs: graph.input_indices()?,
            consumers: graph.consumers()?,
            cur: shapes.iter().map(|s| s[0]).collect(),
            shapes,
            params: 0,
            macs: 0,
        };
        for n in 0..graph.nodes.len() {
            let (p, m) = c.cost(n);
            c.params += p;
            c.macs += m;
        }
        Ok(c)
    }

    fn cost(&self, n: usize) -> (u64, u64) {
        let out = self.cur[n] as u64;
        let inp = self.inputs[n].first().map_or(0, |&i| self.cur[i]) as u64;
        // The op as surgery would leave it at the current channel counts: the same parameter
        // and MAC counts as the cost model's, from the same code.
        let op = self.graph.nodes[n].op.resized(self.inputs[n].first().map(|_| inp as usize), out as usize);
        let mut shape = self.shapes[n].clone();
        shape[0] = out as usize;
        (op.num_parameters(), op.macs(&shape))
    }

    /// Removes one coupled channel; returns the parameters and MACs it saved.
    pub fn remove(&mut self, ch: &Coupled) -> (u64, u64) {
        let mut affected: HashSet<usize> = HashSet::new();
        for &(n, _) in &ch.elements {
            affected.insert(n);
            affected.extend(self.consumers[n].iter().copied());
        }
        let before = affected.iter().map(|&n| self.cost(n)).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        for &(n, _) in &ch.elements {
            self.cur[n] -= 1;
        }
        let after = affected.iter().map(|&n| self.cost(n)).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        self.params -= before.0 - after.0;
        self.macs -= before.1 - after.1;
        (before.0 - after.0, before.1 - after.1)
    }
}

/// The fewest channels a group may keep (for a group in blocks, a multiple of the blocks, at
/// least one in each).
pub fn min_keep(g: &Group, limits: &Limits) -> usize {
    let share = if g.joins > 0 { limits.residual_min_share.max(limits.min_share) } else { limits.min_share };
    let by_share = (g.size as f64 * share - 1e-9).ceil().max(0.0) as usize;
    let least = limits.min_channels.max(by_share).max(1);
    let least = if g.blocks > 1 { least.div_ceil(g.blocks) * g.blocks } else { least };
    least.min(g.size)
}

/// The units a group's channels are removed in, least important first: single channels, or for
/// a group in blocks, one channel of every block (each block's next least important), so that
/// the blocks stay equal.
fn units(g: &Group, scores: &[f64]) -> Vec<Vec<usize>> {
    let order = ascending(scores);
    if g.blocks <= 1 {
        return order.into_iter().map(|k| vec![k]).collect();
    }
    let mut per: Vec<Vec<usize>> = vec![Vec::new(); g.blocks];
    for k in order {
        per[g.block_of[k]].push(k);
    }
    let m = per.iter().map(Vec::len).min().unwrap_or(0);
    (0..m).map(|u| per.iter().map(|b| b[u]).collect()).collect()
}

/// The score of a unit: the mean of its channels'.
fn unit_score(unit: &[usize], scores: &[f64]) -> f64 {
    unit.iter().map(|&k| scores[k]).sum::<f64>() / unit.len().max(1) as f64
}

/// Refuses scores that are not one finite number per channel of every group.
fn check_scores(groups: &[Group], scores: &[Vec<f64>]) -> Result<()> {
    if scores.len() != groups.len() || groups.iter().zip(scores).any(|(g, s)| s.len() != g.size) {
        return Err(Error::config("scores", "one score per channel of every group is needed"));
    }
    if let Some((g, _)) = groups.iter().zip(scores).find(|(_, s)| s.iter().any(|v| !v.is_finite())) {
        return Err(Error::config(format!("group `{}`", g.name), "has a score that is not a finite number"));
    }
    Ok(())
}

/// Makes a plan from per-group channel scores (higher = more important).
pub fn make_plan(
    graph: &Graph,
    groups: &[Group],
    scores: &[Vec<f64>],
    target: &Target,
    scope: Scope,
    limits: &Limits,
) -> Result<Plan> {
    check_scores(groups, scores)?;
    target.check_level()?;
    let base = Counter::new(graph)?;
    let (total_params, total_macs) = (base.params, base.macs);
    // Removed channel indices per group.
    let removed: Vec<Vec<usize>> = match target {
        Target::Params(p) | Target::Gops(p) => {
            let by_params = matches!(target, Target::Params(_));
            let goal = p / 100.0 * if by_params { total_params } else { total_macs } as f64;
            match scope {
                Scope::Global => global(graph, groups, scores, limits, by_params, goal)?,
                Scope::Layer => layer(graph, groups, scores, limits, by_params, goal)?,
            }
        }
        Target::Channels(counts) => by_counts(groups, scores, counts)?,
        Target::Latency(budget) => {
            if scope != Scope::Global {
                return Err(Error::config(
                    "scope",
                    "a latency budget ranks all channels together by importance per ms saved: use the global scope",
                ));
            }
            return make_latency_plan(graph, groups, scores, budget.ms, &budget.table, limits);
        }
    };
    let mut plan = finish(graph, groups, &removed)?;
    plan.made_by = serde_json::json!({ "target": target, "scope": scope, "limits": limits });
    Ok(plan)
}

/// The plan that removes `removed[g]` from every group g, with its exact predicted counts.
fn finish(graph: &Graph, groups: &[Group], removed: &[Vec<usize>]) -> Result<Plan> {
    let base = Counter::new(graph)?;
    let (total_params, total_macs) = (base.params, base.macs);
    let mut after = Counter::new(graph)?;
    let mut plans = Vec::new();
    for (g, rem) in groups.iter().zip(removed) {
        if rem.is_empty() {
            continue;
        }
        for &k in rem {
            after.remove(&g.channels[k]);
        }
        let rem: HashSet<usize> = rem.iter().copied().collect();
        plans.push(GroupPlan {
            name: g.name.clone(),
            size: g.size,
            keep: (0..g.size).filter(|k| !rem.contains(k)).collect(),
        });
    }
    let mut plan = Plan::new(&graph.name, plans);
    plan.predicted = serde_json::json!({
        "params_before": total_params,
        "params_after": after.params,
        "params_removed_percent": 100.0 * (total_params - after.params) as f64 / total_params.max(1) as f64,
        "gops_before": 2.0 * total_macs as f64 / 1e9,
        "gops_after": 2.0 * after.macs as f64 / 1e9,
        "gops_removed_percent": 100.0 * (total_macs - after.macs) as f64 / total_macs.max(1) as f64,
    });
    Ok(plan)
}

/// Output channel count of every node as a plan's units are removed and put back (the latency
/// model reads counts, not costs).
struct Counts<'a> {
    groups: &'a [Group],
    cur: Vec<usize>,
}

impl Counts<'_> {
    fn change(&mut self, gi: usize, unit: &[usize], add: bool) {
        for &k in unit {
            for &(n, _) in &self.groups[gi].channels[k].elements {
                if add { self.cur[n] += 1 } else { self.cur[n] -= 1 }
            }
        }
    }
}

/// Predicted ms of the unpruned network and of the smallest one the limits allow (every group
/// at its minimum): the fastest any latency budget can get on `table`.
pub fn latency_floor(graph: &Graph, groups: &[Group], table: &LatencyTable, limits: &Limits) -> Result<(f64, f64)> {
    let predictor = Predictor::new(table, graph)?;
    let full: Vec<usize> = graph.infer_shapes()?.iter().map(|s| s[0]).collect();
    // Which channels go does not change the counts: any order will do.
    let units: Vec<Vec<Vec<usize>>> = groups.iter().map(|g| units(g, &vec![0.0; g.size])).collect();
    Ok(floor_with(&predictor, groups, &units, &spare(groups, limits), &full))
}

/// How many units each group may give up.
fn spare(groups: &[Group], limits: &Limits) -> Vec<usize> {
    groups.iter().map(|g| if g.prunable() { (g.size - min_keep(g, limits)) / g.blocks.max(1) } else { 0 }).collect()
}

fn floor_with(
    predictor: &Predictor,
    groups: &[Group],
    units: &[Vec<Vec<usize>>],
    spare: &[usize],
    full: &[usize],
) -> (f64, f64) {
    let mut counts = Counts { groups, cur: full.to_vec() };
    let full_ms = predictor.ms(&counts.cur);
    for (gi, u) in units.iter().enumerate() {
        u[..spare[gi]].iter().for_each(|unit| counts.change(gi, unit, false));
    }
    (full_ms, predictor.ms(&counts.cur))
}

/// A plan for a latency budget: the predicted latency (on the device's table, see
/// `analysis::latency`) at most `target_ms`. Channels go in one global ranking of importance per
/// millisecond saved (each group's saving per channel from the table, in the spirit of HALP);
/// then each group's count is rounded up the latency staircase: channels are put back, most
/// important first, as far as the predicted latency does not rise. A target below the floor
/// (every group at the least the limits allow) is refused with the floor.
pub fn make_latency_plan(
    graph: &Graph,
    groups: &[Group],
    scores: &[Vec<f64>],
    target_ms: f64,
    table: &LatencyTable,
    limits: &Limits,
) -> Result<Plan> {
    check_scores(groups, scores)?;
    if !(target_ms.is_finite() && target_ms > 0.0) {
        return Err(Error::config("latency", format!("{target_ms} ms is not a positive latency")));
    }
    let predictor = Predictor::new(table, graph)?;
    let full: Vec<usize> = graph.infer_shapes()?.iter().map(|s| s[0]).collect();
    let units: Vec<Vec<Vec<usize>>> = groups.iter().zip(scores).map(|(g, s)| units(g, s)).collect();
    let spare = spare(groups, limits);
    let mut counts = Counts { groups, cur: full.clone() };
    let (full_ms, floor_ms) = floor_with(&predictor, groups, &units, &spare, &full);
    if target_ms < floor_ms {
        return Err(Error::config(
            "latency",
            format!(
                "{target_ms:.6} ms cannot be reached: the smallest network the limits allow (every group at its \
                 minimum) is predicted at {floor_ms:.4} ms (unpruned {full_ms:.4} ms)"
            ),
        ));
    }
    if target_ms >= full_ms {
        return Err(Error::config(
            "latency",
            format!(
                "{target_ms:.4} ms is not below the unpruned network's predicted {full_ms:.4} ms: nothing to remove"
            ),
        ));
    }
    // Each group's saving per unit: half its spare units removed, the rest of the network full.
    let saving: Vec<f64> = (0..groups.len())
        .map(|gi| {
            let n = spare[gi].div_ceil(2);
            if n == 0 {
                return 0.0;
            }
            units[gi][..n].iter().for_each(|unit| counts.change(gi, unit, false));
            let ms = predictor.ms(&counts.cur);
            units[gi][..n].iter().for_each(|unit| counts.change(gi, unit, true));
            ((full_ms - ms) / n as f64).max(0.0)
        })
        .collect();
    let tiny = 1e-9 * full_ms;
    let mut ranking: Vec<(f64, usize, usize)> = (0..groups.len())
        .flat_map(|gi| {
            let (units, saving) = (&units[gi], saving[gi]);
            (0..spare[gi]).map(move |u| (unit_score(&units[u], &scores[gi]) / saving.max(tiny), gi, u))
        })
        .collect();
    ranking.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut taken = vec![0usize; groups.len()];
    let mut ms = full_ms;
    for &(_, gi, u) in &ranking {
        if ms <= target_ms {
            break;
        }
        // A group's units go in its own order (least important first): the ranking's key is
        // the unit's score over the group's saving, so within a group it is that order.
        debug_assert_eq!(u, taken[gi]);
        counts.change(gi, &units[gi][u], false);
        taken[gi] += 1;
        ms = predictor.ms(&counts.cur);
    }
    // Round up the staircase: put units back while the predicted latency does not rise.
    for gi in 0..groups.len() {
        let mut best = (taken[gi], ms);
        let mut t = taken[gi];
        while t > 0 {
            t -= 1;
            counts.change(gi, &units[gi][t], true);
            let m = predictor.ms(&counts.cur);
            if m <= ms + 1e-12 {
                best = (t, m);
            }
        }
        for unit in &units[gi][t..best.0] {
            counts.change(gi, unit, false);
        }
        taken[gi] = best.0;
        ms = best.1;
    }
    let removed: Vec<Vec<usize>> =
        (0..groups.len()).map(|gi| units[gi][..taken[gi]].iter().flatten().copied().collect()).collect();
    let mut plan = finish(graph, groups, &removed)?;
    plan.predicted["latency_ms_before"] = full_ms.into();
    plan.predicted["latency_ms_after"] = ms.into();
    plan.predicted["latency_ms_floor"] = floor_ms.into();
    plan.made_by = serde_json::json!({
        "target": { "latency_ms": target_ms },
        "runtime": table.key.runtime,
        "batch": table.key.batch,
        "limits": limits,
    });
    Ok(plan)
}

/// The channels an explicit target removes: each named group keeps `counts[name]` channels, its
/// least important removed (for a group in blocks, as many from every block).
fn by_counts(groups: &[Group], scores: &[Vec<f64>], counts: &BTreeMap<String, usize>) -> Result<Vec<Vec<usize>>> {
    let mut removed = vec![Vec::new(); groups.len()];
    for (name, &keep) in counts {
        let i = groups
            .iter()
            .position(|g| &g.name == name)
            .ok_or_else(|| Error::config(format!("group `{name}`"), "the model has no such pruning group"))?;
        let g = &groups[i];
        if keep == 0 || keep > g.size {
            return Err(Error::config(format!("group `{name}`"), format!("keep {keep} is not in 1..={}", g.size)));
        }
        if keep < g.size
            && let Some(why) = &g.frozen
        {
            return Err(Error::config(format!("group `{name}`"), format!("may not be pruned: {why}")));
        }
        if !(g.size - keep).is_multiple_of(g.blocks) {
            return Err(Error::config(
                format!("group `{name}`"),
                format!(
                    "keep {keep}: a grouped conv splits its {} channels into {} blocks, so it keeps a \
                     multiple of {} (as many from every block)",
                    g.size, g.blocks, g.blocks
                ),
            ));
        }
        removed[i] = units(g, &scores[i]).into_iter().take((g.size - keep) / g.blocks).flatten().collect();
    }
    Ok(removed)
}

/// Channel indices of a group from least to most important (ties: lower index first).
fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx
}

fn global(
    graph: &Graph,
    groups: &[Group],
    scores: &[Vec<f64>],
    limits: &Limits,
    by_params: bool,
    goal: f64,
) -> Result<Vec<Vec<usize>>> {
    let units: Vec<Vec<Vec<usize>>> = groups.iter().zip(scores).map(|(g, s)| units(g, s)).collect();
    let mut ranking: Vec<(f64, usize, usize)> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.prunable())
        .flat_map(|(gi, _)| units[gi].iter().enumerate().map(move |(u, unit)| (unit_score(unit, &scores[gi]), gi, u)))
        .collect();
    ranking.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut counter = Counter::new(graph)?;
    let mut left: Vec<usize> = groups.iter().map(|g| g.size).collect();
    let mut removed = vec![Vec::new(); groups.len()];
    let mut done = 0f64;
    for (_, gi, u) in ranking {
        if done >= goal {
            break;
        }
        let unit = &units[gi][u];
        if left[gi] < min_keep(&groups[gi], limits) + unit.len() {
            continue;
        }
        for &k in unit {
            let (p, m) = counter.remove(&groups[gi].channels[k]);
            done += if by_params { p } else { m } as f64;
        }
        left[gi] -= unit.len();
        removed[gi].extend(unit);
    }
    Ok(removed)
}

fn layer(
    graph: &Graph,
    groups: &[Group],
    scores: &[Vec<f64>],
    limits: &Limits,
    by_params: bool,
    goal: f64,
) -> Result<Vec<Vec<usize>>> {
    let orders: Vec<Vec<Vec<usize>>> = groups.iter().zip(scores).map(|(g, s)| units(g, s)).collect();
    let at = |q: f64| -> Result<(f64, Vec<Vec<usize>>)> {
        let mut counter = Counter::new(graph)?;
        let mut done = 0f64;
        let mut removed = vec![Vec::new(); groups.len()];
        for (gi, g) in groups.iter().enumerate().filter(|(_, g)| g.prunable()) {
            let b = g.blocks.max(1);
            let n = ((g.size as f64 * q / b as f64).round() as usize).min((g.size - min_keep(g, limits)) / b);
            let rem: Vec<usize> = orders[gi][..n].iter().flatten().copied().collect();
            for &k in &rem {
                let (p, m) = counter.remove(&g.channels[k]);
                done += if by_params { p } else { m } as f64;
            }
            removed[gi] = rem;
        }
        Ok((done, removed))
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    if at(hi)?.0 < goal {
        return Ok(at(hi)?.1);
    }
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if at(mid)?.0 >= goal { hi = mid } else { lo = mid }
    }
    Ok(at(hi)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::groups;
    use crate::ir::Model;
    use crate::zoo;
    use rand::{Rng, SeedableRng};

    fn random_scores(gs: &[Group], seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        gs.iter().map(|g| (0..g.size).map(|_| rng.random::<f64>()).collect()).collect()
    }

    #[test]
    fn predicted_counts_are_exact_and_levels_are_reached() {
        for name in zoo::NETWORKS {
            let model = Model::init(zoo::build(name, 100).unwrap(), 0).unwrap();
            let gs = groups(&model.graph).unwrap();
            let scores = random_scores(&gs, 1);
            for scope in [Scope::Global, Scope::Layer] {
                for level in [10.0, 50.0, 90.0] {
                    for target in [Target::Params(level), Target::Gops(level)] {
                        let plan = make_plan(&model.graph, &gs, &scores, &target, scope, &Limits::default()).unwrap();
                        let pruned = crate::surgery::apply(&model, &plan).unwrap();
                        let p = &plan.predicted;
                        assert_eq!(p["params_after"], pruned.graph.num_parameters() as u64, "{name} {target:?}");
                        let cost = crate::analysis::cost(&pruned.graph).unwrap();
                        assert!((p["gops_after"].as_f64().unwrap() - cost.gops).abs() < 1e-12, "{name} {target:?}");
                        let key = if matches!(target, Target::Params(_)) { "params" } else { "gops" };
                        let achieved = p[format!("{key}_removed_percent")].as_f64().unwrap();
                        if scope == Scope::Global {
                            assert!((achieved - level).abs() <= 2.0, "{name} {scope:?} {target:?}: {achieved:.2}%");
                        } else {
                            assert!(
                                achieved >= level - 2.0 || level >= 90.0,
                                "{name} layer {target:?}: {achieved:.2}%"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn min_share_guards_every_group_and_at_minimum_names_the_groups_it_binds() {
        let model = Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap();
        let gs = groups(&model.graph).unwrap();
        // Scores that rank one layer far below the rest, as raw norms of a small-scale layer do.
        let mut scores = random_scores(&gs, 3);
        let weak = gs.iter().position(|g| g.name == "layer3.2.conv1").unwrap();
        scores[weak].iter_mut().for_each(|s| *s *= 1e-6);
        let paper = Limits::default();
        let guarded = Limits { min_share: 0.25, ..paper };
        let target = Target::Params(40.0);
        let unguarded = make_plan(&model.graph, &gs, &scores, &target, Scope::Global, &paper).unwrap();
        let kept = |p: &Plan| p.groups.iter().find(|g| g.name == "layer3.2.conv1").map_or(64, |g| g.keep.len());
        assert_eq!(kept(&unguarded), 2, "without the guard the weak layer goes to the 2-channel minimum");
        assert!(at_minimum(&gs, &unguarded, &paper).contains(&"layer3.2.conv1 (2 of 64)".to_string()));
        let plan = make_plan(&model.graph, &gs, &scores, &target, Scope::Global, &guarded).unwrap();
        assert_eq!(kept(&plan), 16, "a quarter of 64");
        for gp in &plan.groups {
            let g = gs.iter().find(|g| g.name == gp.name).unwrap();
            assert!(gp.keep.len() * 4 >= g.size, "{}: {} of {}", g.name, gp.keep.len(), g.size);
        }
        assert!(at_minimum(&gs, &plan, &guarded).contains(&"layer3.2.conv1 (16 of 64)".to_string()));
        assert!(Limits { min_share: 1.5, ..paper }.check().unwrap_err().to_string().contains("min_share"));
        assert!(Limits { min_channels: 0, ..paper }.check().is_err());
    }

    #[test]
    fn grouped_convs_are_pruned_as_many_from_every_block() {
        let model = Model::init(zoo::structures::build("grouped", 10).unwrap(), 0).unwrap();
        let gs = groups(&model.graph).unwrap();
        let g = gs.iter().find(|g| g.name == "reduce.conv").unwrap();
        assert_eq!((g.blocks, g.prunable()), (4, true), "the grouped conv's input, in its 4 groups");
        let scores = random_scores(&gs, 5);
        for scope in [Scope::Global, Scope::Layer] {
            let plan = make_plan(&model.graph, &gs, &scores, &Target::Params(50.0), scope, &Limits::default()).unwrap();
            for gp in &plan.groups {
                let g = gs.iter().find(|g| g.name == gp.name).unwrap();
                let mut per = vec![0; g.blocks];
                gp.keep.iter().for_each(|&k| per[g.block_of[k]] += 1);
                assert!(per.iter().all(|&n| n == per[0] && n > 0), "{scope:?} {}: {per:?}", g.name);
            }
            assert!(plan.removed() > 0);
        }
        let mut counts = BTreeMap::new();
        counts.insert("grouped.conv".to_string(), 10);
        let e = make_plan(&model.graph, &gs, &scores, &Target::Channels(counts), Scope::Global, &Limits::default());
        assert!(e.unwrap_err().to_string().contains("multiple of 4"));
        let mut counts = BTreeMap::new();
        counts.insert("grouped.conv".to_string(), 8);
        make_plan(&model.graph, &gs, &scores, &Target::Channels(counts), Scope::Global, &Limits::default()).unwrap();
    }

    /// A latency that steps every 8 channels (a blocked layout) on both counts.
    fn stepped(i: usize, o: usize, _: &crate::analysis::latency::Unit) -> f64 {
        1e-4 * (i.div_ceil(8) * 8 * o.div_ceil(8) * 8) as f64 + 1e-3
    }

    #[test]
    fn latency_plans_meet_the_budget_round_up_the_staircase_and_refuse_what_cannot_be() {
        let model = Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap();
        let gs = groups(&model.graph).unwrap();
        let scores = random_scores(&gs, 4);
        let table = crate::analysis::latency::synthetic(&model.graph, stepped);
        let limits = Limits::default();
        let full = table.predict(&model.graph).unwrap();
        for share in [0.3, 0.5, 0.8] {
            let plan = make_latency_plan(&model.graph, &gs, &scores, share * full, &table, &limits).unwrap();
            let pruned = crate::surgery::apply(&model, &plan).unwrap();
            let after = table.predict(&pruned.graph).unwrap();
            assert!(after <= share * full + 1e-12, "{share}: {after} > {}", share * full);
            assert!((plan.predicted["latency_ms_after"].as_f64().unwrap() - after).abs() < 1e-9);
            assert_eq!(plan.predicted["params_after"], pruned.graph.num_parameters() as u64);
            // On a staircase of 8, a kept count off a step costs as much as the step above, so
            // every pruned group keeps a multiple of 8 (or the least the limits allow).
            for gp in &plan.groups {
                let g = gs.iter().find(|g| g.name == gp.name).unwrap();
                let k = gp.keep.len();
                assert!(k % 8 == 0 || k == min_keep(g, &limits), "{share}: {} keeps {k} of {}", g.name, g.size);
            }
        }
        let floor = {
            let e = make_latency_plan(&model.graph, &gs, &scores, 1e-6, &table, &limits).unwrap_err().to_string();
            assert!(e.contains("cannot be reached") && e.contains("predicted at"), "{e}");
            e
        };
        assert!(!floor.is_empty());
        let e = make_latency_plan(&model.graph, &gs, &scores, full * 1.01, &table, &limits).unwrap_err();
        assert!(e.to_string().contains("not below the unpruned"), "{e}");
        assert!(make_latency_plan(&model.graph, &gs, &scores, f64::NAN, &table, &limits).is_err());
        // As a Target: the same plan through make_plan; global only; a bad budget is refused
        // before any work.
        let budget = |ms: f64| Target::Latency(LatencyBudget { ms, table: std::sync::Arc::new(table.clone()) });
        let direct = make_latency_plan(&model.graph, &gs, &scores, 0.5 * full, &table, &limits).unwrap();
        let via = make_plan(&model.graph, &gs, &scores, &budget(0.5 * full), Scope::Global, &limits).unwrap();
        assert_eq!(via.to_json(), direct.to_json());
        assert_eq!(serde_json::to_value(budget(2.0)).unwrap()["Latency"]["latency_ms"], 2.0);
        let e = make_plan(&model.graph, &gs, &scores, &budget(0.5 * full), Scope::Layer, &limits).unwrap_err();
        assert!(e.to_string().contains("global scope"), "{e}");
        assert!(budget(-1.0).check_level().unwrap_err().to_string().contains("not a positive latency"));
    }

    #[test]
    fn limits_hold_and_channel_targets_apply() {
        let model = Model::init(zoo::build("resnet20", 10).unwrap(), 0).unwrap();
        let gs = groups(&model.graph).unwrap();
        let scores = random_scores(&gs, 2);
        let limits = Limits::default();
        let plan = make_plan(&model.graph, &gs, &scores, &Target::Params(95.0), Scope::Global, &limits).unwrap();
        for gp in &plan.groups {
            let g = gs.iter().find(|g| g.name == gp.name).unwrap();
            assert!(gp.keep.len() >= min_keep(g, &limits), "{}: {}", g.name, gp.keep.len());
            assert!(g.prunable());
        }
        let residual = gs.iter().find(|g| g.name == "conv1").unwrap();
        assert_eq!(min_keep(residual, &limits), 4);

        let mut counts = BTreeMap::new();
        counts.insert("layer1.0.conv1".to_string(), 3);
        let plan = make_plan(&model.graph, &gs, &scores, &Target::Channels(counts), Scope::Global, &limits).unwrap();
        assert_eq!(plan.groups.len(), 1);
        assert_eq!(plan.groups[0].keep.len(), 3);
        // The three kept are the three best scored.
        let s = &scores[gs.iter().position(|g| g.name == "layer1.0.conv1").unwrap()];
        let mut best: Vec<usize> = (0..16).collect();
        best.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let mut top3 = best[..3].to_vec();
        top3.sort();
        assert_eq!(plan.groups[0].keep, top3);

        for (counts, needle) in
            [(vec![("linear", 5)], "network output"), (vec![("nope", 1)], "nope"), (vec![("conv1", 0)], "keep 0")]
        {
            let c: BTreeMap<String, usize> = counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let e = make_plan(&model.graph, &gs, &scores, &Target::Channels(c), Scope::Global, &limits).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
        let e = make_plan(&model.graph, &gs, &scores, &Target::Params(120.0), Scope::Global, &limits).unwrap_err();
        assert!(e.to_string().contains("120"), "{e}");
    }
}
