/* Masks on pictures: resampling ground truth to an image's grid, outlines. */
#include <string.h>

#include "dinoscope/maps.h"

void ds_mask_resize_nearest(const uint8_t *src, int src_w, int src_h, int src_channels, int dst_w, int dst_h,
                            uint8_t *dst) {
    for (int y = 0; y < dst_h; y++) {
        int sy = (int)(((double)y + 0.5) * src_h / dst_h);
        if (sy >= src_h) sy = src_h - 1;
        for (int x = 0; x < dst_w; x++) {
            int sx = (int)(((double)x + 0.5) * src_w / dst_w);
            if (sx >= src_w) sx = src_w - 1;
            const uint8_t *p = src + ((size_t)sy * src_w + sx) * src_channels;
            uint8_t any = 0;
            for (int c = 0; c < src_channels; c++) any |= p[c];
            dst[(size_t)y * dst_w + x] = any != 0;
        }
    }
}

void ds_draw_outline(ds_image *img, const uint8_t *flags, uint8_t bit, const uint8_t rgb[3]) {
    int W = img->width, H = img->height;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *f = flags + (size_t)y * W + x;
            if (!(*f & bit)) continue;
            int edge = x == 0 || y == 0 || x == W - 1 || y == H - 1 || !(f[-1] & bit) || !(f[1] & bit) ||
                       !(f[-W] & bit) || !(f[W] & bit);
            if (edge) memcpy(img->pixels + ((size_t)y * W + x) * 3, rgb, 3);
        }
}
