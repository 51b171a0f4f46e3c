#!/usr/bin/env bash
# The long campaign of tests/fuzz/README.md: each target in turn (one process,
# one core) until 1.1 M executions in all or MAX_SECS (default 3600) seconds.
#   bash tests/fuzz/long_run.sh BUILD_DIR [targets...]
# Logs: BUILD_DIR/fuzz-logs/TARGET.log (one section per session).
# On a shared machine the 1 s limit is wall-clock time, so a load spike can
# fire it on an input that takes milliseconds: a timeout input is run again
# alone, and only if it also takes over 1 s there is it a finding; otherwise
# it is logged as spurious and the campaign goes on from the same corpus
# (the count is the sum over the sessions). Crashes, leaks and allocations
# over 2 GB always stop the target.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$1
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors pth model backbone labels_csv checkpoint)
mkdir -p "$build/fuzz-logs"
want=1100000
for t in "${targets[@]}"; do
    log=$build/fuzz-logs/$t.log
    : >"$log"
    total=0 spurious=0 start=$(date +%s) rc=0
    while [ "$total" -lt "$want" ]; do
        left=$(( ${MAX_SECS:-3600} - ($(date +%s) - start) ))
        [ "$left" -le 0 ] && break
        before=$(ls "$build/fuzz-artifacts" 2>/dev/null | sort)
        bash "$here/run.sh" "$build" "$t" "$left" -runs=$((want - total)) >>"$log" 2>&1
        rc=$?
        n=$(grep -oE 'number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
        total=$((total + ${n:-0}))
        [ "$rc" = 0 ] && break
        new=$(comm -13 <(echo "$before") <(ls "$build/fuzz-artifacts" | sort) | grep "^$t-timeout-" | head -1)
        [ "$rc" = 70 ] && [ -n "$new" ] || break
        # a timeout: is it real?
        if timeout 10 "$build/tests/fuzz/fuzz_$t" -timeout=1 -rss_limit_mb=2048 "$build/fuzz-artifacts/$new" >/dev/null 2>&1; then
            spurious=$((spurious + 1))
            echo "== spurious timeout (machine load): $new reran under 1 s; resuming" >>"$log"
            mv "$build/fuzz-artifacts/$new" "$build/fuzz-artifacts/spurious-$new"
        else
            break
        fi
    done
    echo "$t: exit $rc, $total executions in $(( $(date +%s) - start )) s, $spurious spurious timeouts"
done
