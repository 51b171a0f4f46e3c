/* CNN backbone benchmark (MobileNetV2 / ResNet patch features).
 *
 *   bench_cnn --weights FILE [--size 224] [--batch 1] [--threads 2] [--runs 7] [--dtype f32|bf16]
 *
 * Loads the backbone through ds_backbone_load (as the commands do), runs one
 * warm-up forward (it also sizes and first-touches the workspace), then
 * --runs timed ds_backbone_forward calls on a fixed pseudo-random input, and
 * prints one JSON line: the description, load time, and the median and min
 * ms per image. The PyTorch baseline for the same shapes is bench_cnn.py.
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
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            if (ds_backbone_dtype_parse(argv[++i], &dtype) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 2;
        }
        else {
            fprintf(stderr, "usage: bench_cnn --weights FILE [--size 224] [--batch 1] [--threads 2] [--runs 7] [--dtype f32|bf16]\n");
            return 2;
        }
    }
    if (!weights || size < 32 || batch < 1 || runs < 1 || runs > 1000) {
        fprintf(stderr, "bench_cnn: --weights is required; size >= 32, batch >= 1, 1 <= runs <= 1000\n");
        return 2;
    }
    double t0 = now_s();
    ds_backbone *bb = NULL;
    if (ds_backbone_load(weights, &(ds_backbone_params){.n_threads = threads, .dtype = dtype}, &bb) != DS_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
        return 1;
    }
    double load_ms = 1e3 * (now_s() - t0);
    int gh, gw, D;
    if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
        ds_backbone_free(bb);
        return 1;
    }
    size_t n_in = (size_t)batch * 3 * size * size, n_out = (size_t)batch * gh * gw * D;
    float *x = malloc(sizeof(float) * n_in), *f = malloc(sizeof(float) * n_out);
    double *ms = malloc(sizeof(double) * (size_t)runs);
    if (!x || !f || !ms) return 1;
    uint32_t r = 12345;
    for (size_t i = 0; i < n_in; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    t0 = now_s();
    if (ds_backbone_forward(bb, x, batch, size, size, 1, f, NULL) != DS_OK) {
        fprintf(stderr, "bench_cnn: %s\n", ds_last_error());
        return 1;
    }
    double warm_ms = 1e3 * (now_s() - t0) / batch;
    for (int i = 0; i < runs; i++) {
        t0 = now_s();
        ds_backbone_forward(bb, x, batch, size, size, 1, f, NULL);
        ms[i] = 1e3 * (now_s() - t0) / batch;
    }
    qsort(ms, (size_t)runs, sizeof *ms, cmp_double);
    double checksum = 0;
    for (size_t i = 0; i < n_out; i++) checksum += f[i];
    printf("{\"backbone\": \"%s\", \"size\": %d, \"batch\": %d, \"threads\": %d, \"runs\": %d, \"load_ms\": %.1f, "
           "\"warmup_ms_per_image\": %.1f, \"median_ms_per_image\": %.2f, \"min_ms_per_image\": %.2f, "
           "\"grid\": [%d, %d, %d], \"checksum\": %.6g}\n",
           ds_backbone_describe(bb), size, batch, threads, runs, load_ms, warm_ms, ms[runs / 2], ms[0], gh, gw, D,
           checksum);
    free(x), free(f), free(ms);
    ds_backbone_free(bb);
    return 0;
}
