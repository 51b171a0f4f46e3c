#!/usr/bin/env bash
# The end-to-end `score` of one image at 518 with ViT-S/14 and a 10% coreset
# patchbank, ms per stage (decode, preprocess, backbone, scoring, map), for a
# model fitted in f32 and one fitted in bf16 (issue 13), interleaved in one
# process by bench/bench_score_stages.c.
#
#   bench/run_score_stages.sh [--rounds R] [--train-images N] [--image PNG] [-t T]
#
# - backbone: random weights of the real ViT-S/14 size (official state_dict
#   names, pos_embed 37x37), bench/vit_random_numpy.py (seed 10), F32
#   safetensors;
# - bank: `dinoscope extract` (f32) of the first N cxr_covidqu training
#   images at 518 (default 30: 1369 patches each), fitted with `fit
#   --features --scorer patchbank --coreset 0.1 --size 518` once with --dtype
#   f32 and once with --dtype bf16: the same bank (10% of the 0.9 N x 1369
#   training patches, 10% of the images held out for the threshold), the
#   recorded dtype differing, which is what `score` reads to pick the
#   backbone's compute type;
# - image: a cxr_covidqu test image (256x256 PNG, resized to 518 by the
#   model's preprocessing, the map at 256x256).
# Needs ../shared (exit 77 without it). Scratch in $DS_BENCH_DIR (default
# /tmp/dinoscope-bench-stages, ~150 MB).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DS_BENCH_BUILD:-$ROOT/build}
DIR=${DS_BENCH_DIR:-/tmp/dinoscope-bench-stages}
SHARED=${DS_SHARED:-$ROOT/../shared}
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1 OMP_WAIT_POLICY=PASSIVE
ROUNDS=5
NTRAIN=30
THREADS=2
IMAGE=$SHARED/data/cxr_covidqu/test/anomaly/cxr_test_covid_0001.png
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --train-images) NTRAIN=$2; shift ;;
        --image) IMAGE=$2; shift ;;
        -t|--threads) THREADS=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -f "$IMAGE" ] || { echo "SKIP: $IMAGE is absent (needs ../shared)"; exit 77; }
mkdir -p "$DIR"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target dinoscope dinoscope_shared >"$DIR/build.log" 2>&1 ||
    { tail -20 "$DIR/build.log"; echo "run_score_stages.sh: building failed" >&2; exit 1; }
gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -I"$ROOT/include" "$ROOT/bench/bench_score_stages.c" \
    -L"$BUILD" -ldinoscope -Wl,-rpath,"$BUILD" -o "$BUILD/bench_score_stages"
CLI=$BUILD/dinoscope

W=$DIR/vits14.safetensors
[ -f "$W" ] || "$PY" "$ROOT/bench/vit_random_numpy.py" vits14 "$W" 10
F=$DIR/train_feats_$NTRAIN.npy
if [ ! -f "$F" ]; then
    mapfile -t TRAIN < <(ls "$SHARED"/data/cxr_covidqu/train/normal/*.png | head -n "$NTRAIN")
    "$CLI" extract --weights "$W" --size 518 -t "$THREADS" --out "$F" "${TRAIN[@]}" 2>&1 | tail -1
fi
for d in f32 bf16; do
    M=$DIR/vits14_pb10_${NTRAIN}_$d.dsm
    [ -f "$M" ] || "$CLI" fit --backbone "$W" --dtype $d --features "$F" --size 518 --scorer patchbank --coreset 0.1 \
        -t "$THREADS" --out "$M" 2>&1 | grep -v '^coreset [0-9]' | tail -3
done
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores;" \
     "avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/bench_score_stages" --rounds "$ROUNDS" --threads "$THREADS" "$IMAGE" \
    "$DIR/vits14_pb10_${NTRAIN}_f32.dsm" "$DIR/vits14_pb10_${NTRAIN}_bf16.dsm"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
