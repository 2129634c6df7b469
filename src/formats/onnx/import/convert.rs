//! One converter per ONNX op type, from the table that is also the list of supported ops.

use super::*;

type Converter = fn(&mut Importer, &Ctx) -> Result<()>;

/// Every ONNX op type import understands (default domain) and the method that maps it: the list
/// of supported ops and the "unsupported op" message derive from this table.
const CONVERTERS: &[(&str, Converter)] = &[
    ("Conv", Importer::conv),
    ("BatchNormalization", Importer::batch_norm),
    ("Relu", Importer::relu),
    ("Clip", Importer::clip),
    ("Sigmoid", Importer::sigmoid),
    ("HardSwish", Importer::hard_swish),
    ("HardSigmoid", Importer::hard_sigmoid),
    ("MaxPool", Importer::pool),
    ("AveragePool", Importer::pool),
    ("GlobalAveragePool", Importer::global_avg_pool),
    ("ReduceMean", Importer::reduce_mean),
    ("Add", Importer::elementwise),
    ("Sum", Importer::elementwise),
    ("Mul", Importer::elementwise),
    ("Concat", Importer::concat),
    ("Flatten", Importer::flatten),
    ("Reshape", Importer::reshape),
    ("Gemm", Importer::gemm),
    ("MatMul", Importer::matmul),
    ("Dropout", Importer::dropout),
    ("Identity", Importer::identity),
    ("Constant", Importer::constant),
    ("Shape", Importer::shape_op),
    ("Gather", Importer::gather),
    ("Unsqueeze", Importer::shape_op),
    ("Slice", Importer::slice),
    ("Transpose", Importer::transpose),
    ("LayerNormalization", Importer::layer_norm),
    ("Erf", Importer::erf),
    ("Div", Importer::div),
    ("Sub", Importer::sub),
    ("Cast", Importer::cast),
];

/// The ONNX op types import understands (default domain), in the order of its table.
pub fn supported_ops() -> Vec<&'static str> {
    CONVERTERS.iter().map(|(op, _)| *op).collect()
}

/// What of `nodes` import cannot take, as one sentence: each unsupported op type with how many
/// nodes use it, most used first (a model's whole gap, not only its first unsupported node).
pub(super) fn unsupported_summary<'a>(nodes: impl Iterator<Item = &'a NodeProto>) -> (String, usize) {
    let mut counts: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for n in nodes {
        let known = matches!(n.domain(), "" | "ai.onnx") && CONVERTERS.iter().any(|(op, _)| *op == n.op_type());
        if !known {
            *counts.entry(op_label(n)).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let list: Vec<String> = v.iter().map(|(op, n)| format!("{op} ({n})")).collect();
    (format!("In all, the model uses {} unsupported op type(s): {}", v.len(), list.join(", ")), v.len())
}

impl Importer {
    /// Adds an IR node for ONNX node `n` and binds its first output to it.
    pub(super) fn push(&mut self, n: &NodeProto, name: String, op: Op, inputs: Vec<String>) {
        self.origin.insert(name.clone(), format!("node `{}` ({})", describe(n), op_label(n)));
        self.nodes.push(Node { name: name.clone(), op, inputs });
        self.bind_outputs(n, Val::Act(name));
    }

    /// Binds a node's first output to `v` and marks its other outputs as unsupported.
    pub(super) fn bind_outputs(&mut self, n: &NodeProto, v: Val) {
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

    pub(super) fn value(&self, cx: &Ctx, i: usize) -> Result<Option<&Val>> {
        let Some(name) = cx.input_name(i) else { return Ok(None) };
        match self.values.get(name) {
            Some(Val::Bad(why)) => Err(cx.err(format!("input {i} (`{name}`): {why}"))),
            Some(v) => Ok(Some(v)),
            None => Err(cx.err(format!("input {i} (`{name}`) is not defined"))),
        }
    }

    /// Input `i`, which must be computed by the network.
    pub(super) fn act(&self, cx: &Ctx, i: usize) -> Result<String> {
        match self.value(cx, i)? {
            Some(Val::Act(a)) => Ok(a.clone()),
            Some(Val::Shape(_)) => Err(cx.err(format!(
                "input {i} (`{}`) is a shape computed by a Shape node; only Gather, Unsqueeze, Concat and \
                 Reshape take shapes",
                cx.input_name(i).unwrap_or("")
            ))),
            Some(Val::Nhwc(_)) => Err(cx.err(format!(
                "input {i} (`{}`) is a feature map transposed to channels last (0, 2, 3, 1); only \
                 LayerNormalization over the last axis, MatMul by a weight, an exact GELU and a Transpose back \
                 (0, 3, 1, 2) take it",
                cx.input_name(i).unwrap_or("")
            ))),
            Some(Val::Gelu { .. }) => Err(cx.err(format!(
                "input {i} (`{}`) is part of an exact GELU (x * (1 + erf(x / sqrt 2)) / 2); only the rest of that \
                 pattern may read it",
                cx.input_name(i).unwrap_or("")
            ))),
            Some(Val::Grouped { .. }) => Err(cx.err(format!(
                "input {i} (`{}`) is a feature map reshaped to [N, g, C/g, H, W]; only a channel shuffle's \
                 Transpose (0, 2, 1, 3, 4) and Reshape back take it",
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
    pub(super) fn cnst(&self, cx: &Ctx, i: usize) -> Result<Option<Rc<Const>>> {
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
    pub(super) fn weight(&self, cx: &Ctx, i: usize, what: &str, rank: usize) -> Result<Rc<Const>> {
        let c = self.cnst(cx, i)?.ok_or_else(|| cx.err(format!("input {i} ({what}) is missing")))?;
        if !matches!(c.data, Data::F32(_)) {
            return Err(cx.err(format!("{what} `{}` must be float32, got int64-like data", c.name)));
        }
        if c.dims.len() != rank {
            return Err(cx.err(format!("{what} `{}` must have {rank} dimensions, got shape {:?}", c.name, c.dims)));
        }
        Ok(c)
    }

    pub(super) fn put(&mut self, node: &str, suffix: &str, dims: Vec<usize>, data: Vec<f32>) {
        self.weights.insert(format!("{node}.{suffix}"), HostTensor::f32(dims, data));
    }

    pub(super) fn convert(&mut self, n: &NodeProto) -> Result<()> {
        let path = self.path.clone();
        let cx = Ctx { path: &path, opset: self.opset, node: n };
        let converter = CONVERTERS.iter().find(|(op, _)| *op == n.op_type()).map(|(_, f)| *f);
        match converter {
            // A supported op type used in a way import does not take: the model's whole gap (its
            // unsupported op types, if it has any) said too, as a transformer needs it said.
            Some(f) if matches!(n.domain(), "" | "ai.onnx") => f(self, &cx).map_err(|e| match e {
                Error::File { path, msg } if self.unsupported_count > 0 => {
                    Error::File { path, msg: format!("{msg}. {}", self.unsupported) }
                }
                e => e,
            }),
            _ => Err(cx.err(format!(
                "unsupported op `{}`; edgeprune imports {} (default domain). {}",
                op_label(n),
                supported_ops().join(", "),
                self.unsupported
            ))),
        }
    }

    pub(super) fn identity(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&[])?;
        cx.arity(1, 1)?;
        match self.value(cx, 0)?.cloned() {
            Some(Val::Const(c)) => {
                let out = n.output.first().cloned().unwrap_or_default();
                self.bind_outputs(n, Val::Const(Rc::new(Const { name: out, ..(*c).clone() })));
            }
            _ => {
                let x = self.act(cx, 0)?;
                let name = self.plain_name(n);
                self.push(n, name, Op::Identity, vec![x]);
            }
        }
        Ok(())
    }

    /// An op of one activation input and no attributes that maps onto one IR op.
    pub(super) fn concat(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&["axis"])?;
        let axis = cx.typed("axis", at::INT)?.ok_or_else(|| cx.err("attribute `axis` is required"))?.i();
        if axis == 0 {
            return self.shape_concat(cx);
        }
        if axis != 1 && axis != -3 {
            return Err(cx.err(format!("concatenation along axis {axis} is not supported (only channels, axis 1)")));
        }
        if n.input.is_empty() {
            return Err(cx.err("takes at least 1 input, got 0"));
        }
        let xs = (0..n.input.len()).map(|i| self.act(cx, i)).collect::<Result<Vec<_>>>()?;
        let name = self.plain_name(n);
        let op = if xs.len() == 1 { Op::Identity } else { Op::Concat };
        self.push(n, name, op, xs);
        Ok(())
    }

    pub(super) fn flatten(&mut self, cx: &Ctx) -> Result<()> {
        cx.only_attrs(&["axis"])?;
        cx.arity(1, 1)?;
        let axis = cx.int("axis", 1)?;
        if axis != 1 && axis != -3 {
            return Err(cx.err(format!("Flatten with axis {axis} is not supported (only axis 1)")));
        }
        let x = self.act(cx, 0)?;
        let name = self.plain_name(cx.node);
        self.push(cx.node, name, Op::Flatten, vec![x]);
        Ok(())
    }

    pub(super) fn constant(&mut self, cx: &Ctx) -> Result<()> {
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

    pub(super) fn conv(&mut self, cx: &Ctx) -> Result<()> {
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

    pub(super) fn batch_norm(&mut self, cx: &Ctx) -> Result<()> {
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

    pub(super) fn elementwise(&mut self, cx: &Ctx) -> Result<()> {
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
        if n.input.len() == 2 && self.is_int_value(cx, 0) && self.is_int_value(cx, 1) {
            let op = if kind == "Mul" { channels::Arith::Mul } else { channels::Arith::Add };
            return self.shape_arith(cx, op);
        }
        if self.gelu_or_scale(cx)? {
            return Ok(());
        }
        let mut vals = Vec::with_capacity(n.input.len());
        for i in 0..n.input.len() {
            vals.push(self.value(cx, i)?.cloned().ok_or_else(|| cx.err(format!("input {i} is missing")))?);
        }
        if kind == "Add"
            && let [a, b] = vals.as_slice()
            && let (Val::Act(x) | Val::Nhwc(x), Val::Const(c)) | (Val::Const(c), Val::Act(x) | Val::Nhwc(x)) = (a, b)
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
    pub(super) fn matmul_bias(&mut self, cx: &Ctx, x: &str, c: &Rc<Const>) -> Result<()> {
        let n = cx.node;
        let act_value =
            n.input.iter().find(|v| matches!(self.values.get(*v), Some(Val::Act(_) | Val::Nhwc(_)))).cloned();
        let nhwc = act_value.as_ref().is_some_and(|v| matches!(self.values.get(v), Some(Val::Nhwc(_))));
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
        self.bind_outputs(n, if nhwc { Val::Nhwc(name.clone()) } else { Val::Act(name.clone()) });
        if let Some(o) = self.origin.get_mut(&name) {
            o.push_str(&format!(" + node `{}` (Add)", describe(n)));
        }
        Ok(())
    }

    pub(super) fn gemm(&mut self, cx: &Ctx) -> Result<()> {
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

    pub(super) fn matmul(&mut self, cx: &Ctx) -> Result<()> {
        let n = cx.node;
        cx.only_attrs(&[])?;
        cx.arity(2, 2)?;
        // A flat input, or the channels of a channels-last feature map.
        let (x, nhwc) = match self.map_of(cx, 0) {
            Some(m) if m.nhwc => (m.act, true),
            _ => (self.act(cx, 0)?, false),
        };
        if !nhwc && self.act_shape(&x)?.len() != 1 {
            return Err(cx.err(
                "MatMul of a channel-first feature map is not supported (it would contract the width): only of a \
                 flat input or of a map transposed to channels last (0, 2, 3, 1)",
            ));
        }
        let w = self.weight(cx, 1, "the weight", 2)?;
        let (in_f, out_f) = (w.dims[0], w.dims[1]);
        let (name, by_param) = self.node_name(n);
        self.put(&name, "weight", vec![out_f, in_f], transpose(&w.f32s(), in_f, out_f));
        self.matmuls.insert(name.clone(), by_param);
        self.push_in(n, name, Op::Linear { in_features: in_f, out_features: out_f, bias: false }, x, nhwc);
        Ok(())
    }

    pub(super) fn dropout(&mut self, cx: &Ctx) -> Result<()> {
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

/// Transposes a row-major [rows, cols] matrix.
pub(super) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}
