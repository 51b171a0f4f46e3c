#!/usr/bin/python3
"""PyTorch CPU baseline for bench/bench_cnn.c: the same patch features in
torch 1.13 / torchvision 0.14 (Debian's /usr/bin/python3), same threads.

    /usr/bin/python3 bench/bench_cnn.py [--threads 2] [--runs 7] [--size 224]

  mobilenet_v2     torchvision mobilenet_v2() (random weights; the speed does
                   not depend on them), features[0..13], block 13 resized
                   bilinearly to block 6's grid and concatenated.
  wide_resnet50_2  torchvision wide_resnet50_2() stem..layer3 and PatchCore's
                   embedding (tests/fixtures/make_cnn_fixtures.py
                   patchcore_embed, after amazon-science/patchcore-inspection).
Prints one JSON line per model: median and min ms per image (batch 1,
torch.no_grad, after one warm-up run).
"""
import argparse
import importlib.util
import json
import os
import time

import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("fx", os.path.join(HERE, "..", "tests", "fixtures", "make_cnn_fixtures.py"))
fx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fx)


def timed(fn, x, runs):
    with torch.no_grad():
        fn(x)
        ms = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            ms.append(1e3 * (time.perf_counter() - t0))
    ms.sort()
    return ms[len(ms) // 2], ms[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, a.size, a.size)

    mb = torchvision.models.mobilenet_v2().eval()

    def mobilenet(inp):
        taps = fx.mobilenet_taps(mb.features, inp)
        return fx.patch_features(taps[6], taps[13])

    wrn = torchvision.models.wide_resnet50_2().eval()

    def wide(inp):
        y = wrn.maxpool(wrn.relu(wrn.bn1(wrn.conv1(inp))))
        l2 = wrn.layer2(wrn.layer1(y))
        return fx.patchcore_embed(l2, wrn.layer3(l2))

    for name, fn in (("mobilenet_v2", mobilenet), ("wide_resnet50_2", wide)):
        med, mn = timed(fn, x, a.runs)
        print(json.dumps({"baseline": f"pytorch {torch.__version__} {name}", "size": a.size, "threads": a.threads,
                          "runs": a.runs, "median_ms_per_image": round(med, 2), "min_ms_per_image": round(mn, 2)}))


if __name__ == "__main__":
    main()
