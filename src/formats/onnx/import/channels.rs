//! Rearrangements of the channel axis: Slice along the channels (`x[:, a:b]`, `torch.chunk`,
//! `torch.split`) becomes an IR ChannelSlice; Gather of channels by constant indices that permute
//! them, and ShuffleNet's channel shuffle (Reshape [N, C, H, W] -> [N, g, C/g, H, W], Transpose
//! (0, 2, 1, 3, 4), Reshape back to [N, C, H, W]) become an IR ChannelPermute. Also the integer
//! shape arithmetic around them (Add, Sub, Mul, Div, Cast of shape values and int constants),
//! evaluated at import: the input's C, H and W are fixed.

use super::*;

/// What an elementwise op computes on shape values.
#[derive(Clone, Copy)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

impl Importer {
    /// The integers of input `i`: an int constant or a shape value known at import (not the
    /// batch size). None if the input is absent.
    pub(super) fn known_ints(&self, cx: &Ctx, i: usize, what: &str) -> Result<Option<Vec<i64>>> {
        match self.value(cx, i)? {
            None => Ok(None),
            Some(Val::Const(c)) => match c.i64s() {
                Some(v) => Ok(Some(v.to_vec())),
                None => Err(cx.err(format!("input {i} ({what}) `{}` must hold integers", c.name))),
            },
            Some(Val::Shape(s)) => {
                let v: Option<Vec<i64>> = s.dims.iter().copied().collect();
                v.map(Some).ok_or_else(|| {
                    cx.err(format!("input {i} ({what}) depends on the batch size; edgeprune needs it fixed"))
                })
            }
            Some(_) => Err(cx.err(format!(
                "input {i} ({what}) must be a constant or computed from shapes, not from the feature maps"
            ))),
        }
    }

    /// Whether input `i` is a shape value or an integer constant (elementwise ops on them are
    /// shape arithmetic).
    pub(super) fn is_int_value(&self, cx: &Ctx, i: usize) -> bool {
        match cx.input_name(i).and_then(|name| self.values.get(name)) {
            Some(Val::Shape(_)) => true,
            Some(Val::Const(c)) => c.i64s().is_some(),
            _ => false,
        }
    }

    /// Add, Sub, Mul or Div of two shape values or int constants (broadcasting a scalar), as
    /// `(c + 1) // 2` exports; entries depending on the batch size stay unknown.
    pub(super) fn shape_arith(&mut self, cx: &Ctx, op: Arith) -> Result<()> {
        cx.only_attrs(&[])?;
        cx.arity(2, 2)?;
        let side = |i: usize| -> Result<ShapeVal> {
            match self.value(cx, i)? {
                Some(Val::Shape(s)) => Ok(s.clone()),
                Some(Val::Const(c)) if c.i64s().is_some() && c.dims.len() <= 1 => Ok(ShapeVal {
                    dims: c.i64s().unwrap_or_default().iter().map(|&d| Some(d)).collect(),
                    scalar: c.dims.is_empty(),
                }),
                _ => Err(cx.err(format!("input {i} must be a shape value or an integer scalar or vector"))),
            }
        };
        let (a, b) = (side(0)?, side(1)?);
        let len = match (a.dims.len(), b.dims.len()) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => return Err(cx.err(format!("cannot broadcast shape values of {x} and {y} entries"))),
        };
        let at = |s: &ShapeVal, k: usize| if s.dims.len() == 1 { s.dims[0] } else { s.dims[k] };
        let mut dims = Vec::with_capacity(len);
        for k in 0..len {
            let v = match (at(&a, k), at(&b, k)) {
                (Some(x), Some(y)) => Some(
                    match op {
                        Arith::Add => x.checked_add(y),
                        Arith::Sub => x.checked_sub(y),
                        Arith::Mul => x.checked_mul(y),
                        // ONNX integer division truncates.
                        Arith::Div if y == 0 => return Err(cx.err("divides a shape value by zero")),
                        Arith::Div => x.checked_div(y),
                    }
                    .ok_or_else(|| cx.err("shape arithmetic overflows"))?,
                ),
                _ => None,
            };
            dims.push(v);
        }
        self.bind_outputs(cx.node, Val::Shape(ShapeVal { dims, scalar: a.scalar && b.scalar }));
        Ok(())
    }

    /// Div: shape arithmetic, or the start of an exact GELU.
    pub(super) fn div(&mut self, cx: &Ctx) -> Result<()> {
        if self.is_int_value(cx, 0) && self.is_int_value(cx, 1) {
            return self.shape_arith(cx, Arith::Div);
        }
        self.div_map(cx)
    }

    pub(super) fn sub(&mut self, cx: &Ctx) -> Result<()> {
        if self.is_int_value(cx, 0) && self.is_int_value(cx, 1) {
            return self.shape_arith(cx, Arith::Sub);
        }
        Err(cx.err("Sub is supported only in shape arithmetic (integer shape values and constants)"))
    }

    /// Cast of a shape value or int constant to an integer type (a no-op at import).
    pub(super) fn cast(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&["to", "saturate"])?;
        cx.arity(1, 1)?;
        let to = cx.int("to", 0)?;
        if !matches!(to as i32, dt::INT64 | dt::INT32) || !self.is_int_value(cx, 0) {
            return Err(cx.err(format!(
                "Cast is supported only of shape values to int64 or int32 (got `to` = {})",
                dt::name(to as i32)
            )));
        }
        let v = self.value(cx, 0)?.cloned().ok_or_else(|| cx.err("input 0 is missing"))?;
        self.bind_outputs(cx.node, v);
        Ok(())
    }

    /// Slice along the channels of a feature map, or of a shape vector.
    pub(super) fn slice(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&[])?;
        cx.arity(3, 5)?;
        let one = |v: Option<Vec<i64>>, what: &str| -> Result<Option<i64>> {
            match v.as_deref() {
                None => Ok(None),
                Some([x]) => Ok(Some(*x)),
                Some(v) => Err(cx.err(format!("{what} must hold one value (one sliced axis), got {v:?}"))),
            }
        };
        let start = one(self.known_ints(cx, 1, "starts")?, "starts")?.ok_or_else(|| cx.err("input 1 is missing"))?;
        let end = one(self.known_ints(cx, 2, "ends")?, "ends")?.ok_or_else(|| cx.err("input 2 is missing"))?;
        let axis = one(self.known_ints(cx, 3, "axes")?, "axes")?;
        let step = one(self.known_ints(cx, 4, "steps")?, "steps")?.unwrap_or(1);
        if step != 1 {
            return Err(cx.err(format!("Slice with step {step} is not supported (only step 1)")));
        }
        // ONNX: negative bounds count from the end; both are clamped to [0, len].
        let bounds = |len: usize| {
            let l = len as i64;
            let fix = |v: i64| (if v < 0 { v.saturating_add(l) } else { v }).clamp(0, l) as usize;
            (fix(start), fix(end))
        };
        match self.value(cx, 0)?.cloned() {
            Some(Val::Shape(s)) if !s.scalar => {
                if axis.unwrap_or(0) != 0 {
                    return Err(cx.err("a shape vector has one axis (0)"));
                }
                let (a, b) = bounds(s.dims.len());
                self.bind_outputs(cx.node, Val::Shape(ShapeVal { dims: s.dims[a..b.max(a)].to_vec(), scalar: false }));
                Ok(())
            }
            Some(Val::Act(x)) => {
                let shape = self.act_shape(&x)?;
                let rank = shape.len() as i64 + 1;
                let axis =
                    axis.ok_or_else(|| cx.err("Slice of a feature map needs `axes` (only axis 1 is supported)"))?;
                if axis != 1 && axis != 1 - rank {
                    return Err(
                        cx.err(format!("Slice along axis {axis} is not supported: only along the channels (axis 1)"))
                    );
                }
                let (a, b) = bounds(shape[0]);
                if a >= b {
                    return Err(cx.err(format!("the slice {start}..{end} of {} channels is empty", shape[0])));
                }
                let name = self.plain_name(cx.node);
                self.push(cx.node, name, Op::ChannelSlice { start: a, end: b }, vec![x]);
                Ok(())
            }
            _ => Err(cx.err("Slice is supported only along the channels of a feature map, or of a shape vector")),
        }
    }

    /// Gather along the channels with constant indices that permute them (else shape arithmetic).
    pub(super) fn gather(&mut self, cx: &Ctx) -> Result<()> {
        let Some(Val::Act(x)) = self.value(cx, 0)?.cloned() else { return self.shape_op(cx) };
        cx.only_attrs(&["axis"])?;
        cx.arity(2, 2)?;
        let c = self.act_shape(&x)?[0];
        let axis = cx.int("axis", 0)?;
        let idx = self.cnst(cx, 1)?.ok_or_else(|| cx.err("input 1 (the indices) is missing"))?;
        let (1 | -3, Some(ix), 1) = (axis, idx.i64s(), idx.dims.len()) else {
            return Err(cx.err(format!(
                "Gather of a feature map is supported only along the channels (axis 1) by a vector of int64 \
                 indices; got axis {axis}, indices of shape {:?}",
                idx.dims
            )));
        };
        let mut order = Vec::with_capacity(ix.len());
        for &i in ix {
            let j = if i < 0 { i.saturating_add(c as i64) } else { i };
            if !(0..c as i64).contains(&j) {
                return Err(cx.err(format!("index {i} is out of range for {c} channels")));
            }
            order.push(j as usize);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..c).collect::<Vec<_>>() {
            return Err(
                cx.err(format!("Gather along the channels is supported only as a permutation of all {c} channels"))
            );
        }
        let name = self.plain_name(cx.node);
        self.push(cx.node, name, Op::ChannelPermute { order }, vec![x]);
        Ok(())
    }

    /// Reshape of a feature map [N, C, H, W] to [N, g, C/g, H, W] (the first step of a channel
    /// shuffle), or of the transposed grouped view back to [N, C, H, W] (the last). Returns
    /// Ok(false) when the Reshape is neither, for the flatten path.
    pub(super) fn shuffle_reshape(&mut self, cx: &Ctx, shape: &[Option<i64>]) -> Result<bool> {
        match self.value(cx, 0)?.cloned() {
            Some(Val::Grouped { act, groups, transposed: true }) => {
                let dims = self.act_shape(&act)?;
                let c = dims[0];
                let fits = shape.len() == 4
                    && matches!(shape[1], Some(v) if v == c as i64 || v == -1)
                    && shape[2..].iter().zip(&dims[1..]).all(|(s, &d)| *s == Some(d as i64));
                if !fits {
                    return Err(cx.err(format!(
                        "after a channel shuffle's Transpose, only a Reshape back to [N, {c}, {}, {}] is supported",
                        dims[1], dims[2]
                    )));
                }
                let per = c / groups;
                let order = (0..c).map(|j| (j % groups) * per + j / groups).collect();
                let name = self.plain_name(cx.node);
                self.push(cx.node, name, Op::ChannelPermute { order }, vec![act]);
                Ok(true)
            }
            Some(Val::Grouped { .. }) => {
                Err(cx.err("a channel-grouped view [N, g, C/g, H, W] may only be transposed (0, 2, 1, 3, 4)"))
            }
            Some(Val::Act(x)) if shape.len() == 5 => {
                let dims = self.act_shape(&x)?;
                let (&[c, h, w], [_, Some(g), per, Some(sh), Some(sw)]) = (dims.as_slice(), shape) else {
                    return Err(cx.err(format!(
                        "Reshape of a {dims:?} feature map to 5 dimensions is supported only as a channel shuffle's \
                         [N, g, C/g, H, W]"
                    )));
                };
                let g = *g;
                let per_ok = match per {
                    Some(p) => *p > 0 && g > 0 && (*p as u64).saturating_mul(g as u64) == c as u64,
                    None => false,
                };
                if !(g > 0 && per_ok && *sh == h as i64 && *sw == w as i64) {
                    return Err(cx.err(format!(
                        "Reshape of a [{c}, {h}, {w}] feature map to {shape:?} is not a channel shuffle's [N, g, C/g, H, \
                         W]"
                    )));
                }
                self.bind_outputs(cx.node, Val::Grouped { act: x, groups: g as usize, transposed: false });
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Transpose: only the middle step of a channel shuffle, (0, 2, 1, 3, 4) of a grouped view.
    pub(super) fn transpose(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&["perm"])?;
        cx.arity(1, 1)?;
        let perm = cx.ints("perm")?;
        if self.layout_transpose(cx, perm.as_deref())? {
            return Ok(());
        }
        match (self.value(cx, 0)?.cloned(), perm.as_deref()) {
            (Some(Val::Grouped { act, groups, transposed: false }), Some([0, 2, 1, 3, 4])) => {
                self.bind_outputs(cx.node, Val::Grouped { act, groups, transposed: true });
                Ok(())
            }
            (v, p) => {
                if !matches!(v, Some(Val::Act(_) | Val::Nhwc(_) | Val::Const(_))) {
                    self.act(cx, 0)?; // says what the input is instead
                }
                Err(cx.err(format!(
                    "Transpose (perm {p:?}) is supported only between channels first and last ((0, 2, 3, 1) of a \
                 feature map, (0, 3, 1, 2) back), of a 2-D weight, or as a channel shuffle: Reshape to [N, g, C/g, \
                 H, W], Transpose (0, 2, 1, 3, 4), Reshape back"
                )))
            }
        }
    }
}
