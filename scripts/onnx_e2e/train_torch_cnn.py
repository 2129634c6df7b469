"""Trains a small CNN on CIFAR-10 in PyTorch and exports it to ONNX: the "network trained
elsewhere" of edgeprune's ONNX end-to-end check (scripts/onnx_e2e/run.sh).

    python train_torch_cnn.py CIFAR10_BIN_DIR OUT_DIR [EPOCHS]

Reads the CIFAR-10 binary format (made by `edgeprune convert-data`, so that PyTorch, edgeprune
and onnxruntime see the same pixels), trains with SGD (momentum 0.9, weight decay 5e-4, lr 0.05
then 0.005 in the last epoch), random crop 32 pad 4 and horizontal flip, on 2 CPU threads, seed 0.
Writes OUT_DIR/cnn.onnx (opset 17, BatchNormalization kept, dynamic batch) and
OUT_DIR/torch_eval.json: the normalisation, the test top-1 and every test prediction.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from cifar_bin import load, normalise

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def network():
    return nn.Sequential(
        *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        *block(64, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.2), nn.Linear(128 * 4 * 4, 10),
    )


def augment(x, rng):
    n = x.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    out = np.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, :, ::-1]
    return out


def main(data, out, epochs):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    xtr, ytr = load(data, "train")
    xte, yte = load(data, "test")
    model = network()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    t0 = time.time()
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = 0.05 if epoch < epochs - 1 else 0.005
        model.train()
        order = rng.permutation(len(ytr))
        seen, correct = 0, 0
        for b in range(0, len(order), 128):
            idx = order[b:b + 128]
            x = torch.from_numpy(normalise(augment(xtr[idx], rng), MEAN, STD))
            y = torch.from_numpy(ytr[idx])
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        print(f"epoch {epoch + 1}: train top-1 {correct / seen:.4f}, {time.time() - t0:.0f}s", flush=True)
    model.eval()
    preds = []
    with torch.no_grad():
        for b in range(0, len(yte), 500):
            preds.append(model(torch.from_numpy(normalise(xte[b:b + 500], MEAN, STD))).argmax(1).numpy())
    preds = np.concatenate(preds)
    top1 = float((preds == yte).mean())
    print(f"PyTorch test top-1 {top1:.4f} on {len(yte)} images")
    os.makedirs(out, exist_ok=True)
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), os.path.join(out, "cnn.onnx"), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with open(os.path.join(out, "torch_eval.json"), "w") as f:
        json.dump({"torch": torch.__version__, "epochs": epochs, "seconds": round(time.time() - t0, 1),
                   "mean": MEAN, "std": STD, "test_top1": top1, "count": int(len(yte)),
                   "predictions": "".join(str(int(p)) for p in preds)}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 4)
