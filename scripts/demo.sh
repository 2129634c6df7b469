#!/usr/bin/env bash
# The README's demo: the pretrained ResNet-20 (models/resnet20-cifar10) sees only cats and dogs on
# its device; evaluate it on them, fine-tune it briefly on their training images, evaluate again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bin=target/release/edgeprune
model=models/resnet20-cifar10
subset=${SUBSET:-cat,dog}
epochs=${EPOCHS:-3}
out=runs/demo
[ -f "$model/graph.json" ] || { echo "demo: $model is missing (see models/README.md for how it was trained)" >&2; exit 1; }

echo "== the pretrained model on all of CIFAR-10 and on the subset {$subset}"
$bin inspect "$model" | tail -n 1
$bin eval "$model"
before=$($bin eval "$model" --subset "$subset" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["top1"])')
echo "== fine-tuning on {$subset} for $epochs epochs (80% of their training images; 20% validate)"
rm -rf "$out"
$bin train --model "$model" --subset "$subset" --epochs "$epochs" --lr-schedule "0 0.01" --weight-decay 5e-4 -o "$out"
after=$($bin eval "$out/best" --subset "$subset" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["top1"])')
python3 - "$before" "$after" "$subset" <<'PY'
import sys
b, a, s = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
print(f"\n  top-1 on the test images of {{{s}}}")
print(f"  {'pretrained ResNet-20':28s} {100*b:6.2f}%")
print(f"  {'fine-tuned on the device':28s} {100*a:6.2f}%   ({100*(a-b):+.2f} points)")
PY
echo "run folder: $out (log.csv, best/, summary.json)"
