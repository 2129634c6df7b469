"""Reference numbers for tests/engine_parity.rs's bf16 test: one SGD step of ResNet-20 under
PyTorch's bf16 autocast on CPU, from the same weights and batch as make_train_step.py.

Run from the repository root, after make_train_step.py (the committed outputs are what this printed):
    python3 tests/reference/make_train_step_bf16.py
It reads tests/reference/resnet20_c10/{graph.json,weights.safetensors} and the batch (x, y) of
step.safetensors, runs the forward pass and the loss under torch.autocast("cpu", torch.bfloat16)
in PyTorch's NCHW layout and in channels_last, and writes the losses and the gradients of both to
tests/reference/resnet20_c10/step_bf16.safetensors (with torch==2.13.0 on CPU), with the processor's
model name in its metadata. The fp32 gradient
is printed next to them: how far bf16 is from fp32, against how far two bf16 runs are apart.
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from torch_graph import GraphModule  # noqa: E402

torch.set_num_threads(2)
here = os.path.join(os.path.dirname(__file__), "resnet20_c10")
ref = load_file(os.path.join(here, "step.safetensors"))
x, y = ref["x"], ref["y"]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


out = {}
for tag, fmt in (("nchw", torch.contiguous_format), ("cl", torch.channels_last)):
    model = GraphModule(os.path.join(here, "graph.json"))
    model.load_state_dict(load_file(os.path.join(here, "weights.safetensors")))
    model = model.to(memory_format=fmt)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x.contiguous(memory_format=fmt))
        loss = F.cross_entropy(logits, y)
    assert loss.dtype == torch.float32
    loss.backward()
    out[f"{tag}.loss1"] = loss.detach().reshape(1)
    worst = 0.0
    for k, p in model.named_parameters():
        out[f"{tag}.grad.{k}"] = p.grad.detach().contiguous().clone()
        worst = max(worst, rel(p.grad, ref[f"grad.{k}"]))
    print(tag, "loss", loss.item(), "fp32 loss", ref["loss1"].item(), "worst gradient error against fp32", worst)
worst = max(rel(out[k], out["cl" + k[4:]]) for k in out if k.startswith("nchw.grad."))
print("worst gradient difference between the two bf16 layouts", worst)
# Which processor made them: bf16 kernels differ by instruction set (AVX512-BF16, AMX, emulation),
# so the engine is held to these numbers exactly only on the same processor.
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(here, "step_bf16.safetensors"),
          metadata={"cpu": cpu, "torch": torch.__version__})
