#!/usr/bin/env bash
# The long protocol sweeps of issue "The science, complete and fair", run one after another in the
# background across sessions (after the baselines of scripts/baselines.sh).
#
#   scripts/sweeps.sh run       # restore carried state, then run or resume each unfinished sweep,
#                               # and DaPR on each finished fair sweep (scripts/dapr.sh)
#   scripts/sweeps.sh save      # copy each unfinished sweep's state into the carry folder (to commit)
#   scripts/sweeps.sh restore NAME...  # runs/NAME from the carry folder (as `run` does first)
#   scripts/sweeps.sh publish   # each finished sweep: cells.csv, cells.json and its report into results/,
#                               # and results/fair-summary: one report over all of them
#
# A session's processes end when it stops and the next session may be on a fresh machine. A whole
# sweep folder is hundreds of MB (every cell's checkpoints and models), so `save` carries only what
# resuming needs: every cell's small files (metrics.json, plan.json, the run's config, log and
# summary), and the heavy files (newest checkpoint, best and pruned models) of the cells that are
# not finished and of the shared cells (fine-tuning, agnostic retraining) that an unfinished cell
# still reads. A finished cell is one with metrics.json; `experiment` skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edgeprune}
carry=models/sweeps-in-progress
# The protocol's full 30-epoch budget on four of ResNet-20's cells follows its fair sweep (what the
# scaling changes); then the label-free pipeline on ResNet-20's grid (issue "Label-free
# adaptation"), then the other networks.
sweeps=(fair-cifar10-resnet20 full-cifar10-resnet20 fair-cifar10-resnet20-unlabeled fair-cifar10-squeezenet
    fair-cifar10-alexnet fair-cifar10-mobilenetv2)

restore() {   # runs/<name> from the carried state, unless runs/<name> has as many finished cells
    local name=$1 src=$carry/$1 dst=runs/$1
    [ -d "$src" ] || return 0
    local theirs mine
    theirs=$(find "$src" -name metrics.json | wc -l)
    # (No folder yet on a fresh machine: find fails, and under pipefail that must not end the script.)
    mine=$({ find "$dst" -name metrics.json 2>/dev/null || true; } | wc -l)
    if [ ! -d "$dst" ] || [ "$mine" -lt "$theirs" ]; then
        echo "sweeps: restoring $name from $src ($theirs finished cells)"
        rm -rf "$dst"
        mkdir -p runs
        cp -r "$src" "$dst"
        if [ -f "$dst/console.log" ]; then mv "$dst/console.log" "runs/$name.console.log"; fi
    fi
}

# Long runs carried beside the sweeps (scripts/precision_parity.sh restores and resumes them).
others=(precision-parity-fp32 precision-parity-bf16)

save() {
    for name in "${sweeps[@]}" "${others[@]}"; do
        local src=runs/$name
        [ -d "$src" ] || continue
        if [[ $name == precision-parity-* ]] && [ -f "$src/done" ]; then
            rm -rf "${carry:?}/$name"
            continue
        fi
        # Finished and published (and a fair sweep's DaPR done): nothing left to carry.
        if [ -f "results/$name/cells.csv" ] && [ -f "$src/done" ] &&
            { [[ $name != fair-* ]] || [ -f "results/dapr-$name/latency.csv" ]; }; then
            rm -rf "${carry:?}/$name"
            continue
        fi
        rm -rf "${carry:?}/$name.tmp"
        python3 - "$src" "$carry/$name.tmp" "recipes/$name.toml" <<'EOF'
import os, shutil, sys, tomllib
src, dst, recipe = sys.argv[1], sys.argv[2], sys.argv[3]
SMALL = {"metrics.json", "plan.json", "config.toml", "log.csv", "summary.json", ".edgeprune", "recipe.toml",
         "cells.csv", "cells.json", "unreachable.csv"}

def copy(rel):
    s, d = os.path.join(src, rel), os.path.join(dst, rel)
    os.makedirs(os.path.dirname(d), exist_ok=True)
    if os.path.isdir(s):
        shutil.copytree(s, d, dirs_exist_ok=True)
    else:
        shutil.copy2(s, d)

# Cell folders: <net>/<subset>/<cell>; a cell's training run is <cell>/run.
cells = []
for net in sorted(os.listdir(src)):
    if not os.path.isdir(os.path.join(src, net)):
        continue
    for sub in sorted(os.listdir(os.path.join(src, net))):
        p = os.path.join(src, net, sub)
        if os.path.isdir(p):
            cells += [os.path.join(net, sub, c) for c in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, c))]
done = {c for c in cells if os.path.exists(os.path.join(src, c, "metrics.json"))}

# The cells that read a shared cell, from the recipe (cells not started yet have no folder).
with open(recipe, "rb") as f:
    r = tomllib.load(f)
def level(l):
    k = round(l * 100)
    return str(k // 100) if k % 100 == 0 else f"{k / 100:.2f}"
levels = [level(l) for l in r["levels"]]
subsets = [s["name"] for s in r["subsets"]]

def needed_by_unfinished(c):
    """A shared cell that a cell not yet finished will read."""
    net, sub, name = c.split(os.sep)
    if name.startswith("finetune-s"):      # read by <net>/<sub>/aware-p<level>-s<seed>
        seed = name[len("finetune-s"):]
        readers = [os.path.join(net, sub, f"aware-p{l}-s{seed}") for l in levels]
    elif name.startswith("finetune-unlabeled-s"):   # read by <net>/<sub>/aware-unlabeled-p<level>-s<seed>
        seed = name[len("finetune-unlabeled-s"):]
        readers = [os.path.join(net, sub, f"aware-unlabeled-p{l}-s{seed}") for l in levels]
    elif sub == "_all":                    # agnostic retraining, read by <net>/<subset>/agnostic-p<level>-s<seed>
        readers = [os.path.join(net, s, name) for s in subsets]
    else:
        return False
    return any(d not in done for d in readers)

heavy = 0
for root, dirs, files in os.walk(src):
    # Checkpoints and models go whole or not at all (below).
    dirs[:] = [d for d in dirs if d not in ("checkpoints", "best", "pruned", "last")]
    rel = os.path.relpath(root, src)
    for f in files:
        if f in SMALL:
            copy(os.path.normpath(os.path.join(rel, f)))
for c in cells:
    if c in done and not needed_by_unfinished(c):
        continue
    run = os.path.join(src, c, "run")
    ck = os.path.join(run, "checkpoints")
    if os.path.isdir(ck):
        newest = sorted(x for x in os.listdir(ck) if x.startswith("e"))
        if newest:
            copy(os.path.join(c, "run", "checkpoints", newest[-1]))
            heavy += 1
    for extra in (os.path.join(c, "run", "best"), os.path.join(c, "pruned")):
        if os.path.isdir(os.path.join(src, extra)):
            copy(extra)
print(f"sweeps: {len(done)} of {len(cells)} cell folders finished; heavy state of {heavy} runs carried")
EOF
        if [ -f "runs/$name.console.log" ]; then cp "runs/$name.console.log" "$carry/$name.tmp/console.log"; fi
        rm -rf "${carry:?}/$name"
        mv "$carry/$name.tmp" "$carry/$name"
        echo "sweeps: saved $name into $carry/$name ($(du -sh "$carry/$name" | cut -f1))"
    done
}

publish() {
    for name in "${sweeps[@]}"; do
        local src=runs/$name
        [ -f "$src/done" ] || continue
        mkdir -p "results/$name"
        cp "$src/cells.csv" "$src/cells.json" "results/$name/"
        if [ -f "$src/unreachable.csv" ]; then cp "$src/unreachable.csv" "results/$name/"; fi
        # With the sweep's DaPR searches where scripts/dapr.sh published them.
        local search=() with=()
        if [ -d "results/dapr-$name" ]; then search=(--search "results/dapr-$name"); fi
        # A label-free sweep is reported beside the labelled sweep of its grid.
        if [[ $name == *-unlabeled ]] && [ -f "results/${name%-unlabeled}/cells.csv" ]; then
            with=(--with "results/${name%-unlabeled}")
        fi
        "$BIN" report "$src" -o "results/$name/report" "${search[@]}" "${with[@]}"
        echo "sweeps: published $name into results/$name"
    done
    budget_comparison
    # The summary page over every published fair sweep (one budget): each network's mean/max
    # delta, and over all.
    local first=results/${sweeps[0]} rest=()
    [ -f "$first/cells.csv" ] || return 0
    for name in "${sweeps[@]:1}"; do
        if [[ $name == fair-* ]] && [ -f "results/$name/cells.csv" ]; then rest+=("results/$name"); fi
    done
    "$BIN" report "$first" -o results/fair-summary ${rest[@]+--with "${rest[@]}"}
    echo "sweeps: the summary over ${#rest[@]} more sweeps beside ${sweeps[0]} is in results/fair-summary"
}

# The same cells under the fair scaled budget and under the protocol's full one, side by side.
budget_comparison() {
    local fair=results/fair-cifar10-resnet20/cells.csv full=results/full-cifar10-resnet20/cells.csv
    [ -f "$fair" ] && [ -f "$full" ] || return 0
    python3 - "$fair" "$full" results/budget-comparison.md <<'PY'
import csv, statistics, sys
fair_path, full_path, out = sys.argv[1:]
def load(p):
    rows = {}
    for r in csv.DictReader(open(p)):
        if r["pipeline"] in ("aware", "agnostic") and r["test_top1"]:
            rows.setdefault((r["subset"], float(r["level"]), r["pipeline"]), []).append(r)
    return rows
fair, full = load(fair_path), load(full_path)
budget = {name: next(iter(rows.values()))[0].get("budget", "") for name, rows in (("fair", fair), ("full", full))}
def acc(rows):
    v = [100 * float(r["test_top1"]) for r in rows]
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else None), len(v)
def fmt(a):
    m, s, n = a
    return f"{m:.2f}%" + (f" ± {s:.2f}" if s is not None else "") + f" ({n})"
def steps(rows):
    v = [float(r["train_steps"]) for r in rows if r.get("train_steps")]
    return f"{statistics.mean(v):.0f}" if v else "-"
lines = ["# The fair scaled budget against the protocol's full budget: ResNet-20", "",
         f"Fair (`recipes/fair-cifar10-resnet20.toml`): {budget['fair']}. Full (`recipes/full-cifar10-resnet20.toml`): "
         f"{budget['full']}. The same cells (subset, level; the full sweep's seeds) in both; accuracy on the subset's test "
         "images, mean ± std over seeds (number of seeds); steps: training batches of the pipeline on its way to the model "
         "(aware: fine-tune and retraining; agnostic: retraining on all ten classes).", "",
         "Command: `scripts/sweeps.sh publish` (after both sweeps finished).", "",
         "| subset | level | aware fair | agnostic fair | delta fair (pp) | steps aware / agnostic fair | aware full | agnostic full | delta full (pp) | steps aware / agnostic full |",
         "|---|---|---|---|---|---|---|---|---|---|"]
deltas = {"fair": [], "full": []}
for key in sorted({(s, l) for (s, l, _) in full}):
    s, l = key
    cols = []
    for name, rows in (("fair", fair), ("full", full)):
        seeds = {r["seed"] for r in full.get((s, l, "aware"), []) + full.get((s, l, "agnostic"), [])}
        aw = [r for r in rows.get((s, l, "aware"), []) if r["seed"] in seeds]
        ag = [r for r in rows.get((s, l, "agnostic"), []) if r["seed"] in seeds]
        if not aw or not ag:
            cols += ["-", "-", "-", "-"]
            continue
        d = acc(aw)[0] - acc(ag)[0]
        deltas[name].append(d)
        cols += [fmt(acc(aw)), fmt(acc(ag)), f"{d:+.2f}", f"{steps(aw)} / {steps(ag)}"]
    lines.append(f"| {s} | {l:g}% | " + " | ".join(cols) + " |")
for name in ("fair", "full"):
    if deltas[name]:
        lines.append("")
        lines.append(f"Mean delta over these cells, {name} budget: {statistics.mean(deltas[name]):+.2f} pp "
                     f"(max {max(deltas[name]):+.2f} pp, {len(deltas[name])} cells).")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
}

run() {
    for name in "${sweeps[@]}"; do
        restore "$name"
        if [ -f "runs/$name/done" ]; then
            echo "sweeps: $name is finished"
            dapr "$name"
            continue
        fi
        mkdir -p runs
        echo "sweeps: running $name ($(date -u +%FT%TZ))" >>"runs/$name.console.log"
        if OMP_WAIT_POLICY=PASSIVE nice -n 10 "$BIN" experiment "recipes/$name.toml" -o "runs/$name" \
            >>"runs/$name.console.log" 2>&1; then
            date -u +%FT%TZ >"runs/$name/done"
            echo "sweeps: $name finished"
        else
            echo "sweeps: $name stopped (rc $?), see runs/$name.console.log"
            continue
        fi
        dapr "$name"
    done
}

# DaPR for each subset of a finished fair sweep, into the sweep's own folder (probes on the grid
# are its cells), then the found networks timed: results/dapr-<name> (done when it has latency.csv).
dapr() {
    local name=$1 net pipeline=aware
    [[ $name == fair-* ]] || return 0
    [ -f "results/dapr-$name/latency.csv" ] && return 0
    [[ $name == *-unlabeled ]] && pipeline=aware-unlabeled
    net=$(python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['networks'][0]['name'])" "recipes/$name.toml")
    echo "sweeps: DaPR on $name ($(date -u +%FT%TZ))" >>"runs/$name.console.log"
    if PIPELINE=$pipeline SWEEP_PAUSE=1 BIN=$BIN OMP_WAIT_POLICY=PASSIVE scripts/dapr.sh "recipes/$name.toml" "$net" "runs/$name" \
        "results/dapr-$name" >>"runs/$name.console.log" 2>&1; then
        echo "sweeps: DaPR on $name done"
    else
        echo "sweeps: DaPR on $name stopped (rc $?), see runs/$name.console.log"
    fi
}

case "${1:-run}" in
    run) run ;;
    save) save ;;
    publish) publish ;;
    restore) shift; for n in "$@"; do restore "$n"; done ;;
    *) echo "usage: $0 run|save|publish|restore NAME..." >&2; exit 2 ;;
esac
