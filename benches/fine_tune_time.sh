#!/usr/bin/env bash
# A whole fine-tune's predicted time against the measured one (issue "Know the cost before you pay
# it"): `train` prices its run at the start on the device's training-cost table (printed, and kept
# in summary.json as predicted_seconds) and measures it (summary.json: seconds). This prunes each
# network a few ways, trains each for a few epochs on a CIFAR-10 subset, and tabulates both.
#   benches/fine_tune_time.sh [OUT_DIR] [EPOCHS=3] [SUBSET=cat,dog] [THREADS=2]
# Needs each network's training-cost table at its batch in the cache (benches/train_cost_model.sh
# measures them). Run it on a quiet machine. Writes OUT_DIR/fine-tune-time.{csv,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/train-cost-model/fine-tune-time}
epochs=${2:-3}
subset=${3:-cat,dog}
threads=${4:-2}
BIN=${BIN:-target/release/edgeprune}
data=${EDGEPRUNE_DATA:-../shared/data}
[ -x "$BIN" ] || cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# network, model, batch, then the ways it is pruned ("-" for none; else prune's flags)
runs=(
    "resnet20|models/resnet20-cifar10|128|-;--criterion l1 --level 50;--criterion random --scope layer --gops-level 50;--criterion paper --level 80"
    "squeezenet|models/squeezenet-cifar10|64|-;--criterion l1 --level 50;--criterion random --scope layer --gops-level 70"
)
mkdir -p "$out"
csv="$out/fine-tune-time.csv"
echo "network,pruned,batch,epochs,train_images,predicted_seconds,measured_seconds,error_percent" > "$csv"
for r in "${runs[@]}"; do
    IFS='|' read -r name model batch ways <<<"$r"
    IFS=';' read -ra ways <<<"$ways"
    for i in "${!ways[@]}"; do
        w=${ways[$i]}
        label=$w
        [ "$w" != "-" ] || label=unpruned
        m=$model
        if [ "$w" != "-" ]; then
            m="$work/$name-$i"
            # shellcheck disable=SC2086
            "$BIN" prune "$model" $w --out "$m" >/dev/null 2>"$work/prune-$name-$i.log" || { cat "$work/prune-$name-$i.log"; exit 1; }
        fi
        run="$work/run-$name-$i"
        "$BIN" train --model "$m" --data "$data" --subset "$subset" --epochs "$epochs" --batch-size "$batch" \
            --threads "$threads" --checkpoint-epochs 100 --out "$run" 2>"$run.log" >/dev/null || { cat "$run.log"; exit 1; }
        python3 - "$run/summary.json" "$run.log" "$name" "$label" "$batch" "$epochs" >>"$csv" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
log = open(sys.argv[2]).read()
m = re.search(r"\((\d+) train /", log)
p = s.get("predicted_seconds")
if p is None:
    sys.exit(f"{sys.argv[1]}: no prediction (no training-cost table in the cache for this network and batch)")
print(f"{sys.argv[3]},{sys.argv[4]},{sys.argv[5]},{sys.argv[6]},{m.group(1) if m else ''},{p:.2f},{s['seconds']:.2f},{100 * (p - s['seconds']) / s['seconds']:.2f}")
PY
        tail -n 1 "$csv"
    done
done
python3 - "$csv" "$out/fine-tune-time.md" "$epochs" "$subset" "$*" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
e = [abs(float(r["error_percent"])) for r in rows]
lines = ["# A whole fine-tune: predicted against measured time", "",
         f"`benches/fine_tune_time.sh {sys.argv[5]}`".replace(" `", "`"), "",
         f"Each network trained for {sys.argv[3]} epochs on the CIFAR-10 subset {sys.argv[4]} by `edgeprune train` "
         "(augmentation on, evaluation of the validation and test splits after each epoch, checkpoints), "
         "predicted at the start on the device's training-cost table.", "",
         f"Mean absolute error {sum(e) / len(e):.1f}%, max {max(e):.1f}%, {sum(v <= 10 for v in e)} of {len(e)} within 10%.", "",
         "| network | pruned | batch | train images | predicted s | measured s | error |", "|---|---|---:|---:|---:|---:|---:|"]
for r in rows:
    lines.append(f"| {r['network']} | {r['pruned']} | {r['batch']} | {r['train_images']} | {float(r['predicted_seconds']):.1f} | "
                 f"{float(r['measured_seconds']):.1f} | {float(r['error_percent']):+.1f}% |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
