#!/usr/bin/python3
"""Slice-wise (--context 0) against 2.5D (--context 1) volume scoring on the
synthetic brain_mri volumes of tests/fixtures/make_volume_fixtures.py --measure
(docs/volume.md). Synthetic lesions in volumes stacked from 2D slices: NOT a
clinical benchmark.

    /usr/bin/python3 tests/fixtures/make_volume_fixtures.py --measure DIR ../shared
    /usr/bin/python3 bench/volume_auroc.py DIR build/dinoscope BACKBONE [fit options...]

Fits `dinoscope volume fit` on DIR/train_*.nii.gz for each context, scores every
DIR/test_*.nii.gz and reports, per context:
  volume AUROC: volume score (max over slices) of the lesion vs the normal volumes;
  slice AUROC:  slice scores, positive = slices holding mask voxels, negative =
                every other slice of every test volume;
  pixel AUROC:  the map.nii.gz voxels against the masks (normal volumes: all 0),
                read with nibabel; also per lesion size.
AUROC = the Mann-Whitney statistic with ties counted half (scipy.stats.rankdata),
as sklearn's roc_auc_score.
"""
import glob
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
from scipy.stats import rankdata


def auroc(pos, neg):
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    r = rankdata(np.concatenate([pos, neg]))
    return (r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def slice_scores(path, col):
    rows = [l.strip().split(",") for l in open(path)]
    i = rows[0].index(col)
    return np.array([float(r[i]) for r in rows[1:]])


def main():
    data, cli, backbone = sys.argv[1:4]
    extra = sys.argv[4:]
    out = os.path.join(data, "runs")
    os.makedirs(out, exist_ok=True)
    train = sorted(glob.glob(os.path.join(data, "train_*.nii.gz")))
    tests = sorted(p for p in glob.glob(os.path.join(data, "test_*.nii.gz")) if not p.endswith("_mask.nii.gz"))
    print("%d training volumes, %d test volumes, backbone %s, options %s" % (len(train), len(tests), backbone,
                                                                          " ".join(extra)))
    for context in (0, 1):
        model = os.path.join(out, "ctx%d.dsm" % context)
        subprocess.run([cli, "volume", "fit", "--backbone", backbone, "--context", str(context), "--out", model]
                       + extra + train, check=True, stderr=subprocess.DEVNULL)
        vol, lab, sl_pos, sl_neg, px_pos, px_neg = [], [], [], [], [], []
        by_size = {}
        for t in tests:
            name = os.path.basename(t)[: -len(".nii.gz")]
            d = os.path.join(out, "ctx%d_%s" % (context, name))
            r = subprocess.run([cli, "volume", "score", "--model", model, "--context", str(context), "--out", d, t],
                               check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            s = slice_scores(os.path.join(d, "slices.csv"), "patchbank")
            m = nib.load(os.path.join(d, "map.nii.gz")).get_fdata()  # [i, j, k]
            mp = t.replace(".nii.gz", "_mask.nii.gz")
            mask = nib.load(mp).get_fdata() > 0 if os.path.exists(mp) else np.zeros(m.shape, bool)
            lesion_slices = mask.any(axis=(0, 1))
            vol.append(s.max())
            lab.append(mask.any())
            sl_pos += list(s[lesion_slices])
            sl_neg += list(s[~lesion_slices])
            px_pos.append(m[mask])
            px_neg.append(m[~mask])
            if mask.any():
                frac = mask[:, :, lesion_slices].mean()  # lesion area share of its slices
                by_size.setdefault(int(name.split("_")[-1]) % 4, []).append((m, mask, frac))
        vol, lab = np.array(vol), np.array(lab)
        pos_all, neg_all = np.concatenate(px_pos), np.concatenate(px_neg)
        print("context %d: volume AUROC %.4f, slice AUROC %.4f (%d lesion / %d other slices), pixel AUROC %.4f"
              % (context, auroc(vol[lab], vol[~lab]), auroc(sl_pos, sl_neg), len(sl_pos), len(sl_neg),
                 auroc(pos_all, neg_all)))
        normal_px = np.concatenate([px_neg[i] for i in range(len(tests)) if not lab[i]])
        for size, items in sorted(by_size.items()):
            p = np.concatenate([m[mask] for m, mask, _ in items])
            fr = np.mean([f for _, _, f in items])
            print("  lesion size class %d (%.2f%% of its slices' area): pixel AUROC vs normal volumes %.4f"
                  % (size, 100 * fr, auroc(p, normal_px)))


if __name__ == "__main__":
    main()
