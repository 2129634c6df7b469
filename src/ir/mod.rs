//! The graph IR: a network as data (nodes with a closed op enum), its shapes, and its weights
//! keyed by PyTorch state_dict names. Nothing here knows about the compute engine.

pub mod fold;
mod graph;
mod op;
mod tensor;

pub use graph::{Graph, MAX_ELEMENTS, Node, Normalize, Shape};
pub use op::{ChannelMap, DType, Op, Slicing, TensorKind, TensorSpec};
pub use tensor::{HostTensor, TensorData, Weights};

use crate::error::{Error, Result};

/// A network: its graph and every tensor the graph names.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub graph: Graph,
    pub weights: Weights,
}

impl Model {
    /// Builds a model after checking that the weights hold exactly the graph's tensors, with
    /// the right shapes and types.
    pub fn new(graph: Graph, weights: Weights) -> Result<Self> {
        let m = Model { graph, weights };
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<Vec<Shape>> {
        let shapes = self.graph.infer_shapes()?;
        let specs = self.graph.tensor_specs();
        for (key, spec) in &specs {
            let t = self.weights.tensors.get(key).ok_or_else(|| Error::tensor(key, "missing from the weights"))?;
            if t.shape != spec.shape {
                return Err(Error::tensor(key, format!("shape {:?}, the graph expects {:?}", t.shape, spec.shape)));
            }
            if t.dtype() != spec.dtype {
                return Err(Error::tensor(key, format!("dtype {:?}, the graph expects {:?}", t.dtype(), spec.dtype)));
            }
            let len = match &t.data {
                TensorData::F32(v) => v.len(),
                TensorData::I64(v) => v.len(),
            };
            if len != t.numel() {
                return Err(Error::tensor(key, format!("holds {len} values for shape {:?}", t.shape)));
            }
        }
        if self.weights.tensors.len() != specs.len() {
            let known: std::collections::HashSet<&str> = specs.iter().map(|(k, _)| k.as_str()).collect();
            if let Some(extra) = self.weights.tensors.keys().find(|k| !known.contains(k.as_str())) {
                return Err(Error::tensor(extra, "not used by any node of the graph"));
            }
        }
        Ok(shapes)
    }

    /// Refuses weights that cannot give finite outputs: a NaN or infinite value in any tensor, or a
    /// negative BatchNorm running variance. The error names the tensor and the element.
    pub fn check_finite(&self) -> Result<()> {
        if let Some((key, i, v)) = self.weights.first_non_finite() {
            return Err(Error::tensor(key, format!("element {i} is {v}: the model's outputs would not be finite")));
        }
        for (key, t) in &self.weights.tensors {
            if key.ends_with(".running_var")
                && let Some((i, v)) = t.as_f32().and_then(|v| v.iter().enumerate().find(|(_, x)| **x < 0.0))
            {
                return Err(Error::tensor(
                    key,
                    format!("element {i} is {v}: a variance cannot be negative, the model's outputs would be NaN"),
                ));
            }
        }
        Ok(())
    }

    /// Fresh weights for `graph`, initialised as PyTorch initialises its modules
    /// (kaiming-uniform with a = sqrt(5) for conv and linear weights, uniform(+-1/sqrt(fan_in))
    /// biases; BatchNorm weight 1, bias 0, mean 0, var 1).
    pub fn init(graph: Graph, seed: u64) -> Result<Self> {
        use rand::{Rng, SeedableRng};
        graph.infer_shapes()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut weights = Weights::default();
        for node in &graph.nodes {
            let fan_in = match node.op {
                Op::Conv2d { in_channels, kernel_size, groups, .. } => {
                    (in_channels / groups) * kernel_size[0] * kernel_size[1]
                }
                Op::Linear { in_features, .. } => in_features,
                _ => 0,
            };
            for spec in node.op.tensors() {
                let key = format!("{}.{}", node.name, spec.suffix);
                let n: usize = spec.shape.iter().product();
                let t = match (&node.op, spec.suffix) {
                    (Op::BatchNorm2d { .. }, "weight" | "running_var") => HostTensor::f32(spec.shape, vec![1.0; n]),
                    (Op::BatchNorm2d { .. }, _) => HostTensor::zeros(spec.shape, spec.dtype),
                    (Op::LayerNorm2d { .. }, "weight") => HostTensor::f32(spec.shape, vec![1.0; n]),
                    (Op::LayerNorm2d { .. }, _) => HostTensor::zeros(spec.shape, spec.dtype),
                    // torchvision's ConvNeXt starts its layer scales at 1e-6.
                    (Op::LayerScale { .. }, _) => HostTensor::f32(spec.shape, vec![1e-6; n]),
                    (_, "weight" | "bias") => {
                        // kaiming_uniform_(a=sqrt(5)) gives bound = 1/sqrt(fan_in), as does the bias.
                        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                        HostTensor::f32(spec.shape, (0..n).map(|_| rng.random_range(-bound..=bound)).collect())
                    }
                    _ => HostTensor::zeros(spec.shape, spec.dtype),
                };
                weights.insert(key, t);
            }
        }
        Model::new(graph, weights)
    }
}
