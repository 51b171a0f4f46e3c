#include <math.h>

#include "core/internal.h"
#include "dinoscope/maps.h"
#include "maps/inferno.h"

void ds_map_colour(float t, uint8_t rgb[3]) {
    if (!(t > 0)) t = 0; /* also NaN */
    if (t > 1) t = 1;
    int i = (int)lrintf(t * 255.0f);
    rgb[0] = DS_INFERNO[i][0];
    rgb[1] = DS_INFERNO[i][1];
    rgb[2] = DS_INFERNO[i][2];
}

ds_status ds_map_overlay(const ds_image *img, const float *map, float vmin, float vmax, float alpha, int colorbar,
                         ds_image **out) {
    if (!img || !map || !out) return ds_set_error(DS_ERR_ARG, "ds_map_overlay: NULL argument");
    if (!(vmax > vmin) || !(alpha >= 0 && alpha <= 1))
        return ds_set_error(DS_ERR_ARG, "ds_map_overlay: need vmin < vmax and alpha in [0,1] (got %g, %g, %g)", vmin, vmax,
                            alpha);
    int W = img->width, H = img->height, C = img->channels;
    /* bar: a 4 px gap and 16 px of colour, only when the image is tall enough */
    int bar = colorbar && H >= 8 ? 20 : 0;
    ds_image *o = ds_image_create(W + bar, H, 3);
    if (!o) return DS_ERR_NOMEM;
    float inv = 1.0f / (vmax - vmin);
    for (int y = 0; y < H; y++) {
        for (int x = 0; x < W; x++) {
            const uint8_t *p = img->pixels + ((size_t)y * W + x) * C;
            /* Rec. 601 luma */
            float g = C >= 3 ? 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2] : p[0];
            uint8_t c[3];
            ds_map_colour((map[(size_t)y * W + x] - vmin) * inv, c);
            uint8_t *q = o->pixels + ((size_t)y * (W + bar) + x) * 3;
            for (int k = 0; k < 3; k++) q[k] = (uint8_t)lrintf((1 - alpha) * g + alpha * c[k]);
        }
        for (int x = W; x < W + bar; x++) {
            uint8_t *q = o->pixels + ((size_t)y * (W + bar) + x) * 3;
            if (x < W + 4) {
                q[0] = q[1] = q[2] = 255;
            } else {
                ds_map_colour(1.0f - (float)y / (float)(H - 1), q);
            }
        }
    }
    *out = o;
    return DS_OK;
}
