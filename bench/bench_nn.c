/* Benchmark of the scorer kernels; bench_nn.py runs it next to faiss and
 * numpy and prints the ratios. Build (after building the library):
 *   gcc -O3 -march=native -fopenmp -Iinclude -Isrc bench/bench_nn.c \
 *       build/libdinoscope.a $(pkg-config --libs openblas vips libcjson libzip) -lm -o build/bench_nn
 *
 *   bench_nn nn M D Q K METRIC THREADS REPS [REPR]
 *                                            exact k-NN, random data (seed 1);
 *                                            METRIC l2|cos; prints the median ms.
 *                                            REPR f32 (default) | bf16: a
 *                                            ds_nn_bank of that representation
 *                                            (made once, pack_ms), and
 *                                            recall@1 against the f32 search
 *   bench_nn coreset FEATS.npy N RATIO THREADS
 *                                            greedy coreset of the first N rows
 *                                            (normalised, 128-d projection as
 *                                            the patchbank scorer), or FEATS =
 *                                            "gauss:D" for N(0,1) points
 * Output: one line "key=value ..." per run, parsed by bench_nn.py. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "scorer/scorer_internal.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static float *random_rows(int64_t n, int d, uint64_t seed) {
    float *a = malloc(sizeof(float) * (size_t)n * (size_t)d);
    if (!a) return NULL;
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < n * d; i++) a[i] = (float)(ds_rng_u64(&r) >> 40) * (1.0f / 16777216.0f) - 0.5f;
    return a;
}

static int bench_nn(int argc, char **argv) {
    if (argc < 9) return fprintf(stderr, "usage: bench_nn nn M D Q K l2|cos THREADS REPS [f32|bf16]\n"), 2;
    ds_bank_repr repr = DS_BANK_F32;
    if (argc > 9 && ds_bank_repr_parse(argv[9], &repr) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 2;
    int64_t M = atoll(argv[2]), Q = atoll(argv[4]);
    int D = atoi(argv[3]), k = atoi(argv[5]), th = atoi(argv[7]), reps = atoi(argv[8]);
    ds_metric metric = strcmp(argv[6], "cos") == 0 ? DS_METRIC_COSINE : DS_METRIC_L2;
    float *bank = random_rows(M, D, 1), *q = random_rows(Q, D, 2);
    float *dist = malloc(sizeof(float) * (size_t)Q * (size_t)k);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)Q * (size_t)k);
    double *ms = malloc(sizeof(double) * (size_t)reps);
    if (!bank || !q || !dist || !idx || !ms) return fprintf(stderr, "out of memory\n"), 1;
    if (metric == DS_METRIC_COSINE) {
        ds_l2_normalize_rows(bank, bank, M, D);
        ds_l2_normalize_rows(q, q, Q, D);
    }
    ds_nn_search(bank, DS_MIN(M, (int64_t)4096), q, Q, D, k, metric, th, dist, idx); /* warm-up */
    ds_nn_bank *nb = NULL;
    double t_pack = omp_get_wtime();
    if (ds_nn_bank_create(bank, M, D, repr, &nb) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
    t_pack = omp_get_wtime() - t_pack;
    for (int r = 0; r < reps; r++) {
        double t = omp_get_wtime();
        if (ds_nn_bank_search(nb, q, Q, k, metric, th, dist, idx) != DS_OK)
            return fprintf(stderr, "%s\n", ds_last_error()), 1;
        ms[r] = (omp_get_wtime() - t) * 1e3;
    }
    double recall = 1.0;
    if (repr != DS_BANK_F32) { /* against the exact f32 search (tested against sklearn) */
        float *d2 = malloc(sizeof(float) * (size_t)Q * (size_t)k);
        int64_t *i2 = malloc(sizeof(int64_t) * (size_t)Q * (size_t)k), hit = 0;
        if (!d2 || !i2 || ds_nn_search(bank, M, q, Q, D, k, metric, th, d2, i2) != DS_OK)
            return fprintf(stderr, "f32 reference search failed\n"), 1;
        for (int64_t i = 0; i < Q; i++) hit += idx[i * k] == i2[i * k];
        recall = (double)hit / (double)Q;
        free(d2);
        free(i2);
    }
    ds_nn_bank_free(nb);
    qsort(ms, (size_t)reps, sizeof(double), cmp_d);
    printf("nn M=%lld D=%d Q=%lld k=%d metric=%s threads=%d repr=%s median_ms=%.2f min_ms=%.2f gflops=%.1f "
           "pack_ms=%.1f recall1=%.4f\n",
           (long long)M, D, (long long)Q, k, argv[6], th, ds_bank_repr_name(repr), ms[reps / 2], ms[0],
           2.0 * (double)M * (double)Q * D / (ms[reps / 2] * 1e6), t_pack * 1e3, recall);
    free(bank);
    free(q);
    free(dist);
    free(idx);
    free(ms);
    return 0;
}

static double t_start;
static void progress(const char *stage, int64_t done, int64_t total, void *user) {
    (void)user;
    if (done == total) fprintf(stderr, "  %s done at %.1f s\n", stage, omp_get_wtime() - t_start);
}

static int bench_coreset(int argc, char **argv) {
    if (argc < 6) return fprintf(stderr, "usage: bench_nn coreset FEATS.npy|gauss:D N RATIO THREADS\n"), 2;
    int64_t N = atoll(argv[3]);
    double ratio = atof(argv[4]);
    int th = atoi(argv[5]);
    float *x = NULL;
    int D;
    if (strncmp(argv[2], "gauss:", 6) == 0) {
        D = atoi(argv[2] + 6);
        x = malloc(sizeof(float) * (size_t)N * (size_t)D);
        ds_rng r;
        ds_rng_seed(&r, 3);
        for (int64_t i = 0; x && i < N * D; i++) x[i] = (float)ds_rng_normal(&r);
    } else {
        int nd;
        int64_t sh[DS_NPY_MAX_DIMS];
        if (ds_npy_read_f32(argv[2], &x, &nd, sh) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
        int64_t rows = 1;
        for (int i = 0; i < nd - 1; i++) rows *= sh[i];
        D = (int)sh[nd - 1];
        if (rows < N) return fprintf(stderr, "%s has %lld rows < N\n", argv[2], (long long)rows), 1;
    }
    if (!x) return fprintf(stderr, "out of memory\n"), 1;
    int64_t n_sel = (int64_t)((double)N * ratio);
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)n_sel);
    ds_coreset_params p = ds_coreset_defaults();
    p.l2_normalize = 1;
    p.n_threads = th;
    p.progress = progress;
    t_start = omp_get_wtime();
    if (ds_coreset_greedy(x, N, D, n_sel, &p, sel) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
    double s = omp_get_wtime() - t_start;
    printf("coreset src=%s N=%lld D=%d n_select=%lld threads=%d seconds=%.2f first=%lld last=%lld\n", argv[2],
           (long long)N, D, (long long)n_sel, th, s, (long long)sel[0], (long long)sel[n_sel - 1]);
    free(x);
    free(sel);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "nn") == 0) return bench_nn(argc, argv);
    if (argc > 1 && strcmp(argv[1], "coreset") == 0) return bench_coreset(argc, argv);
    fprintf(stderr, "usage: bench_nn nn ... | bench_nn coreset ...  (see the header of bench/bench_nn.c)\n");
    return 2;
}
