#!/usr/bin/env bash
# `dinoscope volume fit|score` end to end on the committed synthetic volumes
# of tests/fixtures/make_volume_fixtures.py (40 x 40 x 10 NIfTI from
# brain_mri slices, one with a synthetic lesion over slices 3..6; a DICOM
# series): usage errors; the map NIfTI has the input's shape and affine as
# nibabel reads them (expected.txt, written by nibabel; here read from the
# output's header bytes with od, and by nibabel itself when
# /usr/bin/python3 has it); one CSV row per slice; --axis; a DICOM series
# folder; 2.5D. With ../shared's MobileNetV2 (real ImageNet weights): the
# lesion volume and its lesion slices score above the normal volume.
# Synthetic data: not a clinical benchmark.
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_SHARED, DS_TMP. Exit 77 = skipped.
set -u
CLI=${DS_CLI:?DS_CLI not set}
FIX=${DS_FIXTURES:?DS_FIXTURES not set}
SHARED=${DS_SHARED:-}
TMP=${DS_TMP:-/tmp}/cli_volume
VIT=$FIX/vit/plain.safetensors
E2E=$FIX/volume/e2e
[ -x "$CLI" ] || { echo "SKIP: no CLI binary at $CLI"; exit 77; }
rm -rf "$TMP" && mkdir -p "$TMP" || exit 1

pass=0 fail=0
check() {
    local descr=$1; shift
    if "$@"; then pass=$((pass + 1)); echo "ok   $descr"; else fail=$((fail + 1)); echo "FAIL $descr"; fi
}
run() { # run NAME CMD args...
    local p=$1; shift
    "$CLI" "$@" >"$TMP/$p.out" 2>"$TMP/$p.err"
    rc=$?
}
lines() { wc -l <"$1" | tr -d ' '; }
one_line_error() { test "$rc" != 0 -a "$(lines "$TMP/$1.err")" = 1; }

# ---- usage and bad input ----------------------------------------------------
run nomode volume --out "$TMP/x" "$E2E/train_0.nii.gz"
check "a first word other than fit/score is one error line" one_line_error nomode
run noback volume fit --out "$TMP/x.dsm" "$E2E/train_0.nii.gz"
check "volume fit without --backbone is one error line" one_line_error noback
run badaxis volume fit --backbone "$VIT" --axis x --out "$TMP/x.dsm" "$E2E/train_0.nii.gz"
check "--axis x is a usage error (status 2)" test "$rc" = 2
run badfile volume fit --backbone "$VIT" --size 56 --out "$TMP/x.dsm" "$FIX/volume/bad/truncated.nii"
check "a truncated NIfTI is one error line naming it" \
    test "$rc" = 1 -a "$(lines "$TMP/badfile.err")" = 1 -a -n "$(grep truncated.nii "$TMP/badfile.err")"
check "and no model is left behind" test ! -e "$TMP/x.dsm"

# ---- fit and score with the tiny random ViT (structure) ---------------------
run fit volume fit --backbone "$VIT" --size 56 --scorer knn,patchbank --coreset 1 --out "$TMP/m.dsm" \
    "$E2E"/train_*.nii.gz
check "volume fit on 4 normal volumes succeeds" test "$rc" = 0 -a -s "$TMP/m.dsm"
check "it fitted on their 40 slices" test -n "$(grep 'fitting on 40 slices' "$TMP/fit.err")"
run fitopt volume score --model "$TMP/m.dsm" --scorer knn --out "$TMP/o" "$E2E/test_lesion.nii.gz"
check "volume score refuses fitting options (one line)" one_line_error fitopt
run two volume score --model "$TMP/m.dsm" --out "$TMP/o" "$E2E/test_lesion.nii.gz" "$E2E/test_normal.nii.gz"
check "volume score takes one volume" one_line_error two

run score volume score --model "$TMP/m.dsm" --out "$TMP/o" "$E2E/test_lesion.nii.gz"
check "volume score succeeds" test "$rc" = 0
check "slices.csv has a header and one row per slice (10)" test "$(lines "$TMP/o/slices.csv")" = 11
check "volume.json gives the volume score of each scorer" \
    test -n "$(grep '"knn": {"score"' "$TMP/o/volume.json")" -a -n "$(grep '"patchbank": {"score"' "$TMP/o/volume.json")"
# the volume score is the max of the slice column
max_pb=$(awk -F, 'NR > 1 { if ($4 + 0 > m || NR == 2) m = $4 + 0 } END { printf "%.6g", m }' "$TMP/o/slices.csv")
check "the printed volume score is the max over slices ($max_pb)" test -n "$(grep "patchbank=$max_pb" "$TMP/score.out")"
check "a mosaic is written" test -s "$TMP/o/mosaic.png"

# the map's header (uncompressed NIfTI-1: dim at byte 40, srow_x/y/z at 280) against nibabel's values
map_dims=$(gzip -dc "$TMP/o/map.nii.gz" | od -An -t d2 -j 40 -N 8 | xargs)
map_type=$(gzip -dc "$TMP/o/map.nii.gz" | od -An -t d2 -j 70 -N 2 | xargs)
exp_shape=$(awk '/^shape/ { print "3", $2, $3, $4 }' "$E2E/expected.txt")
check "the map has the input's shape ($map_dims) and is float32 (datatype $map_type)" \
    test "$map_dims" = "$exp_shape" -a "$map_type" = 16
srows=$(gzip -dc "$TMP/o/map.nii.gz" | od -An -t f4 -j 280 -N 48 | xargs)
affine_ok=$(awk -v got="$srows" 'BEGIN { n = split(got, g, " ") }
    /^srow/ { for (c = 2; c <= 5; c++) { i++; d = $c - g[i]; if (d < 0) d = -d; if (d > 1e-4) bad = 1 } }
    END { print (n == 12 && i == 12 && !bad) ? "yes" : "no" }' "$E2E/expected.txt")
check "the map's sform equals the input's affine as nibabel reads it" test "$affine_ok" = yes
if /usr/bin/python3 -c "import nibabel" 2>/dev/null; then
    /usr/bin/python3 - "$E2E/test_lesion.nii.gz" "$TMP/o/map.nii.gz" >"$TMP/nib.out" 2>&1 <<'EOF'
import sys
import nibabel as nib
import numpy as np
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
ok = a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4) and b.get_data_dtype() == np.float32
ok = ok and np.isfinite(b.get_fdata()).all() and b.get_fdata().max() > 0
print("shapes", a.shape, b.shape, "max |affine diff|", np.abs(a.affine - b.affine).max())
sys.exit(0 if ok else 1)
EOF
    check "nibabel: the map has the input's shape and affine ($(cat "$TMP/nib.out"))" test $? = 0
else
    echo "skip nibabel's own check: /usr/bin/python3 has no nibabel"
fi

run axis volume score --model "$TMP/m.dsm" --axis j --out "$TMP/oj" "$E2E/test_lesion.nii.gz"
check "--axis j scores the 40 planes across j, the map still in the input's layout" \
    test "$rc" = 0 -a "$(lines "$TMP/oj/slices.csv")" = 41 -a \
    "$(gzip -dc "$TMP/oj/map.nii.gz" | od -An -t d2 -j 40 -N 8 | xargs)" = "$exp_shape"

# ---- DICOM series and 2.5D ----------------------------------------------------
run dcm volume score --model "$TMP/m.dsm" --window-preset brain --out "$TMP/od" "$FIX/volume/series/ct"
check "a DICOM series folder is scored slice by slice (6 rows)" test "$rc" = 0 -a "$(lines "$TMP/od/slices.csv")" = 7
check "with the brain window [0, 79] (volume.json)" test -n "$(grep '"window": \[0, 79\]' "$TMP/od/volume.json")"
run dcm2 volume score --model "$TMP/m.dsm" --out "$TMP/od2" "$FIX/volume/series/two_series"
check "a folder of two series without --series is one error line" one_line_error dcm2
run fit25 volume fit --backbone "$VIT" --size 56 --scorer patchbank --coreset 1 --context 1 --out "$TMP/m25.dsm" \
    "$E2E"/train_*.nii.gz
run score25 volume score --model "$TMP/m25.dsm" --context 1 --out "$TMP/o25" "$E2E/test_lesion.nii.gz"
check "2.5D (--context 1) fit and score succeed" test "$rc" = 0 -a "$(lines "$TMP/o25/slices.csv")" = 11

# ---- lesion ranking with a real backbone (../shared) -----------------------
MB=$SHARED/models/mobilenet_v2_imagenet.safetensors
if [ -n "$SHARED" ] && [ -f "$MB" ]; then
    run mbfit volume fit --backbone "$MB" --scorer patchbank --coreset 1 --out "$TMP/mb.dsm" "$E2E"/train_*.nii.gz
    run mbl volume score --model "$TMP/mb.dsm" --out "$TMP/mbl" "$E2E/test_lesion.nii.gz"
    run mbn volume score --model "$TMP/mb.dsm" --out "$TMP/mbn" "$E2E/test_normal.nii.gz"
    vl=$(sed 's/.*patchbank=//' "$TMP/mbl.out") vn=$(sed 's/.*patchbank=//' "$TMP/mbn.out")
    check "MobileNetV2: the lesion volume scores above the normal one ($vl > $vn)" \
        awk -v a="$vl" -v b="$vn" 'BEGIN { exit !(a > b) }'
    # lesion slices 3..6 (the mask's) against every slice of the normal volume
    lmean=$(awk -F, 'NR > 1 && $1 >= 3 && $1 <= 6 { s += $2; n++ } END { printf "%.6g", s / n }' "$TMP/mbl/slices.csv")
    nmax=$(awk -F, 'NR > 1 { if ($2 + 0 > m) m = $2 + 0 } END { printf "%.6g", m }' "$TMP/mbn/slices.csv")
    check "MobileNetV2: the lesion slices score above every normal slice on average ($lmean > $nmax)" \
        awk -v a="$lmean" -v b="$nmax" 'BEGIN { exit !(a > b) }'
    top=$(awk -F, 'NR > 1 { if ($2 + 0 > m) { m = $2 + 0; k = $1 } } END { print k }' "$TMP/mbl/slices.csv")
    check "MobileNetV2: the lesion volume's top slice ($top) is near the lesion (slices 2..7)" \
        test "$top" -ge 2 -a "$top" -le 7
else
    echo "skip the lesion ranking: no ../shared MobileNetV2 ($MB)"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
