/* CNN backbone benchmark (MobileNetV2 / ResNet patch features).
 *
 *   bench_cnn --weights FILE [--size 224] [--batch 1] [--threads 2] [--runs 7] [--dtype f32|bf16] [--compare]
 *
 * Loads the backbone through ds_backbone_load (as the commands do), runs one
 * warm-up forward (it also sizes and first-touches the workspace), then
 * --runs timed ds_backbone_forward calls on a fixed pseudo-random input, and
 * prints one JSON line: the description, load time, and the median and min
 * ms per image. The PyTorch baseline for the same shapes is bench_cnn.py.
 * --compare also loads the backbone in bf16 and times both (f32 as given by
 * --dtype f32) alternately, run by run in a rotated order, so that both
 * see the same load: a second line for bf16 and one with the median of the
 * per-run bf16 / f32 ratios.
 *
 * Build (no CMake target, like bench_vit):
 *   gcc -O2 -march=native -fopenmp -Iinclude -Isrc bench/bench_cnn.c \
 *       build/libdinoscope.a $(pkg-config --libs openblas vips libcjson libzip zlib) -lm -o build/bench_cnn
 * Weights of the real sizes with random values: bench/make_cnn_bench_weights.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dinoscope/backbone.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *weights = NULL;
    int size = 224, batch = 1, threads = 2, runs = 7;
    ds_dtype dtype = DS_DTYPE_F32;
    int compare = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--compare")) compare = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            if (ds_backbone_dtype_parse(argv[++i], &dtype) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 2;
        }
        else {
            fprintf(stderr, "usage: bench_cnn --weights FILE [--size 224] [--batch 1] [--threads 2] [--runs 7] [--dtype f32|bf16] [--compare]\n");
            return 2;
        }
    }
    if (!weights || size < 32 || batch < 1 || runs < 1 || runs > 1000) {
        fprintf(stderr, "bench_cnn: --weights is required; size >= 32, batch >= 1, 1 <= runs <= 1000\n");
        return 2;
    }
    if (compare) dtype = DS_DTYPE_F32;
    int n_bb = compare ? 2 : 1;
    ds_backbone *bbs[2] = {NULL, NULL};
    double load_ms[2], warm_ms[2];
    for (int k = 0; k < n_bb; k++) {
        double t0 = now_s();
        ds_backbone_params bp = {.n_threads = threads, .dtype = k ? DS_DTYPE_BF16 : dtype};
        if (ds_backbone_load(weights, &bp, &bbs[k]) != DS_OK) {
            fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
            return 1;
        }
        load_ms[k] = 1e3 * (now_s() - t0);
    }
    int gh, gw, D;
    if (ds_backbone_grid(bbs[0], size, size, &gh, &gw, &D) != DS_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
        return 1;
    }
    size_t n_in = (size_t)batch * 3 * size * size, n_out = (size_t)batch * gh * gw * D;
    float *x = malloc(sizeof(float) * n_in), *f = malloc(sizeof(float) * n_out);
    double *ms = malloc(sizeof(double) * 3 * (size_t)runs);
    if (!x || !f || !ms) return 1;
    uint32_t r = 12345;
    for (size_t i = 0; i < n_in; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    for (int k = 0; k < n_bb; k++) {
        double t0 = now_s();
        if (ds_backbone_forward(bbs[k], x, batch, size, size, 1, f, NULL) != DS_OK) {
            fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
            return 1;
        }
        warm_ms[k] = 1e3 * (now_s() - t0) / batch;
    }
    for (int i = 0; i < runs; i++)
        for (int j = 0; j < n_bb; j++) {
            int k = (i + j) % n_bb;
            double t0 = now_s();
            ds_backbone_forward(bbs[k], x, batch, size, size, 1, f, NULL);
            ms[(size_t)k * runs + i] = 1e3 * (now_s() - t0) / batch;
        }
    for (int i = 0; compare && i < runs; i++) ms[2 * (size_t)runs + i] = ms[(size_t)runs + i] / ms[i];
    for (int k = 0; k < n_bb; k++) {
        double *m = ms + (size_t)k * runs, checksum = 0;
        qsort(m, (size_t)runs, sizeof *m, cmp_double);
        ds_backbone_forward(bbs[k], x, batch, size, size, 1, f, NULL);
        for (size_t i = 0; i < n_out; i++) checksum += f[i];
        printf("{\"backbone\": \"%s\", \"size\": %d, \"batch\": %d, \"threads\": %d, \"runs\": %d, \"load_ms\": %.1f, "
               "\"warmup_ms_per_image\": %.1f, \"median_ms_per_image\": %.2f, \"min_ms_per_image\": %.2f, "
               "\"grid\": [%d, %d, %d], \"checksum\": %.6g}\n",
               ds_backbone_describe(bbs[k]), size, batch, threads, runs, load_ms[k], warm_ms[k], m[runs / 2], m[0], gh, gw,
               D, checksum);
    }
    if (compare) {
        double *q = ms + 2 * (size_t)runs;
        qsort(q, (size_t)runs, sizeof *q, cmp_double);
        printf("{\"bf16_over_f32_median_of_run_ratios\": %.3f, \"bf16_over_f32_min_ratio\": %.3f}\n", q[runs / 2],
               ms[runs] / ms[0]);
    }
    free(x), free(f), free(ms);
    ds_backbone_free(bbs[0]);
    ds_backbone_free(bbs[1]);
    return 0;
}
