/* Internal kernels of the preprocessing stage, exposed to the tests so that
 * each can be checked on its own against its reference (OpenCV, PIL). */
#ifndef DS_PREPROCESS_INTERNAL_H
#define DS_PREPROCESS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dinoscope/dinoscope.h"

/* 8-bit RGB <-> 8-bit L*a*b* exactly as OpenCV 4.6 cvtColor(COLOR_RGB2LAB /
 * COLOR_LAB2RGB) on CV_8UC3: L scaled to [0,255] (L*255/100), a and b offset
 * by 128. rgb and lab are [n_px, 3]; they may be the same buffer. These
 * functions can't fail. */
void ds_lab_from_rgb_u8(const uint8_t *rgb, uint8_t *lab, size_t n_px);
void ds_lab_to_rgb_u8(const uint8_t *lab, uint8_t *rgb, size_t n_px);

/* OpenCV 4.6 CLAHE (cv::createCLAHE(clip, (tiles_x, tiles_y)).apply) on one
 * 8-bit plane. src and dst are [h, w] with row strides src_stride and
 * dst_stride (in bytes; >= w); pixel (x, y) of the plane is
 * src[y * src_stride + x * src_step], likewise for dst, so that the L channel
 * of an interleaved LAB image (step 3) is processed in place without a copy.
 * src and dst may alias exactly (same pointer, stride and step).
 * Returns DS_OK, DS_ERR_ARG (bad size or parameter) or DS_ERR_NOMEM. */
ds_status ds_clahe_plane_u8(const uint8_t *src, size_t src_stride, size_t src_step, uint8_t *dst, size_t dst_stride,
                            size_t dst_step, int w, int h, double clip, int tiles_x, int tiles_y);

/* PIL 9.4 ImagingResample(BICUBIC) of an interleaved u8 image with c channels:
 * src [h, w, c] -> dst [out_h, out_w, c] (caller buffer). Returns DS_OK or
 * DS_ERR_NOMEM. */
ds_status ds_resize_bicubic_u8(const uint8_t *src, int w, int h, int c, uint8_t *dst, int out_w, int out_h);

#endif
