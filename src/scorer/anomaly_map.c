/* Anomaly maps: patch-score grid -> bicubic SxS -> Gaussian blur -> image size.
 *
 * References matched (see tests/fixtures/make_scorer_fixtures.py):
 *   bicubic:  torch 1.13 F.interpolate(mode='bicubic', align_corners=False),
 *             aten/src/ATen/native/UpSample.h: source x = (dst+0.5)*in/out - 0.5
 *             (not clamped for cubic), Keys' cubic convolution with A = -0.75,
 *             taps at floor(x)-1..floor(x)+2 clamped to the border;
 *   blur:     torchvision.transforms.functional.gaussian_blur with anomalib's
 *             kernel size 2*int(4*sigma+0.5)+1 (anomalib GaussianBlur2d):
 *             taps exp(-0.5 (x/sigma)^2) at x = -(ks-1)/2..(ks-1)/2, normalised
 *             to sum 1, 'reflect' padding (edge not repeated = OpenCV
 *             BORDER_REFLECT_101); we run it separably (same kernel, rows
 *             then columns). When the image is smaller than the kernel's
 *             half-width (torch refuses), we keep reflecting;
 *   bilinear: torch F.interpolate(mode='bilinear', align_corners=False, no
 *             antialias): x = max(0, (dst+0.5)*in/out - 0.5), right tap clamped
 *             (cv2.resize INTER_LINEAR computes the same). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/scorer_internal.h"

enum { MAP_MAX_SIDE = 1 << 16 };

/* Keys (1981) cubic convolution kernel pieces, as torch's
 * cubic_convolution1 (|x| <= 1) and cubic_convolution2 (1 < |x| < 2). */
static inline float cubic1(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
static inline float cubic2(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Per output coordinate: the 4 clamped source taps and their weights. */
static void cubic_taps(int in, int out, int *idx /*[out*4]*/, float *w /*[out*4]*/) {
    const float A = -0.75f;
    const float scale = (float)in / (float)out;
    for (int o = 0; o < out; o++) {
        float x = scale * ((float)o + 0.5f) - 0.5f;
        float fx = floorf(x);
        float t = x - fx;
        int ix = (int)fx;
        w[o * 4 + 0] = cubic2(t + 1.0f, A);
        w[o * 4 + 1] = cubic1(t, A);
        w[o * 4 + 2] = cubic1(1.0f - t, A);
        w[o * 4 + 3] = cubic2(2.0f - t, A);
        for (int i = 0; i < 4; i++) idx[o * 4 + i] = clampi(ix - 1 + i, 0, in - 1);
    }
}

static inline int reflect101(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i >= n ? period - i : i;
}

/* 1-D blur of n values with stride, src -> dst (distinct buffers). */
static void blur_line(const float *src, float *dst, int n, ptrdiff_t stride, const float *kern, int half) {
    for (int i = 0; i < n; i++) {
        float s = 0;
        if (i - half >= 0 && i + half < n) {
            const float *p = src + (ptrdiff_t)(i - half) * stride;
            for (int t = 0; t <= 2 * half; t++) s += kern[t] * p[t * stride];
        } else {
            for (int t = -half; t <= half; t++) s += kern[t + half] * src[(ptrdiff_t)reflect101(i + t, n) * stride];
        }
        dst[(ptrdiff_t)i * stride] = s;
    }
}

static void linear_taps(int in, int out, int *i0, int *i1, float *l1) {
    const float scale = (float)in / (float)out;
    for (int o = 0; o < out; o++) {
        float x = scale * ((float)o + 0.5f) - 0.5f;
        if (x < 0) x = 0;
        int a = (int)x;
        if (a > in - 1) a = in - 1;
        i0[o] = a;
        i1[o] = a < in - 1 ? a + 1 : a;
        l1[o] = x - (float)a;
    }
}

ds_status ds_anomaly_map(const float *patch_scores, int gh, int gw, int S, float sigma, int out_w, int out_h,
                         float *out) {
    if (!patch_scores || !out) return ds_set_error(DS_ERR_ARG, "ds_anomaly_map: NULL patch_scores or out");
    if (gh < 1 || gw < 1 || S < 1 || out_w < 1 || out_h < 1 || gh > MAP_MAX_SIDE || gw > MAP_MAX_SIDE ||
        S > MAP_MAX_SIDE || out_w > MAP_MAX_SIDE || out_h > MAP_MAX_SIDE)
        return ds_set_error(DS_ERR_ARG, "ds_anomaly_map: bad sizes grid %dx%d, S=%d, out %dx%d (each 1..%d)", gh, gw,
                            S, out_w, out_h, MAP_MAX_SIDE);
    if (!(sigma <= 1000.0f)) return ds_set_error(DS_ERR_ARG, "ds_anomaly_map: sigma=%g out of range", (double)sigma);

    const size_t SS = (size_t)S * (size_t)S;
    const int half = sigma > 0 ? (int)(4.0f * sigma + 0.5f) : 0; /* ks = 2*half+1 */
    const int resize = out_w != S || out_h != S;
    float *up = ds_alloc(SS, sizeof(float), "ds_anomaly_map: upsampled map");
    float *tmp = ds_alloc(SS, sizeof(float), "ds_anomaly_map: blur buffer");
    float *kern = ds_alloc((size_t)(2 * half + 1), sizeof(float), "ds_anomaly_map: kernel");
    int *cidx = ds_alloc((size_t)S * 8, sizeof(int), "ds_anomaly_map: taps");
    float *cw = ds_alloc((size_t)S * 8, sizeof(float), "ds_anomaly_map: taps");
    int *li = ds_alloc((size_t)(out_w + out_h) * 2, sizeof(int), "ds_anomaly_map: taps");
    float *lw = ds_alloc((size_t)(out_w + out_h), sizeof(float), "ds_anomaly_map: taps");
    ds_status st = DS_OK;
    if (!up || !tmp || !kern || !cidx || !cw || !li || !lw) {
        st = DS_ERR_NOMEM;
        goto cleanup;
    }

    /* 1. bicubic: columns first into tmp [gh, S], then rows into up [S, S]. */
    {
        int *xi = cidx, *yi = cidx + (size_t)S * 4;
        float *xw = cw, *yw = cw + (size_t)S * 4;
        cubic_taps(gw, S, xi, xw);
        cubic_taps(gh, S, yi, yw);
        for (int y = 0; y < gh; y++)
            for (int x = 0; x < S; x++) {
                const float *r = patch_scores + (size_t)y * gw;
                const int *ii = xi + x * 4;
                const float *ww = xw + x * 4;
                tmp[(size_t)y * S + x] = ww[0] * r[ii[0]] + ww[1] * r[ii[1]] + ww[2] * r[ii[2]] + ww[3] * r[ii[3]];
            }
        for (int y = 0; y < S; y++) {
            const int *ii = yi + y * 4;
            const float *ww = yw + y * 4;
            const float *r0 = tmp + (size_t)ii[0] * S, *r1 = tmp + (size_t)ii[1] * S;
            const float *r2 = tmp + (size_t)ii[2] * S, *r3 = tmp + (size_t)ii[3] * S;
            float *o = up + (size_t)y * S;
            for (int x = 0; x < S; x++) o[x] = ww[0] * r0[x] + ww[1] * r1[x] + ww[2] * r2[x] + ww[3] * r3[x];
        }
    }

    /* 2. Gaussian blur, rows (up -> tmp) then columns (tmp -> up). */
    if (half > 0) {
        double sum = 0;
        for (int t = -half; t <= half; t++) {
            double v = exp(-0.5 * ((double)t / sigma) * ((double)t / sigma));
            kern[t + half] = (float)v;
            sum += v;
        }
        for (int t = 0; t <= 2 * half; t++) kern[t] = (float)(kern[t] / sum);
        for (int y = 0; y < S; y++) blur_line(up + (size_t)y * S, tmp + (size_t)y * S, S, 1, kern, half);
        for (int x = 0; x < S; x++) blur_line(tmp + x, up + x, S, S, kern, half);
    }

    /* 3. bilinear to the image size. */
    if (!resize) {
        memcpy(out, up, SS * sizeof(float));
    } else {
        int *x0 = li, *x1 = li + out_w, *y0 = li + 2 * out_w, *y1 = li + 2 * out_w + out_h;
        float *xl = lw, *yl = lw + out_w;
        linear_taps(S, out_w, x0, x1, xl);
        linear_taps(S, out_h, y0, y1, yl);
        for (int y = 0; y < out_h; y++) {
            const float *ra = up + (size_t)y0[y] * S, *rb = up + (size_t)y1[y] * S;
            float b = yl[y], a = 1.0f - b;
            float *o = out + (size_t)y * out_w;
            for (int x = 0; x < out_w; x++) {
                float r = 1.0f - xl[x];
                o[x] = a * (r * ra[x0[x]] + xl[x] * ra[x1[x]]) + b * (r * rb[x0[x]] + xl[x] * rb[x1[x]]);
            }
        }
    }

cleanup:
    free(up);
    free(tmp);
    free(kern);
    free(cidx);
    free(cw);
    free(li);
    free(lw);
    return st;
}
