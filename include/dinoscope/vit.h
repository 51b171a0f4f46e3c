/* DINOv2 Vision Transformer (facebookresearch/dinov2, torch.hub dinov2_vit{s,b,l,g}14
 * and *_reg), forward pass in float32 numerically matching the PyTorch model.
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

#include "dinoscope.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* Architecture, inferred from the tensors. */
typedef struct {
    int embed_dim;    /* D: 384 S, 768 B, 1024 L, 1536 g */
    int depth;        /* number of blocks */
    int n_heads;      /* D / 64 */
    int patch_size;   /* 14 */
    int n_registers;  /* 0 or 4 (*_reg) */
    int ffn_hidden;   /* MLP hidden width (SwiGLU: width of each half) */
    int swiglu;       /* 1: SwiGLU FFN (w12/w3), 0: GELU MLP (fc1/fc2) */
    int pos_grid;     /* M: pos_embed holds 1 + M*M positions (37 for 518) */
    int interpolate_antialias; /* 1 for *_reg models as torch.hub builds them */
    float interpolate_offset;  /* 0.1 plain, 0.0 *_reg */
    int hf_names;     /* 1 if the file used Hugging Face transformers names */
} ds_vit_arch;

typedef struct {
    int n_threads;    /* 0 = auto */
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
