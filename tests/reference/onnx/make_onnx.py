"""Reference ONNX files for tests/onnx.rs, made by PyTorch's exporter and run by onnxruntime.

Run from the repository root after `cargo build --release`, with torch==2.13.0, onnx and
onnxruntime (the committed files were made with torch 2.13.0, onnx 1.23.2, onnxruntime 1.32.0):
    ~/.cache/edgeprune/torch-venv/bin/python tests/reference/onnx/make_onnx.py [CASE ...]
(only the CASEs named, by file stem, if any are given).

For each case it builds the network's graph.json with `edgeprune init NAME --num-classes 10`,
loads it in PyTorch with scripts/torch_graph.py, draws He-normal weights and small random biases
(torch seed 0; PyTorch's default initialisation shrinks the signal layer by layer until the logits
are little more than the last bias, which would make the comparisons blind to the rest of the
network), gives every BatchNorm random statistics and affine parameters, scales the classifier
(the last conv or linear layer, after which the zoo networks are linear) so that the largest logit
on the fixed input is 5 (residual networks otherwise reach logits in the hundreds, where an
absolute tolerance of 1e-4 is below float32's resolution), and exports it with the
TorchScript exporter (dynamo=False, which keeps module names in the initializer names) at the
case's opset, with a dynamic batch dimension:
  - `kept`: BatchNorm kept as BatchNormalization (training=PRESERVE, no constant folding);
  - `folded`: the default eval export, which folds each BatchNorm into its convolution.
`handmade` and `view` are small modules written here for the import paths the zoo does not
produce: ReLU6 as Clip, average pooling, a Reshape to [-1, features], an explicit matmul + bias
(MatMul + Add), and the Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain of
`x.view(x.size(0), -1)` (with a max pool with padding and ceil_mode).
Then it runs onnxruntime on a fixed input of 4 images and writes CASE.onnx and CASE.safetensors
(`x`: the input, `y`: onnxruntime's output, `torch`: PyTorch's output). The opsets are spread
over 13..18 so that every supported opset is imported by the tests.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from torch_graph import GraphModule  # noqa: E402

# (file stem, network, opset, mode)
CASES = [
    ("resnet20.kept", "resnet20", 17, "kept"),
    ("resnet20.folded", "resnet20", 13, "folded"),
    ("squeezenet.kept", "squeezenet", 18, "kept"),
    ("squeezenet.folded", "squeezenet", 16, "folded"),
    ("projection_residual.kept", "projection_residual", 13, "kept"),
    ("projection_residual.folded", "projection_residual", 14, "folded"),
    ("inception.kept", "inception", 14, "kept"),
    ("inception.folded", "inception", 15, "folded"),
    ("dense.kept", "dense", 15, "kept"),
    ("dense.folded", "dense", 16, "folded"),
    ("grouped.kept", "grouped", 16, "kept"),
    ("grouped.folded", "grouped", 17, "folded"),
    ("squeeze_excite.kept", "squeeze_excite", 17, "kept"),
    ("squeeze_excite.folded", "squeeze_excite", 18, "folded"),
    ("depthwise_separable.kept", "depthwise_separable", 18, "kept"),
    ("depthwise_separable.folded", "depthwise_separable", 13, "folded"),
    ("flatten_2x2.kept", "flatten_2x2", 13, "kept"),
    ("flatten_2x2.folded", "flatten_2x2", 17, "folded"),
    ("mobilenetv3_block.kept", "mobilenetv3_block", 17, "kept"),
    ("mobilenetv3_block.folded", "mobilenetv3_block", 14, "folded"),
    ("shuffle_block.kept", "shuffle_block", 13, "kept"),
    ("shuffle_block.folded", "shuffle_block", 18, "folded"),
    # No BatchNorm to fold: `.torch` is exported as `kept` is, but tests/onnx.rs's folding check
    # (which needs a BatchNorm) skips it.
    ("convnext_block.torch", "convnext_block", 17, "kept"),
    ("convnext_block.folded", "convnext_block", 18, "folded"),
    ("handmade.folded", "handmade", 14, "folded"),
    ("view.kept", "view", 15, "kept"),
]


class Handmade(nn.Module):
    """conv -> BN -> ReLU6 -> avg pool -> reshape(-1, F) -> x @ W^T + b -> ReLU -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2, 2)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(F.relu6(self.bn(self.conv(x))))
        x = x.reshape(-1, 8 * 4 * 4)
        x = F.relu(torch.matmul(x, self.fc1.weight.t()) + self.fc1.bias)
        return self.fc2(x)


class View(nn.Module):
    """conv -> BN -> ReLU -> max pool (padded, ceil mode) -> x.view(x.size(0), -1) -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.fc = nn.Linear(6 * 3 * 3, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.fc(x.view(x.size(0), -1))


def build(network, tmp, stem):
    if network == "handmade":
        return Handmade(), [3, 8, 8]
    if network == "view":
        return View(), [3, 10, 10]
    out = os.path.join(tmp, stem)
    subprocess.run([os.path.join(ROOT, "target", "release", "edgeprune"), "init", network, "--num-classes", "10",
                    "-o", out], check=True, stdout=subprocess.DEVNULL)
    m = GraphModule(os.path.join(out, "graph.json"))
    return m, m.graph["nodes"][0]["op"]["shape"]


def main():
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        only = set(sys.argv[1:])
        for stem, network, opset, mode in CASES:
            if only and stem not in only:
                continue
            torch.manual_seed(0)
            model, shape = build(network, tmp, stem)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                        if m.bias is not None:
                            m.bias.uniform_(-0.1, 0.1)
                    if isinstance(m, nn.BatchNorm2d):
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.2, 0.2)
                        m.running_mean.uniform_(-0.1, 0.1)
                        m.running_var.uniform_(0.5, 2.0)
                    if isinstance(m, nn.LayerNorm):
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.2, 0.2)
                    if hasattr(m, "layer_scale"):
                        m.layer_scale.uniform_(0.5, 1.5)
            model.eval()
            x = torch.randn(4, *shape)
            with torch.no_grad():
                last = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
                scale = 5.0 / model(x).abs().max()
                last.weight.mul_(scale)
                last.bias.mul_(scale)
            kw = dict(dynamo=False, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
            if mode == "kept":
                kw.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
            path = os.path.join(HERE, stem + ".onnx")
            torch.onnx.export(model, (torch.randn(2, *shape),), path, **kw)
            with torch.no_grad():
                ref = model(x).numpy()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            y = sess.run(None, {"input": x.numpy()})[0]
            save_file({"x": x.numpy(), "y": np.ascontiguousarray(y), "torch": ref},
                      os.path.join(HERE, stem + ".safetensors"))
            print(f"{stem}: opset {opset}, {os.path.getsize(path)} bytes, max |y| {np.abs(y).max():.3f}, "
                  f"spread over images {y.std(axis=0).max():.3f}, onnxruntime vs torch max abs "
                  f"{np.abs(y - ref).max():.2e}")


if __name__ == "__main__":
    main()
