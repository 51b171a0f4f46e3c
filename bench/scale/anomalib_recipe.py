#!/usr/bin/python3
"""anomalib's PatchCore memory-bank recipe, for bench/scale/run_scale.py:
the whole feature matrix in RAM, a random projection with
johnson_lindenstrauss_min_dim(n, eps=0.9) components (anomalib's
SparseRandomProjection(eps=0.9); dense Gaussian here, same cost class), then
KCenterGreedy exactly as anomalib.models.components.sampling.k_center_greedy:
one pairwise_distance of every point to the new centre per selected point,
torch.minimum, argmax. Then the bank = the selected rows.

Usage: /usr/bin/python3 bench/scale/anomalib_recipe.py RATIO FEATS.npy [FEATS.npy ...]
Prints: n_points, proj_dims, seconds for load, projection, greedy, bank.
"""
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

ratio = float(sys.argv[1])
torch.set_num_threads(2)  # as dinoscope's -t 2 (Debian's torch starts with 1 here)
t0 = time.time()
emb = torch.from_numpy(np.concatenate([np.load(p) for p in sys.argv[2:]], 0).reshape(-1, 768))  # all in RAM
t1 = time.time()
n = emb.shape[0]
k_dims = int(4 * math.log(n) / (0.9 ** 2 / 2 - 0.9 ** 3 / 3))  # sklearn johnson_lindenstrauss_min_dim
g = torch.Generator().manual_seed(0)
proj = torch.randn(768, k_dims, generator=g) / math.sqrt(k_dims)
features = emb @ proj
t2 = time.time()
coreset_size = int(n * ratio)
min_distances = None
idx = int(torch.randint(high=n, size=(1,), generator=g).item())
selected = []
for _ in range(coreset_size):
    distance = F.pairwise_distance(features, features[[idx]], p=2).reshape(-1, 1)
    min_distances = distance if min_distances is None else torch.minimum(min_distances, distance)
    idx = int(torch.argmax(min_distances).item())
    min_distances[idx] = 0
    selected.append(idx)
t3 = time.time()
bank = emb[selected].clone()
t4 = time.time()
print(f"n_points {n} proj_dims {k_dims} load_s {t1 - t0:.1f} project_s {t2 - t1:.1f} greedy_s {t3 - t2:.1f} "
      f"bank_s {t4 - t3:.1f} bank_bytes {bank.numel() * 4}")
