#!/usr/bin/env bash
# bf16 against fp32 on real fine-tunes: runs recipes/precision-parity-{fp32,bf16}.toml (resuming
# either if interrupted) and writes results/precision-parity/{parity.csv,README.md}: per seed, the
# test accuracy of the pets fine-tune and of the 50% data-aware prune + retrain in each precision,
# and the differences.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edgeprune}
out=results/precision-parity
# A session may stop mid-run: the state is carried by `scripts/sweeps.sh save` and restored here.
scripts/sweeps.sh restore precision-parity-fp32 precision-parity-bf16
seeds=$(python3 -c "import sys, tomllib; print(' '.join(map(str, tomllib.load(open(sys.argv[1], 'rb'))['seeds'])))" \
    recipes/precision-parity-fp32.toml)
# Seed by seed, fp32 then bf16, so that every finished seed is a pair.
for s in $seeds; do
    for p in fp32 bf16; do
        # No OMP_WAIT_POLICY=PASSIVE here: on shared cores it makes bf16 steps ~11x slower (fp32: 1x).
        nice -n 10 "$BIN" experiment "recipes/precision-parity-$p.toml" -o "runs/precision-parity-$p" \
            --only "resnet20/pets/unpruned,resnet20/pets/finetune-s$s,resnet20/pets/aware-p50-s$s" \
            >>"runs/precision-parity-$p.console.log" 2>&1
    done
done
for p in fp32 bf16; do date -u +%FT%TZ >"runs/precision-parity-$p/done"; done
mkdir -p "$out"
python3 - "$out" <<'PY'
import csv, json, os, statistics, sys
out = sys.argv[1]
rows = []
for p in ("fp32", "bf16"):
    root = f"runs/precision-parity-{p}"
    for r in csv.DictReader(open(f"{root}/cells.csv")):
        if r["pipeline"] != "aware":
            continue
        seed = r["seed"]
        ft = json.load(open(f"{root}/resnet20/pets/finetune-s{seed}/run/summary.json"))
        rows.append({"precision": p, "seed": int(seed), "finetune_test_top1": ft["test_top1_at_best_val"],
                     "finetune_seconds": ft["seconds"], "aware50_test_top1": float(r["test_top1"]),
                     "aware50_seconds": float(r["seconds"])})
rows.sort(key=lambda r: (r["seed"], r["precision"]))
with open(f"{out}/parity.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
by = {(r["precision"], r["seed"]): r for r in rows}
# Seeds finished in both precisions.
seeds = sorted({r["seed"] for r in rows if ("fp32", r["seed"]) in by and ("bf16", r["seed"]) in by})
lines = ["# bf16 mixed precision against fp32: accuracy parity on real fine-tunes", "",
         "The shipped ResNet-20 (models/resnet20-cifar10) on the CIFAR-10 pets subset (cat, dog; 2000 test images): "
         "the data-aware fine-tune (n_f = 5 epochs) and the 50% data-aware prune + retrain (25 more epochs), under the "
         f"protocol's full 30-epoch budget, seeds {', '.join(map(str, seeds))}, once in fp32 and once in bf16 "
         "(recipes/precision-parity-{fp32,bf16}.toml differ in `precision` alone).", "",
         "Command: `scripts/precision_parity.sh` (2 threads, beside other training: the seconds are not the device's; "
         "benches/precision_table.sh times the step on a quiet machine).", "",
         "| seed | fine-tune fp32 | fine-tune bf16 | diff (pp) | aware 50% fp32 | aware 50% bf16 | diff (pp) | cell s fp32 | cell s bf16 |",
         "|---|---|---|---|---|---|---|---|---|"]
d_ft, d_aw = [], []
for s in seeds:
    a, b = by[("fp32", s)], by[("bf16", s)]
    d1 = 100 * (b["finetune_test_top1"] - a["finetune_test_top1"])
    d2 = 100 * (b["aware50_test_top1"] - a["aware50_test_top1"])
    d_ft.append(d1); d_aw.append(d2)
    lines.append(f"| {s} | {100*a['finetune_test_top1']:.2f}% | {100*b['finetune_test_top1']:.2f}% | {d1:+.2f} | "
                 f"{100*a['aware50_test_top1']:.2f}% | {100*b['aware50_test_top1']:.2f}% | {d2:+.2f} | "
                 f"{a['aware50_seconds']:.0f} | {b['aware50_seconds']:.0f} |")
def mean(p, k):
    return 100 * statistics.mean(by[(p, s)][k] for s in seeds)
def sd(p, k):
    return 100 * statistics.stdev(by[(p, s)][k] for s in seeds) if len(seeds) > 1 else 0.0
lines.append(f"| mean | {mean('fp32','finetune_test_top1'):.2f}% | {mean('bf16','finetune_test_top1'):.2f}% | "
             f"{statistics.mean(d_ft):+.2f} | {mean('fp32','aware50_test_top1'):.2f}% | {mean('bf16','aware50_test_top1'):.2f}% | "
             f"{statistics.mean(d_aw):+.2f} | | |")
lines += ["", f"Spread over seeds (std): fine-tune fp32 {sd('fp32','finetune_test_top1'):.2f} pp, bf16 "
          f"{sd('bf16','finetune_test_top1'):.2f} pp; aware 50% fp32 {sd('fp32','aware50_test_top1'):.2f} pp, bf16 "
          f"{sd('bf16','aware50_test_top1'):.2f} pp. One test image is 0.05 pp.",
          "", f"Within 0.3 pp of fp32: {sum(abs(d) <= 0.3 + 1e-9 for d in d_ft + d_aw)} of {len(d_ft + d_aw)} pairs; "
          f"largest difference {max(d_ft + d_aw, key=abs):+.2f} pp; mean difference fine-tune {statistics.mean(d_ft):+.2f} pp, "
          f"aware 50% {statistics.mean(d_aw):+.2f} pp. The cell seconds are whole cells (pruning, retraining, "
          "evaluation) timed beside other work and are not comparable."]
open(f"{out}/README.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
