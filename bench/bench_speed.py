#!/usr/bin/python3
"""Issue 13's benchmark: dinoscope fp32 and bf16 against ONNX Runtime fp32 and
tuned PyTorch fp32 and bf16, interleaved run by run. Driven by
bench/run_speed_bench.sh (which sets up the peers); subcommands:

  export --dir DIR
      DIR/<model>_<S>.onnx for vits14/vitb14 at 224 and 518 (torch.onnx.export,
      opset 17, dynamic batch) of the DINOv2 module of
      tests/fixtures/make_vit_fixtures.py with the weights of
      bench/bench_vit.py (get_intermediate_layers(n=4, norm=True), mean of
      the 4 layers: the features dinoscope returns).
  run --dir DIR --bench-vit BIN --ort-dir D [--cases vits14:224:8,...]
      [--rounds R] [--threads T] [--skip IMPL,...]
      Per case: starts dinoscope f32 and bf16 (bench_vit --serve), ONNX
      Runtime (bench/ort_vit.cjs) and loads PyTorch f32 and bf16
      (torch.autocast('cpu', torch.bfloat16): Linear/matmul in bf16,
      LayerNorm/softmax in fp32, as dinoscope's bf16 path) in this process;
      warms each up once; then R rounds, each running every implementation
      once in a rotated order, so that all see the same machine load. Prints
      one JSON line per case and a table: median ms/img, the ratios of the
      per-round medians (dinoscope / peer, < 1: dinoscope faster), and each
      implementation's features against PyTorch f32 (max |diff| / max |ref|
      and the smallest per-patch cosine).
  nn --bench-nn BIN [--M 100000] [--D 768] [--Q 1369] [--rounds R] [--threads T]
      Exact k=1 cosine search of Q queries against M random normalised rows:
      dinoscope over an f32 bank and over a bf16 bank (bench_nn nn ... REPR,
      which also reports the bf16 search's recall@1 against the f32 one) and
      faiss IndexFlatIP (f32; Debian python3-faiss) on numpy data of the same
      shape, one run of each per round; prints the medians and the ratios of
      the per-round times.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_vit import MODELS, PATCH, build_model, read_safetensors  # noqa: E402

IMPLS = ("dino_f32", "dino_bf16", "ort_f32", "torch_f32", "torch_bf16")


class Wrapper(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        layers = self.m.get_intermediate_layers(x, n=4, norm=True)
        return torch.stack([p for p, _ in layers]).mean(0)


def load_model(d, name):
    model = build_model(name)
    sd, _ = read_safetensors(os.path.join(d, f"{name}.safetensors"))
    model.load_state_dict(sd, strict=True)
    return Wrapper(model).eval()


@torch.no_grad()
def cmd_export(args):
    for name in MODELS:
        w = None
        for S in (224, 518):
            path = os.path.join(args.dir, f"{name}_{S}.onnx")
            if os.path.exists(path):
                print(f"kept    {path}")
                continue
            w = w or load_model(args.dir, name)
            x = torch.zeros(1, 3, S, S)
            torch.onnx.export(w, (x,), path + ".tmp", opset_version=17, input_names=["x"], output_names=["feats"],
                              dynamic_axes={"x": {0: "B"}, "feats": {0: "B"}})
            os.replace(path + ".tmp", path)
            print(f"wrote   {path}")


class Server:
    """A child that serves 'run' / 'feats PATH' lines (bench_vit --serve, ort_vit.cjs)."""

    def __init__(self, cmd, env):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        self.ready = self._read()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.p.args[0]} ended: exit {self.p.wait()}")
        return json.loads(line)

    def run(self):
        self.p.stdin.write("run\n")
        r = self._read()
        if "ms" not in r:
            raise RuntimeError(f"{self.p.args[0]}: {r}")
        return r["ms"]

    def feats(self, path):
        self.p.stdin.write(f"feats {path}\n")
        self._read()
        return np.fromfile(path, "<f4")

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        self.p.wait()


class TorchImpl:
    def __init__(self, model, x, bf16):
        self.model, self.x, self.bf16, self.out = model, x, bf16, None
        t0 = time.perf_counter()
        self.run()
        self.ready = {"warmup_ms": (time.perf_counter() - t0) * 1e3}

    @torch.no_grad()
    def run(self):
        t0 = time.perf_counter()
        if self.bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                self.out = self.model(self.x)
        else:
            self.out = self.model(self.x)
        return (time.perf_counter() - t0) * 1e3

    def feats(self, _path):
        return self.out.float().numpy().ravel()

    def close(self):
        pass


def compare(f, ref, D):
    f, ref = f.reshape(-1, D).astype(np.float64), ref.reshape(-1, D).astype(np.float64)
    rel = float(np.abs(f - ref).max() / np.abs(ref).max())
    cos = (f * ref).sum(1) / np.sqrt((f * f).sum(1) * (ref * ref).sum(1))
    return rel, float(cos.min())


def cmd_run(args):
    skip = set(filter(None, args.skip.split(",")))
    child_env = dict(os.environ)
    # the PyTorch peer's tuning (OpenMP OpenBLAS, a malloc that keeps freed
    # memory) is for this process only: dinoscope and ORT run as shipped
    for k in ("LD_LIBRARY_PATH", "GLIBC_TUNABLES"):
        child_env.pop(k, None)
    child_env["ORT_NODE_DIR"] = args.ort_dir
    torch.set_num_threads(args.threads)
    results = []
    for case in args.cases.split(","):
        name, S, B = case.split(":")
        S, B = int(S), int(B)
        D = MODELS[name]
        inp = os.path.join(args.dir, f"input_{S}.f32")
        wts = os.path.join(args.dir, f"{name}.safetensors")
        impls = {}
        try:
            for dt in ("f32", "bf16"):
                if f"dino_{dt}" not in skip:
                    impls[f"dino_{dt}"] = Server([args.bench_vit, "--weights", wts, "--input", inp, "--size", str(S),
                                                  "--batch", str(B), "--threads", str(args.threads), "--dtype", dt,
                                                  "--serve"], child_env)
            if "ort_f32" not in skip:
                impls["ort_f32"] = Server(["node", os.path.join(HERE, "ort_vit.cjs"),
                                           os.path.join(args.dir, f"{name}_{S}.onnx"), inp, str(S), str(B),
                                           str(args.threads)], child_env)
            x = torch.from_numpy(np.fromfile(inp, "<f4", B * 3 * S * S).reshape(B, 3, S, S).copy())
            model = load_model(args.dir, name)
            for dt in ("f32", "bf16"):
                if f"torch_{dt}" not in skip:
                    impls[f"torch_{dt}"] = TorchImpl(model, x, dt == "bf16")
            order = [k for k in IMPLS if k in impls]
            times = {k: [] for k in order}
            for r in range(args.rounds):
                rot = order[r % len(order):] + order[:r % len(order)]
                for k in rot:
                    times[k].append(impls[k].run() / B)
            feats = {k: impls[k].feats(os.path.join(args.dir, f"feats_{k}.f32")) for k in order}
        finally:
            for v in impls.values():
                v.close()
        ref = feats.get("torch_f32")
        res = {"model": name, "size": S, "batch": B, "rounds": args.rounds,
               "ms_per_img": {k: round(statistics.median(v), 2) for k, v in times.items()},
               "min_ms_per_img": {k: round(min(v), 2) for k, v in times.items()}, "ratios": {}, "check": {}}
        for a, b in (("dino_f32", "ort_f32"), ("dino_f32", "torch_f32"), ("dino_bf16", "ort_f32"),
                     ("dino_bf16", "torch_bf16"), ("dino_bf16", "dino_f32")):
            if a in times and b in times:
                per_round = [x / y for x, y in zip(times[a], times[b])]
                res["ratios"][f"{a}/{b}"] = round(statistics.median(per_round), 3)
        if ref is not None:
            for k in order:
                rel, cos = compare(feats[k], ref, D)
                res["check"][k] = {"max_rel": float(f"{rel:.3g}"), "min_cos": round(cos, 6)}
        print(json.dumps(res), flush=True)
        results.append(res)
    table(results)
    bad = [r for r in results for k, c in r["check"].items()
           if (k.endswith("f32") and c["max_rel"] > 1e-3) or c["min_cos"] < 0.999]
    return 1 if bad else 0


def table(results):
    print()
    print("| case | " + " | ".join(f"{k} ms/img" for k in IMPLS) +
          " | dino f32 / ORT | dino f32 / torch f32 | dino bf16 / ORT | dino bf16 / torch bf16 | dino bf16 / f32 |")
    print("|---" * (1 + len(IMPLS) + 5) + "|")
    for r in results:
        ms = [f"{r['ms_per_img'][k]:.0f}" if k in r["ms_per_img"] else "-" for k in IMPLS]
        rt = [f"{r['ratios'][k]:.2f}" if k in r["ratios"] else "-" for k in
              ("dino_f32/ort_f32", "dino_f32/torch_f32", "dino_bf16/ort_f32", "dino_bf16/torch_bf16", "dino_bf16/dino_f32")]
        print(f"| {r['model']} {r['size']} b{r['batch']} | " + " | ".join(ms) + " | " + " | ".join(rt) + " |")
    print()
    print("features vs PyTorch f32 (max |diff| / max |ref|, min per-patch cosine):")
    for r in results:
        print(f"  {r['model']} {r['size']} b{r['batch']}: " +
              ", ".join(f"{k} {c['max_rel']:.1e} / {c['min_cos']:.6f}" for k, c in r["check"].items()))
    print("ratios: median over the rounds of (a's time / b's time in the same round); < 1: a faster")


def cmd_nn(args):
    import re

    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(1)
    bank = (rng.random((args.M, args.D), dtype=np.float32) - 0.5)
    q = rng.random((args.Q, args.D), dtype=np.float32) - 0.5
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(args.D)
    index.add(bank)
    index.search(q[:16], 1)  # warm-up
    t = {"dino_f32": [], "dino_bf16": [], "faiss_ip": []}
    recall = None
    for _ in range(args.rounds):
        for repr_ in ("f32", "bf16"):
            out = subprocess.run([args.bench_nn, "nn", str(args.M), str(args.D), str(args.Q), "1", "cos",
                                  str(args.threads), "1", repr_], check=True, capture_output=True, text=True).stdout
            kv = dict(re.findall(r"(\w+)=(\S+)", out))
            t[f"dino_{repr_}"].append(float(kv["median_ms"]))
            if repr_ == "bf16":
                recall = float(kv["recall1"])
        t0 = time.perf_counter()
        index.search(q, 1)
        t["faiss_ip"].append((time.perf_counter() - t0) * 1e3)
    res = {"M": args.M, "D": args.D, "Q": args.Q, "rounds": args.rounds,
           "median_ms": {k: round(statistics.median(v), 1) for k, v in t.items()},
           "bf16_recall1_vs_f32": recall, "faiss": faiss.__version__}
    for a in ("dino_f32", "dino_bf16"):
        res[f"{a}/faiss_ip"] = round(statistics.median([x / y for x, y in zip(t[a], t["faiss_ip"])]), 3)
    res["dino_bf16/dino_f32"] = round(statistics.median([x / y for x, y in zip(t["dino_bf16"], t["dino_f32"])]), 3)
    print(json.dumps(res), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--dir", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--bench-vit", required=True)
    r.add_argument("--ort-dir", required=True)
    r.add_argument("--cases", default="vits14:224:8,vits14:518:1,vitb14:224:8,vitb14:518:1,vitb14:518:4")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--skip", default="")
    n = sub.add_parser("nn")
    n.add_argument("--bench-nn", required=True)
    n.add_argument("--M", type=int, default=100000)
    n.add_argument("--D", type=int, default=768)
    n.add_argument("--Q", type=int, default=1369)
    n.add_argument("--rounds", type=int, default=3)
    n.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    return {"export": cmd_export, "run": cmd_run, "nn": cmd_nn}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
