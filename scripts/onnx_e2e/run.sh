#!/usr/bin/env bash
# ONNX end to end on a real network: a CNN trained in PyTorch on CIFAR-10, exported to ONNX,
# imported by edgeprune (accuracy checked against PyTorch's), pruned 50% and fine-tuned on the
# cats and dogs, exported again, and run in onnxruntime (accuracy checked against edgeprune's).
#   scripts/onnx_e2e/run.sh [WORK_DIR]      (default runs/onnx-e2e; needs a Python with torch,
#                                            onnx and onnxruntime in $EDGEPRUNE_PYTHON)
# The trained network and PyTorch's predictions are committed in tests/reference/onnx_e2e/, where
# tests/onnx.rs checks the same chain in CI without retraining.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${EDGEPRUNE_PYTHON:-$HOME/.cache/edgeprune/pyref/bin/python}
W=${1:-runs/onnx-e2e}
B=target/release/edgeprune
[ -x "$B" ] || cargo build --release
mkdir -p "$W"
export OMP_WAIT_POLICY=PASSIVE
json() { "$PY" -c "import json,sys; print(json.load(open('$1'))$2)"; }

$B convert-data --data ../shared/data -o "$W/cifar10-bin"
[ -f "$W/torch/torch_eval.json" ] || "$PY" scripts/onnx_e2e/train_torch_cnn.py "$W/cifar10-bin" "$W/torch" 4
MEAN=$(json "$W/torch/torch_eval.json" "['mean']" | tr -d '[] ')
STD=$(json "$W/torch/torch_eval.json" "['std']" | tr -d '[] ')
$B import "$W/torch/cnn.onnx" -o "$W/imported" --mean "$MEAN" --std "$STD"
$B eval "$W/imported" --data "$W/cifar10-bin" --json > "$W/imported-eval.json"
$B prune "$W/imported" --level 50 --criterion paper -o "$W/pruned"
$B train --model "$W/pruned" --data "$W/cifar10-bin" --subset cat,dog --epochs 4 --batch-size 64 \
    --lr-schedule "0 0.01 3 0.001" --threads 2 -o "$W/finetuned"
$B eval "$W/finetuned/best" --data "$W/cifar10-bin" --subset cat,dog --json > "$W/finetuned-eval.json"
$B export "$W/finetuned/best" -o "$W/finetuned.onnx"
"$PY" scripts/onnx_e2e/ort_eval.py "$W/finetuned.onnx" "$W/cifar10-bin" "$MEAN" "$STD" 3,5 > "$W/ort-eval.json"

echo "PyTorch, all 10 classes:         $(json "$W/torch/torch_eval.json" "['test_top1']")"
echo "edgeprune (imported), 10 classes: $(json "$W/imported-eval.json" "['top1']")"
echo "edgeprune pruned+fine-tuned, cat/dog: $(json "$W/finetuned-eval.json" "['top1']")"
echo "onnxruntime (exported), cat/dog:      $(json "$W/ort-eval.json" "['top1']")"
$B inspect "$W/pruned" --against "$W/imported" | tail -3
