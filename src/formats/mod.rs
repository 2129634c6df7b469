//! Model files: the native format (JSON graph + safetensors).

pub mod native;

use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::Model;

/// Loads a model from a path: a native model folder (holding graph.json and weights.safetensors).
pub fn load_model(path: &Path) -> Result<Model> {
    if path.is_dir() {
        native::load(path)
    } else if path.exists() {
        Err(Error::file(path, "not a model folder (expected a folder with graph.json and weights.safetensors)"))
    } else {
        Err(Error::file(path, "no such model folder"))
    }
}
