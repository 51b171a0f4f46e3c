/* Contrast Limited Adaptive Histogram Equalization with OpenCV 4.6's exact
 * semantics (modules/imgproc/src/clahe.cpp, CLAHE_Impl::apply on CV_8UC1).
 * CLAHE itself: Zuiderveld, "Contrast Limited Adaptive Histogram
 * Equalization", Graphics Gems IV (1994).
 *
 * What OpenCV does, and we reproduce step by step:
 *   1. If w or h is not a multiple of the grid, the image is padded on the
 *      right and bottom with BORDER_REFLECT_101 by tiles - (size % tiles) in
 *      BOTH directions (so a dimension that divides evenly still gets a full
 *      extra tiles' worth of rows or columns). Tiles are ext_size / tiles.
 *   2. Per tile: 256-bin histogram; clip limit = max(1, (int)(clip *
 *      tile_area / 256)) when clip > 0; the excess is redistributed as
 *      excess / 256 to every bin, then one more to every (256 / residual)-th
 *      bin starting at 0 until the residual is used up.
 *   3. LUT = saturate(round(cumsum * (255.0f / tile_area))) in float.
 *   4. Each pixel interpolates bilinearly (in float, same operation order)
 *      between the LUTs of the 4 nearest tile centres: txf = x / tile_w - 0.5.
 * libvips' hist_local is a sliding-window CLAHE and does not match OpenCV, so
 * this is written by hand. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "preprocess/preprocess_internal.h"

/* OpenCV borderInterpolate for BORDER_REFLECT_101 (gfedcb|abcdefgh|gfedcba). */
static int reflect101(int p, int len) {
    if (len == 1) return 0;
    while ((unsigned)p >= (unsigned)len) {
        if (p < 0) p = -p;
        else p = 2 * len - 2 - p;
    }
    return p;
}

/* saturate_cast<uchar>(float): cvRound (half to even), then clamp. */
static inline uint8_t sat_round_u8(float v) {
    long r = lrintf(v);
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

ds_status ds_clahe_plane_u8(const uint8_t *src, size_t src_stride, size_t src_step, uint8_t *dst, size_t dst_stride,
                            size_t dst_step, int w, int h, double clip, int tiles_x, int tiles_y) {
    if (!src || !dst || w <= 0 || h <= 0)
        return ds_set_error(DS_ERR_ARG, "ds_clahe: empty or invalid image (%dx%d)", w, h);
    if (tiles_x <= 0 || tiles_y <= 0 || tiles_x > 4096 || tiles_y > 4096)
        return ds_set_error(DS_ERR_ARG, "ds_clahe: tile grid %dx%d out of range [1, 4096]", tiles_x, tiles_y);
    if (!(clip >= 0.0) || !isfinite(clip))
        return ds_set_error(DS_ERR_ARG, "ds_clahe: clip limit %g must be finite and >= 0", clip);

    if (w > INT32_MAX - tiles_x || h > INT32_MAX - tiles_y ||
        (int64_t)(w + tiles_x) * (int64_t)(h + tiles_y) / ((int64_t)tiles_x * tiles_y) > INT32_MAX / 256)
        return ds_set_error(DS_ERR_ARG, "ds_clahe: image %dx%d too large for a %dx%d grid", w, h, tiles_x, tiles_y);

    int ext_w = w, ext_h = h;
    if (w % tiles_x != 0 || h % tiles_y != 0) { /* step 1, OpenCV's padding rule */
        ext_w = w + tiles_x - w % tiles_x;
        ext_h = h + tiles_y - h % tiles_y;
    }
    const int tile_w = ext_w / tiles_x, tile_h = ext_h / tiles_y;
    const int tile_area = tile_w * tile_h;

    int *col_map = ds_alloc((size_t)ext_w, sizeof(int), "ds_clahe");
    uint8_t *lut = col_map ? ds_alloc((size_t)tiles_x * (size_t)tiles_y, 256, "ds_clahe") : NULL;
    int *ind1 = lut ? ds_alloc((size_t)w, 2 * sizeof(int), "ds_clahe") : NULL;
    float *xa = ind1 ? ds_alloc((size_t)w, 2 * sizeof(float), "ds_clahe") : NULL;
    if (!xa) {
        free(col_map);
        free(lut);
        free(ind1);
        return DS_ERR_NOMEM;
    }
    int *ind2 = ind1 + w;
    float *xa1 = xa + w;
    for (int x = 0; x < ext_w; x++) col_map[x] = reflect101(x, w);

    int clip_limit = 0;
    if (clip > 0.0) {
        /* Deviation for absurd limits only: OpenCV's int cast of a value
         * >= 2^31 gives INT_MIN on x86 and then clips at 1; we clip at
         * INT_MAX, i.e. not at all, which is what such a limit means. */
        double limit = clip * tile_area / 256;
        clip_limit = limit >= 2147483647.0 ? 2147483647 : (int)limit;
        if (clip_limit < 1) clip_limit = 1;
    }
    const float lut_scale = 255.0f / (float)tile_area;

    for (int ty = 0; ty < tiles_y; ty++) {
        for (int tx = 0; tx < tiles_x; tx++) {
            int hist[256] = {0};
            for (int y = ty * tile_h; y < (ty + 1) * tile_h; y++) {
                const uint8_t *row = src + (size_t)reflect101(y, h) * src_stride;
                for (int x = tx * tile_w; x < (tx + 1) * tile_w; x++) hist[row[(size_t)col_map[x] * src_step]]++;
            }
            if (clip_limit > 0) { /* step 2 */
                int clipped = 0;
                for (int i = 0; i < 256; i++) {
                    if (hist[i] > clip_limit) {
                        clipped += hist[i] - clip_limit;
                        hist[i] = clip_limit;
                    }
                }
                int batch = clipped / 256, residual = clipped - batch * 256;
                for (int i = 0; i < 256; i++) hist[i] += batch;
                if (residual != 0) {
                    int residual_step = DS_MAX(256 / residual, 1);
                    for (int i = 0; i < 256 && residual > 0; i += residual_step, residual--) hist[i]++;
                }
            }
            uint8_t *tl = lut + ((size_t)ty * (size_t)tiles_x + (size_t)tx) * 256;
            int sum = 0;
            for (int i = 0; i < 256; i++) { /* step 3 */
                sum += hist[i];
                tl[i] = sat_round_u8((float)sum * lut_scale);
            }
        }
    }

    /* step 4: OpenCV's CLAHE_Interpolation_Body, same float expressions */
    const float inv_tw = 1.0f / (float)tile_w, inv_th = 1.0f / (float)tile_h;
    for (int x = 0; x < w; x++) {
        float txf = (float)x * inv_tw - 0.5f;
        int tx1 = (int)floorf(txf);
        int tx2 = tx1 + 1;
        xa[x] = txf - (float)tx1;
        xa1[x] = 1.0f - xa[x];
        ind1[x] = DS_MAX(tx1, 0) * 256;
        ind2[x] = DS_MIN(tx2, tiles_x - 1) * 256;
    }
    for (int y = 0; y < h; y++) {
        float tyf = (float)y * inv_th - 0.5f;
        int ty1 = (int)floorf(tyf);
        int ty2 = ty1 + 1;
        float ya = tyf - (float)ty1, ya1 = 1.0f - ya;
        ty1 = DS_MAX(ty1, 0);
        ty2 = DS_MIN(ty2, tiles_y - 1);
        const uint8_t *lut1 = lut + (size_t)ty1 * (size_t)tiles_x * 256;
        const uint8_t *lut2 = lut + (size_t)ty2 * (size_t)tiles_x * 256;
        const uint8_t *srow = src + (size_t)y * src_stride;
        uint8_t *drow = dst + (size_t)y * dst_stride;
        for (int x = 0; x < w; x++) {
            int v = srow[(size_t)x * src_step];
            float res = ((float)lut1[ind1[x] + v] * xa1[x] + (float)lut1[ind2[x] + v] * xa[x]) * ya1 +
                        ((float)lut2[ind1[x] + v] * xa1[x] + (float)lut2[ind2[x] + v] * xa[x]) * ya;
            drow[(size_t)x * dst_step] = sat_round_u8(res);
        }
    }
    free(col_map);
    free(lut);
    free(ind1);
    free(xa);
    return DS_OK;
}
