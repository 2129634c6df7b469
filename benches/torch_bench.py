"""The PyTorch side of `edgeprune bench`: the identical training step (or inference) on the same
graph, batch, threads and synthetic data, reported in the same JSON shape.

    python3 benches/torch_bench.py train-step MODEL_DIR --batch 64 --threads 2 --steps 20 --warmup 5 [--precision bf16]
MODEL_DIR is a model folder (graph.json + weights.safetensors), e.g. from `edgeprune init resnet20 -o DIR`.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from torch_graph import GraphModule  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train-step", "infer"])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="bf16: the forward pass and the loss under torch.autocast('cpu', torch.bfloat16)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = GraphModule(os.path.join(a.model, "graph.json"))
    model.load_state_dict(load_file(os.path.join(a.model, "weights.safetensors")))
    shape = model.graph["nodes"][0]["op"]["shape"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch, *shape, generator=g) * 4 - 2
    with torch.no_grad():
        classes = model.eval()(x[:1]).shape[1]
    y = torch.randint(0, classes, (a.batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    times = []
    for i in range(a.warmup + a.steps):
        t = time.perf_counter()
        if a.what == "train-step":
            model.train()
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        else:
            model.eval()
            with torch.no_grad():
                model(x)
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({
        "what": a.what, "model": model.graph["name"], "batch": a.batch, "threads": torch.get_num_threads(),
        "device": "cpu", "precision": a.precision if a.what == "train-step" else "fp32", "warmup": a.warmup,
        "step_seconds": {"count": len(times), "median": med, "min": min(times), "mean": statistics.mean(times)},
        "images_per_second": a.batch / med,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
