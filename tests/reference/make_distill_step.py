"""Reference numbers for tests/engine_parity.rs: one SGD step of ResNet-20 towards a teacher's
outputs (knowledge distillation restricted to a class subset, mixed with pseudo-label
cross-entropy), in PyTorch; and the same step with the unconfident pseudo-labels ignored.

Run from the repository root (the committed output is what this printed):
    python3 tests/reference/make_distill_step.py
It reads tests/reference/resnet20_c10/{graph.json,weights.safetensors} (see make_train_step.py),
takes the batch `x` of step.safetensors, draws teacher logits with torch seed 1, and writes
tests/reference/resnet20_c10/distill_step.safetensors (with torch==2.13.0 on CPU).
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
model = GraphModule(os.path.join(here, "graph.json"))
model.load_state_dict(load_file(os.path.join(here, "weights.safetensors")))
x = load_file(os.path.join(here, "step.safetensors"))["x"]
torch.manual_seed(1)
teacher = 3.0 * torch.randn(x.shape[0], 10)
classes = torch.tensor([3, 5, 7])   # cat, dog, horse
T, alpha = 4.0, 0.7
# Pseudo-labels: the teacher's top class among the subset, as a class index of the full head.
labels = classes[teacher[:, classes].argmax(1)]

opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
model.train()
opt.zero_grad()
logits = model(x)
kd = F.kl_div(F.log_softmax(logits[:, classes] / T, 1), F.softmax(teacher[:, classes] / T, 1),
              reduction="batchmean") * T * T
loss = alpha * kd + (1 - alpha) * F.cross_entropy(logits, labels)
loss.backward()
grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}

# The same step from the same weights with the unconfident pseudo-labels ignored (ignore_index
# -100: the teacher's probability among the subset under 0.6), as the label-free training does.
fresh = GraphModule(os.path.join(here, "graph.json"))
fresh.load_state_dict(load_file(os.path.join(here, "weights.safetensors")))
fresh.train()
p_top = F.softmax(teacher[:, classes], 1).max(1).values
ignored = torch.where(p_top >= 0.6, labels, torch.full_like(labels, -100))
s = fresh(x)
kd2 = F.kl_div(F.log_softmax(s[:, classes] / T, 1), F.softmax(teacher[:, classes] / T, 1),
               reduction="batchmean") * T * T
loss2 = alpha * kd2 + (1 - alpha) * F.cross_entropy(s, ignored, ignore_index=-100)
loss2.backward()

out = {"teacher": teacher, "classes": classes, "labels": labels, "loss": loss.detach().reshape(1),
       "temperature": torch.tensor([T]), "alpha": torch.tensor([alpha])}
for k, g in grads.items():
    out[f"grad.{k}"] = g
out["ignored.labels"] = ignored
out["ignored.loss"] = loss2.detach().reshape(1)
for k, p in fresh.named_parameters():
    out[f"ignored.grad.{k}"] = p.grad.detach().clone()
opt.step()
for k, v in model.state_dict().items():
    out[f"step1.{k}"] = v.detach().clone()
save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(here, "distill_step.safetensors"))
print("loss", loss.item(), "kd", kd.item(), "ignored", int((ignored == -100).sum()), "loss with them ignored", loss2.item())
