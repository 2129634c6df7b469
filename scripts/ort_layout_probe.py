"""Which convolutions ONNX Runtime's CPU provider runs in its blocked NCHWc layout, and where it
inserts layout reorders: the cause of the latency model's error in ONNX Runtime (issue "Pruned
models that are really faster where they run", item 3).

Part 1 builds one-convolution models over a range of (input, output) channel counts and reads
ORT's optimised graph (ORT_ENABLE_ALL, as edgeprune runs it). Part 2 reads the optimised graph of
each ONNX file given (e.g. `edgeprune export MODEL -o m.onnx --fold-bn`) and counts NCHWc
convolutions, plain ones and reorders.

    python scripts/ort_layout_probe.py [model.onnx ...]   # needs onnx, onnxruntime, numpy
                                                           # (scripts/setup-pyref.sh's environment)
"""
import collections
import os
import sys
import tempfile

import numpy as np
import onnx
import onnx.helper as h
import onnxruntime as ort
from onnx import numpy_helper as nh


def optimised(model_bytes):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = os.path.join(d, "o.onnx")
        ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        return onnx.load(so.optimized_model_filepath)


def one_conv(cin, cout, groups=1, k=3, size=16):
    rng = np.random.default_rng(0)
    w = nh.from_array(rng.random((cout, cin // groups, k, k), dtype=np.float32), "W")
    b = nh.from_array(rng.random(cout, dtype=np.float32), "B")
    nodes = [h.make_node("Conv", ["x", "W", "B"], ["y"], pads=[k // 2] * 4, group=groups), h.make_node("Relu", ["y"], ["z"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", 1, [1, cin, size, size])],
                     [h.make_tensor_value_info("z", 1, [1, cout, size, size])], [w, b])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()


def layout(m):
    ops = [(n.domain, n.op_type) for n in m.graph.node]
    if ("com.microsoft.nchwc", "Conv") not in ops:
        return "NCHW"
    return "NCHWc, input reordered" if ("com.microsoft.nchwc", "ReorderInput") in ops else "NCHWc, NCHW input"


print(f"onnxruntime {ort.__version__}\n")
print("## One 3x3 convolution (16x16 input, batch 1): the layout ORT picks by input channels\n")
print("| input channels | layout (output channels 16) | layout (output channels 29) | depthwise |")
print("|---:|---|---|---|")
for cin in list(range(1, 34)) + [40, 48, 57, 64]:
    dw = layout(optimised(one_conv(cin, cin, groups=cin)))
    print(f"| {cin} | {layout(optimised(one_conv(cin, 16)))} | {layout(optimised(one_conv(cin, 29)))} | {dw} |")

for path in sys.argv[1:]:
    m = optimised(open(path, "rb").read())
    c = collections.Counter((n.domain or "ai.onnx") + ":" + n.op_type for n in m.graph.node)
    nchwc = c["com.microsoft.nchwc:Conv"]
    plain = c["com.microsoft:FusedConv"] + c["ai.onnx:Conv"]
    reorders = c["com.microsoft.nchwc:ReorderInput"] + c["com.microsoft.nchwc:ReorderOutput"]
    print(f"\n{os.path.basename(path)}: {nchwc} NCHWc convolutions, {plain} NCHW convolutions, {reorders} reorders")
