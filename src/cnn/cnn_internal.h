/* A small CNN engine (not installed): convolution with folded batch-norm,
 * pooling and resizing primitives (conv.c), and the two backbone families
 * built from them, MobileNetV2 (mobilenet.c) and torchvision ResNets
 * (resnet.c), behind one object, ds_cnn (cnn.c), that ds_backbone uses.
 *
 * Layout: activations are NCHW f32, one image at a time: x [C, H, W],
 * contiguous (also with dtype bf16, where only the dense convs' GEMM
 * operands are bfloat16, see cnn_conv_pack_bf16). Weights are torch's:
 * conv [out, in/groups, kh, kw] (OIHW), linear [out, in].
 *
 * Threading (STYLE: one level): all parallelism is OpenMP and OpenBLAS runs
 * with 1 thread (ds_cnn sets it before each forward). A dense convolution
 * splits its output positions into one slice per thread, each doing its
 * im2col, single-threaded sgemm and epilogue; depthwise convs, pooling and
 * PatchCore's aggregation are OpenMP loops over channels or positions.
 * One thread pool only: with threaded OpenBLAS between OpenMP loops, the
 * two pools' spinning threads take turns on the cores (MobileNetV2 224 on
 * our loaded 2-core machine, 2 threads: median 444 ms that way, 66 ms with
 * OpenMP only; 12 ms with 1 thread, which is what a loaded machine favours). */
#ifndef DS_CNN_INTERNAL_H
#define DS_CNN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/gemm_bf16.h"
#include "core/internal.h"
#include "dinoscope/weights.h"

/* ---- primitives (conv.c) ----------------------------------------------- */

typedef enum { CNN_ACT_NONE = 0, CNN_ACT_RELU, CNN_ACT_RELU6 } cnn_act;

typedef enum {
    CNN_PAD_SYMMETRIC = 0, /* torch Conv2d(padding=p): p before and after */
    CNN_PAD_TF_SAME,       /* TensorFlow "SAME": out = ceil(in/stride), the odd pixel after */
} cnn_pad_mode;

typedef struct {
    int cin, cout, kh, kw;
    int stride, dilation, groups;
    cnn_pad_mode pad_mode;
    int pad_h, pad_w; /* CNN_PAD_SYMMETRIC only */
    cnn_act act;
    float *w; /* [cout, cin/groups, kh, kw], batch-norm folded in; owned; NULL once packed to w16 */
    float *b; /* [cout]; owned (zeros when the conv had no bias and no BN) */
    uint32_t *w16; /* dtype bf16, dense convs: per group, w [cout/groups, K] packed by ds_bf16_pack_a; owned; else NULL */
} cnn_conv;

/* Output size and the padding before (top, left) of conv c on an H x W
 * input. Returns false when the output would be empty. */
bool cnn_conv_geometry(const cnn_conv *c, int H, int W, int *Ho, int *Wo, int *pad_top, int *pad_left);

/* Sets up c from raw arrays (copied): w [cout, cin/groups, kh, kw], b [cout]
 * or NULL. Returns DS_OK or DS_ERR_NOMEM / DS_ERR_ARG (groups not dividing
 * the channels). Used by the loaders below and by the tests. */
ds_status cnn_conv_init(cnn_conv *c, int cin, int cout, int kh, int kw, int stride, int dilation, int groups,
                        cnn_pad_mode pad_mode, int pad_h, int pad_w, cnn_act act, const float *w, const float *b);

/* Loads conv `name` (name.weight, and name.bias if present) from the file,
 * checking its shape is [cout, cin/groups, k, k], and folds batch-norm `bn`
 * (bn.weight/.bias/.running_mean/.running_var, each [cout]) into it when bn
 * is non-NULL and bn.weight exists. Geometry and activation as
 * cnn_conv_init. caller names the API call in error messages. */
ds_status cnn_conv_load(cnn_conv *c, const ds_weights *w, const char *caller, const char *name, const char *bn,
                        int cin, int cout, int k, int stride, int groups, cnn_pad_mode pad_mode, cnn_act act);

void cnn_conv_free(cnn_conv *c);

/* The bf16 compute path (issue 13): packs a dense conv's folded weights
 * into bfloat16 (round to nearest even, one block per group in
 * ds_bf16_pack_a's layout) and frees the f32 copy, so that
 * cnn_conv_forward runs its GEMMs through ds_gemm_bf16_pa (bf16 products,
 * fp32 sums); bias, residual and activation stay fp32. Depthwise convs are left f32 (no GEMM there: a
 * 9-tap loop per channel, memory-bound, where bf16 would only cost
 * precision). Idempotent. Returns DS_OK or DS_ERR_NOMEM (c unchanged). */
ds_status cnn_conv_pack_bf16(cnn_conv *c);

/* Scratch for cnn_conv_forward: im2col columns and per-thread buffers.
 * With dry set, forward calls compute shapes only and record the sizes
 * that a real run needs (so one code path sizes and runs a network). */
typedef struct {
    bool dry;
    int n_threads;
    size_t need_act;     /* floats of the largest activation met */
    size_t need_cols;    /* floats of the largest im2col matrix */
    size_t need_thread;  /* floats of per-thread scratch (a padded depthwise
                            plane, PatchCore's patch vectors) */
    float *cols;         /* [need_cols] */
    float *thread_buf;   /* [n_threads, need_thread] (also the bf16 path's packed blocks) */
    ds_gemm_bf16_kernel kernel; /* bf16 convs: AUTO, or a kernel the tests pick */
} cnn_scratch;

/* y [cout, Ho, Wo] = act(conv(x [cin, H, W]) + b + residual), residual
 * [cout, Ho, Wo] or NULL. Dense convs: im2col + cblas_sgemm per group (a
 * 1x1 stride-1 conv multiplies x directly), or once packed by
 * cnn_conv_pack_bf16, im2col straight into bf16 panels + ds_gemm_bf16_pa
 * (weights as the packed A, positions as the panels of W); depthwise (cin/groups == 1,
 * any channel multiplier): a direct loop over a zero-padded copy of each
 * plane. Ho and Wo get the
 * output size. y must alias neither x nor residual. */
void cnn_conv_forward(const cnn_conv *c, cnn_scratch *s, const float *x, int H, int W, float *y, const float *residual,
                      int *Ho, int *Wo);

/* Max-pool k x k, stride, symmetric padding p (implicit -inf padding, as
 * torch.nn.MaxPool2d): x [C, H, W] -> y [C, Ho, Wo]. */
void cnn_maxpool(cnn_scratch *s, const float *x, int C, int H, int W, int k, int stride, int pad, float *y, int *Ho,
                 int *Wo);

/* Bilinear resize of x [C, H, W] to y [C, Ho, Wo] as
 * torch.nn.functional.interpolate(mode="bilinear", align_corners=False). */
void cnn_resize_bilinear(const float *x, int C, int H, int W, float *y, int Ho, int Wo, int n_threads);

/* Bilinear source taps of output index o for an in -> out resize
 * (align_corners=False), torch's area_pixel_compute_source_index: i0, i1
 * (i1 == i0 at the border) and their weights l0 + l1 = 1. */
void cnn_bilinear_taps(int in, int out, int o, int *i0, int *i1, float *l0, float *l1);

/* torch.nn.functional.adaptive_avg_pool1d of x [L] to y [n_out]: bin i
 * averages x[floor(i L / n_out) .. ceil((i + 1) L / n_out)). */
void cnn_adaptive_avg_pool1d(const float *x, int L, float *y, int n_out);

/* y [C] = mean of x [C, H*W] over positions. */
void cnn_global_avg_pool(const float *x, int C, int HW, float *y);

/* Tracks an activation of n floats in a dry run. */
static inline void cnn_need_act(cnn_scratch *s, size_t n) {
    if (n > s->need_act) s->need_act = n;
}
/* Tracks per-thread scratch of n floats in a dry run. */
static inline void cnn_need_thread(cnn_scratch *s, size_t n) {
    if (n > s->need_thread) s->need_thread = n;
}

/* Activation buffers a network forward may use, each [need_act] floats. */
#define CNN_N_BUFS 6

/* Formats a shape "[d0,d1,...]" for messages. */
void cnn_fmt_shape(char *buf, size_t n, const int64_t *shape, int n_dims);

/* ---- MobileNetV2 (mobilenet.c) ----------------------------------------- */

typedef struct cnn_mobilenet cnn_mobilenet;

/* True if the file has MobileNetV2 tensors (features.0.0.weight and
 * features.1.conv.0.0.weight). */
bool cnn_mobilenet_detect(const ds_weights *w);
ds_status cnn_mobilenet_create(const ds_weights *w, cnn_mobilenet **out);
void cnn_mobilenet_free(cnn_mobilenet *m);
/* Input normalisation (x = (rgb/255 - mean)/std), from the file's metadata
 * (the shipped TF conversion: 0.5/0.5) or ImageNet's for torchvision files. */
void cnn_mobilenet_mean_std(const cnn_mobilenet *m, float mean[3], float std[3]);
void cnn_mobilenet_describe(const cnn_mobilenet *m, char *buf, size_t n);
int cnn_mobilenet_dim(const cnn_mobilenet *m);       /* C6 + C13: 128 at width 1.0 */
int cnn_mobilenet_n_classes(const cnn_mobilenet *m); /* 0 without a head */
int cnn_mobilenet_head_channels(const cnn_mobilenet *m); /* 1280; 0 without features.18 */
/* Every dense conv to bf16 (cnn_conv_pack_bf16); the classifier's Linear
 * stays f32 (one gemv on the pooled vector). DS_OK or DS_ERR_NOMEM. */
ds_status cnn_mobilenet_pack_bf16(cnn_mobilenet *m);

/* Patch features of one image x [3, H, W] (H, W multiples of 32):
 * feats [(H/8)(W/8), D] = concat(block 6 output, block 13 output
 * bilinearly upsampled to block 6's grid), channels last. */
void cnn_mobilenet_features(const cnn_mobilenet *m, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                            float *feats);
/* Classifier path of one image: feat18 [1280, H/32, W/32] (features.18
 * output, after ReLU6) and logits [n_classes], either may be NULL. */
void cnn_mobilenet_classify(const cnn_mobilenet *m, cnn_scratch *s, float **bufs, const float *x, int H, int W,
                            float *feat18, float *logits);

/* ---- ResNet (resnet.c) ------------------------------------------------- */

typedef struct cnn_resnet cnn_resnet;

/* True if the file has torchvision ResNet tensors (conv1.weight and
 * layer1.0.conv1.weight). */
bool cnn_resnet_detect(const ds_weights *w);
ds_status cnn_resnet_create(const ds_weights *w, cnn_resnet **out);
void cnn_resnet_free(cnn_resnet *r);
void cnn_resnet_describe(const cnn_resnet *r, char *buf, size_t n);
/* Output channels of layer l (1..3). */
int cnn_resnet_channels(const cnn_resnet *r, int layer);
/* Every conv to bf16 (cnn_conv_pack_bf16). DS_OK or DS_ERR_NOMEM. */
ds_status cnn_resnet_pack_bf16(cnn_resnet *r);

/* PatchCore features of one image x [3, H, W] (H, W multiples of 32):
 * feats [(H/8)(W/8), 1024]. */
void cnn_resnet_features(const cnn_resnet *r, cnn_scratch *s, float **bufs, const float *x, int H, int W, float *feats);
/* Layer outputs of one image (any may be NULL): l1 [C1, H/4, W/4],
 * l2 [C2, H/8, W/8], l3 [C3, H/16, W/16]. */
void cnn_resnet_layers(const cnn_resnet *r, cnn_scratch *s, float **bufs, const float *x, int H, int W, float *l1,
                       float *l2, float *l3);

/* PatchCore's embedding of two feature maps (amazon-science/patchcore-
 * inspection, patchcore.py PatchCore._embed + common.py Preprocessing /
 * Aggregator): a [Ca, h, w], b [Cb, hb, wb] -> out [h*w, dim]. Exposed
 * for the tests. scratch: [n_threads, 9 (Ca + Cb) + 3 dim] floats. */
void cnn_patchcore_embed(const float *a, int Ca, int h, int w, const float *b, int Cb, int hb, int wb, int dim,
                         float *scratch, int n_threads, float *out);

/* ---- the backbone object (cnn.c) --------------------------------------- */

typedef enum { DS_CNN_MOBILENET_V2 = 1, DS_CNN_RESNET = 2 } ds_cnn_kind;

typedef struct ds_cnn ds_cnn;

/* 0 if the file is neither family. */
ds_cnn_kind ds_cnn_detect(const ds_weights *w);
/* Builds the network from w, copying (and folding) what it needs, so w may
 * be freed afterwards. dtype DS_DTYPE_BF16: the dense convs compute in
 * bf16 with fp32 accumulation (cnn_conv_pack_bf16), DS_DTYPE_F32 in f32;
 * another is DS_ERR_UNSUPPORTED. Returns DS_ERR_FORMAT / DS_ERR_SHAPE
 * naming the tensor. */
ds_status ds_cnn_create(const ds_weights *w, int n_threads, ds_dtype dtype, ds_cnn **out);
ds_dtype ds_cnn_get_dtype(const ds_cnn *c);
/* The bf16 GEMM kernel the convs use (DS_GEMM_BF16_AUTO unless set): the
 * tests run each one the CPU has. */
void ds_cnn_set_bf16_kernel(ds_cnn *c, ds_gemm_bf16_kernel kernel);
void ds_cnn_free(ds_cnn *c);
ds_cnn_kind ds_cnn_get_kind(const ds_cnn *c);
const char *ds_cnn_describe(const ds_cnn *c);
/* Feature channels D (128 MobileNetV2, 1024 ResNet). */
int ds_cnn_dim(const ds_cnn *c);
/* Inputs must be multiples of this (32); the feature grid is H/8 x W/8. */
#define DS_CNN_INPUT_MULTIPLE 32
#define DS_CNN_FEATURE_STRIDE 8
void ds_cnn_mean_std(const ds_cnn *c, float mean[3], float std[3]);

/* feats [B, (H/8)(W/8), D] of input [B, 3, H, W]. Returns DS_ERR_ARG for
 * sizes that are not positive multiples of 32, DS_ERR_NOMEM. */
ds_status ds_cnn_features(ds_cnn *c, const float *input, int B, int H, int W, float *feats);

/* MobileNetV2 only (DS_ERR_UNSUPPORTED otherwise, or without the head):
 * one image [3, H, W] -> feat18 [1280, H/32, W/32], logits [n_classes]. */
ds_status ds_cnn_classify(ds_cnn *c, const float *input, int H, int W, float *feat18, float *logits);
int ds_cnn_n_classes(const ds_cnn *c);

/* ResNet only: layer outputs of one image (see cnn_resnet_layers). */
ds_status ds_cnn_resnet_layers(ds_cnn *c, const float *input, int H, int W, float *l1, float *l2, float *l3);
int ds_cnn_resnet_channels(const ds_cnn *c, int layer);

#endif
