#!/usr/bin/env bash
# The README's demo: the ADaPT experiment in small (recipes/demo.toml). The pretrained ResNet-20
# (models/resnet20-cifar10) is deployed where it only sees cats and dogs. Compare, on their test
# images: the unpruned model; data-aware pruning (fine-tune on the pets, prune 50% of the
# parameters, retrain on the pets); data-agnostic pruning (prune first, retrain on all classes).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bin=target/release/edgeprune
model=models/resnet20-cifar10
out=${DEMO_OUT:-runs/demo}
[ -f "$model/graph.json" ] || { echo "demo: $model is missing (see models/README.md)" >&2; exit 1; }

echo "== the pretrained model on all of CIFAR-10"
$bin inspect "$model" | tail -n 1
$bin eval "$model"
echo "== the ADaPT experiment in small: $out (a rerun reuses finished cells; remove $out to start afresh)"
$bin experiment recipes/demo.toml -o "$out" > /dev/null
python3 - "$out/cells.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("\n  subset {cat, dog}, ResNet-20, pruning level 50% (4 epochs, n_f = 1)")
print(f"  {'pipeline':10s} {'test top-1':>10s} {'params':>9s} {'GOps':>7s}")
for r in sorted(rows, key=lambda r: ["unpruned", "agnostic", "aware"].index(r["pipeline"])):
    print(f"  {r['pipeline']:10s} {100*float(r['test_top1']):9.2f}% {int(float(r['params_after'])):>9,d} {float(r['gops_after']):7.4f}")
PY
echo
echo "report: $out/report/report.md, plots: $out/report/*.svg and *.png, every cell's log and model under $out/resnet20/"
