#!/usr/bin/env bash
# The torchvision survey: every family exported by export.py, then through edgeprune as a user
# would take it: import, analyze (groups prunable of all), prune 30% of the parameters, export,
# and the export run in onnxruntime (its logits compared with torch's on the same input).
#
#   scripts/torchvision_survey/run.sh PYTHON WORK_DIR [OUT_CSV]
#
# PYTHON has torch, torchvision, onnx and onnxruntime; WORK_DIR receives the ONNX files (large:
# full-width networks) and each step's log. Writes OUT_CSV (default results/torchvision/survey.csv)
# and a Markdown table beside it.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=$1
work=$2
csv=${3:-$repo/results/torchvision/survey.csv}
bin=$repo/target/release/edgeprune
mkdir -p "$work" "$(dirname "$csv")"
"$py" "$repo/scripts/torchvision_survey/export.py" "$work" > "$work/export.log" 2>&1
echo "network,export,import,groups_prunable,groups,prune30,onnxruntime,max_diff_vs_torch,note" > "$csv"
for meta in "$work"/*.json; do
    name=$(basename "$meta" .json)
    onnx=$work/$name.onnx
    row="$name,ok"
    note=""
    if ! "$bin" import "$onnx" -o "$work/$name.model" --overwrite > "$work/$name.import.log" 2>&1; then
        note=$(grep -m1 -o 'In all, the model uses [0-9]* unsupported op type(s): .*' "$work/$name.import.log" | tr ',' ';' | cut -c1-260)
        [ -n "$note" ] || note=$(grep -m1 "error" "$work/$name.import.log" | tr ',' ';' | cut -c1-200)
        echo "$row,fail,,,,,,$note" >> "$csv"
        continue
    fi
    "$bin" analyze "$work/$name.model" > "$work/$name.analyze.log" 2>&1
    summary=$(grep "^prunability:" "$work/$name.analyze.log")
    prunable=$(echo "$summary" | sed -E 's/^prunability: ([0-9]+) of ([0-9]+) groups.*/\1/')
    groups=$(echo "$summary" | sed -E 's/^prunability: ([0-9]+) of ([0-9]+) groups.*/\2/')
    if ! "$bin" prune "$work/$name.model" --level 30 -o "$work/$name.p30" --overwrite > "$work/$name.prune.log" 2>&1; then
        note=$(grep -m1 "error" "$work/$name.prune.log" | tr ',' ';' | cut -c1-300)
        echo "$row,ok,$prunable,$groups,fail,,,$note" >> "$csv"
        continue
    fi
    if ! "$bin" export "$work/$name.p30" -o "$work/$name.p30.onnx" --overwrite > "$work/$name.export.log" 2>&1; then
        note=$(grep -m1 "error" "$work/$name.export.log" | tr ',' ';' | cut -c1-300)
        echo "$row,ok,$prunable,$groups,ok,fail,,$note" >> "$csv"
        continue
    fi
    # The unpruned import exported again must give torch's logits; the pruned export must run.
    "$bin" export "$work/$name.model" -o "$work/$name.rt.onnx" --overwrite > /dev/null 2>&1
    diff=$("$py" - "$work" "$name" <<'PY' 2>&1 | tail -1
import sys, numpy as np, onnxruntime as ort
work, name = sys.argv[1:]
x, y = np.load(f"{work}/{name}.x.npy"), np.load(f"{work}/{name}.y.npy")
rt = ort.InferenceSession(f"{work}/{name}.rt.onnx", providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
p30 = ort.InferenceSession(f"{work}/{name}.p30.onnx", providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
assert p30.shape == y.shape and np.isfinite(p30).all()
print(f"{np.abs(rt - y).max() / max(np.abs(y).max(), 1e-30):.1e} relative")
PY
)
    echo "$row,ok,$prunable,$groups,ok,ok,$diff,$note" >> "$csv"
done
grep -E "^[a-z0-9_]+: export failed" "$work/export.log" | while IFS= read -r line; do
    echo "${line%%:*},fail,,,,,,,$(echo "${line#*export failed: }" | tr ',' ';' | cut -c1-200)" >> "$csv"
done
md=${csv%.csv}.md
{
    echo "| network | export | import | groups prunable / all | prune 30% | onnxruntime | max abs diff vs torch / max abs logit | note |"
    echo "|---|---|---|---|---|---|---|---|"
    tail -n +2 "$csv" | while IFS=, read -r n e i p g pr o d note; do
        echo "| $n | $e | $i | ${p:+$p / $g} | $pr | $o | $d | $note |"
    done
} > "$md"
cat "$md"
