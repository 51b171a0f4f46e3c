/* Backbone dispatch: detects the model kind from the tensors of the weights
 * file and forwards to the matching implementation. */
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/vit.h"
#include "dinoscope/weights.h"

struct ds_backbone {
    ds_backbone_kind kind;
    ds_weights *weights;
    ds_vit *vit;
    char desc[160];
};

ds_status ds_backbone_load(const char *path, const ds_backbone_params *params, ds_backbone **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_backbone_load: NULL argument");
    ds_backbone *bb = calloc(1, sizeof *bb);
    if (!bb) return ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
    ds_status st = ds_weights_load(path, &bb->weights);
    if (st != DS_OK) goto fail;
    if (ds_weights_find(bb->weights, "cls_token") || ds_weights_find(bb->weights, "embeddings.cls_token")) {
        ds_vit_params vp = {.n_threads = params ? params->n_threads : 0};
        st = ds_vit_create(bb->weights, &vp, &bb->vit);
        if (st != DS_OK) goto fail;
        bb->kind = DS_BACKBONE_DINOV2;
        const ds_vit_arch *a = ds_vit_get_arch(bb->vit);
        snprintf(bb->desc, sizeof bb->desc, "dinov2 vit D=%d depth=%d heads=%d patch=%d registers=%d %s hidden=%d",
                 a->embed_dim, a->depth, a->n_heads, a->patch_size, a->n_registers, a->swiglu ? "swiglu" : "mlp",
                 a->ffn_hidden);
    } else {
        st = ds_set_error(DS_ERR_UNSUPPORTED,
                          "ds_backbone_load: '%s': unknown model: no DINOv2 tensors ('cls_token' or 'embeddings.cls_token')",
                          path);
        goto fail;
    }
    *out = bb;
    return DS_OK;
fail:
    ds_backbone_free(bb);
    return st;
}

void ds_backbone_free(ds_backbone *bb) {
    if (!bb) return;
    ds_vit_free(bb->vit);
    ds_weights_free(bb->weights);
    free(bb);
}

ds_backbone_kind ds_backbone_get_kind(const ds_backbone *bb) { return bb->kind; }
const char *ds_backbone_describe(const ds_backbone *bb) { return bb->desc; }
const char *ds_backbone_path(const ds_backbone *bb) { return ds_weights_path(bb->weights); }

int ds_backbone_stride(const ds_backbone *bb) { return ds_vit_get_arch(bb->vit)->patch_size; }

ds_status ds_backbone_grid(const ds_backbone *bb, int H, int W, int *gh, int *gw, int *D) {
    int s = ds_backbone_stride(bb);
    if (H < s || W < s || H % s || W % s)
        return ds_set_error(DS_ERR_ARG, "input size %dx%d is not a positive multiple of the backbone's patch size %d", W,
                            H, s);
    *gh = H / s;
    *gw = W / s;
    *D = ds_vit_get_arch(bb->vit)->embed_dim;
    return DS_OK;
}

void ds_backbone_normalize(const ds_backbone *bb, const ds_image *img, float *dst) {
    (void)bb;
    ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, dst);
}

ds_status ds_backbone_forward(ds_backbone *bb, const float *input, int B, int H, int W, int n_layers, float *feats,
                              float *cls) {
    return ds_vit_forward(bb->vit, input, B, H, W, n_layers, feats, cls);
}
