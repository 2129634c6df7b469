#!/usr/bin/env bash
# Runs `edgeprune bench` and the identical PyTorch step (benches/torch_bench.py) side by side, in
# one go on one machine, alternating the two several times, and prints both medians and the ratios.
#   benches/compare.sh [train-step|infer] [model] [batch] [threads] [rounds]
# Needs a Python with torch==2.13.0 and safetensors: PYTHON, or else the cached reference venv,
# which scripts/setup-pyref.sh makes if it is missing.
set -euo pipefail
what=${1:-train-step}; model=${2:-resnet20}; batch=${3:-64}; threads=${4:-2}; rounds=${5:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$("$repo/scripts/setup-pyref.sh")}
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$bin" init "$model" --num-classes 10 -o "$tmp/model" >/dev/null
for r in $(seq "$rounds"); do
    "$bin" bench "$what" --model "$tmp/model" --batch "$batch" --threads "$threads" --steps 30 --warmup 5 --json >> "$tmp/ep.jsonl"
    "$py" "$repo/benches/torch_bench.py" "$what" "$tmp/model" --batch "$batch" --threads "$threads" --steps 30 --warmup 5 >> "$tmp/pt.jsonl"
done
"$py" - "$tmp/ep.jsonl" "$tmp/pt.jsonl" <<'PY'
import json, statistics, sys
ep = [json.loads(l) for l in open(sys.argv[1])]
pt = [json.loads(l) for l in open(sys.argv[2])]
for name, rows in (("edgeprune", ep), ("pytorch", pt)):
    print(f"{name:10s} median step {[round(1e3*r['step_seconds']['median'],2) for r in rows]} ms, "
          f"peak RSS {[round(r['peak_rss_bytes']/2**20,1) for r in rows]} MiB")
t = statistics.median(r["step_seconds"]["median"] for r in ep) / statistics.median(r["step_seconds"]["median"] for r in pt)
m = statistics.median(r["peak_rss_bytes"] for r in ep) / statistics.median(r["peak_rss_bytes"] for r in pt)
print(json.dumps({"what": ep[0]["what"], "model": ep[0]["model"], "batch": ep[0]["batch"], "threads": ep[0]["threads"],
                  "time_ratio_edgeprune_over_pytorch": round(t, 3), "peak_rss_ratio_edgeprune_over_pytorch": round(m, 3)}))
PY
