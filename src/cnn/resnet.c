/* torchvision ResNets (He et al. 2016) from state_dict names
 * (torchvision/models/resnet.py): resnet18/34 (BasicBlock), resnet50/101/152
 * and wide_resnet50_2/101_2 (Bottleneck, V1.5: the stride on the 3x3),
 * ResNeXt (grouped 3x3) alike. Block type, counts, widths and groups come
 * from the tensor shapes; batch-norm is folded into each conv at load.
 * Only the stem and layer1..3 are built: PatchCore uses layer2 and layer3
 * (layer4 and fc, if present, are ignored).
 *
 * PatchCore features (Roth et al. 2022, "Towards Total Recall in Industrial
 * Anomaly Detection"; reference code amazon-science/patchcore-inspection,
 * src/patchcore/patchcore.py and common.py), with the paper's main setting
 * (IM224_WR50_L2-3_P01_D1024-1024_PS-3_AN-1: layers 2+3, patch size 3,
 * pretrain_embed_dimension = target_embed_dimension = 1024):
 *   1. PatchMaker.patchify: each layer's map is unfolded into 3x3
 *      neighbourhoods (torch.nn.Unfold, padding 1, stride 1; zeros outside)
 *      -> per position a vector [C, 3, 3].
 *   2. _embed: the unfolded layer3 maps (one per (c, ky, kx)) are resized to
 *      layer2's grid with F.interpolate(mode="bilinear", align_corners=False).
 *   3. Preprocessing / MeanMapper: each layer's C*9 vector is reduced to
 *      1024 by F.adaptive_avg_pool1d.
 *   4. Aggregator: the two 1024-vectors, concatenated, are reduced to 1024
 *      by F.adaptive_avg_pool1d again (pairs of neighbours averaged).
 * This is the "local 3x3 average" of the paper's eq. 2 as the code computes
 * it: with C*9 = 9*1024 (layer3 of WRN-50) a bin is one channel's 3x3 mean,
 * i.e. AvgPool2d(3, 1, 1) as anomalib implements it; for other widths the
 * bins straddle channels exactly as in the reference code, which we follow. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn_internal.h"

#define RN_LAYERS 3        /* layer1..layer3 */
#define RN_PATCHCORE_DIM 1024

typedef struct {
    cnn_conv conv1, conv2, conv3, down;
    bool has_down;
} rn_block;

struct cnn_resnet {
    cnn_conv stem;
    bool bottleneck;
    rn_block *blocks[RN_LAYERS];
    int n_blocks[RN_LAYERS + 1]; /* layer1..3, and layer4's count (naming only) */
    int out_ch[RN_LAYERS];
    int width[RN_LAYERS];        /* the 3x3 conv's channels */
    int groups;
};

static const char *CALLER = "ds_backbone_load (resnet)";

bool cnn_resnet_detect(const ds_weights *w) {
    return ds_weights_find(w, "conv1.weight") && ds_weights_find(w, "layer1.0.conv1.weight");
}

void cnn_resnet_free(cnn_resnet *r) {
    if (!r) return;
    cnn_conv_free(&r->stem);
    for (int l = 0; l < RN_LAYERS; l++) {
        for (int i = 0; r->blocks[l] && i < r->n_blocks[l]; i++) {
            rn_block *b = &r->blocks[l][i];
            cnn_conv_free(&b->conv1);
            cnn_conv_free(&b->conv2);
            cnn_conv_free(&b->conv3);
            cnn_conv_free(&b->down);
        }
        free(r->blocks[l]);
    }
    free(r);
}

static const ds_tensor *find4(const ds_weights *w, const char *fmt, int l, int i) {
    char name[96];
    snprintf(name, sizeof name, fmt, l, i);
    const ds_tensor *t = ds_weights_find(w, name);
    return t && t->n_dims == 4 && t->shape[0] > 0 && t->shape[0] <= 65536 && t->shape[1] > 0 ? t : NULL;
}

static int count_blocks(const ds_weights *w, int l) {
    int n = 0;
    while (n < 1000 && find4(w, "layer%d.%d.conv1.weight", l, n)) n++;
    return n;
}

/* One block of layer l (1-based), index i, input channels cin. */
static ds_status load_block(cnn_resnet *r, const ds_weights *w, int l, int i, int cin, int *cout) {
    rn_block *b = &r->blocks[l - 1][i];
    int stride = i == 0 && l > 1 ? 2 : 1; /* ResNet._make_layer: stride on the first block of layers 2-4 */
    char cn[64], bn[64];
    ds_status st;
    const ds_tensor *c1 = find4(w, "layer%d.%d.conv1.weight", l, i);
    const char *path = ds_weights_path(w);
    if (!c1) return ds_set_error(DS_ERR_FORMAT, "%s: '%s': missing conv 'layer%d.%d.conv1.weight'", CALLER, path, l, i);
    int width = (int)c1->shape[0], out;
    if (r->bottleneck) {
        /* Bottleneck: conv1 1x1 -> conv2 3x3 (stride, groups) -> conv3 1x1
         * (x4), each with BN; ReLU after bn1, bn2 and after the add */
        const ds_tensor *c2 = find4(w, "layer%d.%d.conv2.weight", l, i), *c3 = find4(w, "layer%d.%d.conv3.weight", l, i);
        if (!c2 || !c3)
            return ds_set_error(DS_ERR_FORMAT, "%s: '%s': missing 'layer%d.%d.conv2.weight' or '.conv3.weight' of a bottleneck block",
                                CALLER, path, l, i);
        int groups = c2->shape[1] > 0 && width % c2->shape[1] == 0 ? width / (int)c2->shape[1] : 1;
        out = (int)c3->shape[0];
        snprintf(cn, sizeof cn, "layer%d.%d.conv1", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.bn1", l, i);
        if ((st = cnn_conv_load(&b->conv1, w, CALLER, cn, bn, cin, width, 1, 1, 1, CNN_PAD_SYMMETRIC, CNN_ACT_RELU)) != DS_OK)
            return st;
        snprintf(cn, sizeof cn, "layer%d.%d.conv2", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.bn2", l, i);
        if ((st = cnn_conv_load(&b->conv2, w, CALLER, cn, bn, width, width, 3, stride, groups, CNN_PAD_SYMMETRIC,
                                CNN_ACT_RELU)) != DS_OK)
            return st;
        snprintf(cn, sizeof cn, "layer%d.%d.conv3", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.bn3", l, i);
        if ((st = cnn_conv_load(&b->conv3, w, CALLER, cn, bn, width, out, 1, 1, 1, CNN_PAD_SYMMETRIC, CNN_ACT_RELU)) != DS_OK)
            return st;
        if (l == 1 && i == 0) r->groups = groups;
    } else {
        /* BasicBlock: conv1 3x3 (stride) -> conv2 3x3, each with BN; ReLU
         * after bn1 and after the add */
        out = width;
        snprintf(cn, sizeof cn, "layer%d.%d.conv1", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.bn1", l, i);
        if ((st = cnn_conv_load(&b->conv1, w, CALLER, cn, bn, cin, width, 3, stride, 1, CNN_PAD_SYMMETRIC, CNN_ACT_RELU)) != DS_OK)
            return st;
        snprintf(cn, sizeof cn, "layer%d.%d.conv2", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.bn2", l, i);
        if ((st = cnn_conv_load(&b->conv2, w, CALLER, cn, bn, width, out, 3, 1, 1, CNN_PAD_SYMMETRIC, CNN_ACT_RELU)) != DS_OK)
            return st;
    }
    b->has_down = find4(w, "layer%d.%d.downsample.0.weight", l, i) != NULL;
    if (b->has_down) {
        /* downsample = Sequential(conv1x1(stride), BN): no activation */
        snprintf(cn, sizeof cn, "layer%d.%d.downsample.0", l, i);
        snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", l, i);
        if ((st = cnn_conv_load(&b->down, w, CALLER, cn, bn, cin, out, 1, stride, 1, CNN_PAD_SYMMETRIC, CNN_ACT_NONE)) != DS_OK)
            return st;
    } else if (stride != 1 || cin != out) {
        return ds_set_error(DS_ERR_FORMAT,
                            "%s: '%s': block layer%d.%d changes the shape (%d->%d channels, stride %d) but has no "
                            "'layer%d.%d.downsample.0.weight'",
                            CALLER, path, l, i, cin, out, stride, l, i);
    }
    if (i == 0) r->width[l - 1] = width;
    *cout = out;
    return DS_OK;
}

ds_status cnn_resnet_create(const ds_weights *w, cnn_resnet **out) {
    cnn_resnet *r = calloc(1, sizeof *r);
    if (!r) return ds_set_error(DS_ERR_NOMEM, "%s: out of memory", CALLER);
    const char *path = ds_weights_path(w);
    ds_status st;
    const ds_tensor *c1 = ds_weights_find(w, "conv1.weight");
    if (!c1 || c1->n_dims != 4 || c1->shape[0] < 1 || c1->shape[0] > 65536) {
        st = ds_set_error(DS_ERR_SHAPE, "%s: '%s': 'conv1.weight' is not a [C,3,7,7] conv", CALLER, path);
        goto fail;
    }
    int c = (int)c1->shape[0];
    /* stem: conv 7x7 stride 2 padding 3, bn1, ReLU, then max-pool 3x3/2/1 */
    if ((st = cnn_conv_load(&r->stem, w, CALLER, "conv1", "bn1", 3, c, 7, 2, 1, CNN_PAD_SYMMETRIC, CNN_ACT_RELU)) != DS_OK)
        goto fail;
    r->bottleneck = ds_weights_find(w, "layer1.0.conv3.weight") != NULL;
    r->groups = 1;
    for (int l = 1; l <= RN_LAYERS + 1; l++) r->n_blocks[l - 1] = count_blocks(w, l);
    for (int l = 1; l <= RN_LAYERS; l++) {
        if (r->n_blocks[l - 1] == 0) {
            st = ds_set_error(DS_ERR_FORMAT, "%s: '%s': no blocks in layer%d (no 'layer%d.0.conv1.weight')", CALLER, path, l, l);
            goto fail;
        }
        r->blocks[l - 1] = calloc((size_t)r->n_blocks[l - 1], sizeof(rn_block));
        if (!r->blocks[l - 1]) {
            st = ds_set_error(DS_ERR_NOMEM, "%s: out of memory", CALLER);
            goto fail;
        }
        for (int i = 0; i < r->n_blocks[l - 1]; i++)
            if ((st = load_block(r, w, l, i, c, &c)) != DS_OK) {
                r->n_blocks[l - 1] = i + 1; /* free what was loaded */
                goto fail;
            }
        r->out_ch[l - 1] = c;
    }
    *out = r;
    return DS_OK;
fail:
    cnn_resnet_free(r);
    return st;
}

int cnn_resnet_channels(const cnn_resnet *r, int layer) { return layer >= 1 && layer <= RN_LAYERS ? r->out_ch[layer - 1] : 0; }

ds_status cnn_resnet_pack_bf16(cnn_resnet *r) {
    ds_status st = cnn_conv_pack_bf16(&r->stem);
    for (int l = 0; l < RN_LAYERS; l++)
        for (int i = 0; st == DS_OK && i < r->n_blocks[l]; i++) {
            rn_block *b = &r->blocks[l][i];
            st = cnn_conv_pack_bf16(&b->conv1);
            if (st == DS_OK) st = cnn_conv_pack_bf16(&b->conv2);
            if (st == DS_OK && r->bottleneck) st = cnn_conv_pack_bf16(&b->conv3);
            if (st == DS_OK && b->has_down) st = cnn_conv_pack_bf16(&b->down);
        }
    return st;
}

void cnn_resnet_describe(const cnn_resnet *r, char *buf, size_t n) {
    /* torchvision's names where the shapes are those of a known model */
    static const struct {
        const char *name;
        bool bottleneck;
        int blocks[4], width1, groups;
    } known[] = {
        {"resnet18", false, {2, 2, 2, 2}, 64, 1},          {"resnet34", false, {3, 4, 6, 3}, 64, 1},
        {"resnet50", true, {3, 4, 6, 3}, 64, 1},           {"resnet101", true, {3, 4, 23, 3}, 64, 1},
        {"resnet152", true, {3, 8, 36, 3}, 64, 1},         {"wide_resnet50_2", true, {3, 4, 6, 3}, 128, 1},
        {"wide_resnet101_2", true, {3, 4, 23, 3}, 128, 1}, {"resnext50_32x4d", true, {3, 4, 6, 3}, 128, 32},
    };
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        bool same = known[k].bottleneck == r->bottleneck && known[k].width1 == r->width[0] &&
                    known[k].groups == r->groups && r->stem.cout == 64;
        for (int l = 0; l < 4 && same; l++) same = known[k].blocks[l] == r->n_blocks[l];
        if (same) {
            snprintf(buf, n, "%s layer2+layer3 D=%d", known[k].name, RN_PATCHCORE_DIM);
            return;
        }
    }
    snprintf(buf, n, "resnet %s blocks=%d,%d,%d stem=%d widths=%d,%d,%d groups=%d layer2+layer3 D=%d",
             r->bottleneck ? "bottleneck" : "basic", r->n_blocks[0], r->n_blocks[1], r->n_blocks[2], r->stem.cout,
             r->width[0], r->width[1], r->width[2], r->groups, RN_PATCHCORE_DIM);
}

/* Stem and layers 1..3 of one image; bufs[0], bufs[1] hold block outputs in
 * turn, bufs[2], bufs[3] the inner convs, bufs[4] the downsampled identity.
 * Layer l's output is copied into out[l-1] when non-NULL. *l3 gets the
 * buffer holding layer3's output. */
static void run_layers(const cnn_resnet *r, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                       float *const out[RN_LAYERS], int hs[RN_LAYERS], int ws[RN_LAYERS], float **l3) {
    int h, w, h2, w2;
    cnn_conv_forward(&r->stem, s, x, H, W, bufs[0], NULL, &h, &w);
    cnn_maxpool(s, bufs[0], r->stem.cout, h, w, 3, 2, 1, bufs[1], &h2, &w2); /* torchvision: MaxPool2d(3, 2, 1) */
    float *cur = bufs[1];
    h = h2, w = w2;
    for (int l = 0; l < RN_LAYERS; l++) {
        for (int i = 0; i < r->n_blocks[l]; i++) {
            const rn_block *b = &r->blocks[l][i];
            float *dst = cur == bufs[0] ? bufs[1] : bufs[0];
            const float *id = cur;
            if (b->has_down) {
                cnn_conv_forward(&b->down, s, cur, h, w, bufs[4], NULL, &h2, &w2);
                id = bufs[4];
            }
            cnn_conv_forward(&b->conv1, s, cur, h, w, bufs[2], NULL, &h2, &w2);
            if (r->bottleneck) {
                int h3, w3;
                cnn_conv_forward(&b->conv2, s, bufs[2], h2, w2, bufs[3], NULL, &h3, &w3);
                cnn_conv_forward(&b->conv3, s, bufs[3], h3, w3, dst, id, &h2, &w2);
            } else {
                int h3, w3;
                cnn_conv_forward(&b->conv2, s, bufs[2], h2, w2, dst, id, &h3, &w3);
                h2 = h3, w2 = w3;
            }
            cur = dst;
            h = h2, w = w2;
        }
        hs[l] = h, ws[l] = w;
        if (out[l] && !s->dry) memcpy(out[l], cur, sizeof(float) * (size_t)r->out_ch[l] * h * w);
    }
    *l3 = cur;
}

void cnn_resnet_layers(const cnn_resnet *r, cnn_scratch *s, float **bufs, const float *x, int H, int W, float *l1,
                       float *l2, float *l3) {
    float *out[RN_LAYERS] = {l1, l2, l3}, *last;
    int hs[RN_LAYERS], ws[RN_LAYERS];
    run_layers(r, s, bufs, x, H, W, out, hs, ws, &last);
}

void cnn_resnet_features(const cnn_resnet *r, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                         float *feats) {
    float *out[RN_LAYERS] = {NULL, bufs[5], NULL}, *l3;
    int hs[RN_LAYERS], ws[RN_LAYERS];
    run_layers(r, s, bufs, x, H, W, out, hs, ws, &l3);
    DS_ASSERT(hs[1] == H / DS_CNN_FEATURE_STRIDE && ws[1] == W / DS_CNN_FEATURE_STRIDE);
    int Ca = r->out_ch[1], Cb = r->out_ch[2];
    cnn_need_thread(s, (size_t)9 * (Ca + Cb) + 2 * RN_PATCHCORE_DIM);
    if (s->dry) return;
    cnn_patchcore_embed(bufs[5], Ca, hs[1], ws[1], l3, Cb, hs[2], ws[2], RN_PATCHCORE_DIM, s->thread_buf,
                        s->n_threads, feats);
}

void cnn_patchcore_embed(const float *a, int Ca, int h, int w, const float *b, int Cb, int hb, int wb, int dim,
                         float *scratch, int n_threads, float *out) {
    size_t per = (size_t)9 * (Ca + Cb) + 2 * (size_t)dim;
    size_t N = (size_t)h * w;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (size_t p = 0; p < N; p++) {
        float *va = scratch + (size_t)omp_get_thread_num() * per, *vb = va + (size_t)9 * Ca, *cat = vb + (size_t)9 * Cb;
        int y = (int)(p / w), x = (int)(p % w);
        /* layer2: Unfold(3, padding=1) at (y, x), rows (c, ky, kx) */
        for (int c = 0; c < Ca; c++)
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                    int iy = y + ky - 1, ix = x + kx - 1;
                    va[(c * 3 + ky) * 3 + kx] =
                        iy >= 0 && iy < h && ix >= 0 && ix < w ? a[((size_t)c * h + iy) * w + ix] : 0.0f;
                }
        /* layer3: each unfolded map resized bilinearly to (h, w); the taps
         * are the same for every (c, ky, kx) */
        int y0, y1, x0, x1;
        float hy0, hy1, wx0, wx1;
        cnn_bilinear_taps(hb, h, y, &y0, &y1, &hy0, &hy1);
        cnn_bilinear_taps(wb, w, x, &x0, &x1, &wx0, &wx1);
        for (int c = 0; c < Cb; c++) {
            const float *bc = b + (size_t)c * hb * wb;
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                    int ya = y0 + ky - 1, yb = y1 + ky - 1, xa = x0 + kx - 1, xb = x1 + kx - 1;
                    bool ra = ya >= 0 && ya < hb, rb = yb >= 0 && yb < hb, ca = xa >= 0 && xa < wb, cb = xb >= 0 && xb < wb;
                    float v00 = ra && ca ? bc[(size_t)ya * wb + xa] : 0.0f, v01 = ra && cb ? bc[(size_t)ya * wb + xb] : 0.0f;
                    float v10 = rb && ca ? bc[(size_t)yb * wb + xa] : 0.0f, v11 = rb && cb ? bc[(size_t)yb * wb + xb] : 0.0f;
                    vb[(c * 3 + ky) * 3 + kx] = hy0 * (wx0 * v00 + wx1 * v01) + hy1 * (wx0 * v10 + wx1 * v11);
                }
        }
        /* MeanMapper per layer, stacked, then Aggregator */
        cnn_adaptive_avg_pool1d(va, 9 * Ca, cat, dim);
        cnn_adaptive_avg_pool1d(vb, 9 * Cb, cat + dim, dim);
        cnn_adaptive_avg_pool1d(cat, 2 * dim, out + p * dim, dim);
    }
}
