/* CNN primitives: convolution (dense through im2col + sgemm, the same GEMM
 * path as the ViT's linear layers, or in bf16 through ds_gemm_bf16 as the
 * ViT's bf16 path; depthwise by a direct loop), batch-norm
 * folding, max-pool, bilinear resize, adaptive average pooling.
 *
 * Each op matches the PyTorch function named in its comment; the tests
 * compare against those functions (tests/fixtures/make_cnn_fixtures.py). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn_internal.h"

/* ---- geometry ----------------------------------------------------------- */

/* floor(a / b) and ceil(a / b) for b > 0 and any sign of a */
static int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int ceil_div(int a, int b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* One spatial dimension: output size and padding before. */
static int conv_dim(const cnn_conv *c, int in, int k, int pad, int *before) {
    int eff = (k - 1) * c->dilation + 1; /* dilated kernel extent */
    if (c->pad_mode == CNN_PAD_TF_SAME) {
        /* TensorFlow SAME (tf.nn.conv2d; the rule in the shipped model's
         * metadata): out = ceil(in / s), pad_total = max((out - 1) s + k - in, 0),
         * pad_before = pad_total / 2, the rest after. */
        int out = ceil_div(in, c->stride);
        int total = (out - 1) * c->stride + eff - in;
        if (total < 0) total = 0;
        *before = total / 2;
        return out;
    }
    /* torch.nn.Conv2d: out = floor((in + 2p - eff) / s) + 1 */
    *before = pad;
    int span = in + 2 * pad - eff;
    return span < 0 ? 0 : span / c->stride + 1;
}

bool cnn_conv_geometry(const cnn_conv *c, int H, int W, int *Ho, int *Wo, int *pad_top, int *pad_left) {
    *Ho = conv_dim(c, H, c->kh, c->pad_h, pad_top);
    *Wo = conv_dim(c, W, c->kw, c->pad_w, pad_left);
    return *Ho > 0 && *Wo > 0;
}

/* ---- construction -------------------------------------------------------- */

ds_status cnn_conv_init(cnn_conv *c, int cin, int cout, int kh, int kw, int stride, int dilation, int groups,
                        cnn_pad_mode pad_mode, int pad_h, int pad_w, cnn_act act, const float *w, const float *b) {
    memset(c, 0, sizeof *c);
    if (cin < 1 || cout < 1 || kh < 1 || kw < 1 || stride < 1 || dilation < 1 || groups < 1 || cin % groups ||
        cout % groups || pad_h < 0 || pad_w < 0)
        return ds_set_error(DS_ERR_ARG, "cnn_conv_init: invalid conv %d->%d k=%dx%d stride=%d dilation=%d groups=%d", cin,
                            cout, kh, kw, stride, dilation, groups);
    c->cin = cin, c->cout = cout, c->kh = kh, c->kw = kw;
    c->stride = stride, c->dilation = dilation, c->groups = groups;
    c->pad_mode = pad_mode, c->pad_h = pad_h, c->pad_w = pad_w, c->act = act;
    size_t nw = (size_t)cout * (size_t)(cin / groups) * (size_t)kh * (size_t)kw;
    c->w = ds_alloc(nw, sizeof(float), "cnn_conv_init");
    c->b = ds_calloc((size_t)cout, sizeof(float), "cnn_conv_init");
    if (!c->w || !c->b) {
        cnn_conv_free(c);
        return DS_ERR_NOMEM;
    }
    if (w) memcpy(c->w, w, nw * sizeof(float));
    else memset(c->w, 0, nw * sizeof(float));
    if (b) memcpy(c->b, b, (size_t)cout * sizeof(float));
    return DS_OK;
}

void cnn_conv_free(cnn_conv *c) {
    if (!c) return;
    free(c->w);
    free(c->b);
    free(c->w16);
    c->w = c->b = NULL;
    c->w16 = NULL;
}

void cnn_fmt_shape(char *buf, size_t n, const int64_t *shape, int n_dims) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

/* Finds name and checks its shape; a missing tensor is an error only when
 * required. */
static ds_status find_shaped(const ds_weights *w, const char *caller, const char *name, int n_dims,
                             const int64_t *shape, bool required, const ds_tensor **out) {
    const ds_tensor *t = ds_weights_find(w, name);
    char want[96], got[96];
    cnn_fmt_shape(want, sizeof want, shape, n_dims);
    *out = NULL;
    if (!t) {
        if (!required) return DS_OK;
        return ds_set_error(DS_ERR_FORMAT, "%s: '%s': missing tensor '%s' (expected shape %s)", caller,
                            ds_weights_path(w), name, want);
    }
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        cnn_fmt_shape(got, sizeof got, t->shape, t->n_dims);
        return ds_set_error(DS_ERR_SHAPE, "%s: '%s': '%s' has shape %s, expected %s", caller, ds_weights_path(w), name,
                            got, want);
    }
    *out = t;
    return DS_OK;
}

ds_status cnn_conv_load(cnn_conv *c, const ds_weights *w, const char *caller, const char *name, const char *bn,
                        int cin, int cout, int k, int stride, int groups, cnn_pad_mode pad_mode, cnn_act act) {
    char tn[160];
    const ds_tensor *tw, *tb, *g = NULL, *beta = NULL, *mean = NULL, *var = NULL;
    ds_status st;
    if (groups < 1 || cin % groups || cout % groups)
        return ds_set_error(DS_ERR_SHAPE, "%s: '%s': conv '%s' has %d groups for %d->%d channels", caller,
                            ds_weights_path(w), name, groups, cin, cout);
    int64_t wshape[4] = {cout, cin / groups, k, k}, vshape[1] = {cout};
    snprintf(tn, sizeof tn, "%s.weight", name);
    if ((st = find_shaped(w, caller, tn, 4, wshape, true, &tw)) != DS_OK) return st;
    snprintf(tn, sizeof tn, "%s.bias", name);
    if ((st = find_shaped(w, caller, tn, 1, vshape, false, &tb)) != DS_OK) return st;
    if (bn) {
        snprintf(tn, sizeof tn, "%s.weight", bn);
        if ((st = find_shaped(w, caller, tn, 1, vshape, false, &g)) != DS_OK) return st;
        if (g) {
            const ds_tensor **dst[3] = {&beta, &mean, &var};
            const char *suffix[3] = {"bias", "running_mean", "running_var"};
            for (int i = 0; i < 3; i++) {
                snprintf(tn, sizeof tn, "%s.%s", bn, suffix[i]);
                if ((st = find_shaped(w, caller, tn, 1, vshape, true, dst[i])) != DS_OK) return st;
            }
        }
    }
    /* torch pads k // 2 on each side for the odd kernels of these nets */
    if ((st = cnn_conv_init(c, cin, cout, k, k, stride, 1, groups, pad_mode, k / 2, k / 2, act, NULL, NULL)) != DS_OK)
        return st;
    ds_tensor_to_f32(tw, c->w);
    if (tb) ds_tensor_to_f32(tb, c->b);
    if (g) {
        float *v = ds_alloc((size_t)4 * cout, sizeof(float), caller);
        if (!v) {
            cnn_conv_free(c);
            return DS_ERR_NOMEM;
        }
        ds_tensor_to_f32(g, v);
        ds_tensor_to_f32(beta, v + cout);
        ds_tensor_to_f32(mean, v + 2 * cout);
        ds_tensor_to_f32(var, v + 3 * cout);
        /* Batch-norm in eval mode, y = (x - mean) / sqrt(var + eps) * g + beta
         * (torch.nn.BatchNorm2d, eps 1e-5 as torchvision builds it), folded
         * into the preceding conv: w' = w s, b' = (b - mean) s + beta with
         * s = g / sqrt(var + eps); computed in double. */
        size_t per = (size_t)(cin / groups) * (size_t)k * (size_t)k;
        for (int o = 0; o < cout; o++) {
            double s = (double)v[o] / sqrt((double)v[3 * cout + o] + 1e-5);
            for (size_t i = 0; i < per; i++) c->w[(size_t)o * per + i] = (float)((double)c->w[(size_t)o * per + i] * s);
            c->b[o] = (float)(((double)c->b[o] - (double)v[2 * cout + o]) * s + (double)v[cout + o]);
        }
        free(v);
    }
    return DS_OK;
}

/* ---- forward ------------------------------------------------------------- */

static inline float activate(float v, cnn_act act) {
    if (act == CNN_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (act == CNN_ACT_RELU6) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    return v;
}

/* y[c][n] = act(y[c][n] + b[c] (+ r[c][n])) for channels [0, C) and
 * positions [n0, n1) of planes of N positions. */
static void epilogue(float *y, const float *b, const float *r, int C, size_t N, size_t n0, size_t n1, cnn_act act) {
    for (int c = 0; c < C; c++) {
        float *yc = y + (size_t)c * N;
        const float *rc = r ? r + (size_t)c * N : NULL;
        float bc = b[c];
        if (rc)
            for (size_t i = n0; i < n1; i++) yc[i] = activate(yc[i] + bc + rc[i], act);
        else
            for (size_t i = n0; i < n1; i++) yc[i] = activate(yc[i] + bc, act);
    }
}

/* Row r = (ci, ky, kx) of the im2col matrix for output positions [n0, n1):
 * dst[n - n0] = x[ci][oy s - pt + ky d][ox s - pl + kx d] (n = oy Wo + ox),
 * zero outside; the row order matches the OIHW weight's (in, kh, kw). */
static void im2col_row(const cnn_conv *c, const float *x, int H, int W, int Wo, int pt, int pl, int r, float *dst,
                       size_t n0, size_t n1) {
    int s = c->stride, d = c->dilation, kh = c->kh, kw = c->kw;
    int kx = r % kw, ky = (r / kw) % kh, ci = r / (kw * kh);
    const float *xc = x + (size_t)ci * H * W;
    int offx = kx * d - pl;
    /* ox with 0 <= ox s + offx < W */
    int lo = DS_MAX(0, ceil_div(-offx, s)), hi = DS_MIN(Wo, floor_div(W - 1 - offx, s) + 1);
    if (hi < lo) hi = lo;
    for (size_t n = n0; n < n1;) {
        int oy = (int)(n / (size_t)Wo), ox0 = (int)(n % (size_t)Wo);
        int ox1 = (int)DS_MIN((size_t)Wo, (size_t)ox0 + (n1 - n)); /* this row's part of the slice */
        float *seg = dst + (n - n0);                               /* seg[ox - ox0] is position (oy, ox) */
        int iy = oy * s - pt + ky * d;
        if (iy < 0 || iy >= H) {
            for (int ox = ox0; ox < ox1; ox++) seg[ox - ox0] = 0.0f;
        } else {
            const float *src = xc + (size_t)iy * W;
            int a = DS_MAX(ox0, lo), b = DS_MIN(ox1, hi);
            for (int ox = ox0; ox < DS_MIN(a, ox1); ox++) seg[ox - ox0] = 0.0f;
            if (a < b) {
                if (s == 1) memcpy(seg + (a - ox0), src + a + offx, sizeof(float) * (size_t)(b - a));
                else
                    for (int ox = a; ox < b; ox++) seg[ox - ox0] = src[ox * s + offx];
            }
            for (int ox = DS_MAX(b, ox0); ox < ox1; ox++) seg[ox - ox0] = 0.0f;
        }
        n += (size_t)(ox1 - ox0);
    }
}

/* im2col of output positions [n0, n1): cols [(ci, ky, kx), n], rows N apart. */
static void im2col(const cnn_conv *c, const float *x, int H, int W, int Ho, int Wo, int pt, int pl, float *cols,
                   size_t n0, size_t n1) {
    size_t N = (size_t)Ho * Wo;
    for (int r = 0; r < c->cin * c->kh * c->kw; r++) im2col_row(c, x, H, W, Wo, pt, pl, r, cols + (size_t)r * N + n0, n0, n1);
}

/* ---- the bf16 dense path --------------------------------------------------- */

/* Output positions per block: 6 panels of DS_GEMM_BF16_NR. */
enum { BF16_BM = 6 * DS_GEMM_BF16_NR, BF16_NR = DS_GEMM_BF16_NR };

/* 32-bit words of one group's packed weights. */
static size_t w16_words(const cnn_conv *c) {
    return ds_bf16_pack_a_words(c->cout / c->groups, c->cin / c->groups * c->kh * c->kw);
}

ds_status cnn_conv_pack_bf16(cnn_conv *c) {
    int cpg = c->cin / c->groups, opg = c->cout / c->groups, K = cpg * c->kh * c->kw;
    if (c->w16 || (cpg == 1 && c->groups > 1)) return DS_OK; /* packed already, or depthwise: no GEMM, stays f32 */
    size_t per = w16_words(c);
    uint32_t *w16 = ds_alloc(per * (size_t)c->groups, sizeof(uint32_t), "cnn_conv_pack_bf16");
    if (!w16) return DS_ERR_NOMEM;
    for (int g = 0; g < c->groups; g++) ds_bf16_pack_a(c->w + (size_t)g * opg * K, K, opg, K, w16 + (size_t)g * per);
    c->w16 = w16;
    free(c->w); /* only the packed copy is used from now on */
    c->w = NULL;
    return DS_OK;
}

/* Per-thread floats (32-bit words) of the bf16 path: one block of BM
 * positions packed as a ds_bf16_mat, two im2col rows. */
static size_t bf16_thread_words(const cnn_conv *c) {
    size_t kp = (size_t)(c->cin / c->groups * c->kh * c->kw + 1) / 2;
    return (size_t)BF16_BM * kp + 2 * (size_t)BF16_BM;
}

/* Output positions [n0, n1) of a dense conv in bf16, by blocks of BM
 * positions. ds_gemm_bf16_pa computes C = A W^T with A packed once and W
 * in panels of NR rows: here A is the conv's weight [cout/groups, K]
 * (packed at load), W the block's im2col matrix transposed, [positions,
 * K], so that C [cout, positions] lands in y's [cout, N] planes directly
 * (ldc = N) and the f32 epilogue follows (bias, residual, activation in
 * fp32). W is written straight into ds_bf16_mat's layout ([panel of NR
 * positions][K pair][NR] words, positions past the block zero) from two
 * im2col rows at a time, each pair a contiguous run of NR words; a 1x1
 * stride-1 conv's rows are x's own planes. tb: bf16_thread_words floats. */
static void dense_bf16(const cnn_conv *c, const cnn_scratch *s, float *tb, const float *x, int H, int W, int Wo, int pt,
                       int pl, size_t N, size_t n0, size_t n1, bool direct, const float *residual, float *y) {
    int cpg = c->cin / c->groups, opg = c->cout / c->groups, K = cpg * c->kh * c->kw, kp = (K + 1) / 2;
    uint32_t *wp = (uint32_t *)(void *)tb;
    float *b0 = tb + (size_t)BF16_BM * kp, *b1 = b0 + BF16_BM;
    size_t per = w16_words(c);
    for (size_t p0 = n0; p0 < n1; p0 += BF16_BM) {
        int bm = (int)DS_MIN((size_t)BF16_BM, n1 - p0), panels = (bm + BF16_NR - 1) / BF16_NR;
        ds_bf16_mat blk = {.n = bm, .k = K, .kp = kp, .n_panels = panels, .data = wp};
        for (int g = 0; g < c->groups; g++) {
            const float *xg = x + (size_t)g * cpg * H * W;
            for (int p = 0; p < kp; p++) {
                const float *r0 = b0, *r1 = b1;
                if (direct) r0 = xg + (size_t)2 * p * N + p0;
                else im2col_row(c, xg, H, W, Wo, pt, pl, 2 * p, b0, p0, p0 + (size_t)bm);
                if (2 * p + 1 >= K) memset(b1, 0, sizeof(float) * (size_t)bm);
                else if (direct) r1 = xg + (size_t)(2 * p + 1) * N + p0;
                else im2col_row(c, xg, H, W, Wo, pt, pl, 2 * p + 1, b1, p0, p0 + (size_t)bm);
                for (int pn = 0; pn < panels; pn++) {
                    uint32_t *dst = wp + ((size_t)pn * kp + p) * BF16_NR;
                    int m0 = pn * BF16_NR, full = DS_MIN(BF16_NR, bm - m0), i = 0;
                    for (; i < full; i++)
                        dst[i] = (uint32_t)ds_f32_to_bf16(r0[m0 + i]) | ((uint32_t)ds_f32_to_bf16(r1[m0 + i]) << 16);
                    for (; i < BF16_NR; i++) dst[i] = 0;
                }
            }
            ds_gemm_bf16_pa(c->w16 + (size_t)g * per, opg, &blk, y + (size_t)g * opg * N + p0, (int)N, 0, bm, s->kernel);
        }
        epilogue(y, c->b, residual, c->cout, N, p0, p0 + (size_t)bm, c->act);
    }
}

/* Size of one padded depthwise plane: rows of s phases of Lp columns. */
static void dw_plane_dims(const cnn_conv *c, int Ho, int Wo, int *Hp, int *Wp, int *Lp) {
    *Hp = (Ho - 1) * c->stride + (c->kh - 1) * c->dilation + 1;
    *Wp = (Wo - 1) * c->stride + (c->kw - 1) * c->dilation + 1;
    *Lp = (*Wp + c->stride - 1) / c->stride;
}

/* Depthwise (cin/groups == 1): each output channel o reads input channel
 * o / (cout/groups). Per channel, the plane is copied zero-padded, each row
 * split into its s column phases (phase p holds columns p, p + s, ...), so
 * that the tap at column ox s + kx d is element ox + (kx d)/s of phase
 * (kx d) mod s: every inner loop over ox is contiguous and branch-free, also
 * for stride 2, and vectorises. 3x3 kernels sum their 9 taps in one pass. */
static void depthwise(const cnn_conv *c, cnn_scratch *sc, const float *x, int H, int W, int Ho, int Wo, int pt, int pl,
                      const float *residual, float *y) {
    int s = c->stride, d = c->dilation, kh = c->kh, kw = c->kw;
    int Hp, Wp, Lp;
    dw_plane_dims(c, Ho, Wo, &Hp, &Wp, &Lp);
    size_t RS = (size_t)s * Lp; /* padded row stride */
    int mult = c->cout / c->groups;
    int nt = sc->n_threads;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int o = 0; o < c->cout; o++) {
        float *pad = sc->thread_buf + (size_t)omp_get_thread_num() * sc->need_thread;
        const float *xc = x + (size_t)(o / mult) * H * W;
        for (int py = 0; py < Hp; py++) {
            int iy = py - pt;
            float *prow = pad + (size_t)py * RS;
            if (iy < 0 || iy >= H) {
                memset(prow, 0, sizeof(float) * RS);
                continue;
            }
            const float *src = xc + (size_t)iy * W;
            if (s == 1) {
                /* columns px = ix + pl hold x for 0 <= ix < W, zeros around */
                int c0 = DS_MIN(pl, Wp), c1 = DS_MIN(pl + W, Wp);
                memset(prow, 0, sizeof(float) * (size_t)c0);
                memcpy(prow + c0, src, sizeof(float) * (size_t)(c1 - c0));
                memset(prow + c1, 0, sizeof(float) * (size_t)(Wp - c1));
            } else {
                /* padded column px = ix + pl goes to phase px % s, element px / s */
                memset(prow, 0, sizeof(float) * RS);
                int ix_hi = DS_MIN(W, Wp - pl);
                for (int p = 0; p < s; p++) {
                    int ix0 = ((p - pl) % s + s) % s; /* first ix with (ix + pl) % s == p */
                    float *ph = prow + (size_t)p * Lp + (ix0 + pl) / s;
                    for (int ix = ix0, j = 0; ix < ix_hi; ix += s, j++) ph[j] = src[ix];
                }
            }
        }
        const float *wk = c->w + (size_t)o * kh * kw;
        float bo = c->b[o];
        float *yo = y + (size_t)o * Ho * Wo;
        const float *ro = residual ? residual + (size_t)o * Ho * Wo : NULL;
        if (s == 1 && kh == 3 && kw == 3) {
            /* stride 1: output (oy, ox) computed at flat index i = oy Wp + ox,
             * whose taps are pad[i + ky d Wp + kx d]: one long vector loop
             * over the plane (the Wp - Wo extra columns per row are dropped) */
            float *restrict acc = pad + (size_t)Hp * RS;
            size_t n = (size_t)(Ho - 1) * Wp + Wo, dr = (size_t)d * Wp;
            const float *restrict r0 = pad, *restrict r1 = pad + dr, *restrict r2 = pad + 2 * dr;
            float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4], w5 = wk[5], w6 = wk[6], w7 = wk[7],
                  w8 = wk[8];
            for (size_t i = 0; i < n; i++)
                acc[i] = bo + w0 * r0[i] + w1 * r0[i + d] + w2 * r0[i + 2 * d] + w3 * r1[i] + w4 * r1[i + d] +
                         w5 * r1[i + 2 * d] + w6 * r2[i] + w7 * r2[i + d] + w8 * r2[i + 2 * d];
            for (int oy = 0; oy < Ho; oy++) {
                const float *ar = acc + (size_t)oy * Wp;
                float *yr = yo + (size_t)oy * Wo;
                if (ro) {
                    const float *rr = ro + (size_t)oy * Wo;
                    for (int ox = 0; ox < Wo; ox++) yr[ox] = activate(ar[ox] + rr[ox], c->act);
                } else {
                    for (int ox = 0; ox < Wo; ox++) yr[ox] = activate(ar[ox], c->act);
                }
            }
            continue;
        }
        for (int oy = 0; oy < Ho; oy++) {
            float *yr = yo + (size_t)oy * Wo;
            /* tap (ky, kx) of output ox: row oy s + ky d, phase (kx d) % s, element ox + (kx d) / s */
#define DW_TAP(ky, kx) (pad + (size_t)(oy * s + (ky) * d) * RS + (size_t)(((kx) * d) % s) * Lp + ((kx) * d) / s)
            if (kh == 3 && kw == 3) {
                const float *t0 = DW_TAP(0, 0), *t1 = DW_TAP(0, 1), *t2 = DW_TAP(0, 2);
                const float *t3 = DW_TAP(1, 0), *t4 = DW_TAP(1, 1), *t5 = DW_TAP(1, 2);
                const float *t6 = DW_TAP(2, 0), *t7 = DW_TAP(2, 1), *t8 = DW_TAP(2, 2);
                float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4], w5 = wk[5], w6 = wk[6], w7 = wk[7],
                      w8 = wk[8];
                for (int ox = 0; ox < Wo; ox++)
                    yr[ox] = bo + w0 * t0[ox] + w1 * t1[ox] + w2 * t2[ox] + w3 * t3[ox] + w4 * t4[ox] + w5 * t5[ox] +
                             w6 * t6[ox] + w7 * t7[ox] + w8 * t8[ox];
            } else {
                for (int ox = 0; ox < Wo; ox++) yr[ox] = bo;
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        const float *t = DW_TAP(ky, kx);
                        float wv = wk[ky * kw + kx];
                        for (int ox = 0; ox < Wo; ox++) yr[ox] += wv * t[ox];
                    }
            }
#undef DW_TAP
            if (ro) {
                const float *rr = ro + (size_t)oy * Wo;
                for (int ox = 0; ox < Wo; ox++) yr[ox] = activate(yr[ox] + rr[ox], c->act);
            } else {
                for (int ox = 0; ox < Wo; ox++) yr[ox] = activate(yr[ox], c->act);
            }
        }
    }
}

void cnn_conv_forward(const cnn_conv *c, cnn_scratch *s, const float *x, int H, int W, float *y, const float *residual,
                      int *Ho, int *Wo) {
    int pt, pl;
    DS_ASSERT(s->dry || (y != x && y != residual)); /* the GEMM overwrites y before the epilogue reads residual */
    bool ok = cnn_conv_geometry(c, H, W, Ho, Wo, &pt, &pl);
    DS_ASSERT(ok); /* the callers validate input sizes: every layer is non-empty */
    size_t N = (size_t)*Ho * *Wo;
    int cpg = c->cin / c->groups, opg = c->cout / c->groups;
    bool dw = cpg == 1 && c->groups > 1;
    bool direct = !dw && c->kh == 1 && c->kw == 1 && c->stride == 1 && pt == 0 && pl == 0 && (size_t)H * W == N;
    if (s->dry) {
        cnn_need_act(s, (size_t)c->cin * H * W);
        cnn_need_act(s, (size_t)c->cout * N);
        if (dw) {
            int Hp, Wp, Lp;
            dw_plane_dims(c, *Ho, *Wo, &Hp, &Wp, &Lp);
            /* the padded plane, and for stride 1 the flat accumulator [Ho, Wp] */
            cnn_need_thread(s, (size_t)Hp * c->stride * Lp + (c->stride == 1 ? (size_t)*Ho * Wp : 0));
        } else if (c->w16) {
            cnn_need_thread(s, bf16_thread_words(c));
        } else if (!direct) {
            size_t cols = (size_t)c->cin * c->kh * c->kw * N;
            if (cols > s->need_cols) s->need_cols = cols;
        }
        return;
    }
    if (dw) {
        depthwise(c, s, x, H, W, *Ho, *Wo, pt, pl, residual, y);
        return;
    }
    /* Dense: the output positions are split into one slice per thread, each
     * doing its im2col, a single-threaded sgemm per group on its columns
     * (y_g [opg, slice] = W_g [opg, K] cols_g [K, slice], row strides N) and
     * its epilogue, with no barrier in between. All parallelism is OpenMP:
     * OpenBLAS runs with 1 thread (ds_cnn sets it), so that no second pool
     * of spinning threads competes for the cores (cnn_internal.h). Packed
     * (bf16) convs run the same slices through dense_bf16. */
    int nt = s->n_threads;
    int K = cpg * c->kh * c->kw;
    size_t chunk = (N + (size_t)nt - 1) / (size_t)nt;
    chunk = (chunk + 15) & ~(size_t)15; /* 64-byte slice starts: no false sharing of y's rows */
    const float *cols = direct ? x : s->cols;
#pragma omp parallel for schedule(static, 1) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        size_t n0 = DS_MIN(N, (size_t)t * chunk), n1 = DS_MIN(N, n0 + chunk);
        if (n0 >= n1) continue;
        if (c->w16) {
            dense_bf16(c, s, s->thread_buf + (size_t)t * s->need_thread, x, H, W, *Wo, pt, pl, N, n0, n1, direct,
                       residual, y);
            continue;
        }
        if (!direct) im2col(c, x, H, W, *Ho, *Wo, pt, pl, s->cols, n0, n1);
        for (int g = 0; g < c->groups; g++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, opg, (int)(n1 - n0), K, 1.0f,
                        c->w + (size_t)g * opg * K, K, cols + (size_t)g * K * N + n0, (int)N, 0.0f,
                        y + (size_t)g * opg * N + n0, (int)N);
        epilogue(y, c->b, residual, c->cout, N, n0, n1, c->act);
    }
}

void cnn_maxpool(cnn_scratch *s, const float *x, int C, int H, int W, int k, int stride, int pad, float *y, int *Ho,
                 int *Wo) {
    /* torch.nn.MaxPool2d(k, stride, pad), ceil_mode=False */
    *Ho = (H + 2 * pad - k) / stride + 1;
    *Wo = (W + 2 * pad - k) / stride + 1;
    DS_ASSERT(*Ho > 0 && *Wo > 0);
    if (s->dry) {
        cnn_need_act(s, (size_t)C * H * W);
        cnn_need_act(s, (size_t)C * *Ho * *Wo);
        return;
    }
    int ho = *Ho, wo = *Wo;
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * H * W;
        float *yc = y + (size_t)c * ho * wo;
        for (int oy = 0; oy < ho; oy++) {
            int y0 = DS_MAX(oy * stride - pad, 0), y1 = DS_MIN(oy * stride - pad + k, H);
            for (int ox = 0; ox < wo; ox++) {
                int x0 = DS_MAX(ox * stride - pad, 0), x1 = DS_MIN(ox * stride - pad + k, W);
                float m = -INFINITY;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) {
                        float v = xc[(size_t)iy * W + ix];
                        if (v > m || isnan(v)) m = v; /* torch propagates NaN */
                    }
                yc[(size_t)oy * wo + ox] = m;
            }
        }
    }
}

void cnn_bilinear_taps(int in, int out, int o, int *i0, int *i1, float *l0, float *l1) {
    /* aten/src/ATen/native/UpSample.h: area_pixel_compute_scale (in / out
     * when only the size is given) and area_pixel_compute_source_index
     * (align_corners=False: (o + 0.5) scale - 0.5, clamped at 0) */
    float scale = (float)in / (float)out;
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int a = (int)src;
    if (a > in - 1) a = in - 1;
    *i0 = a;
    *i1 = a + (a < in - 1 ? 1 : 0);
    *l1 = src - (float)a;
    *l0 = 1.0f - *l1;
}

void cnn_resize_bilinear(const float *x, int C, int H, int W, float *y, int Ho, int Wo, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int c = 0; c < C; c++) {
        const float *xc = x + (size_t)c * H * W;
        float *yc = y + (size_t)c * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++) {
            int y0, y1;
            float hy0, hy1;
            cnn_bilinear_taps(H, Ho, oy, &y0, &y1, &hy0, &hy1);
            for (int ox = 0; ox < Wo; ox++) {
                int x0, x1;
                float wx0, wx1;
                cnn_bilinear_taps(W, Wo, ox, &x0, &x1, &wx0, &wx1);
                /* torch's order: h0l (w0l a + w1l b) + h1l (w0l c + w1l d) */
                yc[(size_t)oy * Wo + ox] =
                    hy0 * (wx0 * xc[(size_t)y0 * W + x0] + wx1 * xc[(size_t)y0 * W + x1]) +
                    hy1 * (wx0 * xc[(size_t)y1 * W + x0] + wx1 * xc[(size_t)y1 * W + x1]);
            }
        }
    }
}

void cnn_adaptive_avg_pool1d(const float *x, int L, float *y, int n_out) {
    /* aten/src/ATen/native/AdaptiveAveragePooling.cpp start_index /
     * end_index: [floor(i L / n), ceil((i + 1) L / n)); bins overlap when n
     * does not divide L and repeat inputs when n > L */
    for (int i = 0; i < n_out; i++) {
        int64_t a = (int64_t)i * L / n_out, b = ((int64_t)(i + 1) * L + n_out - 1) / n_out;
        double sum = 0.0;
        for (int64_t j = a; j < b; j++) sum += x[j];
        y[i] = (float)(sum / (double)(b - a));
    }
}

void cnn_global_avg_pool(const float *x, int C, int HW, float *y) {
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int i = 0; i < HW; i++) sum += x[(size_t)c * HW + i];
        y[c] = (float)(sum / HW);
    }
}
