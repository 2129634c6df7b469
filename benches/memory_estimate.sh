#!/usr/bin/env bash
# Compares edgeprune's memory estimate (used by --max-memory) with the peak resident memory that
# `edgeprune bench` measures, for training steps and inference on the zoo networks.
#   benches/memory_estimate.sh > results/memory_estimate.md
set -euo pipefail
cd "$(dirname "$0")/.."
B=./target/release/edgeprune
[ -x "$B" ] || cargo build --release >&2
echo "| run | network | batch | measured peak RSS (MiB) | estimate (MiB) | estimate / measured |"
echo "|---|---|---|---|---|---|"
for what in train-step infer; do
  for spec in "resnet20 32" "resnet20 256" "resnet56 64" "mobilenetv2 32" "mobilenetv2 128" "squeezenet 64" "alexnet 128"; do
    set -- $spec
    OMP_WAIT_POLICY=PASSIVE "$B" bench "$what" --model "$1" --batch "$2" --steps 3 --warmup 1 --threads 2 --json |
      python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
m, e = r['peak_rss_bytes'] / 2**20, r['estimated_peak_bytes'] / 2**20
print(f'| $what | $1 | $2 | {m:.0f} | {e:.0f} | {e / m:.2f} |')"
  done
done
