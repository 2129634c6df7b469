"""Reads the CIFAR-10 binary format (as `edgeprune convert-data` writes it) into NumPy arrays."""
import os

import numpy as np

RECORD = 1 + 3 * 32 * 32


def load(folder, split):
    """Images (N x 3 x 32 x 32, uint8) and labels (N, int64) of 'train' or 'test'."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    raw = np.concatenate([np.fromfile(os.path.join(folder, n), dtype=np.uint8) for n in names])
    raw = raw.reshape(-1, RECORD)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def normalise(images, mean, std):
    x = images.astype(np.float32) / 255.0
    return (x - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
