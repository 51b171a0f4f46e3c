#!/usr/bin/env bash
# Tiled scoring at native resolution (score/eval --tile) against whole-image
# scoring, on ../shared/data/cxr_covidqu upsampled 2x (256 -> 512 px, PIL
# bicubic; masks nearest) as a stand-in for large radiographs, with the
# MobileNetV2 of ../shared/models (input 224). Writes the table of
# docs/tiled.md to $OUT/table.md.
#
#   bash bench/tiled_cxr.sh [OUT_DIR]        (about 10 minutes on 2 cores)
#
# Rows (same NFIT normal training images for every model, patch bank, top1pct):
#   whole:  fit on the 512 px images resized to 224; eval the same way
#   tiled:  fit on 224 px crops of the first NTILE of those 512 px images
#           (3 x 3 grid, origins 0/224/288), coreset ratio chosen so that
#           the bank has as many patches as the whole model's (3920), eval with
#           --tile 224 --overlap 0.5 (4 x 4 tiles)
#   with ROW3=1 also: the whole model with --tile 224 (scale mismatch; another
#           ~15 min on a busy 2-core machine)
# Small lesions: anomalous test images whose mask covers < 1% of the image,
# image AUROC against all normal test images, from scores.csv (by its
# definition: P(s_anomalous > s_normal) + P(equal) / 2 over all pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${DS_SHARED:-../shared}
OUT=${1:-/tmp/ds_tiled_cxr}
CLI=build/dinoscope
W=$SHARED/models/mobilenet_v2_imagenet.safetensors
NFIT=${NFIT:-50}
NTILE=${NTILE:-25} # the greedy coreset costs patches x bank: 25 x 9 tiles keep the fit near 6 min
[ -d "$SHARED/data/cxr_covidqu" ] || { echo "SKIP: no $SHARED/data/cxr_covidqu"; exit 77; }
mkdir -p "$OUT"

/usr/bin/python3 - "$SHARED/data/cxr_covidqu" "$OUT" "$NFIT" "$NTILE" <<'EOF'
import csv, os, sys
import numpy as np
from PIL import Image
src, out, nfit, ntile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
up = os.path.join(out, "up")
rows = list(csv.DictReader(open(os.path.join(src, "labels.csv"))))
train = [r for r in rows if r["split"] == "train"][:nfit]
test = [r for r in rows if r["split"] == "test"]
def save(rel, resample):
    dst = os.path.join(up, rel)
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        im = Image.open(os.path.join(src, rel))
        im.resize((im.width * 2, im.height * 2), resample).save(dst)
    return dst
for r in train + test:
    save(r["filename"], Image.BICUBIC)
    if r["maskfile"]:
        save(r["maskfile"], Image.NEAREST)
with open(os.path.join(up, "labels.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["filename", "split", "label", "maskfile"])
    w.writeheader()
    for r in train + test:
        w.writerow({k: r[k] for k in w.fieldnames})
with open(os.path.join(up, "train.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["filename", "split", "label", "maskfile"])
    w.writeheader()
    for r in train:
        w.writerow({k: r[k] for k in w.fieldnames})
# 224 px crops of the training images for the tile model
tiles = os.path.join(out, "tiles")
os.makedirs(tiles, exist_ok=True)
for r in train[:ntile]:
    im = Image.open(os.path.join(up, r["filename"]))
    stem = os.path.splitext(os.path.basename(r["filename"]))[0]
    for y in (0, 224, 288):
        for x in (0, 224, 288):
            im.crop((x, y, x + 224, y + 224)).save(os.path.join(tiles, "%s_%d_%d.png" % (stem, y, x)))
# lesion sizes
small = []
for r in test:
    if r["label"] == "1" and r["maskfile"]:
        m = np.asarray(Image.open(os.path.join(src, r["maskfile"])).convert("L")) > 0
        if m.mean() < 0.01:
            small.append(os.path.join(up, r["filename"]))
open(os.path.join(out, "small.txt"), "w").write("\n".join(small) + ("\n" if small else ""))
print("prepared %d train, %d test images, %d small-lesion anomalies" % (len(train), len(test), len(small)))
EOF

t() { local s=$(date +%s.%N); "$@"; echo "$(echo "$(date +%s.%N) - $s" | bc)" > "$OUT/.last_s"; }
COMMON=(--scorer patchbank --val-split 0 --threads 2 --batch 8)
[ -f "$OUT/whole.dsm" ] || t $CLI fit --backbone "$W" "${COMMON[@]}" --coreset 0.1 --out "$OUT/whole.dsm" "$OUT/up/train.csv" 2>"$OUT/fit_whole.log"
[ -f "$OUT/tiled.dsm" ] || t $CLI fit --backbone "$W" "${COMMON[@]}" --coreset "$(echo "scale=6; 3920 / ($NTILE * 9 * 784) + 0.000001" | bc)" --out "$OUT/tiled.dsm" "$OUT/tiles" 2>"$OUT/fit_tiled.log"

ev() { # ev NAME MODEL [eval flags]
    local name=$1 model=$2; shift 2
    if [ ! -f "$OUT/$name/report.json" ]; then
        t $CLI eval --model "$model" --data "$OUT/up/labels.csv" --out "$OUT/$name" --threads 2 --batch 8 "$@" \
            >"$OUT/$name.md" 2>"$OUT/$name.log"
        cp "$OUT/.last_s" "$OUT/$name.seconds"
    fi
}
ev whole "$OUT/whole.dsm"
ev tiled "$OUT/tiled.dsm" --tile 224 --overlap 0.5
[ -z "${ROW3:-}" ] || ev tiled_wholemodel "$OUT/whole.dsm" --tile 224 --overlap 0.5

/usr/bin/python3 - "$OUT" <<'EOF'
import csv, json, os, sys
def roc_auc_score(y, p):
    pos = [b for a, b in zip(y, p) if a == 1]
    neg = [b for a, b in zip(y, p) if a == 0]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
out = sys.argv[1]
small = set(l.strip() for l in open(os.path.join(out, "small.txt")) if l.strip())
rows = [("whole", "whole image 512 -> 224, model fitted on whole images"),
        ("tiled", "--tile 224 --overlap 0.5 (16 tiles), model fitted on 224 px tiles"),
        ("tiled_wholemodel", "--tile 224 --overlap 0.5, model fitted on whole images")]
lines = ["| scoring | image AUROC | pixel AUROC | AUPRO@0.3 | small lesions (<1% area): image AUROC, n | eval wall s |",
         "|---|---|---|---|---|---|"]
for name, desc in rows:
    if not os.path.exists(os.path.join(out, name, "report.json")):
        continue
    rep = json.load(open(os.path.join(out, name, "report.json")))
    s = rep["scorers"][0] if "scorers" in rep else rep["results"][0]
    fig = s.get("test", s)
    def g(k):
        v = fig.get(k)
        return "-" if v is None else "%.4f" % v
    sc = list(csv.DictReader(open(os.path.join(out, name, "scores.csv"))))
    col = [k for k in sc[0].keys() if k.startswith("patchbank")][0]
    y, p = [], []
    for r in sc:
        lab = int(r["label"])
        if lab == 0 or r["path"] in small:
            y.append(lab)
            p.append(float(r[col]))
    n_small = sum(y)
    auc_small = "%.4f" % roc_auc_score(y, p) if 0 < n_small < len(y) else "-"
    secs = rep["resources"]["wall_s"] if "wall_s" in rep.get("resources", {}) else \
        open(os.path.join(out, name + ".seconds")).read().strip()
    lines.append("| %s | %s | %s | %s | %s, %d | %.0f |" % (desc, g("image_auroc"), g("pixel_auroc"), g("aupro"),
                                                         auc_small, n_small, float(secs)))
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
