//! The node being converted (`Ctx`): its attributes, checked for type and range, and its inputs.

use super::*;

/// Per-node context: the node, for attribute access and errors.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) opset: i64,
    pub(super) node: &'a NodeProto,
}

impl Ctx<'_> {
    pub(super) fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::file(
            self.path,
            format!("node `{}` ({}, opset {}): {msg}", describe(self.node), op_label(self.node), self.opset),
        )
    }

    pub(super) fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    /// Rejects attributes the op does not have or that edgeprune would silently ignore.
    pub(super) fn only_attrs(&self, allowed: &[&str]) -> Result<()> {
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
    pub(super) fn typed(&self, name: &str, want: i32) -> Result<Option<&AttributeProto>> {
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

    pub(super) fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.typed(name, at::INT)?.map_or(default, |a| a.i()))
    }

    pub(super) fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.typed(name, at::FLOAT)?.map_or(default, |a| a.f()))
    }

    pub(super) fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.typed(name, at::INTS)?.map(|a| a.ints.clone()))
    }

    pub(super) fn string(&self, name: &str) -> Result<Option<String>> {
        match self.typed(name, at::STRING)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s().to_vec())
                .map(Some)
                .map_err(|_| self.err(format!("attribute `{name}` is not UTF-8"))),
        }
    }

    /// A flag attribute: 0 or 1.
    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.int(name, default as i64)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("attribute `{name}` must be 0 or 1, got {v}"))),
        }
    }

    /// A 2-D attribute (kernel_shape, strides, dilations), each value in min..=MAX_ATTR.
    pub(super) fn pair(&self, name: &str, default: Option<[usize; 2]>, min: i64) -> Result<[usize; 2]> {
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
    pub(super) fn pads(&self) -> Result<[usize; 2]> {
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

    pub(super) fn input_name(&self, i: usize) -> Option<&str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub(super) fn arity(&self, min: usize, max: usize) -> Result<()> {
        let n = self.node.input.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1);
        if n < min || n > max {
            let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(self.err(format!("takes {want} inputs, got {n}")));
        }
        Ok(())
    }
}
