#!/usr/bin/env bash
# For each zoo network and pruning level (paper criterion, global ranking, on freshly initialised
# 100-class weights: speed and size do not depend on the weights' values), prune, then measure
# inference of the unpruned and pruned model alternately in one run, and print a markdown table:
# parameters and GOps before/after, and the measured speed-up next to the GOps reduction.
#   benches/prune_speedup.sh [networks] [levels] [batch] [threads] > results/prune_speedup.md
set -euo pipefail
nets=${1:-"alexnet resnet20 mobilenetv2 squeezenet"}
levels=${2:-"30 50 70"}
batch=${3:-128}
threads=${4:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release/edgeprune
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
median_ms() { "$bin" bench infer --model "$1" --batch "$batch" --steps 10 --warmup 2 --threads "$threads" --json \
    | python3 -c 'import json,sys; print(1e3*json.load(sys.stdin)["step_seconds"]["median"])'; }
echo "Inference, batch $batch, $threads threads, $(uname -m), $(date -u +%Y-%m-%d). Command: benches/prune_speedup.sh \"$nets\" \"$levels\" $batch $threads"
echo
echo "| network | level | params before | params after | GOps before | GOps after | GOps ratio | ms before | ms after | speed-up |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for net in $nets; do
    "$bin" init "$net" --num-classes 100 -o "$tmp/$net" >/dev/null
    for level in $levels; do
        "$bin" prune "$tmp/$net" --level "$level" --criterion paper -o "$tmp/$net-$level" >/dev/null
        read -r pb gb < <("$bin" inspect "$tmp/$net" --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["model"]; print(c["params"], c["gops"])')
        read -r pa ga < <("$bin" inspect "$tmp/$net-$level" --json | python3 -c 'import json,sys; c=json.load(sys.stdin)["model"]; print(c["params"], c["gops"])')
        # Alternate the two models three times; keep the median of each.
        b=(); a=()
        for _ in 1 2 3; do b+=("$(median_ms "$tmp/$net")"); a+=("$(median_ms "$tmp/$net-$level")"); done
        python3 - "$net" "$level" "$pb" "$pa" "$gb" "$ga" "${b[@]}" "${a[@]}" <<'PY'
import statistics, sys
net, level, pb, pa, gb, ga = sys.argv[1:7]
t = [float(x) for x in sys.argv[7:]]
b, a = statistics.median(t[:3]), statistics.median(t[3:])
print(f"| {net} | {level}% | {int(pb):,} | {int(pa):,} | {float(gb):.4f} | {float(ga):.4f} | {float(gb)/float(ga):.2f}x | {b:.1f} | {a:.1f} | {b/a:.2f}x |")
PY
    done
done
