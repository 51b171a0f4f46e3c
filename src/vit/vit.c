/* DINOv2 ViT forward pass (facebookresearch/dinov2, models/vision_transformer.py
 * and layers/{block,attention,mlp,swiglu_ffn,layer_scale,patch_embed}.py).
 *
 * Per block (pre-norm, NestedTensorBlock with drop_path = 0):
 *   x = x + ls1 * proj(attention(norm1(x)))
 *   x = x + ls2 * ffn(norm2(x))          ffn: fc2(GELU(fc1)) or w3(SiLU(a)*b), [a|b] = w12
 * Tokens: [CLS, registers..., patches...]; pos_embed is added to CLS and the
 * patches BEFORE the registers are inserted (prepare_tokens_with_masks).
 * Features (get_intermediate_layers(n, norm=True)): each of the last n block
 * outputs through the final LayerNorm, patch tokens only, then averaged.
 *
 * Shapes: x [B*T, D] f32, T = 1 + n_reg + N, N = (H/p)(W/p). Linear layers
 * are one GEMM over all B*T rows (weights [out, in], y = x W^T + b);
 * attention (src/vit/attention.c) is fused per image, head and query block:
 * no [T, T] score matrix exists at all. */
#include <cblas.h>
#include <omp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gemm_bf16.h"
#include "vit/simd_math.h"
#include "vit/vit_internal.h"

typedef struct {
    const float *norm1_w, *norm1_b;
    const float *wqkv, *bqkv; /* [3D, D], [3D]: rows [0,D) query, [D,2D) key, [2D,3D) value */
    const float *proj_w, *proj_b;
    const float *ls1, *ls2;
    const float *norm2_w, *norm2_b;
    const float *fc1_w, *fc1_b; /* [Hd, D] (MLP) or w12 [2Hd, D] (SwiGLU) */
    const float *fc2_w, *fc2_b; /* [D, Hd] (fc2 or w3) */
    /* dtype bf16: the four weight matrices packed once (the f32 ones above
     * are then NULL; src/core/gemm_bf16.h) */
    ds_bf16_mat wqkv16, proj16, fc1_16, fc2_16;
} vit_block;

struct ds_vit {
    ds_vit_arch arch;
    const ds_weights *weights;
    int n_threads;
    ds_dtype dtype; /* compute type of the Linear layers: F32 or BF16 */
    char *gemm_work; /* bf16: per-thread DS_GEMM_BF16_WORK_BYTES */
    int gemm_work_threads;
    const float *cls_token, *pos_embed, *reg_tokens, *patch_w, *patch_b, *norm_w, *norm_b;
    vit_block *blocks;
    /* float32 copies of tensors that are not directly usable from the mapping
     * (F16/BF16, or unaligned): freed with the ViT */
    float **owned;
    int n_owned, cap_owned;
    const ds_tensor **bound; /* tensors bound so far: every tensor of the file must be used */
    int n_bound, cap_bound;
    /* workspace, grown on demand and reused across calls (first touch of
     * fresh pages is slow on our machines) */
    float *work;
    size_t work_floats;
    /* cached interpolated position embeddings for the last grid */
    float *pos_cache;
    int pos_gh, pos_gw;
};

/* ---- weights --------------------------------------------------------- */

static void fmt_shape(char *buf, size_t n, const int64_t *shape, int n_dims) {
    size_t len = 0;
    len += (size_t)snprintf(buf + len, n - len, "[");
    for (int i = 0; i < n_dims && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

/* Finds name and checks it has exactly the expected shape (n_dims entries). */
static ds_status expect(const ds_weights *w, const char *name, int n_dims, const int64_t *shape,
                        const ds_tensor **out) {
    const ds_tensor *t = ds_weights_find(w, name);
    char want[96], got[96];
    fmt_shape(want, sizeof want, shape, n_dims);
    if (!t)
        return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': missing tensor '%s' (expected shape %s)",
                            ds_weights_path(w), name, want);
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        fmt_shape(got, sizeof got, t->shape, t->n_dims);
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': '%s' has shape %s, expected %s", ds_weights_path(w),
                            name, got, want);
    }
    *out = t;
    return DS_OK;
}

/* A float buffer of n owned by vit (freed with it). */
static float *owned_buffer(ds_vit *vit, size_t n) {
    if (vit->n_owned == vit->cap_owned) {
        int cap = vit->cap_owned ? vit->cap_owned * 2 : 64;
        float **p = realloc(vit->owned, sizeof(float *) * (size_t)cap);
        if (!p) {
            ds_set_error(DS_ERR_NOMEM, "ds_vit_create: out of memory");
            return NULL;
        }
        vit->owned = p;
        vit->cap_owned = cap;
    }
    float *buf = ds_alloc(n, sizeof(float), "ds_vit_create");
    if (buf) vit->owned[vit->n_owned++] = buf;
    return buf;
}

/* A float32 view of t: the mapped data itself when it is f32 and aligned,
 * else a converted copy owned by vit. */
static const float *f32_view(ds_vit *vit, const ds_tensor *t) {
    if (t->dtype == DS_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) return t->data;
    float *buf = owned_buffer(vit, (size_t)t->n_elements);
    if (buf) ds_tensor_to_f32(t, buf);
    return buf;
}

/* ---- tensor names -------------------------------------------------------
 * One table per naming family; block names are printf formats taking the
 * block index. The timm names equal the official DINOv2 ones except the
 * registers (reg_token), the timm SwiGLU halves (mlp.fc1_g / mlp.fc1_x) and
 * the packed GluMlp (fc1/fc2 with fc2's input half of fc1's output). */
typedef struct {
    const char *cls, *pos, *reg, *reg_timm, *mask, *patch_w, *patch_b, *norm_w, *norm_b, *block0_norm1;
    const char *n1w, *n1b, *qkv_w, *qkv_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *proj_w, *proj_b, *ls1, *ls2;
    const char *n2w, *n2b, *fc1_w, *fc1_b, *fc2_w, *fc2_b, *w12_w, *w12_b, *w3_w, *w3_b;
    const char *g_w, *g_b, *x_w, *x_b;
} vit_names;

static const vit_names NAMES_DINOV2 = {
    "cls_token", "pos_embed", "register_tokens", "reg_token", "mask_token", "patch_embed.proj.weight",
    "patch_embed.proj.bias", "norm.weight", "norm.bias", "blocks.0.norm1.weight",
    "blocks.%d.norm1.weight", "blocks.%d.norm1.bias", "blocks.%d.attn.qkv.weight", "blocks.%d.attn.qkv.bias",
    NULL, NULL, NULL, NULL, NULL, NULL, "blocks.%d.attn.proj.weight", "blocks.%d.attn.proj.bias",
    "blocks.%d.ls1.gamma", "blocks.%d.ls2.gamma", "blocks.%d.norm2.weight", "blocks.%d.norm2.bias",
    "blocks.%d.mlp.fc1.weight", "blocks.%d.mlp.fc1.bias", "blocks.%d.mlp.fc2.weight", "blocks.%d.mlp.fc2.bias",
    "blocks.%d.mlp.w12.weight", "blocks.%d.mlp.w12.bias", "blocks.%d.mlp.w3.weight", "blocks.%d.mlp.w3.bias",
    "blocks.%d.mlp.fc1_g.weight", "blocks.%d.mlp.fc1_g.bias", "blocks.%d.mlp.fc1_x.weight", "blocks.%d.mlp.fc1_x.bias",
};

static const vit_names NAMES_HF_DINOV2 = {
    "embeddings.cls_token", "embeddings.position_embeddings", "embeddings.register_tokens", NULL,
    "embeddings.mask_token", "embeddings.patch_embeddings.projection.weight",
    "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias", "encoder.layer.0.norm1.weight",
    "encoder.layer.%d.norm1.weight", "encoder.layer.%d.norm1.bias", NULL, NULL,
    "encoder.layer.%d.attention.attention.query.weight", "encoder.layer.%d.attention.attention.query.bias",
    "encoder.layer.%d.attention.attention.key.weight", "encoder.layer.%d.attention.attention.key.bias",
    "encoder.layer.%d.attention.attention.value.weight", "encoder.layer.%d.attention.attention.value.bias",
    "encoder.layer.%d.attention.output.dense.weight", "encoder.layer.%d.attention.output.dense.bias",
    "encoder.layer.%d.layer_scale1.lambda1", "encoder.layer.%d.layer_scale2.lambda1", "encoder.layer.%d.norm2.weight",
    "encoder.layer.%d.norm2.bias", "encoder.layer.%d.mlp.fc1.weight", "encoder.layer.%d.mlp.fc1.bias",
    "encoder.layer.%d.mlp.fc2.weight", "encoder.layer.%d.mlp.fc2.bias", "encoder.layer.%d.mlp.weights_in.weight",
    "encoder.layer.%d.mlp.weights_in.bias", "encoder.layer.%d.mlp.weights_out.weight",
    "encoder.layer.%d.mlp.weights_out.bias", NULL, NULL, NULL, NULL,
};

/* transformers ViTLayer: layernorm_before -> attention -> residual ->
 * layernorm_after -> intermediate.dense + act -> output.dense -> residual; no
 * LayerScale. The pooler (dense + tanh on CLS) is not a feature and ignored. */
static const vit_names NAMES_HF_VIT = {
    "embeddings.cls_token", "embeddings.position_embeddings", NULL, NULL, "embeddings.mask_token",
    "embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias", "layernorm.weight",
    "layernorm.bias", "encoder.layer.0.layernorm_before.weight",
    "encoder.layer.%d.layernorm_before.weight", "encoder.layer.%d.layernorm_before.bias", NULL, NULL,
    "encoder.layer.%d.attention.attention.query.weight", "encoder.layer.%d.attention.attention.query.bias",
    "encoder.layer.%d.attention.attention.key.weight", "encoder.layer.%d.attention.attention.key.bias",
    "encoder.layer.%d.attention.attention.value.weight", "encoder.layer.%d.attention.attention.value.bias",
    "encoder.layer.%d.attention.output.dense.weight", "encoder.layer.%d.attention.output.dense.bias", NULL, NULL,
    "encoder.layer.%d.layernorm_after.weight", "encoder.layer.%d.layernorm_after.bias",
    "encoder.layer.%d.intermediate.dense.weight", "encoder.layer.%d.intermediate.dense.bias",
    "encoder.layer.%d.output.dense.weight", "encoder.layer.%d.output.dense.bias", NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL,
};

static const vit_names *names_of(const ds_vit_arch *a) {
    return a->names == DS_VIT_NAMES_HF_VIT ? &NAMES_HF_VIT : a->names == DS_VIT_NAMES_HF_DINOV2 ? &NAMES_HF_DINOV2
                                                                                               : &NAMES_DINOV2;
}

/* The tensor named prefix + fmt (formatted with blk), NULL if absent. */
static const ds_tensor *find_at(const ds_vit *vit, const char *fmt, int blk) {
    if (!fmt) return NULL;
    char body[160], name[240];
    snprintf(body, sizeof body, fmt, blk);
    snprintf(name, sizeof name, "%s%s", vit->arch.prefix, body);
    return ds_weights_find(vit->weights, name);
}

static ds_status note_bound(ds_vit *vit, const ds_tensor *t) {
    if (vit->n_bound == vit->cap_bound) {
        int cap = vit->cap_bound ? vit->cap_bound * 2 : 256;
        const ds_tensor **p = realloc(vit->bound, sizeof *p * (size_t)cap);
        if (!p) return ds_set_error(DS_ERR_NOMEM, "ds_vit_create: out of memory");
        vit->bound = p;
        vit->cap_bound = cap;
    }
    vit->bound[vit->n_bound++] = t;
    return DS_OK;
}

/* Looks up prefix + fmt (printf format taking the block index), checks its
 * shape and returns a f32 view. */
static ds_status get(ds_vit *vit, const char *fmt, int blk, int n_dims, int64_t d0, int64_t d1, int64_t d2,
                     int64_t d3, const float **out) {
    char body[160], name[240];
    snprintf(body, sizeof body, fmt, blk);
    snprintf(name, sizeof name, "%s%s", vit->arch.prefix, body);
    int64_t shape[4] = {d0, d1, d2, d3};
    const ds_tensor *t = NULL;
    ds_status st = expect(vit->weights, name, n_dims, shape, &t);
    if (st == DS_OK) st = note_bound(vit, t);
    if (st != DS_OK) return st;
    *out = f32_view(vit, t);
    return *out ? DS_OK : DS_ERR_NOMEM;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

bool ds_vit_detect(const ds_weights *w) {
    for (int i = 0; i < ds_weights_count(w); i++)
        if (ends_with(ds_weights_get(w, i)->name, "cls_token")) return true;
    return false;
}

static bool is_square(int64_t n, int64_t *m) {
    if (n < 1) return false;
    int64_t r = (int64_t)llround(sqrt((double)n));
    *m = r;
    return r * r == n;
}

/* Infers naming, prefix, embed dim, depth, patch size, registers, position
 * layout, FFN kind and width from the tensors; heads, LayerNorm eps and the
 * interpolation rule come from params where the tensors cannot tell
 * (dinov2/hub/backbones.py builds ViT-S/B/L/g with heads = D/64). */
static ds_status infer_arch(ds_vit *vit, const ds_vit_params *params) {
    const ds_weights *w = vit->weights;
    ds_vit_arch *a = &vit->arch;
    const char *path = ds_weights_path(w);
    /* the CLS token names the family and the prefix: "cls_token",
     * "visual.trunk.cls_token" (open_clip), "embeddings.cls_token" (HF) */
    const ds_tensor *cls = NULL;
    for (int i = 0; i < ds_weights_count(w); i++) {
        const ds_tensor *t = ds_weights_get(w, i);
        if (!ends_with(t->name, "cls_token")) continue;
        if (cls)
            return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s' holds two CLS tokens ('%s', '%s'): which ViT to use is ambiguous",
                                path, cls->name, t->name);
        cls = t;
    }
    if (!cls)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_vit_create: '%s' is not a ViT checkpoint: no 'cls_token' or 'embeddings.cls_token'",
                            path);
    size_t pl = strlen(cls->name) - strlen("cls_token");
    bool hf = pl >= strlen("embeddings.") && !strncmp(cls->name + pl - strlen("embeddings."), "embeddings.", 11);
    if (hf) pl -= strlen("embeddings.");
    if (pl >= sizeof a->prefix || (pl && cls->name[pl - 1] != '.'))
        return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': '%s' is not a ViT's CLS token name", path, cls->name);
    memcpy(a->prefix, cls->name, pl);
    a->prefix[pl] = 0;
    a->names = !hf ? DS_VIT_NAMES_DINOV2
                   : find_at(vit, NAMES_HF_VIT.block0_norm1, 0) ? DS_VIT_NAMES_HF_VIT : DS_VIT_NAMES_HF_DINOV2;
    a->hf_names = hf;
    const vit_names *nm = names_of(a);

    if (cls->n_dims != 3 || cls->shape[0] != 1 || cls->shape[1] != 1 || cls->shape[2] < 1 || cls->shape[2] > 65536) {
        char got[96];
        fmt_shape(got, sizeof got, cls->shape, cls->n_dims);
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': '%s' has shape %s, expected [1,1,D]", path, cls->name, got);
    }
    a->embed_dim = (int)cls->shape[2];
    int heads = params ? params->n_heads : 0;
    if (heads <= 0) {
        if (a->embed_dim % 64)
            return ds_set_error(DS_ERR_UNSUPPORTED,
                                "ds_vit_create: '%s': the number of attention heads of a D=%d ViT cannot be read from its "
                                "tensors (D is not a multiple of 64): put its config.json next to it or give a preset",
                                path, a->embed_dim);
        heads = a->embed_dim / 64;
    }
    if (a->embed_dim % heads)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': D=%d is not a multiple of %d heads", path, a->embed_dim, heads);
    a->n_heads = heads;
    a->depth = 0;
    while (a->depth < 10000 && find_at(vit, nm->n1w, a->depth)) a->depth++;
    if (a->depth == 0) return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': no transformer blocks found", path);

    const ds_tensor *pe = find_at(vit, nm->patch_w, 0);
    if (!pe || pe->n_dims != 4 || pe->shape[1] != 3 || pe->shape[2] != pe->shape[3] || pe->shape[2] < 1 ||
        pe->shape[2] > 64)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': patch embedding weight missing or not [D,3,p,p]", path);
    a->patch_size = (int)pe->shape[2];

    const ds_tensor *reg = find_at(vit, nm->reg, 0);
    bool timm_reg = false;
    if (!reg && nm->reg_timm) timm_reg = (reg = find_at(vit, nm->reg_timm, 0)) != NULL;
    a->n_registers = 0;
    if (reg) {
        if (reg->n_dims != 3 || reg->shape[0] != 1 || reg->shape[1] < 1 || reg->shape[1] > 64 || reg->shape[2] != a->embed_dim)
            return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': '%s' is not [1,R,%d]", path, reg->name, a->embed_dim);
        a->n_registers = (int)reg->shape[1];
    }

    /* position layouts: DINOv2 and HF [1 + M*M] (CLS + grid; registers get
     * none); timm no_embed_class [M*M]; timm with reg_token and a class
     * embedding [1 + R + M*M] (VisionTransformer._pos_embed) */
    const ds_tensor *pos = find_at(vit, nm->pos, 0);
    if (!pos || pos->n_dims != 3 || pos->shape[0] != 1 || pos->shape[1] < 1 || pos->shape[2] != a->embed_dim)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': position embedding missing or not [1,P,%d]", path, a->embed_dim);
    int64_t npos = pos->shape[1], M = 0;
    if (timm_reg && is_square(npos - 1 - a->n_registers, &M))
        a->pos_prefix = 1 + a->n_registers;
    else if (!hf && is_square(npos, &M))
        a->pos_prefix = 0;
    else if (is_square(npos - 1, &M))
        a->pos_prefix = 1;
    else
        return ds_set_error(DS_ERR_SHAPE,
                            "ds_vit_create: '%s': position embedding has %lld positions: not a square grid after the CLS%s",
                            path, (long long)npos, timm_reg ? " and register tokens" : "");
    a->pos_grid = (int)M;

    a->pos_rule = params ? params->pos_rule : DS_VIT_POS_AUTO;
    if (a->pos_rule == DS_VIT_POS_AUTO)
        a->pos_rule = a->names == DS_VIT_NAMES_HF_VIT ? DS_VIT_POS_HF
                      : (timm_reg || a->pos_prefix != 1) ? DS_VIT_POS_TIMM
                                                         : DS_VIT_POS_DINOV2;
    /* torch.hub: *_reg models interpolate by size with antialias, plain ones
     * by scale factor (n + 0.1)/M without (dinov2/hub/backbones.py); timm's
     * resample_abs_pos_embed by size with antialias=True; transformers by
     * size without */
    if (a->pos_rule == DS_VIT_POS_DINOV2) {
        a->interpolate_antialias = a->n_registers > 0;
        a->interpolate_offset = a->n_registers > 0 ? 0.0f : 0.1f;
    } else {
        a->interpolate_antialias = a->pos_rule == DS_VIT_POS_TIMM;
        a->interpolate_offset = 0.0f;
    }
    a->ln_eps = params && params->ln_eps > 0 ? params->ln_eps : a->names == DS_VIT_NAMES_HF_VIT ? 1e-12f : 1e-6f;
    a->layer_scale = nm->ls1 && find_at(vit, nm->ls1, 0) != NULL;

    const ds_tensor *f1 = NULL, *f2 = find_at(vit, nm->fc2_w, 0);
    if ((f1 = find_at(vit, nm->w12_w, 0))) {
        a->mlp = DS_VIT_MLP_SWIGLU;
        f2 = find_at(vit, nm->w3_w, 0);
    } else if ((f1 = find_at(vit, nm->g_w, 0))) {
        a->mlp = DS_VIT_MLP_SWIGLU_SPLIT;
    } else if ((f1 = find_at(vit, nm->fc1_w, 0))) {
        /* GluMlp's fc2 takes half of fc1's outputs */
        a->mlp = f2 && f2->n_dims == 2 && f1->n_dims == 2 && f2->shape[1] * 2 == f1->shape[0] ? DS_VIT_MLP_SWIGLU_PACKED
                                                                                               : DS_VIT_MLP_GELU;
    }
    char fc1n[160];
    snprintf(fc1n, sizeof fc1n, nm->fc1_w, 0);
    if (!f1 || f1->n_dims != 2 || f1->shape[1] != a->embed_dim || f1->shape[0] < 1 ||
        ((a->mlp == DS_VIT_MLP_SWIGLU || a->mlp == DS_VIT_MLP_SWIGLU_PACKED) && f1->shape[0] % 2))
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': first block's FFN input weight missing or misshapen (expected '%s%s' of [H,%d])",
                            path, a->prefix, fc1n, a->embed_dim);
    a->swiglu = a->mlp != DS_VIT_MLP_GELU;
    a->ffn_hidden = (int)(a->mlp == DS_VIT_MLP_SWIGLU || a->mlp == DS_VIT_MLP_SWIGLU_PACKED ? f1->shape[0] / 2 : f1->shape[0]);
    return DS_OK;
}

/* Tensors a ViT file may hold that are no feature: the training-only mask
 * token, HF ViTModel's pooler, a timm classifier head. Outside the prefix
 * (open_clip's text tower, visual.head, logit_scale) everything is ignored. */
static bool is_ignored(const ds_vit *vit, const char *name) {
    size_t pl = strlen(vit->arch.prefix);
    if (strncmp(name, vit->arch.prefix, pl) != 0) return true;
    const char *rest = name + pl;
    const vit_names *nm = names_of(&vit->arch);
    if (!strcmp(rest, nm->mask)) return true;
    if (vit->arch.names == DS_VIT_NAMES_HF_VIT && !strncmp(rest, "pooler.", 7)) return true;
    if (vit->arch.names == DS_VIT_NAMES_DINOV2 && (!strcmp(rest, "head.weight") || !strcmp(rest, "head.bias"))) return true;
    return false;
}

/* [rows_a + rows_b, cols] = rows of a then rows of b, owned by vit. */
static const float *stack_rows(ds_vit *vit, const float *a, const float *b, size_t rows, size_t cols) {
    float *d = owned_buffer(vit, 2 * rows * cols);
    if (!d) return NULL;
    memcpy(d, a, sizeof(float) * rows * cols);
    memcpy(d + rows * cols, b, sizeof(float) * rows * cols);
    return d;
}

static ds_status bind_weights(ds_vit *vit) {
    const ds_vit_arch *a = &vit->arch;
    const vit_names *nm = names_of(a);
    int64_t D = a->embed_dim, p = a->patch_size, M = a->pos_grid, Hd = a->ffn_hidden, R = a->n_registers;
    ds_status st;
#define GET(fmt, blk, nd, d0, d1, d2, d3, dst)                                     \
    do {                                                                           \
        if ((st = get(vit, fmt, blk, nd, d0, d1, d2, d3, dst)) != DS_OK) return st; \
    } while (0)
/* a Linear layer: weight [out, in] and bias [out] of block blk */
#define GET_LINEAR(wfmt, bfmt, blk, out, in, w, b) \
    do {                                           \
        GET(wfmt, blk, 2, out, in, 0, 0, w);       \
        GET(bfmt, blk, 1, out, 0, 0, 0, b);        \
    } while (0)
    const float *pos;
    GET(nm->cls, 0, 3, 1, 1, D, 0, &vit->cls_token);
    GET(nm->pos, 0, 3, 1, a->pos_prefix + M * M, D, 0, &pos);
    if (R) GET(find_at(vit, nm->reg, 0) ? nm->reg : nm->reg_timm, 0, 3, 1, R, D, 0, &vit->reg_tokens);
    /* The forward pass adds pos_embed[0] to the CLS and pos_embed[1:] to the
     * patches, and nothing to the registers (DINOv2's layout). Other layouts
     * are brought to it here: no_embed_class has no CLS position (zero row);
     * timm's class embedding with registers adds positions 1..R to them,
     * folded into register copies. */
    if (a->pos_prefix != 1) {
        float *pp = owned_buffer(vit, (size_t)(1 + M * M) * D);
        if (!pp) return DS_ERR_NOMEM;
        if (a->pos_prefix == 0) {
            memset(pp, 0, sizeof(float) * (size_t)D);
            memcpy(pp + D, pos, sizeof(float) * (size_t)(M * M * D));
        } else {
            memcpy(pp, pos, sizeof(float) * (size_t)D);
            memcpy(pp + D, pos + (size_t)(1 + R) * D, sizeof(float) * (size_t)(M * M * D));
            float *rg = owned_buffer(vit, (size_t)(R * D));
            if (!rg) return DS_ERR_NOMEM;
            for (int64_t i = 0; i < R * D; i++) rg[i] = vit->reg_tokens[i] + pos[D + i];
            vit->reg_tokens = rg;
        }
        pos = pp;
    }
    vit->pos_embed = pos;
    GET(nm->patch_w, 0, 4, D, 3, p, p, &vit->patch_w);
    GET(nm->patch_b, 0, 1, D, 0, 0, 0, &vit->patch_b);
    GET(nm->norm_w, 0, 1, D, 0, 0, 0, &vit->norm_w);
    GET(nm->norm_b, 0, 1, D, 0, 0, 0, &vit->norm_b);
    float *ones = NULL;
    if (!a->layer_scale) {
        /* no LayerScale (timm init_values=None, HF ViT): a gain of 1 */
        if (!(ones = owned_buffer(vit, (size_t)D))) return DS_ERR_NOMEM;
        for (int64_t j = 0; j < D; j++) ones[j] = 1.0f;
    }
    for (int i = 0; i < a->depth; i++) {
        vit_block *b = &vit->blocks[i];
        GET(nm->n1w, i, 1, D, 0, 0, 0, &b->norm1_w);
        GET(nm->n1b, i, 1, D, 0, 0, 0, &b->norm1_b);
        if (!nm->qkv_w) {
            /* HF splits the fused projection into query/key/value; stitch them
             * back so that one GEMM computes all three */
            const char *wn[3] = {nm->q_w, nm->k_w, nm->v_w}, *bn[3] = {nm->q_b, nm->k_b, nm->v_b};
            float *w3 = owned_buffer(vit, (size_t)3 * D * D), *b3 = owned_buffer(vit, (size_t)3 * D);
            if (!w3 || !b3) return DS_ERR_NOMEM;
            for (int j = 0; j < 3; j++) {
                const float *pw, *pb;
                GET_LINEAR(wn[j], bn[j], i, D, D, &pw, &pb);
                memcpy(w3 + (size_t)j * D * D, pw, sizeof(float) * (size_t)(D * D));
                memcpy(b3 + (size_t)j * D, pb, sizeof(float) * (size_t)D);
            }
            b->wqkv = w3, b->bqkv = b3;
        } else {
            /* fused qkv (Attention.forward reshapes to (B, N, 3, heads, hd)) */
            GET_LINEAR(nm->qkv_w, nm->qkv_b, i, 3 * D, D, &b->wqkv, &b->bqkv);
        }
        GET_LINEAR(nm->proj_w, nm->proj_b, i, D, D, &b->proj_w, &b->proj_b);
        if (a->layer_scale) {
            GET(nm->ls1, i, 1, D, 0, 0, 0, &b->ls1);
            GET(nm->ls2, i, 1, D, 0, 0, 0, &b->ls2);
        } else {
            b->ls1 = b->ls2 = ones;
        }
        GET(nm->n2w, i, 1, D, 0, 0, 0, &b->norm2_w);
        GET(nm->n2b, i, 1, D, 0, 0, 0, &b->norm2_b);
        switch (a->mlp) {
        case DS_VIT_MLP_SWIGLU:
            GET_LINEAR(nm->w12_w, nm->w12_b, i, 2 * Hd, D, &b->fc1_w, &b->fc1_b);
            GET_LINEAR(nm->w3_w, nm->w3_b, i, D, Hd, &b->fc2_w, &b->fc2_b);
            break;
        case DS_VIT_MLP_SWIGLU_SPLIT: {
            /* timm SwiGLU: fc2(act(fc1_g(x)) * fc1_x(x)) = the packed form with
             * w12 = [fc1_g; fc1_x] */
            const float *gw, *gb, *xw, *xb;
            GET_LINEAR(nm->g_w, nm->g_b, i, Hd, D, &gw, &gb);
            GET_LINEAR(nm->x_w, nm->x_b, i, Hd, D, &xw, &xb);
            if (!(b->fc1_w = stack_rows(vit, gw, xw, (size_t)Hd, (size_t)D)) ||
                !(b->fc1_b = stack_rows(vit, gb, xb, (size_t)Hd, 1)))
                return DS_ERR_NOMEM;
            GET_LINEAR(nm->fc2_w, nm->fc2_b, i, D, Hd, &b->fc2_w, &b->fc2_b);
            break;
        }
        case DS_VIT_MLP_SWIGLU_PACKED:
            /* timm GluMlp (gate_last=False): x1, x2 = fc1(x).chunk(2); fc2(act(x1) * x2) */
            GET_LINEAR(nm->fc1_w, nm->fc1_b, i, 2 * Hd, D, &b->fc1_w, &b->fc1_b);
            GET_LINEAR(nm->fc2_w, nm->fc2_b, i, D, Hd, &b->fc2_w, &b->fc2_b);
            break;
        default:
            GET_LINEAR(nm->fc1_w, nm->fc1_b, i, Hd, D, &b->fc1_w, &b->fc1_b);
            GET_LINEAR(nm->fc2_w, nm->fc2_b, i, D, Hd, &b->fc2_w, &b->fc2_b);
        }
    }
#undef GET_LINEAR
#undef GET
    /* A tensor nothing uses means a file we misread (a block without its
     * norm1, a renamed or extra layer): refuse it rather than ignore it.
     * Only what is_ignored() names may be left over. */
    for (int i = 0; i < ds_weights_count(vit->weights); i++) {
        const ds_tensor *t = ds_weights_get(vit->weights, i);
        bool used = false;
        for (int j = 0; j < vit->n_bound && !used; j++) used = vit->bound[j] == t;
        if (!used && !is_ignored(vit, t->name))
            return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': tensor '%s' is not part of a %d-block %s ViT",
                                ds_weights_path(vit->weights), t->name, a->depth,
                                a->names == DS_VIT_NAMES_HF_VIT ? "Hugging Face" : a->hf_names ? "DINOv2 (HF)" : "DINOv2/timm");
    }
    return DS_OK;
}

/* Frees the owned f32 copy at p, if p is one (a converted BF16/F16 tensor):
 * in bf16 mode only the packed matrix is used. */
static void release_owned(ds_vit *vit, const float *p) {
    for (int i = 0; i < vit->n_owned; i++)
        if (vit->owned[i] == p) {
            free(vit->owned[i]);
            vit->owned[i] = vit->owned[--vit->n_owned];
            return;
        }
}

/* dtype bf16: packs the Linear weights of every block once (rounded to
 * nearest even, or exactly the stored values of a BF16 file). The patch
 * embedding, norms, biases, LayerScale and attention stay float32. */
static ds_status pack_bf16(ds_vit *vit) {
    const ds_vit_arch *a = &vit->arch;
    int D = a->embed_dim, Hd = a->ffn_hidden, f1 = a->swiglu ? 2 * Hd : Hd;
    for (int i = 0; i < a->depth; i++) {
        vit_block *b = &vit->blocks[i];
        ds_status st;
        if ((st = ds_bf16_mat_pack(b->wqkv, 3 * D, D, D, &b->wqkv16)) != DS_OK ||
            (st = ds_bf16_mat_pack(b->proj_w, D, D, D, &b->proj16)) != DS_OK ||
            (st = ds_bf16_mat_pack(b->fc1_w, f1, D, D, &b->fc1_16)) != DS_OK ||
            (st = ds_bf16_mat_pack(b->fc2_w, D, Hd, Hd, &b->fc2_16)) != DS_OK)
            return st;
        release_owned(vit, b->wqkv);
        release_owned(vit, b->proj_w);
        release_owned(vit, b->fc1_w);
        release_owned(vit, b->fc2_w);
        b->wqkv = b->proj_w = b->fc1_w = b->fc2_w = NULL;
    }
    return DS_OK;
}

ds_dtype ds_vit_get_dtype(const ds_vit *vit) { return vit->dtype; }

ds_status ds_vit_create(const ds_weights *w, const ds_vit_params *params, ds_vit **out) {
    if (!w || !out) return ds_set_error(DS_ERR_ARG, "ds_vit_create: NULL argument");
    ds_vit *vit = calloc(1, sizeof *vit);
    if (!vit) return ds_set_error(DS_ERR_NOMEM, "ds_vit_create: out of memory");
    vit->weights = w;
    vit->n_threads = params ? params->n_threads : 0;
    vit->dtype = params ? params->dtype : DS_DTYPE_F32;
    if (vit->dtype != DS_DTYPE_F32 && vit->dtype != DS_DTYPE_BF16) {
        free(vit);
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_vit_create: compute dtype %d not supported (f32 or bf16)",
                            (int)(params ? params->dtype : 0));
    }
    ds_status st = infer_arch(vit, params);
    if (st == DS_OK) {
        vit->blocks = calloc((size_t)vit->arch.depth, sizeof(vit_block));
        st = vit->blocks ? bind_weights(vit) : ds_set_error(DS_ERR_NOMEM, "ds_vit_create: out of memory");
    }
    if (st == DS_OK && vit->dtype == DS_DTYPE_BF16) st = pack_bf16(vit);
    if (st != DS_OK) {
        ds_vit_free(vit);
        return st;
    }
    *out = vit;
    return DS_OK;
}

void ds_vit_free(ds_vit *vit) {
    if (!vit) return;
    for (int i = 0; vit->blocks && i < vit->arch.depth; i++) {
        vit_block *b = &vit->blocks[i];
        ds_bf16_mat_free(&b->wqkv16);
        ds_bf16_mat_free(&b->proj16);
        ds_bf16_mat_free(&b->fc1_16);
        ds_bf16_mat_free(&b->fc2_16);
    }
    free(vit->gemm_work);
    for (int i = 0; i < vit->n_owned; i++) free(vit->owned[i]);
    free(vit->owned);
    free(vit->blocks);
    free(vit->bound);
    free(vit->work);
    free(vit->pos_cache);
    free(vit);
}

const ds_vit_arch *ds_vit_get_arch(const ds_vit *vit) { return &vit->arch; }

/* ---- kernels ---------------------------------------------------------- */

/* Threading: one OpenMP team does everything. GEMMs are split by rows over
 * the team, each thread calling a single-threaded sgemm on its rows (ggml's
 * scheme). Mixing OpenBLAS' own pthreads with OpenMP regions made the two
 * pools spin against each other on our 2-core machines (5x slower). */

enum { ACT_NONE, ACT_GELU, ACT_SWIGLU };

/* y[rows, out] = x[rows, in] W^T + b (torch Linear, W [out, in]; x rows
 * ldx apart), then the activation on the thread's own rows:
 * ACT_GELU: exact GELU in place; ACT_SWIGLU: out = 2*Hd, y[:, :Hd] =
 * silu(y[:, :Hd]) * y[:, Hd:] (SwiGLUFFN: x1, x2 = w12(x).chunk(2)). Rows are
 * split the same way whatever the batch, so a batch equals single runs bit
 * for bit; a different thread count may change the last bits. */
/* W16 (not NULL in bf16 mode): the packed W, run by ds_gemm_bf16 with gw
 * holding DS_GEMM_BF16_WORK_BYTES per thread. */
static void linear(const float *x, int ldx, int rows, int in, const float *W, const ds_bf16_mat *W16, char *gw,
                   const float *b, int out, float *y, int act, int nt) {
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int r0 = (int)((int64_t)rows * t / n), r1 = (int)((int64_t)rows * (t + 1) / n);
        if (r1 > r0) {
            float *yr = y + (size_t)r0 * out;
            if (W16)
                ds_gemm_bf16(x + (size_t)r0 * ldx, ldx, r1 - r0, W16, yr, out, 0, out,
                             gw + (size_t)t * DS_GEMM_BF16_WORK_BYTES);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, out, in, 1.0f, x + (size_t)r0 * ldx, ldx,
                            W, in, 0.0f, yr, out);
            for (int r = 0; r < r1 - r0; r++) {
                float *row = yr + (size_t)r * out;
                if (b)
                    for (int j = 0; j < out; j++) row[j] += b[j];
                if (act == ACT_GELU) ds_vgelu(row, (size_t)out);
                else if (act == ACT_SWIGLU) ds_vsilu_mul(row, row + out / 2, (size_t)(out / 2));
            }
        }
    }
}

/* linear() per image of B images of T rows each: a row's result then does not
 * depend on the batch size (OpenBLAS picks kernels by the row count). */
static void linear_per_image(const float *x, int ldx, int B, int T, int in, const float *W, const ds_bf16_mat *W16,
                             char *gw, const float *b, int out, float *y, int act, int nt) {
    for (int i = 0; i < B; i++)
        linear(x + (size_t)i * T * ldx, ldx, T, in, W, W16, gw, b, out, y + (size_t)i * T * out, act, nt);
}

/* LayerNorm over the last dim, eps 1e-6 for DINOv2 and timm (partial(nn.LayerNorm,
 * eps=1e-6)), the config's for HF (ViT: 1e-12); biased variance as torch.
 * Accumulates in double. */
static void layer_norm(const float *x, int rows, int D, const float *g, const float *b, float eps, float *y, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * D;
        float *yr = y + (size_t)r * D;
        double mean = 0, var = 0;
        for (int j = 0; j < D; j++) mean += xr[j];
        mean /= D;
        for (int j = 0; j < D; j++) {
            double d = xr[j] - mean;
            var += d * d;
        }
        var /= D;
        float rstd = (float)(1.0 / sqrt(var + (double)eps)), m = (float)mean;
        for (int j = 0; j < D; j++) yr[j] = (xr[j] - m) * rstd * g[j] + b[j];
    }
}

/* x += gamma * y (LayerScale + residual). */
static void residual_scale(float *x, const float *y, const float *gamma, int rows, int D, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < D; j++) x[(size_t)r * D + j] += gamma[j] * y[(size_t)r * D + j];
}

/* Patch embedding (Conv2d k = stride = p) as im2col + GEMM:
 * cols [N, 3*p*p] in the weight's (c, ky, kx) order. */
static void im2col_patches(const float *img /*[3,H,W]*/, int H, int W, int p, float *cols, int nt) {
    int gh = H / p, gw = W / p, K = 3 * p * p;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int py = 0; py < gh; py++)
        for (int px = 0; px < gw; px++) {
            float *c = cols + ((size_t)py * gw + px) * K;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < p; ky++)
                    memcpy(c + (ch * p + ky) * p, img + ((size_t)ch * H + (size_t)py * p + ky) * W + (size_t)px * p,
                           sizeof(float) * (size_t)p);
        }
}

/* Attention for head widths other than the fused kernel's 64 (models with
 * D / n_heads != 64, e.g. the small fixtures of other ViT families): one
 * [T, T] score matrix per thread, softmax(q k^T / sqrt(hd)) v per head
 * (dinov2/layers/attention.py), heads in parallel with single-threaded GEMMs. */
static void attention_any_width(const float *qkv, float *o, int T, int D, int n_heads, float *s, int n_threads) {
    int hd = D / n_heads, ld = 3 * D;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int h = 0; h < n_heads; h++) {
        float *sh = s + (size_t)omp_get_thread_num() * T * T;
        const float *q = qkv + h * hd, *k = qkv + D + h * hd, *v = qkv + 2 * D + h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, scale, q, ld, k, ld, 0.0f, sh, T);
        for (int r = 0; r < T; r++) {
            float *row = sh + (size_t)r * T, mx = row[0];
            for (int j = 1; j < T; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0;
            for (int j = 0; j < T; j++) sum += (row[j] = expf(row[j] - mx));
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < T; j++) row[j] *= inv;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, sh, T, v, ld, 0.0f, o + h * hd, D);
    }
}

static float *workspace(ds_vit *vit, size_t n_floats) {
    if (n_floats > vit->work_floats) {
        free(vit->work);
        vit->work = ds_alloc(n_floats, sizeof(float), "ds_vit_forward workspace");
        vit->work_floats = vit->work ? n_floats : 0;
    }
    return vit->work;
}

ds_status ds_vit_forward(ds_vit *vit, const float *input, int B, int H, int W, int n_layers, float *feats, float *cls) {
    if (!vit || !input) return ds_set_error(DS_ERR_ARG, "ds_vit_forward: NULL argument");
    const ds_vit_arch *a = &vit->arch;
    int p = a->patch_size, D = a->embed_dim, R = a->n_registers;
    if (B < 1 || H < p || W < p || H % p || W % p || H > 100 * 1000 || W > 100 * 1000)
        return ds_set_error(DS_ERR_ARG, "ds_vit_forward: input %dx%d (batch %d) must be positive multiples of the patch size %d",
                            H, W, B, p);
    if (n_layers < 1 || n_layers > a->depth)
        return ds_set_error(DS_ERR_ARG, "ds_vit_forward: n_layers %d out of range [1, %d]", n_layers, a->depth);
    int gh = H / p, gw = W / p, N = gh * gw, T = 1 + R + N;
    size_t rows = (size_t)B * T;
    int ffn = a->swiglu ? 2 * a->ffn_hidden : a->ffn_hidden;
    size_t K = (size_t)3 * p * p;
    int nt = ds_resolve_threads(vit->n_threads);
    /* x, xn, o: [rows, D]; qkv: [rows, 3D]; hid: [rows, ffn]; s: attention
     * workspace (src/vit/attention.c); cols: [N, 3p^2]; acc: [B, N, D] (the
     * layer average) */
    const bool fused = D == a->n_heads * 64; /* the fused kernel's head width */
    size_t n_x = rows * D, n_hid = rows * (size_t)ffn,
           n_s = fused ? ds_vit_attention_work_floats(T, D, nt) : (size_t)nt * T * T;
    size_t n_cols = (size_t)N * K;
    size_t n_acc = (size_t)B * N * D;
    size_t total = 6 * n_x + n_hid + DS_MAX(n_s, n_cols) + n_acc;
    if (rows > ((size_t)1 << 31) / (size_t)DS_MAX(D, ffn) || (size_t)T > 65536)
        return ds_set_error(DS_ERR_ARG, "ds_vit_forward: input %dx%d (batch %d) is too large", H, W, B);
    if (!vit->pos_cache || vit->pos_gh != gh || vit->pos_gw != gw) {
        float *pc = ds_alloc((size_t)(1 + N) * D, sizeof(float), "ds_vit_forward");
        if (!pc) return DS_ERR_NOMEM;
        ds_status st = ds_vit_pos_embed_for(a, vit->pos_embed, gh, gw, pc);
        if (st != DS_OK) {
            free(pc);
            return st;
        }
        free(vit->pos_cache);
        vit->pos_cache = pc;
        vit->pos_gh = gh, vit->pos_gw = gw;
    }
    float *ws = workspace(vit, total);
    if (!ws) return DS_ERR_NOMEM;
    bool bf16 = vit->dtype == DS_DTYPE_BF16;
    if (bf16 && vit->gemm_work_threads < nt) {
        free(vit->gemm_work);
        vit->gemm_work = ds_alloc((size_t)nt, DS_GEMM_BF16_WORK_BYTES, "ds_vit_forward workspace");
        vit->gemm_work_threads = vit->gemm_work ? nt : 0;
        if (!vit->gemm_work) return DS_ERR_NOMEM;
    }
    char *gwork = vit->gemm_work;
    float *x = ws, *xn = x + n_x, *qkv = xn + n_x, *o = qkv + 3 * n_x, *hid = o + n_x;
    float *s = hid + n_hid, *cols = s, *acc = s + DS_MAX(n_s, n_cols);

    int blas_prev = ds_blas_set_threads(1); /* see linear(): the OpenMP team splits the GEMMs */
    const float *pos = vit->pos_cache;

    /* tokens: [CLS + pos0, registers, patches + pos] per image */
    for (int bi = 0; bi < B; bi++) {
        float *xb = x + (size_t)bi * T * D;
        im2col_patches(input + (size_t)bi * 3 * H * W, H, W, p, cols, nt);
        linear(cols, (int)K, N, (int)K, vit->patch_w, NULL, NULL, vit->patch_b, D, xb + (size_t)(1 + R) * D, ACT_NONE, nt);
        for (int j = 0; j < D; j++) xb[j] = vit->cls_token[j] + pos[j];
        for (int r = 0; r < R; r++) memcpy(xb + (size_t)(1 + r) * D, vit->reg_tokens + (size_t)r * D, sizeof(float) * D);
        for (int t = 0; t < N; t++)
            for (int j = 0; j < D; j++) xb[(size_t)(1 + R + t) * D + j] += pos[(size_t)(1 + t) * D + j];
    }
    if (feats) memset(acc, 0, sizeof(float) * n_acc);

    for (int li = 0; li < a->depth; li++) {
        const vit_block *b = &vit->blocks[li];
        layer_norm(x, (int)rows, D, b->norm1_w, b->norm1_b, a->ln_eps, xn, nt);
        linear_per_image(xn, D, B, T, D, b->wqkv, bf16 ? &b->wqkv16 : NULL, gwork, b->bqkv, 3 * D, qkv, ACT_NONE, nt);
        for (int bi = 0; bi < B; bi++)
            (fused ? ds_vit_attention : attention_any_width)(qkv + (size_t)bi * T * 3 * D, o + (size_t)bi * T * D, T, D,
                                                              a->n_heads, s, nt);
        linear_per_image(o, D, B, T, D, b->proj_w, bf16 ? &b->proj16 : NULL, gwork, b->proj_b, D, xn, ACT_NONE, nt);
        residual_scale(x, xn, b->ls1, (int)rows, D, nt);

        layer_norm(x, (int)rows, D, b->norm2_w, b->norm2_b, a->ln_eps, xn, nt);
        int Hd = a->ffn_hidden;
        if (a->swiglu) {
            /* SwiGLUFFN: w3(silu(x1) * x2); the product sits in the first half
             * of each hid row, so w3 reads rows 2*Hd apart */
            linear_per_image(xn, D, B, T, D, b->fc1_w, bf16 ? &b->fc1_16 : NULL, gwork, b->fc1_b, 2 * Hd, hid, ACT_SWIGLU,
                             nt);
            linear_per_image(hid, 2 * Hd, B, T, Hd, b->fc2_w, bf16 ? &b->fc2_16 : NULL, gwork, b->fc2_b, D, xn, ACT_NONE,
                             nt);
        } else {
            linear_per_image(xn, D, B, T, D, b->fc1_w, bf16 ? &b->fc1_16 : NULL, gwork, b->fc1_b, Hd, hid, ACT_GELU, nt);
            linear_per_image(hid, Hd, B, T, Hd, b->fc2_w, bf16 ? &b->fc2_16 : NULL, gwork, b->fc2_b, D, xn, ACT_NONE, nt);
        }
        residual_scale(x, xn, b->ls2, (int)rows, D, nt);

        bool last = li == a->depth - 1;
        if ((feats && li >= a->depth - n_layers) || (cls && last)) {
            layer_norm(x, (int)rows, D, vit->norm_w, vit->norm_b, a->ln_eps, xn, nt);
            if (feats && li >= a->depth - n_layers) {
                for (int bi = 0; bi < B; bi++) {
                    const float *src = xn + ((size_t)bi * T + 1 + R) * D;
                    float *dst = acc + (size_t)bi * N * D;
                    for (size_t i = 0; i < (size_t)N * D; i++) dst[i] += src[i];
                }
            }
            if (cls && last)
                for (int bi = 0; bi < B; bi++) memcpy(cls + (size_t)bi * D, xn + (size_t)bi * T * D, sizeof(float) * D);
        }
    }
    if (feats) {
        float inv = 1.0f / (float)n_layers;
        for (size_t i = 0; i < n_acc; i++) feats[i] = acc[i] * inv;
    }
    ds_blas_set_threads(blas_prev);
    return DS_OK;
}
