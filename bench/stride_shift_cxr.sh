#!/usr/bin/env bash
# `score --stride-shift` (patch scores of the input and of its copies shifted
# by half a patch, averaged on the twice finer grid) against plain scoring,
# on ../shared/data/cxr_covidqu at its native 256 px with the MobileNetV2 of
# ../shared/models (input 224, stride-32 features: 7 x 7 tokens, shift 16 px).
# Writes the table of docs/tiled.md to $OUT/table.md.
#
#   bash bench/stride_shift_cxr.sh [OUT_DIR]
#
# One model (patch bank, cosine, top1pct, coreset 0.1) fitted on the first
# NFIT normal training images; every test image (150 normal, 150 COVID-19
# with infection masks) scored with --maps, with and without --stride-shift.
# Pixel AUROC over all test pixels (normal images: all-zero masks), and for
# the small lesions (masks under 1% of the image) their pixels against all
# pixels of the normal images; image AUROC from the scores. AUROC = the
# Mann-Whitney statistic, ties half (scipy.stats.rankdata), as sklearn's.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${DS_SHARED:-../shared}
OUT=${1:-/tmp/ds_stride_shift_cxr}
CLI=build/dinoscope
W=$SHARED/models/mobilenet_v2_imagenet.safetensors
NFIT=${NFIT:-50}
D=$SHARED/data/cxr_covidqu
[ -d "$D" ] || { echo "SKIP: no $D"; exit 77; }
mkdir -p "$OUT"
awk -F, -v n="$NFIT" 'NR == 1 || ($2 == "train" && c++ < n)' "$D/labels.csv" | sed "2,\$s|^|$D/|" >"$OUT/train.csv"
awk -F, 'NR > 1 && $2 == "test" { print "'"$D"'/" $1 }' "$D/labels.csv" >"$OUT/test.txt"
[ -f "$OUT/m.dsm" ] || $CLI fit --backbone "$W" --scorer patchbank --coreset 0.1 --val-split 0 --out "$OUT/m.dsm" \
    "$OUT/train.csv" 2>"$OUT/fit.log"
for mode in plain shift; do
    flag=(); [ $mode = shift ] && flag=(--stride-shift)
    [ -f "$OUT/$mode.csv" ] || { s=$(date +%s); $CLI score --model "$OUT/m.dsm" "${flag[@]}" --maps "$OUT/maps_$mode" \
        --out "$OUT/$mode.csv" $(cat "$OUT/test.txt") 2>"$OUT/$mode.log"; echo $(($(date +%s) - s)) >"$OUT/$mode.seconds"; }
done
/usr/bin/python3 - "$D" "$OUT" <<'EOF'
import csv, os, sys
import numpy as np
from PIL import Image
from scipy.stats import rankdata
src, out = sys.argv[1:3]
def auroc(pos, neg):
    r = rankdata(np.concatenate([pos, neg]))
    return (r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
rows = [r for r in csv.DictReader(open(os.path.join(src, "labels.csv"))) if r["split"] == "test"]
masks = {}
for r in rows:
    if r["label"] == "1" and r["maskfile"]:
        masks[r["filename"]] = np.asarray(Image.open(os.path.join(src, r["maskfile"])).convert("L")) > 127
lines = ["| scoring | image AUROC | pixel AUROC | small lesions (<1%): pixel AUROC vs normal pixels, n | "
         "other lesions: pixel AUROC vs normal pixels | score wall s |", "|---|---|---|---|---|---|"]
for mode, desc in (("plain", "whole image, 7 x 7 tokens"), ("shift", "`--stride-shift` (4 shifts, 14 x 14 cells)")):
    sc = {os.path.relpath(r["path"], src): float(r["patchbank"]) for r in csv.DictReader(open(os.path.join(out, mode + ".csv")))}
    pos_img = [sc[r["filename"]] for r in rows if r["label"] == "1"]
    neg_img = [sc[r["filename"]] for r in rows if r["label"] == "0"]
    normal_px, pos_px, neg_px, small_px, big_px, n_small = [], [], [], [], [], 0
    for r in rows:
        stem = os.path.splitext(os.path.basename(r["filename"]))[0]
        m = np.load(os.path.join(out, "maps_" + mode, stem + ".npy"))
        if r["label"] == "0":
            normal_px.append(m.ravel())
            neg_px.append(m.ravel())
            continue
        mk = masks.get(r["filename"])
        if mk is None:
            continue
        pos_px.append(m[mk]); neg_px.append(m[~mk])
        if mk.mean() < 0.01:
            small_px.append(m[mk]); n_small += 1
        else:
            big_px.append(m[mk])
    normal = np.concatenate(normal_px)
    secs = open(os.path.join(out, mode + ".seconds")).read().strip()
    lines.append("| %s | %.4f | %.4f | %s, %d | %.4f | %s |" % (
        desc, auroc(np.array(pos_img), np.array(neg_img)), auroc(np.concatenate(pos_px), np.concatenate(neg_px)),
        "%.4f" % auroc(np.concatenate(small_px), normal) if small_px else "-", n_small,
        auroc(np.concatenate(big_px), normal), secs))
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
