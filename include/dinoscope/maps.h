/* Looking at anomaly maps: colour-mapped overlays on the original image. */
#ifndef DINOSCOPE_MAPS_H
#define DINOSCOPE_MAPS_H

#include "dinoscope.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* Blends map [img->height, img->width] (anomaly scores) on img with
 * matplotlib's perceptually uniform 'inferno' colour map on the FIXED scale
 * [vmin, vmax] (values outside are clipped), so that overlays of different
 * images are comparable: out = (1 - alpha) * grey(img) + alpha * colour.
 * The image is shown in grey under the colours so that they read unambiguously.
 * With colorbar != 0 a vertical bar (vmin at the bottom, vmax at the top) is
 * appended on the right. *out is a new RGB image.
 * Returns DS_OK, DS_ERR_ARG (vmax <= vmin, bad alpha), DS_ERR_NOMEM. */
ds_status ds_map_overlay(const ds_image *img, const float *map, float vmin, float vmax, float alpha, int colorbar,
                         ds_image **out);

/* inferno colour of t in [0,1] (clipped) into rgb[3]. This function can't fail. */
void ds_map_colour(float t, uint8_t rgb[3]);

/* Nearest-neighbour resampling of a mask to dst_w x dst_h on pixel centres
 * (src = floor((x + 0.5) * src_w / dst_w), as PIL's NEAREST): dst[y*dst_w+x]
 * is 1 where any of the src_channels samples of the source pixel is nonzero
 * (MVTec AD masks are 0/255), else 0. src: [src_h, src_w, src_channels];
 * dst: caller buffer [dst_h, dst_w]. This function can't fail (sizes >= 1). */
void ds_mask_resize_nearest(const uint8_t *src, int src_w, int src_h, int src_channels, int dst_w, int dst_h,
                            uint8_t *dst);

/* Paints the outline of a region on img (RGB): the pixels where
 * (flags[i] & bit) with a 4-neighbour outside the region (or on the image
 * border) get colour rgb. flags: [img->height, img->width]. Can't fail. */
void ds_draw_outline(ds_image *img, const uint8_t *flags, uint8_t bit, const uint8_t rgb[3]);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
