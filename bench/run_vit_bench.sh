#!/usr/bin/env bash
# ViT benchmark: dinoscope's ds_vit_forward against PyTorch (Debian's torch
# 1.13, the DINOv2 module of tests/fixtures/make_vit_fixtures.py), same random
# weights of the real sizes, same input, same threads, float32.
# ViT-S/14 and ViT-B/14 at 224 and 518 px, batch 1 and 8; features = mean of
# the last 4 blocks through the final norm (get_intermediate_layers(n=4,
# norm=True)). Prints ms/img, the ratio dinoscope/PyTorch, dinoscope's
# GFLOP/s against the machine's sgemm rate, and checks that the features agree
# to 1e-3 of their largest magnitude.
#
#   bench/run_vit_bench.sh [--keep-coretype] [--threads T] [--budget-s S] [--only vits14|vitb14]
#
# OpenBLAS: this sandbox sets OPENBLAS_CORETYPE=Haswell (AVX2 kernels), which
# is about 1.8x slower at sgemm than the core OpenBLAS picks by itself here
# (Cooperlake, AVX-512): 190 vs 350 GFLOP/s on 2 idle cores. By default the script UNSETS it, for both dinoscope
# and PyTorch (torch links the same libopenblas through libblas.so.3);
# --keep-coretype runs with the environment's value. The output says which.
#
# Runs: one warm-up (dinoscope: the full batch, which also allocates its
# reused workspace; PyTorch: the first image, as torch allocates afresh in
# every call), then the median of N timed runs, N chosen to fit about
# --budget-s seconds per case and implementation (default 10), clamped to
# [2, 10]; the table shows N. Whole script: ~8 min on 2 idle cores.
# Scratch files (weights ~440 MB, inputs, features) go to $DS_BENCH_DIR
# (default /tmp/dinoscope-bench), never into the repository. Build: the
# library in build-bench/ (Release), bench_vit.c compiled next to it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DS_BENCH_BUILD:-$ROOT/build-bench}
DIR=${DS_BENCH_DIR:-/tmp/dinoscope-bench}
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
THREADS=2
BUDGET=10
KEEP_CORETYPE=0
MODELS="vits14 vitb14"
while [ $# -gt 0 ]; do
    case $1 in
        --keep-coretype) KEEP_CORETYPE=1 ;;
        --threads) THREADS=$2; shift ;;
        --budget-s) BUDGET=$2; shift ;;
        --only) MODELS=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 0 ;;
        *) echo "run_vit_bench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done

if [ "$KEEP_CORETYPE" = 0 ] && [ -n "${OPENBLAS_CORETYPE+x}" ]; then
    echo "NOTE: unsetting OPENBLAS_CORETYPE (was '${OPENBLAS_CORETYPE}') for dinoscope and PyTorch alike;" \
         "--keep-coretype keeps it"
    unset OPENBLAS_CORETYPE
fi

# OpenMP waits: `dinoscope` (src/cli/main.c) runs with OMP_WAIT_POLICY=PASSIVE
# unless the user set a policy, as busy-waiting workers hurt on 2 shared
# cores. PyTorch gets the same: with libgomp's default (spinning) policy its
# OpenMP team and OpenBLAS' threads fight over the 2 cores, and torch ran
# 5-6x slower here under load (ViT-S/224/1: 1.9-2.7 s vs 0.34-0.42 s).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# --- build ---------------------------------------------------------------
mkdir -p "$DIR"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target dinoscope_lib >"$DIR/build.log" 2>&1 ||
    { tail -20 "$DIR/build.log"; echo "run_vit_bench.sh: building the library in $BUILD failed" >&2; exit 1; }
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
NATIVE=$(sed -n 's/^DS_NATIVE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
# shellcheck disable=SC2046
gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -Wall -Wextra -I"$ROOT/include" \
    "$ROOT/bench/bench_vit.c" "$BUILD/libdinoscope.a" \
    $(pkg-config --cflags --libs openblas vips libcjson libzip zlib) -fopenmp -lm -o "$BUILD/bench_vit"
BENCH=$BUILD/bench_vit

"$PY" "$ROOT/bench/bench_vit.py" weights "$DIR"

# --- machine -------------------------------------------------------------
# Busy % of all CPUs over one second, from /proc/stat (user+nice+system+irq+
# softirq+steal over the total), while this script does nothing.
busy_pct() {
    local a b
    read -r -a a < /proc/stat; sleep 1; read -r -a b < /proc/stat
    local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
    local total=$(( busy + (b[4]+b[5]) - (a[4]+a[5]) ))
    echo $(( total > 0 ? 100 * busy / total : 0 ))
}
# CPU jiffies: "busy_all ours total" where ours = CPU time of this script's
# finished children (/proc/$$/stat cutime+cstime), to tell how much of a
# case's time other processes took from us.
jiffies() {
    local a
    read -r -a a < /proc/stat
    echo "$((a[1]+a[2]+a[3]+a[6]+a[7]+a[8])) $(awk '{print $16+$17}' /proc/$$/stat) $((a[1]+a[2]+a[3]+a[4]+a[5]+a[6]+a[7]+a[8]))"
}
# The figures are only meaningful on an idle machine: wait up to $1 s for
# the other processes to use < 10% (before the start and before each case).
wait_idle() {
    local waited=0
    while [ "$(busy_pct)" -ge 10 ] && [ "$waited" -lt "$1" ]; do
        [ "$waited" = 0 ] && echo "waiting up to $1 s for the machine to be idle (other processes use CPU)..."
        sleep 4; waited=$((waited + 5))
    done
}
wait_idle "${DS_BENCH_WAIT_IDLE_S:-300}"
RES=$DIR/results_$(date +%Y%m%d_%H%M%S)_$$.jsonl
echo "== dinoscope ViT benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs online; threads: $THREADS" \
     "(dinoscope n_threads, torch.set_num_threads)"
echo "build: $BUILD_TYPE, DS_NATIVE=$NATIVE ($BUILD); $(gcc --version | head -1)"
echo "torch $("$PY" -c 'import torch; print(torch.__version__)'); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<unset>};" \
     "OMP_WAIT_POLICY=$OMP_WAIT_POLICY for both (as the dinoscope CLI)"
echo "CPU busy before start: $(busy_pct)% (other processes; > 10% skews the figures), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" --info | tee -a "$RES"
"$BENCH" --sgemm 2048 --threads "$THREADS" --runs 10 | tee -a "$RES"

# --- cases ---------------------------------------------------------------
start=$(date +%s)
for model in $MODELS; do
    for S in 224 518; do
        for B in 1 8; do
            feats=$DIR/feats_${model}_${S}_b${B}.f32
            wait_idle "${DS_BENCH_WAIT_CASE_S:-60}"
            read -r busy0 ours0 total0 < <(jiffies)
            # the sgemm rate next to each case: the load changes over minutes
            "$BENCH" --sgemm 2048 --threads "$THREADS" --runs 5 |
                sed "s/^{/{\"model\": \"$model\", \"size\": $S, \"batch\": $B, /" >> "$RES"
            "$BENCH" --weights "$DIR/$model.safetensors" --input "$DIR/input_$S.f32" --size "$S" --batch "$B" \
                --threads "$THREADS" --layers 4 --budget-s "$BUDGET" --feats-out "$feats" | tee -a "$RES"
            "$PY" "$ROOT/bench/bench_vit.py" torch --model "$model" --weights "$DIR/$model.safetensors" \
                --input "$DIR/input_$S.f32" --size "$S" --batch "$B" --threads "$THREADS" \
                --budget-s "$BUDGET" --dino-feats "$feats" | tee -a "$RES"
            rm -f "$feats"
            read -r busy1 ours1 total1 < <(jiffies)
            other=$(( total1 > total0 ? 100 * ((busy1 - busy0) - (ours1 - ours0)) / (total1 - total0) : 0 ))
            echo "{\"impl\": \"load\", \"model\": \"$model\", \"size\": $S, \"batch\": $B, \"other_pct\": $other}" >> "$RES"
        done
    done
done
echo "cases took $(( $(date +%s) - start )) s; CPU busy after the end: $(busy_pct)% (other processes)"
echo "raw results: $RES"
echo
status=0
"$PY" "$ROOT/bench/bench_vit.py" table "$RES" || status=$?  # non-zero when a feature check failed
exit $status
