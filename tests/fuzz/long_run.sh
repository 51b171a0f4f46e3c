#!/usr/bin/env bash
# The long campaign of tests/fuzz/README.md: each target in turn (one process,
# one core) until 1.1 M executions or MAX_SECS (default 3600) seconds.
#   bash tests/fuzz/long_run.sh BUILD_DIR [targets...]
# Logs: BUILD_DIR/fuzz-logs/TARGET.log (the last lines hold the counts).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$1
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors pth model backbone labels_csv checkpoint)
mkdir -p "$build/fuzz-logs"
for t in "${targets[@]}"; do
    bash "$here/run.sh" "$build" "$t" "${MAX_SECS:-3600}" -runs=1100000 >"$build/fuzz-logs/$t.log" 2>&1
    echo "$t: exit $? $(grep -E 'stat::number_of_executed_units' "$build/fuzz-logs/$t.log")"
done
