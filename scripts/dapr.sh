#!/usr/bin/env bash
# DaPR for every subset of a sweep recipe, in both of the reference code's modes (issue "The
# science, complete and fair"): `search --mode memory_opt`, then `--mode cost_opt` on the same
# cached probes, into OUT; then the found networks timed at batch 1 (`bench sweep-latency`), and a
# table of the levels found, the probes, the search's cost in epochs and seconds, and how many
# images the found network must infer to repay the search.
#   scripts/dapr.sh RECIPE NETWORK [OUT=runs/dapr-<recipe name>] [RESULTS=results/dapr-<recipe name>]
# OUT may be the recipe's sweep folder: probes at the grid's levels are then the sweep's own cells
# (and the fine-tunes its own), run once. PIPELINE=aware-unlabeled searches the label-free cells.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edgeprune}
recipe=$1; net=$2
name=$(basename "$recipe" .toml)
out=${3:-runs/dapr-$name}; results=${4:-results/dapr-$name}
pipeline=${PIPELINE:-aware}
suffix=""; [ "$pipeline" = aware ] || suffix="-unlabeled"
subsets=$(python3 -c "import sys, tomllib; print(' '.join(s['name'] for s in tomllib.load(open(sys.argv[1], 'rb'))['subsets']))" "$recipe")
mkdir -p "$results" "$out"
for s in $subsets; do
    for mode in memory_opt cost_opt; do
        nice -n 10 "$BIN" search "$recipe" --network "$net" --subset "$s" --mode "$mode" --pipeline "$pipeline" \
            -o "$out" >>"$out.console.log" 2>&1
        # One file per mode in OUT too: `bench sweep-latency` times the probes of every search
        # there (cost_opt's are the first of memory_opt's).
        mv "$out/search-$net-$s$suffix.json" "$out/search-$net-$s$suffix-$mode.json"
        cp "$out/search-$net-$s$suffix-$mode.json" "$results/"
    done
done
# The found networks' inference latency at batch 1 in the deployed runtime, for the searches'
# payback (`report --search RESULTS` reads RESULTS/latency.csv). Timed with the other work paused
# where there is any (SWEEP_PAUSE=1 stops the sweeps' processes meanwhile); latency is not
# timed when SKIP_LATENCY=1.
if [ "${SKIP_LATENCY:-0}" != 1 ]; then
    pids=()
    if [ "${SWEEP_PAUSE:-0}" = 1 ]; then
        mapfile -t pids < <(pgrep -f 'edgeprune(-new)? [c]ell --recipe|edgeprune(-new)? [e]xperiment' || true)
        for p in "${pids[@]}"; do kill -STOP "$p" 2>/dev/null || true; done
    fi
    "$BIN" bench sweep-latency --sweep "$out" --runtime onnxruntime --steps 50 || status=$?
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
    [ "${status:-0}" = 0 ] || exit "$status"
    cp "$out/latency.csv" "$results/latency.csv"
fi
python3 - "$results" "$recipe" <<'PY'
import csv, glob, json, os, sys
results, recipe = sys.argv[1], sys.argv[2]
rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(results, "search-*.json")))]
lat = {}
if os.path.exists(os.path.join(results, "latency.csv")):
    for r in csv.DictReader(open(os.path.join(results, "latency.csv"))):
        lat.setdefault((r["network"], r["subset"], r["pipeline"], float(r["level"]), int(r["seed"])), r)
lines = [f"# DaPR on `{recipe}`", "",
         f"Command: `scripts/dapr.sh {recipe} {rows[0]['network'] if rows else ''}`. Each probe is an ordinary "
         "data-aware cell of the recipe (fine-tune, prune, retrain under its budget); `cost_opt` reuses the "
         "probes `memory_opt` ran (the same cells), and its seconds are those probes' own. Seconds are measured "
         "beside other work on 2 cores.", "",
         "| network | subset | mode | reference (unpruned) | level found | probes | probe levels | search epochs | search seconds | mean seconds per probe | search retraining TOps | mean TOps per probe | ms/image unpruned / found | break-even images |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    n = len(r["probes"])
    levels = ", ".join(f"{p['level']:.0f}{'+' if p['reaches_reference'] else '-'}" for p in r["probes"])
    lvl = "none" if r["level"] is None else f"{r['level']:.0f}%"
    per = r["total_seconds"] / n if n else 0
    g = r.get("total_retrain_gops")
    gops = "- | -" if g is None else (f"{g / 1e3:.1f} | {g / 1e3 / n:.1f}" if n else "0 | 0")
    t = None if r["level"] is None else lat.get((r["network"], r["subset"], r.get("pipeline", "aware"), float(r["level"]), r.get("seed", 0)))
    if t is None:
        ms = be = "-"
    else:
        b, a = float(t["ms_per_image_before"]), float(t["ms_per_image_after"])
        ms = f"{b:.3f} / {a:.3f}"
        be = f"{1e3 * r['total_seconds'] / (b - a):,.0f}" if b > a else "never (not faster)"
    lines.append(f"| {r['network']} | {r['subset']} | {r['mode']} | {100*r['reference_top1']:.2f}% | {lvl} | {n} | {levels} | "
                 f"{r['total_epochs']:.0f} | {r['total_seconds']:.0f} | {per:.0f} | {gops} | {ms} | {be} |")
lines += ["", "Probe levels: + reaches the unpruned accuracy, - falls short. Retraining compute: 3 x the pruned "
          "network's inference GOps per image (forward and backward) x the images its retraining epochs trained on, "
          "in TOps (10^12 operations); the fine-tune the probes share and the evaluations are left out.",
          "", "Latency: the unpruned and the found network at batch 1 in ONNX Runtime (`edgeprune bench sweep-latency`, "
          "latency.csv); break-even images: the search's seconds over the time the found network saves per image, "
          "how many images it must infer before the search has paid for itself (`edgeprune report --search` draws it)."]
open(os.path.join(results, "README.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
