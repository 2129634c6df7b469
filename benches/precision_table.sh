#!/usr/bin/env bash
# The training step in fp32 and in bf16 mixed precision, edgeprune against PyTorch (fp32 eager, and
# its own bf16 autocast), side by side on one machine: for each network, `rounds` rounds each running
# the four in turn (edgeprune fp32, edgeprune bf16, PyTorch fp32, PyTorch bf16), each in a process of
# its own (so its peak RSS is its own); the medians over rounds of each run's median step, and the
# ratios to PyTorch fp32. Writes OUT/train-step-precision.{csv,md}.
#   benches/precision_table.sh [out=results] [batch=128] [threads=2] [rounds=3] [networks...]
# Needs a Python with torch==2.13.0 and safetensors: PYTHON, or else the cached reference venv,
# which scripts/setup-pyref.sh makes if it is missing. Run it on a quiet machine.
set -euo pipefail
out=${1:-results}; batch=${2:-128}; threads=${3:-2}; rounds=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
nets=("$@"); [ ${#nets[@]} -gt 0 ] || nets=(resnet20 mobilenetv2 squeezenet alexnet)
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$("$repo/scripts/setup-pyref.sh")}
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
for m in "${nets[@]}"; do
    "$bin" init "$m" --num-classes 10 -o "$tmp/$m" >/dev/null
    for r in $(seq "$rounds"); do
        for p in fp32 bf16; do
            "$bin" bench train-step --model "$tmp/$m" --batch "$batch" --threads "$threads" --steps 10 --warmup 3 \
                --precision "$p" --json | sed "s/^{/{\"engine\":\"edgeprune\",/" >> "$tmp/rows.jsonl"
        done
        for p in fp32 bf16; do
            "$py" "$repo/benches/torch_bench.py" train-step "$tmp/$m" --batch "$batch" --threads "$threads" --steps 10 \
                --warmup 3 --precision "$p" | sed "s/^{/{\"engine\":\"pytorch\",/" >> "$tmp/rows.jsonl"
        done
    done
done
"$py" - "$tmp/rows.jsonl" "$out" "$batch" "$threads" "$rounds" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out, batch, threads, rounds, cpu = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
by = collections.defaultdict(list)
for r in rows:
    by[(r["model"], r["engine"], r["precision"])].append(r)
cols = [("edgeprune", "fp32"), ("edgeprune", "bf16"), ("pytorch", "fp32"), ("pytorch", "bf16")]
csv = ["network,engine,precision,step_ms_median,step_ms_per_round,peak_rss_mib_median,time_vs_pytorch_fp32,rss_vs_pytorch_fp32"]
md = [f"# Training step: fp32 and bf16 mixed precision, edgeprune and PyTorch", "",
      f"One SGD step (forward, cross-entropy, backward, update; momentum 0.9, weight decay 1e-4) at batch {batch} on "
      f"random data, {threads} threads, {cpu}; PyTorch 2.13 eager in its default NCHW layout, its bf16 run under "
      f"`torch.autocast('cpu', torch.bfloat16)`; edgeprune in channels-last, its bf16 run with `--precision bf16` "
      f"(the same casts as autocast: tests/engine_parity.rs checks the gradients against autocast's). Each figure is "
      f"the median over {rounds} rounds of one process's median of 10 steps (after 3 warm-up steps); peak RSS is that "
      f"process's (PyTorch's includes the Python interpreter). Ratios are to PyTorch fp32 in the same round set.", "",
      "Command: `benches/precision_table.sh results " + f"{batch} {threads} {rounds}`", "",
      "| network | edgeprune fp32 | edgeprune bf16 | PyTorch fp32 | PyTorch bf16 | edgeprune bf16 / PyTorch fp32 (time, RSS) | edgeprune bf16 / PyTorch bf16 (time, RSS) | edgeprune bf16 / fp32 (time) |",
      "|---|---|---|---|---|---|---|---|"]
for net in dict.fromkeys(r["model"] for r in rows):
    med = {}
    for c in cols:
        rs = by[(net, *c)]
        med[c] = (1e3 * statistics.median(r["step_seconds"]["median"] for r in rs),
                  statistics.median(r["peak_rss_bytes"] for r in rs) / 2**20,
                  [round(1e3 * r["step_seconds"]["median"], 1) for r in rs])
    base = med[("pytorch", "fp32")]
    for c in cols:
        t, m, per = med[c]
        csv.append(f"{net},{c[0]},{c[1]},{t:.2f},{' '.join(map(str, per))},{m:.1f},{t / base[0]:.3f},{m / base[1]:.3f}")
    cell = lambda c: f"{med[c][0]:.1f} ms, {med[c][1]:.0f} MiB"
    eb, pf, pb, ef = med[("edgeprune", "bf16")], base, med[("pytorch", "bf16")], med[("edgeprune", "fp32")]
    md.append(f"| {net} | {cell(cols[0])} | {cell(cols[1])} | {cell(cols[2])} | {cell(cols[3])} | "
              f"{eb[0]/pf[0]:.2f}x, {eb[1]/pf[1]:.2f}x | {eb[0]/pb[0]:.2f}x, {eb[1]/pb[1]:.2f}x | {eb[0]/ef[0]:.2f}x |")
open(f"{out}/train-step-precision.csv", "w").write("\n".join(csv) + "\n")
open(f"{out}/train-step-precision.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
