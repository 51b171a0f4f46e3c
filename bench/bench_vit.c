/* ViT forward benchmark of dinoscope (driven by bench/run_vit_bench.sh).
 *
 *   bench_vit --weights F.safetensors --input F.f32 --size S --batch B
 *             [--threads 2] [--layers 4] [--runs N | --budget-s T] [--feats-out F.f32]
 *       Loads the weights, creates the ViT with n_threads, runs one warm-up
 *       forward (it also allocates and first-touches the workspace), then N
 *       timed ds_vit_forward calls, and prints one JSON line with the median.
 *       --runs 0 (default): as many runs as fit --budget-s after the warm-up,
 *       clamped to [2, 10]. --feats-out writes the [B,N,D] features (f32) of
 *       the last run for the PyTorch comparison. The input file holds at
 *       least B images [B,3,S,S] f32.
 *   bench_vit ... --serve
 *       As above up to the warm-up, then reads commands from stdin for
 *       bench/bench_speed.py's interleaved runs: "run" times one forward and
 *       prints {"ms": ...}; "feats PATH" writes the last features (f32);
 *       "quit" (or EOF) ends.
 *   --dtype f32|bf16 (default f32): ds_vit_params.dtype.
 *   bench_vit --sgemm N [--threads 2] [--runs 10]
 *       The machine's sgemm rate: cblas_sgemm C = A B^T (the layout of the
 *       ViT's Linear layers) on N x N x N with OpenBLAS' own threads, after a
 *       warm-up; the median and the best run, JSON line.
 *   bench_vit --info
 *       OpenBLAS core and build config, OpenMP threads (JSON line).
 *
 * FLOPs are counted as 2*M*N*K per GEMM (patch embedding, qkv, q k^T and
 * a v per head, proj, fc1, fc2); LayerNorm, softmax, GELU are not counted. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dinoscope/vit.h"
#include "dinoscope/weights.h"

/* OpenBLAS extensions (declared in its cblas.h, repeated so that the build
 * does not depend on which cblas.h the alternatives system picked). */
extern void openblas_set_num_threads(int num_threads);
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int clamp_runs(double budget_s, double warm_s) {
    int n = (int)(budget_s / (warm_s > 1e-6 ? warm_s : 1e-6));
    return n < 2 ? 2 : n > 10 ? 10 : n;
}

/* One image: 2*M*N*K summed over the forward's GEMMs. */
static double vit_gflop(const ds_vit_arch *a, int S) {
    double g = S / a->patch_size, N = g * g, T = 1 + a->n_registers + N, D = a->embed_dim;
    double hd = D / a->n_heads, ffn_in = a->swiglu ? 2.0 * a->ffn_hidden : a->ffn_hidden;
    double blk = 2 * T * D * 3 * D + a->n_heads * (2 * T * T * hd) * 2 + 2 * T * D * D + 2 * T * D * ffn_in +
                 2 * T * a->ffn_hidden * D;
    return (2 * N * 3 * a->patch_size * a->patch_size * D + a->depth * blk) / 1e9;
}

static int bench_sgemm(int n, int threads, int runs) {
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * n;
    float *A = malloc(nn * sizeof(float)), *B = malloc(nn * sizeof(float)), *C = malloc(nn * sizeof(float));
    if (!A || !B || !C) {
        fprintf(stderr, "bench_vit: out of memory for sgemm %d\n", n);
        return 1;
    }
    for (size_t i = 0; i < nn; i++) A[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f, B[i] = A[(i * 13) % nn], C[i] = 0;
    double *t = malloc(sizeof(double) * (size_t)(runs + 1));
    for (int r = 0; r <= runs; r++) { /* r = 0: warm-up */
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        t[r] = now_s() - t0;
    }
    double med = median(t + 1, runs), best = t[1], flop = 2.0 * n * n * (double)n; /* t + 1 is sorted */
    printf("{\"impl\": \"sgemm\", \"n\": %d, \"threads\": %d, \"runs\": %d, \"median_ms\": %.2f, \"min_ms\": %.2f, "
           "\"gflops\": %.2f, \"best_gflops\": %.2f}\n",
           n, threads, runs, med * 1e3, best * 1e3, flop / med / 1e9, flop / best / 1e9);
    free(A), free(B), free(C), free(t);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_vit --weights F --input F --size S --batch B [--threads T] [--layers N]\n"
                    "                 [--runs N | --budget-s T] [--feats-out F] [--dtype f32|bf16] [--serve]\n"
                    "       bench_vit --sgemm N [--threads T] [--runs N]\n"
                    "       bench_vit --info\n");
}

int main(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *feats_out = NULL;
    int S = 0, B = 0, threads = 2, layers = 4, runs = 0, sgemm = 0, info = 0, serve = 0;
    ds_dtype dtype = DS_DTYPE_F32;
    double budget_s = 10.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--info")) {
            info = 1;
            continue;
        }
        if (!strcmp(a, "--serve")) {
            serve = 1;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--weights")) weights = v;
        else if (!strcmp(a, "--input")) input = v;
        else if (!strcmp(a, "--feats-out")) feats_out = v;
        else if (!strcmp(a, "--size")) S = atoi(v);
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--layers")) layers = atoi(v);
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else if (!strcmp(a, "--budget-s")) budget_s = atof(v);
        else if (!strcmp(a, "--sgemm")) sgemm = atoi(v);
        else if (!strcmp(a, "--dtype") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            dtype = !strcmp(v, "bf16") ? DS_DTYPE_BF16 : DS_DTYPE_F32;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (info) {
        printf("{\"impl\": \"info\", \"openblas_core\": \"%s\", \"openblas_config\": \"%s\", \"omp_max_threads\": %d}\n",
               openblas_get_corename(), openblas_get_config(), omp_get_max_threads());
        return 0;
    }
    if (sgemm > 0) return bench_sgemm(sgemm, threads, runs > 0 ? runs : 10);
    if (!weights || !input || S <= 0 || B <= 0) {
        usage();
        return 2;
    }

    ds_weights *w = NULL;
    ds_vit *vit = NULL;
    if (ds_weights_load(weights, &w) != DS_OK || ds_vit_create(w, &(ds_vit_params){.n_threads = threads, .dtype = dtype}, &vit) != DS_OK) {
        fprintf(stderr, "bench_vit: %s\n", ds_last_error());
        ds_weights_free(w);
        return 1;
    }
    const ds_vit_arch *arch = ds_vit_get_arch(vit);
    int g = S / arch->patch_size, N = g * g, D = arch->embed_dim;
    size_t n_in = (size_t)B * 3 * S * S, n_feats = (size_t)B * N * D;
    float *x = malloc(n_in * sizeof(float)), *feats = malloc(n_feats * sizeof(float));
    FILE *f = fopen(input, "rb");
    if (!x || !feats || !f || fread(x, sizeof(float), n_in, f) != n_in) {
        fprintf(stderr, "bench_vit: cannot read %zu floats from '%s'\n", n_in, input);
        return 1;
    }
    fclose(f);

    double t0 = now_s();
    if (ds_vit_forward(vit, x, B, S, S, layers, feats, NULL) != DS_OK) { /* warm-up */
        fprintf(stderr, "bench_vit: %s\n", ds_last_error());
        return 1;
    }
    double warm = now_s() - t0;
    if (serve) {
        printf("{\"ready\": 1, \"warmup_ms\": %.2f}\n", warm * 1e3);
        fflush(stdout);
        char line[1200];
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\n")] = 0;
            if (!strcmp(line, "run")) {
                t0 = now_s();
                ds_status st = ds_vit_forward(vit, x, B, S, S, layers, feats, NULL);
                printf(st == DS_OK ? "{\"ms\": %.3f}\n" : "{\"error\": 1}\n", (now_s() - t0) * 1e3);
            } else if (!strncmp(line, "feats ", 6)) {
                FILE *o = fopen(line + 6, "wb");
                int ok = o && fwrite(feats, sizeof(float), n_feats, o) == n_feats;
                ok = (o && fclose(o) == 0) && ok;
                printf("{\"written\": %d}\n", ok);
            } else {
                break;
            }
            fflush(stdout);
        }
        free(x), free(feats);
        ds_vit_free(vit);
        ds_weights_free(w);
        return 0;
    }
    if (runs <= 0) runs = clamp_runs(budget_s, warm);
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int r = 0; r < runs; r++) {
        t0 = now_s();
        ds_vit_forward(vit, x, B, S, S, layers, feats, NULL);
        t[r] = now_s() - t0;
    }
    double med_ms = median(t, runs) * 1e3, min_ms = t[0] * 1e3, gf = vit_gflop(arch, S); /* t is sorted */
    printf("{\"impl\": \"dinoscope\", \"model\": \"%s\", \"size\": %d, \"batch\": %d, \"threads\": %d, \"runs\": %d, "
           "\"warmup_ms\": %.2f, \"median_ms\": %.2f, \"min_ms\": %.2f, \"ms_per_img\": %.2f, \"min_ms_per_img\": %.2f, "
           "\"gflop_per_img\": %.3f, \"gflops\": %.2f, \"best_gflops\": %.2f}\n",
           D == 384 ? "vits14" : D == 768 ? "vitb14" : "vit", S, B, threads, runs, warm * 1e3, med_ms, min_ms, med_ms / B,
           min_ms / B, gf, gf * B / (med_ms / 1e3), gf * B / (min_ms / 1e3));
    if (feats_out) {
        FILE *o = fopen(feats_out, "wb");
        if (!o || fwrite(feats, sizeof(float), n_feats, o) != n_feats || fclose(o) != 0) {
            fprintf(stderr, "bench_vit: cannot write '%s'\n", feats_out);
            return 1;
        }
    }
    free(t), free(x), free(feats);
    ds_vit_free(vit);
    ds_weights_free(w);
    return 0;
}
