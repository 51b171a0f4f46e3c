/* Exact greedy vs the blocked (composable) coreset on real features: time
 * and covering radius (max over all points of the distance to the nearest
 * selected point, in the 128-d projection both select in), as docs/scale.md
 * reports.
 *
 *   gcc -O3 -march=native -fopenmp -Iinclude -Isrc bench/scale/coreset_radius.c \
 *       build/libdinoscope.a $(pkg-config --libs openblas vips libcjson libzip zlib) -lm -o build/coreset_radius
 *   build/coreset_radius FEATS.npy RATIO THREADS [BLOCK...]
 * FEATS.npy: [n, N, D] (dinoscope extract) or [M, D]. Rows are L2-normalised
 * (patchbank's cosine metric) and projected as ds_coreset_greedy does
 * (seed 0); exact runs once, blocked once per BLOCK (oversample 2).
 * Prints one line per method: method, block, wall and CPU seconds, radius,
 * radius / exact. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "core/internal.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "scorer/scorer_internal.h"

/* process CPU seconds: the machine is shared, wall time says little */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double radius(const float *y, int64_t M, int d, const int64_t *sel, int64_t k, int th) {
    float *bank = malloc(sizeof(float) * (size_t)k * d), *dist = malloc(sizeof(float) * (size_t)M);
    for (int64_t i = 0; i < k; i++) memcpy(bank + i * d, y + sel[i] * d, sizeof(float) * d);
    ds_nn_search(bank, k, y, M, d, 1, DS_METRIC_L2, th, dist, NULL);
    double r = 0;
    for (int64_t i = 0; i < M; i++) r = fmax(r, dist[i]);
    free(bank);
    free(dist);
    return r;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s FEATS.npy RATIO THREADS [BLOCK...]\n", argv[0]);
        return 2;
    }
    ds_npy_map m;
    if (ds_npy_map_f32(argv[1], &m) != DS_OK) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    const int D = (int)m.shape[m.n_dims - 1];
    int64_t M = 1;
    for (int i = 0; i < m.n_dims - 1; i++) M *= m.shape[i];
    const double ratio = atof(argv[2]);
    const int th = atoi(argv[3]);
    const int64_t k = (int64_t)((double)M * ratio);
    /* the projection ds_coreset_greedy makes: normalise, then W [D, 128] ~ N(0, 1/128) from seed 0 */
    const int d = 128;
    float *x = malloc(sizeof(float) * (size_t)M * D), *w = malloc(sizeof(float) * (size_t)D * d);
    float *y = malloc(sizeof(float) * (size_t)M * d);
    ds_l2_normalize_rows(m.data, x, M, D);
    ds_rng r;
    ds_rng_seed(&r, 0);
    for (int i = 0; i < D * d; i++) w[i] = (float)(ds_rng_normal(&r) / sqrt((double)d));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, d, D, 1.0f, x, D, w, d, 0.0f, y, d);
    free(x);
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)k);
    ds_coreset_params p = ds_coreset_defaults();
    p.proj_dim = 0; /* y is projected already */
    p.start = 0;
    p.n_threads = th;
    printf("# %s: %lld points of %d dims (projected to %d), ratio %g: %lld selected, %d threads\n", argv[1],
           (long long)M, D, d, ratio, (long long)k, th);
    printf("method\tblock\tseconds\tcpu_seconds\tradius\tratio_to_exact\n");
    double t0 = ds_now_ms(), c0 = cpu_s();
    ds_coreset_greedy(y, M, d, k, &p, sel);
    double te = (ds_now_ms() - t0) / 1e3, ce = cpu_s() - c0, re = radius(y, M, d, sel, k, th);
    printf("exact\t-\t%.1f\t%.1f\t%.5f\t1.000\n", te, ce, re);
    fflush(stdout);
    const float *rows[1] = {y};
    int64_t n[1] = {M};
    ds_row_segments sg = {rows, n, 1, d};
    ds_row_source src = ds_row_source_of_segments(&sg);
    for (int a = 4; a < argc; a++) {
        int64_t B = atoll(argv[a]);
        t0 = ds_now_ms(), c0 = cpu_s();
        if (ds_coreset_blocked(&src, k, &p, B, DS_CORESET_DEFAULT_OVERSAMPLE, sel) != DS_OK) {
            fprintf(stderr, "%s\n", ds_last_error());
            return 1;
        }
        double tb = (ds_now_ms() - t0) / 1e3, cb = cpu_s() - c0, rb = radius(y, M, d, sel, k, th);
        printf("blocked\t%lld\t%.1f\t%.1f\t%.5f\t%.3f\n", (long long)B, tb, cb, rb, rb / re);
        fflush(stdout);
    }
    ds_npy_unmap(&m);
    return 0;
}
