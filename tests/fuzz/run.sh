#!/usr/bin/env bash
# Runs one fuzz target: bash tests/fuzz/run.sh BUILD_DIR TARGET SECONDS [libFuzzer flags...]
# The committed seeds (corpus/TARGET) are read, new inputs go to
# BUILD_DIR/fuzz-corpus/TARGET (not committed; FUZZ_SCRATCH=DIR: DIR/TARGET), findings to
# BUILD_DIR/fuzz-artifacts/TARGET-*. Limits of issue 11: no input may take
# over 1 s, allocate over 2 GB (-malloc_limit_mb follows -rss_limit_mb) or
# leak. Exit status: libFuzzer's (0 = nothing found).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$1 target=$2 secs=$3
shift 3
bin=$build/tests/fuzz/fuzz_$target
[ -x "$bin" ] || { echo "run.sh: no $bin (configure with CC=clang -DDS_FUZZ=ON)" >&2; exit 2; }
scratch=${FUZZ_SCRATCH:-$build/fuzz-corpus}/$target
mkdir -p "$scratch" "$build/fuzz-artifacts"
dict=()
[ -f "$here/$target.dict" ] && dict=(-dict="$here/$target.dict")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# one thread everywhere: the targets are single-threaded, OpenMP/OpenBLAS
# workers would only blur the timings and leak reports
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
exec "$bin" "${dict[@]}" -rss_limit_mb=2048 -timeout=1 -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-artifacts/$target-" "$@" "$scratch" "$here/corpus/$target"
