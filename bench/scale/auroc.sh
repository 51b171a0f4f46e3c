#!/usr/bin/env bash
# Exact greedy vs the blocked coreset on ../shared/data with MobileNetV2
# (docs/scale.md): one fit extracts the features into a store (exact
# coreset), refits of the store use the blocked coreset at the given block
# sizes; `dinoscope eval` on the test split gives image (and, with masks,
# pixel) AUROC. Prints: task method block image_auroc pixel_auroc fit_s.
# Usage: bench/scale/auroc.sh OUTDIR [BLOCK...]   (default blocks 16384 4096)
set -u
CLI=${DS_CLI:-$(dirname "$0")/../../build/dinoscope}
SHARED=${DS_SHARED:-$(dirname "$0")/../../../shared}
MB=$SHARED/models/mobilenet_v2_imagenet.safetensors
OUT=${1:?usage: auroc.sh OUTDIR [BLOCK...]}
shift
BLOCKS=${*:-16384 4096}
[ -f "$MB" ] || { echo "SKIP: no $MB"; exit 77; }
mkdir -p "$OUT"
field() { grep -m1 -A40 "\"name\":[[:space:]]*\"patchbank\"" "$1" | grep -m1 "\"$2\"" | sed 's/.*:[[:space:]]*//; s/,//'; }
for task in cxr_covidqu brain_mri; do
    data=$SHARED/data/$task/labels.csv
    t0=$(date +%s)
    "$CLI" fit --backbone "$MB" --scorer patchbank --coreset-method exact --work-dir "$OUT/$task.store" \
        --out "$OUT/$task.exact.dsm" "$data" 2>"$OUT/$task.exact.fit.log" || { echo "fit failed: $task"; continue; }
    fit_s=$(grep -o "patchbank fitted in [0-9.]*" "$OUT/$task.exact.fit.log" | awk '{print $4}')
    models="exact:-:$fit_s"
    for b in $BLOCKS; do
        "$CLI" fit --backbone "$MB" --scorer patchbank --coreset-method blocked --coreset-block "$b" \
            --features "$OUT/$task.store" --out "$OUT/$task.blocked$b.dsm" 2>"$OUT/$task.blocked$b.fit.log"
        models="$models blocked$b:$b:$(grep -o "patchbank fitted in [0-9.]*" "$OUT/$task.blocked$b.fit.log" | awk '{print $4}')"
    done
    for m in $models; do
        name=${m%%:*} rest=${m#*:}
        "$CLI" eval --model "$OUT/$task.$name.dsm" --data "$data" --out "$OUT/$task.$name.eval" >/dev/null 2>&1
        j=$OUT/$task.$name.eval/report.json
        echo "$task ${name%%[0-9]*} ${rest%%:*} $(field "$j" image_auroc) $(field "$j" pixel_auroc) ${rest#*:}"
    done
done
