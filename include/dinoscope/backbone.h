/* A feature backbone loaded from a weights file: the kind is detected from
 * the tensors (DINOv2 ViT; MobileNetV2 by its features.N names; torchvision
 * ResNet by conv1/layerN names). Commands use this, not ds_vit directly, so
 * that every backbone works everywhere.
 *
 *   ds_backbone *bb;
 *   ds_backbone_load("dinov2_vits14.safetensors", &(ds_backbone_params){0}, &bb);
 *   int gh, gw, D;
 *   ds_backbone_grid(bb, 518, 518, &gh, &gw, &D);      // 37, 37, 384
 *   // input [B,3,518,518] prepared with ds_backbone_normalize
 *   ds_backbone_forward(bb, input, B, 518, 518, 4, feats, NULL); // feats [B, gh*gw, D]
 *   ds_backbone_free(bb);
 *
 * Per kind (ds_backbone_grid gives gh, gw, D for an H x W input):
 *   DINOv2            H, W multiples of 14; grid H/14 x W/14, D = embed dim;
 *                     features = mean of the last n_layers blocks (normed).
 *   MobileNetV2       H, W multiples of 32; grid H/8 x W/8, D = 128 (width
 *                     1.0): blocks 6 and 13 concatenated, block 13 resized
 *                     bilinearly to block 6's grid.
 *   ResNet            H, W multiples of 32; grid H/8 x W/8, D = 1024:
 *                     PatchCore's embedding of layer2 + layer3.
 * The CNNs have no CLS token and ignore n_layers.
 */
#ifndef DINOSCOPE_BACKBONE_H
#define DINOSCOPE_BACKBONE_H

#include "dinoscope.h"
#include "image.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef enum {
    DS_BACKBONE_DINOV2 = 1,
    DS_BACKBONE_MOBILENET_V2 = 2, /* torchvision names; TF-SAME padding when the file's metadata says so */
    DS_BACKBONE_RESNET = 3,       /* torchvision resnet18/34/50/101/152, wide_resnet50_2/101_2 */
} ds_backbone_kind;

typedef struct {
    int n_threads;      /* 0 = auto */
    const char *preset; /* NULL or "" = none; else a name of ds_backbone_preset_get() (ViTs only) */
    /* Compute type: DS_DTYPE_F32 (0, default) or DS_DTYPE_BF16 (bf16
     * products with fp32 accumulation: a ViT's Linear layers, see
     * ds_vit_params; a CNN's dense convolutions, its depthwise convs,
     * batch-norm, activations and residuals staying fp32).
     * DS_DTYPE_F16: DS_ERR_UNSUPPORTED. */
    ds_dtype dtype;
} ds_backbone_params;

/* How a ViT's image embedding is made from its final (normed) tokens. */
typedef enum {
    DS_EMBED_CLS = 0,      /* the CLS token (DINOv2, UNI, BiomedCLIP before its projection, Phikon ...) */
    DS_EMBED_CLS_MEAN = 1, /* concat(CLS, mean of the patch tokens), [2D] (Virchow2's model card) */
} ds_embed_rule;

/* A named ViT preset: what the weights cannot tell about the published model.
 * Values from each model's card / config (README "Medical foundation
 * backbones"). A config.json / open_clip_config.json next to the weights
 * overrides n_heads and the LayerNorm eps (facts of the file); the preset
 * wins for normalisation, input size and the feature rules (the user's
 * choice). */
typedef struct {
    const char *name;      /* "uni", "uni2-h", "virchow2", "h-optimus-0", "prov-gigapath", "biomedclip",
                              "phikon", "phikon-v2", "rad-dino", "dinov2" */
    const char *model;     /* the published model it describes, e.g. "MahmoodLab/UNI" */
    float mean[3], std[3]; /* input normalisation (RGB in [0,1]) */
    int input_size;        /* default square input size, px */
    int n_layers;          /* default number of last blocks averaged into the patch features */
    int n_heads;           /* attention heads of the published model (0 = D/64) */
    ds_embed_rule embed;   /* image embedding rule */
    int timm_pos;          /* 1: official/timm-named files interpolate positions as timm does */
    int hf_pos;            /* 1: HF-named Dinov2 files interpolate positions as transformers does */
} ds_backbone_preset;

/* Number of presets; i-th preset (NULL when out of range); by name (NULL if
 * unknown; no error set). */
int ds_backbone_preset_count(void);
const ds_backbone_preset *ds_backbone_preset_get(int i);
const ds_backbone_preset *ds_backbone_preset_find(const char *name);
/* The preset recorded in a ds_backbone_describe() string (" preset=NAME"),
 * as the static name of the table, or NULL: what a model file's backbone
 * identity was loaded with, to load it the same way when scoring. */
const char *ds_backbone_preset_in(const char *describe);

typedef struct ds_backbone ds_backbone;

/* Loads the weights at path and builds the backbone, checking every tensor.
 * For a ViT, a config.json (timm's or Hugging Face's), open_clip_config.json
 * and preprocessor_config.json in the same folder are read where present:
 * heads, LayerNorm eps, the interpolation rule, normalisation and input size.
 * Returns DS_OK or an error naming the file and the tensor; DS_ERR_ARG for an
 * unknown preset or a preset on a CNN; DS_ERR_MISMATCH when the config next
 * to the weights describes another width. */
ds_status ds_backbone_load(const char *path, const ds_backbone_params *params, ds_backbone **out);
void ds_backbone_free(ds_backbone *bb);

ds_backbone_kind ds_backbone_get_kind(const ds_backbone *bb);
/* Short architecture description, e.g. "dinov2 vit D=384 depth=12 heads=6
 * patch=14 registers=0 mlp hidden=1536", "mobilenet_v2 taps=6,13 D=128",
 * "wide_resnet50_2 layer2+layer3 D=1024"; other ViT families start with
 * "timm vit", "hf vit", "hf dinov2" and name their MLP, position layout and
 * rule and LayerNorm eps. Everything that changes the features is in it:
 * " preset=NAME" when loaded with one, " mean=r,g,b std=r,g,b" when the
 * normalisation is not ImageNet's, " embed=cls+mean" for that rule. At most
 * DS_BACKBONE_DESCRIBE_MAX - 1 chars. With dtype bf16 it ends in
 * " dtype=bf16 (avx512bf16)", " dtype=bf16 (avx2 emulation: no AVX-512
 * BF16 on this CPU)" (same values, slower), for a ViT or a CNN alike. */
#define DS_BACKBONE_DESCRIBE_MAX 320
const char *ds_backbone_describe(const ds_backbone *bb);
/* Compute dtype names for command lines: "f32" -> DS_DTYPE_F32, "bf16" ->
 * DS_DTYPE_BF16; ds_backbone_dtype_name gives them back ("f16" for
 * DS_DTYPE_F16). Returns DS_ERR_ARG for another name. */
ds_status ds_backbone_dtype_parse(const char *name, ds_dtype *out);
const char *ds_backbone_dtype_name(ds_dtype dtype);
/* The compute dtype in use: DS_DTYPE_BF16 for a backbone loaded with
 * dtype bf16, else DS_DTYPE_F32. */
ds_dtype ds_backbone_get_dtype(const ds_backbone *bb);
/* Path of the weights file. */
const char *ds_backbone_path(const ds_backbone *bb);
/* The preset the backbone was loaded with, or NULL. */
const ds_backbone_preset *ds_backbone_get_preset(const ds_backbone *bb);
/* Normalisation applied by ds_backbone_normalize (mean[3], std[3]). */
void ds_backbone_mean_std(const ds_backbone *bb, float mean[3], float std[3]);
/* Default number of last blocks to average: the preset's, else 4 (ViTs);
 * 1 for the CNNs (which ignore it). */
int ds_backbone_default_layers(const ds_backbone *bb);
/* Image embedding width (D for DS_EMBED_CLS, 2D for DS_EMBED_CLS_MEAN);
 * 0 for the CNNs. */
int ds_backbone_embed_dim(const ds_backbone *bb);
/* Image embeddings [B, ds_backbone_embed_dim] of input [B,3,H,W] by the
 * backbone's rule. DS_ERR_UNSUPPORTED for the CNNs. */
ds_status ds_backbone_embed(ds_backbone *bb, const float *input, int B, int H, int W, float *out);
/* Input sizes must be multiples of this (14 for DINOv2, 32 for the CNNs). */
int ds_backbone_stride(const ds_backbone *bb);
/* The input size the backbone was trained at, used when the user gives none:
 * the preset's, else the config's (timm pretrained_cfg input_size, HF
 * image_size, open_clip image_size), else 518 for ViTs (37x37 patches, the
 * DINOv2 hub models' img_size), 224 for the CNNs. */
int ds_backbone_native_size(const ds_backbone *bb);

/* Feature grid for an H x W input: gh x gw patches of D channels.
 * Returns DS_ERR_ARG if H or W is not a positive multiple of the stride. */
ds_status ds_backbone_grid(const ds_backbone *bb, int H, int W, int *gh, int *gw, int *D);

/* RGB u8 image -> [3,H,W] f32 with the backbone's normalisation: the
 * preset's; else for ViTs the config's next to the weights (timm
 * pretrained_cfg mean/std, open_clip preprocess_cfg, HF preprocessor_config
 * image_mean/image_std); else ImageNet mean/std for DINOv2, ResNets and
 * torchvision MobileNetV2 files; the file's input_mean/input_std metadata
 * where present (0.5/0.5 for the shipped TFLite MobileNetV2). */
void ds_backbone_normalize(const ds_backbone *bb, const ds_image *img, float *dst);

/* Patch features [B, gh*gw, D] of input [B,3,H,W] (averaged over the last
 * n_layers for DINOv2; n_layers is ignored by the CNNs), and optionally the
 * CLS token [B, D] (NULL to skip; DS_ERR_UNSUPPORTED for the CNNs, which
 * have none). */
ds_status ds_backbone_forward(ds_backbone *bb, const float *input, int B, int H, int W, int n_layers, float *feats,
                              float *cls);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
