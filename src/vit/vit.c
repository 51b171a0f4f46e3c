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
    int n_bound; /* tensors bound so far: every tensor of the file must be used */
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

/* Looks up a tensor under the official or the Hugging Face name (printf
 * formats taking the block index), checks its shape and returns a f32 view. */
static ds_status get(ds_vit *vit, const char *official, const char *hf, int blk, int n_dims, int64_t d0, int64_t d1,
                     int64_t d2, int64_t d3, const float **out) {
    char name[160];
    snprintf(name, sizeof name, vit->arch.hf_names ? hf : official, blk);
    int64_t shape[4] = {d0, d1, d2, d3};
    const ds_tensor *t = NULL;
    ds_status st = expect(vit->weights, name, n_dims, shape, &t);
    if (st != DS_OK) return st;
    vit->n_bound++;
    *out = f32_view(vit, t);
    return *out ? DS_OK : DS_ERR_NOMEM;
}

static bool has(const ds_weights *w, const char *fmt, int blk) {
    char name[160];
    snprintf(name, sizeof name, fmt, blk);
    return ds_weights_find(w, name) != NULL;
}

/* Infers embed dim, depth, heads, patch size, registers, FFN kind and width,
 * and the position grid from the tensors (dinov2/hub/backbones.py builds
 * ViT-S/B/L/g with heads = D/64, patch 14, img_size 518). */
static ds_status infer_arch(ds_vit *vit) {
    const ds_weights *w = vit->weights;
    ds_vit_arch *a = &vit->arch;
    const char *path = ds_weights_path(w);
    const ds_tensor *cls = ds_weights_find(w, "cls_token");
    a->hf_names = 0;
    if (!cls) {
        cls = ds_weights_find(w, "embeddings.cls_token");
        a->hf_names = 1;
    }
    if (!cls)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_vit_create: '%s' is not a DINOv2 checkpoint: no 'cls_token' or 'embeddings.cls_token'",
                            path);
    if (cls->n_dims != 3 || cls->shape[0] != 1 || cls->shape[1] != 1 || cls->shape[2] < 64 || cls->shape[2] % 64) {
        char got[96];
        fmt_shape(got, sizeof got, cls->shape, cls->n_dims);
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': '%s' has shape %s, expected [1,1,D] with D a multiple of 64",
                            path, cls->name, got);
    }
    a->embed_dim = (int)cls->shape[2];
    a->n_heads = a->embed_dim / 64;
    const char *n1 = a->hf_names ? "encoder.layer.%d.norm1.weight" : "blocks.%d.norm1.weight";
    a->depth = 0;
    while (a->depth < 10000 && has(w, n1, a->depth)) a->depth++;
    if (a->depth == 0) return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': no transformer blocks found", path);

    const ds_tensor *pe = ds_weights_find(w, a->hf_names ? "embeddings.patch_embeddings.projection.weight"
                                                        : "patch_embed.proj.weight");
    if (!pe || pe->n_dims != 4 || pe->shape[1] != 3 || pe->shape[2] != pe->shape[3] || pe->shape[2] < 1 ||
        pe->shape[2] > 64)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': patch embedding weight missing or not [D,3,p,p]", path);
    a->patch_size = (int)pe->shape[2];

    const ds_tensor *pos = ds_weights_find(w, a->hf_names ? "embeddings.position_embeddings" : "pos_embed");
    if (!pos || pos->n_dims != 3 || pos->shape[0] != 1 || pos->shape[1] < 2)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': position embedding missing or not [1,1+M*M,D]", path);
    int64_t npos = pos->shape[1] - 1, M = (int64_t)llround(sqrt((double)npos));
    if (M * M != npos)
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': position embedding has %lld patch positions, not a square grid",
                            path, (long long)npos);
    a->pos_grid = (int)M;

    const ds_tensor *reg = ds_weights_find(w, a->hf_names ? "embeddings.register_tokens" : "register_tokens");
    a->n_registers = 0;
    if (reg) {
        if (reg->n_dims != 3 || reg->shape[0] != 1 || reg->shape[1] < 1 || reg->shape[1] > 64)
            return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': '%s' is not [1,R,D]", path, reg->name);
        a->n_registers = (int)reg->shape[1];
    }
    /* torch.hub: *_reg models interpolate by size with antialias, plain ones
     * by scale factor (n + 0.1)/M without (dinov2/hub/backbones.py). */
    a->interpolate_antialias = a->n_registers > 0;
    a->interpolate_offset = a->n_registers > 0 ? 0.0f : 0.1f;

    const char *w12 = a->hf_names ? "encoder.layer.0.mlp.weights_in.weight" : "blocks.0.mlp.w12.weight";
    const char *fc1 = a->hf_names ? "encoder.layer.0.mlp.fc1.weight" : "blocks.0.mlp.fc1.weight";
    const ds_tensor *f = ds_weights_find(w, w12);
    a->swiglu = f != NULL;
    if (!f) f = ds_weights_find(w, fc1);
    if (!f || f->n_dims != 2 || f->shape[1] != a->embed_dim || f->shape[0] < 1 || (a->swiglu && f->shape[0] % 2))
        return ds_set_error(DS_ERR_SHAPE, "ds_vit_create: '%s': first block's FFN input weight missing or misshapen (expected '%s' or '%s' of [H,%d])",
                            path, fc1, w12, a->embed_dim);
    a->ffn_hidden = (int)(a->swiglu ? f->shape[0] / 2 : f->shape[0]);
    return DS_OK;
}

/* Whether name is one of the tensors bind_weights() reads (only used to name
 * the culprit once the counts disagree). */
static bool is_bound_name(const ds_vit *vit, const char *name) {
    const ds_vit_arch *a = &vit->arch;
    static const char *off_global[] = {"cls_token", "pos_embed", "register_tokens", "mask_token", "patch_embed.proj.weight",
                                       "patch_embed.proj.bias", "norm.weight", "norm.bias"};
    static const char *hf_global[] = {"embeddings.cls_token", "embeddings.position_embeddings", "embeddings.register_tokens",
                                      "embeddings.mask_token", "embeddings.patch_embeddings.projection.weight",
                                      "embeddings.patch_embeddings.projection.bias", "layernorm.weight", "layernorm.bias"};
    static const char *off_block[] = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                      "attn.proj.bias", "ls1.gamma", "ls2.gamma", "norm2.weight", "norm2.bias",
                                      "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "mlp.w12.weight",
                                      "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias"};
    static const char *hf_block[] = {"norm1.weight", "norm1.bias", "attention.attention.query.weight",
                                     "attention.attention.query.bias", "attention.attention.key.weight",
                                     "attention.attention.key.bias", "attention.attention.value.weight",
                                     "attention.attention.value.bias", "attention.output.dense.weight",
                                     "attention.output.dense.bias", "layer_scale1.lambda1", "layer_scale2.lambda1",
                                     "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                                     "mlp.fc2.bias", "mlp.weights_in.weight", "mlp.weights_in.bias",
                                     "mlp.weights_out.weight", "mlp.weights_out.bias"};
    const char **g = a->hf_names ? hf_global : off_global;
    for (int i = 0; i < 8; i++)
        if (!strcmp(name, g[i])) return true;
    const char *prefix = a->hf_names ? "encoder.layer." : "blocks.";
    size_t pl = strlen(prefix);
    if (strncmp(name, prefix, pl) != 0) return false;
    char *end;
    long blk = strtol(name + pl, &end, 10);
    if (end == name + pl || *end != '.' || blk < 0 || blk >= a->depth) return false;
    const char **b = a->hf_names ? hf_block : off_block;
    int nb = a->hf_names ? (int)(sizeof hf_block / sizeof *hf_block) : (int)(sizeof off_block / sizeof *off_block);
    for (int i = 0; i < nb; i++)
        if (!strcmp(end + 1, b[i])) return true;
    return false;
}

static ds_status bind_weights(ds_vit *vit) {
    const ds_vit_arch *a = &vit->arch;
    int64_t D = a->embed_dim, p = a->patch_size, M = a->pos_grid, Hd = a->ffn_hidden;
    ds_status st;
#define GET(off, hf, blk, nd, d0, d1, d2, d3, dst)                                 \
    do {                                                                           \
        if ((st = get(vit, off, hf, blk, nd, d0, d1, d2, d3, dst)) != DS_OK) return st; \
    } while (0)
    GET("cls_token", "embeddings.cls_token", 0, 3, 1, 1, D, 0, &vit->cls_token);
    GET("pos_embed", "embeddings.position_embeddings", 0, 3, 1, 1 + M * M, D, 0, &vit->pos_embed);
    if (a->n_registers)
        GET("register_tokens", "embeddings.register_tokens", 0, 3, 1, a->n_registers, D, 0, &vit->reg_tokens);
    GET("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight", 0, 4, D, 3, p, p, &vit->patch_w);
    GET("patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias", 0, 1, D, 0, 0, 0, &vit->patch_b);
    GET("norm.weight", "layernorm.weight", 0, 1, D, 0, 0, 0, &vit->norm_w);
    GET("norm.bias", "layernorm.bias", 0, 1, D, 0, 0, 0, &vit->norm_b);
    for (int i = 0; i < a->depth; i++) {
        vit_block *b = &vit->blocks[i];
        GET("blocks.%d.norm1.weight", "encoder.layer.%d.norm1.weight", i, 1, D, 0, 0, 0, &b->norm1_w);
        GET("blocks.%d.norm1.bias", "encoder.layer.%d.norm1.bias", i, 1, D, 0, 0, 0, &b->norm1_b);
        if (a->hf_names) {
            /* HF splits the fused projection into query/key/value; stitch them
             * back so that one GEMM computes all three */
            const char *part[3] = {"query", "key", "value"};
            float *w3 = owned_buffer(vit, (size_t)3 * D * D), *b3 = owned_buffer(vit, (size_t)3 * D);
            if (!w3 || !b3) return DS_ERR_NOMEM;
            for (int j = 0; j < 3; j++) {
                char wn[96], bn[96];
                const float *pw, *pb;
                snprintf(wn, sizeof wn, "encoder.layer.%%d.attention.attention.%s.weight", part[j]);
                snprintf(bn, sizeof bn, "encoder.layer.%%d.attention.attention.%s.bias", part[j]);
                GET("", wn, i, 2, D, D, 0, 0, &pw);
                GET("", bn, i, 1, D, 0, 0, 0, &pb);
                memcpy(w3 + (size_t)j * D * D, pw, sizeof(float) * (size_t)(D * D));
                memcpy(b3 + (size_t)j * D, pb, sizeof(float) * (size_t)D);
            }
            b->wqkv = w3, b->bqkv = b3;
        } else {
            /* fused qkv (Attention.forward reshapes to (B, N, 3, heads, hd)) */
            GET("blocks.%d.attn.qkv.weight", "", i, 2, 3 * D, D, 0, 0, &b->wqkv);
            GET("blocks.%d.attn.qkv.bias", "", i, 1, 3 * D, 0, 0, 0, &b->bqkv);
        }
        GET("blocks.%d.attn.proj.weight", "encoder.layer.%d.attention.output.dense.weight", i, 2, D, D, 0, 0, &b->proj_w);
        GET("blocks.%d.attn.proj.bias", "encoder.layer.%d.attention.output.dense.bias", i, 1, D, 0, 0, 0, &b->proj_b);
        GET("blocks.%d.ls1.gamma", "encoder.layer.%d.layer_scale1.lambda1", i, 1, D, 0, 0, 0, &b->ls1);
        GET("blocks.%d.ls2.gamma", "encoder.layer.%d.layer_scale2.lambda1", i, 1, D, 0, 0, 0, &b->ls2);
        GET("blocks.%d.norm2.weight", "encoder.layer.%d.norm2.weight", i, 1, D, 0, 0, 0, &b->norm2_w);
        GET("blocks.%d.norm2.bias", "encoder.layer.%d.norm2.bias", i, 1, D, 0, 0, 0, &b->norm2_b);
        if (a->swiglu) {
            GET("blocks.%d.mlp.w12.weight", "encoder.layer.%d.mlp.weights_in.weight", i, 2, 2 * Hd, D, 0, 0, &b->fc1_w);
            GET("blocks.%d.mlp.w12.bias", "encoder.layer.%d.mlp.weights_in.bias", i, 1, 2 * Hd, 0, 0, 0, &b->fc1_b);
            GET("blocks.%d.mlp.w3.weight", "encoder.layer.%d.mlp.weights_out.weight", i, 2, D, Hd, 0, 0, &b->fc2_w);
            GET("blocks.%d.mlp.w3.bias", "encoder.layer.%d.mlp.weights_out.bias", i, 1, D, 0, 0, 0, &b->fc2_b);
        } else {
            GET("blocks.%d.mlp.fc1.weight", "encoder.layer.%d.mlp.fc1.weight", i, 2, Hd, D, 0, 0, &b->fc1_w);
            GET("blocks.%d.mlp.fc1.bias", "encoder.layer.%d.mlp.fc1.bias", i, 1, Hd, 0, 0, 0, &b->fc1_b);
            GET("blocks.%d.mlp.fc2.weight", "encoder.layer.%d.mlp.fc2.weight", i, 2, D, Hd, 0, 0, &b->fc2_w);
            GET("blocks.%d.mlp.fc2.bias", "encoder.layer.%d.mlp.fc2.bias", i, 1, D, 0, 0, 0, &b->fc2_b);
        }
    }
#undef GET
    /* A tensor nothing uses means a file we misread (a block without its
     * norm1, a renamed or extra layer): refuse it rather than ignore it. The
     * mask token (used in training only) is the one expected leftover. */
    int expected = vit->n_bound + (ds_weights_find(vit->weights, a->hf_names ? "embeddings.mask_token" : "mask_token") != NULL);
    if (ds_weights_count(vit->weights) != expected) {
        for (int i = 0; i < ds_weights_count(vit->weights); i++) {
            const char *name = ds_weights_get(vit->weights, i)->name;
            if (!is_bound_name(vit, name))
                return ds_set_error(DS_ERR_FORMAT, "ds_vit_create: '%s': tensor '%s' is not part of a %d-block DINOv2 ViT",
                                    ds_weights_path(vit->weights), name, a->depth);
        }
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
    ds_status st = infer_arch(vit);
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

/* LayerNorm over the last dim, eps 1e-6 (DINOv2 uses partial(nn.LayerNorm,
 * eps=1e-6)); biased variance as torch. Accumulates in double. */
static void layer_norm(const float *x, int rows, int D, const float *g, const float *b, float *y, int nt) {
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
        float rstd = (float)(1.0 / sqrt(var + 1e-6)), m = (float)mean;
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
    size_t n_x = rows * D, n_hid = rows * (size_t)ffn, n_s = ds_vit_attention_work_floats(T, D, nt);
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
        layer_norm(x, (int)rows, D, b->norm1_w, b->norm1_b, xn, nt);
        linear_per_image(xn, D, B, T, D, b->wqkv, bf16 ? &b->wqkv16 : NULL, gwork, b->bqkv, 3 * D, qkv, ACT_NONE, nt);
        for (int bi = 0; bi < B; bi++)
            ds_vit_attention(qkv + (size_t)bi * T * 3 * D, o + (size_t)bi * T * D, T, D, a->n_heads, s, nt);
        linear_per_image(o, D, B, T, D, b->proj_w, bf16 ? &b->proj16 : NULL, gwork, b->proj_b, D, xn, ACT_NONE, nt);
        residual_scale(x, xn, b->ls1, (int)rows, D, nt);

        layer_norm(x, (int)rows, D, b->norm2_w, b->norm2_b, xn, nt);
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
            layer_norm(x, (int)rows, D, vit->norm_w, vit->norm_b, xn, nt);
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
