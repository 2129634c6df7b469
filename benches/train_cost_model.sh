#!/usr/bin/env bash
# The training-cost predictor's error (issue "Know the cost before you pay it"): for each network,
# its training-cost table is measured (or reused) on this machine, then pruned versions at levels
# 10..90 are measured, each in a process of its own, and set against the prediction.
#   benches/train_cost_model.sh [OUT_DIR] [THREADS] [NETWORKS_EACH] [PRECISION=fp32] [NETWORK...]
# (PRECISION bf16 measures bf16 tables and steps; NETWORK names a subset of the four below.)
# Writes OUT_DIR/<network>-b<batch>/train-cost-model.{csv,md} and OUT_DIR/summary.md.
# Run it on a quiet machine: other work on the cores moves step times by more than the error.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/train-cost-model}
threads=${2:-2}
each=${3:-18}
precision=${4:-fp32}
only=("${@:5}")
BIN=${BIN:-target/release/edgeprune}
[ -x "$BIN" ] || cargo build --release
# network, model, batch
runs=(
    "resnet20 models/resnet20-cifar10 128"
    "squeezenet models/squeezenet-cifar10 64"
    "alexnet models/alexnet-cifar10 128"
    "mobilenetv2 mobilenetv2 32"
)
mkdir -p "$out"
for r in "${runs[@]}"; do
    read -r name model batch <<<"$r"
    if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " == *" $name "* ]]; then continue; fi
    dir="$out/$name-b$batch"
    echo "== $name at batch $batch ($(date -u +%FT%TZ))"
    "$BIN" bench train-cost-model --model "$model" --batch "$batch" --threads "$threads" \
        --networks "$each" --precision "$precision" --out "$dir" 2>&1 | grep -v '^ *$' | tail -n "$((each + 2))"
done
python3 - "$out" <<'PY'
import csv, glob, os, sys
out = sys.argv[1]
rows = []
for f in sorted(glob.glob(os.path.join(out, "*", "train-cost-model.csv"))):
    rows += [dict(r, run=os.path.basename(os.path.dirname(f))) for r in csv.DictReader(open(f))]
def stats(rs, col):
    e = [abs(float(r[col])) for r in rs]
    return f"{sum(e)/len(e):.1f}% | {max(e):.1f}% | {sum(v <= 10 for v in e)}/{len(e)}"
lines = ["# Training-cost predictor: predicted against measured", "",
         "`benches/train_cost_model.sh` (each network's own `train-cost-model.md` has its command).", "",
         "| network, batch | networks | step: mean abs. error | max | within 10% | peak memory: mean abs. error | max | within 10% |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
for run in sorted({r["run"] for r in rows}):
    rs = [r for r in rows if r["run"] == run]
    lines.append(f"| {run} | {len(rs)} | {stats(rs, 'step_error_percent')} | {stats(rs, 'peak_error_percent')} |")
lines.append(f"| all | {len(rows)} | {stats(rows, 'step_error_percent')} | {stats(rows, 'peak_error_percent')} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
