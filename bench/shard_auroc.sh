#!/usr/bin/env bash
# Sharded fit vs plain fit on ../shared/data with MobileNetV2 (docs/sharding.md):
# per dataset, image/pixel AUROC of each scorer for
#   plain   dinoscope fit (defaults + padim)
#   N=4     fit --shard I/4 (I = 0..3, keep the whole bank) + merge
#   N=4/k   fit --shard I/4 --shard-keep K (each part keeps a coreset of K of its patches) + merge
# and the wall time of each step. Usage: bench/shard_auroc.sh [OUT_DIR] [K]
# Env: DATASETS (default: all three), FIT_ARGS (default: --gaussian-per-patch), THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
DS=${DS:-build/dinoscope}
SH=${DS_SHARED:-../shared}
BB=$SH/models/mobilenet_v2_imagenet.safetensors
OUT=${1:-bench-out/shard}
K=${2:-0.3}
T=${THREADS:-2}
mkdir -p "$OUT"
now() { date +%s.%N; }
row() { # dataset variant model: "| dataset | variant | scorer | image AUROC | pixel AUROC |" from eval's report.md
    "$DS" eval --model "$3" --data "$SH/data/$1/labels.csv" --threads "$T" 2>/dev/null |
        awk -F'|' -v d="$1" -v v="$2" '/^\| (knn|gaussian|patchbank|padim) \| [^|]+ \| [0-9.]+ \|/ && !seen[$2]++ {
            gsub(/ /, "", $2); gsub(/ /, "", $4); gsub(/ /, "", $5); print "| " d " | " v " | " $2 " | " $4 " | " $5 " |" }'
}
echo "| dataset | variant | scorer | image AUROC | pixel AUROC |" > "$OUT/table.md"
echo "|---|---|---|---|---|" >> "$OUT/table.md"
: > "$OUT/times.txt"
FA=${FIT_ARGS---gaussian-per-patch}
for d in ${DATASETS:-brain_mri cxr_covidqu lc25000_colon}; do
    L=$SH/data/$d/labels.csv
    t0=$(now); "$DS" fit --backbone "$BB" $FA --threads "$T" --out "$OUT/$d-plain.dsm" "$L" 2>/dev/null
    t1=$(now); echo "$d plain fit $(echo "$t1 - $t0" | bc) s" >> "$OUT/times.txt"
    row "$d" plain "$OUT/$d-plain.dsm" >> "$OUT/table.md"
    for keep in 1 "$K"; do
        t0=$(now)
        for i in 0 1 2 3; do
            "$DS" fit --backbone "$BB" $FA --threads "$T" --shard $i/4 --shard-keep "$keep" \
                --out "$OUT/$d-k$keep-p$i.dsm" "$L" 2>/dev/null
        done
        t1=$(now)
        "$DS" merge --threads "$T" --out "$OUT/$d-k$keep.dsm" "$OUT/$d-k$keep"-p?.dsm 2>/dev/null
        t2=$(now)
        echo "$d N=4 keep $keep: 4 part fits $(echo "$t1 - $t0" | bc) s, merge $(echo "$t2 - $t1" | bc) s" >> "$OUT/times.txt"
        row "$d" "N=4 keep $keep" "$OUT/$d-k$keep.dsm" >> "$OUT/table.md"
    done
done
cat "$OUT/table.md" "$OUT/times.txt"
