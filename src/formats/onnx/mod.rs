//! ONNX models in and out: [`load`] imports a `.onnx` file into the IR (opsets 13 to 18, as
//! `torch.onnx.export` writes them, with BatchNorm kept or folded into the convolutions), and
//! [`save`] exports any IR model to ONNX opset 17 for onnxruntime and other runtimes.
//!
//! Import maps Conv, BatchNormalization, Relu, Clip(0, 6), MaxPool, AveragePool,
//! GlobalAveragePool, ReduceMean (spatial axes), Add, Sum, Mul, Sigmoid, HardSwish, HardSigmoid
//! (torch's), Concat (channels), Flatten (axis 1),
//! Reshape-as-flatten, Gemm, MatMul + Add, Dropout and Identity onto the IR's ops, Slice along the
//! channels onto a channel slice, and Gather of channels by a permutation or ShuffleNet's channel
//! shuffle (Reshape to [N, g, C/g, H, W], Transpose (0, 2, 1, 3, 4), Reshape back) onto a channel
//! permutation; ConvNeXt's channels-last stretches (Transpose (0, 2, 3, 1) ... (0, 3, 1, 2)) with
//! LayerNormalization over the channels, MatMul + Add over the channels and exact GELU (Div,
//! Erf, Add, Mul, Mul) onto LayerNorm2d, Linear and GELU, and a Mul by a [C, 1, 1] constant onto a
//! layer scale; Constant nodes and initializers provide their constant inputs, and Shape, Gather,
//! Unsqueeze, Concat, Slice, Add, Sub, Mul, Div and Cast on shapes are evaluated at import (the
//! batch size of `x.view(x.size(0), -1)`, the halves of `torch.chunk`). Nodes and weights take PyTorch names where the
//! initializers carry them (`layer1.0.conv1.weight` makes node `layer1.0.conv1`), else a name made
//! from the ONNX node name (`/layer1/layer1.0/relu/Relu` makes `layer1.0.relu`). Anything else is
//! an error naming the file, the node, its op type and the opset, and listing the supported ops.
//!
//! Files are untrusted: protobuf lengths are checked by the decoder against the bytes present,
//! every tensor's declared size against the data it actually holds before anything is allocated
//! for it, the graph for dangling inputs, duplicate outputs and cycles, and every attribute for
//! its type and range. Errors name the file and the node; nothing panics.
//!
//! Export writes one ONNX node per IR node (ReLU6 as Clip with constant bounds, Linear as Gemm,
//! Add of three or more inputs as Sum, a channel permutation as Gather, a channel slice as Slice,
//! LayerNorm2d, a Linear over channels and GELU in torch's forms listed above), initializers named by the state_dict keys, a dynamic
//! batch dimension, and the graph's name and input normalisation as metadata, so that import
//! after export gives back the same graph and weights. BatchNorm stays BatchNormalization, or
//! with [`ExportOptions::fold_bn`] is folded into the convolution that feeds only it.

mod export;
mod import;
pub mod proto;

/// The ONNX op types import understands (default domain), from its converter table.
pub use import::supported_ops;
#[cfg(test)]
mod tests;

use std::path::Path;

use prost::Message;

use crate::error::Result;
use crate::ir::Model;

/// Default-domain opsets that import accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=18;

/// The opset export writes.
pub const EXPORT_OPSET: i64 = 17;

/// Metadata keys export writes and import reads back.
pub const META_NAME: &str = "edgeprune.name";
pub const META_NORMALIZE: &str = "edgeprune.normalize";

/// How [`save`] writes a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Fold each BatchNorm into the convolution before it, where that convolution feeds only the
    /// BatchNorm (inference-only graphs; the BN parameters and statistics are gone).
    pub fold_bn: bool,
}

/// Imports an ONNX file.
pub fn load(path: &Path) -> Result<Model> {
    let bytes = crate::formats::read_file(path, crate::formats::MAX_BINARY_BYTES)?;
    from_bytes(&bytes, path)
}

/// Imports an ONNX model from its bytes; `path` names it in error messages.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Model> {
    import::import(bytes, path)
}

/// The ONNX model of an IR model.
pub fn to_proto(model: &Model, opts: ExportOptions) -> Result<proto::ModelProto> {
    export::export(model, opts)
}

/// The bytes of the ONNX file of an IR model.
pub fn to_bytes(model: &Model, opts: ExportOptions) -> Result<Vec<u8>> {
    Ok(to_proto(model, opts)?.encode_to_vec())
}

/// Exports a model to an ONNX file, written atomically.
pub fn save(model: &Model, path: &Path, opts: ExportOptions) -> Result<()> {
    let bytes = to_bytes(model, opts).map_err(|e| e.in_file(path))?;
    super::native::write_atomic(path, &bytes)
}
