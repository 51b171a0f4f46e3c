#!/usr/bin/env bash
# SIGINT and SIGTERM in the middle of fit, score --maps, eval and preprocess
# (issue 11):
# the process dies of the signal (status 128 + n), leaves no temp file, and
# the output that existed before is intact; no half-written output appears.
# The signal comes from outside at several delays, so some runs are hit
# while features are computed, some while outputs are written, and a run
# that finished first must have written complete outputs; at least one run
# per command must have been interrupted. (Slides: tests/test_wsi_shared.c,
# SIGINT then --resume. The library-level cases: tests/test_atomic.c.)
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_signals demo
set -m # job control: background jobs get SIGINT (a non-interactive shell makes them ignore it)
no_temps() { [ -z "$(find "$TMP" -name '*.tmp.*' -o -name '*.part.*')" ]; }

"$MAKE_DATA" "$TMP/data" 80 20 20 >/dev/null 2>&1 || { echo "FAIL cannot make the demo data"; exit 1; }
FIT=(fit --backbone "$VIT" --size 224 --scorer knn,patchbank "$TMP/data/labels.csv")
"$CLI" "${FIT[@]}" --out "$TMP/good.dsm" >/dev/null 2>"$TMP/fit0.err" || { echo "FAIL fit: $(cat "$TMP/fit0.err")"; exit 1; }

# interrupt NAME SIGNAL DELAY cmd...: runs the command, sends the signal after DELAY s; status in $rc
interrupt() {
    local name=$1 sig=$2 delay=$3; shift 3
    "$CLI" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    sleep "$delay"
    kill -s "$sig" "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
}
# died_or_done RC N: the run died of signal N or finished normally
died_or_done() { [ "$1" = $((128 + $2)) ] || [ "$1" = 0 ]; }

for cmd in fit score eval preprocess; do
    hit=0
    for run in "INT 2 0.3" "INT 2 1" "TERM 15 0.6" "INT 2 2.5"; do
        set -- $run
        sig=$1 num=$2 delay=$3
        tag="$cmd-$sig-$delay"
        case $cmd in
        fit)
            cp "$TMP/good.dsm" "$TMP/model.dsm"
            interrupt "$tag" "$sig" "$delay" "${FIT[@]}" --out "$TMP/model.dsm"
            if [ "$rc" = 0 ]; then
                check "$tag: finished before the signal: the new model loads" "$CLI" info "$TMP/model.dsm" >/dev/null
            else
                check "$tag: the model that was there before is intact" cmp -s "$TMP/good.dsm" "$TMP/model.dsm"
            fi
            ;;
        score)
            echo "previous scores" >"$TMP/scores.csv"
            rm -rf "$TMP/maps"
            interrupt "$tag" "$sig" "$delay" score --model "$TMP/good.dsm" --out "$TMP/scores.csv" --maps "$TMP/maps" \
                --recursive "$TMP/data/test"
            if [ "$rc" = 0 ]; then
                check "$tag: finished before the signal: 41 lines of scores" test "$(wc -l <"$TMP/scores.csv")" = 41
            else
                check "$tag: the scores.csv that was there before is intact" \
                    test "$(cat "$TMP/scores.csv")" = "previous scores"
            fi
            ;;
        eval)
            rm -rf "$TMP/report" && mkdir -p "$TMP/report" && echo "previous report" >"$TMP/report/report.html"
            interrupt "$tag" "$sig" "$delay" eval --model "$TMP/good.dsm" --data "$TMP/data/labels.csv" --out "$TMP/report"
            if [ "$rc" = 0 ]; then
                check "$tag: finished before the signal: report.json written" test -s "$TMP/report/report.json"
            else
                check "$tag: the report.html that was there before is intact" \
                    test "$(cat "$TMP/report/report.html")" = "previous report"
            fi
            ;;
        preprocess)
            rm -rf "$TMP/prep"
            interrupt "$tag" "$sig" "$delay" preprocess --out "$TMP/prep" --size 448 --stain-norm clahe --recursive "$TMP/data"
            if [ "$rc" = 0 ]; then
                check "$tag: finished before the signal: 140 images written" \
                    test "$(find "$TMP/prep" -name '*.png' | wc -l)" = 140
            else # all or nothing: the parts are renamed only at the end
                check "$tag: no image published" test -z "$(find "$TMP/prep" -name '*.png' 2>/dev/null)"
            fi
            ;;
        esac
        check "$tag: exits by the signal (status $((128 + num))) or finished (0); got $rc" died_or_done "$rc" "$num"
        check "$tag: leaves no temp file" no_temps
        [ "$rc" != 0 ] && hit=$((hit + 1))
    done
    check "$cmd: at least one of the 4 runs was interrupted ($hit were)" test "$hit" -ge 1
done

finish
