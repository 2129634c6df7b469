"""Reference numbers for tests/engine_parity.rs: one and two SGD steps of ResNet-20 in PyTorch.

Run from the repository root (the committed outputs are what this printed):
    python3 tests/reference/make_train_step.py
It reads tests/reference/resnet20_c10/graph.json (the zoo's ResNet-20, written by
`edgeprune init resnet20 --num-classes 10 -o tests/reference/resnet20_c10`), initialises it with
torch seed 0, draws a fixed batch, and writes tests/reference/resnet20_c10/{weights,step}.safetensors
(with torch==2.13.0 on CPU).
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from torch_graph import GraphModule  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)
here = os.path.join(os.path.dirname(__file__), "resnet20_c10")
model = GraphModule(os.path.join(here, "graph.json"))
# Non-trivial BN parameters and statistics, so that their gradients and updates are tested too.
with torch.no_grad():
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(here, "weights.safetensors"))

x = torch.randn(16, 3, 32, 32)
y = torch.randint(0, 10, (16,))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
out = {"x": x, "y": y}
model.train()
for step in (1, 2):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    out[f"loss{step}"] = loss.detach().reshape(1)
    if step == 1:
        for k, p in model.named_parameters():
            out[f"grad.{k}"] = p.grad.detach().clone()
    opt.step()
    for k, v in model.state_dict().items():
        out[f"step{step}.{k}"] = v.detach().clone()
model.eval()
with torch.no_grad():
    out["eval_logits"] = model(x)
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(here, "step.safetensors"))
print("loss1", out["loss1"].item(), "loss2", out["loss2"].item())
