//! The data pass shared by the data-driven criteria (taylor, activation, apoz): one pass over the
//! data in inference mode, collecting per-channel statistics ([`engine::Train::channel_statistics`]) of
//! a few chosen tensors of every group (see [`chosen_tensors`]) in one engine call per batch,
//! summed over the images and then divided by their number.

use std::collections::HashMap;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Criterion, DataPass};
use crate::analysis::{Group, Member};
use crate::data::Loader;
use crate::engine;
use crate::error::{Error, Result};
use crate::ir::{ChannelMap, Model, Op};

/// The tensors of a group whose activations a data-driven criterion reads: the group's ReLU or
/// ReLU6 outputs if it has any, else the outputs of its conv and linear producers. Empty for a
/// group that no conv or linear layer produces (the network input): such a group scores zeros.
pub fn chosen_tensors(group: &Group) -> Vec<&Member> {
    let creates = |m: &&Member| {
        matches!(m.kind.channel_map(), ChannelMap::Create | ChannelMap::Depthwise | ChannelMap::Grouped { .. })
    };
    if !group.producers.iter().any(|m| creates(&m)) {
        return Vec::new();
    }
    let relus: Vec<&Member> = group.tensors.iter().filter(|m| matches!(m.kind, Op::ReLU | Op::ReLU6)).collect();
    if relus.is_empty() { group.producers.iter().filter(creates).collect() } else { relus }
}

/// Per-channel averages over the images of one node's output.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeStats {
    /// |mean over positions of activation x gradient of the image's own loss|.
    pub taylor: Vec<f64>,
    /// Mean activation.
    pub mean: Vec<f64>,
    /// Fraction of zero activations.
    pub zeros: Vec<f64>,
}

/// For each group, its chosen tensors that reach the network output: the node's name and, per
/// channel of the group, the node's channel indices.
type Chosen = Vec<Vec<(String, Vec<Vec<usize>>)>>;

/// The statistics of every group's chosen tensors.
pub(super) struct Activations {
    chosen: Chosen,
    nodes: HashMap<String, NodeStats>,
}

impl Activations {
    /// For each group and channel, `finish(sum, n)` of `f(stats, index)` over the chosen tensors
    /// and the channel's indices there (n of them); zeros for a group with no chosen tensor.
    pub(super) fn reduce(
        &self,
        groups: &[Group],
        f: impl Fn(&NodeStats, usize) -> f64,
        finish: impl Fn(f64, usize) -> f64,
    ) -> Vec<Vec<f64>> {
        groups
            .iter()
            .zip(&self.chosen)
            .map(|(g, chosen)| {
                (0..g.size)
                    .map(|k| {
                        let (mut sum, mut n) = (0.0, 0);
                        for (node, indices) in chosen {
                            let s = &self.nodes[node];
                            for &i in &indices[k] {
                                sum += f(s, i);
                                n += 1;
                            }
                        }
                        if n == 0 { 0.0 } else { finish(sum, n) }
                    })
                    .collect()
            })
            .collect()
    }
}

/// Runs the data pass for `criterion` (named in the progress bar and in errors).
pub(super) fn collect(
    criterion: Criterion,
    model: &Model,
    groups: &[Group],
    data: &DataPass,
    seed: u64,
) -> Result<Activations> {
    let graph = &model.graph;
    check_pass(criterion, model, data)?;
    let shapes = graph.infer_shapes()?;
    let (chosen, nodes) = choose_nodes(model, groups, &shapes)?;
    if nodes.is_empty() {
        return Ok(Activations { chosen, nodes: HashMap::new() });
    }
    let net = engine::trainer(model, data.device)?;
    let classes = net.num_outputs()?;
    let limit = data.max_batches.map_or(usize::MAX, |b| b.saturating_mul(data.batch_size));
    let ds = if limit < data.dataset.len() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut idx = rand::seq::index::sample(&mut rng, data.dataset.len(), limit).into_vec();
        idx.sort_unstable();
        data.dataset.select(&idx)
    } else {
        data.dataset.clone()
    };
    if let Some(&l) = ds.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Data(format!("label {l} does not fit the model's {classes} outputs")));
    }
    let (sums, count) = accumulate(criterion, &*net, model, ds, data, &nodes, &shapes, seed)?;
    let n = count.max(1) as f64;
    let mut by_name = HashMap::with_capacity(nodes.len());
    for (mut s, &i) in sums.into_iter().zip(&nodes) {
        for v in s.taylor.iter_mut().chain(&mut s.mean).chain(&mut s.zeros) {
            *v /= n;
            if !v.is_finite() {
                return Err(Error::node(
                    &graph.nodes[i].name,
                    format!("criterion {criterion}: the activation statistics are not finite; the model diverges"),
                ));
            }
        }
        by_name.insert(graph.nodes[i].name.clone(), s);
    }
    Ok(Activations { chosen, nodes: by_name })
}

/// Refuses a data pass that cannot run: no batches, no images, images the model does not take.
fn check_pass(criterion: Criterion, model: &Model, data: &DataPass) -> Result<()> {
    if data.batch_size == 0 {
        return Err(Error::config("batch_size", "must be positive"));
    }
    if data.max_batches == Some(0) {
        return Err(Error::config("max_batches", "must be positive"));
    }
    let ds = data.dataset;
    if ds.is_empty() {
        return Err(Error::Data(format!("criterion {criterion} needs images, the dataset is empty")));
    }
    let input = model.graph.input_shape()?;
    // The images must have the input's shape, or be stored fitted for it (`data::fit`: larger by
    // 1/0.875), which the loader center-crops.
    let fits = matches!(*input, [c, h, w] if ds.shape[0] == c
        && ([ds.shape[1], ds.shape[2]] == [h, w] || [ds.shape[1], ds.shape[2]] == crate::data::fit::stored_size([h, w])));
    if !fits {
        return Err(Error::Data(format!(
            "the images are {:?} (C, H, W) but model `{}` takes {input:?}",
            ds.shape, model.graph.name
        )));
    }
    Ok(())
}

/// Chosen tensors of each group, per group (as node names and channel indices) and as the
/// sorted node indices to collect: only nodes from which the output is reachable (only those have
/// gradients).
fn choose_nodes(model: &Model, groups: &[Group], shapes: &[Vec<usize>]) -> Result<(Chosen, Vec<usize>)> {
    let graph = &model.graph;
    let index = graph.index();
    let inputs = graph.input_indices()?;
    let mut live = vec![false; graph.nodes.len()];
    let mut stack = vec![graph.output_index()?];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut live[i], true) {
            stack.extend(&inputs[i]);
        }
    }
    let mut chosen = Vec::with_capacity(groups.len());
    let mut nodes: Vec<usize> = Vec::new();
    for g in groups {
        let mut mine = Vec::new();
        for m in chosen_tensors(g) {
            let i = *index.get(m.node.as_str()).ok_or_else(|| {
                Error::node(&m.node, format!("group `{}` names a node the model does not have", g.name))
            })?;
            let width = shapes[i][0];
            if let Some(&c) = m.indices.iter().flatten().find(|&&c| c >= width) {
                return Err(Error::node(
                    &m.node,
                    format!("group `{}` names channel {c} but the node has {width}", g.name),
                ));
            }
            if live[i] {
                nodes.push(i);
                mine.push((m.node.clone(), m.indices.clone()));
            }
        }
        chosen.push(mine);
    }
    nodes.sort_unstable();
    nodes.dedup();
    Ok((chosen, nodes))
}

/// Sums over the images of `ds` of the statistics of `nodes`, and the number of images.
#[allow(clippy::too_many_arguments)]
fn accumulate(
    criterion: Criterion,
    net: &dyn engine::Train,
    model: &Model,
    ds: crate::data::Dataset,
    data: &DataPass,
    nodes: &[usize],
    shapes: &[Vec<usize>],
    seed: u64,
) -> Result<(Vec<NodeStats>, usize)> {
    let mut sums: Vec<NodeStats> = nodes
        .iter()
        .map(|&i| {
            let c = shapes[i][0];
            NodeStats { taylor: vec![0.0; c], mean: vec![0.0; c], zeros: vec![0.0; c] }
        })
        .collect();
    let mut count = 0usize;
    let loader = Loader::new(
        Arc::new(ds),
        crate::data::LoaderConfig {
            batch_size: data.batch_size,
            shuffle: false,
            augment: None,
            norm: data.norm.clone(),
            seed,
            epoch: 0,
            size: Some(model.graph.image_size()?),
        },
    );
    let pb = crate::train::progress(loader.len_batches() as u64, &format!("scoring ({criterion})"));
    for batch in loader {
        let stats = net.channel_statistics(&batch.images, &batch.labels, nodes)?;
        if stats.len() != nodes.len() {
            return Err(Error::Engine(format!("asked for {} nodes' statistics, got {}", nodes.len(), stats.len())));
        }
        for ((s, t), &i) in sums.iter_mut().zip(&stats).zip(nodes) {
            let c = s.taylor.len();
            if t.taylor.len() != c || t.mean.len() != c || t.zeros.len() != c {
                let why = format!("statistics of the wrong width (expected {c})");
                return Err(Error::node(&model.graph.nodes[i].name, why));
            }
            // The engine differentiates the batch's mean loss, so each image's gradient is 1/n of
            // the gradient of its own loss: scale back, so that scores do not depend on the batch
            // size (nor weigh a smaller last batch more).
            let n = t.count as f64;
            for k in 0..c {
                s.taylor[k] += t.taylor[k] * n;
                s.mean[k] += t.mean[k];
                s.zeros[k] += t.zeros[k];
            }
        }
        count += batch.len();
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((sums, count))
}
