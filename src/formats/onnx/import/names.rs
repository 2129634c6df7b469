//! Names: IR node names from ONNX node names and PyTorch scopes, parameter prefixes kept as
//! PyTorch's state_dict names, and how nodes are described in errors.

use super::*;

/// The node's description in messages: its name, or its first output when it has none.
pub(super) fn describe(n: &NodeProto) -> String {
    if !n.name().is_empty() {
        n.name().to_string()
    } else {
        format!("<unnamed, output {:?}>", n.output.first().map(String::as_str).unwrap_or(""))
    }
}

pub(super) fn op_label(n: &NodeProto) -> String {
    match n.domain() {
        "" | "ai.onnx" => n.op_type().to_string(),
        d => format!("{d}::{}", n.op_type()),
    }
}

/// The torch module path and op part of a torch.onnx node name (`/layer1/layer1.0/conv1/Conv`
/// -> (`layer1.0.conv1`, `Conv`)); None for names not in that form. A part that extends the one
/// before it names the same module's child relative to the same parent (`/features.1.0/block/
/// block.4/Mul` is `features.1.0.block.4`).
pub(super) fn torch_scope(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (last, scope) = parts.split_last()?;
    let mut acc = String::new();
    let mut prev = "";
    for p in scope {
        if acc.is_empty() {
            acc = p.to_string();
        } else if p.starts_with(&format!("{prev}.")) {
            acc = format!("{}{p}", &acc[..acc.len() - prev.len()]);
        } else {
            acc = format!("{acc}.{p}");
        }
        prev = p;
    }
    Some((acc, last.to_string()))
}

pub(super) fn clean(s: &str) -> String {
    s.trim().chars().map(|c| if c.is_control() || c.is_whitespace() { '_' } else { c }).collect()
}

/// The parameter-owning module path of a constant's name (`layer1.0.conv1.weight` ->
/// `layer1.0.conv1`), if it has that form.
pub(super) fn param_prefix<'a>(value: &'a str, suffix: &str) -> Option<&'a str> {
    let p = value.strip_suffix(suffix)?.strip_suffix('.')?;
    (!p.is_empty() && !p.starts_with("onnx::") && !p.contains('/')).then_some(p)
}

/// Shortest decimal of an f32, as f64 (an attribute 1e-5f32 reads as 1e-5).
pub(super) fn f32_to_f64(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(x as f64)
}

impl Importer {
    /// A free IR node name based on `base`; `param` names may take reserved names.
    pub(super) fn unique(&mut self, base: String, param: bool) -> String {
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
    pub(super) fn param_name(&self, n: &NodeProto) -> Option<String> {
        let (idx, suffixes): (&[usize], &[&str]) = match n.op_type() {
            "Conv" => (&[1, 2], &["weight", "bias"]),
            "BatchNormalization" => (&[1, 2, 3, 4], &["weight", "bias", "running_mean", "running_var"]),
            "Gemm" => (&[1, 2], &["weight", "bias"]),
            "MatMul" => (&[1], &["weight"]),
            "LayerNormalization" => (&[1, 2], &["weight", "bias"]),
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

    pub(super) fn reserve_param_name(&mut self, n: &NodeProto) {
        if let Some(p) = self.param_name(n) {
            self.reserved.insert(p);
        }
    }

    /// The IR name of a node that owns no parameters (or whose parameters are unnamed).
    pub(super) fn plain_name(&mut self, n: &NodeProto) -> String {
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

    pub(super) fn node_name(&mut self, n: &NodeProto) -> (String, bool) {
        match self.param_name(n) {
            Some(p) => (self.unique(p, true), true),
            None => (self.plain_name(n), false),
        }
    }
}
