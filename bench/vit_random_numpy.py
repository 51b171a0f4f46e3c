#!/usr/bin/python3
"""Random DINOv2 ViT-S/14 or ViT-B/14 weights of the real sizes with numpy
only (for machines without torch; bench/bench_vit.py's `weights` needs it):
the official state_dict names and shapes (pos_embed 37x37 + CLS, no
registers, depth 12, MLP 4x), the same scaling rules as bench_vit.py's
random_state_dict (Linear weights ~ 1/sqrt(fan_in), LayerScale ~ 0.1,
norm weights ~ 1), numpy's generator so other values. Speed does not
depend on the values.

Usage: /usr/bin/python3 bench/vit_random_numpy.py vits14|vitb14 OUT.safetensors [SEED]
"""
import json
import os
import struct
import sys

import numpy as np


def state_dict(D, seed, depth=12, patch=14, grid=37):
    g = np.random.default_rng(seed)
    sd = {"cls_token": g.standard_normal((1, 1, D)),
          "pos_embed": 0.2 * g.standard_normal((1, 1 + grid * grid, D)),
          "mask_token": g.standard_normal((1, D)),
          "patch_embed.proj.weight": g.standard_normal((D, 3, patch, patch)) / np.sqrt(3 * patch * patch),
          "patch_embed.proj.bias": 0.02 * g.standard_normal(D)}
    lin = {"attn.qkv": (3 * D, D), "attn.proj": (D, D), "mlp.fc1": (4 * D, D), "mlp.fc2": (D, 4 * D)}
    for i in range(depth):
        p = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            sd[p + n + ".weight"] = 1.0 + 0.1 * g.standard_normal(D)
            sd[p + n + ".bias"] = 0.02 * g.standard_normal(D)
        for n, (o, k) in lin.items():
            sd[p + n + ".weight"] = g.standard_normal((o, k)) / np.sqrt(k)
            sd[p + n + ".bias"] = 0.02 * g.standard_normal(o)
        for n in ("ls1", "ls2"):
            sd[p + n + ".gamma"] = 0.1 + 0.05 * g.standard_normal(D)
    sd["norm.weight"] = 1.0 + 0.1 * g.standard_normal(D)
    sd["norm.bias"] = 0.02 * g.standard_normal(D)
    return sd


def write_safetensors(path, sd, metadata):
    """safetensors by hand (also bench_vit.py's writer): u64 LE header
    length, JSON header {name: {dtype, shape, data_offsets [begin, end)
    relative to the data}}, padded with spaces to a multiple of 8, then the
    raw little-endian data. Values: numpy arrays or CPU torch tensors."""
    arrs = {name: np.ascontiguousarray(np.asarray(t), dtype="<f4") for name, t in sd.items()}
    header, off = {"__metadata__": metadata}, 0
    for name, a in arrs.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for a in arrs.values():
            f.write(a.tobytes())
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    D = {"vits14": 384, "vitb14": 768}[sys.argv[1]]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    write_safetensors(sys.argv[2], state_dict(D, seed), {"format": "pt", "generator": "bench/vit_random_numpy.py",
                                                         "model": sys.argv[1]})
