"""Reduced-width networks of every torchvision CNN family, exported to ONNX as a user would, for
tests/torchvision.rs (one integration test per family).

    python tests/reference/torchvision/make.py [OUT_DIR] [--only name,name]

Each family is torchvision's own model class (torchvision 0.28), built at a reduced width so the
committed files stay small: with the family's own width knobs where it has them (MobileNet width
multipliers, MNASNet alpha, EfficientNet width/depth, RegNet block parameters, ShuffleNetV2 and
ConvNeXt stage settings, DenseNet growth), and otherwise by dividing every channel count of its
layers by a factor while it is built (`narrow`, below: Conv2d, BatchNorm2d and Linear see the
channel counts divided; the 3 image channels, the 10 classes and group counts stay consistent).
Random weights (torch.manual_seed(0)); BatchNorm statistics calibrated on random images so the
logits are of order one (a random-weight network otherwise has logits from 1e-13 to 1e9, where an
absolute tolerance says nothing); eval mode; `torch.onnx.export(..., opset_version=17,
dynamo=False, do_constant_folding=False)`, BatchNorm kept, dynamic batch.

Writes OUT_DIR/<family>.onnx and OUT_DIR/<family>.safetensors holding `y`, onnxruntime's logits on
4 pseudo-random images (`images` below, which the test regenerates) (CPU provider, default optimisations), plus OUT_DIR/index.json
with each family's input size, parameter count and the torch-vs-onnxruntime difference.
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
from safetensors.numpy import save_file
from torchvision.models import convnext, densenet, efficientnet, mnasnet, mobilenetv2, mobilenetv3, regnet, resnet
from torchvision.models import shufflenetv2

CLASSES = 10
SEED = 7  # of the test images


@contextlib.contextmanager
def narrow(k):
    """While active, Conv2d, BatchNorm2d and Linear are built with every channel count divided by
    k (image channels 3 and the class count kept; a grouped conv's group count divided too, a
    depthwise conv stays depthwise). Consumers of one tensor see one original count, so they agree;
    concatenations of branches whose counts are all multiples of k agree too."""
    conv, bn, lin = nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__

    def f(c):
        return c if c in (3, CLASSES) else max(1, c // k)

    def conv_init(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                  *args, **kw):
        g = groups
        if groups > 1:
            g = f(in_channels) if groups == in_channels else max(1, groups // k)
        conv(self, f(in_channels), f(out_channels), kernel_size, stride, padding, dilation, g, *args, **kw)

    def bn_init(self, num_features, *args, **kw):
        bn(self, f(num_features), *args, **kw)

    def lin_init(self, in_features, out_features, *args, **kw):
        lin(self, f(in_features), f(out_features), *args, **kw)

    nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__ = conv_init, bn_init, lin_init
    try:
        yield
    finally:
        nn.Conv2d.__init__, nn.BatchNorm2d.__init__, nn.Linear.__init__ = conv, bn, lin


def narrowed(k, build):
    with narrow(k):
        return build()


def mobilenet_v3(arch):
    setting, last = mobilenetv3._mobilenet_v3_conf(arch, width_mult=0.25)
    return mobilenetv3.MobileNetV3(setting, last // 4, num_classes=CLASSES)


def efficientnet_v2():
    setting, last = efficientnet._efficientnet_conf("efficientnet_v2_s")
    # Stage widths divided by 4 and one block per stage: the fused-MBConv and MBConv stages kept.
    for s in setting:
        s.input_channels, s.out_channels, s.num_layers = s.input_channels // 4, s.out_channels // 4, 1
    return efficientnet.EfficientNet(setting, 0.2, last_channel=last // 8, num_classes=CLASSES)


def regnet_net(se):
    params = regnet.BlockParams.from_init_params(depth=5, w_0=16, w_a=8.0, w_m=2.0, group_width=8,
                                                 se_ratio=0.25 if se else None)
    return regnet.RegNet(params, num_classes=CLASSES, stem_width=16)


def convnext_net():
    cfg = convnext.CNBlockConfig
    return convnext.ConvNeXt([cfg(8, 16, 1), cfg(16, 32, 1), cfg(32, 64, 2), cfg(64, None, 1)],
                             layer_scale=0.5, num_classes=CLASSES)


def vit():
    from torchvision.models import vision_transformer as v
    return v.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                               num_classes=CLASSES)


def swin():
    from torchvision.models import swin_transformer as s
    return s.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
                             num_classes=CLASSES)


def maxvit():
    from torchvision.models import maxvit as m
    return m.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                    block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=CLASSES)


# (family, builder, input size)
FAMILIES = [
    ("alexnet", lambda: narrowed(32, lambda: torchvision.models.alexnet(num_classes=CLASSES)), 224),
    ("vgg", lambda: narrowed(32, lambda: torchvision.models.vgg11_bn(num_classes=CLASSES)), 224),
    ("resnet", lambda: narrowed(16, lambda: torchvision.models.resnet18(num_classes=CLASSES)), 32),
    ("resnext", lambda: narrowed(16, lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=32,
                                                          width_per_group=4, num_classes=CLASSES)), 32),
    ("wide_resnet", lambda: narrowed(16, lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128,
                                                               num_classes=CLASSES)), 32),
    ("densenet", lambda: densenet.DenseNet(growth_rate=8, block_config=(2, 3, 4, 3), num_init_features=16,
                                           bn_size=2, num_classes=CLASSES), 32),
    ("googlenet", lambda: narrowed(8, lambda: torchvision.models.googlenet(num_classes=CLASSES, aux_logits=False,
                                                                           init_weights=True)), 32),
    ("inception_v3", lambda: narrowed(16, lambda: torchvision.models.inception_v3(
        num_classes=CLASSES, aux_logits=False, init_weights=True)), 80),
    ("squeezenet", lambda: narrowed(4, lambda: torchvision.models.squeezenet1_1(num_classes=CLASSES)), 32),
    ("mobilenet_v2", lambda: narrowed(8, lambda: torchvision.models.mobilenet_v2(num_classes=CLASSES)), 32),
    ("mobilenet_v3_small", lambda: mobilenet_v3("mobilenet_v3_small"), 32),
    ("mobilenet_v3_large", lambda: narrowed(8, lambda: torchvision.models.mobilenet_v3_large(num_classes=CLASSES)), 32),
    ("mnasnet", lambda: narrowed(8, lambda: mnasnet.MNASNet(1.0, num_classes=CLASSES)), 32),
    ("shufflenet_v2", lambda: shufflenetv2.ShuffleNetV2([2, 2, 1], [8, 16, 32, 64, 128], num_classes=CLASSES), 32),
    ("efficientnet", lambda: narrowed(8, lambda: torchvision.models.efficientnet_b0(num_classes=CLASSES)), 32),
    ("efficientnet_v2", efficientnet_v2, 32),
    ("regnet_x", lambda: regnet_net(False), 32),
    ("regnet_y", lambda: regnet_net(True), 32),
    ("convnext", convnext_net, 32),
    # Transformers: edgeprune refuses them, naming every op it does not support.
    ("vit", vit, 32),
    ("swin", swin, 32),
    ("maxvit", maxvit, 32),
]


def images(n, size, seed):
    """n images of 3 x size x size, uniform in [-2, 2), from the linear congruential generator
    tests/common/mod.rs has (`images`), so the inputs need not be committed."""
    k = seed
    out = np.empty(n * 3 * size * size, dtype=np.float32)
    for i in range(out.size):
        k = (k * 1664525 + 1013904223) & 0xFFFFFFFF
        out[i] = (k >> 8) / float(1 << 24) * 4.0 - 2.0
    return out.reshape(n, 3, size, size)


def scale_logits(model, x, target=2.0):
    """The classifier (the last Linear, or SqueezeNet's last Conv2d) shifted so that its logits
    average zero over x (a Linear) and scaled so that the largest logit on x is `target`: random-weight logits range from 1e-2 to 1e2, and a tolerance of 1e-4
    means little at either end."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    with torch.no_grad():
        if last.weight.abs().max() == 0:  # ViT starts its head at zero
            nn.init.normal_(last.weight, std=0.02)
        if isinstance(last, nn.Linear) and last.bias is not None:
            # Centred over the images first: without BatchNorm (AlexNet) the biases dominate and
            # the logits would hardly depend on the image.
            last.bias.sub_(model(torch.from_numpy(x)).mean(0))
        k = target / model(torch.from_numpy(x)).abs().max().item()
        last.weight.mul_(k)
        if last.bias is not None:
            last.bias.mul_(k)


def calibrate(model, size):
    """BatchNorm statistics from random images (cumulative averages over 8 batches of 16)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    g = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(16, 3, size, size, generator=g))
    model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    index_path = os.path.join(args.out, "index.json")
    index = json.load(open(index_path)) if os.path.exists(index_path) else {}
    for name, build, size in FAMILIES:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = build()
        calibrate(model, size)
        x = images(4, size, SEED)
        scale_logits(model, x)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        path = os.path.join(args.out, f"{name}.onnx")
        torch.onnx.export(model, (torch.from_numpy(x),), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, do_constant_folding=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        y = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        save_file({"y": np.ascontiguousarray(y, dtype=np.float32)}, os.path.join(args.out, f"{name}.safetensors"))
        params = sum(p.numel() for p in model.parameters())
        diff = float(np.abs(y - ref).max())
        index[name] = {"class": type(model).__name__, "input": [3, size, size], "params": params,
                       "torch_vs_onnxruntime": diff, "max_abs_logit": float(np.abs(y).max()),
                       "torch": torch.__version__, "torchvision": torchvision.__version__,
                       "onnxruntime": ort.__version__}
        print(f"{name:<20} {type(model).__name__:<13} {params:>8} params  input {size:>3}  "
              f"{os.path.getsize(path) / 1e3:>7.0f} kB  max|y| {np.abs(y).max():.2f}  torch vs ort {diff:.1e}",
              flush=True)
    with open(index_path, "w") as f:
        json.dump(dict(sorted(index.items())), f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
