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

typedef enum { DS_STAIN_NONE = 0, DS_STAIN_CLAHE = 1 } ds_stain_norm;

typedef struct {
    int size;              /* S: output is SxS; 0 = keep the input size */
    ds_stain_norm stain;   /* DS_STAIN_CLAHE: CLAHE on L of LAB before resizing */
    double clahe_clip;     /* OpenCV clipLimit, default 2.0 */
    int clahe_tiles;       /* OpenCV tileGridSize (n x n), default 8 */
} ds_preprocess_params;

/* Default params: size 518, no stain norm, clip 2.0, 8 tiles. */
ds_preprocess_params ds_preprocess_defaults(void);

/* Bicubic resize to out_w x out_h matching PIL's Image.resize(BICUBIC):
 * Catmull-Rom (a=-0.5), support widened by the scale when downscaling. */
ds_status ds_resize_bicubic(const ds_image *src, int out_w, int out_h, ds_image **out);

/* CLAHE on the L channel of an RGB image in place, as OpenCV 4.6's
 * cvtColor(RGB2LAB) -> createCLAHE(clip, (tiles,tiles)).apply(L) -> LAB2RGB. */
ds_status ds_clahe_rgb(ds_image *img, double clip, int tiles);

/* Full preparation: stain norm (if asked) then resize to SxS (only when not
 * already SxS). *out is a new 8-bit RGB image. */
ds_status ds_preprocess_image(const ds_image *src, const ds_preprocess_params *p, ds_image **out);

/* img (RGB u8) -> dst [3,H,W] f32: (v/255 - mean[c]) / std[c]. */
void ds_image_to_tensor(const ds_image *img, const float mean[3], const float std[3], float *dst);

/* ImageNet mean/std used by DINOv2. */
extern const float DS_IMAGENET_MEAN[3];
extern const float DS_IMAGENET_STD[3];

#ifdef __cplusplus
}
#endif
#endif
