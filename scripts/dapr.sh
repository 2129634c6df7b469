#!/usr/bin/env bash
# DaPR for every subset of a sweep recipe, in both of the reference code's modes (issue "The
# science, complete and fair"): `search --mode memory_opt`, then `--mode cost_opt` on the same
# cached probes, into a folder of their own; then a table of the levels found, the probes, and
# the search's cost in epochs and seconds against one retraining.
#   scripts/dapr.sh RECIPE NETWORK [OUT=runs/dapr-<recipe name>] [RESULTS=results/dapr-<recipe name>]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edgeprune}
recipe=$1; net=$2
name=$(basename "$recipe" .toml)
out=${3:-runs/dapr-$name}; results=${4:-results/dapr-$name}
subsets=$(python3 -c "import sys, tomllib; print(' '.join(s['name'] for s in tomllib.load(open(sys.argv[1], 'rb'))['subsets']))" "$recipe")
mkdir -p "$results"
for s in $subsets; do
    for mode in memory_opt cost_opt; do
        nice -n 10 "$BIN" search "$recipe" --network "$net" --subset "$s" --mode "$mode" -o "$out" \
            >>"$out.console.log" 2>&1
        cp "$out/search-$net-$s.json" "$results/search-$net-$s-$mode.json"
    done
done
python3 - "$results" "$recipe" <<'PY'
import glob, json, os, sys
results, recipe = sys.argv[1], sys.argv[2]
rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(results, "search-*.json")))]
lines = [f"# DaPR on `{recipe}`", "",
         f"Command: `scripts/dapr.sh {recipe} {rows[0]['network'] if rows else ''}`. Each probe is an ordinary "
         "data-aware cell of the recipe (fine-tune, prune, retrain under its budget); `cost_opt` reuses the "
         "probes `memory_opt` ran (the same cells), and its seconds are those probes' own. Seconds are measured "
         "beside other work on 2 cores.", "",
         "| network | subset | mode | reference (unpruned) | level found | probes | probe levels | search epochs | search seconds | mean seconds per probe | search retraining TOps | mean TOps per probe |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    n = len(r["probes"])
    levels = ", ".join(f"{p['level']:.0f}{'+' if p['reaches_reference'] else '-'}" for p in r["probes"])
    lvl = "none" if r["level"] is None else f"{r['level']:.0f}%"
    per = r["total_seconds"] / n if n else 0
    g = r.get("total_retrain_gops")
    gops = "- | -" if g is None else (f"{g / 1e3:.1f} | {g / 1e3 / n:.1f}" if n else "0 | 0")
    lines.append(f"| {r['network']} | {r['subset']} | {r['mode']} | {100*r['reference_top1']:.2f}% | {lvl} | {n} | {levels} | "
                 f"{r['total_epochs']:.0f} | {r['total_seconds']:.0f} | {per:.0f} | {gops} |")
lines += ["", "Probe levels: + reaches the unpruned accuracy, - falls short. Retraining compute: 3 x the pruned "
          "network's inference GOps per image (forward and backward) x the images its retraining epochs trained on, "
          "in TOps (10^12 operations); the fine-tune the probes share and the evaluations are left out."]
open(os.path.join(results, "README.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
