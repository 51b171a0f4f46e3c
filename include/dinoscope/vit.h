/* Vision Transformers: DINOv2 (facebookresearch/dinov2, torch.hub dinov2_vit{s,b,l,g}14
 * and *_reg), timm VisionTransformer state_dicts (UNI, UNI2-h, Virchow2,
 * H-optimus, Prov-GigaPath; open_clip's visual.trunk, BiomedCLIP) and Hugging
 * Face ViTModel / Dinov2Model (Phikon, Phikon-v2, RAD-DINO); forward pass in
 * float32 numerically matching each family's PyTorch code.
 *
 *   ds_vit *vit;
 *   ds_vit_create(weights, &(ds_vit_params){.n_threads = 0}, &vit);
 *   // input [B,3,H,W] f32, ImageNet-normalised; H, W multiples of 14
 *   ds_vit_forward(vit, input, B, H, W, 4, feats, cls);
 *   // feats [B,N,D], N = (H/14)(W/14): mean over the last 4 blocks, each
 *   // through the final LayerNorm; cls [B,D]: last block's CLS, normed.
 *   ds_vit_free(vit);
 */
#ifndef DINOSCOPE_VIT_H
#define DINOSCOPE_VIT_H

#include <stdbool.h>

#include "dinoscope.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* Tensor naming of the file (the prefix, e.g. "visual.trunk." for open_clip,
 * is stored apart in ds_vit_arch.prefix). */
typedef enum {
    DS_VIT_NAMES_DINOV2 = 0,    /* facebookresearch/dinov2 and timm VisionTransformer: blocks.N.attn.qkv ... */
    DS_VIT_NAMES_HF_DINOV2 = 1, /* transformers Dinov2Model: encoder.layer.N.attention.attention.query ... */
    DS_VIT_NAMES_HF_VIT = 2,    /* transformers ViTModel: layernorm_before, intermediate.dense ... */
} ds_vit_names;

/* Position-embedding interpolation rule for grids other than the learned one. */
typedef enum {
    DS_VIT_POS_AUTO = 0,   /* from the names: DINOv2 for official names, HF for ViTModel, timm for reg_token/no_embed_class */
    DS_VIT_POS_DINOV2 = 1, /* dinov2 interpolate_pos_encoding: scale factor (n+0.1)/M; *_reg: by size, antialiased */
    DS_VIT_POS_TIMM = 2,   /* timm resample_abs_pos_embed: by size, bicubic, antialias=True */
    DS_VIT_POS_HF = 3,     /* transformers interpolate_pos_encoding: by size, bicubic, no antialias */
} ds_vit_pos_rule;

/* MLP kinds; all but GELU compute silu(a) * b of a packed [a | b] projection. */
typedef enum {
    DS_VIT_MLP_GELU = 0,          /* fc2(GELU(fc1)) */
    DS_VIT_MLP_SWIGLU = 1,        /* dinov2 SwiGLUFFN w12/w3, HF weights_in/weights_out */
    DS_VIT_MLP_SWIGLU_PACKED = 2, /* timm GluMlp (SwiGLUPacked): fc1 [2H, D] = [x1; x2], fc2 [D, H] */
    DS_VIT_MLP_SWIGLU_SPLIT = 3,  /* timm SwiGLU: fc1_g, fc1_x (stitched into one [2H, D]), fc2 */
} ds_vit_mlp;

/* Architecture, inferred from the tensors (and ds_vit_params where they
 * cannot tell). */
typedef struct {
    int embed_dim;    /* D: 384 S, 768 B, 1024 L, 1536 g */
    int depth;        /* number of blocks */
    int n_heads;      /* params.n_heads, else D / 64 */
    int patch_size;   /* 14 or 16 */
    int n_registers;  /* 0, 4 or 8 (register_tokens / reg_token) */
    int ffn_hidden;   /* MLP hidden width (SwiGLU: width of each half) */
    int swiglu;       /* 1: a SwiGLU FFN of any layout (mlp != GELU) */
    int pos_grid;     /* M: the learned grid is M x M (37 for 518) */
    int interpolate_antialias; /* 1 for *_reg models as torch.hub builds them, and timm */
    float interpolate_offset;  /* 0.1 plain DINOv2, else 0.0 (by size) */
    int hf_names;     /* 1 if the file used Hugging Face transformers names */
    ds_vit_names names;
    ds_vit_mlp mlp;
    ds_vit_pos_rule pos_rule;
    int pos_prefix;   /* tokens before the patches that carry a position embedding: 1 (CLS; DINOv2, timm, HF),
                         0 (timm no_embed_class), 1 + n_registers (timm reg_token with class embedding) */
    int layer_scale;  /* 1 if the blocks have LayerScale gains (ls1/ls2, layer_scale1/2) */
    float ln_eps;     /* LayerNorm eps: 1e-6 (DINOv2, timm), 1e-12 (HF ViT), or the config's */
    char prefix[64];  /* name prefix of the ViT's tensors ("" or e.g. "visual.trunk."); others are ignored */
} ds_vit_arch;

typedef struct {
    int n_threads;    /* 0 = auto */
    int n_heads;      /* 0 = infer (D / 64); from config.json / a preset where D / 64 is wrong */
    float ln_eps;     /* 0 = by family (1e-6; 1e-12 for HF ViTModel) */
    ds_vit_pos_rule pos_rule; /* DS_VIT_POS_AUTO = from the names */
    /* Compute type of the Linear layers (qkv, proj, fc1/fc2 or w12/w3):
     * DS_DTYPE_F32 (0, the default: matches PyTorch float32) or
     * DS_DTYPE_BF16: weights packed once to bfloat16 at create time (a BF16
     * file's values are kept exactly), activations rounded to bf16 at each
     * Linear, products accumulated in fp32 (AVX-512 BF16 vdpbf16ps where the
     * CPU has it, else a portable kernel with the same rounding; see
     * ds_vit_bf16_kernel). Patch embedding, LayerNorm, attention, softmax,
     * GELU and residuals stay float32. DS_DTYPE_F16: DS_ERR_UNSUPPORTED. */
    ds_dtype dtype;
} ds_vit_params;

/* Whether w holds a ViT this module reads (a '*cls_token' tensor). */
bool ds_vit_detect(const ds_weights *w);

typedef struct ds_vit ds_vit;

/* Builds a ViT over w (official or HF names), checking every tensor's shape
 * against the inferred architecture before any forward pass. The weights
 * must outlive the ViT. Returns DS_ERR_FORMAT/DS_ERR_SHAPE naming the tensor,
 * its shape and the expected one. */
ds_status ds_vit_create(const ds_weights *w, const ds_vit_params *params, ds_vit **out);
void ds_vit_free(ds_vit *vit);
const ds_vit_arch *ds_vit_get_arch(const ds_vit *vit);
/* The compute dtype the ViT was created with. */
ds_dtype ds_vit_get_dtype(const ds_vit *vit);

/* Forward pass.
 * input:  [B,3,H,W] f32, H and W positive multiples of the patch size.
 * n_layers: number of last blocks averaged (1..depth).
 * feats:  [B,N,D] f32 output, N = (H/p)(W/p); may be NULL.
 * cls:    [B,D] f32 output (last block's CLS through the final norm); may be NULL.
 * Returns DS_OK, DS_ERR_ARG on bad sizes, DS_ERR_NOMEM. */
ds_status ds_vit_forward(ds_vit *vit, const float *input, int B, int H, int W, int n_layers,
                         float *feats, float *cls);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
