/* Internal to src/scorer (and its tests): kernels shared by the scorers. */
#ifndef DS_SCORER_INTERNAL_H
#define DS_SCORER_INTERNAL_H

#include "core/gemm_bf16.h"
#include "core/internal.h"
#include "dinoscope/scorer.h"

/* Which inner loop ds_nn_search uses. AUTO picks the fused AVX-512 kernel
 * when the CPU has AVX-512F, else the portable cblas_sgemm path. Tests
 * force each one to check both against the same references. */
typedef enum { DS_NN_PATH_AUTO = 0, DS_NN_PATH_BLAS = 1, DS_NN_PATH_AVX512 = 2 } ds_nn_path;

ds_status ds_nn_search_ex(const float *bank, int64_t M, const float *queries, int64_t Q, int D, int k,
                          ds_metric metric, int n_threads, ds_nn_path path, float *dist, int64_t *idx);

/* Exact k-NN over a bf16 bank (src/scorer/nn.c): bank [M = bank->n, D =
 * bank->k] packed by ds_bf16_mat_pack; sq_norms [M] the squared norms of
 * its bf16 rows and inv_norms [M] their inverse norms (0 for a zero row);
 * queries [Q, D] f32. L2 distances are exact between the f32 query and the
 * bf16 row, cosine ones between the query and the bf16 row scaled to unit
 * norm (ranked on bf16 products, the best k + 8 re-ranked exactly);
 * otherwise as ds_nn_search. kernel: DS_GEMM_BF16_AUTO except in tests. */
ds_status ds_nn_search_bf16(const ds_bf16_mat *bank, const float *sq_norms, const float *inv_norms,
                            const float *queries, int64_t Q, int k, ds_metric metric, int n_threads,
                            ds_gemm_bf16_kernel kernel, float *dist, int64_t *idx);

/* ds_coreset_greedy with portable = 1 forcing the portable (scalar) update
 * kernel instead of AVX-512, so that tests cover both. */
ds_status ds_coreset_greedy_ex(const float *x, int64_t N, int D, int64_t n_select, const ds_coreset_params *p,
                               int portable, int64_t *selected);

/* The coreset parameters of patchbank's selection from its fit params:
 * projection, seed, random start (anomalib's), threads, progress; no
 * normalisation (the caller sets l2_normalize). Can't fail. */
static inline ds_coreset_params ds_patchbank_coreset_params(const ds_scorer_params *p) {
    ds_coreset_params cp = ds_coreset_defaults();
    cp.proj_dim = p->coreset_proj_dim;
    cp.seed = p->seed;
    cp.start = -1;
    cp.n_threads = p->n_threads;
    cp.progress = p->progress;
    cp.progress_user = p->progress_user;
    return cp;
}

/* 1 if the CPU (and the compiler) can run the AVX-512 kernels. */
int ds_cpu_has_avx512(void);

/* dst[i] = src[i] / ||src[i]|| for n rows of D (rows of norm 0 stay 0).
 * dst may equal src. */
void ds_l2_normalize_rows(const float *src, float *dst, int64_t n, int D);

/* An image score from patch scores ps[N] by rule r (max, or the mean of the
 * top 1%: AnomalyDINO's mean_top1p). scratch: [N] floats, may be ps itself
 * (then ps is reordered). */
float ds_reduce_patch_scores(const float *ps, int64_t N, ds_reduce r, float *scratch);

/* z' P z for P [n, n] f32 row-major and z [n] in double: the squared
 * Mahalanobis distance of the gaussian and padim scorers. */
static inline double ds_quad_form(const float *P, const double *z, int n) {
    double q = 0;
    for (int a = 0; a < n; a++) {
        const float *p = P + (size_t)a * n;
        double s = 0;
        for (int b = 0; b < n; b++) s += (double)p[b] * z[b];
        q += z[a] * s;
    }
    return q;
}

/* Gaussian N(0,1) stream from a 64-bit seed (splitmix64 + Box-Muller):
 * deterministic across platforms up to libm's log/cos rounding. */
typedef struct {
    uint64_t state;
    int have_spare;
    double spare;
} ds_rng;
void ds_rng_seed(ds_rng *r, uint64_t seed);
uint64_t ds_rng_u64(ds_rng *r);
double ds_rng_normal(ds_rng *r);

#endif
