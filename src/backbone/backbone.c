/* Backbone dispatch: detects the model kind from the tensors of the weights
 * file and forwards to the matching implementation (src/vit for the ViTs:
 * DINOv2, timm, open_clip trunks, HF ViTModel/Dinov2Model; src/cnn for
 * MobileNetV2 and ResNets). For ViTs, what the tensors cannot tell comes from
 * a preset (presets.c) and the config files next to the weights (config.c). */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backbone/backbone_internal.h"
#include "cnn/cnn_internal.h"
#include "core/gemm_bf16.h"
#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/vit.h"
#include "dinoscope/weights.h"

struct ds_backbone {
    ds_backbone_kind kind;
    char *path;
    ds_weights *weights; /* the ViT's tensors are views into it; NULL for the CNNs, which copy theirs */
    ds_vit *vit;
    ds_cnn *cnn;
    const ds_backbone_preset *preset;
    float mean[3], std[3]; /* ViT normalisation */
    int native_size;
    int n_layers;          /* default last blocks averaged */
    ds_embed_rule embed;
    ds_dtype dtype;        /* compute type in use */
    char desc[DS_BACKBONE_DESCRIBE_MAX];
};

void ds_backbone_free(ds_backbone *bb) {
    if (!bb) return;
    ds_vit_free(bb->vit);
    ds_cnn_free(bb->cnn);
    ds_weights_free(bb->weights);
    free(bb->path);
    free(bb);
}

static bool has_suffix_tensor(const ds_weights *w, const char *suffix) {
    size_t m = strlen(suffix);
    for (int i = 0; i < ds_weights_count(w); i++) {
        const char *n = ds_weights_get(w, i)->name;
        size_t k = strlen(n);
        if (k >= m && !strcmp(n + k - m, suffix)) return true;
    }
    return false;
}

static const char *mlp_name(ds_vit_mlp m) {
    return m == DS_VIT_MLP_SWIGLU ? "swiglu" : m == DS_VIT_MLP_SWIGLU_PACKED ? "swiglu-packed"
                                   : m == DS_VIT_MLP_SWIGLU_SPLIT              ? "swiglu-split"
                                                                               : "mlp";
}

/* Builds the ViT of bb->weights: heads, eps and interpolation rule from the
 * config next to it, else the preset, else the tensors; normalisation and
 * size from the preset, else the config, else ImageNet / 518. */
static ds_status load_vit(ds_backbone *bb, int n_threads, ds_dtype dtype) {
    ds_vit_config cfg;
    ds_status st = ds_vit_config_read(bb->path, &cfg);
    if (st != DS_OK) return st;
    const ds_backbone_preset *pr = bb->preset;
    bool hf = has_suffix_tensor(bb->weights, "embeddings.cls_token");
    ds_vit_params vp = {.n_threads = n_threads, .dtype = dtype};
    vp.n_heads = cfg.n_heads ? cfg.n_heads : pr ? pr->n_heads : 0;
    vp.ln_eps = cfg.ln_eps;
    vp.pos_rule = cfg.pos_rule;
    if (pr && !cfg.source[0]) vp.pos_rule = hf ? (pr->hf_pos ? DS_VIT_POS_HF : DS_VIT_POS_AUTO)
                                               : (pr->timm_pos ? DS_VIT_POS_TIMM : DS_VIT_POS_AUTO);
    /* a transformers config next to official-named weights (RAD-DINO's
     * backbone_compatible file) says nothing of their implementation */
    if (cfg.pos_rule == DS_VIT_POS_HF && !hf) vp.pos_rule = DS_VIT_POS_AUTO;
    if ((st = ds_vit_create(bb->weights, &vp, &bb->vit)) != DS_OK) return st;
    const ds_vit_arch *a = ds_vit_get_arch(bb->vit);
    if (cfg.embed_dim && cfg.embed_dim != a->embed_dim)
        return ds_set_error(DS_ERR_MISMATCH, "ds_backbone_load: '%s': the %s next to it describes D=%d, the weights have D=%d",
                            bb->path, cfg.source, cfg.embed_dim, a->embed_dim);
    bb->kind = DS_BACKBONE_DINOV2;
    memcpy(bb->mean, DS_IMAGENET_MEAN, sizeof bb->mean);
    memcpy(bb->std, DS_IMAGENET_STD, sizeof bb->std);
    if (cfg.has_norm) memcpy(bb->mean, cfg.mean, sizeof bb->mean), memcpy(bb->std, cfg.std, sizeof bb->std);
    bb->native_size = cfg.input_size && cfg.input_size % a->patch_size == 0 ? cfg.input_size : 518;
    if (!cfg.input_size && a->patch_size != 14) bb->native_size = 224;
    bb->n_layers = 4;
    bb->embed = DS_EMBED_CLS;
    if (pr) {
        memcpy(bb->mean, pr->mean, sizeof bb->mean);
        memcpy(bb->std, pr->std, sizeof bb->std);
        if (pr->input_size % a->patch_size == 0) bb->native_size = pr->input_size;
        bb->n_layers = pr->n_layers < a->depth ? pr->n_layers : a->depth;
        bb->embed = pr->embed;
    }
    if (bb->n_layers > a->depth) bb->n_layers = a->depth;
    /* the identity of the features: DINOv2 files as before, others name
     * their family and everything that differs */
    size_t n = 0, cap = sizeof bb->desc;
    bool plain = a->names == DS_VIT_NAMES_DINOV2 && a->pos_rule == DS_VIT_POS_DINOV2 && a->pos_prefix == 1 &&
                 a->layer_scale && (a->mlp == DS_VIT_MLP_GELU || a->mlp == DS_VIT_MLP_SWIGLU) && !a->prefix[0] &&
                 a->ln_eps == 1e-6f;
    bool hf_plain = a->names == DS_VIT_NAMES_HF_DINOV2 && a->pos_rule == DS_VIT_POS_DINOV2 && a->ln_eps == 1e-6f;
    if (plain || hf_plain) {
        n += (size_t)snprintf(bb->desc + n, cap - n, "dinov2 vit D=%d depth=%d heads=%d patch=%d registers=%d %s hidden=%d",
                              a->embed_dim, a->depth, a->n_heads, a->patch_size, a->n_registers,
                              a->swiglu ? "swiglu" : "mlp", a->ffn_hidden);
    } else {
        const char *fam = a->names == DS_VIT_NAMES_HF_VIT ? "hf vit" : a->names == DS_VIT_NAMES_HF_DINOV2 ? "hf dinov2"
                          : a->prefix[0]                  ? "open_clip timm vit"
                                                          : "timm vit";
        const char *rule = a->pos_rule == DS_VIT_POS_TIMM ? "timm" : a->pos_rule == DS_VIT_POS_HF ? "hf" : "dinov2";
        n += (size_t)snprintf(bb->desc + n, cap - n,
                              "%s D=%d depth=%d heads=%d patch=%d registers=%d %s hidden=%d pos=%s/%d%s ls=%d eps=%g",
                              fam, a->embed_dim, a->depth, a->n_heads, a->patch_size, a->n_registers, mlp_name(a->mlp),
                              a->ffn_hidden, rule, a->pos_prefix, a->pos_prefix == 0 ? "(no_embed_class)" : "",
                              a->layer_scale, (double)a->ln_eps);
    }
    if (pr && n < cap) n += (size_t)snprintf(bb->desc + n, cap - n, " preset=%s", pr->name);
    if (n < cap && memcmp(bb->mean, DS_IMAGENET_MEAN, sizeof bb->mean) | memcmp(bb->std, DS_IMAGENET_STD, sizeof bb->std))
        n += (size_t)snprintf(bb->desc + n, cap - n, " mean=%.6g,%.6g,%.6g std=%.6g,%.6g,%.6g", (double)bb->mean[0],
                              (double)bb->mean[1], (double)bb->mean[2], (double)bb->std[0], (double)bb->std[1],
                              (double)bb->std[2]);
    if (bb->embed == DS_EMBED_CLS_MEAN && n < cap) n += (size_t)snprintf(bb->desc + n, cap - n, " embed=cls+mean");
    bb->dtype = dtype;
    if (dtype == DS_DTYPE_BF16 && n < cap) n += (size_t)snprintf(bb->desc + n, cap - n, " dtype=bf16 (%s)", ds_gemm_bf16_kernel_name());
    return DS_OK;
}

ds_status ds_backbone_load(const char *path, const ds_backbone_params *params, ds_backbone **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_backbone_load: NULL argument");
    ds_backbone *bb = calloc(1, sizeof *bb);
    if (!bb) return ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
    int n_threads = params ? params->n_threads : 0;
    ds_dtype dtype = params ? params->dtype : DS_DTYPE_F32;
    ds_status st = DS_OK;
    if (dtype != DS_DTYPE_F32 && dtype != DS_DTYPE_BF16) {
        st = ds_set_error(DS_ERR_UNSUPPORTED, "ds_backbone_load: compute dtype %d not supported (f32 or bf16)",
                          (int)dtype);
        goto fail;
    }
    if (params && params->preset && params->preset[0] && !(bb->preset = ds_backbone_preset_find(params->preset))) {
        char names[256];
        size_t n = 0;
        for (int i = 0; i < ds_backbone_preset_count() && n < sizeof names; i++)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", ds_backbone_preset_get(i)->name);
        st = ds_set_error(DS_ERR_ARG, "ds_backbone_load: unknown preset '%s' (known: %s)", params->preset, names);
        goto fail;
    }
    st = ds_weights_load(path, &bb->weights);
    if (st != DS_OK) goto fail;
    bb->path = strdup(path);
    if (!bb->path) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
        goto fail;
    }
    if (ds_vit_detect(bb->weights)) {
        if ((st = load_vit(bb, n_threads, dtype)) != DS_OK) goto fail;
    } else if (bb->preset) {
        st = ds_set_error(DS_ERR_ARG, "ds_backbone_load: '%s': preset '%s' is for ViTs (%s), the file holds no ViT",
                          path, bb->preset->name, bb->preset->model);
        goto fail;
    } else if (ds_cnn_detect(bb->weights)) {
        st = ds_cnn_create(bb->weights, n_threads, dtype, &bb->cnn);
        if (st != DS_OK) goto fail;
        bb->kind = ds_cnn_get_kind(bb->cnn) == DS_CNN_MOBILENET_V2 ? DS_BACKBONE_MOBILENET_V2 : DS_BACKBONE_RESNET;
        bb->dtype = ds_cnn_get_dtype(bb->cnn);
        /* the ViT's dtype note, which the model records and score reads back */
        if (bb->dtype == DS_DTYPE_BF16)
            snprintf(bb->desc, sizeof bb->desc, "%s dtype=bf16 (%s)", ds_cnn_describe(bb->cnn), ds_gemm_bf16_kernel_name());
        else snprintf(bb->desc, sizeof bb->desc, "%s", ds_cnn_describe(bb->cnn));
        /* the CNN holds folded copies of what it uses (a WRN-50-2's layer4,
         * 60% of the file, is never needed): release the file's memory */
        ds_weights_free(bb->weights);
        bb->weights = NULL;
    } else {
        st = ds_set_error(DS_ERR_UNSUPPORTED,
                          "ds_backbone_load: '%s': unknown model: no ViT tensors ('cls_token', "
                          "'embeddings.cls_token', 'visual.trunk.cls_token'), no MobileNetV2 ('features.0.0.weight', "
                          "'features.1.conv.0.0.weight') and no ResNet ('conv1.weight', 'layer1.0.conv1.weight')",
                          path);
        goto fail;
    }
    *out = bb;
    return DS_OK;
fail:
    ds_backbone_free(bb);
    return st;
}

ds_backbone_kind ds_backbone_get_kind(const ds_backbone *bb) { return bb->kind; }
const char *ds_backbone_describe(const ds_backbone *bb) { return bb->desc; }
const char *ds_backbone_path(const ds_backbone *bb) { return bb->path; }
ds_dtype ds_backbone_get_dtype(const ds_backbone *bb) { return bb->dtype; }

const char *ds_backbone_dtype_name(ds_dtype dtype) {
    return dtype == DS_DTYPE_BF16 ? "bf16" : dtype == DS_DTYPE_F16 ? "f16" : "f32";
}

ds_status ds_backbone_dtype_parse(const char *name, ds_dtype *out) {
    if (name && !strcmp(name, "f32")) *out = DS_DTYPE_F32;
    else if (name && !strcmp(name, "bf16")) *out = DS_DTYPE_BF16;
    else return ds_set_error(DS_ERR_ARG, "unknown compute dtype '%s' (expected f32 or bf16)", name ? name : "");
    return DS_OK;
}

int ds_backbone_native_size(const ds_backbone *bb) { return bb->vit ? bb->native_size : 224; }
const ds_backbone_preset *ds_backbone_get_preset(const ds_backbone *bb) { return bb->preset; }
int ds_backbone_default_layers(const ds_backbone *bb) { return bb->vit ? bb->n_layers : 1; }
int ds_backbone_embed_dim(const ds_backbone *bb) {
    if (!bb->vit) return 0;
    int D = ds_vit_get_arch(bb->vit)->embed_dim;
    return bb->embed == DS_EMBED_CLS_MEAN ? 2 * D : D;
}

void ds_backbone_mean_std(const ds_backbone *bb, float mean[3], float std[3]) {
    if (bb->cnn) {
        ds_cnn_mean_std(bb->cnn, mean, std);
    } else {
        memcpy(mean, bb->mean, sizeof bb->mean);
        memcpy(std, bb->std, sizeof bb->std);
    }
}

ds_status ds_backbone_embed(ds_backbone *bb, const float *input, int B, int H, int W, float *out) {
    if (!bb->vit) return ds_set_error(DS_ERR_UNSUPPORTED, "ds_backbone_embed: %s has no image embedding", bb->desc);
    int D = ds_vit_get_arch(bb->vit)->embed_dim, gh, gw, d;
    ds_status st = ds_backbone_grid(bb, H, W, &gh, &gw, &d);
    if (st != DS_OK) return st;
    if (bb->embed == DS_EMBED_CLS) return ds_vit_forward(bb->vit, input, B, H, W, 1, NULL, out);
    /* Virchow2: concat(class token, patch tokens.mean(1)) of the final normed
     * output = the last block through the norm, i.e. the 1-layer features */
    size_t N = (size_t)gh * gw;
    float *f = ds_alloc((size_t)B * N * D, sizeof(float), "ds_backbone_embed");
    float *c = ds_alloc((size_t)B * D, sizeof(float), "ds_backbone_embed");
    if (!f || !c) st = DS_ERR_NOMEM;
    if (st == DS_OK) st = ds_vit_forward(bb->vit, input, B, H, W, 1, f, c);
    for (int b = 0; st == DS_OK && b < B; b++) {
        float *o = out + (size_t)b * 2 * D;
        memcpy(o, c + (size_t)b * D, sizeof(float) * (size_t)D);
        for (int j = 0; j < D; j++) {
            double acc = 0;
            for (size_t t = 0; t < N; t++) acc += f[((size_t)b * N + t) * D + j];
            o[D + j] = (float)(acc / (double)N);
        }
    }
    free(f);
    free(c);
    return st;
}

int ds_backbone_stride(const ds_backbone *bb) {
    return bb->vit ? ds_vit_get_arch(bb->vit)->patch_size : DS_CNN_INPUT_MULTIPLE;
}

ds_status ds_backbone_grid(const ds_backbone *bb, int H, int W, int *gh, int *gw, int *D) {
    int s = ds_backbone_stride(bb);
    if (H < s || W < s || H % s || W % s)
        return ds_set_error(DS_ERR_ARG, "input size %dx%d is not a positive multiple of the backbone's %s %d", W, H,
                            bb->vit ? "patch size" : "input stride", s);
    if (bb->vit) {
        *gh = H / s;
        *gw = W / s;
        *D = ds_vit_get_arch(bb->vit)->embed_dim;
    } else {
        *gh = H / DS_CNN_FEATURE_STRIDE;
        *gw = W / DS_CNN_FEATURE_STRIDE;
        *D = ds_cnn_dim(bb->cnn);
    }
    return DS_OK;
}

void ds_backbone_normalize(const ds_backbone *bb, const ds_image *img, float *dst) {
    if (bb->cnn) {
        float mean[3], std[3];
        ds_cnn_mean_std(bb->cnn, mean, std);
        ds_image_to_tensor(img, mean, std, dst);
    } else {
        ds_image_to_tensor(img, bb->mean, bb->std, dst);
    }
}

ds_status ds_backbone_forward(ds_backbone *bb, const float *input, int B, int H, int W, int n_layers, float *feats,
                              float *cls) {
    if (bb->vit) return ds_vit_forward(bb->vit, input, B, H, W, n_layers, feats, cls);
    if (cls)
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_backbone_forward: %s has no CLS token (use the patch features)",
                            bb->desc);
    return ds_cnn_features(bb->cnn, input, B, H, W, feats);
}
