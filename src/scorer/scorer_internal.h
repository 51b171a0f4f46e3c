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

/* Top-k lists ordered by (distance, row), shared by the searches. */
static inline int ds_topk_before(float a, int64_t ia, float b, int64_t ib) { return a < b || (a == b && ia < ib); }
/* Inserts (v, j) into key/id[0..p), sorted by (distance, row), moving the
 * larger entries up by one (key/id[p] is overwritten). */
static inline void ds_topk_insert(float *key, int64_t *id, int p, float v, int64_t j) {
    while (p > 0 && ds_topk_before(v, j, key[p - 1], id[p - 1])) {
        key[p] = key[p - 1];
        id[p] = id[p - 1];
        p--;
    }
    key[p] = v;
    id[p] = j;
}
/* Inserts (v, j) into the ascending list key/id of length k if it beats the
 * last entry; returns the new threshold (the k-th key). */
static inline float ds_topk_push(float *key, int64_t *id, int k, float v, int64_t j) {
    if (ds_topk_before(v, j, key[k - 1], id[k - 1])) ds_topk_insert(key, id, k - 1, v, j);
    return key[k - 1];
}

/* ds_nn_search over rows that are decoded to f32 block by block (f16 and
 * int8 banks): decode(ctx, j0, n, out) writes rows [j0, j0+n) as out [n, D]
 * f32; it is called from several threads at once. Distances are exact
 * between the query and the decoded rows. */
typedef struct {
    void (*decode)(const void *ctx, int64_t j0, int64_t n, float *out);
    const void *ctx;
} ds_nn_rows;
ds_status ds_nn_search_rows(const ds_nn_rows *rows, int64_t M, const float *queries, int64_t Q, int D, int k,
                            ds_metric metric, int n_threads, ds_nn_path path, float *dist, int64_t *idx);

/* The model-file arrays of a bank (src/scorer/bank.c): fills out[] (at most
 * 4) with views of its data, returns how many. */
int ds_nn_bank_arrays(const ds_nn_bank *b, ds_scorer_array *out);
/* A bank of representation repr over the arrays of a model file (views, not
 * copied), checked as untrusted input; kind names the scorer in errors.
 * nprobe: IVF-PQ's stored setting. Returns DS_OK, DS_ERR_FORMAT, DS_ERR_NOMEM. */
ds_status ds_nn_bank_from_arrays(ds_bank_repr repr, const ds_scorer_array *arr, int n, int nprobe, const char *kind,
                                 ds_nn_bank **out);

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

/* patchbank's coreset: n_keep of src's rows (selected in the L2-normalised
 * space when l2_normalize), exact greedy or blocked as p->coreset_method
 * resolves for src->n_rows. sel: [n_keep] row indices. */
ds_status ds_patchbank_select(const ds_row_source *src, int64_t n_keep, const ds_scorer_params *p, int l2_normalize,
                              int64_t *sel);

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
/* perm [n] = 0..n-1 with its first n_take entries those of a seeded
 * Fisher-Yates shuffle (a uniform sample without replacement, in draw
 * order). */
void ds_rng_shuffle_prefix(uint64_t seed, int64_t n, int64_t n_take, int64_t *perm);

#endif
