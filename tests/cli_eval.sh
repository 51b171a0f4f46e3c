#!/usr/bin/env bash
# `dinoscope eval` end to end on the synthetic demo data (tools/make_demo_data.c:
# 40 normal training images, 15 normal + 15 anomalous test images with masks)
# and the tiny random DINOv2 of the fixtures (--size 112): exit statuses,
# the labels.csv and MVTec AD layouts, the four report files, --folds,
# --skip-bad, masks of another size, and report.json's figures against an
# independent recomputation from scores.csv (awk: AUROC by counting pairs,
# AP by its definition; scikit-learn too when /usr/bin/python3 has it).
# The metric code itself is tested against sklearn in test_eval/test_report;
# the browser rendering in test_report_browser (plus a --dump-dom check here
# when Chromium is installed).
# Env (set by CTest): DS_CLI, DS_FIXTURES, DS_TMP. Exit 77 = skipped.
. "$(dirname "$0")/shell_lib.sh" cli_eval demo
run() { # run NAME args... : stdout/stderr to files, status in $rc
    local p=$1; shift
    "$CLI" eval "$@" >"$TMP/$p.out" 2>"$TMP/$p.err"
    rc=$?
}
# "name": value pairs of report.json's scorers (cJSON_Print puts one per line):
# prints "scorer field value" lines
json_fields() {
    awk '/"scorers":/ {in_sc = 1}
         in_sc && /"name":/ {gsub(/[",]/, "", $2); name = $2}
         in_sc && /"(image_auroc|average_precision|f1_max|pixel_auroc|aupro)":/ && name != "" && !seen[name $1]++ {
             f = $1; gsub(/[":]/, "", f); v = $2; gsub(/,/, "", v); print name, f, v }
         /"timing_ms":/ && !/^\t\t\t/ {in_sc = 0}' "$1"
}
field() { json_fields "$1" | awk -v s="$2" -v f="$3" '$1 == s && $2 == f {print $3}'; }
# column of a scores.csv header name
col() { head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1; }
# AUROC by its definition: P(s_anomalous > s_normal) + 0.5 P(equal), all pairs
awk_auroc() {
    awk -F, -v c="$(col "$1" "$2")" 'NR > 1 { if ($2 == 1) p[np++] = $c; else n[nn++] = $c }
        END { s = 0; for (i = 0; i < np; i++) for (j = 0; j < nn; j++) s += (p[i] > n[j]) + 0.5 * (p[i] == n[j]);
              printf "%.15f\n", s / (np * nn) }' "$1"
}
# AP = sum over distinct thresholds (descending) of (R_k - R_{k-1}) P_k
awk_ap() {
    local c; c=$(col "$1" "$2")
    tail -n +2 "$1" | awk -F, -v c="$c" '{print $c, $2}' | sort -g -r -k1,1 |
        awk '{ s[NR] = $1; l[NR] = $2; P += $2 }
             END { tp = fp = 0; ap = 0; r_prev = 0
                   for (i = 1; i <= NR; i++) { tp += l[i]; fp += 1 - l[i]
                       if (i == NR || s[i + 1] != s[i]) { r = tp / P; ap += (r - r_prev) * tp / (tp + fp); r_prev = r } }
                   printf "%.15f\n", ap }'
}
close_to() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= t) }'; }

# --- data and model ------------------------------------------------------
"$MAKE_DATA" "$TMP/data" >/dev/null 2>&1 || { echo "FAIL cannot make the demo data"; exit 1; }
"$CLI" fit --backbone "$VIT" --size 112 --scorer all --out "$TMP/model.dsm" "$TMP/data/labels.csv" >/dev/null 2>"$TMP/fit.err" ||
    { echo "FAIL fit: $(cat "$TMP/fit.err")"; exit 1; }

# --- usage and errors ----------------------------------------------------
run help --help
check "--help exits 0 and shows the usage" test "$rc" = 0 -a -n "$(grep -l 'usage: dinoscope eval' "$TMP/help.out")"
run nodata --model "$TMP/model.dsm"
check "a missing --data is a usage error (status 2)" test "$rc" = 2
run folds1 --model "$TMP/model.dsm" --data "$TMP/data/labels.csv" --folds 1
check "--folds 1 is a usage error (status 2)" test "$rc" = 2
run badopt --model "$TMP/model.dsm" --data "$TMP/data/labels.csv" --bogus 3
check "an unknown option is a usage error (status 2)" test "$rc" = 2
run nomodel --model "$TMP/missing.dsm" --data "$TMP/data/labels.csv"
check "a missing model file: status 1, one line naming it" \
    test "$rc" = 1 -a "$(wc -l <"$TMP/nomodel.err")" = 1 -a -n "$(grep -l 'missing.dsm' "$TMP/nomodel.err")"
mkdir -p "$TMP/empty"
run nolayout --model "$TMP/model.dsm" --data "$TMP/empty" --out "$TMP/r_nolayout"
check "a folder that is neither layout: status 1 with a message saying so" \
    test "$rc" = 1 -a -n "$(grep -l 'neither a labels.csv nor an MVTec' "$TMP/nolayout.err")"
check "a failed run writes no report" test ! -e "$TMP/r_nolayout/report.json"

# --- labels.csv ------------------------------------------------------------
R=$TMP/r_csv
run csv --model "$TMP/model.dsm" --data "$TMP/data/labels.csv" --out "$R"
check "labels.csv layout: status 0" test "$rc" = 0
check "labels.csv layout: detected, 15 normal + 15 anomalous test images, 15 masks" \
    grep -q 'labels.csv layout: 30 test images (15 normal, 15 anomalous, 15 with masks)' "$TMP/csv.err"
check "the report folder holds exactly report.json, report.md, scores.csv, report.html" \
    test "$(ls -A "$R" | sort | tr '\n' ' ')" = "report.html report.json report.md scores.csv "
check "stdout shows the results table" grep -q '^| Method | Backbone | Image AUROC | Pixel AUROC | AUPRO | F1-max | Inference ms/img |' "$TMP/csv.out"
check "scores.csv: a header and one row per test image" test "$(wc -l <"$R/scores.csv")" = 31
for s in knn gaussian patchbank; do
    check "report.json: $s's image AUROC equals the pairwise count over scores.csv (1e-9)" \
        close_to "$(field "$R/report.json" $s image_auroc)" "$(awk_auroc "$R/scores.csv" $s)" 1e-9
    check "report.json: $s's average precision equals its definition over scores.csv (1e-9)" \
        close_to "$(field "$R/report.json" $s average_precision)" "$(awk_ap "$R/scores.csv" $s)" 1e-9
done
check "report.json: patchbank has pixel AUROC and AUPRO in (0.5, 1]" \
    awk -v a="$(field "$R/report.json" patchbank pixel_auroc)" -v b="$(field "$R/report.json" patchbank aupro)" \
    'BEGIN { exit !(a > 0.5 && a <= 1 && b > 0.5 && b <= 1) }'
check "report.json: knn (no maps) has null pixel figures" grep -q '"pixel_auroc":	null' "$R/report.json"
check "report.json: the model's stored threshold is evaluated" grep -q '"stored_threshold":	{' "$R/report.json"
if /usr/bin/python3 -c "import sklearn" 2>/dev/null; then
    /usr/bin/python3 - "$R/scores.csv" "$R/report.json" >"$TMP/sk.out" 2>&1 <<'EOF'
import csv, json, sys
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
rows = list(csv.DictReader(open(sys.argv[1])))
rep = json.load(open(sys.argv[2]))
y = np.array([int(r["label"]) for r in rows])
ok = True
for sc in rep["scorers"]:
    s = np.array([float(r[sc["name"]]) for r in rows], dtype=np.float32).astype(np.float64)
    p, rc, _ = precision_recall_curve(y, s)
    f1 = np.max(np.where(p + rc > 0, 2 * p * rc / np.maximum(p + rc, 1e-300), 0))
    for name, ref in (("image_auroc", roc_auc_score(y, s)), ("average_precision", average_precision_score(y, s)),
                      ("f1_max", f1)):
        if abs(sc[name] - ref) > 1e-6:
            ok = False
            print(sc["name"], name, sc[name], ref)
print("match" if ok else "differ")
EOF
    check "report.json: every scorer's AUROC, AP and F1-max equal sklearn's on scores.csv (1e-6)" grep -qx match "$TMP/sk.out"
else
    echo "skip sklearn cross-check: /usr/bin/python3 has no sklearn"
fi
check "report.html: ROC and PR curves of 3 scorers and embedded gallery PNGs" \
    test "$(grep -o 'class="roc-curve"' "$R/report.html" | wc -l)" = 3 -a \
         "$(grep -o 'class="pr-curve"' "$R/report.html" | wc -l)" = 3 -a \
         "$(grep -o 'src="data:image/png;base64,' "$R/report.html" | wc -l)" -ge 6

# --- MVTec AD layout (the same images) ------------------------------------
M=$TMP/mvtec
mkdir -p "$M/train/good" "$M/test/good" "$M/test/blob" "$M/ground_truth/blob"
cp "$TMP"/data/train/normal/*.png "$M/train/good/"
cp "$TMP"/data/test/normal/*.png "$M/test/good/"
cp "$TMP"/data/test/anomaly/*.png "$M/test/blob/"
cp "$TMP"/data/masks/*_mask.png "$M/ground_truth/blob/"
RM=$TMP/r_mvtec
run mvtec --model "$TMP/model.dsm" --data "$M" --out "$RM"
check "MVTec layout: status 0, detected, 15 masks found as ground_truth/<defect>/<name>_mask.png" \
    test "$rc" = 0 -a -n "$(grep -l 'mvtec layout: 30 test images (15 normal, 15 anomalous, 15 with masks)' "$TMP/mvtec.err")"
for f in image_auroc pixel_auroc aupro; do
    check "MVTec layout: patchbank's $f equals the labels.csv run's (same images)" \
        close_to "$(field "$RM/report.json" patchbank $f)" "$(field "$R/report.json" patchbank $f)" 1e-12
done
check "MVTec layout: scores.csv names the defect type" grep -q ',1,blob,' "$RM/scores.csv"

# a mask at twice the size: resized back with nearest neighbour, same figures
if /usr/bin/python3 -c "import PIL" 2>/dev/null; then
    m0=$(ls "$M"/ground_truth/blob/*_mask.png | head -1)
    /usr/bin/python3 -c "
import sys; from PIL import Image
im = Image.open(sys.argv[1]); im.resize((im.width * 2, im.height * 2), Image.NEAREST).save(sys.argv[1])" "$m0"
    run mvtec2 --model "$TMP/model.dsm" --data "$M" --out "$TMP/r_mvtec2"
    check "a mask of another size: status 0 and a note that it was resized with nearest neighbour" \
        test "$rc" = 0 -a -n "$(grep -l 'resized with nearest neighbour' "$TMP/r_mvtec2/report.json")"
    check "a 2x mask resized back gives the same pixel AUROC" \
        close_to "$(field "$TMP/r_mvtec2/report.json" patchbank pixel_auroc)" "$(field "$R/report.json" patchbank pixel_auroc)" 1e-12
else
    echo "skip resized-mask check: /usr/bin/python3 has no PIL"
fi

# --- cross-validation --------------------------------------------------------
run folds --model "$TMP/model.dsm" --data "$TMP/data/labels.csv" --folds 3 --out "$TMP/r_folds"
check "--folds 3: status 0 with progress per fold on stderr" test "$rc" = 0 -a "$(grep -c 'fold [123]/3' "$TMP/folds.err")" = 9
check "--folds 3: report.json has a 3-fold block with mean and std for each scorer" \
    test "$(grep -c '"folds":	3' "$TMP/r_folds/report.json")" = 3
check "--folds 3: report.md has the cross-validation table" grep -q '## Cross-validation' "$TMP/r_folds/report.md"
check "--folds 3: the test-split figures are unchanged" \
    close_to "$(field "$TMP/r_folds/report.json" patchbank image_auroc)" "$(field "$R/report.json" patchbank image_auroc)" 1e-12

# --- two scorers with maps (patchbank and PaDiM) --------------------------------
if "$CLI" fit --backbone "$VIT" --size 112 --scorer patchbank,padim --out "$TMP/model_padim.dsm" \
        "$TMP/data/labels.csv" >/dev/null 2>"$TMP/fit_padim.err"; then
    run padim --model "$TMP/model_padim.dsm" --data "$TMP/data/labels.csv" --folds 2 --out "$TMP/r_padim"
    check "patchbank + padim: status 0" test "$rc" = 0
    for s in patchbank padim; do
        check "patchbank + padim: $s has pixel AUROC and AUPRO" \
            awk -v a="$(field "$TMP/r_padim/report.json" $s pixel_auroc)" -v b="$(field "$TMP/r_padim/report.json" $s aupro)" \
            'BEGIN { exit !(a > 0 && a <= 1 && b > 0 && b <= 1) }'
    done
    check "patchbank + padim: the pixel figures of patchbank equal the 3-scorer model's (same maps)" \
        close_to "$(field "$TMP/r_padim/report.json" patchbank pixel_auroc)" "$(field "$R/report.json" patchbank pixel_auroc)" 1e-12
    check "patchbank + padim: per-fold pixel figures for both (2 folds)" \
        test "$(grep -c 'fold [12]/2 .*pixel AUROC' "$TMP/padim.err")" = 4
else
    echo "skip padim checks: this fit has no padim scorer ($(head -1 "$TMP/fit_padim.err"))"
fi

# --- a bad image ---------------------------------------------------------------
cp "$TMP/data/labels.csv" "$TMP/data/labels_bad.csv"
head -c 200 "$TMP/data/test/normal/good_000.png" >"$TMP/data/test/normal/truncated.png"
echo "test/normal/truncated.png,test,0," >>"$TMP/data/labels_bad.csv"
run bad --model "$TMP/model.dsm" --data "$TMP/data/labels_bad.csv" --out "$TMP/r_bad"
check "a truncated test image: status 1, an error naming it, no report" \
    test "$rc" = 1 -a -n "$(grep -l 'truncated.png' "$TMP/bad.err")" -a ! -e "$TMP/r_bad/report.json"
run skip --model "$TMP/model.dsm" --data "$TMP/data/labels_bad.csv" --out "$TMP/r_skip" --skip-bad
check "--skip-bad: status 3, a report of the 30 readable images with a note" \
    test "$rc" = 3 -a "$(wc -l <"$TMP/r_skip/scores.csv")" = 31 -a -n "$(grep -l 'skipped (--skip-bad)' "$TMP/r_skip/report.json")"

# --- the page in a browser (DOM only; pixels: test_report_browser) -----------
if [ -x /usr/bin/chromium ]; then
    prof=$(mktemp -d)
    timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$prof" \
        --window-size=1200,3000 --dump-dom "file://$(cd "$R" && pwd)/report.html" >"$TMP/dom.html" 2>/dev/null
    rm -rf "$prof"
    check "Chromium parses report.html: 3 ROC paths, 3 PR paths, the gallery images as data URIs" \
        test "$(grep -o '<path class="roc-curve"' "$TMP/dom.html" | wc -l)" = 3 -a \
             "$(grep -o '<path class="pr-curve"' "$TMP/dom.html" | wc -l)" = 3 -a \
             "$(grep -o '<img class="overlay"[^>]*src="data:image/png;base64,' "$TMP/dom.html" | wc -l)" -ge 6
else
    echo "skip browser check: no /usr/bin/chromium (Debian package 'chromium')"
fi

finish
