/* MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
 * Linear Bottlenecks"), with torchvision's module names
 * (torchvision/models/mobilenetv2.py):
 *
 *   features.0          stem 3x3 conv, stride 2, ReLU6
 *   features.1..17      inverted residual blocks: [expand 1x1 + ReLU6]
 *                       -> depthwise 3x3 (stride s) + ReLU6 -> project 1x1
 *                       (linear), + input when stride 1 and cin == cout
 *   features.18         1x1 conv to 1280 + ReLU6
 *   classifier.1        linear, on the global average pool
 *
 * Two weight layouts load: torchvision's (batch-norm tensors, folded here;
 * symmetric padding k//2; ImageNet mean/std) and the shipped TFLite
 * conversion ../shared/models/mobilenet_v2_imagenet.safetensors (a bias on
 * every conv, no BN; its __metadata__ says padding "tf_same" and input mean
 * and std 0.5). Channel counts come from the tensor shapes (any width
 * multiplier); strides are the paper's table (Table 2: t, c, n, s), checked
 * against the file's "blocks" metadata when present.
 *
 * Patch features: the outputs of blocks 6 (stride 8) and 13 (stride 16),
 * the ends of the stride-8 and stride-16 stages; block 13's map is resized
 * to block 6's grid bilinearly with align_corners=False, as PatchCore does
 * for its deeper layer (amazon-science/patchcore-inspection, patchcore.py
 * PatchCore._embed: F.interpolate(..., mode="bilinear", align_corners=False))
 * and anomalib's PatchcoreModel.generate_embedding (F.interpolate
 * mode="bilinear", whose align_corners defaults to False); both taps are
 * concatenated per position, D = C6 + C13 (32 + 96 = 128 at width 1.0). */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn_internal.h"
#include "dinoscope/preprocess.h"

#define MB_MAX_BLOCKS 17
#define MB_TAP_LO 6  /* end of the stride-8 stage */
#define MB_TAP_HI 13 /* end of the stride-16 stage */

typedef struct {
    bool expand_present;
    cnn_conv expand, dw, project;
    bool residual;
    int cin, cout, stride;
} mb_block;

struct cnn_mobilenet {
    cnn_conv stem;
    mb_block blocks[MB_MAX_BLOCKS + 1]; /* 1..n_blocks */
    int n_blocks;                       /* 13..17 */
    bool has_head;                      /* features.18 */
    cnn_conv head;
    int n_classes; /* 0 without classifier.1 */
    float *fc_w, *fc_b;
    cnn_pad_mode pad;
    float mean[3], std[3];
};

/* Stride of block n (1-based) in the paper's Table 2 / torchvision's
 * inverted_residual_setting: stages (t, c, n, s) = (1,16,1,1) (6,24,2,2)
 * (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1); the stride is on
 * the first block of a stage. */
static int mb_stride(int n) { return n == 2 || n == 4 || n == 7 || n == 14 ? 2 : 1; }

static const char *CALLER = "ds_backbone_load (mobilenet_v2)";

bool cnn_mobilenet_detect(const ds_weights *w) {
    return ds_weights_find(w, "features.0.0.weight") && ds_weights_find(w, "features.1.conv.0.0.weight");
}

void cnn_mobilenet_free(cnn_mobilenet *m) {
    if (!m) return;
    cnn_conv_free(&m->stem);
    for (int n = 1; n <= MB_MAX_BLOCKS; n++) {
        cnn_conv_free(&m->blocks[n].expand);
        cnn_conv_free(&m->blocks[n].dw);
        cnn_conv_free(&m->blocks[n].project);
    }
    cnn_conv_free(&m->head);
    free(m->fc_w);
    free(m->fc_b);
    free(m);
}

/* Reads a metadata value that is a JSON list of 3 numbers. */
static ds_status meta_triple(const ds_weights *w, const char *key, bool positive, float out[3], bool *found) {
    const char *v = ds_weights_metadata(w, key);
    *found = false;
    if (!v) return DS_OK;
    cJSON *j = cJSON_Parse(v);
    bool ok = cJSON_IsArray(j) && cJSON_GetArraySize(j) == 3;
    for (int i = 0; ok && i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(j, i);
        ok = cJSON_IsNumber(e) && (!positive || e->valuedouble > 0);
        if (ok) out[i] = (float)e->valuedouble;
    }
    cJSON_Delete(j);
    if (!ok)
        return ds_set_error(DS_ERR_FORMAT, "%s: '%s': metadata '%s' = '%.60s' is not a list of 3 numbers", CALLER,
                            ds_weights_path(w), key, v);
    *found = true;
    return DS_OK;
}

/* Padding and normalisation from the metadata, torchvision's otherwise. */
static ds_status read_conventions(cnn_mobilenet *m, const ds_weights *w) {
    const char *pad = ds_weights_metadata(w, "padding");
    m->pad = CNN_PAD_SYMMETRIC;
    if (pad) {
        if (strcmp(pad, "tf_same") == 0) m->pad = CNN_PAD_TF_SAME;
        else if (strcmp(pad, "symmetric") != 0)
            return ds_set_error(DS_ERR_UNSUPPORTED, "%s: '%s': metadata padding '%.40s' is not supported (tf_same, symmetric)",
                                CALLER, ds_weights_path(w), pad);
    }
    memcpy(m->mean, DS_IMAGENET_MEAN, sizeof m->mean);
    memcpy(m->std, DS_IMAGENET_STD, sizeof m->std);
    bool fm, fs;
    ds_status st = meta_triple(w, "input_mean", false, m->mean, &fm);
    if (st == DS_OK) st = meta_triple(w, "input_std", true, m->std, &fs);
    return st;
}

/* The file's "blocks" metadata (rows [index, expand_ratio, cin, cout,
 * stride, residual]) must agree with the structure built here. */
static ds_status check_blocks_metadata(const cnn_mobilenet *m, const ds_weights *w) {
    const char *v = ds_weights_metadata(w, "blocks");
    if (!v) return DS_OK;
    cJSON *j = cJSON_Parse(v);
    ds_status st = DS_OK;
    if (!cJSON_IsArray(j)) {
        st = ds_set_error(DS_ERR_FORMAT, "%s: '%s': metadata 'blocks' is not a JSON list", CALLER, ds_weights_path(w));
        goto done;
    }
    const cJSON *row;
    cJSON_ArrayForEach(row, j) {
        int f[6];
        bool ok = cJSON_IsArray(row) && cJSON_GetArraySize(row) == 6;
        for (int i = 0; ok && i < 6; i++) {
            const cJSON *e = cJSON_GetArrayItem(row, i);
            ok = cJSON_IsNumber(e);
            if (ok) f[i] = e->valueint;
        }
        if (!ok || f[0] < 1 || f[0] > MB_MAX_BLOCKS) {
            st = ds_set_error(DS_ERR_FORMAT, "%s: '%s': metadata 'blocks' has a malformed row", CALLER, ds_weights_path(w));
            goto done;
        }
        if (f[0] > m->n_blocks) continue;
        const mb_block *b = &m->blocks[f[0]];
        if (f[2] != b->cin || f[3] != b->cout || f[4] != b->stride || (f[5] != 0) != b->residual) {
            st = ds_set_error(DS_ERR_UNSUPPORTED,
                              "%s: '%s': metadata says block %d is %d->%d stride %d residual %d; the standard MobileNetV2 "
                              "here has %d->%d stride %d residual %d",
                              CALLER, ds_weights_path(w), f[0], f[2], f[3], f[4], f[5], b->cin, b->cout, b->stride,
                              (int)b->residual);
            goto done;
        }
    }
done:
    cJSON_Delete(j);
    return st;
}

static int64_t dim0(const ds_weights *w, const char *name) {
    const ds_tensor *t = ds_weights_find(w, name);
    return t && t->n_dims == 4 && t->shape[0] > 0 && t->shape[0] <= 65536 ? t->shape[0] : -1;
}

ds_status cnn_mobilenet_create(const ds_weights *w, cnn_mobilenet **out) {
    cnn_mobilenet *m = calloc(1, sizeof *m);
    if (!m) return ds_set_error(DS_ERR_NOMEM, "%s: out of memory", CALLER);
    const char *path = ds_weights_path(w);
    char name[96], bn[96], name2[96];
    ds_status st = read_conventions(m, w);
    if (st != DS_OK) goto fail;

    int c = (int)dim0(w, "features.0.0.weight");
    if (c < 1) {
        st = ds_set_error(DS_ERR_SHAPE, "%s: '%s': 'features.0.0.weight' is not a [C,3,3,3] conv", CALLER, path);
        goto fail;
    }
    if ((st = cnn_conv_load(&m->stem, w, CALLER, "features.0.0", "features.0.1", 3, c, 3, 2, 1, m->pad,
                            CNN_ACT_RELU6)) != DS_OK)
        goto fail;

    for (int n = 1; n <= MB_MAX_BLOCKS; n++) {
        snprintf(name, sizeof name, "features.%d.conv.0.0.weight", n);
        const ds_tensor *t0 = ds_weights_find(w, name);
        if (!t0) break;
        mb_block *b = &m->blocks[n];
        b->cin = c;
        b->stride = mb_stride(n);
        if (t0->n_dims != 4 || (t0->shape[2] != 1 && t0->shape[2] != 3)) {
            char got[96];
            cnn_fmt_shape(got, sizeof got, t0->shape, t0->n_dims);
            st = ds_set_error(DS_ERR_SHAPE, "%s: '%s': '%s' has shape %s, expected a 1x1 expansion or 3x3 depthwise conv",
                              CALLER, path, name, got);
            goto fail;
        }
        /* torchvision InvertedResidual: with expansion, conv = [expand
         * (0.0, BN 0.1), depthwise (1.0, BN 1.1), project 2, BN 3]; without
         * (t = 1), conv = [depthwise (0.0, BN 0.1), project 1, BN 2] */
        b->expand_present = t0->shape[2] == 1;
        int hidden = c, k = 0;
        if (b->expand_present) {
            hidden = (int)dim0(w, name);
            snprintf(name, sizeof name, "features.%d.conv.0.0", n);
            snprintf(bn, sizeof bn, "features.%d.conv.0.1", n);
            if ((st = cnn_conv_load(&b->expand, w, CALLER, name, bn, c, hidden, 1, 1, 1, m->pad, CNN_ACT_RELU6)) != DS_OK)
                goto fail;
            k = 1;
        }
        snprintf(name, sizeof name, "features.%d.conv.%d.0", n, k);
        snprintf(bn, sizeof bn, "features.%d.conv.%d.1", n, k);
        if ((st = cnn_conv_load(&b->dw, w, CALLER, name, bn, hidden, hidden, 3, b->stride, hidden, m->pad,
                                CNN_ACT_RELU6)) != DS_OK)
            goto fail;
        snprintf(name2, sizeof name2, "features.%d.conv.%d.weight", n, k + 1);
        int cout = (int)dim0(w, name2);
        if (cout < 1) {
            st = ds_set_error(DS_ERR_FORMAT, "%s: '%s': missing or malformed projection conv '%s'", CALLER, path, name2);
            goto fail;
        }
        snprintf(name, sizeof name, "features.%d.conv.%d", n, k + 1);
        snprintf(bn, sizeof bn, "features.%d.conv.%d", n, k + 2);
        if ((st = cnn_conv_load(&b->project, w, CALLER, name, bn, hidden, cout, 1, 1, 1, m->pad, CNN_ACT_NONE)) != DS_OK)
            goto fail;
        b->cout = cout;
        b->residual = b->stride == 1 && c == cout; /* InvertedResidual.use_res_connect */
        c = cout;
        m->n_blocks = n;
    }
    if (m->n_blocks < MB_TAP_HI) {
        st = ds_set_error(DS_ERR_FORMAT, "%s: '%s': has %d inverted residual blocks (features.1..%d); the features need %d",
                          CALLER, path, m->n_blocks, m->n_blocks, MB_TAP_HI);
        goto fail;
    }
    if ((st = check_blocks_metadata(m, w)) != DS_OK) goto fail;

    /* optional head: features.18 (1x1 conv + ReLU6) and classifier.1 */
    int hc = (int)dim0(w, "features.18.0.weight");
    if (m->n_blocks == MB_MAX_BLOCKS && hc > 0) {
        if ((st = cnn_conv_load(&m->head, w, CALLER, "features.18.0", "features.18.1", c, hc, 1, 1, 1, m->pad,
                                CNN_ACT_RELU6)) != DS_OK)
            goto fail;
        m->has_head = true;
        const ds_tensor *fw = ds_weights_find(w, "classifier.1.weight"), *fb = ds_weights_find(w, "classifier.1.bias");
        if (fw || fb) {
            if (!fw || !fb || fw->n_dims != 2 || fw->shape[1] != hc || fw->shape[0] < 1 || fw->shape[0] > 1000000 ||
                fb->n_dims != 1 || fb->shape[0] != fw->shape[0]) {
                st = ds_set_error(DS_ERR_SHAPE, "%s: '%s': classifier.1.weight/.bias are not [n,%d] and [n]", CALLER, path,
                                  hc);
                goto fail;
            }
            m->n_classes = (int)fw->shape[0];
            m->fc_w = ds_alloc((size_t)fw->n_elements, sizeof(float), CALLER);
            m->fc_b = ds_alloc((size_t)m->n_classes, sizeof(float), CALLER);
            if (!m->fc_w || !m->fc_b) {
                st = DS_ERR_NOMEM;
                goto fail;
            }
            ds_tensor_to_f32(fw, m->fc_w);
            ds_tensor_to_f32(fb, m->fc_b);
        }
    }
    *out = m;
    return DS_OK;
fail:
    cnn_mobilenet_free(m);
    return st;
}

void cnn_mobilenet_mean_std(const cnn_mobilenet *m, float mean[3], float std[3]) {
    memcpy(mean, m->mean, sizeof m->mean);
    memcpy(std, m->std, sizeof m->std);
}

int cnn_mobilenet_dim(const cnn_mobilenet *m) { return m->blocks[MB_TAP_LO].cout + m->blocks[MB_TAP_HI].cout; }
int cnn_mobilenet_n_classes(const cnn_mobilenet *m) { return m->has_head ? m->n_classes : 0; }
int cnn_mobilenet_head_channels(const cnn_mobilenet *m) { return m->has_head ? m->head.cout : 0; }

ds_status cnn_mobilenet_pack_bf16(cnn_mobilenet *m) {
    ds_status st = cnn_conv_pack_bf16(&m->stem);
    for (int n = 1; st == DS_OK && n <= m->n_blocks; n++) {
        mb_block *b = &m->blocks[n];
        if (b->expand_present) st = cnn_conv_pack_bf16(&b->expand);
        if (st == DS_OK) st = cnn_conv_pack_bf16(&b->dw); /* depthwise: stays f32 */
        if (st == DS_OK) st = cnn_conv_pack_bf16(&b->project);
    }
    if (st == DS_OK && m->has_head) st = cnn_conv_pack_bf16(&m->head);
    return st;
}

void cnn_mobilenet_describe(const cnn_mobilenet *m, char *buf, size_t n) {
    snprintf(buf, n, "mobilenet_v2 taps=%d,%d D=%d%s", MB_TAP_LO, MB_TAP_HI, cnn_mobilenet_dim(m),
             m->pad == CNN_PAD_TF_SAME ? "" : " torchvision-padding");
}

/* Stem and blocks 1..last of one image. bufs[0], bufs[1] hold block
 * outputs in turn, bufs[2] the expansion, bufs[3] the depthwise output; the
 * output of block 6 [C6, *h6, *w6] is copied to bufs[4] when h6 is set.
 * *out gets the buffer holding block last's output [*C, *h, *w]. */
static void run_blocks(const cnn_mobilenet *m, cnn_scratch *s, float **bufs, const float *x, int H, int W, int last,
                       int *h6, int *w6, float **out, int *C, int *h, int *w) {
    int ho, wo, h2, w2;
    cnn_conv_forward(&m->stem, s, x, H, W, bufs[0], NULL, &ho, &wo);
    float *cur = bufs[0];
    for (int n = 1; n <= last; n++) {
        const mb_block *b = &m->blocks[n];
        float *dst = cur == bufs[0] ? bufs[1] : bufs[0];
        const float *hid = cur;
        if (b->expand_present) {
            cnn_conv_forward(&b->expand, s, cur, ho, wo, bufs[2], NULL, &h2, &w2);
            hid = bufs[2];
        }
        cnn_conv_forward(&b->dw, s, hid, ho, wo, bufs[3], NULL, &h2, &w2);
        cnn_conv_forward(&b->project, s, bufs[3], h2, w2, dst, b->residual ? cur : NULL, &h2, &w2);
        cur = dst;
        ho = h2, wo = w2;
        if (n == MB_TAP_LO && h6) {
            *h6 = ho, *w6 = wo;
            if (!s->dry) memcpy(bufs[4], cur, sizeof(float) * (size_t)b->cout * ho * wo);
        }
    }
    *out = cur;
    *C = m->blocks[last].cout;
    *h = ho, *w = wo;
}

void cnn_mobilenet_features(const cnn_mobilenet *m, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                            float *feats) {
    float *hi;
    int C13, h13, w13, h, w;
    run_blocks(m, s, bufs, x, H, W, MB_TAP_HI, &h, &w, &hi, &C13, &h13, &w13);
    int C6 = m->blocks[MB_TAP_LO].cout;
    DS_ASSERT(h == H / DS_CNN_FEATURE_STRIDE && w == W / DS_CNN_FEATURE_STRIDE);
    size_t N = (size_t)h * w;
    int D = C6 + C13;
    cnn_need_act(s, (size_t)C13 * N);
    if (s->dry) return;
    float *up = bufs[5];
    cnn_resize_bilinear(hi, C13, h13, w13, up, h, w, s->n_threads);
    const float *lo = bufs[4];
    /* [C, N] planes -> [N, D] rows */
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
    for (size_t i = 0; i < N; i++) {
        float *row = feats + i * D;
        for (int c = 0; c < C6; c++) row[c] = lo[(size_t)c * N + i];
        for (int c = 0; c < C13; c++) row[C6 + c] = up[(size_t)c * N + i];
    }
}

void cnn_mobilenet_classify(const cnn_mobilenet *m, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                            float *feat18, float *logits) {
    DS_ASSERT(m->has_head);
    float *cur;
    int C, h, w, ho, wo;
    run_blocks(m, s, bufs, x, H, W, MB_MAX_BLOCKS, NULL, NULL, &cur, &C, &h, &w);
    float *head = cur == bufs[0] ? bufs[1] : bufs[0];
    cnn_conv_forward(&m->head, s, cur, h, w, head, NULL, &ho, &wo);
    int hc = m->head.cout;
    cnn_need_act(s, (size_t)hc);
    if (s->dry) return;
    if (feat18) memcpy(feat18, head, sizeof(float) * (size_t)hc * ho * wo);
    if (logits && m->n_classes > 0) {
        /* classifier: Dropout (identity in eval) + Linear on the global
         * average pool (torchvision: nn.functional.adaptive_avg_pool2d(x, (1, 1))) */
        float *pooled = bufs[2];
        cnn_global_avg_pool(head, hc, ho * wo, pooled);
        memcpy(logits, m->fc_b, sizeof(float) * (size_t)m->n_classes);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m->n_classes, hc, 1.0f, m->fc_w, hc, pooled, 1, 1.0f, logits, 1);
    }
}
