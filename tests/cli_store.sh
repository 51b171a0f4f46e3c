#!/usr/bin/env bash
# The feature store of `dinoscope fit` (include/dinoscope/store.h) on the
# synthetic demo data (tools/make_demo_data.c) and the tiny random DINOv2 of
# the fixtures (--size 112): a fit through --work-dir and a refit of the kept
# store write the same model file byte for byte; so does a fit on the same
# features as two .npy files (`extract` of each half) and as one; a fit
# killed after 3 committed batches (DINOSCOPE_TEST_KILL_AFTER_BATCHES, as
# slide's) resumes from the 12 images in its store and writes the same model
# as the uninterrupted fit; a store of other features is refused naming the
# differing line; bad --features inputs are one clear line. Then peak memory:
# a fit on 410 MB of synthetic .npy features (mapped) stays far below their
# size (GNU time's maximum resident set size), and a plan over --mem-limit is
# refused before anything runs.
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
set -u
CLI=${DS_CLI:?DS_CLI not set}
FIX=${DS_FIXTURES:?DS_FIXTURES not set}
TMP=${DS_TMP:-/tmp}/cli_store
MAKE_DATA=$(dirname "$CLI")/ds_make_demo_data
VIT=$FIX/vit/plain.safetensors
[ -x "$CLI" ] || { echo "SKIP: no CLI binary at $CLI"; exit 77; }
[ -x "$MAKE_DATA" ] || { echo "SKIP: no demo-data tool at $MAKE_DATA (build target ds_make_demo_data)"; exit 77; }
rm -rf "$TMP" && mkdir -p "$TMP" || exit 1
"$MAKE_DATA" "$TMP/data" >/dev/null 2>&1 || { echo "FAIL cannot make the demo data"; exit 1; }

pass=0 fail=0
check() { # check "sentence" command...
    local descr=$1; shift
    if "$@"; then pass=$((pass + 1)); echo "ok   $descr"; else fail=$((fail + 1)); echo "FAIL $descr"; fi
}
FIT=("$CLI" fit --backbone "$VIT" --size 112 --scorer knn,gaussian,patchbank,padim --coreset 0.25 --batch 4)

# the normal training images of labels.csv (filename,split,label,maskfile), in order
awk -F, -v d="$TMP/data" 'NR > 1 && $2 == "train" && $3 == 0 {print d "/" $1}' "$TMP/data/labels.csv" >"$TMP/train.txt"
n_train=$(wc -l <"$TMP/train.txt")
mapfile -t TRAIN <"$TMP/train.txt"

"${FIT[@]}" --out "$TMP/a.dsm" --work-dir "$TMP/W" "$TMP/data/labels.csv" 2>"$TMP/a.err"
check "fit through --work-dir succeeds and prints its plan" \
    grep -q "plan: expected peak" "$TMP/a.err"
check "the finished store is kept, with all $n_train images" \
    grep -qx "rows=$n_train" "$TMP/W/progress.txt"
"${FIT[@]}" --out "$TMP/b.dsm" --features "$TMP/W" 2>"$TMP/b.err"
check "fit --features STORE writes the same model file" cmp -s "$TMP/a.dsm" "$TMP/b.dsm"

half=$((n_train / 2))
"$CLI" extract --backbone "$VIT" --size 112 --out "$TMP/h1.npy" "${TRAIN[@]:0:half}" 2>/dev/null
"$CLI" extract --backbone "$VIT" --size 112 --out "$TMP/h2.npy" "${TRAIN[@]:half}" 2>/dev/null
"$CLI" extract --backbone "$VIT" --size 112 --out "$TMP/all.npy" "${TRAIN[@]}" 2>/dev/null
"${FIT[@]}" --out "$TMP/c.dsm" --features "$TMP/h1.npy" "$TMP/h2.npy" 2>"$TMP/c.err"
"${FIT[@]}" --out "$TMP/d.dsm" --features "$TMP/all.npy" 2>"$TMP/d.err"
check "fit --features a.npy b.npy equals the fit on their concatenation" cmp -s "$TMP/c.dsm" "$TMP/d.dsm"
check "... and the fit on the images" cmp -s "$TMP/c.dsm" "$TMP/a.dsm"

DINOSCOPE_TEST_KILL_AFTER_BATCHES=3 "${FIT[@]}" --out "$TMP/e.dsm" --work-dir "$TMP/K" "$TMP/data/labels.csv" \
    >/dev/null 2>&1
rc=$?
check "a fit killed after 3 batches dies by SIGKILL (137, got $rc) and writes no model" \
    test "$rc" = 137 -a ! -e "$TMP/e.dsm"
check "its store holds the 12 images of the 3 committed batches" grep -qx "rows=12" "$TMP/K/progress.txt"
"${FIT[@]}" --out "$TMP/e.dsm" --work-dir "$TMP/K" "$TMP/data/labels.csv" 2>"$TMP/e.err"
check "the rerun resumes from them" grep -q "resumed: 12 of $n_train images" "$TMP/e.err"
check "and writes the same model as the uninterrupted fit" cmp -s "$TMP/e.dsm" "$TMP/a.dsm"

"$CLI" fit --backbone "$VIT" --size 126 --out "$TMP/f.dsm" --work-dir "$TMP/K" "$TMP/data/labels.csv" 2>"$TMP/f.err"
rc=$?
check "a --work-dir holding other features is refused naming the line (size=)" \
    sh -c "test $rc = 1 && grep -q 'size=' '$TMP/f.err' && test \$(wc -l <'$TMP/f.err') -le 6"
"${FIT[@]}" --out "$TMP/g.dsm" --work-dir "$TMP/new" "$TMP/data/labels.csv" >/dev/null 2>&1
rm -f "$TMP/new/progress.txt"
printf 'inputs_done=3\nrows=3\ncomplete=0\n' >"$TMP/new/progress.txt"
"${FIT[@]}" --out "$TMP/g.dsm" --features "$TMP/new" 2>"$TMP/g.err"
check "an unfinished store given to --features is one clear line" \
    sh -c "test \$(wc -l <'$TMP/g.err') = 1 && grep -q 'not finished' '$TMP/g.err'"
head -c 1000 "$TMP/all.npy" >"$TMP/trunc.npy"
"${FIT[@]}" --out "$TMP/g.dsm" --features "$TMP/trunc.npy" 2>"$TMP/g.err"
check "a truncated .npy is refused before mapping, in one line" \
    sh -c "test \$(wc -l <'$TMP/g.err') = 1 && grep -q 'truncated' '$TMP/g.err'"

# ---- peak memory on 410 MB of features ----
if [ "${DS_SANITIZE:-OFF}" = ON ]; then
    echo "skip the peak-memory checks: AddressSanitizer's shadow memory inflates the resident set"
elif [ -x /usr/bin/time ] && /usr/bin/python3 -c "import numpy" 2>/dev/null; then
    /usr/bin/python3 - "$TMP/big.npy" <<'PY'
import sys
import numpy as np
n, N, D = 12500, 64, 128  # 410 MB of float32, written in pieces (the writer needs no more memory either)
with open(sys.argv[1], "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, N, D)})
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((32, D)).astype(np.float32)
    for i in range(0, n, 500):
        x = centres[rng.integers(0, 32, (500, N))] + 0.3 * rng.standard_normal((500, N, D), dtype=np.float32)
        f.write(x.astype(np.float32).tobytes())
PY
    bytes=$(stat -c %s "$TMP/big.npy")
    /usr/bin/time -v "$CLI" fit --backbone "$VIT" --size 112 --scorer knn,gaussian,patchbank,padim --coreset 0.002 \
        --coreset-method blocked --val-split 0.002 --mem-limit 256M --out "$TMP/big.dsm" --features "$TMP/big.npy" \
        >/dev/null 2>"$TMP/big.err"
    rc=$?
    kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/big.err")
    echo "     peak RSS ${kb:-?} kB for $((bytes / 1048576)) MB of features"
    check "fit --features on $((bytes / 1048576)) MB at --mem-limit 256M succeeds" test "$rc" = 0
    check "its peak RSS (${kb:-?} kB) stays under 256 MB and under half the features' size" \
        test -n "$kb" -a "${kb:-0}" -lt 262144 -a "${kb:-0}" -lt $((bytes / 2048))
    "$CLI" fit --backbone "$VIT" --size 112 --scorer patchbank --coreset 1 --mem-limit 100M --out "$TMP/h.dsm" \
        --features "$TMP/big.npy" 2>"$TMP/h.err"
    rc=$?
    check "a fit planned over --mem-limit (a full bank of 410 MB at 100M) is refused before it starts" \
        sh -c "test $rc = 1 && grep -q 'more than --mem-limit' '$TMP/h.err' && test ! -e '$TMP/h.dsm'"
    rm -f "$TMP/big.npy"
else
    echo "skip the peak-memory checks: needs /usr/bin/time (Debian package time) and /usr/bin/python3 with numpy"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
