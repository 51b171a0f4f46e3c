#!/usr/bin/env bash
# Issue 13's benchmark in one script: dinoscope f32 and bf16 against ONNX
# Runtime 1.30 f32 and tuned PyTorch f32/bf16 on the DINOv2 cases of the
# issue (interleaved run by run, bench/bench_speed.py run), then exact k-NN
# over an f32 and a bf16 bank against faiss IndexFlatIP (bench_speed.py nn).
#
#   bench/run_speed_bench.sh [--rounds R] [--cases LIST] [--skip IMPLS] [--no-nn]
#
# Peers (set up here, nothing enters the repository or the system BLAS):
# - ONNX Runtime: `npm install --ignore-scripts onnxruntime-node@1.30.0` in
#   $DS_ORT_DIR (default /tmp/dinoscope-ort; the CPU library ships inside the
#   package); models exported by torch.onnx.export (opset 17).
# - tuned PyTorch (Debian torch): OpenMP OpenBLAS (libopenblas0-openmp,
#   unpacked with dpkg -x into $DS_OMP_DIR, put first on LD_LIBRARY_PATH for
#   the Python process only) and a malloc that keeps freed memory
#   (GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736);
#   stock torch is 3-6x slower and not the peer to beat (issue 13).
# - faiss: Debian python3-faiss 1.7.3.
# OPENBLAS_CORETYPE is unset (as bench/run_vit_bench.sh does) so that
# OpenBLAS picks its kernels for the CPU; OMP_WAIT_POLICY=PASSIVE for all.
# Prints the CPU, the load average before and after, the tables; scratch
# files in $DS_BENCH_DIR (default /tmp/dinoscope-bench, ~1.3 GB with the
# ONNX files).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${DS_BENCH_BUILD:-$ROOT/build-bench}
DIR=${DS_BENCH_DIR:-/tmp/dinoscope-bench}
ORT_DIR=${DS_ORT_DIR:-/tmp/dinoscope-ort}
OMP_DIR=${DS_OMP_DIR:-/tmp/dinoscope-openblas-openmp}
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
ROUNDS=5
CASES=vits14:224:8,vits14:518:1,vitb14:224:8,vitb14:518:1,vitb14:518:4
SKIP=
NN=1
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --cases) CASES=$2; shift ;;
        --skip) SKIP=$2; shift ;;
        --no-nn) NN=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#'; exit 0 ;;
        *) echo "run_speed_bench.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
unset OPENBLAS_CORETYPE
export OMP_WAIT_POLICY=PASSIVE

mkdir -p "$DIR"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD" -j2 --target dinoscope_lib >"$DIR/build.log" 2>&1 ||
    { tail -20 "$DIR/build.log"; echo "run_speed_bench.sh: building the library failed" >&2; exit 1; }
LIBS=$(pkg-config --cflags --libs openblas vips libcjson libzip zlib)
# shellcheck disable=SC2086
gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O2 -march=native -I"$ROOT/include" -I"$ROOT/src" "$ROOT/bench/bench_vit.c" \
    "$BUILD/libdinoscope.a" $LIBS -fopenmp -lm -o "$BUILD/bench_vit"
# shellcheck disable=SC2086
gcc -std=c11 -D_POSIX_C_SOURCE=200809L -O3 -march=native -I"$ROOT/include" -I"$ROOT/src" "$ROOT/bench/bench_nn.c" \
    "$BUILD/libdinoscope.a" $LIBS -fopenmp -lm -o "$BUILD/bench_nn"

if [ ! -d "$ORT_DIR/node_modules/onnxruntime-node" ]; then
    mkdir -p "$ORT_DIR"
    (cd "$ORT_DIR" && npm install --ignore-scripts onnxruntime-node@1.30.0 >/dev/null)
fi
OMP_LIB=$OMP_DIR/usr/lib/x86_64-linux-gnu/openblas-openmp
if [ ! -f "$OMP_LIB/libblas.so.3" ]; then
    mkdir -p "$OMP_DIR"
    (cd "$OMP_DIR" && apt-get download libopenblas0-openmp >/dev/null && dpkg -x libopenblas0-openmp_*.deb .)
fi
"$PY" -c 'import faiss' 2>/dev/null || { echo "run_speed_bench.sh: needs python3-faiss (apt-get install python3-faiss)" >&2; exit 1; }

"$PY" "$ROOT/bench/bench_vit.py" weights "$DIR"
"$PY" "$ROOT/bench/bench_speed.py" export --dir "$DIR" 2>&1 | grep -v -i warn || true

echo "== dinoscope speed benchmark (issue 13), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1) (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) CPUs;" \
     "AVX-512 BF16: $(grep -q avx512_bf16 /proc/cpuinfo && echo yes || echo no); threads 2 everywhere"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
LD_LIBRARY_PATH=$OMP_LIB GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
    "$PY" "$ROOT/bench/bench_speed.py" run --dir "$DIR" --bench-vit "$BUILD/bench_vit" --ort-dir "$ORT_DIR" \
    --cases "$CASES" --rounds "$ROUNDS" --skip "$SKIP" || status=$?
echo "load average after the ViT cases: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$NN" = 1 ]; then
    "$PY" "$ROOT/bench/bench_speed.py" nn --bench-nn "$BUILD/bench_nn" --rounds 3
    echo "load average after k-NN: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
exit $status
