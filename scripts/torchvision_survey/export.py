"""Exports one network of every torchvision classification family to ONNX, as a user would:
random weights, eval mode, `torch.onnx.export(..., opset_version=17, dynamo=False)` with
BatchNorm kept (no constant folding). The survey (`run.sh`) then imports, analyses, prunes and
exports each with edgeprune and runs the result in onnxruntime.

    python scripts/torchvision_survey/export.py OUT_DIR [--size 96] [--only name,name]

Writes OUT_DIR/<name>.onnx and OUT_DIR/<name>.json (input shape, torch output on a fixed input,
the torch and torchvision versions).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torchvision

# One network per family (torchvision 0.28), with the input size it needs at the least.
FAMILIES = [
    ("alexnet", {}, 224),
    ("vgg11", {}, 224),
    ("vgg11_bn", {}, 224),
    ("resnet18", {}, 64),
    ("resnext50_32x4d", {}, 64),
    ("wide_resnet50_2", {}, 64),
    ("densenet121", {}, 64),
    ("googlenet", {"aux_logits": False, "init_weights": True}, 64),
    ("inception_v3", {"aux_logits": False, "init_weights": True}, 96),
    ("squeezenet1_0", {}, 64),
    ("squeezenet1_1", {}, 64),
    ("mobilenet_v2", {}, 64),
    ("mobilenet_v3_small", {}, 64),
    ("mobilenet_v3_large", {}, 64),
    ("mnasnet0_5", {}, 64),
    ("shufflenet_v2_x0_5", {}, 64),
    ("efficientnet_b0", {}, 64),
    ("efficientnet_v2_s", {}, 64),
    ("regnet_x_400mf", {}, 64),
    ("regnet_y_400mf", {}, 64),
    ("convnext_tiny", {}, 64),
    ("vit_b_16", {"image_size": 224}, 224),
    ("swin_t", {}, 224),
    ("swin_v2_t", {}, 256),
    ("maxvit_t", {}, 224),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    torch.manual_seed(0)
    for name, kw, size in FAMILIES:
        if only and name not in only:
            continue
        path = os.path.join(args.out, f"{name}.onnx")
        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=10, **kw).eval()
            x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32))
            with torch.no_grad():
                y = model(x).numpy()
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=False)
            meta = {"name": name, "input": [3, size, size], "torch": torch.__version__,
                    "torchvision": torchvision.__version__, "logits_sum": float(y.sum())}
            with open(os.path.join(args.out, f"{name}.json"), "w") as f:
                json.dump(meta, f)
            np.save(os.path.join(args.out, f"{name}.x.npy"), x.numpy())
            np.save(os.path.join(args.out, f"{name}.y.npy"), y)
            print(f"{name}: exported ({os.path.getsize(path) / 1e6:.1f} MB, input {size})", flush=True)
        except Exception as e:  # a family torch cannot export is part of the survey's answer
            print(f"{name}: export failed: {type(e).__name__}: {e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
