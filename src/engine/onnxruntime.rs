//! ONNX Runtime, the runtime most edge deployments run, as an inference backend: the model is
//! exported to ONNX (as `edgeprune export` writes it) and run by ONNX Runtime with its default
//! graph optimisations, through the `ort` crate: on the CPU execution provider, or for
//! `--device cuda[:N]` on TensorRT's (where the library has it) and CUDA's, with the CPU's for
//! whatever they do not take. The runtime library is
//! loaded at run time, from `$EDGEPRUNE_ONNXRUNTIME` (a `libonnxruntime.so`) or else from the
//! cache where `make setup` puts the onnxruntime wheel's (`scripts/setup-onnxruntime.sh`); without
//! it, a clear error, and the rest of edgeprune works.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::{Device, Infer};
use crate::error::{Error, Result};
use crate::formats::onnx;
use crate::ir::Model;

/// The ONNX Runtime version `make setup` installs.
pub const VERSION: &str = "1.32.0";

/// Where the runtime library is looked for: `$EDGEPRUNE_ONNXRUNTIME`, else the cache.
pub fn library_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGEPRUNE_ONNXRUNTIME") {
        return Some(PathBuf::from(p));
    }
    Some(crate::formats::cache_root()?.join(format!("onnxruntime-{VERSION}/libonnxruntime.so")))
}

/// The process's ONNX Runtime environment, made on first use (the library loads once).
fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = library_path().ok_or("no HOME to find the cache in; set EDGEPRUNE_ONNXRUNTIME")?;
        if !path.exists() {
            return Err(format!(
                "{} does not exist: run `make setup` (it puts the onnxruntime wheel's library there) or set \
                 EDGEPRUNE_ONNXRUNTIME to a libonnxruntime.so",
                path.display()
            ));
        }
        let builder = ort::init_from(&path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        builder.with_name("edgeprune").build().map_err(|e| format!("{}: {e}", path.display()))
    });
    env.as_ref().map_err(|e| Error::Engine(format!("ONNX Runtime: {e}")))
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Engine(format!("ONNX Runtime: {e}"))
}

/// The execution providers for `device`, in the order ONNX Runtime should try them. A CUDA
/// device needs a library built with the CUDA execution provider (the onnxruntime-gpu wheel's);
/// TensorRT's comes first where the library has it too.
fn providers(device: Device) -> Result<Vec<ort::ep::ExecutionProviderDispatch>> {
    use ort::ep::ExecutionProvider;
    let Device::Cuda(n) = device else { return Ok(Vec::new()) };
    let id = i32::try_from(n).map_err(|_| Error::config("device", format!("cuda:{n} is not a device number")))?;
    environment()?;
    if !ort::ep::CUDA::is_available().map_err(ort_err)? {
        return Err(Error::Engine(format!(
            "ONNX Runtime: the library {} has no CUDA execution provider (the onnxruntime wheel `make setup` installs \
             is the CPU build): for --device {device}, set EDGEPRUNE_ONNXRUNTIME to the libonnxruntime.so of an \
             onnxruntime-gpu install, or use --runtime libtorch",
            library_path().map_or_else(|| "?".into(), |p| p.display().to_string())
        )));
    }
    let mut eps = Vec::new();
    if ort::ep::TensorRT::is_available().map_err(ort_err)? {
        eps.push(ort::ep::TensorRT::default().with_device_id(id).build());
    }
    eps.push(ort::ep::CUDA::default().with_device_id(id).build().error_on_failure());
    Ok(eps)
}

/// A session builder as every session here is made: all graph optimisations, `threads` intra-op
/// threads (what `optimized_ops` reads off is what `OrtNetwork` runs).
fn builder(env: &Environment, threads: usize) -> Result<ort::session::builder::SessionBuilder> {
    Session::builder(env)
        .map_err(ort_err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort_err)?
        .with_intra_threads(threads.max(1))
        .map_err(ort_err)
}

/// The nodes (domain, op type) of the graph ONNX Runtime's CPU provider runs for `model` after
/// its graph optimisations (as [`OrtNetwork`] sets them): where it runs blocked layouts and
/// reorders between them.
pub fn optimized_ops(model: &Model) -> Result<Vec<(String, String)>> {
    use prost::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let bytes = onnx::to_bytes(model, onnx::ExportOptions::default())?;
    let env = environment()?;
    let path = std::env::temp_dir().join(format!(
        "edgeprune-ort-optimized-{}-{}.onnx",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let session =
        builder(env, 1)?.with_optimized_model_path(&path).map_err(ort_err)?.commit_from_memory(&bytes).map_err(ort_err);
    let read = session.and_then(|s| {
        drop(s);
        std::fs::read(&path).map_err(|e| Error::io(&path, e))
    });
    let _ = std::fs::remove_file(&path);
    let proto =
        onnx::proto::ModelProto::decode(read?.as_slice()).map_err(|e| ort_err(format!("its optimised graph: {e}")))?;
    Ok(proto
        .graph
        .map(|g| g.node.into_iter().map(|n| (n.domain.unwrap_or_default(), n.op_type.unwrap_or_default())).collect())
        .unwrap_or_default())
}

/// A model in an ONNX Runtime session.
pub struct OrtNetwork {
    session: Mutex<Session>,
    input: String,
    shape: Vec<usize>,
    classes: usize,
}

impl OrtNetwork {
    /// The model exported to ONNX and loaded into a session on `device` (CPU work on `threads`
    /// threads).
    pub fn new(model: &Model, device: Device, threads: usize) -> Result<Self> {
        let shapes = model.validate()?;
        let out = model.graph.output_index()?;
        let classes = match shapes[out].as_slice() {
            [k] => *k,
            s => return Err(Error::node(&model.graph.output, format!("the output must be flat, got {s:?}"))),
        };
        let bytes = onnx::to_bytes(model, onnx::ExportOptions::default())?;
        let env = environment()?;
        let eps = providers(device)?;
        let session = builder(env, threads)?
            .with_execution_providers(eps)
            .map_err(ort_err)?
            .commit_from_memory(&bytes)
            .map_err(ort_err)?;
        let input = session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| ort_err("no input"))?;
        Ok(OrtNetwork { session: Mutex::new(session), input, shape: model.graph.input_shape()?.to_vec(), classes })
    }
}

impl Infer for OrtNetwork {
    fn num_outputs(&self) -> Result<usize> {
        Ok(self.classes)
    }

    fn predict(&self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        let per: usize = self.shape.iter().product();
        if images.len() != n * per {
            return Err(Error::Engine(format!("{} values for {n} images of {:?}", images.len(), self.shape)));
        }
        let mut dims = vec![n];
        dims.extend(&self.shape);
        let x = Tensor::from_array((dims, images.to_vec())).map_err(ort_err)?;
        let mut session = self.session.lock().map_err(|_| ort_err("a previous run panicked"))?;
        let out = session.run(ort::inputs![self.input.as_str() => x]).map_err(ort_err)?;
        let (shape, y) = out[0].try_extract_tensor::<f32>().map_err(ort_err)?;
        if y.len() != n * self.classes {
            return Err(ort_err(format!("output of shape {shape:?}, expected [{n}, {}]", self.classes)));
        }
        Ok(y.to_vec())
    }
}
