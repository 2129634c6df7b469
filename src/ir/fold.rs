//! BatchNorm folded into the convolution before it, for inference: a conv whose output only a
//! BatchNorm reads (and which is not the network output) takes the BatchNorm's affine map in its
//! weight and bias, and the BatchNorm goes; its readers read the conv. The same function in
//! evaluation mode, fewer ops. Export's `fold_bn` uses the same arithmetic ([`fold_into_conv`]).

use super::{Graph, HostTensor, Model, Op, Weights};
use crate::error::{Error, Result};

/// The conv weight (`[out, ...]`, `per_out` values per output channel) and bias (zeros if the
/// conv has none) that give `bn(conv(x))` for a BatchNorm of `gamma`, `beta`, `mean`, `var`, `eps`.
pub fn fold_into_conv(
    weight: &[f32],
    bias: Option<&[f32]>,
    [gamma, beta, mean, var]: [&[f32]; 4],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let out = gamma.len();
    let per_out = weight.len() / out.max(1);
    let mut w = Vec::with_capacity(weight.len());
    let mut b = Vec::with_capacity(out);
    for o in 0..out {
        let s = gamma[o] as f64 / (var[o] as f64 + eps).sqrt();
        w.extend(weight[o * per_out..(o + 1) * per_out].iter().map(|&v| (v as f64 * s) as f32));
        let b0 = bias.map_or(0.0, |b| b[o] as f64);
        b.push(((b0 - mean[o] as f64) * s + beta[o] as f64) as f32);
    }
    (w, b)
}

/// Pairs (conv index, BatchNorm index) that fold: the conv's only reader is the BatchNorm and
/// the conv is not the output.
pub fn foldable(graph: &Graph) -> Result<Vec<(usize, usize)>> {
    let ins = graph.input_indices()?;
    let consumers = graph.consumers()?;
    let out = graph.output_index()?;
    Ok(graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let Op::BatchNorm2d { .. } = n.op else { return None };
            let j = ins[i][0];
            (matches!(graph.nodes[j].op, Op::Conv2d { .. }) && consumers[j] == [i] && j != out).then_some((j, i))
        })
        .collect())
}

/// The model with every foldable BatchNorm folded into its conv (see the module).
pub fn fold_batch_norms(model: &Model) -> Result<Model> {
    let pairs = foldable(&model.graph)?;
    if pairs.is_empty() {
        return Ok(model.clone());
    }
    let g = &model.graph;
    let f32s = |key: &str| model.weights.get_f32(key);
    let mut weights = Weights::default();
    let mut nodes = g.nodes.clone();
    // BatchNorm name -> the conv that replaces it as its readers' input.
    let mut renamed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut dropped = vec![false; nodes.len()];
    for &(j, i) in &pairs {
        let (conv, bn) = (&g.nodes[j], &g.nodes[i]);
        let &Op::Conv2d { bias, out_channels, .. } = &conv.op else {
            return Err(Error::node(&conv.name, "not a conv"));
        };
        let &Op::BatchNorm2d { eps, .. } = &bn.op else { return Err(Error::node(&bn.name, "not a batch norm")) };
        let k = |s: &str| format!("{}.{s}", bn.name);
        let wkey = format!("{}.weight", conv.name);
        let bkey = format!("{}.bias", conv.name);
        let stats = [f32s(&k("weight"))?, f32s(&k("bias"))?, f32s(&k("running_mean"))?, f32s(&k("running_var"))?];
        let b0 = if bias { Some(f32s(&bkey)?) } else { None };
        let (w, b) = fold_into_conv(f32s(&wkey)?, b0, stats, eps);
        weights.insert(wkey.clone(), HostTensor::f32(model.weights.get(&wkey)?.shape.clone(), w));
        weights.insert(bkey, HostTensor::f32(vec![out_channels], b));
        if let Op::Conv2d { bias, .. } = &mut nodes[j].op {
            *bias = true;
        }
        renamed.insert(bn.name.clone(), conv.name.clone());
        dropped[i] = true;
    }
    for (key, t) in &model.weights.tensors {
        let owner = key.rsplit_once('.').map_or("", |(n, _)| n);
        let folded_bn = pairs.iter().any(|&(_, i)| g.nodes[i].name == owner);
        if !folded_bn && !weights.tensors.contains_key(key) {
            weights.insert(key.clone(), t.clone());
        }
    }
    let mut kept = Vec::with_capacity(nodes.len() - pairs.len());
    for (mut n, drop) in nodes.into_iter().zip(dropped) {
        if drop {
            continue;
        }
        for input in &mut n.inputs {
            if let Some(c) = renamed.get(input) {
                *input = c.clone();
            }
        }
        kept.push(n);
    }
    let output = renamed.get(&g.output).cloned().unwrap_or_else(|| g.output.clone());
    let graph = Graph { name: g.name.clone(), nodes: kept, output, normalize: g.normalize.clone() };
    Model::new(graph, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    #[test]
    fn folding_removes_every_batch_norm_that_follows_a_conv_alone() {
        for name in ["resnet20", "mobilenetv2", "squeezenet"] {
            let m = Model::init(zoo::build(name, 10).unwrap(), 1).unwrap();
            let f = fold_batch_norms(&m).unwrap();
            let bns = |m: &Model| m.graph.nodes.iter().filter(|n| matches!(n.op, Op::BatchNorm2d { .. })).count();
            assert_eq!(bns(&f), 0, "{name}");
            assert_eq!(f.graph.nodes.len() + bns(&m), m.graph.nodes.len(), "{name}");
            assert!(f.weights.tensors.keys().all(|k| !k.contains("running_mean")), "{name}");
        }
    }
}
