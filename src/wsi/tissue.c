/* Tissue masks as CLAM segments tissue (Lu et al. 2021, wsi_core/
 * WholeSlideImage.py segmentTissue: HSV saturation, cv2.medianBlur,
 * cv2.threshold with THRESH_OTSU, then contours filtered by area).
 * Steps 1-3 are bit-exact with OpenCV 4.6 (tests/fixtures/make_wsi_fixtures.py
 * checks them with cv2); the area filters count pixels of connected
 * components instead of CLAM's polygon areas. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "wsi/wsi_internal.h"

ds_tissue_params ds_tissue_defaults(void) {
    return (ds_tissue_params){.median_ksize = 7, .sat_min = 8, .min_object_px = 0, .max_hole_px = 0};
}

/* OpenCV's RGB2HSV_b saturation: S = (diff * round((255 << 12) / V) + 2^11) >> 12. */
static void saturation(const ds_image *img, uint8_t *s) {
    int32_t sdiv[256];
    sdiv[0] = 0;
    for (int i = 1; i < 256; i++) sdiv[i] = (int32_t)lrint((double)(255 << 12) / (double)i);
    size_t n = (size_t)img->width * img->height;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = img->pixels + i * img->channels;
        int r = p[0], g = img->channels == 3 ? p[1] : p[0], b = img->channels == 3 ? p[2] : p[0];
        int v = DS_MAX(r, DS_MAX(g, b)), mn = DS_MIN(r, DS_MIN(g, b));
        s[i] = (uint8_t)(((v - mn) * sdiv[v] + (1 << 11)) >> 12);
    }
}

/* Median of a k x k window, border replicated (cv2.medianBlur), with Huang's
 * sliding histogram (Huang, Yang & Tang 1979): per row the histogram is
 * updated by one column out and one in, and the median found by moving from
 * the previous one while tracking how many values lie below it. */
static void median_blur(const uint8_t *src, uint8_t *dst, int W, int H, int k) {
    int r = k / 2, rank = (k * k) / 2; /* 0-based rank of the median */
    for (int y = 0; y < H; y++) {
        int hist[256] = {0};
        for (int dy = -r; dy <= r; dy++) {
            const uint8_t *row = src + (size_t)DS_MIN(DS_MAX(y + dy, 0), H - 1) * W;
            for (int dx = -r; dx <= r; dx++) hist[row[DS_MIN(DS_MAX(dx, 0), W - 1)]]++;
        }
        int m = 0, below = 0; /* below = number of values < m */
        for (int x = 0; x < W; x++) {
            if (x > 0) {
                int xo = DS_MIN(DS_MAX(x - 1 - r, 0), W - 1), xi = DS_MIN(x + r, W - 1);
                for (int dy = -r; dy <= r; dy++) {
                    const uint8_t *row = src + (size_t)DS_MIN(DS_MAX(y + dy, 0), H - 1) * W;
                    int vo = row[xo], vi = row[xi];
                    hist[vo]--;
                    if (vo < m) below--;
                    hist[vi]++;
                    if (vi < m) below++;
                }
            }
            /* move m so that below <= rank < below + hist[m] */
            while (below > rank) {
                m--;
                below -= hist[m];
            }
            while (below + hist[m] <= rank) {
                below += hist[m];
                m++;
            }
            dst[(size_t)y * W + x] = (uint8_t)m;
        }
    }
}

/* cv2 getThreshVal_Otsu_8u (OpenCV 4.6 imgproc/src/thresh.cpp), step for
 * step: the first t maximising the between-class variance q1 q2 (mu1 -
 * mu2)^2; pixels > t are foreground. */
static int otsu(const uint8_t *s, size_t n) {
    int64_t h[256] = {0};
    for (size_t i = 0; i < n; i++) h[s[i]]++;
    double mu = 0, scale = 1.0 / (double)n;
    for (int i = 0; i < 256; i++) mu += i * (double)h[i];
    mu *= scale;
    double mu1 = 0, q1 = 0, max_sigma = 0, max_val = 0;
    for (int i = 0; i < 256; i++) {
        double p_i = (double)h[i] * scale, q2, mu2, sigma;
        mu1 *= q1;
        q1 += p_i;
        q2 = 1. - q1;
        if (DS_MIN(q1, q2) < FLT_EPSILON || DS_MAX(q1, q2) > 1. - FLT_EPSILON) continue;
        mu1 = (mu1 + i * p_i) / q1;
        mu2 = (mu - q1 * mu1) / q2;
        sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if (sigma > max_sigma) {
            max_sigma = sigma;
            max_val = i;
        }
    }
    return (int)max_val;
}

/* Flood-fills every component of pixels equal to `value` (8- or
 * 4-connected); components with area < min_area (objects) or, when
 * holes_only, that do not touch the border and have area <= max_area, are
 * set to `to`. stack: [W*H] scratch, seen: [W*H] scratch. */
static void filter_components(uint8_t *m, int W, int H, uint8_t value, int conn8, int holes, int64_t limit, uint8_t to,
                              int32_t *stack, uint8_t *seen) {
    size_t n = (size_t)W * H;
    memset(seen, 0, n);
    for (size_t start = 0; start < n; start++) {
        if (m[start] != value || seen[start]) continue;
        /* pass 1: collect the component on the stack */
        size_t top = 0, len = 0;
        int border = 0;
        stack[top++] = (int32_t)start;
        seen[start] = 1;
        while (len < top) {
            int32_t p = stack[len++];
            int x = p % W, y = p / W;
            if (x == 0 || y == 0 || x == W - 1 || y == H - 1) border = 1;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    if ((!dx && !dy) || (!conn8 && dx && dy)) continue;
                    int xx = x + dx, yy = y + dy;
                    if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                    size_t q = (size_t)yy * W + xx;
                    if (m[q] == value && !seen[q]) {
                        seen[q] = 1;
                        stack[top++] = (int32_t)q;
                    }
                }
        }
        int64_t area = (int64_t)top;
        int drop = holes ? (!border && area <= limit) : (area < limit);
        if (drop)
            for (size_t i = 0; i < top; i++) m[stack[i]] = to;
    }
}

ds_status ds_tissue_mask(const ds_image *rgb, const ds_tissue_params *p, uint8_t *mask, int *threshold) {
    if (!rgb || !rgb->pixels || !mask || rgb->width < 1 || rgb->height < 1)
        return ds_set_error(DS_ERR_ARG, "ds_tissue_mask: NULL or empty image");
    ds_tissue_params d = p ? *p : ds_tissue_defaults();
    if (d.median_ksize < 1 || d.median_ksize % 2 == 0 || d.median_ksize > 255 || d.sat_min < 0 || d.sat_min > 255 ||
        d.min_object_px < 0 || d.max_hole_px < 0)
        return ds_set_error(DS_ERR_ARG, "ds_tissue_mask: median_ksize must be odd in [1,255], sat_min in [0,255]");
    int W = rgb->width, H = rgb->height;
    size_t n = (size_t)W * H;
    if (n > (size_t)INT32_MAX) return ds_set_error(DS_ERR_ARG, "ds_tissue_mask: image too large (%dx%d)", W, H);
    uint8_t *s = ds_alloc(n, 1, "ds_tissue_mask"), *med = ds_alloc(n, 1, "ds_tissue_mask");
    uint8_t *seen = NULL;
    int32_t *stack = NULL;
    ds_status st = DS_OK;
    if (!s || !med) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    saturation(rgb, s);
    median_blur(s, med, W, H, d.median_ksize);
    int t = DS_MAX(otsu(med, n), d.sat_min);
    for (size_t i = 0; i < n; i++) mask[i] = med[i] > t;
    if (threshold) *threshold = t;
    if (d.min_object_px > 0 || d.max_hole_px > 0) {
        seen = ds_alloc(n, 1, "ds_tissue_mask");
        stack = ds_alloc(n, sizeof(int32_t), "ds_tissue_mask");
        if (!seen || !stack) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        if (d.min_object_px > 0) filter_components(mask, W, H, 1, 1, 0, d.min_object_px, 0, stack, seen);
        if (d.max_hole_px > 0) filter_components(mask, W, H, 0, 0, 1, d.max_hole_px, 1, stack, seen);
    }
done:
    free(s);
    free(med);
    free(seen);
    free(stack);
    return st;
}
