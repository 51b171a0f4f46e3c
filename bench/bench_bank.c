/* The bank representations side by side on one fitted patch bank
 * (docs/bank.md has the table and the commands). Build (after building the
 * library):
 *   gcc -O3 -march=native -fopenmp -Iinclude -Isrc bench/bench_bank.c \
 *       build/libdinoscope.a $(pkg-config --libs openblas vips libcjson libzip zlib) -lstdc++ -lm -o build/bench_bank
 *
 *   bench_bank MODEL.dsm TEST_FEATS.npy OUTDIR THREADS [NPROBE...]
 *     MODEL: a model with an f32 patchbank scorer (fit --scorer patchbank);
 *     TEST_FEATS: `dinoscope extract` of the test images [n, N, D].
 *     For f32, bf16, f16, int8 and ivfpq (at the default nprobe, then at each
 *     NPROBE given) the bank is rebuilt from the model's f32 rows (exactly
 *     what `fit --bank X` builds from the same coreset), every test image's
 *     patches are searched (k = 1, the scorer's metric) and timed, and the
 *     nearest row compared with the f32 search's (recall@1). One line per
 *     representation, "key=value ...". Each bank is also written as
 *     OUTDIR/<repr>.dsm (the model with that bank, same calibration) for
 *     `dinoscope eval`.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "scorer/scorer_internal.h"

static int write_model(const ds_model *m, int si, const ds_nn_bank *b, const char *path) {
    const ds_scorer *s = ds_model_scorer(m, si);
    ds_scorer_scalar sc[24];
    ds_scorer_array arr[4];
    int ns = 0;
    for (int i = 0; i < ds_scorer_n_scalars(s) && ns < 20; i++) {
        ds_scorer_get_scalar(s, i, &sc[ns]);
        if (strcmp(sc[ns].name, "bank_repr") && strcmp(sc[ns].name, "nprobe")) ns++;
    }
    int nprobe = 0;
    ds_nn_bank_ivf_info(b, &nprobe, NULL);
    if (ds_nn_bank_repr(b) != DS_BANK_F32) sc[ns++] = (ds_scorer_scalar){"bank_repr", ds_nn_bank_repr(b)};
    if (nprobe) sc[ns++] = (ds_scorer_scalar){"nprobe", nprobe};
    int na = ds_nn_bank_arrays(b, arr);
    ds_scorer *r = NULL;
    if (ds_scorer_from_parts(DS_SCORER_PATCHBANK, sc, ns, arr, na, &r) != DS_OK) return 1;
    const ds_scorer *one[1] = {r};
    ds_status st = ds_model_save(path, ds_model_get_info(m), one, ds_model_calibration(m, si), 1);
    ds_scorer_free(r);
    return st != DS_OK;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench_bank MODEL.dsm TEST_FEATS.npy OUTDIR THREADS [NPROBE...]\n");
        return 2;
    }
    ds_model *m = NULL;
    if (ds_model_load(argv[1], &m) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
    int si = -1;
    for (int i = 0; i < ds_model_n_scorers(m); i++)
        if (ds_scorer_get_kind(ds_model_scorer(m, i)) == DS_SCORER_PATCHBANK) si = i;
    const ds_nn_bank *fb = si >= 0 ? ds_scorer_bank(ds_model_scorer(m, si)) : NULL;
    if (!fb || ds_nn_bank_repr(fb) != DS_BANK_F32) return fprintf(stderr, "the model needs an f32 patchbank\n"), 1;
    ds_scorer_params sp;
    ds_scorer_params_of(ds_model_scorer(m, si), &sp);
    const int64_t M = ds_nn_bank_rows(fb);
    const int D = ds_nn_bank_dim(fb);
    float *rows = malloc(sizeof(float) * (size_t)M * D);
    for (int64_t j = 0; j < M; j++) ds_nn_bank_row(fb, j, rows + j * D);
    float *te = NULL;
    int nd = 0;
    int64_t sh[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(argv[2], &te, &nd, sh) != DS_OK || nd != 3 || sh[2] != D)
        return fprintf(stderr, "%s: expected [n, N, %d] features\n", argv[2], D), 1;
    const int64_t n = sh[0], N = sh[1];
    const int threads = atoi(argv[4]);
    if (sp.metric == DS_METRIC_COSINE) ds_l2_normalize_rows(te, te, n * N, D);
    float *dist = malloc(sizeof(float) * (size_t)(n * N)), *d32 = malloc(sizeof(float) * (size_t)(n * N));
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)(n * N)), *i32 = malloc(sizeof(int64_t) * (size_t)(n * N));
    const int reprs[] = {DS_BANK_F32, DS_BANK_BF16, DS_BANK_F16, DS_BANK_INT8, DS_BANK_IVFPQ};
    int n_runs = 5 + (argc - 5);
    for (int run = 0; run < n_runs; run++) {
        ds_bank_repr repr = (ds_bank_repr)reprs[run < 5 ? run : 4];
        ds_ivfpq_params ip = ds_ivfpq_defaults();
        ip.n_threads = threads;
        ds_nn_bank *b = NULL;
        double t0 = ds_now_ms();
        if (ds_nn_bank_create_ex(rows, M, D, repr, &ip, &b) != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
        double build_ms = ds_now_ms() - t0;
        if (run >= 5) ds_nn_bank_set_nprobe(b, atoi(argv[run]));
        double ms = 0;
        for (int64_t i = 0; i < n; i++) {
            double t = ds_now_ms();
            if (ds_nn_bank_search(b, te + i * N * D, N, 1, sp.metric, threads, dist + i * N, idx + i * N) != DS_OK)
                return fprintf(stderr, "%s\n", ds_last_error()), 1;
            ms += ds_now_ms() - t;
        }
        if (run == 0) {
            memcpy(d32, dist, sizeof(float) * (size_t)(n * N));
            memcpy(i32, idx, sizeof(int64_t) * (size_t)(n * N));
        }
        int64_t hit = 0;
        double derr = 0;
        for (int64_t i = 0; i < n * N; i++) {
            hit += ds_nn_bank_source_row(b, idx[i]) == i32[i];
            derr += fabs((double)dist[i] - d32[i]);
        }
        int nprobe = 0, nlist = 0;
        ds_nn_bank_ivf_info(b, &nprobe, &nlist);
        printf("repr=%s M=%lld D=%d bytes=%zu f32_bytes=%zu ratio=%.4f build_ms=%.0f search_ms_per_image=%.2f "
               "recall1=%.4f mean_abs_dist_err=%.3g nlist=%d nprobe=%d\n",
               ds_bank_repr_name(repr), (long long)M, D, ds_nn_bank_bytes(b), (size_t)M * D * 4,
               (double)ds_nn_bank_bytes(b) / ((double)M * D * 4), build_ms, ms / (double)n, (double)hit / (double)(n * N),
               derr / (double)(n * N), nlist, nprobe);
        fflush(stdout);
        char path[1024];
        if (run < 5) {
            snprintf(path, sizeof path, "%s/%s.dsm", argv[3], ds_bank_repr_name(repr));
            if (write_model(m, si, b, path)) return fprintf(stderr, "%s: %s\n", path, ds_last_error()), 1;
        }
        ds_nn_bank_free(b);
    }
    free(rows);
    free(te);
    free(dist);
    free(d32);
    free(idx);
    free(i32);
    ds_model_free(m);
    return 0;
}
