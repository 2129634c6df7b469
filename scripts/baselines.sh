#!/usr/bin/env bash
# The pretrained CIFAR-10 baselines of issue "The science, complete and fair" (AlexNet, SqueezeNet,
# MobileNetV2), trained one after another in the background across sessions.
#
#   scripts/baselines.sh run     # restore carried state, then train/resume each unfinished one
#   scripts/baselines.sh save    # copy each unfinished run's newest state into carry/ (to commit)
#
# A session's processes end when it stops and the next session may be on a fresh machine, so the
# newest checkpoint of an unfinished run (with its config, log, best model and console output) is
# committed under models/baselines-in-progress/<run>/ and restored from there into runs/<run>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edgeprune}
carry=models/baselines-in-progress
nets=(alexnet squeezenet mobilenetv2)

restore() {   # runs/<run> from the carried state, unless runs/<run> is already further on
    local run=$1 src=$carry/$1 dst=runs/$1
    [ -d "$src/checkpoints" ] || return 0
    local theirs mine
    theirs=$(ls "$src/checkpoints" | sort | tail -1)
    mine=$(ls "$dst/checkpoints" 2>/dev/null | grep '^e' | sort | tail -1 || true)
    if [ -z "$mine" ] || [[ "$mine" < "$theirs" ]]; then
        echo "baselines: restoring $run from $src ($theirs)"
        rm -rf "$dst"
        mkdir -p runs
        cp -r "$src" "$dst"
        if [ -f "$dst/console.log" ]; then mv "$dst/console.log" "runs/$run.console.log"; fi
    fi
}

save() {
    for net in "${nets[@]}"; do
        local run=$net-cifar10 src=runs/$net-cifar10
        [ -d "$src/checkpoints" ] || continue
        if [ -f "$src/summary.json" ]; then
            rm -rf "${carry:?}/$run"
            continue
        fi
        local newest
        newest=$(ls "$src/checkpoints" | grep '^e' | sort | tail -1)
        rm -rf "${carry:?}/$run.tmp"
        mkdir -p "$carry/$run.tmp/checkpoints"
        cp -r "$src/checkpoints/$newest" "$carry/$run.tmp/checkpoints/"
        for f in config.toml log.csv best; do
            if [ -e "$src/$f" ]; then cp -r "$src/$f" "$carry/$run.tmp/"; fi
        done
        if [ -f "runs/$run.console.log" ]; then cp "runs/$run.console.log" "$carry/$run.tmp/console.log"; fi
        rm -rf "${carry:?}/$run"
        mv "$carry/$run.tmp" "$carry/$run"
        echo "baselines: saved $run at $newest into $carry/$run"
    done
}

run() {
    for net in "${nets[@]}"; do
        local run=$net-cifar10 out=runs/$net-cifar10
        # A shipped baseline (models/<run>/) is finished on every machine, not only the one that
        # trained it: a fresh machine has no runs/ and must not retrain it.
        if [ -d "models/$run" ]; then
            echo "baselines: $run is shipped in models/$run"
            continue
        fi
        restore "$run"
        if [ -f "$out/summary.json" ]; then
            echo "baselines: $run is finished"
            continue
        fi
        mkdir -p runs
        # The console output goes beside the run folder (train refuses a folder it did not make).
        if ls "$out/checkpoints" 2>/dev/null | grep -q '^e'; then
            OMP_WAIT_POLICY=PASSIVE nice -n 10 "$BIN" train --resume "$out" >>"runs/$run.console.log" 2>&1
        else
            OMP_WAIT_POLICY=PASSIVE nice -n 10 "$BIN" train --config "recipes/$net-cifar10.toml" -o "$out" \
                >>"runs/$run.console.log" 2>&1
        fi
    done
}

case "${1:-run}" in
    run) run ;;
    save) save ;;
    *) echo "usage: $0 run|save" >&2; exit 2 ;;
esac
