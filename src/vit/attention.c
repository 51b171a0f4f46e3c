/* Fused multi-head self-attention, float32: softmax(q k^T / sqrt(hd)) v per
 * head (dinov2/layers/attention.py) without the [T, T] score matrix.
 *
 * Online softmax in blocks, as FlashAttention (Dao et al. 2022, Algorithm 1;
 * the running max/sum rescaling of Milakov & Gimelshein 2018): for a block
 * of BQ queries, keys and values are visited in blocks of BK; per query row
 * the running max m, the running sum l and the unnormalised output O are
 * rescaled by exp(m_old - m_new) whenever a block raises the max, and O / l
 * is written at the end. The scores of one block ([BQ, BK], 64 KiB) and the
 * key/value block stay in L2, where the previous per-head [T, T] sgemm +
 * softmax + sgemm streamed 7.5 MB per head at 518 px through memory.
 *
 * Work items are (head, query block) pairs handed to the OpenMP team; keys
 * are first transposed once per call into kt [heads][hd][T] so that the
 * score kernel reads them with unit stride. The kernels are plain C with
 * fixed trip counts that gcc vectorises (AVX2 or AVX-512 by -march): hand
 * register tiles, not BLAS calls, because the OpenBLAS calls per block
 * repacked their operands each time (bench/README.md, 2-15% slower). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "vit/simd_math.h"
#include "vit/vit_internal.h"

enum {
    BQ = 64,  /* queries per work item */
    BK = 256, /* keys per block */
    HD = 64,  /* head width: every DINOv2 size (ds_vit_create checks D % 64) */
    /* register tiles (accumulators + a broadcast + a load within the 32
     * zmm / 16 ymm): scores TI rows x 32 keys, P V TO rows x DW channels */
#if defined(__AVX512F__)
    TI = 8,  /* 16 zmm */
    TO = 6,  /* 6 x 64: 24 zmm */
    DW = 64,
#else
    TI = 3,  /* 12 ymm */
    TO = 3,  /* 3 x 32: 12 ymm */
    DW = 32,
#endif
    BQP = (BQ + TI - 1) / TI * TI, /* query rows incl. the padding of the last tile */
};

/* Vector width of the build (-march): the register tiles below are written
 * with intrinsics because gcc kept auto-vectorised accumulator arrays on the
 * stack (measured: 2-3x slower than OpenBLAS' kernel). */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vf;
#define VL 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vf;
#define VL 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#else
typedef float vf;
#define VL 1
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(x) (x)
#define VZERO() 0.0f
#define VFMA(a, b, c) ((a) * (b) + (c))
#endif
enum { NK = 32 / VL, ND = DW / VL }; /* vectors per tile row */

/* Floats of the packed keys: per head and block of BK keys a [HD][BK] panel. */
static size_t kt_floats(int T, int D) { return (size_t)((T + BK - 1) / BK) * BK * (size_t)D; }

size_t ds_vit_attention_work_floats(int T, int D, int n_threads) {
    size_t per_thread = (size_t)BQP * HD /* q */ + (size_t)BQ * HD /* O */ + (size_t)BQP * BK /* S */ + 2 * BQ;
    return kt_floats(T, D) + (size_t)T * D /* packed values */ + per_thread * (size_t)n_threads;
}

/* s[i][j] = sum_d q[i][d] kt[d][j] for TI rows x 32 keys (kt rows ldk apart). */
static inline void score_tile(const float *q, const float *kt, int ldk, float *s, int lds) {
    vf acc[TI][NK];
#pragma GCC unroll 16
    for (int i = 0; i < TI; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NK; v++) acc[i][v] = VZERO();
    for (int d = 0; d < HD; d++) {
        const float *k = kt + (size_t)d * ldk;
        vf kv[NK];
#pragma GCC unroll 4
        for (int v = 0; v < NK; v++) kv[v] = VLOAD(k + v * VL);
#pragma GCC unroll 16
        for (int i = 0; i < TI; i++) {
            vf qv = VSET1(q[i * HD + d]);
#pragma GCC unroll 4
            for (int v = 0; v < NK; v++) acc[i][v] = VFMA(qv, kv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < TI; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NK; v++) VSTORE(s + (size_t)i * lds + v * VL, acc[i][v]);
}

/* Same for a ragged tile: rows < TI, keys < 32. */
static void score_edge(const float *q, int ni, const float *kt, int ldk, int nj, float *s, int lds) {
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < nj; j++) {
            float a = 0;
            for (int d = 0; d < HD; d++) a += q[i * HD + d] * kt[(size_t)d * ldk + j];
            s[(size_t)i * lds + j] = a;
        }
}

/* O[i][:] += sum_j p[i][j] v[j][:] for TO rows (v rows ldv apart), DW
 * channels at a time. */
static inline void pv_tile(const float *p, int ldp, int nj, const float *v, int ldv, float *O) {
    for (int d0 = 0; d0 < HD; d0 += DW) {
        vf acc[TO][ND];
#pragma GCC unroll 16
        for (int i = 0; i < TO; i++)
#pragma GCC unroll 8
            for (int u = 0; u < ND; u++) acc[i][u] = VLOAD(O + i * HD + d0 + u * VL);
        for (int j = 0; j < nj; j++) {
            const float *vr = v + (size_t)j * ldv + d0;
            vf vv[ND];
#pragma GCC unroll 8
            for (int u = 0; u < ND; u++) vv[u] = VLOAD(vr + u * VL);
#pragma GCC unroll 16
            for (int i = 0; i < TO; i++) {
                vf pv = VSET1(p[(size_t)i * ldp + j]);
#pragma GCC unroll 8
                for (int u = 0; u < ND; u++) acc[i][u] = VFMA(pv, vv[u], acc[i][u]);
            }
        }
#pragma GCC unroll 16
        for (int i = 0; i < TO; i++)
#pragma GCC unroll 8
            for (int u = 0; u < ND; u++) VSTORE(O + i * HD + d0 + u * VL, acc[i][u]);
    }
}

static void pv_edge(const float *p, int ldp, int ni, int nj, const float *v, int ldv, float *O) {
    for (int i = 0; i < ni; i++)
        for (int j = 0; j < nj; j++) {
            float pv = p[(size_t)i * ldp + j];
            const float *vr = v + (size_t)j * ldv;
            for (int d = 0; d < HD; d++) O[i * HD + d] += pv * vr[d];
        }
}

/* x[j] = exp(x[j] - shift), returns the sum. */
static float exp_shift_sum(float *x, int n, float shift) {
#if VL == 8
    __m256 s = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = ds_exp256(_mm256_sub_ps(_mm256_loadu_ps(x + j), sh));
        _mm256_storeu_ps(x + j, e);
        s = _mm256_add_ps(s, e);
    }
    float t[8];
    _mm256_storeu_ps(t, s);
    float sum = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    for (; j < n; j++) {
        x[j] = expf(x[j] - shift);
        sum += x[j];
    }
    return sum;
#else
    return (float)ds_vexp_shift_sum(x, (size_t)n, shift);
#endif
}

static float row_max(const float *x, int n) {
    float m = x[0];
    int j = 1;
#if VL == 16
    if (n >= 16) {
        __m512 v = _mm512_loadu_ps(x);
        for (j = 16; j + 16 <= n; j += 16) v = _mm512_max_ps(v, _mm512_loadu_ps(x + j));
        m = _mm512_reduce_max_ps(v);
    }
#elif VL == 8
    if (n >= 8) {
        __m256 v = _mm256_loadu_ps(x);
        for (j = 8; j + 8 <= n; j += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(x + j));
        float t[8];
        _mm256_storeu_ps(t, v);
        m = t[0];
        for (int u = 1; u < 8; u++) m = t[u] > m ? t[u] : m;
    }
#endif
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* One (head, query block): ni rows of q (ld apart), the head's keys kt
 * [T/BK][HD][BK] and values v [T][HD]; writes o rows (ldo apart). */
static void attend_block(const float *q, int ld, int ni, const float *kt, int T, const float *v, float scale, float *o,
                         int ldo, float *ws) {
    float *qs = ws, *O = qs + BQP * HD, *S = O + BQ * HD, *m = S + BQP * BK, *l = m + BQ;
    /* q is scaled before the product, as the reference does (q * scale) @ k^T */
    for (int i = 0; i < BQP; i++)
        for (int d = 0; d < HD; d++) qs[i * HD + d] = i < ni ? q[(size_t)i * ld + d] * scale : 0.0f;
    memset(O, 0, sizeof(float) * BQ * HD);
    for (int i = 0; i < BQ; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    int nit = (ni + TI - 1) / TI * TI; /* rows computed (padding rows are zero queries) */
    for (int j0 = 0; j0 < T; j0 += BK) {
        int nj = DS_MIN(BK, T - j0), nj32 = nj / 32 * 32;
        const float *kb = kt + (size_t)j0 * HD; /* panel j0 / BK */
        for (int i = 0; i < nit; i += TI) {
            for (int j = 0; j < nj32; j += 32) score_tile(qs + i * HD, kb + j, BK, S + (size_t)i * BK + j, BK);
            if (nj32 < nj) score_edge(qs + i * HD, TI, kb + nj32, BK, nj - nj32, S + (size_t)i * BK + nj32, BK);
        }
        for (int i = 0; i < ni; i++) {
            float *s = S + (size_t)i * BK;
            float mb = row_max(s, nj), mn = mb > m[i] ? mb : m[i];
            /* exp(-inf) = 0 on the first block */
            float corr = expf(m[i] - mn);
            float sum = exp_shift_sum(s, nj, mn);
            l[i] = l[i] * corr + sum;
            m[i] = mn;
            if (corr != 1.0f)
                for (int d = 0; d < HD; d++) O[i * HD + d] *= corr;
        }
        const float *vb = v + (size_t)j0 * HD;
        int i = 0;
        for (; i + TO <= ni; i += TO) pv_tile(S + (size_t)i * BK, BK, nj, vb, HD, O + i * HD);
        if (i < ni) pv_edge(S + (size_t)i * BK, BK, ni - i, nj, vb, HD, O + i * HD);
    }
    for (int i = 0; i < ni; i++) {
        float inv = 1.0f / l[i];
        for (int d = 0; d < HD; d++) o[(size_t)i * ldo + d] = O[i * HD + d] * inv;
    }
}

void ds_vit_attention(const float *qkv, float *o, int T, int D, int n_heads, float *work, int n_threads) {
    DS_ASSERT(D == n_heads * HD);
    const int ld = 3 * D, nkb = (T + BK - 1) / BK;
    const float scale = 1.0f / sqrtf((float)HD);
    /* kt [heads][nkb][HD][BK] (zero padded), vp [heads][T][HD]: each key
     * and value block contiguous (the strided rows of qkv cost TLB misses) */
    float *kt = work, *vp = kt + kt_floats(T, D);
    float *per = vp + (size_t)T * D;
    const size_t per_floats = (size_t)BQP * HD + (size_t)BQ * HD + (size_t)BQP * BK + 2 * BQ;
    const int n_qb = (T + BQ - 1) / BQ;
#pragma omp parallel num_threads(n_threads)
    {
#pragma omp for schedule(static)
        for (int w = 0; w < n_heads * nkb; w++) {
            int h = w / nkb, jb = w % nkb, t0 = jb * BK, t1 = DS_MIN(T, t0 + BK);
            float *panel = kt + ((size_t)h * nkb + jb) * HD * BK;
            for (int d = 0; d < HD; d++) {
                float *dst = panel + (size_t)d * BK;
                const float *src = qkv + D + h * HD + d;
                for (int t = t0; t < t1; t++) dst[t - t0] = src[(size_t)t * ld];
                for (int t = t1; t < t0 + BK; t++) dst[t - t0] = 0.0f;
            }
            for (int t = t0; t < t1; t++)
                memcpy(vp + ((size_t)h * T + t) * HD, qkv + (size_t)t * ld + 2 * D + h * HD, sizeof(float) * HD);
        }
        float *ws = per + (size_t)omp_get_thread_num() * per_floats;
#pragma omp for schedule(dynamic, 1)
        for (int w = 0; w < n_heads * n_qb; w++) {
            int h = w / n_qb, i0 = (w % n_qb) * BQ, ni = DS_MIN(BQ, T - i0);
            attend_block(qkv + (size_t)i0 * ld + h * HD, ld, ni, kt + (size_t)h * nkb * HD * BK, T,
                         vp + (size_t)h * T * HD, scale, o + (size_t)i0 * D + h * HD, D, ws);
        }
    }
}
