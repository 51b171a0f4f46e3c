/* Flow scorer settings sweep on extracted features (image AUROC only; the
 * pixel metrics come from `dinoscope eval`, see docs/flow.md):
 *   dinoscope extract --weights W --out train.npy DIR_train_normal   (and test normal / anomalous)
 *   bench_flow train.npy test_normal.npy test_anomalous.npy KIND [dim blocks epochs lr pos_dim epoch_patches]
 * KIND: flow, patchbank, padim, ... (a peer scorer at its defaults, same features, same process).
 * Prints: kind, settings, image AUROC (max and top1pct), fit s, score ms per image, array bytes.
 * Build (not part of the CMake build, like the other benches):
 *   gcc -O2 -fopenmp -Iinclude -Isrc bench/bench_flow.c build/libdinoscope.a \
 *       $(pkg-config --libs openblas vips libcjson libzip zlib openslide) -lm -o build/bench_flow */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dinoscope/eval.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *load(const char *path, int64_t *shape) {
    float *d = NULL;
    int nd = 0;
    if (ds_npy_read_f32(path, &d, &nd, shape) != DS_OK || nd != 3) {
        fprintf(stderr, "%s: %s\n", path, ds_last_error());
        exit(1);
    }
    return d;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_flow train.npy test_normal.npy test_anomalous.npy KIND [dim blocks epochs lr pos_dim epoch_patches]\n");
        return 2;
    }
    int64_t s0[8], s1[8], s2[8];
    float *tr = load(argv[1], s0), *tn = load(argv[2], s1), *ta = load(argv[3], s2);
    const int64_t N = s0[1];
    const int D = (int)s0[2];
    /* BENCH_L2=1: L2-normalise every patch feature first (the patch bank's cosine space) */
    if (getenv("BENCH_L2") && atoi(getenv("BENCH_L2"))) {
        float *all[3] = {tr, tn, ta};
        int64_t rows[3] = {s0[0] * N, s1[0] * N, s2[0] * N};
        for (int k = 0; k < 3; k++)
            for (int64_t r = 0; r < rows[k]; r++) {
                float *x = all[k] + (size_t)r * D;
                double ss = 0;
                for (int c = 0; c < D; c++) ss += (double)x[c] * x[c];
                float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
                for (int c = 0; c < D; c++) x[c] *= inv;
            }
    }
    ds_scorer_kind kind;
    if (ds_scorer_kind_parse(argv[4], &kind) != DS_OK) return 2;
    ds_scorer_params p = ds_scorer_defaults();
    p.n_threads = 2;
    p.reduce = DS_REDUCE_TOP1PCT; /* the CLI default; the max is taken here from the patch scores */
    if (argc > 5) p.flow_dim = atoi(argv[5]);
    if (argc > 6) p.flow_blocks = atoi(argv[6]);
    if (argc > 7) p.flow_epochs = atoi(argv[7]);
    if (argc > 8) p.flow_lr = atof(argv[8]);
    if (argc > 9) p.flow_pos_dim = atoi(argv[9]);
    if (argc > 10) p.flow_epoch_patches = atoll(argv[10]);
    ds_scorer *s;
    double t0 = now_s();
    if (ds_scorer_fit(kind, &p, tr, s0[0], N, D, &s) != DS_OK) {
        fprintf(stderr, "fit: %s\n", ds_last_error());
        return 1;
    }
    double fit_s = now_s() - t0;
    const int64_t n = s1[0] + s2[0];
    float *smax = malloc(sizeof(float) * (size_t)n), *stop = malloc(sizeof(float) * (size_t)n);
    float *ps = malloc(sizeof(float) * (size_t)N * 2);
    int *lab = malloc(sizeof(int) * (size_t)n);
    t0 = now_s();
    for (int64_t i = 0; i < n; i++) {
        const float *f = i < s1[0] ? tn + (size_t)i * N * D : ta + (size_t)(i - s1[0]) * N * D;
        lab[i] = i >= s1[0];
        if (ds_scorer_score(s, f, N, 2, &stop[i], ps) != DS_OK) {
            fprintf(stderr, "score: %s\n", ds_last_error());
            return 1;
        }
        if (ds_scorer_has_patch_scores(s)) {
            float m = ps[0];
            for (int64_t j = 1; j < N; j++) m = ps[j] > m ? ps[j] : m;
            smax[i] = m;
        } else {
            smax[i] = stop[i];
        }
    }
    double ms = (now_s() - t0) * 1e3 / (double)n;
    double a_max = 0, a_top = 0, bytes = 0;
    ds_eval_auroc(smax, lab, n, &a_max);
    ds_eval_auroc(stop, lab, n, &a_top);
    for (int i = 0; i < ds_scorer_n_arrays(s); i++) {
        ds_scorer_array a;
        ds_scorer_get_array(s, i, &a);
        bytes += 4.0 * (double)a.shape[0] * (double)(a.n_dims > 1 ? a.shape[1] : 1);
    }
    printf("%s%s dim=%d blocks=%d epochs=%d lr=%g pos=%d ep_patches=%lld | AUROC max %.4f top1pct %.4f | fit %.1f s | score %.2f ms/img | %.0f bytes\n",
           argv[4], getenv("BENCH_L2") && atoi(getenv("BENCH_L2")) ? "(l2)" : "", p.flow_dim, p.flow_blocks, p.flow_epochs, p.flow_lr, p.flow_pos_dim, (long long)p.flow_epoch_patches, a_max, a_top, fit_s, ms, bytes);
    return 0;
}
