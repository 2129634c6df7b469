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
print(f"  {'pipeline':10s} {'test top-1':>10s} {'params':>9s} {'GOps':>7s} {'latency b1 (ms, onnxruntime)':>29s}")
pruned = [r for r in rows if r["pipeline"] != "unpruned" and r.get("infer_ms_per_image_b1_before")]
for r in sorted(rows, key=lambda r: ["unpruned", "agnostic", "aware"].index(r["pipeline"])):
    # The unpruned model's latency is the pruned cells' "before".
    lat = r.get("infer_ms_per_image_b1_after") or (pruned[0]["infer_ms_per_image_b1_before"] if pruned else "")
    lat = f"{float(lat):.3f}" if lat else "-"
    print(f"  {r['pipeline']:10s} {100*float(r['test_top1']):9.2f}% {int(float(r['params_after'])):>9,d} "
          f"{float(r['gops_after']):7.4f} {lat:>29s}")
PY
echo
echo "report: $out/report/report.md, plots: $out/report/*.svg and *.png, every cell's log and model under $out/resnet20/"
