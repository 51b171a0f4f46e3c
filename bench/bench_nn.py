#!/usr/bin/python3
"""Exact patch k-NN and greedy-coreset benchmark: dinoscope vs faiss and numpy.

    /usr/bin/python3 bench/bench_nn.py BENCH_NN_BINARY [--threads 2] [--reps 3]
        [--banks 10000,100000,500000] [--dims 384,768] [--k 1]
        [--coreset-feats FEATS.npy] [--skip-coreset] [--skip-nn]

k-NN: one 518x518 image's patch tokens (1369 queries, as DINOv2 /14 gives)
against banks of M patches, D = 384 (ViT-S) and 768 (ViT-B), random uniform
float32 (brute force does not care about the values). For each (M, D):
  - faiss IndexFlatL2 / IndexFlatIP (Debian python3-faiss 1.7.3, its BLAS
    path for >= 20 queries), faiss.omp_set_num_threads(T);
  - numpy brute force: ||b||^2 - 2 q.b^T in bank blocks of 16384 rows with
    argmin/argpartition per block (OpenBLAS threads = T);
  - dinoscope's ds_nn_search (bench_nn binary, n_threads = T), L2 and cosine.
Medians of --reps runs after one warm-up; ratios are baseline / dinoscope
(> 1: dinoscope is faster).

Coreset: greedy k-center selection of 10% of 100k and 500k patches (L2-
normalised, 128-d projection, as the patchbank scorer does) on realistic
features (bench/make_bench_features.py, made on demand), next to the
textbook full update (every point, every step; what anomalib's
KCenterGreedy does) in numpy, timed for 20 steps and extrapolated.

faiss is a benchmark dependency only: apt-get install python3-faiss.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time


def _early_threads():
    """OpenBLAS reads its thread count when numpy is first imported."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "2"


os.environ["OPENBLAS_NUM_THREADS"] = _early_threads()
import numpy as np  # noqa: E402

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
Q = 1369


def numpy_knn(bank, q, k, block=16384):
    """Blocked brute force, argpartition per block then merge."""
    qn = (q * q).sum(1)[:, None]
    best_d = np.full((len(q), k), np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    for s in range(0, len(bank), block):
        b = bank[s:s + block]
        d = qn + (b * b).sum(1)[None, :] - 2 * (q @ b.T)
        kk = min(k, d.shape[1])
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        dd = np.take_along_axis(d, part, 1)
        alld = np.concatenate([best_d, dd], 1)
        alli = np.concatenate([best_i, part + s], 1)
        o = np.argsort(alld, 1)[:, :k]
        best_d, best_i = np.take_along_axis(alld, o, 1), np.take_along_axis(alli, o, 1)
    return np.sqrt(np.maximum(best_d, 0)), best_i


def run_c(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if "=" in l][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def bench_knn(args):
    import faiss
    faiss.omp_set_num_threads(args.threads)
    rows = []
    for D in args.dims:
        rng = np.random.default_rng(1)
        big = max(args.banks)
        bank_all = (rng.random((big, D), dtype=np.float32) - 0.5)
        q = rng.random((Q, D), dtype=np.float32) - 0.5
        for M in args.banks:
            bank = bank_all[:M]
            idx_l2 = faiss.IndexFlatL2(D)
            idx_l2.add(bank)
            bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            idx_ip = faiss.IndexFlatIP(D)
            idx_ip.add(bn)
            del bn
            # Interleaved repetitions: the machine is shared, so each method
            # sees the same load over time. One warm-up run each first.
            cmd = [args.binary, "nn", str(M), str(D), str(Q), str(args.k), "l2", str(args.threads), "1"]
            cmd_cos = cmd[:6] + ["cos"] + cmd[7:]
            tf, tfi, tn, to, toc = [], [], [], [], []
            for rep in range(args.reps + 1):
                t = time.perf_counter()
                idx_l2.search(q, args.k)
                tf.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                idx_ip.search(qn, args.k)
                tfi.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                numpy_knn(bank, q, args.k)
                tn.append((time.perf_counter() - t) * 1e3)
                to.append(float(run_c(cmd)["median_ms"]))
                toc.append(float(run_c(cmd_cos)["median_ms"]))
            del idx_l2, idx_ip
            med = lambda v: statistics.median(v[1:])
            t_faiss, t_faiss_ip, t_np = med(tf), med(tfi), med(tn)
            ours, ours_cos = {"median_ms": med(to)}, {"median_ms": med(toc)}
            t_ours, t_ours_cos = float(ours["median_ms"]), float(ours_cos["median_ms"])
            rows.append((M, D, t_ours, t_ours_cos, t_faiss, t_faiss_ip, t_np))
            print("M=%d D=%d: dinoscope L2 %.0f ms, cos %.0f ms | faiss FlatL2 %.0f ms, FlatIP %.0f ms | numpy %.0f ms"
                  % rows[-1], flush=True)
        del bank_all
    print("\n| bank M | D | dinoscope L2 ms | faiss FlatL2 ms | ratio | dinoscope cos ms | faiss FlatIP ms | ratio "
          "| numpy ms | ratio (numpy / dinoscope L2) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for M, D, a, ac, f, fi, n in rows:
        print("| %d | %d | %.0f | %.0f | %.2fx | %.0f | %.0f | %.2fx | %.0f | %.2fx |" % (M, D, a, f, f / a, ac, fi,
                                                                                       fi / ac, n, n / a))


def naive_estimate(feats, n_select, steps=20):
    """The textbook update that anomalib's KCenterGreedy and PatchCore's
    sampler perform: after each new centre, the distance of EVERY point to it
    and a running min (numpy, float32, on the same normalised 128-d
    projection). Timed over `steps` steps and extrapolated to n_select.
    (anomalib calls torch's F.pairwise_distance for this; Debian's torch 1.13
    takes ~0.5 s per step for 100k x 128 here, 13x slower than numpy, so
    numpy is the fairer baseline.)"""
    rng = np.random.default_rng(0)
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    w = rng.standard_normal((x.shape[1], 128)).astype(np.float32) / np.float32(np.sqrt(128))
    y = x @ w
    mind = np.full(len(y), np.inf, np.float32)
    j = 0
    t = time.perf_counter()
    for _ in range(steps):
        mind = np.minimum(mind, ((y - y[j]) ** 2).sum(1))
        j = int(np.argmax(mind))
    return (time.perf_counter() - t) / steps * n_select


def bench_coreset(args):
    feats = args.coreset_feats
    if not os.path.exists(feats):
        print("making realistic features", feats, flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, "make_bench_features.py"), feats, "500000"])
        if r.returncode != 0:
            print("SKIP coreset: could not make features (../shared missing?)")
            return
    x = np.load(feats, mmap_mode="r")
    print("\n| patches N | selected | dinoscope s (threads=%d) | naive full update (numpy), est. s | ratio |"
          % args.threads)
    print("|---|---|---|---|---|")
    for n in (100000, 500000):
        if n > len(x):
            break
        ours = run_c([args.binary, "coreset", feats, str(n), "0.1", str(args.threads)])
        est = naive_estimate(np.asarray(x[:n], np.float32), n // 10)
        s = float(ours["seconds"])
        print("| %d | %d | %.1f | %.0f | %.0fx |" % (n, n // 10, s, est, est / s), flush=True)
    for n in (100000,):
        ours = run_c([args.binary, "coreset", "gauss:384", str(n), "0.1", str(args.threads)])
        print("| %d (N(0,1) points, worst case) | %d | %.1f | | |" % (n, n // 10, float(ours["seconds"])), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--banks", default="10000,100000,500000")
    ap.add_argument("--dims", default="384,768")
    ap.add_argument("--coreset-feats", default="/tmp/dinoscope-bench/cxr500k.npy")
    ap.add_argument("--skip-coreset", action="store_true")
    ap.add_argument("--skip-nn", action="store_true")
    args = ap.parse_args()
    args.banks = [int(v) for v in args.banks.split(",")]
    args.dims = [int(v) for v in args.dims.split(",")]
    os.makedirs(os.path.dirname(os.path.abspath(args.coreset_feats)), exist_ok=True)
    print("cpu:", re.sub(r"\s+", " ", subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"],
                                                    capture_output=True, text=True).stdout.strip()),
          "| threads:", args.threads, "| load:", open("/proc/loadavg").read().split()[:3])
    if not args.skip_nn:
        bench_knn(args)
    if not args.skip_coreset:
        bench_coreset(args)


if __name__ == "__main__":
    main()
