/* A feature backbone loaded from a weights file: the kind (DINOv2 ViT now,
 * CNNs later) is detected from the tensors. Commands use this, not ds_vit
 * directly, so that every backbone works everywhere.
 *
 *   ds_backbone *bb;
 *   ds_backbone_load("dinov2_vits14.safetensors", &(ds_backbone_params){0}, &bb);
 *   int gh, gw, D;
 *   ds_backbone_grid(bb, 518, 518, &gh, &gw, &D);      // 37, 37, 384
 *   // input [B,3,518,518] prepared with ds_backbone_normalize
 *   ds_backbone_forward(bb, input, B, 518, 518, 4, feats, NULL); // feats [B, gh*gw, D]
 *   ds_backbone_free(bb);
 */
#ifndef DINOSCOPE_BACKBONE_H
#define DINOSCOPE_BACKBONE_H

#include "dinoscope.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DS_BACKBONE_DINOV2 = 1 } ds_backbone_kind;

typedef struct {
    int n_threads; /* 0 = auto */
} ds_backbone_params;

typedef struct ds_backbone ds_backbone;

/* Loads the weights at path and builds the backbone, checking every tensor.
 * Returns DS_OK or an error naming the file and the tensor. */
ds_status ds_backbone_load(const char *path, const ds_backbone_params *params, ds_backbone **out);
void ds_backbone_free(ds_backbone *bb);

ds_backbone_kind ds_backbone_get_kind(const ds_backbone *bb);
/* Short architecture description, e.g. "dinov2 vit D=384 depth=12 heads=6 patch=14 reg=0 mlp". */
const char *ds_backbone_describe(const ds_backbone *bb);
/* Path of the weights file. */
const char *ds_backbone_path(const ds_backbone *bb);
/* Input sizes must be multiples of this (14 for DINOv2). */
int ds_backbone_stride(const ds_backbone *bb);

/* Feature grid for an H x W input: gh x gw patches of D channels.
 * Returns DS_ERR_ARG if H or W is not a positive multiple of the stride. */
ds_status ds_backbone_grid(const ds_backbone *bb, int H, int W, int *gh, int *gw, int *D);

/* RGB u8 image -> [3,H,W] f32 with the backbone's normalisation (ImageNet
 * mean/std for DINOv2). */
void ds_backbone_normalize(const ds_backbone *bb, const ds_image *img, float *dst);

/* Patch features [B, gh*gw, D] of input [B,3,H,W] (averaged over the last
 * n_layers for DINOv2), and optionally the CLS token [B, D] (NULL to skip;
 * DS_ERR_UNSUPPORTED for backbones without one). */
ds_status ds_backbone_forward(ds_backbone *bb, const float *input, int B, int H, int W, int n_layers, float *feats,
                              float *cls);

#ifdef __cplusplus
}
#endif
#endif
