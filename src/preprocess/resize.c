/* Bicubic resampling with PIL 9.4's exact arithmetic (src/libImaging/
 * Resample.c: precompute_coeffs, normalize_coeffs_8bpc,
 * ImagingResampleHorizontal/Vertical_8bpc), which torchvision's
 * Resize((S,S), BICUBIC) calls on PIL images. Features must not depend on
 * which tool resized, so we reproduce PIL rather than use vips_resize/reduce:
 * libvips centres its kernels and rounds differently, and differs from PIL by
 * several levels on edges.
 *
 * PIL's algorithm, reproduced step by step:
 *   - separable: a horizontal pass into an 8-bit intermediate (rounded and
 *     clipped to 0..255, as PIL stores it), then a vertical pass; a pass is
 *     skipped when that dimension does not change;
 *   - Keys' cubic convolution kernel with a = -0.5 (Catmull-Rom), support 2;
 *     when downscaling the kernel is stretched by scale = in/out (support
 *     2 * scale), i.e. antialiased;
 *   - output pixel i is centred at (i + 0.5) * scale in input coordinates;
 *     taps run over [(int)(centre - support + 0.5), (int)(centre + support +
 *     0.5)) clipped to the image (no border extension: the weights are
 *     renormalised to sum to 1 instead);
 *   - weights in double, normalised per output pixel, then converted to
 *     fixed point with 22 fractional bits (PRECISION_BITS = 32 - 8 - 2),
 *     rounding half away from zero; accumulation in int32 starting at
 *     1 << 21 (round half up), result >> 22 clipped to 0..255. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "preprocess/preprocess_internal.h"

enum { PRECISION_BITS = 32 - 8 - 2 };


typedef struct {
    int ksize;     /* taps per output pixel (max) */
    int *bounds;   /* [out, 2]: first tap, number of taps */
    int32_t *k;    /* [out, ksize] fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->k);
}

/* PIL's precompute_coeffs + normalize_coeffs_8bpc for in_size -> out_size. */
static ds_status coeffs_build(int in_size, int out_size, coeffs *c) {
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ceil_support = ceil(support);
    if (ceil_support * 2 + 1 > (double)(INT_MAX / 8))
        return ds_set_error(DS_ERR_ARG, "ds_resize_bicubic: scale %d -> %d too large", in_size, out_size);
    c->ksize = (int)ceil_support * 2 + 1;
    c->bounds = ds_alloc((size_t)out_size, 2 * sizeof(int), "ds_resize_bicubic");
    c->k = c->bounds ? ds_alloc((size_t)out_size, (size_t)c->ksize * sizeof(int32_t), "ds_resize_bicubic") : NULL;
    double *w = c->k ? ds_alloc((size_t)c->ksize, sizeof(double), "ds_resize_bicubic") : NULL;
    if (!w) {
        coeffs_free(c);
        return DS_ERR_NOMEM;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5); /* truncation toward zero, as PIL */
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            w[x] = ds_cubic_kernel((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = c->k + (size_t)xx * (size_t)c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return DS_OK;
}

/* PIL's clip8: (ss >> 22) clipped to 0..255 (arithmetic shift = floor). */
static inline uint8_t clip8(int32_t ss) {
    int32_t v = ss >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* rows [h] of [w_in, c] -> [w_out, c]. The 3-channel case keeps the three
 * sums of a pixel together (one pass over contiguous RGB taps). */
static void pass_horizontal(const uint8_t *src, int w_in, int h, int c, uint8_t *dst, int w_out, const coeffs *k) {
    for (int y = 0; y < h; y++) {
        const uint8_t *srow = src + (size_t)y * (size_t)w_in * (size_t)c;
        uint8_t *drow = dst + (size_t)y * (size_t)w_out * (size_t)c;
        for (int xx = 0; xx < w_out; xx++) {
            const int xmin = k->bounds[2 * xx], n = k->bounds[2 * xx + 1];
            const int32_t *kk = k->k + (size_t)xx * (size_t)k->ksize;
            const uint8_t *s = srow + (size_t)xmin * (size_t)c;
            if (c == 3) {
                int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < n; x++) {
                    s0 += (int32_t)s[3 * x] * kk[x];
                    s1 += (int32_t)s[3 * x + 1] * kk[x];
                    s2 += (int32_t)s[3 * x + 2] * kk[x];
                }
                drow[3 * xx] = clip8(s0);
                drow[3 * xx + 1] = clip8(s1);
                drow[3 * xx + 2] = clip8(s2);
            } else {
                for (int ch = 0; ch < c; ch++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int x = 0; x < n; x++) ss += (int32_t)s[(size_t)x * (size_t)c + (size_t)ch] * kk[x];
                    drow[(size_t)xx * (size_t)c + (size_t)ch] = clip8(ss);
                }
            }
        }
    }
}

/* [h_in, w, c] -> [h_out, w, c]; acc is a caller buffer of w*c int32. Each
 * output row accumulates whole input rows (vectorisable), which adds the
 * same products in the same order as PIL's per-pixel loop. */
static void pass_vertical(const uint8_t *src, int w, int c, uint8_t *dst, int h_out, const coeffs *k, int32_t *acc) {
    const size_t row = (size_t)w * (size_t)c;
    for (int yy = 0; yy < h_out; yy++) {
        const int ymin = k->bounds[2 * yy], n = k->bounds[2 * yy + 1];
        const int32_t *kk = k->k + (size_t)yy * (size_t)k->ksize;
        for (size_t i = 0; i < row; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < n; y++) {
            const uint8_t *s = src + (size_t)(ymin + y) * row;
            const int32_t ky = kk[y];
            for (size_t i = 0; i < row; i++) acc[i] += (int32_t)s[i] * ky;
        }
        uint8_t *drow = dst + (size_t)yy * row;
        for (size_t i = 0; i < row; i++) drow[i] = clip8(acc[i]);
    }
}

ds_status ds_resize_bicubic_u8(const uint8_t *src, int w, int h, int c, uint8_t *dst, int out_w, int out_h) {
    if (!src || !dst || w <= 0 || h <= 0 || c <= 0 || out_w <= 0 || out_h <= 0)
        return ds_set_error(DS_ERR_ARG, "ds_resize_bicubic: invalid size %dx%dx%d -> %dx%d", w, h, c, out_w, out_h);
    const bool need_h = out_w != w, need_v = out_h != h;
    if (!need_h && !need_v) {
        memcpy(dst, src, (size_t)w * (size_t)h * (size_t)c);
        return DS_OK;
    }
    coeffs kh = {0}, kv = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    ds_status st = DS_OK;
    if (need_v && (st = coeffs_build(h, out_h, &kv)) != DS_OK) return st;
    if (need_h && (st = coeffs_build(w, out_w, &kh)) != DS_OK) goto done;
    if (need_v && !(acc = ds_alloc((size_t)out_w * (size_t)c, sizeof(int32_t), "ds_resize_bicubic"))) {
        st = DS_ERR_NOMEM;
        goto done;
    }

    if (need_h && need_v) {
        /* PIL only resamples the rows the vertical pass reads. */
        int y_first = kv.bounds[0];
        int y_last = kv.bounds[2 * (out_h - 1)] + kv.bounds[2 * (out_h - 1) + 1];
        tmp = ds_alloc((size_t)(y_last - y_first) * (size_t)out_w, (size_t)c, "ds_resize_bicubic");
        if (!tmp) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        pass_horizontal(src + (size_t)y_first * (size_t)w * (size_t)c, w, y_last - y_first, c, tmp, out_w, &kh);
        for (int i = 0; i < out_h; i++) kv.bounds[2 * i] -= y_first;
        pass_vertical(tmp, out_w, c, dst, out_h, &kv, acc);
    } else if (need_h) {
        pass_horizontal(src, w, h, c, dst, out_w, &kh);
    } else {
        pass_vertical(src, w, c, dst, out_h, &kv, acc);
    }
done:
    free(tmp);
    free(acc);
    coeffs_free(&kh);
    coeffs_free(&kv);
    return st;
}
