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
CC=clang cmake -S . -B "$build" -DDS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_all >/dev/null
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy safetensors pth model backbone labels_csv checkpoint)
rm -rf "$build/fuzz-corpus"
fail=0
for t in "${targets[@]}"; do
    log=$build/fuzz-logs/ci-$t.log
    mkdir -p "$build/fuzz-logs"
    if bash tests/fuzz/run.sh "$build" "$t" "$secs" >"$log" 2>&1; then
        echo "fuzz $t: ok ($(grep -oE 'number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+') runs in ${secs} s)"
    else
        fail=1
        echo "fuzz $t: FINDING (see $log)"
        grep -E "^==[0-9]+==ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -5
    fi
done
exit $fail
