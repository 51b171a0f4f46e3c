/* Backbone dispatch: detects the model kind from the tensors of the weights
 * file and forwards to the matching implementation (src/vit for DINOv2,
 * src/cnn for MobileNetV2 and ResNets). */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn_internal.h"
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
    char desc[192];
};

void ds_backbone_free(ds_backbone *bb) {
    if (!bb) return;
    ds_vit_free(bb->vit);
    ds_cnn_free(bb->cnn);
    ds_weights_free(bb->weights);
    free(bb->path);
    free(bb);
}

ds_status ds_backbone_load(const char *path, const ds_backbone_params *params, ds_backbone **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_backbone_load: NULL argument");
    ds_backbone *bb = calloc(1, sizeof *bb);
    if (!bb) return ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
    int n_threads = params ? params->n_threads : 0;
    ds_status st = ds_weights_load(path, &bb->weights);
    if (st != DS_OK) goto fail;
    bb->path = strdup(path);
    if (!bb->path) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
        goto fail;
    }
    if (ds_vit_detect(bb->weights)) {
        ds_vit_params vp = {.n_threads = n_threads};
        st = ds_vit_create(bb->weights, &vp, &bb->vit);
        if (st != DS_OK) goto fail;
        bb->kind = DS_BACKBONE_DINOV2;
        const ds_vit_arch *a = ds_vit_get_arch(bb->vit);
        snprintf(bb->desc, sizeof bb->desc, "dinov2 vit D=%d depth=%d heads=%d patch=%d registers=%d %s hidden=%d",
                 a->embed_dim, a->depth, a->n_heads, a->patch_size, a->n_registers, a->swiglu ? "swiglu" : "mlp",
                 a->ffn_hidden);
    } else if (ds_cnn_detect(bb->weights)) {
        st = ds_cnn_create(bb->weights, n_threads, &bb->cnn);
        if (st != DS_OK) goto fail;
        bb->kind = ds_cnn_get_kind(bb->cnn) == DS_CNN_MOBILENET_V2 ? DS_BACKBONE_MOBILENET_V2 : DS_BACKBONE_RESNET;
        snprintf(bb->desc, sizeof bb->desc, "%s", ds_cnn_describe(bb->cnn));
        /* the CNN holds folded copies of what it uses (a WRN-50-2's layer4,
         * 60% of the file, is never needed): release the file's memory */
        ds_weights_free(bb->weights);
        bb->weights = NULL;
    } else {
        st = ds_set_error(DS_ERR_UNSUPPORTED,
                          "ds_backbone_load: '%s': unknown model: no DINOv2 tensors ('cls_token' or "
                          "'embeddings.cls_token'), no MobileNetV2 ('features.0.0.weight', "
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

int ds_backbone_native_size(const ds_backbone *bb) { return bb->kind == DS_BACKBONE_DINOV2 ? 518 : 224; }

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
        ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, dst);
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
