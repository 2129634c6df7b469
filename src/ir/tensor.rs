//! Weights on the host, keyed by PyTorch state_dict names. Pure Rust: analysis, criteria and
//! surgery work on these without the engine.

use std::collections::BTreeMap;

use super::op::DType;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A dense, row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data: TensorData::F32(data) }
    }
    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data: TensorData::I64(data) }
    }
    pub fn zeros(shape: Vec<usize>, dtype: DType) -> Self {
        let n = shape.iter().product();
        match dtype {
            DType::F32 => Self::f32(shape, vec![0.0; n]),
            DType::I64 => Self::i64(shape, vec![0; n]),
        }
    }
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
        }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }
}

/// All tensors of a model (parameters and buffers), by state_dict key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    pub tensors: BTreeMap<String, HostTensor>,
}

impl Weights {
    pub fn get(&self, key: &str) -> Result<&HostTensor> {
        self.tensors.get(key).ok_or_else(|| Error::tensor(key, "missing"))
    }
    pub fn get_f32(&self, key: &str) -> Result<&[f32]> {
        self.get(key)?.as_f32().ok_or_else(|| Error::tensor(key, "expected float32"))
    }
    pub fn insert(&mut self, key: impl Into<String>, t: HostTensor) {
        self.tensors.insert(key.into(), t);
    }

    /// The first tensor holding a NaN or an infinity, with the index and value of that element.
    pub fn first_non_finite(&self) -> Option<(&str, usize, f32)> {
        self.tensors.iter().find_map(|(k, t)| {
            let v = t.as_f32()?;
            v.iter().position(|x| !x.is_finite()).map(|i| (k.as_str(), i, v[i]))
        })
    }
}
