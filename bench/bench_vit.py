#!/usr/bin/python3
"""ViT benchmark helper: random DINOv2 weights of the real sizes, the PyTorch
baseline, and the result table. Driven by bench/run_vit_bench.sh.

Subcommands
  weights DIR
      Writes DIR/vits14.safetensors and DIR/vitb14.safetensors (F32, official
      state_dict names as torch.hub's dinov2_vit{s,b}14 uses them: cls_token,
      pos_embed [1, 1+37*37, D], mask_token, patch_embed.proj.*, blocks.N.*,
      norm.*; no registers) with seeded random values, and DIR/input_<S>.f32
      (8 images [8,3,S,S] f32 standard normal, S = 224, 518; batch 1 uses
      the first image). Files already written by this generator version are
      kept. Deterministic (torch.Generator seeds), ~440 MB in all.
  torch --model vits14|vitb14 --weights F --input F --size S --batch B
        [--runs N] [--budget-s T] [--threads 2] [--dino-feats F]
      Loads the weights into the DINOv2 re-implementation of
      tests/fixtures/make_vit_fixtures.py (it follows the official
      dinov2/models/vision_transformer.py; without xFormers and on torch 1.13
      attention is the explicit q k^T, softmax, (.) v), float32, no_grad,
      torch.set_num_threads(T); times get_intermediate_layers(n=4,
      norm=True) + mean over the 4 layers (one warm-up on the first image,
      then the median of N runs of the batch; N = --runs, or as many as fit
      --budget-s, clamped to [2, 10]) and prints one JSON line. With --dino-feats (dinoscope's [B,N,D]
      f32 output for the same input), also prints max |dinoscope - torch|
      relative to max |torch|.
  table RESULTS.jsonl
      Prints the table from the JSON lines written by bench_vit (C) and
      "torch" above.

Re-run everything through bench/run_vit_bench.sh.
"""

import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from make_vit_fixtures import DinoVisionTransformer  # noqa: E402  (the faithful DINOv2 module)
from vit_random_numpy import write_safetensors  # noqa: E402  (the same writer, numpy only)

GENERATOR_VERSION = "1"
PATCH = 14
POS_GRID = 37  # img_size 518 as dinov2/hub/backbones.py builds every model
DEPTH = 12
# dinov2/hub/backbones.py: vit_small (384, 6 heads), vit_base (768, 12 heads), mlp_ratio 4
MODELS = {"vits14": 384, "vitb14": 768}
SIZES = (224, 518)
MAX_BATCH = 8


def build_model(name):
    D = MODELS[name]
    return DinoVisionTransformer(
        img_size=POS_GRID * PATCH, patch_size=PATCH, embed_dim=D, depth=DEPTH, num_heads=D // 64,
        mlp_ratio=4.0, ffn_layer="mlp", num_register_tokens=0, interpolate_antialias=False,
        interpolate_offset=0.1)


def random_state_dict(model, seed):
    """Random values scaled so that activations stay O(1) through 12 blocks
    (Linear weights ~ 1/sqrt(fan_in), LayerScale ~ 0.1 like trained DINOv2):
    the values do not change the speed, but the features must be non-trivial
    for the dinoscope == torch sanity check."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in model.state_dict().items():
        shape = tuple(p.shape)
        leaf = name.split(".")[-1]
        if name in ("cls_token", "mask_token"):
            v = torch.randn(shape, generator=g)
        elif name == "pos_embed":
            v = torch.randn(shape, generator=g) * 0.2
        elif name == "patch_embed.proj.weight":
            v = torch.randn(shape, generator=g) / math.sqrt(shape[1] * shape[2] * shape[3])
        elif "norm" in name and leaf == "weight":
            v = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif leaf == "gamma":
            v = 0.1 + 0.05 * torch.randn(shape, generator=g)
        elif leaf == "bias":
            v = 0.02 * torch.randn(shape, generator=g)
        elif leaf == "weight":
            v = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            raise AssertionError(name)
        sd[name] = v.float().contiguous()
    return sd


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", name
        a, b = h["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data, "<f4", (b - a) // 4, a).reshape(h["shape"]).copy())
    return out, meta


def safetensors_meta(path):
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            return json.loads(f.read(n)).get("__metadata__", {})
    except (OSError, ValueError, struct.error):
        return {}


def cmd_weights(args):
    os.makedirs(args.dir, exist_ok=True)
    for seed, name in enumerate(MODELS):
        path = os.path.join(args.dir, f"{name}.safetensors")
        meta = {"format": "pt", "generator": "bench/bench_vit.py", "version": GENERATOR_VERSION, "model": name}
        if safetensors_meta(path) == meta:
            print(f"kept    {path}")
            continue
        model = build_model(name)
        sd = random_state_dict(model, 10 + seed)
        model.load_state_dict(sd, strict=True)  # names and shapes are the official ones
        write_safetensors(path, sd, meta)
        n = sum(t.numel() for t in sd.values())
        print(f"wrote   {path} ({n / 1e6:.1f} M parameters)")
    for i, S in enumerate(SIZES):
        path = os.path.join(args.dir, f"input_{S}.f32")
        if os.path.exists(path) and os.path.getsize(path) == MAX_BATCH * 3 * S * S * 4:
            print(f"kept    {path}")
            continue
        g = torch.Generator().manual_seed(1000 + i)
        torch.randn(MAX_BATCH, 3, S, S, generator=g).numpy().astype("<f4").tofile(path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"wrote   {path}")


def vit_gflop(D, depth, heads, T, N, hidden, patch):
    """Forward FLOPs of one image, 2*M*N*K per GEMM: patch embedding, per block
    qkv, q k^T and a v per head, proj, fc1, fc2 (elementwise ops not counted)."""
    hd = D // heads
    blk = 2 * T * D * 3 * D + heads * (2 * T * T * hd) * 2 + 2 * T * D * D + 2 * 2 * T * D * hidden
    return (2 * N * (3 * patch * patch) * D + depth * blk) / 1e9


@torch.no_grad()
def cmd_torch(args):
    torch.set_num_threads(args.threads)
    model = build_model(args.model)
    sd, _ = read_safetensors(args.weights)
    model.load_state_dict(sd, strict=True)
    model.eval()
    S, B = args.size, args.batch
    x = torch.from_numpy(np.fromfile(args.input, "<f4", B * 3 * S * S).reshape(B, 3, S, S).copy())

    def forward():
        layers = model.get_intermediate_layers(x, n=4, norm=True)
        return torch.stack([p for p, _ in layers]).mean(0)

    # Warm-up on the first image only (lazy initialisation, weight pages):
    # torch allocates its activations afresh in every call anyway, so a
    # full-batch warm-up would only cost time (minutes for ViT-B/518/8).
    t0 = time.perf_counter()
    layers = model.get_intermediate_layers(x[:1], n=4, norm=True)
    warm_per_img = time.perf_counter() - t0
    runs = args.runs or max(2, min(10, round(args.budget_s / max(warm_per_img * B, 1e-3))))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        feats = forward()
        times.append(time.perf_counter() - t0)
    med_ms = statistics.median(times) * 1e3
    D = MODELS[args.model]
    N = (S // PATCH) ** 2
    res = {"impl": "torch", "model": args.model, "size": S, "batch": B, "threads": torch.get_num_threads(),
           "runs": runs, "median_ms": round(med_ms, 2), "min_ms": round(min(times) * 1e3, 2),
           "ms_per_img": round(med_ms / B, 2), "min_ms_per_img": round(min(times) * 1e3 / B, 2),
           "gflop_per_img": round(vit_gflop(D, DEPTH, D // 64, 1 + N, N, 4 * D, PATCH), 3)}
    if args.dino_feats:
        dino = np.fromfile(args.dino_feats, "<f4").reshape(B, N, D)
        ref = feats.numpy()
        res["max_abs_diff_rel"] = float(f"{np.abs(dino - ref).max() / np.abs(ref).max():.3g}")
        res["max_abs_torch"] = round(float(np.abs(ref).max()), 4)
    print(json.dumps(res), flush=True)


def cmd_table(args):
    rows, sgemm, info, sgemm_best = {}, {}, {}, 0.0
    failed = False
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("impl") == "sgemm":
                sgemm_best = max(sgemm_best, r.get("best_gflops", r.get("gflops", 0.0)))
            if r.get("impl") == "sgemm" and "model" in r:  # measured next to a case
                rows.setdefault((r["model"], r["size"], r["batch"]), {})["sgemm"] = r
            elif r.get("impl") == "sgemm":
                sgemm = r
            elif r.get("impl") == "info":
                info = r
            elif r.get("impl") in ("dinoscope", "torch", "load"):
                rows.setdefault((r["model"], r["size"], r["batch"]), {})[r["impl"]] = r
    if info:
        print(f"OpenBLAS core: {info.get('openblas_core')}   config: {info.get('openblas_config')}")
    peak = sgemm_best or None
    if sgemm:
        print(f"sgemm rate: best {peak:.1f} GFLOP/s over all measurements (at the start: median "
              f"{sgemm['gflops']:.1f}, best {sgemm.get('best_gflops', sgemm['gflops']):.1f}; cblas_sgemm "
              f"{sgemm['n']}^3, {sgemm['threads']} threads)")
    hdr = (f"{'model':7s} {'size':>4s} {'B':>2s} {'N d/t':>5s} {'dino ms/img':>11s} {'torch ms/img':>12s} "
           f"{'ratio':>6s} {'best: dino/torch=ratio':>23s} {'GFLOP/img':>9s} {'dino GFLOP/s':>12s} {'of sgemm':>8s} "
           f"{'check rel err':>13s} {'other':>5s}")
    print(hdr)
    print("-" * len(hdr))
    nan = float("nan")
    for (model, size, batch), r in sorted(rows.items(), key=lambda kv: (kv[0][0] != "vits14", kv[0][1], kv[0][2])):
        d, t = r.get("dinoscope"), r.get("torch")
        dms, tms = (d["ms_per_img"] if d else nan), (t["ms_per_img"] if t else nan)
        dmin = d.get("min_ms_per_img", dms) if d else nan
        tmin = t.get("min_ms_per_img", tms) if t else nan
        gf = (d or t)["gflop_per_img"]
        rate = gf / (dmin / 1e3) if d else nan
        case_peak = r["sgemm"]["best_gflops"] if "sgemm" in r else peak
        frac = rate / case_peak if case_peak else nan
        chk = t.get("max_abs_diff_rel") if t else None
        failed |= chk is None or chk > 1e-3
        runs = f"{d['runs'] if d else '-'}/{t['runs'] if t else '-'}"
        other = f"{r['load']['other_pct']}%" if "load" in r else "-"
        ok = "missing" if chk is None else (f"{chk:.1e} ok" if chk <= 1e-3 else f"{chk:.1e} FAIL")
        best = f"{dmin:.0f}/{tmin:.0f}={dmin / tmin:.2f}"
        print(f"{model:7s} {size:4d} {batch:2d} {runs:>5s} {dms:11.1f} {tms:12.1f} {dms / tms:6.2f} {best:>23s} {gf:9.1f} "
              f"{rate:12.1f} {frac:8.0%} {ok:>13s} {other:>5s}")
    print("ms/img: median over N d/t timed runs (dinoscope/torch) after one warm-up; ratio = dinoscope / PyTorch "
          "(< 1: dinoscope faster);\nbest: fastest run's ms/img and ratio; dino GFLOP/s: 2*M*N*K over the GEMMs of "
          "the forward / the fastest run; of sgemm: that / the best sgemm rate measured just before the case;\ncheck: max|dinoscope - torch| / "
          "max|torch| over the features (must be <= 1e-3); other: CPU taken by other processes during the case "
          "(> ~5%: the figures are skewed)")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights")
    w.add_argument("dir")
    t = sub.add_parser("torch")
    t.add_argument("--model", choices=list(MODELS), required=True)
    t.add_argument("--weights", required=True)
    t.add_argument("--input", required=True)
    t.add_argument("--size", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--runs", type=int, default=0, help="0: as many as fit --budget-s (2..10)")
    t.add_argument("--budget-s", type=float, default=10.0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--dino-feats")
    tb = sub.add_parser("table")
    tb.add_argument("results")
    args = ap.parse_args()
    return {"weights": cmd_weights, "torch": cmd_torch, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
