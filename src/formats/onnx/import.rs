//! ONNX -> IR: decodes a model, checks the graph's structure (unique outputs, every input defined,
//! no cycles), keeps the nodes the output depends on, and maps them one by one onto IR nodes.
//! Constant inputs (initializers, Constant nodes, Identity of either) are tracked as values and
//! become the weights of the nodes that read them.
//!
//! Every size a file declares is checked against what it holds before anything is allocated for
//! it; every attribute is checked for its type and range; every error names the file and the
//! ONNX node (op type and opset too).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use prost::Message;

use super::proto::{
    AttributeProto, DATA_LOCATION_EXTERNAL, GraphProto, ModelProto, NodeProto, TensorProto, TypeProtoValue,
    ValueInfoProto, attribute_type as at, data_type as dt,
};
use super::{META_NAME, META_NORMALIZE, OPSETS, SUPPORTED_OPS};
use crate::error::{Error, Result};
use crate::ir::{DType, Graph, HostTensor, MAX_ELEMENTS, Model, Node, Normalize, Op, Weights};

/// The largest kernel size, stride, padding or dilation accepted from an attribute.
const MAX_ATTR: i64 = 1 << 16;

/// Names torch.onnx gives graphs, replaced by the file name on import.
const GENERIC_GRAPH_NAMES: &[&str] = &["main_graph", "torch_jit", "torch-jit-export", ""];

#[derive(Debug, Clone, PartialEq)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant value: an initializer, a Constant node's output, or an Identity of one. `name` is
/// the ONNX value name it is bound to (the PyTorch parameter name in torch exports).
#[derive(Debug, Clone)]
struct Const {
    name: String,
    dims: Vec<usize>,
    data: Data,
}

impl Const {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The values as f32 (integers converted).
    fn f32s(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn i64s(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    fn scalar(&self) -> Option<f64> {
        match &self.data {
            Data::F32(v) if v.len() == 1 => Some(v[0] as f64),
            Data::I64(v) if v.len() == 1 => Some(v[0] as f64),
            _ => None,
        }
    }
}

/// What an ONNX value name stands for during the import.
#[derive(Debug, Clone)]
enum Val {
    /// The output of an IR node (a feature map computed by the network).
    Act(String),
    Const(Rc<Const>),
    /// A shape computed from a feature map, as `x.view(x.size(0), -1)` exports it.
    Shape(ShapeVal),
    /// A value edgeprune cannot use, with the reason (reported only if something live reads it).
    Bad(String),
}

/// A shape vector computed by Shape, Gather, Unsqueeze and Concat nodes: its entries, `None` for
/// the batch size (known only at run time); `scalar` for one entry picked by a Gather.
#[derive(Debug, Clone, PartialEq)]
struct ShapeVal {
    dims: Vec<Option<i64>>,
    scalar: bool,
}

/// Why a tensor could not be read: `Invalid` is a broken file (always an error), `Unsupported` a
/// valid tensor edgeprune has no use for (an error only when a node reads it).
enum TensorErr {
    Invalid(String),
    Unsupported(String),
}

/// Reads a TensorProto's values, checking the declared shape against the data present first.
fn read_tensor(t: &TensorProto, name: &str) -> std::result::Result<Const, TensorErr> {
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

/// Imports a model from its bytes.
pub fn import(bytes: &[u8], path: &Path) -> Result<Model> {
    if bytes.is_empty() {
        return Err(Error::file(path, "the file is empty, not an ONNX model"));
    }
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::file(path, format!("not a valid ONNX model (protobuf decoding failed: {e})")))?;
    let mut opset = None;
    for o in &model.opset_import {
        if matches!(o.domain(), "" | "ai.onnx") {
            opset = Some(o.version());
        }
    }
    let opset = opset.ok_or_else(|| {
        Error::file(path, "the model imports no opset of the default ONNX domain (is this an ONNX model?)")
    })?;
    if !OPSETS.contains(&opset) {
        return Err(Error::file(
            path,
            format!(
                "opset {opset} is not supported: edgeprune imports opsets {} to {} (re-export with \
                 torch.onnx.export(..., opset_version=17))",
                OPSETS.start(),
                OPSETS.end()
            ),
        ));
    }
    let graph = model.graph.as_ref().ok_or_else(|| Error::file(path, "the model has no graph"))?;
    let meta: HashMap<&str, &str> = model.metadata_props.iter().map(|e| (e.key(), e.value())).collect();
    let mut imp = Importer::new(path, opset);
    imp.run(graph, &meta)
}

struct Importer {
    path: PathBuf,
    opset: i64,
    values: HashMap<String, Val>,
    nodes: Vec<Node>,
    weights: Weights,
    /// IR node names taken.
    used: HashSet<String>,
    /// Names that nodes owning parameters will take (kept free for them).
    reserved: HashSet<String>,
    /// IR node -> the ONNX node it came from, for error messages.
    origin: HashMap<String, String>,
    /// Linear nodes made from a MatMul that may still take an Add's bias: IR name -> whether the
    /// name came from a parameter.
    matmuls: HashMap<String, bool>,
    /// How many live readers each ONNX value has (the graph output counts as one).
    uses: HashMap<String, usize>,
    /// Scope (torch module path) of each live ONNX node name -> how many IR-making nodes share it.
    scopes: HashMap<String, usize>,
    /// Scopes that hold other scopes (modules with submodules).
    parent_scopes: HashSet<String>,
    /// Shapes of `nodes` when last inferred (for Shape nodes).
    shapes: Vec<Vec<usize>>,
    /// Reshape-as-flatten nodes with a literal feature count to check once shapes are known.
    flatten_checks: Vec<(String, usize)>,
}

/// The node's description in messages: its name, or its first output when it has none.
fn describe(n: &NodeProto) -> String {
    if !n.name().is_empty() {
        n.name().to_string()
    } else {
        format!("<unnamed, output {:?}>", n.output.first().map(String::as_str).unwrap_or(""))
    }
}

fn op_label(n: &NodeProto) -> String {
    match n.domain() {
        "" | "ai.onnx" => n.op_type().to_string(),
        d => format!("{d}::{}", n.op_type()),
    }
}

/// The torch module path and op part of a torch.onnx node name (`/layer1/layer1.0/conv1/Conv`
/// -> (`layer1.0.conv1`, `Conv`)); None for names not in that form.
fn torch_scope(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (last, scope) = parts.split_last()?;
    let mut acc = String::new();
    for p in scope {
        if acc.is_empty() || p.starts_with(&format!("{acc}.")) {
            acc = p.to_string();
        } else {
            acc = format!("{acc}.{p}");
        }
    }
    Some((acc, last.to_string()))
}

fn clean(s: &str) -> String {
    s.trim().chars().map(|c| if c.is_control() || c.is_whitespace() { '_' } else { c }).collect()
}

/// The parameter-owning module path of a constant's name (`layer1.0.conv1.weight` ->
/// `layer1.0.conv1`), if it has that form.
fn param_prefix<'a>(value: &'a str, suffix: &str) -> Option<&'a str> {
    let p = value.strip_suffix(suffix)?.strip_suffix('.')?;
    (!p.is_empty() && !p.starts_with("onnx::") && !p.contains('/')).then_some(p)
}

/// Shortest decimal of an f32, as f64 (an attribute 1e-5f32 reads as 1e-5).
fn f32_to_f64(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

/// Per-node context: the node, for attribute access and errors.
struct Ctx<'a> {
    path: &'a Path,
    opset: i64,
    node: &'a NodeProto,
}

impl Ctx<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::file(
            self.path,
            format!("node `{}` ({}, opset {}): {msg}", describe(self.node), op_label(self.node), self.opset),
        )
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    /// Rejects attributes the op does not have or that edgeprune would silently ignore.
    fn only_attrs(&self, allowed: &[&str]) -> Result<()> {
        let mut seen = HashSet::new();
        for a in &self.node.attribute {
            if !allowed.contains(&a.name()) {
                return Err(self.err(format!(
                    "unexpected attribute `{}` (this op takes {})",
                    a.name(),
                    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                )));
            }
            if !seen.insert(a.name()) {
                return Err(self.err(format!("attribute `{}` is given twice", a.name())));
            }
            if a.ref_attr_name.is_some() {
                return Err(self.err(format!("attribute `{}` refers to a function attribute", a.name())));
            }
        }
        Ok(())
    }

    /// The attribute if present, checked to be of type `want`.
    fn typed(&self, name: &str, want: i32) -> Result<Option<&AttributeProto>> {
        let Some(a) = self.attr(name) else { return Ok(None) };
        let t = a.r#type.unwrap_or(at::UNDEFINED);
        let present = match want {
            at::FLOAT => a.f.is_some(),
            at::INT => a.i.is_some(),
            at::STRING => a.s.is_some(),
            at::TENSOR => a.t.is_some(),
            at::FLOATS => !a.floats.is_empty(),
            at::INTS => !a.ints.is_empty(),
            _ => false,
        };
        if t == want || (t == at::UNDEFINED && present) {
            Ok(Some(a))
        } else {
            Err(self.err(format!("attribute `{name}` must be {}, got {}", at::name(want), at::name(t))))
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.typed(name, at::INT)?.map_or(default, |a| a.i()))
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.typed(name, at::FLOAT)?.map_or(default, |a| a.f()))
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.typed(name, at::INTS)?.map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        match self.typed(name, at::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s().to_vec())
                .map(Some)
                .map_err(|_| self.err(format!("attribute `{name}` is not UTF-8"))),
        }
    }

    /// A flag attribute: 0 or 1.
    fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("attribute `{name}` must be 0 or 1, got {v}"))),
        }
    }

    /// A 2-D attribute (kernel_shape, strides, dilations), each value in min..=MAX_ATTR.
    fn pair(&self, name: &str, default: Option<[usize; 2]>, min: i64) -> Result<[usize; 2]> {
        match (self.ints(name)?, default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(self.err(format!("attribute `{name}` is required"))),
            (Some(v), _) => {
                if v.len() != 2 {
                    return Err(self.err(format!("attribute `{name}` must have 2 values (2-D), got {v:?}")));
                }
                if v.iter().any(|&x| !(min..=MAX_ATTR).contains(&x)) {
                    return Err(self.err(format!("attribute `{name}` values {v:?} must be in {min}..={MAX_ATTR}")));
                }
                Ok([v[0] as usize, v[1] as usize])
            }
        }
    }

    /// Symmetric 2-D padding from `pads` ([top, left, bottom, right]) and `auto_pad`.
    fn pads(&self) -> Result<[usize; 2]> {
        let auto = self.string("auto_pad")?;
        let pads = self.ints("pads")?;
        match auto.as_deref() {
            None | Some("NOTSET") => {}
            Some("VALID") if pads.as_ref().is_none_or(|p| p.iter().all(|&x| x == 0)) => return Ok([0, 0]),
            Some(other) => {
                return Err(self.err(format!(
                    "auto_pad {other} is not supported (export with explicit pads, e.g. torch's padding=k//2)"
                )));
            }
        }
        let Some(p) = pads else { return Ok([0, 0]) };
        if p.len() != 4 || p.iter().any(|&x| !(0..=MAX_ATTR).contains(&x)) {
            return Err(self.err(format!("attribute `pads` must be 4 values in 0..={MAX_ATTR} (2-D), got {p:?}")));
        }
        if p[0] != p[2] || p[1] != p[3] {
            return Err(self.err(format!("asymmetric padding {p:?} is not supported (the IR pads both sides equally)")));
        }
        Ok([p[0] as usize, p[1] as usize])
    }

    fn input_name(&self, i: usize) -> Option<&str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn arity(&self, min: usize, max: usize) -> Result<()> {
        let n = self.node.input.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1);
        if n < min || n > max {
            let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(self.err(format!("takes {want} inputs, got {n}")));
        }
        Ok(())
    }
}

impl Importer {
    fn new(path: &Path, opset: i64) -> Self {
        Importer {
            path: path.to_path_buf(),
            opset,
            values: HashMap::new(),
            nodes: Vec::new(),
            weights: Weights::default(),
            used: HashSet::new(),
            reserved: HashSet::new(),
            origin: HashMap::new(),
            matmuls: HashMap::new(),
            uses: HashMap::new(),
            scopes: HashMap::new(),
            parent_scopes: HashSet::new(),
            flatten_checks: Vec::new(),
            shapes: Vec::new(),
        }
    }

    fn ferr(&self, msg: impl Into<String>) -> Error {
        Error::file(&self.path, msg.into())
    }

    fn run(&mut self, g: &GraphProto, meta: &HashMap<&str, &str>) -> Result<Model> {
        // Constants: initializers (sparse ones are recognised only to say so).
        let mut outside: HashMap<&str, &'static str> = HashMap::new();
        for t in &g.initializer {
            let name = t.name();
            if name.is_empty() {
                return Err(self.ferr("an initializer has no name"));
            }
            if outside.insert(name, "an initializer").is_some() {
                return Err(self.ferr(format!("initializer `{name}` is defined twice")));
            }
            let v = match read_tensor(t, name) {
                Ok(c) => Val::Const(Rc::new(c)),
                Err(TensorErr::Unsupported(why)) => Val::Bad(format!("initializer `{name}`: {why}")),
                Err(TensorErr::Invalid(why)) => return Err(self.ferr(format!("initializer `{name}`: {why}"))),
            };
            self.values.insert(name.to_string(), v);
        }
        for s in &g.sparse_initializer {
            let name = s.values.as_ref().map(|v| v.name()).unwrap_or("");
            if !name.is_empty() && outside.insert(name, "a sparse initializer").is_none() {
                self.values.insert(name.into(), Val::Bad(format!("`{name}` is a sparse initializer (not supported)")));
            }
        }
        // The one real graph input (older exporters list the initializers among the inputs too).
        let inputs: Vec<&ValueInfoProto> = g.input.iter().filter(|i| !outside.contains_key(i.name())).collect();
        let input = match inputs.as_slice() {
            [one] => *one,
            [] => return Err(self.ferr("the graph has no input (besides initializers)")),
            many => {
                let names: Vec<&str> = many.iter().map(|i| i.name()).collect();
                return Err(self.ferr(format!(
                    "the graph has {} inputs ({names:?}); edgeprune needs one image input",
                    many.len()
                )));
            }
        };
        if input.name().is_empty() {
            return Err(self.ferr("the graph input has no name"));
        }
        outside.insert(input.name(), "the graph input");
        let shape = self.input_shape(input)?;

        let order = self.structure(g, &outside)?;
        let out = match g.output.as_slice() {
            [one] => one.name(),
            [] => return Err(self.ferr("the graph has no output")),
            many => {
                let names: Vec<&str> = many.iter().map(|o| o.name()).collect();
                return Err(self.ferr(format!("the graph has {} outputs ({names:?}); edgeprune needs one", many.len())));
            }
        };
        let live = live(g, out);
        for &i in &order {
            if live[i] {
                let n = &g.node[i];
                for inp in n.input.iter().filter(|s| !s.is_empty()) {
                    *self.uses.entry(inp.clone()).or_default() += 1;
                }
                if n.op_type() != "Constant"
                    && let Some((scope, _)) = torch_scope(n.name())
                {
                    for (i, _) in scope.match_indices('.') {
                        self.parent_scopes.insert(scope[..i].to_string());
                    }
                    *self.scopes.entry(scope).or_default() += 1;
                }
                self.reserve_param_name(n);
            }
        }
        *self.uses.entry(out.to_string()).or_default() += 1;

        let in_name = self.unique(clean(input.name()), false);
        self.nodes.push(Node { name: in_name.clone(), op: Op::Input { shape }, inputs: vec![] });
        self.origin.insert(in_name.clone(), format!("graph input `{}`", input.name()));
        self.values.insert(input.name().to_string(), Val::Act(in_name));

        for &i in &order {
            if live[i] {
                self.convert(&g.node[i])?;
            }
        }
        let output = match self.values.get(out) {
            Some(Val::Act(n)) => n.clone(),
            Some(Val::Bad(why)) => return Err(self.ferr(format!("graph output `{out}`: {why}"))),
            _ => return Err(self.ferr(format!("graph output `{out}` is a constant, not computed from the input"))),
        };
        if output == self.nodes[0].name {
            return Err(self.ferr(format!("graph output `{out}` is the input itself")));
        }

        let name = match meta.get(META_NAME) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ if !GENERIC_GRAPH_NAMES.contains(&g.name()) => g.name().to_string(),
            _ => self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "onnx".into()),
        };
        let normalize = match meta.get(META_NORMALIZE) {
            None => None,
            Some(text) => Some(serde_json::from_str::<Normalize>(text).map_err(|e| {
                self.ferr(format!("metadata `{META_NORMALIZE}` is not {{\"mean\": [...], \"std\": [...]}}: {e}"))
            })?),
        };
        let graph = Graph { name, nodes: std::mem::take(&mut self.nodes), output, normalize };
        let weights = std::mem::take(&mut self.weights);
        let model = Model::new(graph, weights).map_err(|e| self.explain(e))?;
        let shapes = model.graph.infer_shapes().map_err(|e| self.explain(e))?;
        let idx = model.graph.index();
        for (node, want) in &self.flatten_checks {
            let got = idx.get(node.as_str()).and_then(|&i| shapes[i].first().copied()).unwrap_or(0);
            if got != *want {
                return Err(self.explain(Error::node(
                    node,
                    format!("Reshape to [N, {want}] but the input holds {got} values per image"),
                )));
            }
        }
        Ok(model)
    }

    /// Rewrites an IR validation error to name the ONNX node it came from.
    fn explain(&self, e: Error) -> Error {
        match e {
            Error::Node { node, msg } => match self.origin.get(&node) {
                Some(o) => self.ferr(format!("{o} (opset {}), imported as `{node}`: {msg}", self.opset)),
                None => self.ferr(format!("node `{node}`: {msg}")),
            },
            other => other.in_file(&self.path),
        }
    }

    fn input_shape(&self, input: &ValueInfoProto) -> Result<Vec<usize>> {
        let bad = |why: String| {
            self.ferr(format!(
                "graph input `{}` must be a float tensor [N, C, H, W] with static C, H and W: {why}",
                input.name()
            ))
        };
        let Some(TypeProtoValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(bad("it is not a tensor".into()));
        };
        if t.elem_type() != dt::FLOAT {
            return Err(bad(format!("its element type is {}", dt::name(t.elem_type()))));
        }
        let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
        if dims.len() != 4 {
            return Err(bad(format!("it has {} dimensions", dims.len())));
        }
        let mut shape = Vec::with_capacity(3);
        for (i, d) in dims.iter().enumerate().skip(1) {
            match d.value {
                Some(super::proto::DimensionValue::DimValue(v)) if v > 0 && v as u64 <= MAX_ELEMENTS as u64 => {
                    shape.push(v as usize)
                }
                ref other => return Err(bad(format!("dimension {i} is {other:?}"))),
            }
        }
        Ok(shape)
    }

    /// Checks that outputs are unique, every input is defined and the graph has no cycle;
    /// returns the nodes in a topological order.
    fn structure(&self, g: &GraphProto, outside: &HashMap<&str, &'static str>) -> Result<Vec<usize>> {
        let nerr = |n: &NodeProto, msg: String| {
            Error::file(&self.path, format!("node `{}` ({}, opset {}): {msg}", describe(n), op_label(n), self.opset))
        };
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            if n.output.iter().all(|o| o.is_empty()) {
                return Err(nerr(n, "has no output".into()));
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(what) = outside.get(o.as_str()) {
                    return Err(nerr(n, format!("output `{o}` is already defined by {what}")));
                }
                if let Some(&j) = producer.get(o.as_str()) {
                    return Err(nerr(
                        n,
                        format!("output `{o}` is already produced by node `{}`", describe(&g.node[j])),
                    ));
                }
                producer.insert(o, i);
            }
        }
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(g.node.len());
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
        for (i, n) in g.node.iter().enumerate() {
            let mut d = Vec::new();
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                if outside.contains_key(inp.as_str()) {
                    continue;
                }
                match producer.get(inp.as_str()) {
                    Some(&j) => {
                        if !d.contains(&j) {
                            d.push(j);
                            readers[j].push(i);
                        }
                    }
                    None => {
                        return Err(nerr(
                            n,
                            format!("input `{inp}` is dangling: no node, initializer or graph input defines it"),
                        ));
                    }
                }
            }
            deps.push(d);
        }
        // Kahn's algorithm, taking ready nodes in file order.
        let mut indeg: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: std::collections::BTreeSet<usize> = (0..g.node.len()).filter(|&i| indeg[i] == 0).collect();
        let mut order = Vec::with_capacity(g.node.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &r in &readers[i] {
                indeg[r] -= 1;
                if indeg[r] == 0 {
                    ready.insert(r);
                }
            }
        }
        if order.len() < g.node.len() {
            // Walk back from a node that never became ready until a node repeats: that is a cycle.
            let mut at = (0..g.node.len()).find(|&i| indeg[i] > 0).unwrap_or(0);
            let mut path = vec![at];
            while let Some(&next) = deps[at].iter().find(|&&j| indeg[j] > 0) {
                if let Some(p) = path.iter().position(|&x| x == next) {
                    // In data-flow order, starting from the cycle's first node in the file.
                    let mut cyc: Vec<usize> = path[p..].iter().rev().copied().collect();
                    let first = cyc.iter().enumerate().min_by_key(|(_, k)| **k).map_or(0, |(i, _)| i);
                    cyc.rotate_left(first);
                    let mut cyc: Vec<String> = cyc.iter().map(|&k| format!("`{}`", describe(&g.node[k]))).collect();
                    cyc.push(cyc[0].clone());
                    return Err(Error::file(&self.path, format!("the graph has a cycle: {}", cyc.join(" -> "))));
                }
                path.push(next);
                at = next;
            }
            return Err(nerr(&g.node[at], "is part of a cycle".into()));
        }
        if let Some(o) = g.output.first().map(|o| o.name())
            && !outside.contains_key(o)
            && !producer.contains_key(o)
        {
            return Err(self.ferr(format!("graph output `{o}` is produced by no node")));
        }
        Ok(order)
    }

    /// A free IR node name based on `base`; `param` names may take reserved names.
    fn unique(&mut self, base: String, param: bool) -> String {
        let base = if base.is_empty() { "node".to_string() } else { base };
        let free = |s: &Self, n: &str| !s.used.contains(n) && (param || !s.reserved.contains(n));
        let mut name = base.clone();
        let mut k = 1;
        while !free(self, &name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// The parameter name prefix a node would take, if one of its constant inputs carries it.
    fn param_name(&self, n: &NodeProto) -> Option<String> {
        let (idx, suffixes): (&[usize], &[&str]) = match n.op_type() {
            "Conv" => (&[1, 2], &["weight", "bias"]),
            "BatchNormalization" => (&[1, 2, 3, 4], &["weight", "bias", "running_mean", "running_var"]),
            "Gemm" => (&[1, 2], &["weight", "bias"]),
            "MatMul" => (&[1], &["weight"]),
            _ => return None,
        };
        for (&i, s) in idx.iter().zip(suffixes) {
            if let Some(v) = n.input.get(i)
                && let Some(Val::Const(c)) = self.values.get(v)
                && let Some(p) = param_prefix(&c.name, s)
            {
                return Some(p.to_string());
            }
        }
        // Constants that come from Identity or Constant nodes are named by their value names.
        for (&i, s) in idx.iter().zip(suffixes) {
            if let Some(p) = n.input.get(i).and_then(|v| param_prefix(v, s)) {
                return Some(p.to_string());
            }
        }
        None
    }

    fn reserve_param_name(&mut self, n: &NodeProto) {
        if let Some(p) = self.param_name(n) {
            self.reserved.insert(p);
        }
    }

    /// The IR name of a node that owns no parameters (or whose parameters are unnamed).
    fn plain_name(&mut self, n: &NodeProto) -> String {
        let base = match torch_scope(n.name()) {
            Some((scope, op)) => {
                // The only op of a leaf module takes the module's name (`/conv1/Conv` -> `conv1`);
                // ops of a module with several ops or submodules are named inside it
                // (`/layer1/layer1.0/Add` -> `layer1.0.add`).
                let lone = self.scopes.get(&scope).copied().unwrap_or(0) <= 1 && !self.parent_scopes.contains(&scope);
                if scope.is_empty() {
                    op.to_lowercase()
                } else if lone {
                    scope
                } else {
                    format!("{scope}.{}", op.to_lowercase())
                }
            }
            None if !n.name().trim().is_empty() => n.name().to_string(),
            None => n.output.iter().find(|o| !o.is_empty()).cloned().unwrap_or_else(|| n.op_type().to_lowercase()),
        };
        self.unique(clean(&base), false)
    }

    fn node_name(&mut self, n: &NodeProto) -> (String, bool) {
        match self.param_name(n) {
            Some(p) => (self.unique(p, true), true),
            None => (self.plain_name(n), false),
        }
    }

    /// Adds an IR node for ONNX node `n` and binds its first output to it.
    fn push(&mut self, n: &NodeProto, name: String, op: Op, inputs: Vec<String>) {
        self.origin.insert(name.clone(), format!("node `{}` ({})", describe(n), op_label(n)));
        self.nodes.push(Node { name: name.clone(), op, inputs });
        self.bind_outputs(n, Val::Act(name));
    }

    /// Binds a node's first output to `v` and marks its other outputs as unsupported.
    fn bind_outputs(&mut self, n: &NodeProto, v: Val) {
        for (k, o) in n.output.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            let val = if k == 0 {
                v.clone()
            } else {
                Val::Bad(format!(
                    "output {k} of node `{}` ({}) is not supported (only the first output is)",
                    describe(n),
                    op_label(n)
                ))
            };
            self.values.insert(o.clone(), val);
        }
    }

    fn value(&self, cx: &Ctx, i: usize) -> Result<Option<&Val>> {
        let Some(name) = cx.input_name(i) else { return Ok(None) };
        match self.values.get(name) {
            Some(Val::Bad(why)) => Err(cx.err(format!("input {i} (`{name}`): {why}"))),
            Some(v) => Ok(Some(v)),
            None => Err(cx.err(format!("input {i} (`{name}`) is not defined"))),
        }
    }

    /// Input `i`, which must be computed by the network.
    fn act(&self, cx: &Ctx, i: usize) -> Result<String> {
        match self.value(cx, i)? {
            Some(Val::Act(a)) => Ok(a.clone()),
            Some(Val::Shape(_)) => Err(cx.err(format!(
                "input {i} (`{}`) is a shape computed by a Shape node; only Gather, Unsqueeze, Concat and \
                 Reshape take shapes",
                cx.input_name(i).unwrap_or("")
            ))),
            Some(_) => Err(cx.err(format!(
                "input {i} (`{}`) is a constant; edgeprune supports this op only on feature maps",
                cx.input_name(i).unwrap_or("")
            ))),
            None => Err(cx.err(format!("input {i} is missing"))),
        }
    }

    /// Optional constant input `i`.
    fn cnst(&self, cx: &Ctx, i: usize) -> Result<Option<Rc<Const>>> {
        match self.value(cx, i)? {
            None => Ok(None),
            Some(Val::Const(c)) => Ok(Some(c.clone())),
            Some(_) => Err(cx.err(format!(
                "input {i} (`{}`) must be a constant (an initializer or a Constant node), not a computed value",
                cx.input_name(i).unwrap_or("")
            ))),
        }
    }

    /// Required float constant input `i` of shape `dims` (None: any shape of that rank).
    fn weight(&self, cx: &Ctx, i: usize, what: &str, rank: usize) -> Result<Rc<Const>> {
        let c = self.cnst(cx, i)?.ok_or_else(|| cx.err(format!("input {i} ({what}) is missing")))?;
        if !matches!(c.data, Data::F32(_)) {
            return Err(cx.err(format!("{what} `{}` must be float32, got int64-like data", c.name)));
        }
        if c.dims.len() != rank {
            return Err(cx.err(format!("{what} `{}` must have {rank} dimensions, got shape {:?}", c.name, c.dims)));
        }
        Ok(c)
    }

    fn put(&mut self, node: &str, suffix: &str, dims: Vec<usize>, data: Vec<f32>) {
        self.weights.insert(format!("{node}.{suffix}"), HostTensor::f32(dims, data));
    }

    fn convert(&mut self, n: &NodeProto) -> Result<()> {
        let path = self.path.clone();
        let cx = Ctx { path: &path, opset: self.opset, node: n };
        if !matches!(n.domain(), "" | "ai.onnx") || !SUPPORTED_OPS.contains(&n.op_type()) {
            return Err(cx.err(format!(
                "unsupported op `{}`; edgeprune imports {} (default domain)",
                op_label(n),
                SUPPORTED_OPS.join(", ")
            )));
        }
        match n.op_type() {
            "Constant" => self.constant(&cx),
            "Identity" => {
                cx.only_attrs(&[])?;
                cx.arity(1, 1)?;
                match self.value(&cx, 0)?.cloned() {
                    Some(Val::Const(c)) => {
                        let out = n.output.first().cloned().unwrap_or_default();
                        self.bind_outputs(n, Val::Const(Rc::new(Const { name: out, ..(*c).clone() })));
                    }
                    _ => {
                        let x = self.act(&cx, 0)?;
                        let name = self.plain_name(n);
                        self.push(n, name, Op::Identity, vec![x]);
                    }
                }
                Ok(())
            }
            "Conv" => self.conv(&cx),
            "BatchNormalization" => self.batch_norm(&cx),
            "Relu" | "Sigmoid" => {
                cx.only_attrs(&[])?;
                cx.arity(1, 1)?;
                let x = self.act(&cx, 0)?;
                let name = self.plain_name(n);
                self.push(n, name, if n.op_type() == "Relu" { Op::ReLU } else { Op::Sigmoid }, vec![x]);
                Ok(())
            }
            "Clip" => self.clip(&cx),
            "MaxPool" | "AveragePool" => self.pool(&cx),
            "GlobalAveragePool" => {
                cx.only_attrs(&[])?;
                cx.arity(1, 1)?;
                let x = self.act(&cx, 0)?;
                let name = self.plain_name(n);
                self.push(n, name, Op::GlobalAvgPool, vec![x]);
                Ok(())
            }
            "Add" | "Sum" | "Mul" => self.elementwise(&cx),
            "Concat" => {
                cx.only_attrs(&["axis"])?;
                let axis = cx.typed("axis", at::INT)?.ok_or_else(|| cx.err("attribute `axis` is required"))?.i();
                if axis == 0 {
                    return self.shape_concat(&cx);
                }
                if axis != 1 && axis != -3 {
                    return Err(
                        cx.err(format!("concatenation along axis {axis} is not supported (only channels, axis 1)"))
                    );
                }
                if n.input.is_empty() {
                    return Err(cx.err("takes at least 1 input, got 0"));
                }
                let xs = (0..n.input.len()).map(|i| self.act(&cx, i)).collect::<Result<Vec<_>>>()?;
                if xs.len() == 1 {
                    let name = self.plain_name(n);
                    self.push(n, name, Op::Identity, xs);
                } else {
                    let name = self.plain_name(n);
                    self.push(n, name, Op::Concat, xs);
                }
                Ok(())
            }
            "Flatten" => {
                cx.only_attrs(&["axis"])?;
                cx.arity(1, 1)?;
                let axis = cx.int("axis", 1)?;
                if axis != 1 && axis != -3 {
                    return Err(cx.err(format!("Flatten with axis {axis} is not supported (only axis 1)")));
                }
                let x = self.act(&cx, 0)?;
                let name = self.plain_name(n);
                self.push(n, name, Op::Flatten, vec![x]);
                Ok(())
            }
            "Reshape" => self.reshape(&cx),
            "Shape" | "Gather" | "Unsqueeze" => self.shape_op(&cx),
            "Gemm" => self.gemm(&cx),
            "MatMul" => self.matmul(&cx),
            "Dropout" => self.dropout(&cx),
            other => Err(cx.err(format!("op `{other}` is listed as supported but has no mapping (a bug)"))),
        }
    }

    fn constant(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.arity(0, 0)?;
        if n.attribute.len() != 1 {
            return Err(cx.err(format!("needs exactly one value attribute, got {}", n.attribute.len())));
        }
        let out = n.output.first().cloned().unwrap_or_default();
        let a = &n.attribute[0];
        let c = match a.name() {
            "value" => {
                let t = cx.typed("value", at::TENSOR)?.and_then(|a| a.t.as_ref());
                let t = t.ok_or_else(|| cx.err("attribute `value` holds no tensor"))?;
                match read_tensor(t, &out) {
                    Ok(c) => c,
                    Err(TensorErr::Invalid(why) | TensorErr::Unsupported(why)) => {
                        return Err(cx.err(format!("attribute `value`: {why}")));
                    }
                }
            }
            "value_float" => Const { name: out, dims: vec![], data: Data::F32(vec![cx.float("value_float", 0.0)?]) },
            "value_int" => Const { name: out, dims: vec![], data: Data::I64(vec![cx.int("value_int", 0)?]) },
            "value_floats" => {
                let a = cx.typed("value_floats", at::FLOATS)?.map(|a| a.floats.clone()).unwrap_or_default();
                Const { name: out, dims: vec![a.len()], data: Data::F32(a) }
            }
            "value_ints" => {
                let a = cx.ints("value_ints")?.unwrap_or_default();
                Const { name: out, dims: vec![a.len()], data: Data::I64(a) }
            }
            other => return Err(cx.err(format!("Constant attribute `{other}` is not supported"))),
        };
        self.bind_outputs(n, Val::Const(Rc::new(c)));
        Ok(())
    }

    fn conv(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"])?;
        cx.arity(2, 3)?;
        let x = self.act(cx, 0)?;
        let w = self.weight(cx, 1, "the weight", 4)?;
        let (out_ch, in_per_group, kh, kw) = (w.dims[0], w.dims[1], w.dims[2], w.dims[3]);
        let kernel = cx.pair("kernel_shape", Some([kh, kw]), 1)?;
        if kernel != [kh, kw] {
            return Err(cx.err(format!("kernel_shape {kernel:?} disagrees with the weight's shape {:?}", w.dims)));
        }
        let stride = cx.pair("strides", Some([1, 1]), 1)?;
        let dilation = cx.pair("dilations", Some([1, 1]), 1)?;
        let padding = cx.pads()?;
        let groups = cx.int("group", 1)?;
        if !(1..=MAX_ELEMENTS as i64).contains(&groups) {
            return Err(cx.err(format!("group {groups} must be positive")));
        }
        let groups = groups as usize;
        let in_ch = in_per_group
            .checked_mul(groups)
            .filter(|&c| c <= MAX_ELEMENTS)
            .ok_or_else(|| cx.err("channel count overflows"))?;
        let bias = self.cnst(cx, 2)?;
        if let Some(b) = &bias
            && (b.dims != [out_ch] || !matches!(b.data, Data::F32(_)))
        {
            return Err(cx.err(format!("bias `{}` must be float32 of shape [{out_ch}], got {:?}", b.name, b.dims)));
        }
        let (name, _) = self.node_name(n);
        self.put(&name, "weight", w.dims.clone(), w.f32s());
        if let Some(b) = &bias {
            self.put(&name, "bias", vec![out_ch], b.f32s());
        }
        let op = Op::Conv2d {
            in_channels: in_ch,
            out_channels: out_ch,
            kernel_size: kernel,
            stride,
            padding,
            dilation,
            groups,
            bias: bias.is_some(),
        };
        self.push(n, name, op, vec![x]);
        Ok(())
    }

    fn batch_norm(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["epsilon", "momentum", "training_mode"])?;
        cx.arity(5, 5)?;
        if cx.flag("training_mode", false)? {
            return Err(cx.err("training_mode=1 is not supported (export the model in eval mode)"));
        }
        let x = self.act(cx, 0)?;
        let what = ["", "the scale", "the bias", "the running mean", "the running variance"];
        let ts = (1..5).map(|i| self.weight(cx, i, what[i], 1)).collect::<Result<Vec<_>>>()?;
        let c = ts[0].dims[0];
        if let Some(t) = ts.iter().find(|t| t.dims != [c]) {
            return Err(cx.err(format!("`{}` has shape {:?}, the scale has [{c}]", t.name, t.dims)));
        }
        let eps = cx.float("epsilon", 1e-5)?;
        let m = cx.float("momentum", 0.9)?;
        if !(eps > 0.0 && eps.is_finite() && (0.0..=1.0).contains(&m)) {
            return Err(cx.err(format!("epsilon {eps} must be positive and momentum {m} in [0, 1]")));
        }
        // ONNX: running = running * momentum + batch * (1 - momentum); PyTorch's momentum is the
        // other weight. Rounded to 6 significant digits so that 0.9f32 reads as PyTorch's 0.1.
        let torch_m = 1.0 - m as f64;
        let torch_m = if torch_m > 0.0 { format!("{torch_m:.5e}").parse().unwrap_or(torch_m) } else { 0.0 };
        let (name, _) = self.node_name(n);
        for (t, suffix) in ts.iter().zip(["weight", "bias", "running_mean", "running_var"]) {
            self.put(&name, suffix, vec![c], t.f32s());
        }
        self.weights.insert(format!("{name}.num_batches_tracked"), HostTensor::zeros(vec![], DType::I64));
        let op = Op::BatchNorm2d { num_features: c, eps: f32_to_f64(eps), momentum: torch_m };
        self.push(n, name, op, vec![x]);
        Ok(())
    }

    fn clip(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["min", "max"])?;
        cx.arity(1, 3)?;
        let x = self.act(cx, 0)?;
        let bound = |i: usize, attr: &str| -> Result<Option<f64>> {
            match self.cnst(cx, i)? {
                Some(c) => c.scalar().map(Some).ok_or_else(|| {
                    cx.err(format!("input {i} (`{}`) must be a scalar, got shape {:?}", c.name, c.dims))
                }),
                None => Ok(cx.typed(attr, at::FLOAT)?.map(|a| a.f() as f64)),
            }
        };
        let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
        let op = match (lo, hi) {
            (Some(0.0), Some(6.0)) => Op::ReLU6,
            (Some(0.0), None) => Op::ReLU,
            _ => {
                return Err(cx.err(format!(
                    "Clip(min {lo:?}, max {hi:?}) is supported only as ReLU6 (0, 6) or ReLU (0, no max)"
                )));
            }
        };
        let name = self.plain_name(n);
        self.push(n, name, op, vec![x]);
        Ok(())
    }

    fn pool(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        let max = n.op_type() == "MaxPool";
        if max {
            cx.only_attrs(&["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"])?;
            if cx.int("storage_order", 0)? != 0 {
                return Err(cx.err("storage_order 1 is not supported"));
            }
        } else {
            cx.only_attrs(&[
                "auto_pad",
                "ceil_mode",
                "count_include_pad",
                "dilations",
                "kernel_shape",
                "pads",
                "strides",
            ])?;
        }
        cx.arity(1, 1)?;
        let x = self.act(cx, 0)?;
        let kernel_size = cx.pair("kernel_shape", None, 1)?;
        let stride = cx.pair("strides", Some([1, 1]), 1)?;
        if cx.pair("dilations", Some([1, 1]), 1)? != [1, 1] {
            return Err(cx.err("dilated pooling is not supported"));
        }
        let padding = cx.pads()?;
        let ceil_mode = cx.flag("ceil_mode", false)?;
        let op = if max {
            Op::MaxPool2d { kernel_size, stride, padding, ceil_mode }
        } else {
            let count_include_pad = cx.flag("count_include_pad", false)?;
            Op::AvgPool2d { kernel_size, stride, padding, ceil_mode, count_include_pad }
        };
        let name = self.plain_name(n);
        self.push(n, name, op, vec![x]);
        Ok(())
    }

    fn elementwise(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&[])?;
        let kind = n.op_type();
        if kind == "Sum" {
            if n.input.is_empty() {
                return Err(cx.err("takes at least 1 input, got 0"));
            }
        } else {
            cx.arity(2, 2)?;
        }
        let mut vals = Vec::with_capacity(n.input.len());
        for i in 0..n.input.len() {
            vals.push(self.value(cx, i)?.cloned().ok_or_else(|| cx.err(format!("input {i} is missing")))?);
        }
        if kind == "Add"
            && let [a, b] = vals.as_slice()
            && let (Val::Act(x), Val::Const(c)) | (Val::Const(c), Val::Act(x)) = (a, b)
        {
            return self.matmul_bias(cx, x, c);
        }
        let mut xs = Vec::with_capacity(vals.len());
        for (i, v) in vals.iter().enumerate() {
            match v {
                Val::Act(a) => xs.push(a.clone()),
                _ => {
                    return Err(cx.err(format!(
                        "input {i} (`{}`) is a constant; {kind} is supported only between feature maps{}",
                        n.input[i],
                        if kind == "Add" { " or as the bias of a MatMul (MatMul + Add = Linear)" } else { "" }
                    )));
                }
            }
        }
        let name = self.plain_name(n);
        let op = match (kind, xs.len()) {
            (_, 1) => Op::Identity,
            ("Mul", _) => Op::Mul,
            _ => Op::Add,
        };
        self.push(n, name, op, xs);
        Ok(())
    }

    /// Add(MatMul(x, W), b): gives the Linear made from the MatMul its bias.
    fn matmul_bias(&mut self, cx: &Ctx, x: &str, c: &Rc<Const>) -> Result<()> {
        let n = cx.node;
        let act_value = n.input.iter().find(|v| matches!(self.values.get(*v), Some(Val::Act(_)))).cloned();
        let sole = act_value.as_ref().is_some_and(|v| self.uses.get(v).copied().unwrap_or(0) == 1);
        let Some(&named_by_param) = self.matmuls.get(x).filter(|_| sole) else {
            return Err(cx.err(format!(
                "adding the constant `{}` is supported only as the bias of a MatMul whose output nothing else reads \
                 (MatMul + Add = Linear)",
                c.name
            )));
        };
        let idx = self.nodes.iter().rposition(|nd| nd.name == x).ok_or_else(|| cx.err("internal: MatMul node lost"))?;
        let Op::Linear { in_features, out_features, .. } = self.nodes[idx].op else {
            return Err(cx.err("internal: MatMul node is not linear"));
        };
        if !matches!(c.data, Data::F32(_))
            || c.numel() != out_features
            || !(c.dims == [out_features] || c.dims == [1, out_features])
        {
            return Err(cx.err(format!(
                "the bias `{}` of the MatMul must be float32 of shape [{out_features}], got {:?}",
                c.name, c.dims
            )));
        }
        self.matmuls.remove(x);
        let mut name = x.to_string();
        // A MatMul named after its node takes the bias's PyTorch name (`fc.bias` -> `fc`).
        if !named_by_param
            && let Some(p) = param_prefix(&c.name, "bias")
            && !self.used.contains(p)
        {
            self.used.remove(x);
            name = self.unique(p.to_string(), true);
            let w =
                self.weights.tensors.remove(&format!("{x}.weight")).ok_or_else(|| cx.err("internal: weight lost"))?;
            self.weights.insert(format!("{name}.weight"), w);
            self.nodes[idx].name = name.clone();
            if let Some(o) = self.origin.remove(x) {
                self.origin.insert(name.clone(), o);
            }
        }
        self.nodes[idx].op = Op::Linear { in_features, out_features, bias: true };
        self.put(&name, "bias", vec![out_features], c.f32s());
        self.bind_outputs(n, Val::Act(name.clone()));
        if let Some(o) = self.origin.get_mut(&name) {
            o.push_str(&format!(" + node `{}` (Add)", describe(n)));
        }
        Ok(())
    }

    fn reshape(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["allowzero"])?;
        cx.arity(2, 2)?;
        let x = self.act(cx, 0)?;
        let allowzero = cx.flag("allowzero", false)?;
        // None: the batch size, from a Shape node.
        let shape: Vec<Option<i64>> = match self.value(cx, 1)? {
            Some(Val::Shape(v)) if !v.scalar => v.dims.clone(),
            Some(Val::Const(c)) if c.dims.len() == 1 && c.i64s().is_some() => {
                c.i64s().unwrap_or_default().iter().map(|&d| Some(d)).collect()
            }
            Some(Val::Const(c)) => {
                return Err(cx.err(format!("the shape `{}` must be a 1-D int64 tensor, got {:?}", c.name, c.dims)));
            }
            _ => return Err(cx.err("input 1 (the shape) must be a constant or computed by Shape nodes")),
        };
        // Some(None): [N, -1]; Some(Some(f)): [N, f], checked against the input once shapes are known.
        let batch_ok = |b: Option<i64>, f: i64| match b {
            None => true,
            Some(0) => !allowzero,
            Some(-1) => f > 0,
            Some(b) => b > 0,
        };
        let features: Option<Option<usize>> = match *shape.as_slice() {
            [b, Some(-1)] if batch_ok(b, -1) => Some(None),
            [b, Some(f)] if f > 0 && batch_ok(b, f) => Some(Some(f as usize)),
            _ => None,
        };
        let shape: Vec<String> = shape.iter().map(|d| d.map_or("N".to_string(), |v| v.to_string())).collect();
        let shape = format!("[{}]", shape.join(", "));
        let Some(features) = features else {
            return Err(cx.err(format!(
                "Reshape to {shape} is supported only as a flatten to [N, -1], [0, -1] or [N, features]"
            )));
        };
        let name = self.plain_name(n);
        if let Some(f) = features {
            self.flatten_checks.push((name.clone(), f));
        }
        self.push(n, name, Op::Flatten, vec![x]);
        Ok(())
    }

    /// The per-image shape of an IR node's output, from the graph built so far (inferred again
    /// only when nodes were added since the last call).
    fn act_shape(&mut self, x: &str) -> Result<Vec<usize>> {
        if self.shapes.len() != self.nodes.len() {
            let g = Graph { name: String::new(), nodes: self.nodes.clone(), output: x.to_string(), normalize: None };
            self.shapes = g.infer_shapes().map_err(|e| self.explain(e))?;
        }
        let i = self.nodes.iter().position(|n| n.name == x);
        i.and_then(|i| self.shapes.get(i).cloned()).ok_or_else(|| self.ferr(format!("internal: no node `{x}`")))
    }

    /// Shape, Gather and Unsqueeze on shapes: the arithmetic of `x.view(x.size(0), -1)`.
    fn shape_op(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        let only_shapes = "is supported only on shapes (as in x.view(x.size(0), -1))";
        let v = match n.op_type() {
            "Shape" => {
                cx.only_attrs(&["start", "end"])?;
                cx.arity(1, 1)?;
                let x = self.act(cx, 0)?;
                let mut dims: Vec<Option<i64>> = vec![None];
                dims.extend(self.act_shape(&x)?.iter().map(|&d| Some(d as i64)));
                let r = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
                let (a, b) = (clamp(cx.int("start", 0)?), clamp(cx.int("end", r)?));
                ShapeVal { dims: dims[a..b.max(a)].to_vec(), scalar: false }
            }
            "Gather" => {
                cx.only_attrs(&["axis"])?;
                cx.arity(2, 2)?;
                if cx.int("axis", 0)? != 0 {
                    return Err(cx.err("Gather on a shape must use axis 0"));
                }
                let Some(Val::Shape(s)) = self.value(cx, 0)?.cloned() else {
                    return Err(cx.err(format!("Gather {only_shapes}")));
                };
                let idx = self.cnst(cx, 1)?.ok_or_else(|| cx.err("input 1 (the indices) is missing"))?;
                let (Data::I64(ix), false) = (&idx.data, s.scalar || idx.dims.len() > 1) else {
                    return Err(cx.err("the indices must be int64, a scalar or a vector, into a shape vector"));
                };
                let len = s.dims.len() as i64;
                let mut dims = Vec::with_capacity(ix.len());
                for &i in ix {
                    let j = if i < 0 { i.saturating_add(len) } else { i };
                    if !(0..len).contains(&j) {
                        return Err(cx.err(format!("index {i} is out of range for a shape of {len} entries")));
                    }
                    dims.push(s.dims[j as usize]);
                }
                ShapeVal { dims, scalar: idx.dims.is_empty() }
            }
            _ => {
                cx.only_attrs(&[])?;
                cx.arity(2, 2)?;
                let s = match self.value(cx, 0)?.cloned() {
                    Some(Val::Shape(s)) => s,
                    Some(Val::Const(c)) if c.dims.is_empty() && c.i64s().is_some() => {
                        ShapeVal { dims: c.i64s().unwrap_or_default().iter().map(|&d| Some(d)).collect(), scalar: true }
                    }
                    _ => return Err(cx.err(format!("Unsqueeze {only_shapes}"))),
                };
                let axes = self.cnst(cx, 1)?.ok_or_else(|| cx.err("input 1 (the axes) is missing"))?;
                if !s.scalar || !matches!(&axes.data, Data::I64(a) if a.as_slice() == [0] || a.as_slice() == [-1]) {
                    return Err(cx.err("Unsqueeze on shapes is supported only from a scalar to a vector (axes [0])"));
                }
                ShapeVal { dims: s.dims, scalar: false }
            }
        };
        self.bind_outputs(n, Val::Shape(v));
        Ok(())
    }

    /// Concat along axis 0 of shape vectors and int64 constants.
    fn shape_concat(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        let mut dims = Vec::new();
        for i in 0..n.input.len() {
            match self.value(cx, i)? {
                Some(Val::Shape(s)) if !s.scalar => dims.extend(s.dims.iter().copied()),
                Some(Val::Const(c)) if c.dims.len() == 1 && c.i64s().is_some() => {
                    dims.extend(c.i64s().unwrap_or_default().iter().map(|&d| Some(d)));
                }
                _ => {
                    return Err(cx.err(format!(
                        "concatenation along axis 0 is supported only of shape vectors (as in x.view(x.size(0), \
                         -1)); input {i} is not one"
                    )));
                }
            }
        }
        self.bind_outputs(n, Val::Shape(ShapeVal { dims, scalar: false }));
        Ok(())
    }

    fn gemm(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["alpha", "beta", "transA", "transB"])?;
        cx.arity(2, 3)?;
        let (alpha, beta) = (cx.float("alpha", 1.0)?, cx.float("beta", 1.0)?);
        if alpha != 1.0 || beta != 1.0 {
            return Err(cx.err(format!("alpha {alpha} and beta {beta} must be 1 (a plain linear layer)")));
        }
        if cx.flag("transA", false)? {
            return Err(cx.err("transA=1 is not supported"));
        }
        let trans_b = cx.flag("transB", false)?;
        let x = self.act(cx, 0)?;
        let w = self.weight(cx, 1, "the weight", 2)?;
        let (out_f, in_f) = if trans_b { (w.dims[0], w.dims[1]) } else { (w.dims[1], w.dims[0]) };
        let data = if trans_b { w.f32s() } else { transpose(&w.f32s(), in_f, out_f) };
        let bias = self.cnst(cx, 2)?;
        if let Some(b) = &bias
            && (!matches!(b.data, Data::F32(_)) || !(b.dims == [out_f] || b.dims == [1, out_f]))
        {
            return Err(cx.err(format!("the bias `{}` must be float32 of shape [{out_f}], got {:?}", b.name, b.dims)));
        }
        let (name, _) = self.node_name(n);
        self.put(&name, "weight", vec![out_f, in_f], data);
        if let Some(b) = &bias {
            self.put(&name, "bias", vec![out_f], b.f32s());
        }
        self.push(n, name, Op::Linear { in_features: in_f, out_features: out_f, bias: bias.is_some() }, vec![x]);
        Ok(())
    }

    fn matmul(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&[])?;
        cx.arity(2, 2)?;
        let x = self.act(cx, 0)?;
        let w = self.weight(cx, 1, "the weight", 2)?;
        let (in_f, out_f) = (w.dims[0], w.dims[1]);
        let (name, by_param) = self.node_name(n);
        self.put(&name, "weight", vec![out_f, in_f], transpose(&w.f32s(), in_f, out_f));
        self.matmuls.insert(name.clone(), by_param);
        self.push(n, name, Op::Linear { in_features: in_f, out_features: out_f, bias: false }, vec![x]);
        Ok(())
    }

    fn dropout(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["seed", "ratio"])?;
        cx.arity(1, 3)?;
        let x = self.act(cx, 0)?;
        let p = match self.cnst(cx, 1)? {
            Some(c) => c.scalar().ok_or_else(|| cx.err(format!("the ratio `{}` must be a scalar", c.name)))?,
            None => cx.float("ratio", 0.5)? as f64,
        };
        if let Some(t) = self.cnst(cx, 2)?
            && t.scalar() != Some(0.0)
        {
            return Err(cx.err("training_mode must be false (export the model in eval mode)"));
        }
        let name = self.plain_name(n);
        self.push(n, name, Op::Dropout { p: f32_to_f64(p as f32) }, vec![x]);
        Ok(())
    }
}

/// The nodes the output depends on.
fn live(g: &GraphProto, out: &str) -> Vec<bool> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o, i);
        }
    }
    let mut live = vec![false; g.node.len()];
    let mut stack: Vec<&str> = vec![out];
    while let Some(v) = stack.pop() {
        if let Some(&i) = producer.get(v)
            && !live[i]
        {
            live[i] = true;
            stack.extend(g.node[i].input.iter().filter(|s| !s.is_empty()).map(String::as_str));
        }
    }
    live
}

/// Transposes a row-major [rows, cols] matrix.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}
