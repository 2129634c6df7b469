//! Cost model of a graph: per node output shape, parameters, multiply-accumulates and activation
//! memory, and their totals. GOps counts 2 operations per multiply-accumulate of conv and linear
//! layers, per image.

use serde::Serialize;

use crate::error::Result;
use crate::ir::{Graph, Op, TensorKind};

#[derive(Debug, Clone, Serialize)]
pub struct NodeCost {
    pub name: String,
    pub op: String,
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub macs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub nodes: Vec<NodeCost>,
    pub params: usize,
    pub macs: u64,
    /// Giga-operations per image (2 x MACs / 1e9).
    pub gops: f64,
    /// Bytes of float32 parameters and buffers.
    pub weight_bytes: usize,
    /// Sum of all float32 activations of one image (what a training step keeps per image).
    pub activation_bytes: usize,
}

pub fn cost(graph: &Graph) -> Result<Cost> {
    let shapes = graph.infer_shapes()?;
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    let (mut params, mut macs, mut weight_bytes, mut act) = (0usize, 0u64, 0usize, 0usize);
    for (node, shape) in graph.nodes.iter().zip(&shapes) {
        let specs = node.op.tensors();
        let p: usize =
            specs.iter().filter(|s| s.kind == TensorKind::Parameter).map(|s| s.shape.iter().product::<usize>()).sum();
        weight_bytes += specs.iter().map(|s| s.shape.iter().product::<usize>() * 4).sum::<usize>();
        let m = node.op.macs(shape);
        if !matches!(node.op, Op::Input { .. }) {
            act += shape.iter().product::<usize>() * 4;
        }
        params += p;
        // Shape inference bounds every tensor and activation, not their sum over many nodes.
        macs = macs.saturating_add(m);
        nodes.push(NodeCost {
            name: node.name.clone(),
            op: node.op.type_name().to_string(),
            output_shape: shape.clone(),
            params: p,
            macs: m,
        });
    }
    Ok(Cost { nodes, params, macs, gops: 2.0 * macs as f64 / 1e9, weight_bytes, activation_bytes: act })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet20_costs() {
        let c = cost(&crate::zoo::build("resnet20", 10).unwrap()).unwrap();
        assert_eq!(c.params, 278_324 - 90 * 65);
        // ResNet-20 is ~41 MMACs per 32x32 image (He et al. report 41M FLOPs as MACs).
        assert!((40_000_000..43_000_000).contains(&c.macs), "{}", c.macs);
    }
}
