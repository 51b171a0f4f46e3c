/* Exact k-nearest-neighbour search, brute force through a blocked GEMM.
 *
 * As faiss' IndexFlatL2 (exhaustive_L2sqr_blas), candidates are ranked with
 * ||a-b||^2 = ||a||^2 + ||b||^2 - 2 a.b, dropping ||a||^2 which is constant
 * per query; cosine on normalised rows ranks by 1 - a.b. Unlike faiss:
 *   - the threads split the BANK (each packs its block once and runs every
 *     query against it, keeping a private top-k per query, merged at the end),
 *     so the bank streams from memory once and nothing is shared while
 *     searching;
 *   - on AVX-512 CPUs the dot products come from our own 12x32 register-tiled
 *     kernel with the top-k test fused into its epilogue: the QxM score
 *     matrix is never written, not even a block of it. OpenBLAS 0.3.21 runs
 *     its AVX2 (Haswell) sgemm kernel on AMD Zen 4/5, at about half the speed
 *     of a 512-bit kernel there;
 *   - the k winners' distances are recomputed directly (sum of squared
 *     differences, in double), so near-duplicates get ~0 rather than the
 *     cancellation noise of the expansion.
 * The portable path (no AVX-512) is the same blocking with cblas_sgemm on a
 * [QB x NB] tile per thread, BLAS single-threaded inside our OpenMP region. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NN_HAVE_X86 1
#else
#define NN_HAVE_X86 0
#endif

#include "scorer/scorer_internal.h"

enum {
    NN_MR = 12,            /* queries per register tile */
    NN_NR = 32,            /* bank rows per register tile (2 zmm) */
    NN_BLOCK_BYTES = 480 << 10, /* packed bank block per thread: fits Zen's 1 MiB L2 */
    NN_QB = 256,           /* portable path: queries per sgemm tile */
};

int ds_cpu_has_avx512(void) {
#if NN_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

/* Sentinel of an empty top-k slot: sorts after every real candidate. */
#define NN_EMPTY_ID INT64_MAX

#define nn_before ds_topk_before
#define insert_sorted ds_topk_insert
#define topk_push ds_topk_push

static int64_t nn_block_rows(int D, int64_t M) {
    int64_t nb = (int64_t)NN_BLOCK_BYTES / ((int64_t)D * 4);
    nb = nb / NN_NR * NN_NR;
    if (nb < NN_NR) nb = NN_NR;
    /* Smaller blocks when the bank is small, so that both threads get work. */
    int64_t mp = (M + NN_NR - 1) / NN_NR * NN_NR;
    if (nb > mp) nb = mp;
    return nb;
}

/* Ranking key = bias[j] + scale * (a.b): L2: bias = ||b||^2, scale = -2;
 * cosine: bias = 1, scale = -1. Padding rows get bias = +inf (never win). */
static void nn_bias(const float *rows, int64_t n, int64_t n_pad, int D, ds_metric metric, float *bias) {
    for (int64_t j = 0; j < n; j++) {
        if (metric == DS_METRIC_L2) {
            const float *r = rows + j * D;
            float s = 0;
            for (int d = 0; d < D; d++) s += r[d] * r[d];
            bias[j] = s;
        } else {
            bias[j] = 1.0f;
        }
    }
    for (int64_t j = n; j < n_pad; j++) bias[j] = INFINITY;
}

/* Packs rows [n, D] into panels of `width` rows, each [D][width] (k-major),
 * zero padded to n_pad rows (a multiple of width). */
static void nn_pack(const float *rows, int64_t n, int64_t n_pad, int D, int width, float *dst) {
    for (int64_t p = 0; p < n_pad; p += width) {
        float *panel = dst + p * D;
        for (int r = 0; r < width; r++) {
            int64_t j = p + r;
            if (j < n) {
                const float *src = rows + j * D;
                for (int d = 0; d < D; d++) panel[(size_t)d * width + r] = src[d];
            } else {
                for (int d = 0; d < D; d++) panel[(size_t)d * width + r] = 0.0f;
            }
        }
    }
}

#if NN_HAVE_X86
/* One packed bank block against every query panel. qpack: [nqp][D][MR];
 * bpack: [nbp][D][NR]; bias: [nbp*NR]; key/id: [nqp*MR][k] this thread's
 * lists; thr[q] = key[q][k-1] (cached). j0: bank row of the block's first
 * row. */
__attribute__((target("avx512f,fma"))) static void
nn_block_avx512(const float *qpack, int64_t nqp, const float *bpack, const float *bias, int64_t nbp, int D,
                float scale, int64_t j0, int k, float *thr, float *key, int64_t *id) {
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t qp = 0; qp < nqp; qp++) {
        const float *A = qpack + (size_t)qp * (size_t)D * NN_MR;
        for (int64_t bp = 0; bp < nbp; bp++) {
            const float *B = bpack + (size_t)bp * (size_t)D * NN_NR;
            __m512 c[NN_MR][2];
#pragma GCC unroll 12
            for (int i = 0; i < NN_MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
            for (int d = 0; d < D; d++) {
                const __m512 b0 = _mm512_load_ps(B + (size_t)d * NN_NR);
                const __m512 b1 = _mm512_load_ps(B + (size_t)d * NN_NR + 16);
                const float *a = A + (size_t)d * NN_MR;
#pragma GCC unroll 12
                for (int i = 0; i < NN_MR; i++) {
                    const __m512 av = _mm512_set1_ps(a[i]);
                    c[i][0] = _mm512_fmadd_ps(av, b0, c[i][0]);
                    c[i][1] = _mm512_fmadd_ps(av, b1, c[i][1]);
                }
            }
            const __m512 bias0 = _mm512_load_ps(bias + bp * NN_NR);
            const __m512 bias1 = _mm512_load_ps(bias + bp * NN_NR + 16);
#pragma GCC unroll 12
            for (int i = 0; i < NN_MR; i++) {
                const int64_t q = qp * NN_MR + i;
                const __m512 t = _mm512_set1_ps(thr[q]);
                const __m512 k0 = _mm512_fmadd_ps(c[i][0], vscale, bias0);
                const __m512 k1 = _mm512_fmadd_ps(c[i][1], vscale, bias1);
                const uint32_t m = (uint32_t)_mm512_cmp_ps_mask(k0, t, _CMP_LT_OQ) |
                                   ((uint32_t)_mm512_cmp_ps_mask(k1, t, _CMP_LT_OQ) << 16);
                if (__builtin_expect(m != 0, 0)) {
                    float tmp[NN_NR] __attribute__((aligned(64)));
                    _mm512_store_ps(tmp, k0);
                    _mm512_store_ps(tmp + 16, k1);
                    float th = thr[q];
                    for (uint32_t mm = m; mm; mm &= mm - 1) {
                        int j = __builtin_ctz(mm);
                        if (tmp[j] < th)
                            th = topk_push(key + q * k, id + q * k, k, tmp[j], j0 + bp * NN_NR + j);
                    }
                    thr[q] = th;
                }
            }
        }
    }
}
#endif

/* Portable block: C = Q_tile x B_block^T by cblas_sgemm, then scan. */
static void nn_block_blas(const float *queries, int64_t Q, const float *brows, int64_t nb, const float *bias,
                          int D, float scale, int64_t j0, int k, float *thr, float *key, int64_t *id, float *C) {
    for (int64_t q0 = 0; q0 < Q; q0 += NN_QB) {
        int64_t qn = DS_MIN((int64_t)NN_QB, Q - q0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qn, (int)nb, D, 1.0f, queries + q0 * D, D, brows,
                    D, 0.0f, C, (int)nb);
        for (int64_t i = 0; i < qn; i++) {
            int64_t q = q0 + i;
            const float *row = C + i * nb;
            float th = thr[q];
            for (int64_t j = 0; j < nb; j++) {
                float v = bias[j] + scale * row[j];
                if (v < th) th = topk_push(key + q * k, id + q * k, k, v, j0 + j);
            }
            thr[q] = th;
        }
    }
}

/* Direct distance of the final winners (no cancellation). */
static float nn_exact(const float *a, const float *b, int D, ds_metric metric) {
    double s = 0;
    if (metric == DS_METRIC_L2) {
        for (int d = 0; d < D; d++) {
            double t = (double)a[d] - (double)b[d];
            s += t * t;
        }
        return (float)sqrt(s);
    }
    for (int d = 0; d < D; d++) s += (double)a[d] * (double)b[d];
    /* clipped to [0,2] as sklearn's cosine_distances does */
    return (float)DS_MIN(2.0, DS_MAX(0.0, 1.0 - s));
}

/* Empties n_lists entries of top-k lists and n_thr thresholds. */
static void nn_lists_init(float *keys, int64_t *ids, size_t n_lists, float *thrs, size_t n_thr) {
    for (size_t i = 0; i < n_lists; i++) {
        keys[i] = INFINITY;
        ids[i] = NN_EMPTY_ID;
    }
    for (size_t i = 0; i < n_thr; i++) thrs[i] = INFINITY;
}

/* Merges the T threads' lists for query q (each kl long, lists entries
 * apart per thread) into rk/ri [kl], ascending. */
static void nn_merge(const float *keys, const int64_t *ids, size_t lists, int T, int64_t q, int kl, float *rk,
                     int64_t *ri) {
    for (int i = 0; i < kl; i++) {
        rk[i] = INFINITY;
        ri[i] = NN_EMPTY_ID;
    }
    for (int t = 0; t < T; t++) {
        const float *tk = keys + (size_t)t * lists + (size_t)q * kl;
        const int64_t *ti = ids + (size_t)t * lists + (size_t)q * kl;
        for (int i = 0; i < kl && ti[i] != NN_EMPTY_ID; i++) topk_push(rk, ri, kl, tk[i], ti[i]);
    }
}

/* The search over f32 rows bank, or (bank NULL) over rows src decodes
 * block by block into each thread's buffer. */
static ds_status nn_search(const float *bank, const ds_nn_rows *src, int64_t M, const float *queries, int64_t Q, int D,
                           int k, ds_metric metric, int n_threads, ds_nn_path path, float *dist, int64_t *idx) {
    if ((!bank && !src) || !queries || !dist) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank, queries or dist");
    if (M < 1 || Q < 0 || D < 1) return ds_set_error(DS_ERR_ARG, "ds_nn_search: bad sizes M=%lld Q=%lld D=%d",
                                                     (long long)M, (long long)Q, D);
    if (metric != DS_METRIC_L2 && metric != DS_METRIC_COSINE)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: unknown metric %d", (int)metric);
    if (k < 1 || (int64_t)k > M)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: k=%d must be in 1..M (the bank has M=%lld rows)", k,
                            (long long)M);
    if (Q == 0) return DS_OK;
    /* 32-bit ints for cblas and the row offsets in the kernel. */
    if (M > INT32_MAX / 2 || Q > INT32_MAX / 2)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: M=%lld or Q=%lld too large", (long long)M, (long long)Q);

    int use_avx = 0;
#if NN_HAVE_X86
    if (path == DS_NN_PATH_AVX512 && !ds_cpu_has_avx512())
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_nn_search: this CPU has no AVX-512");
    use_avx = path == DS_NN_PATH_AVX512 || (path == DS_NN_PATH_AUTO && ds_cpu_has_avx512());
#else
    if (path == DS_NN_PATH_AVX512) return ds_set_error(DS_ERR_UNSUPPORTED, "ds_nn_search: no AVX-512 build");
#endif

    const float scale = metric == DS_METRIC_L2 ? -2.0f : -1.0f;
    const int64_t nb = nn_block_rows(D, M);
    const int64_t n_blocks = (M + nb - 1) / nb;
    int T = ds_resolve_threads(n_threads);
    if ((int64_t)T > n_blocks) T = (int)n_blocks;
    const int64_t Qp = use_avx ? (Q + NN_MR - 1) / NN_MR * NN_MR : Q;

    /* Workspace, allocated once: per thread a packed block (or a C tile), its
     * bias and its top-k lists; shared: the packed queries. */
    size_t blk_floats = (size_t)nb * (size_t)D;
    size_t c_floats = use_avx ? 0 : (size_t)NN_QB * (size_t)nb;
    size_t lists = (size_t)Qp * (size_t)k;
    float *qpack = NULL, *wsf = NULL, *keys = NULL, *thrs = NULL, *out_d = NULL;
    int64_t *ids = NULL, *out_i = NULL;
    ds_status st = DS_OK;
    int blas_prev = 0;
    /* + a decoded block, or one decoded row for the final distances */
    size_t dec_floats = src ? DS_MAX(blk_floats, (size_t)D) : 0;
    size_t per_thread = (use_avx ? blk_floats : c_floats) + (size_t)nb + dec_floats;
    if (use_avx) qpack = ds_alloc((size_t)Qp * (size_t)D, sizeof(float), "ds_nn_search: packed queries");
    wsf = ds_alloc(per_thread, sizeof(float) * (size_t)T, "ds_nn_search: block workspace");
    keys = ds_alloc(lists, sizeof(float) * (size_t)T, "ds_nn_search: top-k keys");
    ids = ds_alloc(lists, sizeof(int64_t) * (size_t)T, "ds_nn_search: top-k ids");
    thrs = ds_alloc((size_t)Qp, sizeof(float) * (size_t)T, "ds_nn_search: thresholds");
    out_d = ds_alloc((size_t)Q * (size_t)k, sizeof(float), "ds_nn_search: result");
    out_i = ds_alloc((size_t)Q * (size_t)k, sizeof(int64_t), "ds_nn_search: result");
    if ((use_avx && !qpack) || !wsf || !keys || !ids || !thrs || !out_d || !out_i) {
        st = DS_ERR_NOMEM;
        goto cleanup;
    }
    nn_lists_init(keys, ids, lists * (size_t)T, thrs, (size_t)Qp * (size_t)T);
    if (use_avx) nn_pack(queries, Q, Qp, D, NN_MR, qpack);
    else blas_prev = ds_blas_set_threads(1); /* we parallelise over bank blocks */

#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        float *ws = wsf + (size_t)t * per_thread;
        float *bias = ws + (use_avx ? blk_floats : c_floats);
        float *dec = bias + nb;
        float *key = keys + (size_t)t * lists;
        int64_t *id = ids + (size_t)t * lists;
        float *thr = thrs + (size_t)t * (size_t)Qp;
        /* Blocks are handed out in increasing order, so each thread sees its
         * bank rows in increasing order: a strict '<' keeps the lowest row
         * among equal keys. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t j0 = b * nb;
            int64_t n = DS_MIN(nb, M - j0);
            int64_t n_pad = (n + NN_NR - 1) / NN_NR * NN_NR;
            const float *rows = bank ? bank + j0 * D : dec;
            if (!bank) src->decode(src->ctx, j0, n, dec);
            nn_bias(rows, n, n_pad, D, metric, bias);
#if NN_HAVE_X86
            if (use_avx) {
                nn_pack(rows, n, n_pad, D, NN_NR, ws);
                nn_block_avx512(qpack, Qp / NN_MR, ws, bias, n_pad / NN_NR, D, scale, j0, k, thr, key, id);
                continue;
            }
#endif
            nn_block_blas(queries, Q, rows, n, bias, D, scale, j0, k, thr, key, id, ws);
        }
    }

    /* Merge the per-thread lists, then recompute the winners exactly. */
    for (int64_t q = 0; q < Q; q++) {
        float *rk = out_d + q * k;
        int64_t *ri = out_i + q * k;
        nn_merge(keys, ids, lists, T, q, k, rk, ri);
        if (ri[k - 1] == NN_EMPTY_ID) {
            st = ds_set_error(DS_ERR_ARG, "ds_nn_search: query %lld has fewer than k=%d finite distances "
                              "(NaN or inf in the features?)", (long long)q, k);
            goto cleanup;
        }
        for (int i = 0; i < k; i++) {
            const float *row = bank ? bank + ri[i] * D : wsf + (size_t)per_thread - dec_floats;
            if (!bank) src->decode(src->ctx, ri[i], 1, (float *)row);
            rk[i] = nn_exact(queries + q * D, row, D, metric);
        }
        /* insertion sort by (distance, row) */
        for (int i = 1; i < k; i++) insert_sorted(rk, ri, i, rk[i], ri[i]);
    }
    memcpy(dist, out_d, sizeof(float) * (size_t)Q * (size_t)k);
    if (idx) memcpy(idx, out_i, sizeof(int64_t) * (size_t)Q * (size_t)k);

cleanup:
    if (blas_prev > 0) ds_blas_set_threads(blas_prev);
    free(qpack);
    free(wsf);
    free(keys);
    free(ids);
    free(thrs);
    free(out_d);
    free(out_i);
    return st;
}

ds_status ds_nn_search_ex(const float *bank, int64_t M, const float *queries, int64_t Q, int D, int k,
                          ds_metric metric, int n_threads, ds_nn_path path, float *dist, int64_t *idx) {
    if (!bank) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank, queries or dist");
    return nn_search(bank, NULL, M, queries, Q, D, k, metric, n_threads, path, dist, idx);
}

ds_status ds_nn_search_rows(const ds_nn_rows *rows, int64_t M, const float *queries, int64_t Q, int D, int k,
                            ds_metric metric, int n_threads, ds_nn_path path, float *dist, int64_t *idx) {
    if (!rows || !rows->decode) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank, queries or dist");
    return nn_search(NULL, rows, M, queries, Q, D, k, metric, n_threads, path, dist, idx);
}

ds_status ds_nn_search(const float *bank, int64_t M, const float *queries, int64_t Q, int D, int k,
                       ds_metric metric, int n_threads, float *dist, int64_t *idx) {
    return ds_nn_search_ex(bank, M, queries, Q, D, k, metric, n_threads, DS_NN_PATH_AUTO, dist, idx);
}

/* ---- bf16 banks --------------------------------------------------------
 *
 * Exact search over the bf16 values of a bank packed by ds_bf16_mat_pack:
 * the queries are rounded to bf16 and packed once, each thread takes blocks
 * of bank rows and runs every query chunk against them with ds_gemm_bf16_pa
 * (vdpbf16ps where the CPU has it: twice the fp32 multiply rate, half the
 * bytes streamed), scanning the [chunk x block] tile for the top candidates.
 * Rounding the queries costs ranking accuracy, so NN_RERANK extra candidates
 * are kept and all of them re-ranked by the direct distance between the f32
 * query and the bank row's bf16 values (in double): what remains is the
 * bank's own rounding. Cosine divides by the rounded row's norm (rounding
 * moves a unit row's norm by up to ~2^-9): the cosine to the stored row,
 * which tracks the unrounded row's better than 1 - q.row does. */
enum { NN_RERANK = 8, NN_QC = 192 /* queries per GEMM chunk (multiple of MR) */ };

ds_status ds_nn_search_bf16(const ds_bf16_mat *bank, const float *sq_norms, const float *inv_norms,
                            const float *queries, int64_t Q, int k, ds_metric metric, int n_threads,
                            ds_gemm_bf16_kernel kernel, float *dist, int64_t *idx) {
    if (!bank || !bank->data || !queries || !dist || !sq_norms || !inv_norms)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank, norms, queries or dist");
    const int64_t M = bank->n;
    const int D = bank->k;
    if (metric != DS_METRIC_L2 && metric != DS_METRIC_COSINE)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: unknown metric %d", (int)metric);
    if (k < 1 || (int64_t)k > M)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: k=%d must be in 1..M (the bank has M=%lld rows)", k,
                            (long long)M);
    if (Q < 0 || Q > INT32_MAX / 2) return ds_set_error(DS_ERR_ARG, "ds_nn_search: bad query count %lld", (long long)Q);
    if (Q == 0) return DS_OK;
    const int kc = (int)DS_MIN((int64_t)k + NN_RERANK, M); /* candidates kept per query */
    int64_t nb = (int64_t)NN_BLOCK_BYTES / ((int64_t)D * 2) / DS_GEMM_BF16_NR * DS_GEMM_BF16_NR;
    if (nb < DS_GEMM_BF16_NR) nb = DS_GEMM_BF16_NR;
    int64_t mp = (M + DS_GEMM_BF16_NR - 1) / DS_GEMM_BF16_NR * DS_GEMM_BF16_NR;
    if (nb > mp) nb = mp;
    const int64_t n_blocks = (M + nb - 1) / nb;
    int T = ds_resolve_threads(n_threads);
    if ((int64_t)T > n_blocks) T = (int)n_blocks;

    const size_t lists = (size_t)Q * (size_t)kc;
    const size_t c_floats = (size_t)NN_QC * (size_t)nb;
    const size_t kp = (size_t)(D + 1) / 2;
    ds_status st = DS_OK;
    uint32_t *qpack = ds_alloc(ds_bf16_pack_a_words((int)Q, D), sizeof(uint32_t), "ds_nn_search: packed queries");
    float *cbuf = ds_alloc(c_floats, sizeof(float) * (size_t)T, "ds_nn_search: score tiles");
    float *keys = ds_alloc(lists, sizeof(float) * (size_t)T, "ds_nn_search: top-k keys");
    int64_t *ids = ds_alloc(lists, sizeof(int64_t) * (size_t)T, "ds_nn_search: top-k ids");
    float *thrs = ds_alloc((size_t)Q, sizeof(float) * (size_t)T, "ds_nn_search: thresholds");
    float *cand_d = ds_alloc(lists, sizeof(float), "ds_nn_search: candidates");
    int64_t *cand_i = ds_alloc(lists, sizeof(int64_t), "ds_nn_search: candidates");
    float *rows = ds_alloc((size_t)T * (size_t)D, sizeof(float), "ds_nn_search: bank rows");
    if (!qpack || !cbuf || !keys || !ids || !thrs || !cand_d || !cand_i || !rows) {
        st = DS_ERR_NOMEM;
        goto cleanup;
    }
    nn_lists_init(keys, ids, lists * (size_t)T, thrs, (size_t)Q * (size_t)T);
    ds_bf16_pack_a(queries, D, (int)Q, D, qpack);

#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        float *C = cbuf + (size_t)t * c_floats;
        float *key = keys + (size_t)t * lists, *thr = thrs + (size_t)t * (size_t)Q;
        int64_t *id = ids + (size_t)t * lists;
        /* blocks in increasing order per thread: '<' keeps the lowest row on ties */
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t j0 = b * nb, n = DS_MIN(nb, M - j0);
            for (int64_t q0 = 0; q0 < Q; q0 += NN_QC) {
                int64_t qn = DS_MIN((int64_t)NN_QC, Q - q0);
                ds_gemm_bf16_pa(qpack + (size_t)(q0 / DS_GEMM_BF16_MR) * kp * DS_GEMM_BF16_MR, (int)qn, bank, C,
                                (int)nb, (int)j0, (int)(j0 + n), kernel);
                for (int64_t i = 0; i < qn; i++) {
                    int64_t q = q0 + i;
                    const float *row = C + i * nb;
                    float th = thr[q];
                    if (metric == DS_METRIC_L2) {
                        for (int64_t j = 0; j < n; j++) {
                            float v = sq_norms[j0 + j] - 2.0f * row[j];
                            if (v < th) th = topk_push(key + q * kc, id + q * kc, kc, v, j0 + j);
                        }
                    } else {
                        for (int64_t j = 0; j < n; j++) {
                            float v = 1.0f - row[j] * inv_norms[j0 + j];
                            if (v < th) th = topk_push(key + q * kc, id + q * kc, kc, v, j0 + j);
                        }
                    }
                    thr[q] = th;
                }
            }
        }
        /* merge the threads' lists, then re-rank the candidates exactly */
        float *brow = rows + (size_t)t * (size_t)D;
#pragma omp for schedule(static)
        for (int64_t q = 0; q < Q; q++) {
            float *rk = cand_d + q * kc;
            int64_t *ri = cand_i + q * kc;
            nn_merge(keys, ids, lists, T, q, kc, rk, ri);
            if (ri[k - 1] == NN_EMPTY_ID) continue; /* reported below */
            for (int i = 0; i < kc && ri[i] != NN_EMPTY_ID; i++) {
                ds_bf16_mat_row(bank, (int)ri[i], brow);
                if (metric == DS_METRIC_COSINE) /* the cosine to the rounded row itself */
                    for (int d = 0; d < D; d++) brow[d] *= inv_norms[ri[i]];
                rk[i] = nn_exact(queries + q * D, brow, D, metric);
            }
            for (int i = 1; i < kc; i++) insert_sorted(rk, ri, i, rk[i], ri[i]); /* by (distance, row) */
        }
    }
    for (int64_t q = 0; q < Q; q++)
        if (cand_i[q * kc + k - 1] == NN_EMPTY_ID) {
            st = ds_set_error(DS_ERR_ARG, "ds_nn_search: query %lld has fewer than k=%d finite distances "
                              "(NaN or inf in the features?)", (long long)q, k);
            goto cleanup;
        }
    for (int64_t q = 0; q < Q; q++) {
        memcpy(dist + q * k, cand_d + q * kc, sizeof(float) * (size_t)k);
        if (idx) memcpy(idx + q * k, cand_i + q * kc, sizeof(int64_t) * (size_t)k);
    }

cleanup:
    free(qpack);
    free(cbuf);
    free(keys);
    free(ids);
    free(thrs);
    free(cand_d);
    free(cand_i);
    free(rows);
    return st;
}
