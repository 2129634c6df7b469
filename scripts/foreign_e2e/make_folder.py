"""A folder of camera-like JPEGs of mixed sizes from the CIFAR-10 archive: the first PER_CLASS
images of each class (train and test pooled, in archive order), each upscaled (bicubic) to a
random size, shorter side 96 to 192 pixels and aspect ratio 3:4 to 4:3, and saved as a JPEG of
quality 90, in flat class folders `OUT/<class>/NNNN.jpg` (no train/ or test/: edgeprune splits
each class by a seeded fraction). Seeded, so the folder is the same on every machine.

    python scripts/foreign_e2e/make_folder.py CIFAR10_TAR_GZ OUT_DIR [PER_CLASS]
"""
import io
import os
import random
import sys
import tarfile

from PIL import Image


def main():
    tar_path, out = sys.argv[1], sys.argv[2]
    per_class = int(sys.argv[3]) if len(sys.argv) > 3 else 600
    rng = random.Random(0)
    counts = {}
    sizes = []
    with tarfile.open(tar_path) as tar:
        for m in tar:
            if not (m.isfile() and m.name.endswith(".jpg")):
                continue
            cls = m.name.split("/")[-2]
            k = counts.get(cls, 0)
            if k >= per_class:
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            short = rng.randint(96, 192)
            aspect = rng.uniform(0.75, 4 / 3)
            w, h = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
            os.makedirs(os.path.join(out, cls), exist_ok=True)
            img.resize((w, h), Image.BICUBIC).save(os.path.join(out, cls, f"{k:04d}.jpg"), quality=90)
            counts[cls] = k + 1
            sizes.append((w, h))
    ws, hs = [s[0] for s in sizes], [s[1] for s in sizes]
    print(f"wrote {len(sizes)} JPEGs in {len(counts)} class folders to {out}: widths {min(ws)}..{max(ws)}, "
          f"heights {min(hs)}..{max(hs)}")


if __name__ == "__main__":
    main()
