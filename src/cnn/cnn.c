/* ds_cnn: one object over the CNN backbones, with the workspace they share.
 *
 * Each call first runs the network "dry" (shapes only, cnn_scratch.dry) to
 * learn the buffer sizes for this input size, then grows the workspace if
 * needed: buffers are allocated once per (largest) input size and reused,
 * since first touch of fresh pages is slow on our machines. Images of a
 * batch go through one at a time (so a batch of B equals B single calls bit
 * for bit), each conv being one threaded GEMM. */
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn_internal.h"
#include "dinoscope/preprocess.h"

struct ds_cnn {
    ds_cnn_kind kind;
    int n_threads;
    ds_dtype dtype;               /* F32 or BF16 (the dense convs packed) */
    ds_gemm_bf16_kernel kernel;   /* of the bf16 convs */
    cnn_mobilenet *mb;
    cnn_resnet *rn;
    char desc[192];
    /* workspace */
    float *bufs[CNN_N_BUFS];
    size_t buf_floats;
    float *cols;
    size_t cols_floats;
    float *thread_buf;
    size_t thread_floats; /* total */
};

ds_cnn_kind ds_cnn_detect(const ds_weights *w) {
    if (cnn_mobilenet_detect(w)) return DS_CNN_MOBILENET_V2;
    if (cnn_resnet_detect(w)) return DS_CNN_RESNET;
    return (ds_cnn_kind)0;
}

void ds_cnn_free(ds_cnn *c) {
    if (!c) return;
    cnn_mobilenet_free(c->mb);
    cnn_resnet_free(c->rn);
    for (int i = 0; i < CNN_N_BUFS; i++) free(c->bufs[i]);
    free(c->cols);
    free(c->thread_buf);
    free(c);
}

ds_status ds_cnn_create(const ds_weights *w, int n_threads, ds_dtype dtype, ds_cnn **out) {
    if (!w || !out) return ds_set_error(DS_ERR_ARG, "ds_cnn_create: NULL argument");
    if (dtype != DS_DTYPE_F32 && dtype != DS_DTYPE_BF16)
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_backbone_load: '%s': compute dtype %d not supported for CNNs (f32 or bf16)",
                            ds_weights_path(w), (int)dtype);
    ds_cnn_kind kind = ds_cnn_detect(w);
    if (!kind)
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_backbone_load: '%s': neither a MobileNetV2 nor a ResNet state_dict",
                            ds_weights_path(w));
    ds_cnn *c = calloc(1, sizeof *c);
    if (!c) return ds_set_error(DS_ERR_NOMEM, "ds_backbone_load: out of memory");
    c->kind = kind;
    c->dtype = dtype;
    c->n_threads = ds_resolve_threads(n_threads);
    ds_status st;
    if (kind == DS_CNN_MOBILENET_V2) {
        st = cnn_mobilenet_create(w, &c->mb);
        if (st == DS_OK) cnn_mobilenet_describe(c->mb, c->desc, sizeof c->desc);
        if (st == DS_OK && dtype == DS_DTYPE_BF16) st = cnn_mobilenet_pack_bf16(c->mb);
    } else {
        st = cnn_resnet_create(w, &c->rn);
        if (st == DS_OK) cnn_resnet_describe(c->rn, c->desc, sizeof c->desc);
        if (st == DS_OK && dtype == DS_DTYPE_BF16) st = cnn_resnet_pack_bf16(c->rn);
    }
    if (st != DS_OK) {
        ds_cnn_free(c);
        return st;
    }
    *out = c;
    return DS_OK;
}

ds_cnn_kind ds_cnn_get_kind(const ds_cnn *c) { return c->kind; }
ds_dtype ds_cnn_get_dtype(const ds_cnn *c) { return c->dtype; }
void ds_cnn_set_bf16_kernel(ds_cnn *c, ds_gemm_bf16_kernel kernel) { c->kernel = kernel; }
const char *ds_cnn_describe(const ds_cnn *c) { return c->desc; }

int ds_cnn_dim(const ds_cnn *c) { return c->kind == DS_CNN_MOBILENET_V2 ? cnn_mobilenet_dim(c->mb) : 1024; }

void ds_cnn_mean_std(const ds_cnn *c, float mean[3], float std[3]) {
    if (c->kind == DS_CNN_MOBILENET_V2) {
        cnn_mobilenet_mean_std(c->mb, mean, std);
    } else {
        /* torchvision's ImageNet weights (transforms.Normalize in its
         * ImageClassification preset), as PatchCore feeds them */
        memcpy(mean, DS_IMAGENET_MEAN, 3 * sizeof(float));
        memcpy(std, DS_IMAGENET_STD, 3 * sizeof(float));
    }
}

int ds_cnn_n_classes(const ds_cnn *c) { return c->kind == DS_CNN_MOBILENET_V2 ? cnn_mobilenet_n_classes(c->mb) : 0; }
int ds_cnn_resnet_channels(const ds_cnn *c, int layer) {
    return c->kind == DS_CNN_RESNET ? cnn_resnet_channels(c->rn, layer) : 0;
}

static ds_status check_size(const char *caller, int B, int H, int W) {
    int m = DS_CNN_INPUT_MULTIPLE;
    /* 16384 px a side bounds every activation product well inside size_t */
    if (B < 1 || H < m || W < m || H % m || W % m || H > 16384 || W > 16384)
        return ds_set_error(DS_ERR_ARG, "%s: input %dx%d (batch %d) must be positive multiples of %d (at most 16384)",
                            caller, H, W, B, m);
    return DS_OK;
}

/* Grows one buffer to n floats (contents not kept). */
static bool grow(float **p, size_t *have, size_t n, const char *caller) {
    if (n <= *have) return true;
    free(*p);
    *p = ds_alloc(n, sizeof(float), caller);
    *have = *p ? n : 0;
    return *p != NULL;
}

typedef enum { OP_FEATURES, OP_CLASSIFY, OP_LAYERS } cnn_op;

static void run(ds_cnn *c, cnn_scratch *s, cnn_op op, const float *x, int H, int W, float *o1, float *o2, float *o3) {
    if (c->kind == DS_CNN_MOBILENET_V2) {
        if (op == OP_FEATURES) cnn_mobilenet_features(c->mb, s, c->bufs, x, H, W, o1);
        else cnn_mobilenet_classify(c->mb, s, c->bufs, x, H, W, o1, o2);
    } else {
        if (op == OP_FEATURES) cnn_resnet_features(c->rn, s, c->bufs, x, H, W, o1);
        else cnn_resnet_layers(c->rn, s, c->bufs, x, H, W, o1, o2, o3);
    }
}

/* Dry run for this size, then the workspace; fills s for the real run. */
static ds_status prepare(ds_cnn *c, cnn_op op, int H, int W, cnn_scratch *s, const char *caller) {
    memset(s, 0, sizeof *s);
    s->dry = true;
    s->n_threads = c->n_threads;
    s->kernel = c->kernel;
    run(c, s, op, NULL, H, W, NULL, NULL, NULL);
    size_t nt = (size_t)c->n_threads, per = s->need_thread;
    for (int i = 0; i < CNN_N_BUFS; i++) {
        size_t have = c->buf_floats;
        if (!grow(&c->bufs[i], &have, s->need_act, caller)) return DS_ERR_NOMEM;
    }
    if (s->need_act > c->buf_floats) c->buf_floats = s->need_act;
    if (!grow(&c->cols, &c->cols_floats, s->need_cols ? s->need_cols : 1, caller)) return DS_ERR_NOMEM;
    if (!grow(&c->thread_buf, &c->thread_floats, nt * (per ? per : 1), caller)) return DS_ERR_NOMEM;
    s->dry = false;
    s->cols = c->cols;
    s->thread_buf = c->thread_buf;
    return DS_OK;
}

ds_status ds_cnn_features(ds_cnn *c, const float *input, int B, int H, int W, float *feats) {
    const char *caller = "ds_backbone_forward";
    if (!c || !input || !feats) return ds_set_error(DS_ERR_ARG, "%s: NULL argument", caller);
    ds_status st = check_size(caller, B, H, W);
    if (st != DS_OK) return st;
    cnn_scratch s;
    if ((st = prepare(c, OP_FEATURES, H, W, &s, caller)) != DS_OK) return st;
    int prev = ds_blas_set_threads(1); /* all parallelism is OpenMP (see cnn_conv_forward) */
    size_t per_in = (size_t)3 * H * W;
    size_t per_out = (size_t)(H / DS_CNN_FEATURE_STRIDE) * (W / DS_CNN_FEATURE_STRIDE) * ds_cnn_dim(c);
    for (int b = 0; b < B; b++) run(c, &s, OP_FEATURES, input + b * per_in, H, W, feats + b * per_out, NULL, NULL);
    ds_blas_set_threads(prev);
    return DS_OK;
}

/* One image through op with single-threaded BLAS (all parallelism is
 * OpenMP, see cnn_conv_forward); the caller's BLAS setting is restored. */
static ds_status run_one(ds_cnn *c, cnn_op op, const float *input, int H, int W, float *o1, float *o2, float *o3,
                         const char *caller) {
    ds_status st = check_size(caller, 1, H, W);
    if (st != DS_OK) return st;
    cnn_scratch s;
    if ((st = prepare(c, op, H, W, &s, caller)) != DS_OK) return st;
    int prev = ds_blas_set_threads(1);
    run(c, &s, op, input, H, W, o1, o2, o3);
    ds_blas_set_threads(prev);
    return DS_OK;
}

ds_status ds_cnn_classify(ds_cnn *c, const float *input, int H, int W, float *feat18, float *logits) {
    const char *caller = "ds_cnn_classify";
    if (!c || !input) return ds_set_error(DS_ERR_ARG, "%s: NULL argument", caller);
    if (c->kind != DS_CNN_MOBILENET_V2 || cnn_mobilenet_head_channels(c->mb) == 0 ||
        (logits && cnn_mobilenet_n_classes(c->mb) == 0))
        return ds_set_error(DS_ERR_UNSUPPORTED, "%s: the backbone (%s) has no MobileNetV2 classifier head", caller, c->desc);
    return run_one(c, OP_CLASSIFY, input, H, W, feat18, logits, NULL, caller);
}

ds_status ds_cnn_resnet_layers(ds_cnn *c, const float *input, int H, int W, float *l1, float *l2, float *l3) {
    const char *caller = "ds_cnn_resnet_layers";
    if (!c || !input) return ds_set_error(DS_ERR_ARG, "%s: NULL argument", caller);
    if (c->kind != DS_CNN_RESNET) return ds_set_error(DS_ERR_UNSUPPORTED, "%s: the backbone is not a ResNet", caller);
    return run_one(c, OP_LAYERS, input, H, W, l1, l2, l3, caller);
}
