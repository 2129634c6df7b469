"""Runs ONNX models in onnxruntime on inputs from safetensors files (used by tests/onnx.rs).

    python scripts/onnx_run.py MODEL.onnx INPUT.safetensors OUTPUT.safetensors [MODEL INPUT OUTPUT ...]

Each INPUT holds the tensor `x` (N x C x H x W, float32); each OUTPUT gets `y`, the model's first
output on `x`, computed by onnxruntime's CPU provider with its default graph optimisations (what a
deployment gets) on one thread. Prints one line per model: its path, input and output shapes.
"""
import sys

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file, save_file


def run(model, inp, out):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = load_file(inp)["x"].astype(np.float32)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    save_file({"y": np.ascontiguousarray(y, dtype=np.float32)}, out)
    print(model, list(x.shape), "->", list(y.shape))


def main(args):
    if not args or len(args) % 3:
        sys.exit(__doc__)
    for i in range(0, len(args), 3):
        run(*args[i:i + 3])


if __name__ == "__main__":
    main(sys.argv[1:])
