#!/usr/bin/env bash
# CI pass of the fuzz targets (.ci/run calls it): builds them with clang into
# build-fuzz/ (CC=clang, -DDS_FUZZ=ON), then runs each for DS_FUZZ_SECS
# seconds (default 20) starting from its committed corpus (seeds + every
# regression input), with the limits of the long campaign (1 s per input,
# 2 GB, leaks detected). Fails on the first finding; the input that made it
# is left in build-fuzz/fuzz-artifacts/. New corpus entries go to a scratch
# folder, not to the committed corpus.
#   bash tests/fuzz/run_ci.sh [targets...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${DS_FUZZ_SECS:-20}
build=${DS_FUZZ_BUILD:-build-fuzz}
if ! command -v clang >/dev/null 2>&1; then
    echo "run_ci.sh: clang not installed (apt-get install clang libclang-rt-14-dev libomp-dev)" >&2
    exit 1
fi
CC=clang CXX=clang++ cmake -S . -B "$build" -DDS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_all >/dev/null
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors pth model backbone labels_csv checkpoint)
export FUZZ_SCRATCH
FUZZ_SCRATCH=$(mktemp -d)
trap 'rm -rf "$FUZZ_SCRATCH"' EXIT
mkdir -p "$build/fuzz-logs" "$build/fuzz-artifacts"
fail=0
for t in "${targets[@]}"; do
    log=$build/fuzz-logs/ci-$t.log
    before=$(ls "$build/fuzz-artifacts" | sort)
    if bash tests/fuzz/run.sh "$build" "$t" "$secs" >"$log" 2>&1; then
        echo "fuzz $t: ok ($(grep -oE 'number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+') runs in ${secs} s)"
        continue
    fi
    # the 1 s limit is wall-clock: on a loaded machine an input that takes
    # milliseconds can fire it; a timeout counts only if it repeats alone
    new=$(comm -13 <(echo "$before") <(ls "$build/fuzz-artifacts" | sort) | head -1)
    if [ -n "$new" ] && [ "${new#"$t"-timeout-}" != "$new" ] &&
        timeout 10 "$build/tests/fuzz/fuzz_$t" -timeout=1 -rss_limit_mb=2048 "$build/fuzz-artifacts/$new" >/dev/null 2>&1; then
        echo "fuzz $t: ok (a timeout that did not repeat alone: machine load; $new kept)"
        continue
    fi
    fail=1
    echo "fuzz $t: FINDING (see $log)"
    grep -E "^==[0-9]+==ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -5
done
exit $fail
