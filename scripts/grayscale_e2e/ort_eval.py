"""Top-1 of an exported edgeprune model in onnxruntime on the test split of IDX files
(Fashion-MNIST), normalised as the model records, on the given classes (indices).

    python scripts/grayscale_e2e/ort_eval.py MODEL.onnx IDX_DIR MEAN STD [CLASS,CLASS,...]
"""
import gzip
import json
import sys

import numpy as np
import onnxruntime as ort


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    model, d, mean, std = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    classes = [int(c) for c in sys.argv[5].split(",")] if len(sys.argv) > 5 else list(range(10))
    x = idx(f"{d}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64)
    keep = np.isin(y, classes)
    x, y = ((x[keep] - mean) / std)[:, None], y[keep]
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(None, {"input": x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    print(json.dumps({"images": int(len(y)), "top1": float((pred == y).mean())}))


if __name__ == "__main__":
    main()
