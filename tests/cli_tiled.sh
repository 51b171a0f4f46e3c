#!/usr/bin/env bash
# `score --tile` / `eval --tile` end to end on the synthetic demo data
# (128 px images) and the tiny random DINOv2 of the fixtures at --size 56:
# usage errors, a tile at least as large as the image gives exactly the
# whole-image scores (one tile, the same computation), tiled maps of the
# image's size, eval's report noting the tiling. The stitching itself is
# tested against per-tile scoring in tests/test_tiled.c.
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_tiled demo
run() { # run NAME CMD args...
    local p=$1; shift
    "$CLI" "$@" >"$TMP/$p.out" 2>"$TMP/$p.err"
    rc=$?
}
lines() { wc -l <"$1" | tr -d ' '; }
# scores.csv without the ms column (the last)
no_ms() { sed 's/,[^,]*$//' "$1"; }

"$MAKE_DATA" "$TMP/data" >/dev/null 2>&1 || { echo "FAIL cannot make the demo data"; exit 1; }
"$CLI" fit --backbone "$VIT" --size 56 --scorer knn,patchbank --out "$TMP/m.dsm" "$TMP/data/labels.csv" \
    >/dev/null 2>"$TMP/fit.err" || { echo "FAIL fit: $(cat "$TMP/fit.err")"; exit 1; }
IMGS="$TMP/data/test/anomaly"

run small score --model "$TMP/m.dsm" --tile 8 "$IMGS"
check "a --tile below 14 is a usage error (status 2)" test "$rc" = 2
run ov score --model "$TMP/m.dsm" --tile 64 --overlap 0.99 "$IMGS"
check "an --overlap above 0.95 is a usage error (status 2)" test "$rc" = 2
run feats score --model "$TMP/m.dsm" --tile 64 --features "$TMP/none.npy"
check "--tile with --features is one error line (status 1)" test "$rc" = 1 -a "$(lines "$TMP/feats.err")" = 1

run whole score --model "$TMP/m.dsm" --out "$TMP/whole.csv" "$IMGS"
run one score --model "$TMP/m.dsm" --tile 128 --out "$TMP/one.csv" "$IMGS"
check "a tile as large as the image gives the whole-image scores exactly" \
    test "$rc" = 0 -a "$(no_ms "$TMP/whole.csv" | md5sum)" = "$(no_ms "$TMP/one.csv" | md5sum)"
run tiled score --model "$TMP/m.dsm" --tile 64 --overlap 0.5 --maps "$TMP/maps" --out "$TMP/tiled.csv" "$IMGS"
check "score --tile 64 --overlap 0.5 succeeds" test "$rc" = 0
n_img=$(ls "$IMGS" | wc -l)
check "one row per image" test "$(($(lines "$TMP/tiled.csv") - 1))" = "$n_img"
check "the tiled scores differ from the whole-image ones" \
    test "$(no_ms "$TMP/whole.csv" | md5sum)" != "$(no_ms "$TMP/tiled.csv" | md5sum)"
npy=$(ls "$TMP/maps"/*.npy | head -1)
check "the tiled map has the image's size (128 x 128 float32)" \
    test -n "$npy" -a "$(head -c 128 "$npy" | grep -ac "'shape': (128, 128)")" = 1
check "and an overlay is written" test -n "$(ls "$TMP/maps"/*_overlay.png 2>/dev/null | head -1)"

run shtile score --model "$TMP/m.dsm" --tile 64 --stride-shift "$IMGS"
check "--stride-shift with --tile is one error line" test "$rc" = 1 -a "$(lines "$TMP/shtile.err")" = 1
run shift score --model "$TMP/m.dsm" --stride-shift --maps "$TMP/smaps" --out "$TMP/shift.csv" "$IMGS"
check "score --stride-shift succeeds with one row per image" \
    test "$rc" = 0 -a "$(($(lines "$TMP/shift.csv") - 1))" = "$n_img"
check "its patch-bank scores differ from the plain ones, its knn scores do not" \
    test "$(no_ms "$TMP/whole.csv" | cut -d, -f1-2 | md5sum)" = "$(no_ms "$TMP/shift.csv" | cut -d, -f1-2 | md5sum)" \
    -a "$(no_ms "$TMP/whole.csv" | md5sum)" != "$(no_ms "$TMP/shift.csv" | md5sum)"
npy=$(ls "$TMP/smaps"/*.npy | head -1)
check "the shifted map has the image's size (128 x 128)" \
    test -n "$npy" -a "$(head -c 128 "$npy" | grep -ac "'shape': (128, 128)")" = 1

run eval eval --model "$TMP/m.dsm" --data "$TMP/data/labels.csv" --tile 64 --out "$TMP/report"
check "eval --tile succeeds and writes the report" test "$rc" = 0 -a -f "$TMP/report/report.json"
check "the report says the images were tiled" test -n "$(grep -l 'Tiled scoring' "$TMP/report/report.json")"
check "and gives a pixel AUROC" test -n "$(grep -E '"pixel_auroc":[[:space:]]*[0-9]' "$TMP/report/report.json")"
run evsh eval --model "$TMP/m.dsm" --data "$TMP/data/labels.csv" --stride-shift --out "$TMP/report_shift"
check "eval --stride-shift succeeds and says so in the report" \
    test "$rc" = 0 -a -n "$(grep -l 'Shifted scoring' "$TMP/report_shift/report.json" 2>/dev/null)"

finish
