#!/usr/bin/python3
"""Realistic patch features for the coreset benchmark (bench_nn.py), made from
real chest X-rays with the small CNN backbone shipped in ../shared/models.

We have no DINOv2 weights on the benchmark machine, and the greedy coreset's
speed depends on how the points cluster (the triangle-inequality pruning does
little on isotropic Gaussian noise), so random vectors would not be a fair
test. These are mid-level MobileNetV2 features of the cxr_covidqu training
images, PatchCore-style (Roth et al. 2022: several levels, locally aggregated,
on one grid): features.6 (32 ch, stride 8, 2x2 mean-pooled), features.10
(64 ch) and features.13 (96 ch) at stride 16, features.16 (160 ch, stride 32,
bilinear to stride 16) -> 352 channels, mapped to D=384 by a fixed random
orthonormal embedding (distances unchanged). Input 592x592 -> a 37x37 grid =
1369 patches per image, as DINOv2 ViT-S/14 gives at 518.

Usage: /usr/bin/python3 bench/make_bench_features.py OUT.npy [N_PATCHES]
  (default 500000; writes [N_PATCHES, 384] float32; deterministic; ~1-2 min
  on 2 cores). Needs ../shared (skips with exit 77 when it is absent).
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("DS_SHARED", os.path.join(HERE, "..", "..", "shared"))
SIZE = 592


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        raw = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(raw[a:b], dtype=np.float32).reshape(v["shape"]).copy())
    return out, hdr["__metadata__"]


def conv_same(x, w, b, stride, groups=1):
    """TF 'SAME' padding (the model's convention, see its .md)."""
    k = w.shape[-1]
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        out = -(-n // stride)
        tot = max((out - 1) * stride + k - n, 0)
        pads += [tot // 2, tot - tot // 2]
    return F.conv2d(F.pad(x, pads), w, b, stride=stride, groups=groups)


def mobilenet_taps(x, W, blocks):
    taps = {}
    x = F.relu6(conv_same(x, W["features.0.0.weight"], W["features.0.0.bias"], 2))
    for idx, t, cin, cout, s, res in blocks:
        p = "features.%d.conv." % idx
        h = x
        if t == 1:
            h = F.relu6(conv_same(h, W[p + "0.0.weight"], W[p + "0.0.bias"], s, groups=h.shape[1]))
            h = conv_same(h, W[p + "1.weight"], W[p + "1.bias"], 1)
        else:
            h = F.relu6(conv_same(h, W[p + "0.0.weight"], W[p + "0.0.bias"], 1))
            h = F.relu6(conv_same(h, W[p + "1.0.weight"], W[p + "1.0.bias"], s, groups=h.shape[1]))
            h = conv_same(h, W[p + "2.weight"], W[p + "2.bias"], 1)
        x = x + h if res else h
        taps[idx] = x
        if idx == 16:
            break
    return taps


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path = sys.argv[1]
    n_patches = int(sys.argv[2]) if len(sys.argv) > 2 else 500000
    model = os.path.join(SHARED, "models", "mobilenet_v2_imagenet.safetensors")
    img_dir = os.path.join(SHARED, "data", "cxr_covidqu", "train", "normal")
    if not os.path.exists(model) or not os.path.isdir(img_dir):
        print("SKIP: ../shared (models, data) not found")
        sys.exit(77)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    W, meta = load_safetensors(model)
    blocks = json.loads(meta["blocks"])
    rng = np.random.default_rng(0)
    embed = np.linalg.qr(rng.standard_normal((384, 352)))[0].astype(np.float32)  # [384,352], orthonormal columns
    files = sorted(os.listdir(img_dir))
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(n_patches, 384))
    done = 0
    with torch.no_grad():
        for fn in files:
            if done >= n_patches:
                break
            img = Image.open(os.path.join(img_dir, fn)).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            x = (x - 0.5) / 0.5
            t = mobilenet_taps(x, W, blocks)
            g = SIZE // 16
            f = torch.cat([F.avg_pool2d(t[6], 2), t[10], t[13],
                           F.interpolate(t[16], size=(g, g), mode="bilinear", align_corners=False)], 1)
            f = f[0].reshape(352, -1).T.numpy() @ embed.T  # [1369, 384]
            n = min(len(f), n_patches - done)
            out[done:done + n] = f[:n]
            done += n
    out.flush()
    if done < n_patches:
        sys.exit("only %d patches available" % done)
    print("wrote %s [%d, 384]" % (out_path, n_patches))


if __name__ == "__main__":
    main()
