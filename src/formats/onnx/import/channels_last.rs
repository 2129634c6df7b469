//! ConvNeXt's channels-last stretches and the ops in them, mapped onto channel-first IR ops:
//! a Transpose (0, 2, 3, 1) of a feature map makes an NHWC view of the same IR node; on it,
//! LayerNormalization over the last axis is an IR LayerNorm2d, MatMul by a weight (+ Add of a
//! bias) an IR Linear over the channels, and exact GELU (Div by sqrt 2, Erf, Add 1, Mul by x, Mul
//! by 0.5, in either order of the two products) an IR GELU; a Transpose (0, 3, 1, 2) ends the
//! view. A Mul by a [C, 1, 1] constant (ConvNeXt's layer scale) is an IR LayerScale. The GELU
//! pattern is recognised on channel-first feature maps too.

use super::convert::transpose;
use super::*;

/// How far an exact-GELU pattern x * (1 + erf(x / sqrt 2)) / 2 has got, on the feature map `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GeluStage {
    /// x / sqrt 2
    Arg,
    /// erf(x / sqrt 2)
    Erf,
    /// 1 + erf(x / sqrt 2)
    OnePlus,
    /// x / 2
    Half,
    /// x * (1 + erf(x / sqrt 2))
    Double,
}

/// A feature map as the ONNX graph sees it: an IR node's output, channels first or (`nhwc`)
/// transposed to channels last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Map {
    pub(super) act: String,
    pub(super) nhwc: bool,
}

impl Importer {
    /// Input `i` as a feature map in either layout, if it is one.
    pub(super) fn map_of(&self, cx: &Ctx, i: usize) -> Option<Map> {
        match cx.input_name(i).and_then(|n| self.values.get(n)) {
            Some(Val::Act(a)) => Some(Map { act: a.clone(), nhwc: false }),
            Some(Val::Nhwc(a)) => Some(Map { act: a.clone(), nhwc: true }),
            _ => None,
        }
    }

    /// Adds an IR node and binds the ONNX output to it in the layout `nhwc`.
    pub(super) fn push_in(&mut self, n: &NodeProto, name: String, op: Op, x: String, nhwc: bool) {
        self.push(n, name.clone(), op, vec![x]);
        if nhwc {
            self.bind_outputs(n, Val::Nhwc(name));
        }
    }

    /// Transposes between the layouts (and of 2-D constants, as torch writes a Linear's weight).
    /// Returns Ok(false) for a Transpose that is none of these.
    pub(super) fn layout_transpose(&mut self, cx: &Ctx, perm: Option<&[i64]>) -> Result<bool> {
        let v = self.value(cx, 0)?.cloned();
        match (v, perm) {
            (Some(Val::Act(a)), Some([0, 2, 3, 1])) if self.act_shape(&a)?.len() == 3 => {
                self.bind_outputs(cx.node, Val::Nhwc(a));
            }
            (Some(Val::Nhwc(a)), Some([0, 3, 1, 2])) => self.bind_outputs(cx.node, Val::Act(a)),
            (Some(Val::Const(c)), Some([1, 0]) | None) if c.dims.len() == 2 && matches!(c.data, Data::F32(_)) => {
                let (r, k) = (c.dims[0], c.dims[1]);
                let t = Const { name: c.name.clone(), dims: vec![k, r], data: Data::F32(transpose(&c.f32s(), r, k)) };
                self.bind_outputs(cx.node, Val::Const(Rc::new(t)));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// LayerNormalization over the channels of a channels-last feature map.
    pub(super) fn layer_norm(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["axis", "epsilon", "stash_type"])?;
        cx.arity(2, 3)?;
        let axis = cx.int("axis", -1)?;
        let x = match self.map_of(cx, 0) {
            Some(Map { act, nhwc: true }) if axis == -1 || axis == 3 => act,
            _ => {
                return Err(cx.err(format!(
                    "LayerNormalization (axis {axis}) is supported only over the channels: on a feature map \
                     transposed to channels last (0, 2, 3, 1), over its last axis"
                )));
            }
        };
        let c = self.act_shape(&x)?[0];
        let eps = f32_to_f64(cx.float("epsilon", 1e-5)?);
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(cx.err(format!("epsilon must be positive, got {eps}")));
        }
        let w = self.weight(cx, 1, "the scale", 1)?;
        let b = match self.cnst(cx, 2)? {
            Some(b) => b.f32s(),
            None => vec![0.0; c],
        };
        if w.dims != [c] || b.len() != c {
            return Err(cx.err(format!(
                "the scale and bias must have the {c} channels' entries, got {:?} and {}",
                w.dims,
                b.len()
            )));
        }
        let (name, _) = self.node_name(n);
        self.put(&name, "weight", vec![c], w.f32s());
        self.put(&name, "bias", vec![c], b);
        self.push_in(n, name, Op::LayerNorm2d { num_features: c, eps }, x, true);
        Ok(())
    }

    /// Div of a feature map by sqrt 2: the start of an exact GELU.
    pub(super) fn div_map(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&[])?;
        cx.arity(2, 2)?;
        let c = self.cnst(cx, 1)?.and_then(|c| c.scalar());
        match (self.map_of(cx, 0), c) {
            (Some(m), Some(c)) if (c - std::f64::consts::SQRT_2).abs() < 1e-4 => {
                self.bind_outputs(cx.node, Val::Gelu { map: m, stage: GeluStage::Arg });
                Ok(())
            }
            _ => Err(cx.err(
                "Div of a feature map is supported only by sqrt 2 inside an exact GELU \
                 (x * (1 + erf(x / sqrt 2)) / 2)",
            )),
        }
    }

    pub(super) fn erf(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&[])?;
        cx.arity(1, 1)?;
        match self.value(cx, 0)?.cloned() {
            Some(Val::Gelu { map, stage: GeluStage::Arg }) => {
                self.bind_outputs(cx.node, Val::Gelu { map, stage: GeluStage::Erf });
                Ok(())
            }
            _ => Err(cx.err("Erf is supported only inside an exact GELU (x * (1 + erf(x / sqrt 2)) / 2)")),
        }
    }

    /// Add and Mul that are steps of a GELU pattern or a layer scale; Ok(false) if this one is
    /// neither (then it is a join of feature maps or a MatMul's bias).
    pub(super) fn gelu_or_scale(&mut self, cx: &Ctx) -> Result<bool> {
        let n = cx.node;
        if n.input.len() != 2 {
            return Ok(false);
        }
        let val = |i: usize| cx.input_name(i).and_then(|v| self.values.get(v)).cloned();
        let (a, b) = (val(0), val(1));
        let scalar = |v: &Option<Val>| match v {
            Some(Val::Const(c)) if c.numel() == 1 => c.scalar(),
            _ => None,
        };
        let near = |v: &Option<Val>, want: f64| scalar(v).is_some_and(|s| (s - want).abs() < 1e-4);
        let gelu = |v: &Option<Val>| match v {
            Some(Val::Gelu { map, stage }) => Some((map.clone(), *stage)),
            _ => None,
        };
        let map = |i: usize| self.map_of(cx, i);
        let mul = n.op_type() == "Mul";
        let next = if !mul {
            // (erf + 1), either order.
            match (gelu(&a), gelu(&b)) {
                (Some((m, GeluStage::Erf)), None) if near(&b, 1.0) => Some((m, GeluStage::OnePlus)),
                (None, Some((m, GeluStage::Erf))) if near(&a, 1.0) => Some((m, GeluStage::OnePlus)),
                _ => None,
            }
        } else {
            let pair = [(gelu(&a), gelu(&b), map(0), map(1), &b), (gelu(&b), gelu(&a), map(1), map(0), &a)];
            let mut found = None;
            for (g, other_g, m, other_m, other) in pair {
                found = match (g, other_g, m) {
                    // x * (1 + erf) or (1 + erf) * x
                    (Some((gm, GeluStage::OnePlus)), None, _) if other_m.as_ref() == Some(&gm) => {
                        Some((gm, GeluStage::Double))
                    }
                    (Some((gm, GeluStage::Double)), None, _) if near(other, 0.5) => {
                        self.finish_gelu(cx, gm)?;
                        return Ok(true);
                    }
                    (Some((gm, GeluStage::Half)), Some((om, GeluStage::OnePlus)), _) if gm == om => {
                        self.finish_gelu(cx, gm)?;
                        return Ok(true);
                    }
                    (None, None, Some(m)) if near(other, 0.5) => Some((m, GeluStage::Half)),
                    (None, None, Some(m)) if near(other, std::f64::consts::FRAC_1_SQRT_2) => Some((m, GeluStage::Arg)),
                    _ => None,
                };
                if found.is_some() {
                    break;
                }
            }
            if found.is_none() && self.layer_scale(cx)? {
                return Ok(true);
            }
            found
        };
        match next {
            Some((map, stage)) => {
                self.bind_outputs(n, Val::Gelu { map, stage });
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn finish_gelu(&mut self, cx: &Ctx, m: Map) -> Result<()> {
        // The pattern's ONNX nodes are one IR node: a leaf module (`nn.GELU`) gives it its name.
        let name = match torch_scope(cx.node.name()) {
            Some((scope, _)) if !scope.is_empty() && !self.parent_scopes.contains(&scope) => {
                self.unique(clean(&scope), false)
            }
            _ => self.plain_name(cx.node),
        };
        self.push_in(cx.node, name, Op::GELU, m.act, m.nhwc);
        Ok(())
    }

    /// Mul of a channel-first feature map by a [C, 1, 1] (or [1, C, 1, 1]) constant: a layer
    /// scale. Ok(false) if the Mul is not one.
    fn layer_scale(&mut self, cx: &Ctx) -> Result<bool> {
        let n = cx.node;
        let (x, k) = match (self.map_of(cx, 0), self.map_of(cx, 1)) {
            (Some(Map { act, nhwc: false }), None) => (act, 1),
            (None, Some(Map { act, nhwc: false })) => (act, 0),
            _ => return Ok(false),
        };
        let Some(Val::Const(c)) = cx.input_name(k).and_then(|v| self.values.get(v)).cloned() else { return Ok(false) };
        let ch = self.act_shape(&x)?[0];
        if !matches!(c.data, Data::F32(_)) || !(c.dims == [ch, 1, 1] || c.dims == [1, ch, 1, 1]) {
            return Err(cx.err(format!(
                "Mul of a [{ch}, H, W] feature map by the constant `{}` of shape {:?} is supported only as a \
                 per-channel scale of shape [{ch}, 1, 1]",
                c.name, c.dims
            )));
        }
        let name = match param_prefix(&c.name, "layer_scale") {
            Some(p) => self.unique(p.to_string(), true),
            None => self.plain_name(n),
        };
        self.put(&name, "layer_scale", vec![ch, 1, 1], c.f32s());
        self.push(n, name, Op::LayerScale { num_features: ch }, vec![x]);
        Ok(true)
    }
}
