/* bfloat16 GEMM, fp32 accumulation (see gemm_bf16.h for the numerics and the
 * packed layout).
 *
 * Written by hand because no Debian library offers it in a form we can use:
 * OpenBLAS 0.3.21's cblas_sbgemm takes bf16 for both operands with no
 * packed-weight API (it would repack the weights at every call, and needs A
 * converted to bf16 first), and oneDNN is not packaged for C in Debian 12.
 *
 * Blocking follows GotoBLAS/BLIS (Goto & van de Geijn 2008, "Anatomy of
 * high-performance matrix multiplication"): a block of MC rows of A x KC pairs
 * is packed once (L2), each NR-row panel of W x KC pairs (24 KiB) stays in L1
 * while every MR-row tile of A runs against it. The register tile is 12 x 32
 * (24 zmm accumulators out of 32), as in src/scorer/nn.c.
 *
 * The AVX-512 BF16 kernel is compiled with a target attribute (only this
 * function gets the ISA, so the file builds with any -march) and is only
 * called after __builtin_cpu_supports("avx512bf16") said yes. */
#include "core/gemm_bf16.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GB_HAVE_X86 1
#else
#define GB_HAVE_X86 0
#endif

enum { MR = DS_GEMM_BF16_MR, NR = DS_GEMM_BF16_NR, KC = DS_GEMM_BF16_KC, MC = DS_GEMM_BF16_MC };

static int cpu_has_avx2_fma(void);

int ds_cpu_has_avx512bf16(void) {
#if GB_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

const char *ds_gemm_bf16_kernel_name(void) {
    return ds_cpu_has_avx512bf16() ? "avx512bf16"
           : cpu_has_avx2_fma()    ? "avx2 emulation: no AVX-512 BF16 on this CPU"
                                   : "portable C: no AVX-512 BF16 on this CPU";
}

static inline uint32_t bf16_pair(float lo, float hi) {
    return (uint32_t)ds_f32_to_bf16(lo) | ((uint32_t)ds_f32_to_bf16(hi) << 16);
}

/* Packs from f32 rows (W) or from bf16 bit patterns (Wb), rows ldw apart. */
static ds_status mat_pack(const float *W, const uint16_t *Wb, int n, int k, int ldw, ds_bf16_mat *out) {
    if (n < 1 || k < 1) return ds_set_error(DS_ERR_ARG, "ds_bf16_mat_pack: bad shape [%d, %d]", n, k);
    int kp = (k + 1) / 2, n_panels = (n + NR - 1) / NR;
    size_t words;
    if (!ds_mul_size((size_t)n_panels * NR, (size_t)kp, &words))
        return ds_set_error(DS_ERR_NOMEM, "ds_bf16_mat_pack: [%d, %d] too large", n, k);
    uint32_t *d = ds_alloc(words, sizeof(uint32_t), "ds_bf16_mat_pack");
    if (!d) return DS_ERR_NOMEM;
    for (int pn = 0; pn < n_panels; pn++) {
        uint32_t *panel = d + (size_t)pn * kp * NR;
        for (int r = 0; r < NR; r++) {
            int j = pn * NR + r;
            for (int p = 0; p < kp; p++) {
                uint32_t lo = 0, hi = 0;
                if (j < n && W) {
                    const float *row = W + (size_t)j * ldw;
                    uint32_t both = bf16_pair(row[2 * p], 2 * p + 1 < k ? row[2 * p + 1] : 0.0f);
                    lo = both & 0xffffu, hi = both >> 16;
                } else if (j < n) {
                    const uint16_t *row = Wb + (size_t)j * ldw;
                    lo = row[2 * p], hi = 2 * p + 1 < k ? row[2 * p + 1] : 0;
                }
                panel[(size_t)p * NR + r] = lo | hi << 16;
            }
        }
    }
    *out = (ds_bf16_mat){.n = n, .k = k, .kp = kp, .n_panels = n_panels, .data = d};
    return DS_OK;
}

ds_status ds_bf16_mat_pack(const float *W, int n, int k, int ldw, ds_bf16_mat *out) {
    return mat_pack(W, NULL, n, k, ldw, out);
}

ds_status ds_bf16_mat_pack_bits(const uint16_t *W, int n, int k, int ldw, ds_bf16_mat *out) {
    return mat_pack(NULL, W, n, k, ldw, out);
}

void ds_bf16_mat_free(ds_bf16_mat *m) {
    if (!m) return;
    free(m->data);
    memset(m, 0, sizeof *m);
}

/* Packs rows [0, mc) x pairs [p0, p0 + kc) of A into [ceil(mc/MR)][kc][MR],
 * rows past mc zero. */
static void pack_a(const float *A, int lda, int mc, int k, int p0, int kc, uint32_t *ap) {
    int n_tiles = (mc + MR - 1) / MR;
    for (int t = 0; t < n_tiles; t++) {
        uint32_t *tile = ap + (size_t)t * kc * MR;
        for (int i = 0; i < MR; i++) {
            int r = t * MR + i;
            if (r >= mc) {
                for (int p = 0; p < kc; p++) tile[(size_t)p * MR + i] = 0;
                continue;
            }
            const float *row = A + (size_t)r * lda;
            int full = DS_MIN(kc, k / 2 - p0); /* pairs with both halves inside K */
            int p = 0;
            for (; p < full; p++) tile[(size_t)p * MR + i] = bf16_pair(row[2 * (p0 + p)], row[2 * (p0 + p) + 1]);
            for (; p < kc; p++) {
                int kk = 2 * (p0 + p);
                tile[(size_t)p * MR + i] = bf16_pair(kk < k ? row[kk] : 0.0f, 0.0f);
            }
        }
    }
}

typedef void (*ukr_fn)(const uint32_t *ap, const uint32_t *bp, int kc, float *C, int ldc, int mr, int nr, int acc);

static inline float lo_f32(uint32_t w) {
    union { uint32_t u; float f; } v = {.u = w << 16};
    return v.f;
}
static inline float hi_f32(uint32_t w) {
    union { uint32_t u; float f; } v = {.u = w & 0xffff0000u};
    return v.f;
}

/* Portable kernel: the same pairs as vdpbf16ps, in C that gcc vectorises (4
 * rows at a time so that the accumulators fit 16 AVX2 registers). The
 * products are exact in fp32, so fmaf and a*b + c agree. */
static void ukr_portable(const uint32_t *ap, const uint32_t *bp, int kc, float *C, int ldc, int mr, int nr, int acc) {
    for (int i0 = 0; i0 < mr; i0 += 4) {
        float c[4][NR];
        memset(c, 0, sizeof c);
        for (int p = 0; p < kc; p++) {
            const uint32_t *b = bp + (size_t)p * NR, *a = ap + (size_t)p * MR + i0;
            float blo[NR], bhi[NR];
            for (int j = 0; j < NR; j++) {
                blo[j] = lo_f32(b[j]);
                bhi[j] = hi_f32(b[j]);
            }
            for (int i = 0; i < 4; i++) {
                float alo = lo_f32(a[i]), ahi = hi_f32(a[i]);
                for (int j = 0; j < NR; j++) {
#if defined(__FMA__)
                    c[i][j] = fmaf(ahi, bhi[j], fmaf(alo, blo[j], c[i][j]));
#else
                    c[i][j] = c[i][j] + alo * blo[j] + ahi * bhi[j];
#endif
                }
            }
        }
        for (int i = 0; i < 4 && i0 + i < mr; i++) {
            float *cr = C + (size_t)(i0 + i) * ldc;
            for (int j = 0; j < nr; j++) cr[j] = acc ? cr[j] + c[i][j] : c[i][j];
        }
    }
}

#if GB_HAVE_X86
/* AVX2 + FMA kernel for CPUs without AVX-512 BF16 (Zen 3, Haswell..): the
 * pairs are split into even/odd fp32 vectors (a bf16 is the top half of an
 * fp32) and multiplied with two FMAs, 4 rows x 16 columns at a time (8 + 4 +
 * 2 + 1 of the 16 ymm registers). With its target attribute it also serves
 * builds without -march=native, where the C kernel gets SSE2 only. On a
 * loaded Zen 3 (load average 18) one thread ran a 685x1536x384 product at
 * 12 GFLOP/s, level with the -march=native C kernel and 0.6-1.1x OpenBLAS
 * sgemm in the same minute. */
__attribute__((target("avx2,fma"))) static void ukr_avx2(const uint32_t *ap, const uint32_t *bp, int kc, float *C,
                                                        int ldc, int mr, int nr, int acc) {
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    for (int h = 0; h < NR && h < nr; h += 16) {
        for (int i0 = 0; i0 < mr; i0 += 4) {
            __m256 c[4][2];
            for (int i = 0; i < 4; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
            for (int p = 0; p < kc; p++) {
                const uint32_t *b = bp + (size_t)p * NR + h;
                __m256i w0 = _mm256_loadu_si256((const __m256i *)b), w1 = _mm256_loadu_si256((const __m256i *)(b + 8));
                __m256 b0l = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16));
                __m256 b0h = _mm256_castsi256_ps(_mm256_and_si256(w0, hi));
                __m256 b1l = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16));
                __m256 b1h = _mm256_castsi256_ps(_mm256_and_si256(w1, hi));
                const uint32_t *a = ap + (size_t)p * MR + i0;
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m256i av = _mm256_set1_epi32((int)a[i]);
                    __m256 al = _mm256_castsi256_ps(_mm256_slli_epi32(av, 16));
                    __m256 ah = _mm256_castsi256_ps(_mm256_and_si256(av, hi));
                    c[i][0] = _mm256_fmadd_ps(ah, b0h, _mm256_fmadd_ps(al, b0l, c[i][0]));
                    c[i][1] = _mm256_fmadd_ps(ah, b1h, _mm256_fmadd_ps(al, b1l, c[i][1]));
                }
            }
            int nc = DS_MIN(16, nr - h);
            for (int i = 0; i < 4 && i0 + i < mr; i++) {
                float t[16], *cr = C + (size_t)(i0 + i) * ldc + h;
                _mm256_storeu_ps(t, c[i][0]);
                _mm256_storeu_ps(t + 8, c[i][1]);
                for (int j = 0; j < nc; j++) cr[j] = acc ? cr[j] + t[j] : t[j];
            }
        }
    }
}

__attribute__((target("avx512f,avx512bf16"))) static void ukr_avx512bf16(const uint32_t *ap, const uint32_t *bp, int kc,
                                                                          float *C, int ldc, int mr, int nr, int acc) {
    __m512 c[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int p = 0; p < kc; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (size_t)p * NR));
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(bp + (size_t)p * NR + 16));
        const uint32_t *a = ap + (size_t)p * MR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i]);
            c[i][0] = _mm512_dpbf16_ps(c[i][0], av, b0);
            c[i][1] = _mm512_dpbf16_ps(c[i][1], av, b1);
        }
    }
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);
    const __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *cr = C + (size_t)i * ldc;
        __m512 v0 = c[i][0], v1 = c[i][1];
        if (acc) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
}
#endif

static int cpu_has_avx2_fma(void) {
#if GB_HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static ukr_fn pick(ds_gemm_bf16_kernel kernel) {
#if GB_HAVE_X86
    if (kernel == DS_GEMM_BF16_NATIVE || (kernel == DS_GEMM_BF16_AUTO && ds_cpu_has_avx512bf16())) {
        DS_ASSERT(ds_cpu_has_avx512bf16());
        return ukr_avx512bf16;
    }
    if (kernel == DS_GEMM_BF16_AVX2 || (kernel == DS_GEMM_BF16_AUTO && cpu_has_avx2_fma())) {
        DS_ASSERT(cpu_has_avx2_fma());
        return ukr_avx2;
    }
#else
    DS_ASSERT(kernel != DS_GEMM_BF16_NATIVE);
#endif
    return ukr_portable;
}

size_t ds_bf16_pack_a_words(int M, int k) { return (size_t)((M + MR - 1) / MR) * MR * (size_t)((k + 1) / 2); }

void ds_bf16_pack_a(const float *A, int lda, int M, int k, uint32_t *ap) { pack_a(A, lda, M, k, 0, (k + 1) / 2, ap); }

void ds_gemm_bf16_pa(const uint32_t *ap, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                     ds_gemm_bf16_kernel kernel) {
    DS_ASSERT(j0 % NR == 0 && j0 >= 0 && j1 <= W->n);
    ukr_fn ukr = pick(kernel);
    const int kp = W->kp, n_tiles = (M + MR - 1) / MR;
    for (int p0 = 0; p0 < kp; p0 += KC) {
        int kc = DS_MIN(KC, kp - p0);
        for (int j = j0; j < j1; j += NR) {
            int nr = DS_MIN(NR, j1 - j);
            const uint32_t *bp = W->data + ((size_t)(j / NR) * kp + p0) * NR;
            for (int t = 0; t < n_tiles; t++)
                ukr(ap + ((size_t)t * kp + p0) * MR, bp, kc, C + (size_t)t * MR * ldc + (j - j0), ldc,
                    DS_MIN(MR, M - t * MR), nr, p0 > 0);
        }
    }
}

void ds_bf16_mat_row(const ds_bf16_mat *W, int j, float *out) {
    const uint32_t *panel = W->data + (size_t)(j / NR) * W->kp * NR + j % NR;
    for (int p = 0; p < W->kp; p++) {
        uint32_t w = panel[(size_t)p * NR];
        out[2 * p] = lo_f32(w);
        if (2 * p + 1 < W->k) out[2 * p + 1] = hi_f32(w);
    }
}

void ds_gemm_bf16_ex(const float *A, int lda, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                     void *work, ds_gemm_bf16_kernel kernel) {
    DS_ASSERT(j0 % NR == 0 && j0 >= 0 && j1 <= W->n && ((uintptr_t)work % 64) == 0);
    ukr_fn ukr = pick(kernel);
    uint32_t *ap = work;
    const int kp = W->kp;
    for (int m0 = 0; m0 < M; m0 += MC) {
        int mc = DS_MIN(MC, M - m0), n_tiles = (mc + MR - 1) / MR;
        for (int p0 = 0; p0 < kp; p0 += KC) {
            int kc = DS_MIN(KC, kp - p0);
            pack_a(A + (size_t)m0 * lda, lda, mc, W->k, p0, kc, ap);
            for (int j = j0; j < j1; j += NR) {
                int nr = DS_MIN(NR, j1 - j);
                const uint32_t *bp = W->data + ((size_t)(j / NR) * kp + p0) * NR;
                for (int t = 0; t < n_tiles; t++)
                    ukr(ap + (size_t)t * kc * MR, bp, kc, C + (size_t)(m0 + t * MR) * ldc + (j - j0), ldc,
                        DS_MIN(MR, mc - t * MR), nr, p0 > 0);
            }
        }
    }
}

void ds_gemm_bf16(const float *A, int lda, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                  void *work) {
    ds_gemm_bf16_ex(A, lda, M, W, C, ldc, j0, j1, work, DS_GEMM_BF16_AUTO);
}
