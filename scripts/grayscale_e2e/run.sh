#!/usr/bin/env bash
# A grayscale network end to end on real grayscale data (Fashion-MNIST, Debian's
# dataset-fashion-mnist): a 1-channel CNN made in PyTorch and exported to ONNX, imported,
# trained on all ten classes, pruned data-aware (taylor on the footwear classes, 50% of the
# parameters), fine-tuned on them, exported, and evaluated in onnxruntime.
#
#   scripts/grayscale_e2e/run.sh PYTHON FASHION_MNIST_DIR OUT_DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$1 data=$2 out=$3
bin=$repo/target/release/edgeprune
mkdir -p "$out"
shoes="Sandal,Sneaker,Ankle boot"
# Fashion-MNIST's training-set statistics.
mean=0.2860 std=0.3530
"$py" "$repo/scripts/grayscale_e2e/make_cnn.py" "$out/cnn.onnx"
"$bin" import "$out/cnn.onnx" -o "$out/imported" --mean $mean --std $std --overwrite
"$bin" train --model "$out/imported" --data "$data" --epochs 3 --lr-schedule "0 0.05 2 0.005" --batch-size 128 \
    --threads 2 -o "$out/trained" --overwrite 2>&1 | grep -v "batches," | tee "$out/trained.log"
"$bin" eval "$out/trained" --data "$data" --subset "$shoes" | tee "$out/eval-trained-shoes.txt"
"$bin" prune "$out/trained" --level 50 --criterion taylor --data "$data" --subset "$shoes" -o "$out/pruned" \
    --overwrite | tee "$out/prune.log"
"$bin" eval "$out/pruned" --data "$data" --subset "$shoes" | tee "$out/eval-pruned-shoes.txt"
"$bin" train --model "$out/pruned" --data "$data" --subset "$shoes" --epochs 2 --lr-schedule "0 0.01 1 0.001" \
    --batch-size 128 --threads 2 -o "$out/retrained" --overwrite 2>&1 | grep -v "batches," | tee "$out/retrained.log"
"$bin" eval "$out/retrained" --data "$data" --subset "$shoes" | tee "$out/eval-retrained-shoes.txt"
"$bin" export "$out/retrained" -o "$out/retrained.onnx" --overwrite
"$py" "$repo/scripts/grayscale_e2e/ort_eval.py" "$out/retrained.onnx" "$data" $mean $std 5,7,9 | tee "$out/ort-retrained-shoes.json"
"$bin" inspect "$out/retrained" --against "$out/trained" | tail -2 | tee "$out/sizes.txt"
