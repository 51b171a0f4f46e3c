/* Greedy k-center coreset: PatchCore (Roth et al., "Towards Total Recall in
 * Industrial Anomaly Detection", CVPR 2022, Sec. 3.2, Algorithm 1), i.e.
 * Gonzalez' farthest-first traversal (1985): repeatedly select the point
 * whose distance to its nearest selected point is largest.
 *
 * Why not the textbook loop. anomalib's KCenterGreedy and PatchCore's
 * ApproximateGreedyCoresetSampler update the distance of EVERY point after
 * each new centre: 500k x 50k x 128 = 3.2e12 multiply-adds for 10% of 500k
 * patches, and, worse, 50k passes over a 256 MB array: 12.8 TB of memory
 * traffic, an hour at this machine's ~20 GB/s ("hangs", as anomalib users
 * report). Triangle-inequality pruning (skip clusters whose centre is >= 2
 * radii away) does not help either: on real patch features the distances
 * concentrate (we measured 28% of the points within 10% of the current radius
 * after 10k of 100k selections), so nothing gets pruned.
 *
 * What we do instead: LAZY updates in blocks, which selects exactly the same
 * points. Points are grouped in blocks of CS_BLOCK; each block remembers how
 * many centres it has been updated with and its largest distance then. Since
 * distances only shrink, that stale maximum is an upper bound, so a max-heap
 * of blocks on the stale maxima finds the true farthest point: pop the top
 * block; if it lags behind, apply all the centres it missed in one batch and
 * push it back; once the top block is up to date, its maximum is the global
 * one. Each batch is a small GEMM (block points x missed centres, 32x12
 * register tiles), so the work runs at the FMA units' speed from L1/L2
 * instead of streaming from DRAM, and blocks far from the frontier are not
 * touched at all until the radius comes down to them.
 *
 * Distances are compared squared, computed as ||x||^2 + ||c||^2 - 2 x.c
 * (clamped at 0) with the same per-pair summation order in every code path,
 * so the selection does not depend on the batching or the thread count.
 * Ties go to the lowest point index; selected points are never selected
 * again (a point equal to a selected one has distance 0 and is taken only
 * when every remaining distance is 0, lowest index first).
 *
 * Points come from a row source (scorer.h), CS_PREP_ROWS at a time, so that
 * the features need not be in memory: only their packed 128-d projections
 * are. At the end of the file, ds_coreset_blocked runs this greedy per
 * block and again over the union of the blocks' selections (the composable
 * coreset, guarantee and references in scorer.h and docs/scale.md). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CS_HAVE_X86 1
#else
#define CS_HAVE_X86 0
#endif

#include "scorer/scorer_internal.h"

enum {
    CS_TILE = 32,   /* points per register tile (2 zmm) */
    CS_NC = 12,     /* centres per register tile */
    CS_BLOCK = 256, /* points per lazily-updated block (128 KiB at d=128) */
    CS_PREP_ROWS = 4096,
    CS_PAR_MIN = 64,     /* lagging centres that make a batch worth threads */
    CS_PAR_BLOCKS = 16,  /* blocks brought up to date per parallel region */
};

ds_coreset_params ds_coreset_defaults(void) {
    return (ds_coreset_params){.proj_dim = 128, .l2_normalize = 0, .seed = 0, .start = -1, .n_threads = 0};
}

typedef struct {
    int64_t N, Np; /* points, padded to CS_BLOCK */
    int dp;        /* dimension padded to 16 */
    float *yp;     /* [Np/32][dp][32] packed points */
    float *yy;     /* [Np] squared norms */
    float *m2;     /* [Np] squared distance to the nearest applied centre; -1: selected or padding */
    float *cen;    /* [n_select][dp] centres */
    float *cc;     /* [n_select] their squared norms */
} cs_data;

/* ---- the update kernel: m2[p] = min(m2[p], max(0, yy[p] + cc[j] - 2 y_p.c_j))
 * for the 32 points of a tile and centres j in [s, t). */

static void cs_tile_scalar(const float *tile, const float *yy, float *m2, const float *cen, const float *cc, int64_t s,
                           int64_t t, int dp) {
    for (int p = 0; p < CS_TILE; p++) {
        float mn = INFINITY;
        for (int64_t j = s; j < t; j++) {
            const float *c = cen + j * dp;
            float acc = 0;
            for (int k = 0; k < dp; k++) acc = fmaf(c[k], tile[k * CS_TILE + p], acc);
            float d2 = fmaf(acc, -2.0f, yy[p] + cc[j]);
            mn = fminf(mn, d2);
        }
        m2[p] = fminf(m2[p], fmaxf(mn, 0.0f));
    }
}

#if CS_HAVE_X86
/* nc (1..12) is a literal at every call site, so each instance keeps its
 * 2*nc accumulators in registers. */
__attribute__((target("avx512f"), always_inline)) static inline void
cs_kernel(const float *tile, const float *cen, const float *cc, int dp, const int nc, __m512 yy0, __m512 yy1,
          __m512 *mn0, __m512 *mn1) {
    __m512 a0[CS_NC], a1[CS_NC];
#pragma GCC unroll 12
    for (int c = 0; c < nc; c++) a0[c] = a1[c] = _mm512_setzero_ps();
    for (int k = 0; k < dp; k++) {
        const __m512 p0 = _mm512_load_ps(tile + k * CS_TILE);
        const __m512 p1 = _mm512_load_ps(tile + k * CS_TILE + 16);
#pragma GCC unroll 12
        for (int c = 0; c < nc; c++) {
            const __m512 cb = _mm512_set1_ps(cen[(size_t)c * dp + k]);
            a0[c] = _mm512_fmadd_ps(cb, p0, a0[c]);
            a1[c] = _mm512_fmadd_ps(cb, p1, a1[c]);
        }
    }
    const __m512 m2v = _mm512_set1_ps(-2.0f);
#pragma GCC unroll 12
    for (int c = 0; c < nc; c++) {
        const __m512 ccv = _mm512_set1_ps(cc[c]);
        *mn0 = _mm512_min_ps(*mn0, _mm512_fmadd_ps(a0[c], m2v, _mm512_add_ps(yy0, ccv)));
        *mn1 = _mm512_min_ps(*mn1, _mm512_fmadd_ps(a1[c], m2v, _mm512_add_ps(yy1, ccv)));
    }
}

__attribute__((target("avx512f"))) static void cs_tile_avx512(const float *tile, const float *yy, float *m2,
                                                              const float *cen, const float *cc, int64_t s, int64_t t,
                                                              int dp) {
    const __m512 yy0 = _mm512_load_ps(yy), yy1 = _mm512_load_ps(yy + 16);
    __m512 mn0 = _mm512_set1_ps(INFINITY), mn1 = mn0;
    for (int64_t j = s; j < t; j += CS_NC) {
        const float *c = cen + j * dp;
        const float *n = cc + j;
        switch (DS_MIN((int64_t)CS_NC, t - j)) {
        case 12: cs_kernel(tile, c, n, dp, 12, yy0, yy1, &mn0, &mn1); break;
        case 11: cs_kernel(tile, c, n, dp, 11, yy0, yy1, &mn0, &mn1); break;
        case 10: cs_kernel(tile, c, n, dp, 10, yy0, yy1, &mn0, &mn1); break;
        case 9: cs_kernel(tile, c, n, dp, 9, yy0, yy1, &mn0, &mn1); break;
        case 8: cs_kernel(tile, c, n, dp, 8, yy0, yy1, &mn0, &mn1); break;
        case 7: cs_kernel(tile, c, n, dp, 7, yy0, yy1, &mn0, &mn1); break;
        case 6: cs_kernel(tile, c, n, dp, 6, yy0, yy1, &mn0, &mn1); break;
        case 5: cs_kernel(tile, c, n, dp, 5, yy0, yy1, &mn0, &mn1); break;
        case 4: cs_kernel(tile, c, n, dp, 4, yy0, yy1, &mn0, &mn1); break;
        case 3: cs_kernel(tile, c, n, dp, 3, yy0, yy1, &mn0, &mn1); break;
        case 2: cs_kernel(tile, c, n, dp, 2, yy0, yy1, &mn0, &mn1); break;
        default: cs_kernel(tile, c, n, dp, 1, yy0, yy1, &mn0, &mn1); break;
        }
    }
    const __m512 z = _mm512_setzero_ps();
    _mm512_store_ps(m2, _mm512_min_ps(_mm512_load_ps(m2), _mm512_max_ps(mn0, z)));
    _mm512_store_ps(m2 + 16, _mm512_min_ps(_mm512_load_ps(m2 + 16), _mm512_max_ps(mn1, z)));
}

/* AVX2 + FMA (no AVX-512, as this project's AMD machine): the same per-lane
 * order of operations as cs_tile_scalar, so the selection is the same.
 * 32 points are 4 ymm; 3 centres x 4 = 12 accumulators stay in registers. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
cs_kernel2(const float *tile, const float *cen, const float *cc, int dp, const int nc, const __m256 *yy, __m256 *mn) {
    __m256 a[3][4];
#pragma GCC unroll 3
    for (int c = 0; c < nc; c++)
        for (int q = 0; q < 4; q++) a[c][q] = _mm256_setzero_ps();
    for (int k = 0; k < dp; k++) {
        const float *t = tile + k * CS_TILE;
#pragma GCC unroll 3
        for (int c = 0; c < nc; c++) {
            const __m256 cb = _mm256_broadcast_ss(cen + (size_t)c * dp + k);
            for (int q = 0; q < 4; q++) a[c][q] = _mm256_fmadd_ps(cb, _mm256_load_ps(t + 8 * q), a[c][q]);
        }
    }
    const __m256 m2v = _mm256_set1_ps(-2.0f);
#pragma GCC unroll 3
    for (int c = 0; c < nc; c++) {
        const __m256 ccv = _mm256_set1_ps(cc[c]);
        for (int q = 0; q < 4; q++)
            mn[q] = _mm256_min_ps(mn[q], _mm256_fmadd_ps(a[c][q], m2v, _mm256_add_ps(yy[q], ccv)));
    }
}

__attribute__((target("avx2,fma"))) static void cs_tile_avx2(const float *tile, const float *yy, float *m2,
                                                           const float *cen, const float *cc, int64_t s, int64_t t,
                                                           int dp) {
    __m256 yv[4], mn[4];
    for (int q = 0; q < 4; q++) {
        yv[q] = _mm256_load_ps(yy + 8 * q);
        mn[q] = _mm256_set1_ps(INFINITY);
    }
    int64_t j = s;
    for (; j + 3 <= t; j += 3) cs_kernel2(tile, cen + j * dp, cc + j, dp, 3, yv, mn);
    if (t - j == 2) cs_kernel2(tile, cen + j * dp, cc + j, dp, 2, yv, mn);
    else if (t - j == 1) cs_kernel2(tile, cen + j * dp, cc + j, dp, 1, yv, mn);
    const __m256 z = _mm256_setzero_ps();
    for (int q = 0; q < 4; q++)
        _mm256_store_ps(m2 + 8 * q, _mm256_min_ps(_mm256_load_ps(m2 + 8 * q), _mm256_max_ps(mn[q], z)));
}
#endif

typedef void (*cs_tile_fn)(const float *tile, const float *yy, float *m2, const float *cen, const float *cc, int64_t s,
                           int64_t t, int dp);

/* ---- preparation: optional row normalisation, optional projection by a
 * seeded Gaussian matrix W [D, pd] with entries N(0, 1/pd). Rows come from
 * the source CS_PREP_ROWS at a time. */
typedef struct {
    int D, pd;
    const ds_coreset_params *p;
    float *in; /* [CS_PREP_ROWS, D] */
    float *w;  /* [D, pd] or NULL */
    int blas_prev;
} cs_proj;

static void cs_proj_free(cs_proj *j) {
    free(j->in);
    free(j->w);
    if (j->blas_prev > 0) ds_blas_set_threads(j->blas_prev);
}

static ds_status cs_proj_init(cs_proj *j, const ds_coreset_params *p, int D, int T) {
    *j = (cs_proj){.D = D, .pd = p->proj_dim > 0 ? p->proj_dim : D, .p = p};
    j->in = ds_alloc((size_t)CS_PREP_ROWS, sizeof(float) * (size_t)D, "ds_coreset_greedy: row block");
    if (p->proj_dim > 0) j->w = ds_alloc((size_t)D, sizeof(float) * (size_t)j->pd, "ds_coreset_greedy: projection");
    if (!j->in || (p->proj_dim > 0 && !j->w)) {
        cs_proj_free(j);
        return DS_ERR_NOMEM;
    }
    if (j->w) {
        ds_rng r;
        ds_rng_seed(&r, p->seed);
        double sd = sqrt((double)j->pd);
        for (size_t i = 0; i < (size_t)D * (size_t)j->pd; i++) j->w[i] = (float)(ds_rng_normal(&r) / sd);
        j->blas_prev = ds_blas_set_threads(T); /* one level: BLAS threads, no OpenMP region here */
    }
    return DS_OK;
}

/* Rows [first, first + n) of src (n <= CS_PREP_ROWS), prepared, into out
 * [n, ld] (the first pd columns). */
static ds_status cs_proj_rows(cs_proj *j, const ds_row_source *src, int64_t first, int64_t n, float *out, int ld) {
    const int D = j->D;
    ds_status st = src->read(src->user, first, n, j->in);
    if (st != DS_OK) return st;
    if (j->p->l2_normalize) ds_l2_normalize_rows(j->in, j->in, n, D);
    if (j->w)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, j->pd, D, 1.0f, j->in, D, j->w, j->pd, 0.0f, out,
                    ld);
    else
        for (int64_t i = 0; i < n; i++) memcpy(out + i * ld, j->in + i * D, sizeof(float) * (size_t)D);
    return DS_OK;
}

/* Prepares and packs every point of src into c. */
static ds_status cs_prepare(const ds_row_source *src, const ds_coreset_params *p, int T, cs_data *c) {
    const int64_t N = src->n_rows;
    const int dp = c->dp;
    cs_proj j;
    float *rows = ds_alloc((size_t)CS_PREP_ROWS, sizeof(float) * (size_t)dp, "ds_coreset_greedy: row block");
    ds_status st = rows ? cs_proj_init(&j, p, src->dim, T) : DS_ERR_NOMEM;
    if (st != DS_OK) {
        free(rows);
        return st;
    }
    for (int64_t i0 = 0; i0 < c->Np && st == DS_OK; i0 += CS_PREP_ROWS) {
        int64_t n = DS_MAX((int64_t)0, DS_MIN((int64_t)CS_PREP_ROWS, N - i0));
        memset(rows, 0, sizeof(float) * (size_t)CS_PREP_ROWS * (size_t)dp);
        if (n > 0 && (st = cs_proj_rows(&j, src, i0, n, rows, dp)) != DS_OK) break;
        int64_t n_pack = DS_MIN((int64_t)CS_PREP_ROWS, c->Np - i0);
        for (int64_t i = 0; i < n_pack; i++) {
            int64_t g = i0 + i;
            float *tile = c->yp + (g / CS_TILE) * (int64_t)dp * CS_TILE;
            double s = 0;
            for (int k = 0; k < dp; k++) {
                tile[k * CS_TILE + g % CS_TILE] = rows[i * dp + k];
                s += (double)rows[i * dp + k] * rows[i * dp + k];
            }
            c->yy[g] = (float)s;
            c->m2[g] = g < N ? INFINITY : -1.0f;
            if (!isfinite(c->yy[g])) {
                st = ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: point %lld has NaN or inf features", (long long)g);
                break;
            }
        }
    }
    free(rows);
    cs_proj_free(&j);
    return st;
}

/* ---- the block heap: max on (bmax, then lowest barg) */
typedef struct {
    float *bmax;    /* [n_blocks] stale maximum (an upper bound) */
    int64_t *barg;  /* [n_blocks] its point */
    int64_t *bsync; /* [n_blocks] centres applied so far */
    int32_t *heap;  /* [n_blocks] block ids */
    int32_t n;
} cs_heap;

static inline int cs_above(const cs_heap *h, int32_t a, int32_t b) {
    return h->bmax[a] > h->bmax[b] || (h->bmax[a] == h->bmax[b] && h->barg[a] < h->barg[b]);
}

static void cs_sift_down(cs_heap *h, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && cs_above(h, h->heap[l], h->heap[m])) m = l;
        if (r < h->n && cs_above(h, h->heap[r], h->heap[m])) m = r;
        if (m == i) return;
        int32_t t = h->heap[i];
        h->heap[i] = h->heap[m];
        h->heap[m] = t;
        i = m;
    }
}

/* Applies centres [bsync[b], t) to block b and recomputes its maximum. */
static void cs_sync_block(cs_data *c, cs_heap *h, int32_t b, int64_t t, cs_tile_fn tile_fn) {
    const int dp = c->dp;
    const int64_t s = h->bsync[b], p0 = (int64_t)b * CS_BLOCK;
    for (int64_t p = p0; p < p0 + CS_BLOCK; p += CS_TILE)
        tile_fn(c->yp + (p / CS_TILE) * (int64_t)dp * CS_TILE, c->yy + p, c->m2 + p, c->cen, c->cc, s, t, dp);
    float best = -INFINITY;
    int64_t bi = p0;
    const float *m = c->m2 + p0;
    for (int i = 0; i < CS_BLOCK; i++)
        if (m[i] > best) {
            best = m[i];
            bi = p0 + i;
        }
    h->bmax[b] = best;
    h->barg[b] = bi;
    h->bsync[b] = t;
}

static int32_t cs_pop(cs_heap *h) {
    int32_t top = h->heap[0];
    h->heap[0] = h->heap[--h->n];
    cs_sift_down(h, 0);
    return top;
}

static void cs_push(cs_heap *h, int32_t b) {
    int32_t i = h->n++;
    h->heap[i] = b;
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!cs_above(h, h->heap[i], h->heap[parent])) break;
        int32_t t = h->heap[i];
        h->heap[i] = h->heap[parent];
        h->heap[parent] = t;
        i = parent;
    }
}

static void cs_add_centre(cs_data *c, int64_t t, int64_t pt) {
    const int dp = c->dp;
    const float *tile = c->yp + (pt / CS_TILE) * (int64_t)dp * CS_TILE;
    for (int k = 0; k < dp; k++) c->cen[t * dp + k] = tile[k * CS_TILE + pt % CS_TILE];
    c->cc[t] = c->yy[pt];
    c->m2[pt] = -1.0f; /* never again */
}

/* Row sources over segments in memory. */
static int segments_read(void *user, int64_t first, int64_t n, float *out) {
    const ds_row_segments *sg = user;
    const size_t D = (size_t)sg->dim;
    int64_t start = 0;
    for (int i = 0; i < sg->n_segs && n > 0; i++) {
        int64_t end = start + sg->n[i];
        if (first < end) {
            int64_t m = DS_MIN(n, end - first);
            memcpy(out, sg->rows[i] + (size_t)(first - start) * D, sizeof(float) * D * (size_t)m);
            out += (size_t)m * D, first += m, n -= m;
        }
        start = end;
    }
    if (n > 0) return ds_set_error(DS_ERR_ARG, "ds_row_source: rows past the end of the segments");
    return DS_OK;
}

ds_row_source ds_row_source_of_segments(const ds_row_segments *segs) {
    int64_t n = 0;
    for (int i = 0; i < segs->n_segs; i++) n += segs->n[i];
    return (ds_row_source){.n_rows = n, .dim = segs->dim, .read = segments_read, .user = (void *)segs};
}

/* A window [first, first + n) of another source. */
typedef struct {
    const ds_row_source *src;
    int64_t first;
} window_src;

static int window_read(void *user, int64_t first, int64_t n, float *out) {
    const window_src *w = user;
    return w->src->read(w->src->user, w->first + first, n, out);
}

ds_status ds_coreset_greedy(const float *x, int64_t N, int D, int64_t n_select, const ds_coreset_params *params,
                            int64_t *selected) {
    return ds_coreset_greedy_ex(x, N, D, n_select, params, 0, selected);
}

static ds_status cs_run(const ds_row_source *src, int64_t n_select, const ds_coreset_params *params, int portable,
                        int64_t *selected, float *sel_rows);

ds_status ds_coreset_greedy_ex(const float *x, int64_t N, int D, int64_t n_select, const ds_coreset_params *params,
                               int portable, int64_t *selected) {
    if (!x) return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: NULL x or selected");
    const float *rows[1] = {x};
    int64_t n[1] = {N};
    ds_row_segments sg = {rows, n, 1, D};
    ds_row_source src = ds_row_source_of_segments(&sg);
    return cs_run(&src, n_select, params, portable, selected, NULL);
}

ds_status ds_coreset_greedy_rows(const ds_row_source *src, int64_t n_select, const ds_coreset_params *p,
                                 int64_t *selected) {
    if (!src || !src->read) return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: NULL row source");
    return cs_run(src, n_select, p, 0, selected, NULL);
}

/* The exact greedy over src. sel_rows: [n_select, d] output (the selected
 * points' prepared coordinates, d = proj_dim or D) or NULL. */
static ds_status cs_run(const ds_row_source *src, int64_t n_select, const ds_coreset_params *params, int portable,
                        int64_t *selected, float *sel_rows) {
    ds_coreset_params p = params ? *params : ds_coreset_defaults();
    const int64_t N = src->n_rows;
    const int D = src->dim;
    if (!selected) return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: NULL x or selected");
    if (N < 1 || D < 1) return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: bad sizes N=%lld D=%d", (long long)N, D);
    if (N > (int64_t)INT32_MAX * CS_BLOCK / 2)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: N=%lld points is too many", (long long)N);
    if (n_select < 1 || n_select > N)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: n_select=%lld must be in 1..N=%lld", (long long)n_select,
                            (long long)N);
    if (p.proj_dim < 0 || p.proj_dim > 65536)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: proj_dim=%d out of range 0..65536", p.proj_dim);
    if (p.start >= N)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_greedy: start=%lld >= N=%lld", (long long)p.start, (long long)N);
    const int T = ds_resolve_threads(p.n_threads);
    const int d = p.proj_dim > 0 ? p.proj_dim : D;

    cs_data c = {.N = N, .Np = (N + CS_BLOCK - 1) / CS_BLOCK * CS_BLOCK, .dp = (d + 15) / 16 * 16};
    cs_heap h = {.n = (int32_t)(c.Np / CS_BLOCK)};
    cs_tile_fn tile_fn = cs_tile_scalar;
#if CS_HAVE_X86
    if (!portable && ds_cpu_has_avx512()) tile_fn = cs_tile_avx512;
    else if (!portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) tile_fn = cs_tile_avx2;
#endif
    ds_status st = DS_OK;
    c.yp = ds_alloc((size_t)c.Np, sizeof(float) * (size_t)c.dp, "ds_coreset_greedy: points");
    c.yy = ds_alloc((size_t)c.Np, sizeof(float), "ds_coreset_greedy: norms");
    c.m2 = ds_alloc((size_t)c.Np, sizeof(float), "ds_coreset_greedy: distances");
    c.cen = ds_alloc((size_t)n_select, sizeof(float) * (size_t)c.dp, "ds_coreset_greedy: centres");
    c.cc = ds_alloc((size_t)n_select, sizeof(float), "ds_coreset_greedy: centre norms");
    h.bmax = ds_alloc((size_t)h.n, sizeof(float), "ds_coreset_greedy: blocks");
    h.barg = ds_alloc((size_t)h.n, sizeof(int64_t), "ds_coreset_greedy: blocks");
    h.bsync = ds_alloc((size_t)h.n, sizeof(int64_t), "ds_coreset_greedy: blocks");
    h.heap = ds_alloc((size_t)h.n, sizeof(int32_t), "ds_coreset_greedy: heap");
    int32_t popped[CS_PAR_BLOCKS];
    int64_t *out = ds_alloc((size_t)n_select, sizeof(int64_t), "ds_coreset_greedy: selection");
    if (!c.yp || !c.yy || !c.m2 || !c.cen || !c.cc || !h.bmax || !h.barg || !h.bsync || !h.heap || !out) {
        st = DS_ERR_NOMEM;
        goto cleanup;
    }
    if (p.progress) p.progress("project", 0, N, p.progress_user);
    st = cs_prepare(src, &p, T, &c);
    if (st != DS_OK) goto cleanup;
    if (p.progress) p.progress("project", N, N, p.progress_user);

    int64_t cur = p.start;
    if (cur < 0) {
        /* anomalib's KCenterGreedy starts from a random point; we draw it
         * from a stream separate from the projection's and, as Gonzalez,
         * count it as the first selected point. */
        ds_rng r;
        ds_rng_seed(&r, p.seed ^ 0x5eed5eed5eed5eedull);
        cur = (int64_t)(ds_rng_u64(&r) % (uint64_t)N);
    }
    out[0] = cur;
    cs_add_centre(&c, 0, cur);
    /* Blocks never updated: +inf bounds, in index order (a valid heap). */
    for (int32_t b = 0; b < h.n; b++) {
        h.bmax[b] = INFINITY;
        h.barg[b] = (int64_t)b * CS_BLOCK;
        h.bsync[b] = 0;
        h.heap[b] = b;
    }
    const int64_t report_every = DS_MAX((int64_t)1, n_select / 200);
    for (int64_t t = 1; t < n_select; t++) {
        if (p.progress && t % report_every == 0) p.progress("coreset", t, n_select, p.progress_user);
        for (;;) {
            int32_t b = h.heap[0];
            if (h.bsync[b] == t) break;
            if (T == 1 || t - h.bsync[b] < CS_PAR_MIN) {
                cs_sync_block(&c, &h, b, t, tile_fn);
                cs_sift_down(&h, 0);
                continue;
            }
            /* A big batch: bring the top CS_PAR_BLOCKS lagging blocks up to
             * date at once, one block per thread at a time. Blocks this high
             * up need those centres anyway, and the selection does not
             * depend on when a block is updated, so this costs nothing but
             * turns many small parallel regions into few large ones. */
            int32_t n_pop = 0;
            while (n_pop < CS_PAR_BLOCKS && h.n > 0 && t - h.bsync[h.heap[0]] >= CS_PAR_MIN / 4)
                popped[n_pop++] = cs_pop(&h);
#pragma omp parallel for num_threads(T) schedule(dynamic, 1)
            for (int32_t i = 0; i < n_pop; i++) cs_sync_block(&c, &h, popped[i], t, tile_fn);
            for (int32_t i = 0; i < n_pop; i++) cs_push(&h, popped[i]);
        }
        /* The top block is up to date: its maximum is the global one. Its
         * stale key stays until the next round brings it up to date again. */
        cur = h.barg[h.heap[0]];
        DS_ASSERT(c.m2[cur] >= 0.0f);
        out[t] = cur;
        cs_add_centre(&c, t, cur);
    }
    if (p.progress) p.progress("coreset", n_select, n_select, p.progress_user);
    memcpy(selected, out, sizeof(int64_t) * (size_t)n_select);
    if (sel_rows)
        for (int64_t i = 0; i < n_select; i++) memcpy(sel_rows + i * d, c.cen + i * c.dp, sizeof(float) * (size_t)d);

cleanup:
    free(c.yp);
    free(c.yy);
    free(c.m2);
    free(c.cen);
    free(c.cc);
    free(h.bmax);
    free(h.barg);
    free(h.bsync);
    free(h.heap);
    free(out);
    return st;
}

/* ---- the composable coreset (scorer.h: ds_coreset_blocked) -------------- */

/* floor(S * b / T) - floor(S * a / T) in 128 bits (S * b passes 2^63 from
 * about 3 * 10^9 points). */
static int64_t cs_share(int64_t S, int64_t a, int64_t b, int64_t T) {
    return (int64_t)((__int128)S * b / T - (__int128)S * a / T);
}

/* One instance: the window [first, first + n) of src; m of its points by the
 * greedy from its first point, or all of them in order when m == n.
 * idx: [m] output, indices into src; rows: [m, d] their prepared coordinates. */
static ds_status cs_instance(const ds_row_source *src, int64_t first, int64_t n, int64_t m, const ds_coreset_params *p,
                             int T, int d, int64_t *idx, float *rows) {
    window_src w = {src, first};
    ds_row_source sub = {.n_rows = n, .dim = src->dim, .read = window_read, .user = &w};
    ds_coreset_params q = *p;
    q.start = 0;
    q.progress = NULL;
    ds_status st;
    if (m < n) {
        if ((st = cs_run(&sub, m, &q, 0, idx, rows)) != DS_OK) return st;
        for (int64_t i = 0; i < m; i++) idx[i] += first;
        return DS_OK;
    }
    cs_proj j;
    if ((st = cs_proj_init(&j, &q, src->dim, T)) != DS_OK) return st;
    for (int64_t i0 = 0; i0 < n && st == DS_OK; i0 += CS_PREP_ROWS)
        st = cs_proj_rows(&j, &sub, i0, DS_MIN((int64_t)CS_PREP_ROWS, n - i0), rows + i0 * d, d);
    cs_proj_free(&j);
    for (int64_t i = 0; i < n; i++) idx[i] = first + i;
    return st;
}

ds_status ds_coreset_blocked(const ds_row_source *src, int64_t n_select, const ds_coreset_params *params,
                             int64_t block_rows, double oversample, int64_t *selected) {
    ds_coreset_params p = params ? *params : ds_coreset_defaults();
    if (!src || !src->read || !selected) return ds_set_error(DS_ERR_ARG, "ds_coreset_blocked: NULL source or selected");
    const int64_t N = src->n_rows;
    if (N < 1 || src->dim < 1)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_blocked: bad sizes N=%lld D=%d", (long long)N, src->dim);
    if (n_select < 1 || n_select > N)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_blocked: n_select=%lld must be in 1..N=%lld", (long long)n_select,
                            (long long)N);
    if (block_rows < 2 || !(oversample >= 1.0) || !(oversample <= 1e6))
        return ds_set_error(DS_ERR_ARG, "ds_coreset_blocked: block_rows=%lld must be >= 2 and oversample=%g >= 1",
                            (long long)block_rows, oversample);
    if (p.proj_dim < 0 || p.proj_dim > 65536)
        return ds_set_error(DS_ERR_ARG, "ds_coreset_blocked: proj_dim=%d out of range 0..65536", p.proj_dim);
    const int T = ds_resolve_threads(p.n_threads);
    const int d = p.proj_dim > 0 ? p.proj_dim : src->dim;
    const int64_t S = DS_MIN(N, (int64_t)ceil(oversample * (double)n_select));
    int64_t *uidx = ds_alloc((size_t)S, sizeof(int64_t), "ds_coreset_blocked: union");
    float *urows = ds_alloc((size_t)S, sizeof(float) * (size_t)d, "ds_coreset_blocked: union");
    int64_t *gsel = ds_alloc((size_t)DS_MIN(block_rows, S), sizeof(int64_t), "ds_coreset_blocked: group");
    ds_status st = !uidx || !urows || !gsel ? DS_ERR_NOMEM : DS_OK;
    const int64_t n_blocks = (N + block_rows - 1) / block_rows, n_groups = (S + block_rows - 1) / block_rows;
    /* level 1: each block's greedy, appended to the union */
    int64_t u = 0;
    for (int64_t b = 0; b < n_blocks && st == DS_OK; b++) {
        if (p.progress) p.progress("coreset blocks", b, n_blocks + n_groups, p.progress_user);
        int64_t a0 = b * block_rows, a1 = DS_MIN(N, a0 + block_rows), s = cs_share(S, a0, a1, N);
        if (s > 0) st = cs_instance(src, a0, a1 - a0, s, &p, T, d, uidx + u, urows + u * d);
        u += s;
    }
    DS_ASSERT(st != DS_OK || u == S);
    /* level 2: the greedy over the union, group by group */
    const float *rows[1] = {urows};
    int64_t nrows[1] = {S};
    ds_row_segments sg = {rows, nrows, 1, d};
    ds_row_source usrc = ds_row_source_of_segments(&sg);
    ds_coreset_params q = p;
    q.proj_dim = 0, q.l2_normalize = 0; /* the union is prepared already */
    int64_t k = 0;
    for (int64_t g = 0; g < n_groups && st == DS_OK; g++) {
        if (p.progress) p.progress("coreset blocks", n_blocks + g, n_blocks + n_groups, p.progress_user);
        int64_t a0 = g * block_rows, a1 = DS_MIN(S, a0 + block_rows), m = cs_share(n_select, a0, a1, S);
        if (m == 0) continue;
        if (m < a1 - a0) {
            window_src w = {&usrc, a0};
            ds_row_source sub = {.n_rows = a1 - a0, .dim = d, .read = window_read, .user = &w};
            q.start = 0;
            q.progress = NULL;
            if ((st = cs_run(&sub, m, &q, 0, gsel, NULL)) != DS_OK) break;
            for (int64_t i = 0; i < m; i++) selected[k + i] = uidx[a0 + gsel[i]];
        } else {
            for (int64_t i = 0; i < m; i++) selected[k + i] = uidx[a0 + i];
        }
        k += m;
    }
    DS_ASSERT(st != DS_OK || k == n_select);
    if (st == DS_OK && p.progress) p.progress("coreset blocks", n_blocks + n_groups, n_blocks + n_groups, p.progress_user);
    free(uidx);
    free(urows);
    free(gsel);
    return st;
}

const char *ds_coreset_method_name(ds_coreset_method m) {
    return m == DS_CORESET_EXACT ? "exact" : m == DS_CORESET_BLOCKED ? "blocked" : "auto";
}

ds_status ds_coreset_method_parse(const char *name, ds_coreset_method *m) {
    static const ds_coreset_method all[] = {DS_CORESET_AUTO, DS_CORESET_EXACT, DS_CORESET_BLOCKED};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, ds_coreset_method_name(all[i]))) {
            *m = all[i];
            return DS_OK;
        }
    return ds_set_error(DS_ERR_ARG, "coreset method '%s' is not auto, exact or blocked", name ? name : "(null)");
}

ds_coreset_method ds_coreset_resolve(ds_coreset_method m, int64_t N) {
    if (m == DS_CORESET_EXACT || m == DS_CORESET_BLOCKED) return m;
    return N <= DS_CORESET_AUTO_MAX_EXACT ? DS_CORESET_EXACT : DS_CORESET_BLOCKED;
}
