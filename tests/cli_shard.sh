#!/usr/bin/env bash
# Sharded fits and scores on the synthetic demo data (tools/make_demo_data.c)
# with the tiny random DINOv2 of the fixtures (--size 112): `fit --shard 0/1`
# merged equals a plain fit (scores of every scorer and the thresholds, to
# float tolerance); N = 3 parts merge in any order; explicit --shard-list
# parts merge to the --shard I/N model; `score --shard` parts joined by
# `merge --scores` give the table of one run; incompatible or incomplete
# parts are refused with one line.
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_shard demo
"$MAKE_DATA" "$TMP/data" >/dev/null || exit 1
D=$TMP/data

FIT=(fit --backbone "$VIT" --size 112 --scorer all --gaussian-per-patch --threads 2)
q() { "$CLI" "$@" >"$TMP/last.out" 2>"$TMP/last.err"; }
# the "calibration" objects of a model (thresholds), one line each
thresholds() { "$CLI" info "$1" | grep -E '"(threshold|map_threshold|map_vmax|n_val)":' | tr -d ' \t,'; }
score() { "$CLI" score --model "$1" --out "$2" --recursive "$D/test" 2>/dev/null; }

q "${FIT[@]}" --out "$TMP/plain.dsm" "$D/labels.csv"; check "a plain fit succeeds" test $? -eq 0
q "${FIT[@]}" --shard 0/1 --out "$TMP/p01.dsm" "$D/labels.csv"; check "fit --shard 0/1 succeeds" test $? -eq 0
check "a partial model is a model that info reads, with its shard sections" \
    bash -c "'$CLI' info '$TMP/p01.dsm' | grep -q 'shard/val'"
q merge --out "$TMP/m1.dsm" "$TMP/p01.dsm"; check "merge of one part succeeds" test $? -eq 0
score "$TMP/plain.dsm" "$TMP/plain.csv"; score "$TMP/m1.dsm" "$TMP/m1.csv"
check "the merge of 1 part scores like the plain fit (all scorers, 1e-5)" same_scores "$TMP/plain.csv" "$TMP/m1.csv" 1e-5
thresholds "$TMP/plain.dsm" > "$TMP/plain.thr"; thresholds "$TMP/m1.dsm" > "$TMP/m1.thr"
check "the merge of 1 part has the plain fit's thresholds" cmp -s "$TMP/plain.thr" "$TMP/m1.thr"
check "...and every scorer has one" test "$(grep -c '"threshold":' "$TMP/m1.thr")" -eq 4
# the banks: the merged ones in the parts' representation (int8, fit's
# default; the partials keep f32 for the merge), rows and bytes as the plain fit's
check "the merged banks are the plain fit's representation (int8), rows and bytes" \
    bash -c "diff <('$CLI' info '$TMP/plain.dsm' | grep '^bank of') <('$CLI' info '$TMP/m1.dsm' | grep '^bank of') && '$CLI' info '$TMP/m1.dsm' | grep -q '^bank of patchbank: int8'"
for i in 0 1; do q "${FIT[@]}" --bank f16 --shard $i/2 --out "$TMP/b$i.dsm" "$D/labels.csv"; done
q merge --out "$TMP/mb.dsm" "$TMP/b0.dsm" "$TMP/b1.dsm"
check "parts fitted with --bank f16 merge to f16 banks" \
    bash -c "'$CLI' info '$TMP/mb.dsm' | grep -q '^bank of patchbank: f16' && '$CLI' info '$TMP/mb.dsm' | grep -q '^bank of knn: f16'"
# the blocked coreset: the merge selects from the union as the plain fit selects from the patches
q "${FIT[@]}" --coreset-method blocked --coreset-block 256 --out "$TMP/pbl.dsm" "$D/labels.csv"
q "${FIT[@]}" --coreset-method blocked --coreset-block 256 --shard 0/1 --out "$TMP/bl0.dsm" "$D/labels.csv"
q merge --out "$TMP/mbl.dsm" "$TMP/bl0.dsm"; check "merge with the blocked coreset succeeds" test $? -eq 0
score "$TMP/pbl.dsm" "$TMP/pbl.csv"; score "$TMP/mbl.dsm" "$TMP/mbl.csv"
check "...and one part scores like the plain blocked fit (1e-5)" same_scores "$TMP/pbl.csv" "$TMP/mbl.csv" 1e-5

for i in 0 1 2; do q "${FIT[@]}" --shard $i/3 --out "$TMP/p$i.dsm" "$D/labels.csv" || echo "fit $i/3 failed: $(cat "$TMP/last.err")"; done
q merge --out "$TMP/m3.dsm" "$TMP/p2.dsm" "$TMP/p0.dsm" "$TMP/p1.dsm"; check "3 parts merge in any order" test $? -eq 0
nt=0; for i in 0 1 2; do nt=$((nt + $("$CLI" info "$TMP/p$i.dsm" | awk '/^\t"n_train"/ {gsub(/,/, "", $2); print $2}'))); done
check "the merged model has the parts' training images ($nt)" \
    bash -c "'$CLI' info '$TMP/m3.dsm' | grep -qx \"\$(printf '\t\"n_train\":\t$nt,')\""
q merge --out "$TMP/m3b.dsm" "$TMP/p0.dsm" "$TMP/p1.dsm" "$TMP/p2.dsm"
score "$TMP/m3.dsm" "$TMP/m3.csv"; score "$TMP/m3b.dsm" "$TMP/m3b.csv"
check "the order of the parts on the command line does not matter" same_scores "$TMP/m3.csv" "$TMP/m3b.csv" 0

# without held-out images and with the whole bank, N parts hold exactly the
# plain fit's training set: knn (k-th distance), gaussian (PCA, Ledoit-Wolf),
# padim (pooled moments) and the bank do not depend on the order of the images
"$CLI" "${FIT[@]}" --val-split 0 --coreset 1 --out "$TMP/full.dsm" "$D/labels.csv" 2>/dev/null
for i in 0 1 2; do "$CLI" "${FIT[@]}" --val-split 0 --coreset 1 --shard $i/3 --out "$TMP/f$i.dsm" "$D/labels.csv" 2>/dev/null; done
q merge --out "$TMP/mf.dsm" "$TMP/f0.dsm" "$TMP/f1.dsm" "$TMP/f2.dsm"
score "$TMP/full.dsm" "$TMP/full.csv"; score "$TMP/mf.dsm" "$TMP/mf.csv"
check "3 parts of the whole set (no held-out, full bank) score like the plain fit (1e-4)" same_scores "$TMP/full.csv" "$TMP/mf.csv" 1e-4

# explicit lists: the same split as --shard I/2, given as files
awk -F, -v d="$D" 'NR > 1 && $2 == "train" && $3 == 0 { print d "/" $1 }' "$D/labels.csv" > "$TMP/all.txt"
awk 'NR % 2 == 1' "$TMP/all.txt" > "$TMP/l0.txt"; awk 'NR % 2 == 0' "$TMP/all.txt" > "$TMP/l1.txt"
for i in 0 1; do "$CLI" "${FIT[@]}" --shard $i/2 --out "$TMP/s$i.dsm" "$D/labels.csv" 2>/dev/null
    "$CLI" "${FIT[@]}" --shard-list "$TMP/l$i.txt" --out "$TMP/l$i.dsm" 2>/dev/null; done
q merge --out "$TMP/ms.dsm" "$TMP/s0.dsm" "$TMP/s1.dsm"; q merge --out "$TMP/ml.dsm" "$TMP/l0.dsm" "$TMP/l1.dsm"
check "--shard-list parts merge" test $? -eq 0
score "$TMP/ms.dsm" "$TMP/ms.csv"; score "$TMP/ml.dsm" "$TMP/ml.csv"
check "...to the model of the same split by --shard I/2" same_scores "$TMP/ms.csv" "$TMP/ml.csv" 0

# --features: the parts of one extract's rows merge to the parts of the images
"$CLI" extract --backbone "$VIT" --size 112 --out "$TMP/train.npy" $(cat "$TMP/all.txt") 2>/dev/null
for i in 0 1; do "$CLI" "${FIT[@]}" --features "$TMP/train.npy" --shard $i/2 --out "$TMP/fe$i.dsm" 2>/dev/null; done
q merge --out "$TMP/mfe.dsm" "$TMP/fe0.dsm" "$TMP/fe1.dsm"; check "fit --features --shard parts merge" test $? -eq 0
score "$TMP/mfe.dsm" "$TMP/mfe.csv"
check "...to the model of the same parts of the images (1e-5)" same_scores "$TMP/ms.csv" "$TMP/mfe.csv" 1e-5

# refusals: one line, non-zero
refused() { # refused "pattern" args...
    local pat=$1; shift
    q "$@"; local rc=$?
    [ $rc -ne 0 ] && [ "$(wc -l < "$TMP/last.err")" -le 2 ] && grep -q -- "$pat" "$TMP/last.err" || { cat "$TMP/last.err"; return 1; }
}
check "a missing part is refused" refused "shard 2/3 is missing" merge --out "$TMP/x.dsm" "$TMP/p0.dsm" "$TMP/p1.dsm"
check "a part given twice is refused" refused "both shard 1/3" merge --out "$TMP/x.dsm" "$TMP/p0.dsm" "$TMP/p1.dsm" "$TMP/p1.dsm" "$TMP/p2.dsm"
check "parts of different splits are refused" refused "differ in the fit parameter 'count'" merge --out "$TMP/x.dsm" "$TMP/p0.dsm" "$TMP/s1.dsm"
check "a plain model is not a part" refused "not a partial model" merge --out "$TMP/x.dsm" "$TMP/plain.dsm"
"$CLI" fit --backbone "$VIT" --size 140 --scorer all --gaussian-per-patch --shard 1/2 --out "$TMP/z1.dsm" "$D/labels.csv" 2>/dev/null
check "parts with other preprocessing are refused" refused "differ in the preprocessing" merge --out "$TMP/x.dsm" "$TMP/s0.dsm" "$TMP/z1.dsm"
"$CLI" "${FIT[@]}" --knn-k 3 --shard 1/2 --out "$TMP/k1.dsm" "$D/labels.csv" 2>/dev/null
"$CLI" "${FIT[@]}" --patch-k 2 --shard 1/2 --out "$TMP/pk1.dsm" "$D/labels.csv" 2>/dev/null
check "parts with another patch_k are refused" refused "patchbank's parameter 'patch_k'" merge --out "$TMP/x.dsm" "$TMP/s0.dsm" "$TMP/pk1.dsm"
# 12 parts of ~3 images: smaller than knn's k = 5, each part's own knn uses its images; the merge k = 5
for i in $(seq 0 11); do "$CLI" "${FIT[@]}" --val-split 0 --coreset 1 --shard $i/12 --out "$TMP/w$i.dsm" "$D/labels.csv" 2>/dev/null; done
q merge --out "$TMP/m12.dsm" "$TMP"/w?.dsm "$TMP"/w1?.dsm; check "12 parts smaller than knn's k merge" test $? -eq 0
score "$TMP/m12.dsm" "$TMP/m12.csv"
check "...to the plain fit of the whole set (1e-4)" same_scores "$TMP/full.csv" "$TMP/m12.csv" 1e-4
check "parts with other scorer parameters are refused" refused "fit parameter 'knn_k'" merge --out "$TMP/x.dsm" "$TMP/s0.dsm" "$TMP/k1.dsm"
check "a bad --shard is refused" refused "not I/N" "${FIT[@]}" --shard 3/3 --out "$TMP/x.dsm" "$D/labels.csv"
check "flow cannot be fitted in shards" refused "flow cannot" fit --backbone "$VIT" --size 112 --scorer flow --shard 0/2 --out "$TMP/x.dsm" "$D/labels.csv"
for i in 0 1; do "$CLI" "${FIT[@]}" --shard-keep 0.01 --shard $i/2 --out "$TMP/t$i.dsm" "$D/labels.csv" 2>/dev/null; done
check "too small a kept bank is refused at the merge" refused "larger --shard-keep" merge --out "$TMP/x.dsm" "$TMP/t0.dsm" "$TMP/t1.dsm"
check "no output is left by a refused merge" test ! -e "$TMP/x.dsm"

# scores: parts of `score --shard` joined by `merge --scores`
for i in 0 1 2; do "$CLI" score --model "$TMP/plain.dsm" --shard $i/3 --out "$TMP/sc$i.csv" --recursive "$D/test" 2>/dev/null; done
q merge --scores --out "$TMP/joined.csv" "$TMP/sc0.csv" "$TMP/sc1.csv" "$TMP/sc2.csv"; check "merge --scores succeeds" test $? -eq 0
check "the joined table equals one run's (rows in order, every column but ms)" same_scores "$TMP/plain.csv" "$TMP/joined.csv" 0
"$CLI" score --model "$TMP/plain.dsm" --out "$TMP/lab.csv" "$D/labels.csv" 2>/dev/null
for i in 0 1; do "$CLI" score --model "$TMP/plain.dsm" --shard $i/2 --out "$TMP/lab$i.csv" "$D/labels.csv" 2>/dev/null; done
q merge --scores --out "$TMP/labj.csv" "$TMP/lab0.csv" "$TMP/lab1.csv"
check "...also over a labels.csv (label column)" same_scores "$TMP/lab.csv" "$TMP/labj.csv" 0
"$CLI" fit --backbone "$VIT" --size 112 --scorer knn --out "$TMP/knn.dsm" "$D/labels.csv" 2>/dev/null
"$CLI" score --model "$TMP/knn.dsm" --shard 1/3 --out "$TMP/knn1.csv" --recursive "$D/test" 2>/dev/null
check "score tables of different models are refused" refused "different columns" merge --scores --out "$TMP/x.csv" "$TMP/sc0.csv" "$TMP/knn1.csv"
check "...leaving no output" test ! -e "$TMP/x.csv"

# eval --scores: the report from the parts' tables equals the one from one table and the
# image figures of eval on the images (the tables' columns 1-6 of report.md: no timings)
for i in 0 1 2; do "$CLI" score --model "$TMP/plain.dsm" --shard $i/3 --out "$TMP/ev$i.csv" "$D/labels.csv" 2>/dev/null; done
figs() { grep -E '^\| (knn|gaussian|patchbank|padim) \| [^|]+ \| [0-9.]+ \|' "$1" | cut -d'|' -f2,3,4,7 | sort -u; }
"$CLI" eval --model "$TMP/plain.dsm" --data "$D/labels.csv" --scores "$TMP/ev2.csv,$TMP/ev0.csv,$TMP/ev1.csv" >"$TMP/ev3.md" 2>/dev/null
check "eval --scores over 3 parts (any order) succeeds" test $? -eq 0
"$CLI" eval --model "$TMP/plain.dsm" --data "$D/labels.csv" --scores "$TMP/lab.csv" >"$TMP/ev1.md" 2>/dev/null
"$CLI" eval --model "$TMP/plain.dsm" --data "$D/labels.csv" >"$TMP/evimg.md" 2>/dev/null
check "...gives the figures of eval --scores over one run's table" cmp -s <(figs "$TMP/ev3.md") <(figs "$TMP/ev1.md")
check "...and the image figures of eval on the images" cmp -s <(figs "$TMP/ev3.md" | cut -d'|' -f1-3) <(figs "$TMP/evimg.md" | cut -d'|' -f1-3)
check "...where there are 4 scorers" test "$(figs "$TMP/ev3.md" | wc -l)" -eq 4
check "eval --scores with a part missing is refused" refused "no row for the test image" \
    eval --model "$TMP/plain.dsm" --data "$D/labels.csv" --scores "$TMP/ev0.csv,$TMP/ev1.csv"
check "eval --scores with a part twice is refused" refused "scored twice" \
    eval --model "$TMP/plain.dsm" --data "$D/labels.csv" --scores "$TMP/ev0.csv,$TMP/ev1.csv,$TMP/ev1.csv"
check "eval --scores of another model's table is refused" refused "has no column 'gaussian'" \
    eval --model "$TMP/plain.dsm" --data "$D/labels.csv" --scores "$TMP/knn1.csv"
check "slide --shard is checked too" refused "not I/N" slide --model "$TMP/plain.dsm" --out "$TMP/sl" --shard 1/1 x.svs

finish
