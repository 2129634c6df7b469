//! Model files: the native format (JSON graph + safetensors) and ONNX (import and export).

pub mod atomic;
pub mod native;
pub mod onnx;
pub mod outdir;

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Model;

/// Loads a model from a path: a native model folder (holding graph.json and weights.safetensors)
/// or an ONNX file (`.onnx`).
pub fn load_model(path: &Path) -> Result<Model> {
    if path.is_dir() {
        native::load(path)
    } else if is_onnx(path) {
        onnx::load(path)
    } else if path.exists() {
        Err(Error::file(
            path,
            "not a model folder (expected a folder with graph.json and weights.safetensors) or an .onnx file",
        ))
    } else {
        Err(Error::file(path, "no such model folder or .onnx file"))
    }
}

/// Whether a path names an ONNX file (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Exports a model to an ONNX file (opset 17), BatchNorm kept or folded into the convolutions.
pub fn export_onnx(model: &Model, path: &Path, fold_bn: bool) -> Result<()> {
    // A deployed model with a NaN or a negative variance gives NaN on every input.
    model.check_finite().map_err(|e| Error::file(path, format!("refusing to export: {e}")))?;
    onnx::save(model, path, onnx::ExportOptions { fold_bn })
}
