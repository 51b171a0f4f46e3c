/* Position-embedding interpolation of DINOv2 (dinov2/models/vision_transformer.py,
 * DinoVisionTransformer.interpolate_pos_encoding), which calls
 * torch.nn.functional.interpolate(mode="bicubic", align_corners=False) on the
 * [1, D, M, M] grid of learned embeddings:
 *   - plain models (interpolate_offset 0.1, antialias False): scale_factor
 *     ((h0 + 0.1)/M, (w0 + 0.1)/M). torch then maps output to input with
 *     1/scale_factor, NOT with M/h0: src = (dst + 0.5) * M/(h0+0.1) - 0.5.
 *     Kernel: Keys cubic convolution with A = -0.75, taps clamped to the
 *     border (aten/src/ATen/native/UpSample.h, upsample_bicubic2d).
 *   - *_reg models (offset 0, antialias True): size (h0, w0), torch's separable
 *     antialiased bicubic (_upsample_bicubic2d_aa, the PIL-compatible kernel):
 *     A = -0.5, support 2*scale when downscaling, weights normalised per output.
 * We compute in double; torch uses float, so results agree to ~1e-7. */
#include <math.h>
#include <stdlib.h>

#include "vit/vit_internal.h"

static double cubic_conv1(double x, double a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
static double cubic_conv2(double x, double a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }

/* Non-antialiased bicubic, torch semantics with an explicit scale (in/out). */
static void bicubic_torch(const float *src /*[M,M,D]*/, int M, int D, int oh, int ow, double scale_h,
                          double scale_w, float *dst /*[oh,ow,D]*/) {
    const double A = -0.75;
    for (int oy = 0; oy < oh; oy++) {
        double ry = scale_h * (oy + 0.5) - 0.5;
        int iy = (int)floor(ry);
        double ty = ry - iy;
        double wy[4] = {cubic_conv2(ty + 1, A), cubic_conv1(ty, A), cubic_conv1(1 - ty, A), cubic_conv2(2 - ty, A)};
        for (int ox = 0; ox < ow; ox++) {
            double rx = scale_w * (ox + 0.5) - 0.5;
            int ix = (int)floor(rx);
            double tx = rx - ix;
            double wx[4] = {cubic_conv2(tx + 1, A), cubic_conv1(tx, A), cubic_conv1(1 - tx, A),
                            cubic_conv2(2 - tx, A)};
            float *o = dst + ((size_t)oy * ow + ox) * D;
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int a = 0; a < 4; a++) {
                    int y = DS_MIN(DS_MAX(iy - 1 + a, 0), M - 1);
                    double row = 0;
                    for (int b = 0; b < 4; b++) {
                        int x = DS_MIN(DS_MAX(ix - 1 + b, 0), M - 1);
                        row += wx[b] * src[((size_t)y * M + x) * D + d];
                    }
                    acc += wy[a] * row;
                }
                o[d] = (float)acc;
            }
        }
    }
}


/* Weights of one output index for torch's antialiased resampling
 * (_compute_indices_weights_aa). w must hold ceil(2*support)+2 entries. */
static int aa_weights(int i, int in, double scale, double *w, int *xmin_out) {
    double support = scale >= 1.0 ? 2.0 * scale : 2.0;
    double center = scale * (i + 0.5);
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    int xmin = DS_MAX((int)(center - support + 0.5), 0);
    int xsize = DS_MIN((int)(center + support + 0.5), in) - xmin;
    double total = 0;
    for (int j = 0; j < xsize; j++) {
        w[j] = ds_cubic_kernel((j + xmin - center + 0.5) * invscale);
        total += w[j];
    }
    for (int j = 0; j < xsize; j++) w[j] = total != 0 ? w[j] / total : 0;
    *xmin_out = xmin;
    return xsize;
}

/* Antialiased separable bicubic: width pass then height pass, in double. */
static ds_status bicubic_aa(const float *src, int M, int D, int oh, int ow, float *dst) {
    double scale_h = (double)M / oh, scale_w = (double)M / ow;
    int maxw = (int)ceil(2 * DS_MAX(DS_MAX(scale_h, scale_w), 1.0) * 2) + 3;
    double *tmp = ds_alloc((size_t)M * ow * D, sizeof(double), "pos_embed interpolation");
    double *w = ds_alloc((size_t)maxw, sizeof(double), "pos_embed interpolation");
    if (!tmp || !w) {
        free(tmp);
        free(w);
        return DS_ERR_NOMEM;
    }
    for (int ox = 0; ox < ow; ox++) {
        int xmin, n = aa_weights(ox, M, scale_w, w, &xmin);
        for (int y = 0; y < M; y++)
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int j = 0; j < n; j++) acc += w[j] * src[((size_t)y * M + xmin + j) * D + d];
                tmp[((size_t)y * ow + ox) * D + d] = acc;
            }
    }
    for (int oy = 0; oy < oh; oy++) {
        int ymin, n = aa_weights(oy, M, scale_h, w, &ymin);
        for (int ox = 0; ox < ow; ox++)
            for (int d = 0; d < D; d++) {
                double acc = 0;
                for (int j = 0; j < n; j++) acc += w[j] * tmp[((size_t)(ymin + j) * ow + ox) * D + d];
                dst[((size_t)oy * ow + ox) * D + d] = (float)acc;
            }
    }
    free(tmp);
    free(w);
    return DS_OK;
}

ds_status ds_vit_pos_embed_for(const ds_vit_arch *arch, const float *pos /*[1+M*M, D]*/, int gh, int gw,
                               float *out /*[1+gh*gw, D]*/) {
    int M = arch->pos_grid, D = arch->embed_dim;
    for (int d = 0; d < D; d++) out[d] = pos[d]; /* class position, never interpolated */
    const float *grid = pos + D;
    float *og = out + D;
    if (gh == M && gw == M) {
        for (size_t i = 0; i < (size_t)M * M * D; i++) og[i] = grid[i];
        return DS_OK;
    }
    if (arch->interpolate_offset != 0.0f) {
        /* python: sx = float(w0 + offset) / M, passed as scale_factor; the
         * kernel uses 1/sx as the source step. */
        double sh = ((double)gh + (double)arch->interpolate_offset) / M;
        double sw = ((double)gw + (double)arch->interpolate_offset) / M;
        if (arch->interpolate_antialias) {
            /* not a configuration torch.hub builds; refuse rather than guess */
            return ds_set_error(DS_ERR_UNSUPPORTED, "ds_vit_forward: antialiased interpolation with an offset is not supported");
        }
        bicubic_torch(grid, M, D, gh, gw, 1.0 / sh, 1.0 / sw, og);
        return DS_OK;
    }
    if (arch->interpolate_antialias) return bicubic_aa(grid, M, D, gh, gw, og);
    bicubic_torch(grid, M, D, gh, gw, (double)M / gh, (double)M / gw, og);
    return DS_OK;
}
