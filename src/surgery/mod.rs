//! The only code that changes shapes. Takes a [`Plan`] (which channels of each pruning group to
//! keep), removes every other channel physically: the producers' output slices (conv and linear
//! rows, biases, BN statistics), the consumers' input slices (with concat offsets and flatten
//! expansion, as the groups record them), re-indexes channel permutations and slices to the
//! channels left, then re-runs shape inference on the smaller graph.

mod plan;
pub mod planner;

pub use plan::{GroupPlan, Plan};

use std::collections::HashSet;

use crate::analysis::{self, Group};
use crate::error::{Error, Result};
use crate::ir::{Graph, HostTensor, Model, Op, Slicing, TensorData, Weights};

/// For every node, the output channels that stay, in order.
pub type Keep = Vec<Vec<usize>>;

/// Turns a plan into the kept output channels of every node of `graph`. Checks the plan against
/// the graph's groups: known names, matching sizes, valid indices, frozen groups untouched, and
/// at least one channel kept per group.
pub fn keep_sets(graph: &Graph, groups: &[Group], plan: &Plan) -> Result<Keep> {
    let shapes = graph.infer_shapes()?;
    let mut removed: HashSet<(usize, usize)> = HashSet::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for gp in &plan.groups {
        if !listed.insert(&gp.name) {
            return Err(Error::config(format!("plan group `{}`", gp.name), "is listed twice"));
        }
        let g = groups
            .iter()
            .find(|g| g.name == gp.name)
            .ok_or_else(|| Error::config(format!("plan group `{}`", gp.name), "the model has no such pruning group"))?;
        let key = || format!("plan group `{}`", gp.name);
        if gp.size != g.size {
            return Err(Error::config(key(), format!("the plan says {} channels, the model has {}", gp.size, g.size)));
        }
        if gp.keep.is_empty() {
            return Err(Error::config(
                key(),
                format!("keeps no channel of its {}: a group must keep at least one", g.size),
            ));
        }
        let mut prev = None;
        for &k in &gp.keep {
            if k >= g.size || prev.is_some_and(|p| k <= p) {
                return Err(Error::config(
                    key(),
                    format!("keep indices must be increasing and below {}, got {k}", g.size),
                ));
            }
            prev = Some(k);
        }
        if gp.keep.len() < g.size
            && let Some(why) = &g.frozen
        {
            return Err(Error::config(key(), format!("may not be pruned: {why}")));
        }
        if g.blocks > 1 {
            let mut per = vec![0usize; g.blocks];
            for &k in &gp.keep {
                per[g.block_of[k]] += 1;
            }
            if per.iter().any(|&n| n != per[0]) {
                return Err(Error::config(
                    key(),
                    format!(
                        "a grouped conv splits this group into {} blocks, and the plan keeps {per:?} of them: \
                         it must keep as many in every block",
                        g.blocks
                    ),
                ));
            }
        }
        let keep: HashSet<usize> = gp.keep.iter().copied().collect();
        for (k, ch) in g.channels.iter().enumerate() {
            if !keep.contains(&k) {
                removed.extend(ch.elements.iter().copied());
            }
        }
    }
    Ok(shapes.iter().enumerate().map(|(n, s)| (0..s[0]).filter(|c| !removed.contains(&(n, *c))).collect()).collect())
}

/// The graph with the kept channels only (attributes updated, shapes re-inferred).
pub fn prune_graph(graph: &Graph, keep: &Keep) -> Result<Graph> {
    let inputs = graph.input_indices()?;
    let mut g = graph.clone();
    for (n, node) in g.nodes.iter_mut().enumerate() {
        let out = keep[n].len();
        let inp = inputs[n].first().map(|&i| keep[i].len());
        if out == 0 {
            return Err(Error::node(&node.name, "the plan removes every channel of this node"));
        }
        node.op = node.op.resized(inp, out);
        if let (Op::ChannelPermute { .. } | Op::ChannelSlice { .. }, Some(&i)) = (&node.op, inputs[n].first()) {
            node.op = node.op.reindexed(&keep[i], &keep[n]).map_err(|m| Error::node(&node.name, m))?;
        }
    }
    g.infer_shapes()?;
    Ok(g)
}

/// Keeps `rows` along axis 0 and `cols` along axis 1 (None: all) of a tensor.
fn select(t: &HostTensor, rows: Option<&[usize]>, cols: Option<&[usize]>) -> HostTensor {
    let shape = &t.shape;
    let d0 = shape.first().copied().unwrap_or(1);
    let d1 = shape.get(1).copied().unwrap_or(1);
    let inner: usize = shape.iter().skip(2).product();
    let all0: Vec<usize> = (0..d0).collect();
    let all1: Vec<usize> = (0..d1).collect();
    let rows = rows.unwrap_or(&all0);
    let cols = if shape.len() >= 2 { cols.unwrap_or(&all1) } else { &all1[..1.min(all1.len())] };
    let mut new_shape = shape.clone();
    if !new_shape.is_empty() {
        new_shape[0] = rows.len();
    }
    if new_shape.len() >= 2 {
        new_shape[1] = cols.len();
    }
    let pick = |data: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * cols.len() * inner);
        for &r in rows {
            for &c in cols {
                let start = (r * d1 + c) * inner;
                out.extend_from_slice(&data[start..start + inner]);
            }
        }
        out
    };
    match &t.data {
        TensorData::F32(v) if !shape.is_empty() => HostTensor::f32(new_shape, pick(v)),
        _ => t.clone(),
    }
}

/// A grouped conv's weight [out, in / groups, kh, kw] with the kept output rows `rows` and, for
/// each row, the kept input channels `cols` of its own block, as columns local to the block.
/// The plan keeps as many inputs in every block (checked by [`keep_sets`]).
fn select_grouped(
    t: &HostTensor,
    rows: &[usize],
    cols: &[usize],
    [in_channels, out_channels]: [usize; 2],
    groups: usize,
) -> std::result::Result<HostTensor, String> {
    let (per_in, per_out) = (in_channels / groups, out_channels / groups);
    let TensorData::F32(data) = &t.data else { return Err("a grouped conv weight must be f32".into()) };
    let inner: usize = t.shape.iter().skip(2).product();
    let mut per_block: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for &c in cols {
        per_block[c / per_in].push(c % per_in);
    }
    let kept = per_block[0].len();
    if per_block.iter().any(|b| b.len() != kept) || kept == 0 {
        return Err(format!(
            "the kept inputs are not as many in every block: {:?}",
            per_block.iter().map(Vec::len).collect::<Vec<_>>()
        ));
    }
    let mut out = Vec::with_capacity(rows.len() * kept * inner);
    for &r in rows {
        for &c in &per_block[r / per_out] {
            let start = (r * per_in + c) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    shape[1] = kept;
    Ok(HostTensor::f32(shape, out))
}

/// Slices every tensor of `weights` whose key belongs to a node of `graph` (parameters,
/// buffers, or optimizer momentum keyed the same way) to the kept channels.
pub fn prune_weights(graph: &Graph, keep: &Keep, weights: &Weights) -> Result<Weights> {
    let inputs = graph.input_indices()?;
    let mut out = Weights::default();
    for (key, t) in &weights.tensors {
        let (node_name, suffix) =
            key.rsplit_once('.').ok_or_else(|| Error::tensor(key, "not a `<node>.<tensor>` key"))?;
        let n =
            graph.index().get(node_name).copied().ok_or_else(|| Error::tensor(key, "no node of the graph owns it"))?;
        let node = &graph.nodes[n];
        let rows = Some(keep[n].as_slice());
        let cols = inputs[n].first().map(|&i| keep[i].as_slice());
        let sliced = match node.op.slicing(suffix) {
            Some(Slicing { by_input: true, .. }) if matches!(node.op, Op::Conv2d { groups, .. } if groups > 1) => {
                let &Op::Conv2d { groups, in_channels, out_channels, .. } = &node.op else { unreachable!() };
                let cols = cols.ok_or_else(|| Error::tensor(key, "a grouped conv without an input"))?;
                select_grouped(t, &keep[n], cols, [in_channels, out_channels], groups)
                    .map_err(|m| Error::tensor(key, m))?
            }
            Some(Slicing { by_output: false, by_input: false }) => t.clone(),
            Some(Slicing { by_output, by_input }) => select(t, rows.filter(|_| by_output), cols.filter(|_| by_input)),
            None => return Err(Error::tensor(key, format!("unexpected tensor of a {} node", node.op.type_name()))),
        };
        out.insert(key.clone(), sliced);
    }
    Ok(out)
}

/// Applies a plan: the smaller, valid model.
pub fn apply(model: &Model, plan: &Plan) -> Result<Model> {
    Ok(apply_with_state(model, &Weights::default(), plan)?.0)
}

/// Applies a plan mid-training: the smaller model, and the optimizer's momentum buffers (keyed
/// like the parameters) sliced the same way, so training continues where it was.
pub fn apply_with_state(model: &Model, momentum: &Weights, plan: &Plan) -> Result<(Model, Weights)> {
    let groups = analysis::groups(&model.graph)?;
    let keep = keep_sets(&model.graph, &groups, plan)?;
    let graph = prune_graph(&model.graph, &keep)?;
    let weights = prune_weights(&model.graph, &keep, &model.weights)?;
    let momentum = prune_weights(&model.graph, &keep, momentum)?;
    Ok((Model::new(graph, weights)?, momentum))
}
