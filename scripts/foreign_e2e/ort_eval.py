"""Top-1 of an exported model in onnxruntime on the images `edgeprune convert-data --like MODEL`
wrote (images.npy, labels.npy, normalize.json): pixel / 255, normalised per channel, argmax over
the model's outputs against the labels; also the predictions, to compare image by image.

    python scripts/foreign_e2e/ort_eval.py MODEL.onnx NPY_DIR
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, d = sys.argv[1], sys.argv[2]
    x = np.load(os.path.join(d, "images.npy")).astype(np.float32) / 255.0
    y = np.load(os.path.join(d, "labels.npy"))
    norm = json.load(open(os.path.join(d, "normalize.json")))
    mean = np.array(norm["mean"], np.float32)[None, :, None, None]
    std = np.array(norm["std"], np.float32)[None, :, None, None]
    x = (x - mean) / std
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])
    print(json.dumps({"images": int(len(y)), "top1": float((pred == y).mean()),
                      "predictions": "".join(str(int(p)) for p in pred)}))


if __name__ == "__main__":
    main()
