#!/usr/bin/python3
"""The scale benchmark of issue 12 (docs/scale.md): dinoscope `fit --features`
on the reference workload (n images x 1369 patches x 768 dims, features from
bench/scale/make_features.py) at several sizes, and anomalib's recipe
(bench/scale/anomalib_recipe.py) at the sizes it handles, side by side.

Usage: /usr/bin/python3 bench/scale/run_scale.py FEATDIR BACKBONE OUTDIR --sizes 50,100,420 \
           [--anomalib 50,100] [--block 16384] [--ratio 0.1] [--mem-limit 4G]
FEATDIR holds feats_0000.npy... of 100 images each (sizes are multiples of
100, or below 100: the first n images of feats_0000.npy, written to a
smaller file first). BACKBONE: a ViT-B/14-shaped file (make_stub_backbone.py).
Each run goes through GNU time -v: peak RSS, wall, user+sys CPU.
Prints a markdown table and writes OUTDIR/scale.json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def gnu_time(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(["/usr/bin/time", "-v"] + cmd, stdout=f, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    text = open(log).read()
    get = lambda k: float(re.search(k + r": ([\d.]+)", text).group(1))
    return rc, text, {"wall_s": wall, "cpu_s": get("User time \\(seconds\\)") + get("System time \\(seconds\\)"),
                      "peak_rss_bytes": get("Maximum resident set size \\(kbytes\\)") * 1024}


def files_for(featdir, n, out):
    if n % 100 == 0:
        return [os.path.join(featdir, "feats_%04d.npy" % i) for i in range(n // 100)]
    p = os.path.join(out, "first_%d.npy" % n)
    if not os.path.exists(p):
        np.save(p, np.load(os.path.join(featdir, "feats_0000.npy"), mmap_mode="r")[:n])
    return [p]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("featdir"), ap.add_argument("backbone"), ap.add_argument("out")
    ap.add_argument("--sizes", default="50,100"), ap.add_argument("--anomalib", default="")
    ap.add_argument("--block", default="16384"), ap.add_argument("--ratio", default="0.1")
    ap.add_argument("--mem-limit", default="4G"), ap.add_argument("--cli", default=os.path.join(ROOT, "build", "dinoscope"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for n in [int(s) for s in a.sizes.split(",") if s]:
        files = files_for(a.featdir, n, a.out)
        model = os.path.join(a.out, "scale_%d.dsm" % n)
        cmd = [a.cli, "fit", "--backbone", a.backbone, "--size", "518", "--scorer", "patchbank", "--coreset", a.ratio,
               "--coreset-method", "blocked", "--coreset-block", a.block, "--val-split", "0", "--mem-limit",
               a.mem_limit, "-t", "2", "--out", model, "--features"] + files
        rc, text, r = gnu_time(cmd, os.path.join(a.out, "fit_%d.log" % n))
        m = re.search(r"patchbank fitted in ([\d.]+) s", text)
        r.update(tool="dinoscope", n_images=n, n_patches=n * 1369, rc=rc,
                 store_bytes=sum(os.path.getsize(f) for f in files),
                 bank_bytes=os.path.getsize(model) if os.path.exists(model) else 0,
                 coreset_bank_s=float(m.group(1)) if m else None)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if os.path.exists(model):
            os.remove(model)
    for n in [int(s) for s in a.anomalib.split(",") if s]:
        files = files_for(a.featdir, n, a.out)
        rc, text, r = gnu_time(["/usr/bin/python3", os.path.join(HERE, "anomalib_recipe.py"), a.ratio] + files,
                               os.path.join(a.out, "anomalib_%d.log" % n))
        m = re.search(r"greedy_s ([\d.]+) bank_s ([\d.]+) bank_bytes (\d+)", text)
        r.update(tool="anomalib", n_images=n, n_patches=n * 1369, rc=rc,
                 store_bytes=sum(os.path.getsize(f) for f in files),
                 bank_bytes=int(m.group(3)) if m else 0,
                 coreset_bank_s=float(m.group(1)) + float(m.group(2)) if m else None)
        rows.append(r)
        print(json.dumps(r), flush=True)
    json.dump(rows, open(os.path.join(a.out, "scale.json"), "w"), indent=1)
    print("| tool | images | patches | features GB | bank GB | peak RSS GB | coreset+bank s | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tool']} | {r['n_images']} | {r['n_patches']} | {r['store_bytes'] / 1e9:.2f} | "
              f"{r['bank_bytes'] / 1e9:.3f} | {r['peak_rss_bytes'] / 1e9:.2f} | {r['coreset_bank_s']} | "
              f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
