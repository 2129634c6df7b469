//! The native model format: a folder holding `graph.json` (the IR graph) and
//! `weights.safetensors` (every parameter and buffer, by PyTorch state_dict name).
//! Files are written to a temporary name, flushed and renamed, so a reader never sees half a file.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ir::{Graph, HostTensor, MAX_ELEMENTS, Model, TensorData, Weights};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

pub const GRAPH_FILE: &str = "graph.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
const FORMAT: &str = "edgeprune-graph";
const VERSION: u32 = 1;

/// Reads a graph from JSON text; `path` is used in error messages.
pub fn graph_from_json(text: &str, path: &Path) -> Result<Graph> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
    match v.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        other => return Err(Error::file(path, format!("`format` must be \"{FORMAT}\", got {other:?}"))),
    }
    match v.get("version").and_then(|f| f.as_u64()) {
        Some(1) => {}
        other => {
            return Err(Error::file(path, format!("unsupported graph version {other:?} (this build reads {VERSION})")));
        }
    }
    let graph: Graph =
        serde_json::from_value(strip_header(v)).map_err(|e| Error::file(path, format!("invalid graph: {e}")))?;
    graph.infer_shapes().map_err(|e| e.in_file(path))?;
    Ok(graph)
}

fn strip_header(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("format");
        o.remove("version");
    }
    v
}

pub fn graph_to_json(graph: &Graph) -> String {
    let mut v = serde_json::to_value(graph).expect("graphs serialise");
    if let Some(o) = v.as_object_mut() {
        let mut head = serde_json::Map::new();
        head.insert("format".into(), FORMAT.into());
        head.insert("version".into(), VERSION.into());
        head.extend(std::mem::take(o));
        *o = head;
    }
    serde_json::to_string_pretty(&v).expect("graphs serialise")
}

/// Parses safetensors bytes into host tensors (float32 and int64 only).
pub fn weights_from_safetensors(bytes: &[u8], path: &Path) -> Result<Weights> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::file(path, format!("invalid safetensors: {e}")))?;
    let mut w = Weights::default();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS);
        let n = n.ok_or_else(|| Error::file(path, format!("tensor `{name}`: shape {shape:?} is too large")))?;
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 if data.len() == n * 4 => HostTensor::f32(
                shape,
                data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            ),
            Dtype::I64 if data.len() == n * 8 => HostTensor::i64(
                shape,
                data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            ),
            Dtype::F32 | Dtype::I64 => {
                return Err(Error::file(path, format!("tensor `{name}`: {} bytes for shape {shape:?}", data.len())));
            }
            other => {
                return Err(Error::file(path, format!("tensor `{name}`: dtype {other:?} is not supported (F32, I64)")));
            }
        };
        w.insert(name, t);
    }
    Ok(w)
}

pub fn weights_to_safetensors(w: &Weights) -> Vec<u8> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = w
        .tensors
        .iter()
        .map(|(k, t)| {
            let (dt, b) = match &t.data {
                TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (k.clone(), dt, t.shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, dt, shape, b)| (k.clone(), TensorView::new(*dt, shape.clone(), b).expect("consistent tensor")))
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).expect("serialisable tensors")
}

fn read(path: &Path) -> Result<Vec<u8>> {
    super::read_file(path, super::MAX_BINARY_BYTES)
}

/// Loads a native model folder and checks that graph and weights agree.
pub fn load(dir: &Path) -> Result<Model> {
    let gpath = dir.join(GRAPH_FILE);
    let wpath = dir.join(WEIGHTS_FILE);
    let text = super::read_text(&gpath)?;
    let graph = graph_from_json(&text, &gpath)?;
    let weights = weights_from_safetensors(&read(&wpath)?, &wpath)?;
    Model::new(graph, weights).map_err(|e| e.in_file(&wpath))
}

/// Saves a model folder (created if needed), each file written atomically.
pub fn save(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights_to_safetensors(&model.weights))?;
    write_atomic(&dir.join(GRAPH_FILE), graph_to_json(&model.graph).as_bytes())
}

/// The JSON text of `v`, checked to read back as a `T`. JSON has no NaN or infinity (serde writes
/// `null` for them), so a value holding one would make a file that edgeprune itself cannot read:
/// it is refused here, before anything is written, with an error naming `path` and the field.
pub fn json_text<T: serde::Serialize + serde::de::DeserializeOwned>(path: &Path, v: &T) -> Result<String> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::file(path, e.to_string()))?;
    if let Err(e) = serde_json::from_str::<T>(&text) {
        return Err(Error::file(
            path,
            format!("refusing to write a value that would not read back (a NaN or infinity?): {e}"),
        ));
    }
    Ok(text)
}

/// Reads a JSON file written by [`write_json`] (a regular file within the text size bound); errors
/// name the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = super::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, e.to_string()))
}

/// Writes `v` as JSON to `path` atomically, after [`json_text`]'s read-back check.
pub fn write_json<T: serde::Serialize + serde::de::DeserializeOwned>(path: &Path, v: &T) -> Result<()> {
    write_atomic(path, json_text(path, v)?.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file that is flushed to disk and renamed, so
/// `path` holds either its old or its new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Op;
    use crate::zoo;

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["resnet20", "squeezenet"] {
            let m = Model::init(zoo::build(name, 10).unwrap(), 7).unwrap();
            save(&m, dir.path()).unwrap();
            let back = load(dir.path()).unwrap();
            assert_eq!(back, m);
        }
    }

    fn saved_resnet() -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().unwrap();
        let m = Model::init(zoo::build("resnet20", 10).unwrap(), 1).unwrap();
        save(&m, dir.path()).unwrap();
        (dir, m)
    }

    fn err_of(dir: &Path) -> String {
        load(dir).unwrap_err().to_string()
    }

    #[test]
    fn rejects_a_truncated_weights_file() {
        let (dir, _) = saved_resnet();
        let p = dir.path().join(WEIGHTS_FILE);
        let b = std::fs::read(&p).unwrap();
        for cut in [0, 5, 100, b.len() / 2, b.len() - 1] {
            std::fs::write(&p, &b[..cut]).unwrap();
            let e = err_of(dir.path());
            assert!(e.contains("weights.safetensors") && e.contains("invalid safetensors"), "{e}");
        }
    }

    #[test]
    fn rejects_missing_and_misshapen_tensors() {
        let (dir, m) = saved_resnet();
        let mut w = m.weights.clone();
        w.tensors.remove("layer2.0.conv1.weight");
        std::fs::write(dir.path().join(WEIGHTS_FILE), weights_to_safetensors(&w)).unwrap();
        let e = err_of(dir.path());
        assert!(e.contains("layer2.0.conv1.weight") && e.contains("missing"), "{e}");

        let mut w = m.weights.clone();
        w.insert("linear.bias", HostTensor::f32(vec![11], vec![0.0; 11]));
        std::fs::write(dir.path().join(WEIGHTS_FILE), weights_to_safetensors(&w)).unwrap();
        let e = err_of(dir.path());
        assert!(e.contains("linear.bias") && e.contains("[11]"), "{e}");

        let mut w = m.weights.clone();
        w.insert("extra.weight", HostTensor::f32(vec![1], vec![0.0]));
        std::fs::write(dir.path().join(WEIGHTS_FILE), weights_to_safetensors(&w)).unwrap();
        assert!(err_of(dir.path()).contains("extra.weight"));
    }

    #[test]
    fn rejects_bad_graphs_naming_the_node() {
        let (dir, m) = saved_resnet();
        let gp = dir.path().join(GRAPH_FILE);
        let text = graph_to_json(&m.graph);
        let mut wrong_channels = m.graph.clone();
        if let Op::Conv2d { in_channels, .. } = &mut wrong_channels.nodes[m.graph.index()["layer2.0.conv1"]].op {
            *in_channels = 15;
        }
        let mut dangling = m.graph.clone();
        dangling.nodes[5].inputs = vec!["nowhere".into()];
        let cases = [
            (text.replace("\"global_avg_pool\"", "\"fancy_pool\""), "fancy_pool"),
            (graph_to_json(&wrong_channels), "layer2.0.conv1"),
            (graph_to_json(&dangling), "nowhere"),
            (text.replace("\"edgeprune-graph\"", "\"other\""), "format"),
            (text[..text.len() / 2].to_string(), "invalid JSON"),
            (text.replace("\"stride\"", "\"strides\""), "strides"),
        ];
        for (bad, needle) in cases {
            assert!(bad != text, "the mutation for {needle} must apply");
            std::fs::write(&gp, &bad).unwrap();
            let e = err_of(dir.path());
            assert!(e.contains(needle) && e.contains("graph.json"), "expected `{needle}` in: {e}");
        }
    }
}
