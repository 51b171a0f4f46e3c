#!/usr/bin/env bash
# The demo: fit, score and report on what the repo ships (synthetic images
# from tools/make_demo_data.c and the tiny random DINOv2 of the test
# fixtures), so it runs on a fresh machine with no downloads. Outputs go to
# demo-out/. With ../shared present, see README for runs on real data.
set -euo pipefail
cd "$(dirname "$0")/.."
DS=build/dinoscope
OUT=demo-out
BACKBONE=tests/fixtures/vit/plain.safetensors   # D=128, 4 blocks, random weights

rm -rf "$OUT"
build/ds_make_demo_data "$OUT/data"
echo "demo: fit on $OUT/data (train normals), backbone $BACKBONE"
$DS fit --backbone "$BACKBONE" --size 112 --scorer all --out "$OUT/model.dsm" "$OUT/data/labels.csv"
$DS info "$OUT/model.dsm" | head -20
echo "demo: score the test images"
$DS score --model "$OUT/model.dsm" --maps "$OUT/maps" --out "$OUT/scores.csv" --recursive "$OUT/data/test"
head -5 "$OUT/scores.csv"
if $DS eval --help > /dev/null 2>&1; then
  echo "demo: evaluate"
  $DS eval --model "$OUT/model.dsm" --data "$OUT/data/labels.csv" --out "$OUT/report"
  echo "demo: report in $OUT/report/ (report.html, report.md, report.json, scores.csv)"
fi
echo "demo: done; see $OUT/"
