#!/usr/bin/python3
"""The reference workload of issue 12 as realistic features on disk: n images
x 1369 patches (DINOv2 ViT-B/14 at 518: a 37 x 37 grid) x 768 dims, float32,
from REAL features: MobileNetV2 (../shared/models) patch features of the
../shared training images (`dinoscope extract`, [n_src, 28*28, 128]), not
isotropic noise, so that the coreset sees the clustering of real patches.

Synthetic image j is made from source image s = j % n_src:
  1. the 28 x 28 x 128 grid rolled by a random (dy, dx) in [-2, 2]^2 patches
     (the same tissue seen at another position);
  2. upsampled to 37 x 37 (bilinear, align_corners=False, as torch);
  3. a random per-channel gain 1 + 0.1 N(0, 1) (another scanner / staining);
  4. mapped to 768 dims by one fixed Gaussian matrix R [128, 768] / sqrt(128)
     (Johnson-Lindenstrauss: distances kept up to a few percent);
  5. plus N(0, (0.05 sigma_c)^2) per value, sigma_c the channel's std over the
     sources mapped, so the 768-d points are not confined to a 128-d subspace.
Deterministic (seed 12). Writes OUTDIR/feats_0000.npy, ... of CHUNK images each.

Usage: /usr/bin/python3 bench/scale/make_features.py OUTDIR N_IMAGES SRC.npy [SRC.npy ...]
"""
import os
import sys

import numpy as np

CHUNK = 100
G_IN, G_OUT, D_OUT = 28, 37, 768


def bilinear_matrix(n_in, n_out):
    """torch F.interpolate(mode='bilinear', align_corners=False) along one axis."""
    A = np.zeros((n_out, n_in))
    for o in range(n_out):
        x = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(x)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        f = x - i0
        A[o, i0] += 1 - f
        A[o, i1] += f
    return A.astype(np.float32)


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    src = np.concatenate([np.load(p, mmap_mode="r") for p in sys.argv[3:]], 0)
    n_src, N, C = src.shape
    assert N == G_IN * G_IN, f"expected {G_IN}x{G_IN} patches, got {N}"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(12)
    R = (rng.standard_normal((C, D_OUT)) / np.sqrt(C)).astype(np.float32)
    A = bilinear_matrix(G_IN, G_OUT)
    sigma = (src[: min(n_src, 200)].reshape(-1, C) @ R).std(0).astype(np.float32)  # [768]
    for c0 in range(0, n, CHUNK):
        m = min(CHUNK, n - c0)
        path = os.path.join(out, "feats_%04d.npy" % (c0 // CHUNK))
        if os.path.exists(path):
            continue
        x = np.empty((m, G_OUT * G_OUT, D_OUT), np.float32)
        for i in range(m):
            j = c0 + i
            g = np.asarray(src[j % n_src], np.float32).reshape(G_IN, G_IN, C)
            dy, dx = rng.integers(-2, 3, 2)
            g = np.roll(g, (dy, dx), (0, 1))
            up = np.einsum("oi,ijc,pj->opc", A, g, A, optimize=True).reshape(-1, C)
            up *= 1 + 0.1 * rng.standard_normal(C).astype(np.float32)
            x[i] = up @ R
            x[i] += rng.standard_normal((G_OUT * G_OUT, D_OUT), dtype=np.float32) * (0.05 * sigma)
        tmp = path + ".tmp.npy"
        np.save(tmp, x)
        os.replace(tmp, path)
        print(path, flush=True)


if __name__ == "__main__":
    main()
