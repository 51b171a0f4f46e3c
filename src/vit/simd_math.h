/* Vectorised exp and erf for the softmax and GELU of the ViT. libm's scalar
 * expf/erff are called ~300M times per ViT-B forward at 518 px; that alone
 * would cost seconds, so these are hand-written (no Debian library offers a
 * vector math API usable from C11 without -ffast-math).
 *
 * exp: Cephes expf (range reduction by ln2 split in hi/lo parts, degree-6
 * polynomial, ~1 ulp), the same scheme as PyTorch's Sleef-free AVX path.
 * erf: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), exactly the formula of
 * PyTorch's Vectorized<float>::erf, so GELU matches the reference closely. */
#ifndef DS_SIMD_MATH_H
#define DS_SIMD_MATH_H

#include <math.h>
#include <stddef.h>

/* exp(x) = 2^n * p(r), n = round(x / ln2), r = x - n*ln2 (ln2 split as
 * C1 + C2 for extra precision), p the Cephes expf polynomial; one body for
 * both vector widths (P is the intrinsic prefix, _mm512 or _mm256), the
 * callers clamp x and apply 2^n in their own way. */
#define DS_EXP_POLY(P, T, x, fx, y)                                                 \
    T y;                                                                            \
    do {                                                                            \
        T r_ = P##_fnmadd_ps(fx, P##_set1_ps(0.693359375f), x);                     \
        r_ = P##_fnmadd_ps(fx, P##_set1_ps(-2.12194440e-4f), r_);                   \
        y = P##_set1_ps(1.9875691500E-4f);                                          \
        y = P##_fmadd_ps(y, r_, P##_set1_ps(1.3981999507E-3f));                     \
        y = P##_fmadd_ps(y, r_, P##_set1_ps(8.3334519073E-3f));                     \
        y = P##_fmadd_ps(y, r_, P##_set1_ps(4.1665795894E-2f));                     \
        y = P##_fmadd_ps(y, r_, P##_set1_ps(1.6666665459E-1f));                     \
        y = P##_fmadd_ps(y, r_, P##_set1_ps(5.0000001201E-1f));                     \
        y = P##_fmadd_ps(y, P##_mul_ps(r_, r_), P##_add_ps(r_, P##_set1_ps(1.0f))); \
    } while (0)

#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 ds_exp512(__m512 x) {
    const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-88.3762626647949f);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    DS_EXP_POLY(_mm512, __m512, x, fx, y);
    /* scale by 2^n */
    return _mm512_scalef_ps(y, fx);
}

static inline __m512 ds_erf512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one));
    __m512 r = _mm512_set1_ps(1.061405429f);
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-1.453152027f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
    __m512 e = ds_exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), ax), ax));
    __m512 y = _mm512_fnmadd_ps(_mm512_mul_ps(r, t), e, one); /* 1 - r*t*exp(-x^2) */
    /* copy the sign of x */
    __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#include <immintrin.h>
/* The same in 256-bit registers for AVX2 builds (used by the fused
 * attention only, so the other f32 kernels keep libm's expf there); 2^n is built in the exponent field (n >= -126 after the clamp,
 * so below e^-87.3 the result flushes to 0: harmless in a softmax). libm's
 * scalar expf was a quarter of the attention's time on Zen 3. */
static inline __m256 ds_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3762626647949f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    DS_EXP_POLY(_mm256, __m256, x, fx, y);
    /* the clamp keeps n in [-126, 128); n = 128 only at x = 88.38 (exp overflows anyway) */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
#endif

/* x[i] = exp(x[i] - shift); returns the sum (double accumulation). */
static inline double ds_vexp_shift_sum(float *x, size_t n, float shift) {
    size_t i = 0;
    double sum = 0;
#if defined(__AVX512F__)
    __m512 s = _mm512_setzero_ps(), sh = _mm512_set1_ps(shift);
    for (; i + 16 <= n; i += 16) {
        __m512 e = ds_exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, e);
        s = _mm512_add_ps(s, e);
    }
    sum = _mm512_reduce_add_ps(s);
#endif
    for (; i < n; i++) {
        x[i] = expf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

/* Exact (erf) GELU in place: 0.5 x (1 + erf(x / sqrt 2)), torch nn.GELU(). */
static inline void ds_vgelu(float *x, size_t n) {
    size_t i = 0;
#if defined(__AVX512F__)
    const __m512 half = _mm512_set1_ps(0.5f), rs2 = _mm512_set1_ps(0.70710678118654752f), one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 e = ds_erf512(_mm512_mul_ps(v, rs2));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
    }
#endif
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* SiLU(a) * b into a, for SwiGLU: a / (1 + exp(-a)) * b. */
static inline void ds_vsilu_mul(float *a, const float *b, size_t n) {
    size_t i = 0;
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(a + i);
        __m512 e = ds_exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_storeu_ps(a + i, _mm512_mul_ps(s, _mm512_loadu_ps(b + i)));
    }
#endif
    for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

#endif
