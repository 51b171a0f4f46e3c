#!/usr/bin/env bash
# Issue 13's fidelity bar for the CNN bf16 path: image AUROC on ../shared/data
# with the shipped MobileNetV2 within 0.003 of fp32 for every scorer.
#
#   bench/cnn_bf16_auroc.sh [--tasks LIST] [--scorers LIST] [--coreset R] [-t T]
#
# For each task (default cxr_covidqu,brain_mri,lc25000_colon) it fits the
# scorers (default knn,gaussian,patchbank,padim,flow) twice on the normal
# training images, `fit --dtype f32` and `fit --dtype bf16`, with the same
# settings (size 224, seed 0, --coreset R, default 0.1), runs `dinoscope eval`
# on the test split (eval uses the dtype the model recorded, checked here in
# `dinoscope info`), and prints per scorer the two image AUROCs and their
# difference, marking |diff| > 0.003. Exits 1 when a difference exceeds the
# bar or a step fails, 77 when ../shared is absent.
# Env: DS_CLI (default build/dinoscope), DS_SHARED (default ../shared),
# DS_TMP (default /tmp/dinoscope-cnn-bf16-auroc).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI=${DS_CLI:-$ROOT/build/dinoscope}
SHARED=${DS_SHARED:-$ROOT/../shared}
TMP=${DS_TMP:-/tmp/dinoscope-cnn-bf16-auroc}
TASKS=cxr_covidqu,brain_mri,lc25000_colon
SCORERS=knn,gaussian,patchbank,padim,flow
CORESET=0.1
THREADS=2
while [ $# -gt 0 ]; do
    case $1 in
        --tasks) TASKS=$2; shift ;;
        --scorers) SCORERS=$2; shift ;;
        --coreset) CORESET=$2; shift ;;
        -t|--threads) THREADS=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
MODEL=$SHARED/models/mobilenet_v2_imagenet.safetensors
[ -x "$CLI" ] || { echo "SKIP: no CLI binary at $CLI"; exit 77; }
[ -f "$MODEL" ] || { echo "SKIP: $MODEL is absent (needs ../shared)"; exit 77; }
mkdir -p "$TMP" || exit 1
export OMP_WAIT_POLICY=PASSIVE

# value of one scorer's field in report.json (cJSON_Print: one "key":<TAB>value per line)
field() {
    awk -v s="$2" -v f="\"$3\":" '/"name":/ {gsub(/[",]/, "", $2); name = $2}
        name == s && $1 == f && !done { v = $2; gsub(/,/, "", v); print v; done = 1 }' "$1"
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores;" \
     "avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "settings: --size 224 --scorer $SCORERS --coreset $CORESET --seed 0 -t $THREADS"
fail=0
rows=""
for t in ${TASKS//,/ }; do
    csv=$SHARED/data/$t/labels.csv
    [ -f "$csv" ] || { echo "SKIP: $csv is absent"; continue; }
    for d in f32 bf16; do
        t0=$SECONDS
        if ! "$CLI" fit --backbone "$MODEL" --dtype $d --scorer "$SCORERS" --coreset "$CORESET" --seed 0 -t "$THREADS" \
                --out "$TMP/$t.$d.dsm" "$csv" >"$TMP/$t.$d.fit.out" 2>"$TMP/$t.$d.fit.err"; then
            echo "FAIL $t: fit --dtype $d (see $TMP/$t.$d.fit.err)"; fail=1; continue
        fi
        t1=$SECONDS
        if ! "$CLI" info "$TMP/$t.$d.dsm" >"$TMP/$t.$d.info" 2>&1; then
            echo "FAIL $t: info of the $d model"; fail=1
        elif [ $d = bf16 ] && ! grep -q 'dtype=bf16' "$TMP/$t.$d.info"; then
            echo "FAIL $t: the bf16 model's info does not record dtype=bf16"; fail=1
        elif [ $d = f32 ] && grep -q 'dtype=' "$TMP/$t.$d.info"; then
            echo "FAIL $t: the f32 model's info names a dtype"; fail=1
        fi
        if ! "$CLI" eval --model "$TMP/$t.$d.dsm" --data "$csv" -t "$THREADS" --out "$TMP/$t.$d" \
                >"$TMP/$t.$d.eval.out" 2>"$TMP/$t.$d.eval.err"; then
            echo "FAIL $t: eval of the $d model (see $TMP/$t.$d.eval.err)"; fail=1; continue
        fi
        echo "  $t $d: fit $((t1 - t0)) s, eval $((SECONDS - t1)) s"
    done
    for s in ${SCORERS//,/ }; do
        a=$(field "$TMP/$t.f32/report.json" "$s" image_auroc 2>/dev/null)
        b=$(field "$TMP/$t.bf16/report.json" "$s" image_auroc 2>/dev/null)
        row=$(awk -v t="$t" -v s="$s" -v a="$a" -v b="$b" 'BEGIN {
            if (a == "" || b == "" || a == "null" || b == "null") { printf "| %s | %s | %s | %s | - | MISSING |", t, s, a, b; exit 1 }
            d = b - a; ad = d < 0 ? -d : d
            printf "| %s | %s | %.4f | %.4f | %+.4f | %s |", t, s, a, b, d, ad <= 0.003 ? "ok" : "OVER 0.003"
            exit ad <= 0.003 ? 0 : 1 }') || fail=1
        rows="$rows$row"$'\n'
    done
done
echo
echo "| task | scorer | image AUROC f32 | image AUROC bf16 | bf16 - f32 | within 0.003 |"
echo "|---|---|---|---|---|---|"
printf "%s" "$rows"
exit $fail
