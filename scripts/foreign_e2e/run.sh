#!/usr/bin/env bash
# A foreign network end to end: torchvision's MobileNetV2 exported at 96x96 by PyTorch, imported,
# trained on a folder of mixed-size JPEGs (made from the CIFAR-10 archive by upscaling to random
# sizes; flat class folders that edgeprune splits itself), then on the device's classes (the
# vehicles): fine-tuned, pruned data-aware (taylor, 50% of the parameters), retrained, exported,
# and scored in onnxruntime on exactly the pixels edgeprune's eval reads.
#
#   scripts/foreign_e2e/run.sh PYTHON OUT_DIR
# PYTHON has torch, torchvision, Pillow and onnxruntime. No pretrained weights can be fetched
# here, so the "vendor's" 10-class training from random weights stands in for them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$1 out=$2
bin=$repo/target/release/edgeprune
mkdir -p "$out"
data=$out/mixed-jpegs
subset="airplane,automobile,ship,truck"
run() { echo "+ $*" | sed "s#$out#OUT#g; s#$repo/##g" >&2; "$@"; }
quiet() { grep -v "batches," | sed "s#$out#OUT#g"; }
[ -d "$data" ] || run "$py" "$repo/scripts/foreign_e2e/make_folder.py" "$repo/../shared/data/cifar10-images.tar.gz" "$data" 600
run "$py" "$repo/scripts/foreign_e2e/export_mobilenet.py" "$out/mobilenet_v2-96.onnx"
# ImageNet's statistics, as torchvision's models are normalised.
run "$bin" import "$out/mobilenet_v2-96.onnx" -o "$out/imported" --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
    --overwrite
# The vendor's training is the long step (about 20 minutes on 2 cores): a finished one is reused.
if [ ! -f "$out/vendor/summary.json" ]; then
    run "$bin" train --model "$out/imported" --data "$data" --epochs 15 --lr-schedule "0 0.05 8 0.01 12 0.002" \
        --batch-size 64 --threads 2 -o "$out/vendor" --overwrite 2>&1 | quiet | tee "$out/vendor.log"
fi
run "$bin" eval "$out/vendor" --data "$data" --subset "$subset" | quiet | tee "$out/eval-vendor.txt"
run "$bin" train --model "$out/vendor" --data "$data" --subset "$subset" --epochs 4 --lr-schedule "0 0.01 3 0.002" \
    --batch-size 64 --threads 2 -o "$out/finetuned" --overwrite 2>&1 | quiet | tee "$out/finetuned.log"
run "$bin" eval "$out/finetuned" --data "$data" --subset "$subset" | quiet | tee "$out/eval-finetuned.txt"
run "$bin" prune "$out/finetuned" --level 50 --criterion taylor --data "$data" --subset "$subset" -o "$out/pruned" \
    --overwrite 2>&1 | quiet | tee "$out/prune.log"
run "$bin" eval "$out/pruned" --data "$data" --subset "$subset" | quiet | tee "$out/eval-pruned.txt"
run "$bin" train --model "$out/pruned" --data "$data" --subset "$subset" --epochs 12 \
    --lr-schedule "0 0.02 6 0.004 10 0.001" \
    --batch-size 64 --threads 2 -o "$out/retrained" --overwrite 2>&1 | quiet | tee "$out/retrained.log"
run "$bin" eval "$out/retrained" --data "$data" --subset "$subset" | quiet | tee "$out/eval-retrained.txt"
run "$bin" eval "$out/retrained" --data "$data" --subset "$subset" --runtime ort | quiet | tee "$out/eval-retrained-ort.txt"
run "$bin" eval "$out/retrained" --data "$data" --subset "$subset" --json 2>/dev/null > "$out/eval-retrained.json"
run "$bin" export "$out/retrained" -o "$out/retrained.onnx" --overwrite
run "$bin" convert-data --data "$data" --like "$out/retrained" --subset "$subset" -o "$out/test-npy" --overwrite \
    | quiet
run "$py" "$repo/scripts/foreign_e2e/ort_eval.py" "$out/retrained.onnx" "$out/test-npy" > "$out/ort-retrained.json"
run "$bin" inspect "$out/retrained" --against "$out/finetuned" | tail -2 | tee "$out/sizes.txt"
"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
ours, theirs = json.load(open(f"{out}/eval-retrained.json")), json.load(open(f"{out}/ort-retrained.json"))
print(f"edgeprune top-1 {ours['top1']:.4f} on {ours['count']} images; onnxruntime top-1 {theirs['top1']:.4f} on "
      f"{theirs['images']}")
assert ours["count"] == theirs["images"] and abs(ours["top1"] - theirs["top1"]) < 1e-9, "accuracies differ"
PY
