#!/usr/bin/python3
"""Random weights of the real sizes for bench/bench_cnn.c (not committed):

    /usr/bin/python3 bench/make_cnn_bench_weights.py [OUT_DIR=/tmp]

Writes OUT_DIR/wide_resnet50_2_random.pth: torchvision.models.
wide_resnet50_2() with its default random init (seed 0), saved with
torch.save(state_dict) as a torch.hub checkpoint would be (~270 MB, incl.
layer4, fc and num_batches_tracked). MobileNetV2 needs nothing: the shipped
../shared/models/mobilenet_v2_imagenet.safetensors has the real size.
"""
import os
import sys

import torch
import torchvision


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    torch.manual_seed(0)
    m = torchvision.models.wide_resnet50_2()
    path = os.path.join(out, "wide_resnet50_2_random.pth")
    torch.save(m.state_dict(), path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
