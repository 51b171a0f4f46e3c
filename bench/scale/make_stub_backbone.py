#!/usr/bin/python3
"""A stand-in for DINOv2 ViT-B/14 at 518 (37 x 37 patches x 768 dims) for the
scale benchmark, which fits on precomputed features (`fit --features`): fit
only hashes the backbone file and checks the features' shape against its
grid, so a 4-block ViT of width 768 with random weights (56 MB, the tensor
names of tests/fixtures/vit/plain.safetensors) does. Not for extracting.

Usage: /usr/bin/python3 bench/scale/make_stub_backbone.py OUT.safetensors
"""
import json
import struct
import sys

import numpy as np

W = 768
shapes = {"cls_token": [1, 1, W], "pos_embed": [1, 65, W], "mask_token": [1, W],
          "patch_embed.proj.weight": [W, 3, 14, 14], "patch_embed.proj.bias": [W],
          "norm.weight": [W], "norm.bias": [W]}
for b in range(4):
    p = f"blocks.{b}."
    shapes.update({p + "norm1.weight": [W], p + "norm1.bias": [W], p + "attn.qkv.weight": [3 * W, W],
                   p + "attn.qkv.bias": [3 * W], p + "attn.proj.weight": [W, W], p + "attn.proj.bias": [W],
                   p + "ls1.gamma": [W], p + "norm2.weight": [W], p + "norm2.bias": [W],
                   p + "mlp.fc1.weight": [W, W], p + "mlp.fc1.bias": [W], p + "mlp.fc2.weight": [W, W],
                   p + "mlp.fc2.bias": [W], p + "ls2.gamma": [W]})
rng = np.random.default_rng(0)
hdr, blobs, off = {"__metadata__": {"format": "pt", "generator": "bench/scale/make_stub_backbone.py"}}, [], 0
for k, s in shapes.items():
    a = (rng.standard_normal(s) * 0.02).astype("<f4")
    if k.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
        a[...] = 1
    hdr[k] = {"dtype": "F32", "shape": s, "data_offsets": [off, off + a.nbytes]}
    blobs.append(a.tobytes())
    off += a.nbytes
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs:
        f.write(b)
