/* Preparing images for the network exactly as the reference Python pipeline
 * does: optional CLAHE on the L channel of LAB (OpenCV semantics), bicubic
 * resize to SxS as torchvision's Resize((S,S), BICUBIC) on a PIL image, then
 * scaling to [0,1] and per-channel normalisation. */
#ifndef DINOSCOPE_PREPROCESS_H
#define DINOSCOPE_PREPROCESS_H

#include "dinoscope.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef enum { DS_STAIN_NONE = 0, DS_STAIN_CLAHE = 1 } ds_stain_norm;

typedef struct {
    int size;              /* S: output is SxS; 0 = keep the input size */
    ds_stain_norm stain;   /* DS_STAIN_CLAHE: CLAHE on L of LAB before resizing */
    double clahe_clip;     /* OpenCV clipLimit, default 2.0 */
    int clahe_tiles;       /* OpenCV tileGridSize (n x n), default 8 */
} ds_preprocess_params;

/* Default params: size 518, no stain norm, clip 2.0, 8 tiles. Can't fail. */
ds_preprocess_params ds_preprocess_defaults(void);

/* Bicubic resize of src (1 or 3 channels) to out_w x out_h, bit-exact with
 * PIL 9.4's Image.resize((out_w, out_h), BICUBIC), which torchvision's
 * Resize uses on PIL images: Catmull-Rom (a = -0.5), support widened by the
 * scale when downscaling (antialias), 8-bit intermediate between the
 * horizontal and the vertical pass. *out is a new image with src's channels
 * (free with ds_image_free). Returns DS_OK, DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_resize_bicubic(const ds_image *src, int out_w, int out_h, ds_image **out);

/* CLAHE on the L channel of an RGB image (channels must be 3), in place,
 * bit-exact with OpenCV 4.6's cvtColor(RGB2LAB) -> createCLAHE(clip,
 * (tiles, tiles)).apply(L) -> cvtColor(LAB2RGB) on 8-bit images (image
 * padded by reflection to a multiple of the grid, clip limit
 * max(1, clip * tile_area / 256), bilinear interpolation of tile maps).
 * clip = 0 disables clipping (plain adaptive equalisation).
 * Returns DS_OK, DS_ERR_SHAPE (not RGB), DS_ERR_ARG (tiles not in
 * [1, 4096], clip < 0) or DS_ERR_NOMEM; img is unchanged on failure. */
ds_status ds_clahe_rgb(ds_image *img, double clip, int tiles);

/* Full preparation: grey replicated to RGB, stain norm (if asked, on the
 * full-resolution image, as the seed does), then resize to SxS (only when not
 * already SxS; size 0 keeps the size). params may be NULL (defaults). *out is
 * a new 8-bit RGB image: exactly what the network sees before ToTensor and
 * Normalize. Returns DS_OK, DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_preprocess_image(const ds_image *src, const ds_preprocess_params *p, ds_image **out);

/* img (1 or 3 channels, grey replicated) -> dst [3,H,W] f32 (caller buffer of
 * 3*H*W floats): (v/255 - mean[c]) / std[c] with torchvision's float32
 * operations (ToTensor then Normalize). Can't fail; the caller passes a
 * valid image. */
void ds_image_to_tensor(const ds_image *img, const float mean[3], const float std[3], float *dst);

/* ImageNet mean/std used by DINOv2. */
extern const float DS_IMAGENET_MEAN[3];
extern const float DS_IMAGENET_STD[3];

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
