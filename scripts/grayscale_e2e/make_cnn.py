"""A small grayscale CNN (1 x 28 x 28 -> 10) in PyTorch with random weights, exported to ONNX as a
user would (opset 17, BatchNorm kept), for edgeprune to import, train, prune and export.

    python scripts/grayscale_e2e/make_cnn.py OUT.onnx
"""
import sys

import torch
import torch.nn as nn


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def main():
    torch.manual_seed(0)
    model = nn.Sequential(
        *block(1, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    ).eval()
    torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), sys.argv[1], dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)


if __name__ == "__main__":
    main()
