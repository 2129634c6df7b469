#!/usr/bin/env bash
# Fuzzes one target for a bounded time, one process at a time, at the lowest CPU priority.
#   fuzz/run.sh TARGET SECONDS MAX_LEN
# Build first: (cd fuzz && cargo +nightly fuzz build -O --debug-assertions)
# New inputs go to fuzz/target/grown/TARGET (merge the useful ones into fuzz/corpus/TARGET with
# `-merge=1`), crashes to fuzz/artifacts/TARGET/, the log to fuzz/target/logs/TARGET.log.
set -euo pipefail
target=$1 seconds=$2 max_len=$3
fuzz=$(cd "$(dirname "$0")" && pwd)
bin=$fuzz/target/x86_64-unknown-linux-gnu/release/$target
mkdir -p "$fuzz/target/grown/$target" "$fuzz/artifacts/$target" "$fuzz/target/logs/$target"
cd "$fuzz/target/logs/$target"   # -jobs writes fuzz-0.log here
export LD_LIBRARY_PATH=$fuzz/../.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nice -n 19 "$bin" "$fuzz/target/grown/$target" "$fuzz/corpus/$target" \
  -jobs=1 -workers=1 -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
  -rss_limit_mb=2048 -max_len="$max_len" -timeout=10 -max_total_time="$seconds" \
  -artifact_prefix="$fuzz/artifacts/$target/" -print_final_stats=1 \
  > "$fuzz/target/logs/$target.log" 2>&1 || true
cat fuzz-0.log >> "$fuzz/target/logs/$target.log" 2>/dev/null || true
