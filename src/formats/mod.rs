//! Model files: the native format (JSON graph + safetensors) and ONNX (import and export).

pub mod atomic;
pub mod native;
pub mod onnx;
pub mod outdir;

/// The cache outside any checkout that `make setup` fills and edgeprune reads (libtorch, ONNX
/// Runtime, decoded datasets): `$EDGEPRUNE_CACHE`, else `~/.cache/edgeprune`; None without HOME.
pub fn cache_root() -> Option<std::path::PathBuf> {
    match std::env::var_os("EDGEPRUNE_CACHE") {
        Some(dir) => Some(std::path::PathBuf::from(dir)),
        None => Some(std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/edgeprune")),
    }
}

/// Serde through a type's `Display` and `FromStr`, for typed recipe keys written as strings
/// (`criterion = "paper"`, `device = "cuda:0"`): a bad value is an error naming the key when the
/// file is read, not when the value is first used.
pub mod via_str {
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

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

/// Largest text file edgeprune reads (graphs, recipes, plans, run states): 256 MiB.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;
/// Largest tensor file edgeprune reads (safetensors, ONNX, CIFAR batches): 64 GiB.
pub const MAX_BINARY_BYTES: u64 = 64 << 30;

/// Reads a whole file that must be a regular file (after following links) of at most `max`
/// bytes: a FIFO would block forever and a link to /dev/zero would read until memory runs out.
pub fn read_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::file(path, "is not a regular file (a device, FIFO or socket?); refusing to read it"));
    }
    if meta.len() > max {
        return Err(Error::file(path, format!("is {} bytes, more than the {max} this file may hold", meta.len())));
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::file(path, format!("grew past {max} bytes while it was read")));
    }
    Ok(bytes)
}

/// [`read_file`] of a UTF-8 text file of at most [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    String::from_utf8(read_file(path, MAX_TEXT_BYTES)?).map_err(|_| Error::file(path, "is not UTF-8 text"))
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
