#!/usr/bin/env bash
# fit, score --maps and eval against a full disk: `ulimit -f` (with SIGXFSZ
# ignored, a write past the limit fails with EFBIG exactly where a full
# filesystem fails with ENOSPC). Each command must exit 1 with one line on
# stderr naming the file it could not write, leave no temp file, and leave
# the output that existed before intact. (The library-level cases, the
# slide checkpoint included, are in tests/test_atomic.c.)
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_full_disk demo
# progress lines go to stderr too: the error is the one line saying "cannot"
err_names() { [ "$(grep -c "cannot" "$1")" = 1 ] && grep "cannot" "$1" | grep -qE "$2"; }
no_temps() { [ -z "$(find "$TMP" -name '*.tmp.*' -o -name '.heatmap.*')" ]; }
# full KB: run the command with files limited to that many KB
full() {
    local kb=$1 name=$2; shift 2
    ( trap '' XFSZ; ulimit -f "$kb"; "$CLI" "$@" ) >"$TMP/$name.out" 2>"$TMP/$name.err"
    rc=$?
}

"$MAKE_DATA" "$TMP/data" >/dev/null 2>&1 || { echo "FAIL cannot make the demo data"; exit 1; }
"$CLI" fit --backbone "$VIT" --size 112 --scorer all --out "$TMP/good.dsm" "$TMP/data/labels.csv" >/dev/null 2>"$TMP/fit0.err" ||
    { echo "FAIL fit: $(cat "$TMP/fit0.err")"; exit 1; }

# fit: the model (~60 KB with int8 banks) does not fit in 32 KB; a model was there before
cp "$TMP/good.dsm" "$TMP/model.dsm"
full 32 fit fit --backbone "$VIT" --size 112 --scorer all --out "$TMP/model.dsm" "$TMP/data/labels.csv"
check "fit on a full disk exits 1" test "$rc" = 1
check "fit on a full disk prints one error line naming the model file" err_names "$TMP/fit.err" "model.dsm"
check "the model that was there before is intact" cmp -s "$TMP/good.dsm" "$TMP/model.dsm"
check "fit leaves no temp file" no_temps

# score --maps: the maps and the scores CSV; a scores.csv was there before
echo "previous scores" >"$TMP/scores.csv"
full 8 score score --model "$TMP/good.dsm" --out "$TMP/scores.csv" --maps "$TMP/maps" --recursive "$TMP/data/test"
check "score --maps on a full disk exits 1" test "$rc" = 1
check "score --maps on a full disk prints one error line naming the file" err_names "$TMP/score.err" "maps/|scores.csv"
check "the scores.csv that was there before is intact" test "$(cat "$TMP/scores.csv")" = "previous scores"
check "score leaves no temp file" no_temps

# eval: report.html/.md/.json and scores.csv
mkdir -p "$TMP/report" && echo "previous report" >"$TMP/report/report.html"
full 16 eval eval --model "$TMP/good.dsm" --data "$TMP/data/labels.csv" --out "$TMP/report"
check "eval on a full disk exits 1" test "$rc" = 1
check "eval on a full disk prints one error line naming the file" err_names "$TMP/eval.err" "report/"
check "the report.html that was there before is intact" test "$(cat "$TMP/report/report.html")" = "previous report"
check "eval leaves no temp file" no_temps

for f in fit score eval; do echo "     $f: $(grep cannot "$TMP/$f.err" | head -c 300)"; done
finish
