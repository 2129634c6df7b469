#!/usr/bin/env bash
# Realised speed-up of latency-aware plans (issue "Pruned models that are really faster where they
# run", item 5): ResNet-20 (models/resnet20-cifar10) and MobileNetV2 (fresh weights; latency does
# not depend on them) pruned with `prune --latency R` at R = 0.9x .. 0.1x of the unpruned latency,
# for each runtime (ONNX Runtime, edgeprune's engine) and batch size (1, 64) on that runtime's
# and batch's own latency table (measured once per machine, kept in the cache). Each row is what
# `prune` measured after surgery (the pruned and unpruned model alternately, medians of 5 rounds),
# against the GOps the plan removed; a plan that is not faster is refused by `prune` and listed
# as refused, a budget below the floor as unreachable (with the floor). Writes OUT_CSV and a
# Markdown table beside it.
#
#   benches/latency_speedup.sh [OUT_CSV] [THREADS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
csv=${1:-$repo/results/latency_speedup.csv}
threads=${2:-2}
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export EDGEPRUNE_ONNXRUNTIME=${EDGEPRUNE_ONNXRUNTIME:-${EDGEPRUNE_CACHE:-$HOME/.cache/edgeprune}/onnxruntime-1.32.0/libonnxruntime.so}
"$bin" init mobilenetv2 --num-classes 10 -o "$tmp/mobilenetv2" > /dev/null
ln -s "$repo/models/resnet20-cifar10" "$tmp/resnet20"
levels="10 30 50 70 90"
: > "$tmp/log.txt"
for net in resnet20 mobilenetv2; do
    for rt in ort libtorch; do
        for b in 1 64; do
            for l in $levels; do
                ratio=$(python3 -c "print(f'{1 - $l / 100:.2f}x')")
                out=$tmp/$net-$rt-b$b-l$l
                echo "=== $net $rt $b $l" >> "$tmp/log.txt"
                "$bin" prune "$tmp/$net" --latency "$ratio" --runtime "$rt" --batch "$b" --threads "$threads" \
                    -o "$out" >> "$tmp/log.txt" 2>&1 || true
                echo "--- end" >> "$tmp/log.txt"
            done
        done
    done
done
cp "$tmp/log.txt" "${csv%.*}.log"
python3 - "$tmp/log.txt" "$csv" "$threads" <<'PY'
import csv, re, sys
log, out, threads = sys.argv[1:]
rows, cur = [], None
for line in open(log):
    if line.startswith("=== "):
        net, rt, b, l = line.split()[1:]
        cur = dict(network=net, runtime=rt, batch=int(b), level=int(l), status="", gops_reduction="",
                   ms_before="", ms_after="", predicted_ms="", speedup="", speedup_over_gops_reduction="", note="")
        continue
    if cur is None:
        continue
    if line.startswith("--- end"):
        rows.append(cur); cur = None; continue
    m = re.search(r"GOps ([0-9.]+) -> ([0-9.]+)", line)
    if m:
        cur["gops_reduction"] = float(m[1]) / float(m[2])
    m = re.search(r"latency at batch \d+ in \w+: ([0-9.]+) ms -> ([0-9.]+) ms measured.*predicted ([0-9.]+) ms", line)
    if m:
        cur.update(status="ok", ms_before=float(m[1]), ms_after=float(m[2]), predicted_ms=float(m[3]))
        cur["speedup"] = cur["ms_before"] / cur["ms_after"]
    m = re.search(r"not faster where it runs: measured ([0-9.]+) ms against the unpruned model's ([0-9.]+) ms.*predicted ([0-9.]+) ms", line)
    if m:
        cur.update(status="refused: not faster", ms_after=float(m[1]), ms_before=float(m[2]), predicted_ms=float(m[3]))
        cur["speedup"] = cur["ms_before"] / cur["ms_after"]
    m = re.search(r"cannot be reached: .* predicted at ([0-9.]+) ms \(unpruned ([0-9.]+) ms\)", line)
    if m:
        cur.update(status="unreachable", note=f"floor {float(m[1]):.4g} ms = {float(m[1]) / float(m[2]):.2f}x of unpruned (predicted)")
    if line.startswith("error:") and not cur["status"]:
        cur.update(status="error", note=line.strip()[:120])
for r in rows:
    if r["speedup"] != "" and r["gops_reduction"] != "":
        r["speedup_over_gops_reduction"] = r["speedup"] / r["gops_reduction"]
fields = list(rows[0].keys())
with open(out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
def fmt(v, d=2, suffix=""):
    return "-" if v == "" else f"{v:.{d}f}{suffix}"
lines = ["| network | runtime | batch | budget | status | GOps reduction | ms before | ms after (predicted) | speed-up | speed-up / GOps reduction | note |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['network']} | {r['runtime']} | {r['batch']} | {1 - r['level'] / 100:.1f}x | {r['status']} | "
                 f"{fmt(r['gops_reduction'], 2, 'x')} | {fmt(r['ms_before'], 3)} | {fmt(r['ms_after'], 3)} ({fmt(r['predicted_ms'], 3)}) | "
                 f"{fmt(r['speedup'], 2, 'x')} | {fmt(r['speedup_over_gops_reduction'])} | {r['note']} |")
md = out.rsplit(".", 1)[0] + ".md"
open(md, "w").write(f"{threads} threads; each row as `prune --latency` measured it after surgery.\n\n" + "\n".join(lines) + "\n")
print(open(md).read())
PY
