#!/usr/bin/env bash
# Realised speed-up against GOps reduction: ResNet-20 (models/resnet20-cifar10) and MobileNetV2
# (fresh weights) pruned by GOps at levels 10..90 (the paper criterion, global ranking, the CLI's
# default limits), each level's batch-1 and batch-64 latency in edgeprune's engine and in ONNX
# Runtime against the unpruned model's, all in one run, alternated round by round. Writes OUT_CSV
# and a Markdown table beside it.
#
#   benches/speedup_table.sh [OUT_CSV] [ROUNDS] [THREADS]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
csv=${1:-$repo/results/realised_speedup.csv}
rounds=${2:-2}; threads=${3:-2}
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
levels="10 30 50 70 90"
"$bin" init mobilenetv2 --num-classes 10 -o "$tmp/mobilenetv2-l0" > /dev/null
ln -s "$repo/models/resnet20-cifar10" "$tmp/resnet20-l0"
echo "network,level,gops" > "$tmp/gops.csv"
for net in resnet20 mobilenetv2; do
    for l in $levels; do
        "$bin" prune "$tmp/$net-l0" --gops-level "$l" -o "$tmp/$net-l$l" > /dev/null 2>&1
    done
    for l in 0 $levels; do
        g=$("$bin" inspect "$tmp/$net-l$l" | tail -1 | sed -E 's/.*= ([0-9.]+) GOps.*/\1/')
        echo "$net,$l,$g" >> "$tmp/gops.csv"
    done
done
echo "network,level,batch,runtime,round,ms" > "$tmp/raw.csv"
for r in $(seq "$rounds"); do
    for net in resnet20 mobilenetv2; do
        for l in 0 $levels; do
            for b in 1 64; do
                steps=$([ "$b" = 1 ] && echo 100 || echo 10)
                for rt in libtorch ort; do
                    ms=$("$bin" bench infer --model "$tmp/$net-l$l" --batch "$b" --steps "$steps" --warmup 5 \
                        --threads "$threads" --runtime "$rt" --json \
                        | python3 -c "import json,sys; print(1e3*json.load(sys.stdin)['step_seconds']['median'])")
                    echo "$net,$l,$b,$rt,$r,$ms" >> "$tmp/raw.csv"
                done
            done
        done
    done
done
python3 - "$tmp/raw.csv" "$tmp/gops.csv" "$csv" "$rounds" "$threads" <<'PY'
import csv, statistics, sys
raw, gops_csv, out, rounds, threads = sys.argv[1:]
gops = {(r["network"], int(r["level"])): float(r["gops"]) for r in csv.DictReader(open(gops_csv))}
t = {}
for r in csv.DictReader(open(raw)):
    t.setdefault((r["network"], int(r["level"]), int(r["batch"]), r["runtime"]), []).append(float(r["ms"]))
t = {k: statistics.median(v) for k, v in t.items()}
lines = ["| network | GOps level (%) | GOps reduction | batch | runtime | ms | speed-up | speed-up / GOps reduction |",
         "|---|---|---|---|---|---|---|---|"]
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["network", "level", "gops", "gops_reduction", "batch", "runtime", "ms", "speedup", "speedup_over_gops_reduction"])
    for (net, level, b, rt), ms in sorted(t.items(), key=lambda kv: (kv[0][0] != "resnet20", kv[0][2], kv[0][3], kv[0][1])):
        red = gops[(net, 0)] / gops[(net, level)]
        sp = t[(net, 0, b, rt)] / ms
        w.writerow([net, level, gops[(net, level)], f"{red:.3f}", b, rt, f"{ms:.3f}", f"{sp:.3f}", f"{sp / red:.3f}"])
        if level:
            lines.append(f"| {net} | {level} | {red:.2f}x | {b} | {rt} | {ms:.3f} | {sp:.2f}x | {sp / red:.2f} |")
md = out.rsplit(".", 1)[0] + ".md"
open(md, "w").write(f"Median per batch over {rounds} alternated rounds, {threads} threads.\n\n" + "\n".join(lines) + "\n")
print(open(md).read())
PY
