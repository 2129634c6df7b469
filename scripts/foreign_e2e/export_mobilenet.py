"""torchvision's MobileNetV2 (10 classes, random weights: no pretrained weights can be fetched
here), exported at 3 x 96 x 96 as a user would: eval mode, `torch.onnx.export(...,
opset_version=17, dynamo=False)`, BatchNorm kept (no constant folding), dynamic batch.

    python scripts/foreign_e2e/export_mobilenet.py OUT.onnx
"""
import sys

import torch
import torchvision


def main():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96)
    torch.onnx.export(model, (x,), sys.argv[1], dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=False)
    print(f"exported torchvision {torchvision.__version__} mobilenet_v2 at 96x96 to {sys.argv[1]}")


if __name__ == "__main__":
    main()
