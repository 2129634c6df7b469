//! Constant tensors of an ONNX file (initializers, Constant nodes): decoding, with every size checked
//! against what the file holds, and the values import tracks (constants, activations, shapes).

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant value: an initializer, a Constant node's output, or an Identity of one. `name` is
/// the ONNX value name it is bound to (the PyTorch parameter name in torch exports).
#[derive(Debug, Clone)]
pub(super) struct Const {
    pub(super) name: String,
    pub(super) dims: Vec<usize>,
    pub(super) data: Data,
}

impl Const {
    pub(super) fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as f32 (integers converted).
    pub(super) fn f32s(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    pub(super) fn i64s(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    pub(super) fn scalar(&self) -> Option<f64> {
        match &self.data {
            Data::F32(v) if v.len() == 1 => Some(v[0] as f64),
            Data::I64(v) if v.len() == 1 => Some(v[0] as f64),
            _ => None,
        }
    }
}

/// What an ONNX value name stands for during the import.
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// The output of an IR node (a feature map computed by the network).
    Act(String),
    Const(Rc<Const>),
    /// A shape computed from a feature map, as `x.view(x.size(0), -1)` exports it.
    Shape(ShapeVal),
    /// A feature map [N, C, H, W] viewed as [N, g, C/g, H, W] (`transposed`: then as
    /// [N, C/g, g, H, W]): a channel shuffle under way, see `channels.rs`.
    Grouped {
        act: String,
        groups: usize,
        transposed: bool,
    },
    /// An IR node's output as the graph sees it transposed to channels last (NHWC), see
    /// `channels_last.rs`.
    Nhwc(String),
    /// A step of an exact GELU on a feature map, see `channels_last.rs`.
    Gelu {
        map: super::channels_last::Map,
        stage: super::channels_last::GeluStage,
    },
    /// A value edgeprune cannot use, with the reason (reported only if something live reads it).
    Bad(String),
}

/// A shape vector computed by Shape, Gather, Unsqueeze and Concat nodes: its entries, `None` for
/// the batch size (known only at run time); `scalar` for one entry picked by a Gather.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ShapeVal {
    pub(super) dims: Vec<Option<i64>>,
    pub(super) scalar: bool,
}

/// Why a tensor could not be read: `Invalid` is a broken file (always an error), `Unsupported` a
/// valid tensor edgeprune has no use for (an error only when a node reads it).
pub(super) enum TensorErr {
    Invalid(String),
    Unsupported(String),
}

/// Reads a TensorProto's values, checking the declared shape against the data present first.
pub(super) fn read_tensor(t: &TensorProto, name: &str) -> std::result::Result<Const, TensorErr> {
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    for &d in &t.dims {
        match usize::try_from(d) {
            Ok(d) if d <= MAX_ELEMENTS => dims.push(d),
            _ => {
                return Err(TensorErr::Invalid(format!(
                    "dimension {d} in shape {:?} is negative or too large",
                    t.dims
                )));
            }
        }
    }
    let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS);
    let numel = numel.ok_or_else(|| TensorErr::Invalid(format!("shape {:?} is too large", t.dims)))?;
    if t.data_location == Some(DATA_LOCATION_EXTERNAL) || !t.external_data.is_empty() {
        return Err(TensorErr::Unsupported("its data is in an external file, which edgeprune does not read".into()));
    }
    if t.segment.is_some() {
        return Err(TensorErr::Unsupported("it is a segment of a larger tensor".into()));
    }
    let dtype = t.data_type.unwrap_or(0);
    let elem = match dtype {
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        dt::DOUBLE | dt::INT64 | dt::UINT64 => 8,
        dt::INT16 | dt::UINT16 => 2,
        dt::INT8 | dt::UINT8 | dt::BOOL => 1,
        other => {
            return Err(TensorErr::Unsupported(format!(
                "its data type {} is not one edgeprune reads (FLOAT, DOUBLE, integers, BOOL)",
                dt::name(other)
            )));
        }
    };
    let short = |have: usize, unit: &str| {
        TensorErr::Invalid(format!(
            "declares shape {:?} ({numel} values of {}) but holds {have} {unit}",
            t.dims,
            dt::name(dtype)
        ))
    };
    if let Some(raw) = &t.raw_data {
        // numel * elem cannot overflow: numel <= 2^31 and elem <= 8.
        if raw.len() != numel * elem {
            return Err(short(raw.len(), "bytes"));
        }
        let data = match dtype {
            dt::FLOAT => Data::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            dt::DOUBLE => Data::F32(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect(),
            ),
            dt::INT64 | dt::UINT64 => Data::I64(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            dt::INT32 => {
                Data::I64(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            dt::UINT32 => {
                Data::I64(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            dt::INT16 => Data::I64(raw.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            dt::UINT16 => Data::I64(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            dt::INT8 => Data::I64(raw.iter().map(|&b| b as i8 as i64).collect()),
            _ => Data::I64(raw.iter().map(|&b| b as i64).collect()),
        };
        return Ok(Const { name: name.to_string(), dims, data });
    }
    let data = match dtype {
        dt::FLOAT if t.float_data.len() == numel => Data::F32(t.float_data.clone()),
        dt::FLOAT => return Err(short(t.float_data.len(), "float_data values")),
        dt::DOUBLE if t.double_data.len() == numel => Data::F32(t.double_data.iter().map(|&x| x as f32).collect()),
        dt::DOUBLE => return Err(short(t.double_data.len(), "double_data values")),
        dt::INT64 if t.int64_data.len() == numel => Data::I64(t.int64_data.clone()),
        dt::INT64 => return Err(short(t.int64_data.len(), "int64_data values")),
        dt::UINT32 | dt::UINT64 if t.uint64_data.len() == numel => {
            Data::I64(t.uint64_data.iter().map(|&x| x.min(i64::MAX as u64) as i64).collect())
        }
        dt::UINT32 | dt::UINT64 => return Err(short(t.uint64_data.len(), "uint64_data values")),
        _ if t.int32_data.len() == numel => Data::I64(t.int32_data.iter().map(|&x| x as i64).collect()),
        _ => return Err(short(t.int32_data.len(), "int32_data values")),
    };
    Ok(Const { name: name.to_string(), dims, data })
}
