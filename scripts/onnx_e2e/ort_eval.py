"""Test accuracy of an ONNX classifier in onnxruntime on a CIFAR-10 binary folder.

    python ort_eval.py MODEL.onnx CIFAR10_BIN_DIR MEAN STD [CLASSES]

MEAN and STD are comma-separated per-channel values (pixels scaled to [0, 1]); CLASSES, if given,
is a comma-separated list of label indices: only test images of those classes are scored (the
prediction is still the argmax over all outputs, as edgeprune scores it). Prints one JSON object:
{"top1", "count", "predictions"}. onnxruntime's CPU provider, default optimisations, 2 threads.
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_bin import load, normalise  # noqa: E402


def main(model, data, mean, std, classes=None):
    x, y = load(data, "test")
    if classes is not None:
        keep = np.isin(y, classes)
        x, y = x[keep], y[keep]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = np.concatenate([sess.run(None, {name: normalise(x[b:b + 500], mean, std)})[0].argmax(1)
                            for b in range(0, len(y), 500)])
    print(json.dumps({"top1": float((preds == y).mean()), "count": int(len(y)),
                      "predictions": "".join(str(int(p)) for p in preds)}))


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    floats = lambda s: [float(v) for v in s.split(",")]  # noqa: E731
    main(sys.argv[1], sys.argv[2], floats(sys.argv[3]), floats(sys.argv[4]),
         [int(v) for v in sys.argv[5].split(",")] if len(sys.argv) == 6 else None)
