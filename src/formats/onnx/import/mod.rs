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
use super::{META_NAME, META_NORMALIZE, OPSETS};
use crate::error::{Error, Result};
use crate::ir::{DType, Graph, HostTensor, MAX_ELEMENTS, Model, Node, Normalize, Op, Weights};

mod attrs;
mod channels;
mod channels_last;
mod convert;
mod names;
mod shapes;
mod tensor;
mod unary;

use attrs::*;
pub use convert::supported_ops;
use names::*;
use tensor::*;

/// The largest kernel size, stride, padding or dilation accepted from an attribute.
const MAX_ATTR: i64 = 1 << 16;

/// Names torch.onnx gives graphs, replaced by the file name on import.
const GENERIC_GRAPH_NAMES: &[&str] = &["main_graph", "torch_jit", "torch-jit-export", ""];

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
    /// Every unsupported op type of the live graph, for the error at the first one, and how many.
    unsupported: String,
    unsupported_count: usize,
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
            unsupported: String::new(),
            unsupported_count: 0,
        }
    }

    fn ferr(&self, msg: impl Into<String>) -> Error {
        Error::file(&self.path, msg.into())
    }

    fn run(&mut self, g: &GraphProto, meta: &HashMap<&str, &str>) -> Result<Model> {
        let mut outside = self.constants(g)?;
        let input = self.graph_input(g, &outside)?;
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
        self.count_uses(g, &order, &live, out);
        (self.unsupported, self.unsupported_count) =
            convert::unsupported_summary(order.iter().filter(|&&i| live[i]).map(|&i| &g.node[i]));

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
        self.finish(g, meta, output)
    }

    /// The initializers as constant values (sparse ones are recognised only to say so), and what
    /// defines each name from outside the nodes.
    fn constants<'g>(&mut self, g: &'g GraphProto) -> Result<HashMap<&'g str, &'static str>> {
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
        Ok(outside)
    }

    /// The one real graph input (older exporters list the initializers among the inputs too).
    fn graph_input<'g>(&self, g: &'g GraphProto, outside: &HashMap<&str, &str>) -> Result<&'g ValueInfoProto> {
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
        Ok(input)
    }

    /// Readers of each value and the torch module scopes of the live nodes (for naming), with the
    /// names that parameter-owning nodes will take kept free.
    fn count_uses(&mut self, g: &GraphProto, order: &[usize], live: &[bool], out: &str) {
        for &i in order {
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
    }

    /// The model of the converted nodes: named, with its normalisation from the metadata,
    /// validated, and its Reshape-as-flatten feature counts checked.
    fn finish(&mut self, g: &GraphProto, meta: &HashMap<&str, &str>, output: String) -> Result<Model> {
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
            return Err(self.cycle(g, &deps, &indeg));
        }
        if let Some(o) = g.output.first().map(|o| o.name())
            && !outside.contains_key(o)
            && !producer.contains_key(o)
        {
            return Err(self.ferr(format!("graph output `{o}` is produced by no node")));
        }
        Ok(order)
    }

    /// The error for a graph with a cycle, naming one: walks back from a node that never became
    /// ready (`indeg > 0`) until a node repeats.
    fn cycle(&self, g: &GraphProto, deps: &[Vec<usize>], indeg: &[usize]) -> Error {
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
                return Error::file(&self.path, format!("the graph has a cycle: {}", cyc.join(" -> ")));
            }
            path.push(next);
            at = next;
        }
        let n = &g.node[at];
        Error::file(
            &self.path,
            format!("node `{}` ({}, opset {}): is part of a cycle", describe(n), op_label(n), self.opset),
        )
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
