#!/usr/bin/env bash
# Sharded fit vs plain fit on ../shared/data with MobileNetV2 (docs/sharding.md).
# The backbone runs once per dataset (`extract` of the normal training images
# and of the test images); then, from those features, per dataset:
#   plain       dinoscope fit --features train.npy
#   N=4 keep 1  fit --features train.npy --shard I/4 (I = 0..3; each part keeps its whole bank) + merge
#   N=4 keep K  the same with --shard-keep K (each part keeps a greedy coreset of K of its patches)
# each model scores the test features (score --features) and eval --scores
# reports the test-split image AUROC per scorer; wall times of fit and merge.
# Usage: bench/shard_auroc.sh [OUT_DIR] [K]
# Env: DATASETS (default: all three), FIT_ARGS (default: --gaussian-per-patch), THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
DS=${DS:-build/dinoscope}
SH=${DS_SHARED:-../shared}
BB=$SH/models/mobilenet_v2_imagenet.safetensors
OUT=${1:-bench-out/shard}
K=${2:-0.4}
T=${THREADS:-2}
FA=${FIT_ARGS---gaussian-per-patch}
mkdir -p "$OUT"
now() { date +%s.%N; }
el() { echo "$2 - $1" | bc; }
auroc() { # dataset variant model
    "$DS" score --model "$3" --features "$OUT/$1-test.npy" --out "$OUT/$1-$2.csv" $(cat "$OUT/$1-test.txt") 2>/dev/null
    "$DS" eval --model "$3" --data "$SH/data/$1/labels.csv" --scores "$OUT/$1-$2.csv" 2>/dev/null |
        awk -F'|' -v d="$1" -v v="$2" '/^\| (knn|gaussian|patchbank|padim) \| [^|]+ \| [0-9.]+ \|/ && !seen[$2]++ {
            gsub(/ /, "", $2); gsub(/ /, "", $4); printf "| %s | %s | %s | %s |\n", d, v, $2, $4 }'
}
echo "| dataset | variant | scorer | image AUROC |" > "$OUT/table.md"
echo "|---|---|---|---|" >> "$OUT/table.md"
: > "$OUT/times.txt"
for d in ${DATASETS:-brain_mri cxr_covidqu lc25000_colon}; do
    L=$SH/data/$d/labels.csv
    dir=$(dirname "$L")
    awk -F, -v p="$dir" 'NR > 1 && $2 == "train" && $3 == 0 { print p "/" $1 }' "$L" > "$OUT/$d-train.txt"
    awk -F, -v p="$dir" 'NR > 1 && $2 == "test" { print p "/" $1 }' "$L" > "$OUT/$d-test.txt"
    t0=$(now)
    "$DS" extract --backbone "$BB" --threads "$T" --out "$OUT/$d-train.npy" $(cat "$OUT/$d-train.txt") 2>/dev/null
    "$DS" extract --backbone "$BB" --threads "$T" --out "$OUT/$d-test.npy" $(cat "$OUT/$d-test.txt") 2>/dev/null
    t1=$(now); echo "$d: extract $(el "$t0" "$t1") s" >> "$OUT/times.txt"
    F=(--backbone "$BB" $FA --threads "$T" --features "$OUT/$d-train.npy")
    t0=$(now); "$DS" fit "${F[@]}" --out "$OUT/$d-plain.dsm" 2>/dev/null; t1=$(now)
    echo "$d: plain fit $(el "$t0" "$t1") s" >> "$OUT/times.txt"
    auroc "$d" plain "$OUT/$d-plain.dsm" >> "$OUT/table.md"
    for keep in 1 "$K"; do
        t0=$(now)
        for i in 0 1 2 3; do "$DS" fit "${F[@]}" --shard $i/4 --shard-keep "$keep" --out "$OUT/$d-k$keep-p$i.dsm" 2>/dev/null; done
        t1=$(now)
        "$DS" merge --threads "$T" --out "$OUT/$d-k$keep.dsm" "$OUT/$d-k$keep"-p?.dsm 2>/dev/null
        t2=$(now)
        echo "$d: N=4 keep $keep: 4 part fits $(el "$t0" "$t1") s in sequence, merge $(el "$t1" "$t2") s" >> "$OUT/times.txt"
        auroc "$d" "N=4 keep $keep" "$OUT/$d-k$keep.dsm" >> "$OUT/table.md"
    done
    cat "$OUT/table.md" "$OUT/times.txt"
done
