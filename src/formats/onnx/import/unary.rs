//! Converters of the one-input ops: activations (Relu, Clip as ReLU6 or ReLU, Sigmoid,
//! HardSwish, HardSigmoid) and pools (MaxPool, AveragePool, GlobalAveragePool, ReduceMean over the
//! spatial axes).

use super::*;

impl Importer {
    pub(super) fn plain(&mut self, cx: &Ctx, op: Op) -> Result<()> {
        cx.only_attrs(&[])?;
        cx.arity(1, 1)?;
        let x = self.act(cx, 0)?;
        let name = self.plain_name(cx.node);
        self.push(cx.node, name, op, vec![x]);
        Ok(())
    }

    pub(super) fn relu(&mut self, cx: &Ctx) -> Result<()> {
        self.plain(cx, Op::ReLU)
    }

    pub(super) fn sigmoid(&mut self, cx: &Ctx) -> Result<()> {
        self.plain(cx, Op::Sigmoid)
    }

    pub(super) fn hard_swish(&mut self, cx: &Ctx) -> Result<()> {
        self.plain(cx, Op::HardSwish)
    }

    /// ONNX's HardSigmoid is max(0, min(1, alpha x + beta)); torch's (and the IR's) has
    /// alpha 1/6 and beta 1/2, as `torch.onnx.export` writes it.
    pub(super) fn hard_sigmoid(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&["alpha", "beta"])?;
        cx.arity(1, 1)?;
        let (alpha, beta) = (cx.float("alpha", 0.2)?, cx.float("beta", 0.5)?);
        if (alpha - 1.0 / 6.0).abs() > 1e-6 || (beta - 0.5).abs() > 1e-6 {
            return Err(cx.err(format!(
                "HardSigmoid(alpha {alpha}, beta {beta}) is supported only as torch's Hardsigmoid (alpha 1/6, beta 1/2)"
            )));
        }
        let x = self.act(cx, 0)?;
        let name = self.plain_name(cx.node);
        self.push(cx.node, name, Op::HardSigmoid, vec![x]);
        Ok(())
    }

    pub(super) fn global_avg_pool(&mut self, cx: &Ctx) -> Result<()> {
        self.plain(cx, Op::GlobalAvgPool)
    }

    /// ReduceMean over the spatial axes (`x.mean([2, 3])`, MNASNet's pooling): a global average
    /// pool, then (`keepdims` 0) a flatten. The axes come from the attribute (opsets 13-17) or
    /// from a constant second input (opset 18).
    pub(super) fn reduce_mean(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&["axes", "keepdims", "noop_with_empty_axes"])?;
        cx.arity(1, 2)?;
        let axes = match (cx.ints("axes")?, cx.input_name(1).filter(|s| !s.is_empty())) {
            (Some(a), None) => a,
            (None, Some(_)) => match self.value(cx, 1)? {
                Some(Val::Const(c)) if c.i64s().is_some() => c.i64s().unwrap_or_default().to_vec(),
                _ => return Err(cx.err("input 1 (the axes) must be a constant int64 tensor")),
            },
            _ => return Err(cx.err("ReduceMean needs its axes (over all axes is not supported)")),
        };
        let mut axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
        axes.sort_unstable();
        if axes != [2, 3] {
            return Err(cx.err(format!(
                "ReduceMean over axes {axes:?} is not supported (only the spatial axes [2, 3] of [N, C, H, W])"
            )));
        }
        let x = self.act(cx, 0)?;
        let name = self.plain_name(cx.node);
        if cx.int("keepdims", 1)? != 0 {
            self.push(cx.node, name, Op::GlobalAvgPool, vec![x]);
            return Ok(());
        }
        // Two IR nodes from one ONNX node: the output ends bound to the second.
        let pool = self.unique(format!("{name}.pool"), false);
        self.push(cx.node, pool.clone(), Op::GlobalAvgPool, vec![x]);
        self.push(cx.node, name, Op::Flatten, vec![pool]);
        Ok(())
    }

    pub(super) fn clip(&mut self, cx: &Ctx) -> Result<()> {
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

    pub(super) fn pool(&mut self, cx: &Ctx) -> Result<()> {
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
}
