//! Shape arithmetic in an ONNX graph (`Shape`, `Gather`, `Unsqueeze`, `Concat` on axis 0) and the
//! `Reshape` it feeds: evaluated at import, so a flatten written as `x.view(x.size(0), -1)` becomes
//! an IR Flatten.

use super::*;

impl Importer {
    pub(super) fn reshape(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["allowzero"])?;
        cx.arity(2, 2)?;
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
        if self.shuffle_reshape(cx, &shape)? {
            return Ok(());
        }
        let x = self.act(cx, 0)?;
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
    pub(super) fn act_shape(&mut self, x: &str) -> Result<Vec<usize>> {
        if self.shapes.len() != self.nodes.len() {
            let g = Graph { name: String::new(), nodes: self.nodes.clone(), output: x.to_string(), normalize: None };
            self.shapes = g.infer_shapes().map_err(|e| self.explain(e))?;
        }
        let i = self.nodes.iter().position(|n| n.name == x);
        i.and_then(|i| self.shapes.get(i).cloned()).ok_or_else(|| self.ferr(format!("internal: no node `{x}`")))
    }

    /// Shape, Gather and Unsqueeze on shapes: the arithmetic of `x.view(x.size(0), -1)`.
    pub(super) fn shape_op(&mut self, cx: &Ctx) -> Result<()> {
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
    pub(super) fn shape_concat(&mut self, cx: &Ctx) -> Result<()> {
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
}
