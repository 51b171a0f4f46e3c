/* The CNN engine and backbones against PyTorch (tests/fixtures/cnn, made by
 * tests/fixtures/make_cnn_fixtures.py with torch 1.13 / torchvision 0.14):
 *   - single ops (conv2d in all its forms, max-pool, bilinear resize,
 *     adaptive average pooling, PatchCore's embedding): 1e-5 of the largest
 *     reference magnitude (one float GEMM against another);
 *   - torchvision ResNets with random weights and BN statistics (basic and
 *     wide-bottleneck, .pth and .safetensors): layer outputs and PatchCore
 *     features to 1e-3 of the largest magnitude, as the issue states;
 *   - MobileNetV2: the shipped ImageNet weights (../shared, skipped when
 *     absent) reproduce the reference vector of mobilenet_v2_imagenet.md
 *     (features.18 statistics, logits[0..4], top-5) to 1e-4 relative, and
 *     patch features of a PyTorch build of that model; a torchvision-layout
 *     file (BN, symmetric padding) reproduces torchvision's mobilenet_v2;
 *   - the errors: bad sizes, CLS requests, malformed files. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/cnn_internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/npy.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/weights.h"
#include "test.h"
#include "test_json.h"
#include "cnn_test_util.h"

/* max |a - b| / max |b|; +inf when a buffer is missing */
static double rel_err(const float *a, const float *b, size_t n) {
    if (!a || !b) return INFINITY;
    double mref;
    double d = max_abs_diff(a, b, n, &mref);
    return mref > 0 ? d / mref : d;
}

static void check_rel(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double e = rel_err(got, ref, n);
    char descr[300];
    snprintf(descr, sizeof descr, "%s matches PyTorch to %.0e of the largest magnitude (error %.2e)", what, tol, e);
    test_cond(descr, e <= tol);
}

/* ---- single ops --------------------------------------------------------- */

static cnn_act act_of(const char *s) {
    return !strcmp(s, "relu") ? CNN_ACT_RELU : !strcmp(s, "relu6") ? CNN_ACT_RELU6 : CNN_ACT_NONE;
}

static void test_conv_case(const cJSON *c) {
    const char *name = jstr(c, "name");
    int cin = jint(c, "cin"), cout = jint(c, "cout"), k = jint(c, "k"), H = jint(c, "H"), W = jint(c, "W");
    int Ho_ref = jint(c, "Ho"), Wo_ref = jint(c, "Wo");
    float *x = op_npy(c, "x"), *w = op_npy(c, "w"), *b = op_npy(c, "b");
    float *y = op_npy(c, "y"), *res = op_npy(c, "res"), *yres = op_npy(c, "y_res");
    cnn_conv conv;
    cnn_pad_mode pm = !strcmp(jstr(c, "pad_mode"), "tf_same") ? CNN_PAD_TF_SAME : CNN_PAD_SYMMETRIC;
    ds_status st = cnn_conv_init(&conv, cin, cout, k, k, jint(c, "stride"), jint(c, "dilation"), jint(c, "groups"), pm,
                                 jint(c, "pad"), jint(c, "pad"), act_of(jstr(c, "act")), w, b);
    char descr[200];
    int Ho = 0, Wo = 0, pt, pl;
    bool geo = st == DS_OK && cnn_conv_geometry(&conv, H, W, &Ho, &Wo, &pt, &pl);
    snprintf(descr, sizeof descr, "conv %s: output size %dx%d equals torch's", name, Ho, Wo);
    test_cond(descr, x && w && b && y && geo && Ho == Ho_ref && Wo == Wo_ref);
    if (!(x && w && b && y && res && yres && geo && Ho == Ho_ref && Wo == Wo_ref)) goto done;
    size_t n = (size_t)cout * Ho * Wo;
    float *out, *out2;
    conv_run(&conv, DS_GEMM_BF16_AUTO, x, H, W, res, &out, &out2, &Ho, &Wo);
    snprintf(descr, sizeof descr, "conv %s (%s, stride %d, dilation %d, groups %d, %s)", name, jstr(c, "pad_mode"),
             jint(c, "stride"), jint(c, "dilation"), jint(c, "groups"), jstr(c, "act"));
    check_rel(descr, out, y, n, 1e-5);
    /* the residual is added before the activation (ResNet's relu(bn3(conv3) + identity)) */
    snprintf(descr, sizeof descr, "conv %s + residual, then the activation", name);
    check_rel(descr, out2, yres, n, 1e-5);
    free(out);
    free(out2);
done:
    if (st == DS_OK) cnn_conv_free(&conv);
    free(x), free(w), free(b), free(y), free(res), free(yres);
}

static void test_ops(void) {
    char *js = test_read_text(fixture("cnn/ops.json"));
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    test_cond("cnn/ops.json (the single-op fixtures) loads", cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 10);
    const cJSON *c;
    char descr[200];
    cJSON_ArrayForEach(c, cases) {
        const char *op = jstr(c, "op"), *name = jstr(c, "name");
        if (!strcmp(op, "conv")) {
            test_conv_case(c);
        } else if (!strcmp(op, "maxpool")) {
            int C = jint(c, "C"), H = jint(c, "H"), W = jint(c, "W"), Ho, Wo;
            float *x = op_npy(c, "x"), *y = op_npy(c, "y");
            size_t n = (size_t)C * jint(c, "Ho") * jint(c, "Wo");
            float *out = calloc(n + 1, sizeof(float));
            cnn_scratch s = {.n_threads = 2};
            if (x) cnn_maxpool(&s, x, C, H, W, 3, 2, 1, out, &Ho, &Wo);
            snprintf(descr, sizeof descr, "max-pool 3x3/2/1 %s (%dx%d) equals F.max_pool2d exactly", name, H, W);
            test_cond(descr, x && y && Ho == jint(c, "Ho") && Wo == jint(c, "Wo") && rel_err(out, y, n) == 0.0);
            free(x), free(y), free(out);
        } else if (!strcmp(op, "resize")) {
            int C = jint(c, "C"), H = jint(c, "H"), W = jint(c, "W"), Ho = jint(c, "Ho"), Wo = jint(c, "Wo");
            float *x = op_npy(c, "x"), *y = op_npy(c, "y");
            size_t n = (size_t)C * Ho * Wo;
            float *out = calloc(n, sizeof(float));
            if (x) cnn_resize_bilinear(x, C, H, W, out, Ho, Wo, 2);
            snprintf(descr, sizeof descr, "bilinear resize %dx%d -> %dx%d (align_corners=False)", H, W, Ho, Wo);
            check_rel(descr, out, y, n, 1e-6);
            free(x), free(y), free(out);
        } else if (!strcmp(op, "pool1d")) {
            int L = jint(c, "L"), n = jint(c, "n");
            float *x = op_npy(c, "x"), *y = op_npy(c, "y");
            float *out = calloc((size_t)n, sizeof(float));
            if (x) cnn_adaptive_avg_pool1d(x, L, out, n);
            snprintf(descr, sizeof descr, "adaptive_avg_pool1d %d -> %d", L, n);
            check_rel(descr, out, y, (size_t)n, 1e-6);
            free(x), free(y), free(out);
        } else if (!strcmp(op, "patchcore")) {
            int Ca = jint(c, "Ca"), h = jint(c, "h"), w = jint(c, "w"), Cb = jint(c, "Cb"), hb = jint(c, "hb"),
                wb = jint(c, "wb"), dim = jint(c, "dim");
            float *a = op_npy(c, "a"), *b = op_npy(c, "b"), *y = op_npy(c, "y");
            size_t n = (size_t)h * w * dim;
            float *out = calloc(n, sizeof(float));
            float *scratch = malloc(sizeof(float) * 2 * (9 * (size_t)(Ca + Cb) + 2 * (size_t)dim));
            if (a && b) cnn_patchcore_embed(a, Ca, h, w, b, Cb, hb, wb, dim, scratch, 2, out);
            check_rel("PatchCore embedding of a 5x4x6 and a 7x2x3 map (unfold, resize, MeanMapper, Aggregator)", out, y,
                      n, 1e-5);
            free(a), free(b), free(y), free(out), free(scratch);
        }
    }
    cJSON_Delete(root);
    free(js);
}

/* ---- ResNets ------------------------------------------------------------ */

static void test_resnet(const char *tag, const cJSON *m, const char *expect_desc) {
    int H = jint(m, "H"), W = jint(m, "W");
    char name[128], descr[300];
    snprintf(name, sizeof name, "cnn/resnet_%s_input.npy", tag);
    float *x = test_load_npy(name, NULL);
    snprintf(name, sizeof name, "cnn/resnet_%s_feats.npy", tag);
    size_t nf = 0;
    float *ref = test_load_npy(name, &nf);
    if (!x || !ref) {
        test_cond("the ResNet fixtures load", 0);
        free(x), free(ref);
        return;
    }
    float *feats[2] = {NULL, NULL};
    const char *ext[2] = {"pth", "safetensors"};
    for (int f = 0; f < 2; f++) {
        snprintf(name, sizeof name, "cnn/resnet_%s.%s", tag, ext[f]);
        ds_backbone *bb = NULL;
        ds_status st = ds_backbone_load(fixture(name), &(ds_backbone_params){.n_threads = 2}, &bb);
        if (st != DS_OK) printf("     %s\n", ds_last_error());
        snprintf(descr, sizeof descr, "%s (torch.save state_dict with num_batches_tracked) loads as a ResNet backbone", name);
        test_cond(descr, st == DS_OK && ds_backbone_get_kind(bb) == DS_BACKBONE_RESNET);
        if (st != DS_OK) continue;
        int gh, gw, D;
        printf("     describe: %s\n", ds_backbone_describe(bb));
        snprintf(descr, sizeof descr, "%s: described as '%s...', stride 32, grid H/8 x W/8 x 1024", name, expect_desc);
        test_cond(descr, strncmp(ds_backbone_describe(bb), expect_desc, strlen(expect_desc)) == 0 &&
                             ds_backbone_stride(bb) == 32 && ds_backbone_grid(bb, H, W, &gh, &gw, &D) == DS_OK &&
                             gh == H / 8 && gw == W / 8 && D == 1024 && nf == (size_t)gh * gw * D);
        if (f == 0) {
            ds_image *img = formula_image(32, 32);
            float a[3 * 32 * 32], b[3 * 32 * 32];
            ds_backbone_normalize(bb, img, a);
            ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, b);
            test_cond("a ResNet normalises with ImageNet mean/std", memcmp(a, b, sizeof a) == 0);
            ds_image_free(img);
        }
        feats[f] = calloc(nf, sizeof(float));
        st = ds_backbone_forward(bb, x, 1, H, W, 1, feats[f], NULL);
        snprintf(descr, sizeof descr, "%s: PatchCore features (layer2+layer3, %dx%d input)", name, H, W);
        check_rel(descr, st == DS_OK ? feats[f] : NULL, ref, nf, 1e-3);
        ds_backbone_free(bb);
    }
    test_cond("the .pth and the .safetensors give bit-identical features",
              feats[0] && feats[1] && memcmp(feats[0], feats[1], sizeof(float) * nf) == 0);

    /* layer outputs, through the internal object */
    ds_weights *w = NULL;
    ds_cnn *cnn = NULL;
    snprintf(name, sizeof name, "cnn/resnet_%s.safetensors", tag);
    if (ds_weights_load(fixture(name), &w) == DS_OK && ds_cnn_create(w, 2, DS_DTYPE_F32, &cnn) == DS_OK) {
        ds_weights_free(w); /* the CNN keeps its own copies */
        w = NULL;
        float *ref_l[3], *got_l[3];
        size_t nl[3];
        for (int l = 0; l < 3; l++) {
            snprintf(name, sizeof name, "cnn/resnet_%s_layer%d.npy", tag, l + 1);
            ref_l[l] = test_load_npy(name, &nl[l]);
            got_l[l] = calloc(ref_l[l] ? nl[l] : 1, sizeof(float));
        }
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(m, "channels");
        bool shapes = ref_l[0] && ref_l[1] && ref_l[2];
        for (int l = 0; l < 3 && shapes; l++) {
            int div = 4 << l, C = cJSON_GetArrayItem(ch, l)->valueint;
            shapes = ds_cnn_resnet_channels(cnn, l + 1) == C && nl[l] == (size_t)C * (H / div) * (W / div);
        }
        test_cond("layer channels and sizes (H/4, H/8, H/16) equal torchvision's", shapes);
        if (shapes && ds_cnn_resnet_layers(cnn, x, H, W, got_l[0], got_l[1], got_l[2]) == DS_OK) {
            for (int l = 0; l < 3; l++) {
                snprintf(descr, sizeof descr, "resnet_%s layer%d output (BN folded at load)", tag, l + 1);
                check_rel(descr, got_l[l], ref_l[l], nl[l], 1e-3);
            }
        }
        for (int l = 0; l < 3; l++) free(ref_l[l]), free(got_l[l]);
        /* a batch of two equals two single runs bit for bit, also after a
         * larger input grew the workspace */
        size_t per = (size_t)3 * H * W;
        float *x2 = malloc(sizeof(float) * 2 * per), *f2 = malloc(sizeof(float) * 2 * nf);
        float *big = calloc((size_t)3 * 2 * H * 2 * W, sizeof(float));
        float *fbig = malloc(sizeof(float) * (size_t)(2 * H / 8) * (2 * W / 8) * 1024);
        memcpy(x2, x, sizeof(float) * per);
        for (size_t i = 0; i < per; i++) x2[per + i] = -x[i];
        ds_status s1 = ds_cnn_features(cnn, big, 1, 2 * H, 2 * W, fbig);
        ds_status s2 = ds_cnn_features(cnn, x2, 2, H, W, f2);
        test_cond("a batch of 2 after a 2x larger input: image 0 equals the single run bit for bit",
                  s1 == DS_OK && s2 == DS_OK && feats[1] && memcmp(f2, feats[1], sizeof(float) * nf) == 0);
        free(x2), free(f2), free(big), free(fbig);
    } else {
        test_cond("the ResNet builds through ds_cnn_create", 0);
        printf("     %s\n", ds_last_error());
    }
    ds_cnn_free(cnn);
    ds_weights_free(w);
    free(feats[0]), free(feats[1]), free(x), free(ref);
}

/* ---- MobileNetV2 -------------------------------------------------------- */

static void test_mobilenet_torchvision(const cJSON *m) {
    int H = jint(m, "H"), W = jint(m, "W"), D = jint(m, "D");
    ds_backbone *bb = NULL;
    ds_status st = ds_backbone_load(fixture("cnn/mobilenet_tv.safetensors"), &(ds_backbone_params){.n_threads = 2}, &bb);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    test_cond("a torchvision mobilenet_v2 (width 0.125, BN, features.0..13 only) loads as MobileNetV2",
              st == DS_OK && ds_backbone_get_kind(bb) == DS_BACKBONE_MOBILENET_V2);
    if (st != DS_OK) return;
    printf("     describe: %s\n", ds_backbone_describe(bb));
    int gh, gw, d;
    test_cond("its grid is H/8 x W/8 with D = C6 + C13 and symmetric padding noted",
              ds_backbone_grid(bb, H, W, &gh, &gw, &d) == DS_OK && gh == H / 8 && gw == W / 8 && d == D &&
                  strstr(ds_backbone_describe(bb), "torchvision-padding"));
    ds_image *img = formula_image(H, W);
    float *x = malloc(sizeof(float) * 3 * H * W), *xr = malloc(sizeof(float) * 3 * H * W);
    ds_backbone_normalize(bb, img, x);
    ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, xr);
    test_cond("a torchvision-layout MobileNetV2 normalises with ImageNet mean/std",
              memcmp(x, xr, sizeof(float) * 3 * H * W) == 0);
    size_t n;
    float *ref = test_load_npy("cnn/mobilenet_tv_feats.npy", &n);
    float *f = calloc(n, sizeof(float));
    st = ds_backbone_forward(bb, x, 1, H, W, 4, f, NULL);
    check_rel("torchvision MobileNetV2 patch features (blocks 6 + 13, BN folded, symmetric padding)",
              st == DS_OK ? f : NULL, ref, n, 1e-3);
    float cls[64];
    st = ds_backbone_forward(bb, x, 1, H, W, 4, f, cls);
    test_cond("asking a CNN for a CLS token is DS_ERR_UNSUPPORTED with a message",
              st == DS_ERR_UNSUPPORTED && strstr(ds_last_error(), "CLS"));
    ds_weights *w = NULL;
    ds_cnn *cnn = NULL;
    if (ds_weights_load(fixture("cnn/mobilenet_tv.safetensors"), &w) == DS_OK && ds_cnn_create(w, 1, DS_DTYPE_F32, &cnn) == DS_OK) {
        st = ds_cnn_classify(cnn, x, H, W, NULL, cls);
        test_cond("classify without features.14..18 and the classifier is DS_ERR_UNSUPPORTED", st == DS_ERR_UNSUPPORTED);
    }
    ds_cnn_free(cnn);
    ds_weights_free(w);
    ds_image_free(img);
    free(x), free(xr), free(ref), free(f);
    ds_backbone_free(bb);
}

static void test_mobilenet_shipped(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/mobilenet_v2_imagenet.safetensors", test_env("DS_SHARED", "../shared"));
    if (access(path, R_OK) != 0) {
        printf("SKIP (part): %s not found (set DS_SHARED); the shipped MobileNetV2 checks are skipped\n", path);
        return;
    }
    ds_backbone *bb = NULL;
    ds_status st = ds_backbone_load(path, &(ds_backbone_params){.n_threads = 2}, &bb);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    test_cond("the shipped mobilenet_v2_imagenet.safetensors loads as MobileNetV2",
              st == DS_OK && ds_backbone_get_kind(bb) == DS_BACKBONE_MOBILENET_V2);
    if (st != DS_OK) return;
    int gh, gw, D;
    printf("     describe: %s\n", ds_backbone_describe(bb));
    test_cond("described as 'mobilenet_v2 taps=6,13 D=128', stride 32, 224 -> 28x28x128",
              !strcmp(ds_backbone_describe(bb), "mobilenet_v2 taps=6,13 D=128") && ds_backbone_stride(bb) == 32 &&
                  ds_backbone_grid(bb, 224, 224, &gh, &gw, &D) == DS_OK && gh == 28 && gw == 28 && D == 128);
    test_cond("an input that is not a multiple of 32 is refused by ds_backbone_grid",
              ds_backbone_grid(bb, 224, 200, &gh, &gw, &D) == DS_ERR_ARG && ds_last_error()[0]);

    /* the .md's reference vector: q = (R=w, G=h, B=(h+w)//2), x = (q/255 - 0.5)/0.5 */
    ds_image *img = ds_image_create(224, 224, 3);
    for (int h = 0; h < 224; h++)
        for (int w = 0; w < 224; w++) {
            uint8_t *p = img->pixels + ((size_t)h * 224 + w) * 3;
            p[0] = (uint8_t)w, p[1] = (uint8_t)h, p[2] = (uint8_t)((h + w) / 2);
        }
    float *x = malloc(sizeof(float) * 3 * 224 * 224);
    ds_backbone_normalize(bb, img, x);
    bool norm_ok = true;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 224 * 224; i++)
            norm_ok &= x[(size_t)c * 224 * 224 + i] == ((float)img->pixels[(size_t)i * 3 + c] / 255.0f - 0.5f) / 0.5f;
    test_cond("the shipped model normalises with its metadata's mean/std 0.5 (range [-1, 1])", norm_ok);

    ds_weights *wts = NULL;
    ds_cnn *cnn = NULL;
    if (ds_weights_load(path, &wts) != DS_OK || ds_cnn_create(wts, 2, DS_DTYPE_F32, &cnn) != DS_OK) {
        test_cond("the shipped model builds through ds_cnn_create", 0);
        goto done;
    }
    test_cond("1001 classes (background first)", ds_cnn_n_classes(cnn) == 1001);
    float *f18 = malloc(sizeof(float) * 1280 * 7 * 7), logits[1001];
    st = ds_cnn_classify(cnn, x, 224, 224, f18, logits);
    test_cond("classify runs", st == DS_OK);
    double sum = 0, mx = -INFINITY;
    for (int i = 0; i < 1280 * 49; i++) {
        sum += f18[i];
        if (f18[i] > mx) mx = f18[i];
    }
    printf("     features.18: mean %.6f max %.6f sum %.4f\n", sum / (1280 * 49), mx, sum);
    test_cond("features.18 mean equals the .md's 0.193670 to 1e-4 relative", fabs(sum / (1280 * 49) / 0.193670 - 1) < 1e-4);
    test_cond("features.18 max equals 6.0 (ReLU6)", mx == 6.0);
    test_cond("features.18 sum equals the .md's 12146.965 to 1e-4 relative", fabs(sum / 12146.965 - 1) < 1e-4);
    const double ref5[5] = {-0.60075, 0.46564, 2.03769, -0.82391, -0.82151};
    bool l5 = true;
    for (int i = 0; i < 5; i++) {
        printf("     logits[%d] = %.5f (.md %.5f)\n", i, logits[i], ref5[i]);
        l5 &= fabs(logits[i] - ref5[i]) <= 1e-4 * fabs(ref5[i]);
    }
    test_cond("logits[0..4] equal the .md's to 1e-4 relative", l5);
    const int top_idx[5] = {645, 605, 60, 715, 847};
    const double top_val[5] = {4.65340, 4.17958, 3.99382, 3.92791, 3.71112};
    int top[5];
    for (int k = 0; k < 5; k++) {
        top[k] = -1;
        for (int i = 0; i < 1001; i++) {
            bool taken = false;
            for (int j = 0; j < k; j++) taken |= top[j] == i;
            if (!taken && (top[k] < 0 || logits[i] > logits[top[k]])) top[k] = i;
        }
    }
    bool t5 = true;
    for (int k = 0; k < 5; k++) {
        printf("     top-%d: %d:%.5f (.md %d:%.5f)\n", k + 1, top[k], logits[top[k]], top_idx[k], top_val[k]);
        t5 &= top[k] == top_idx[k] && fabs(logits[top[k]] - top_val[k]) <= 1e-4 * top_val[k];
    }
    test_cond("the top-5 classes and logits equal the .md's (645, 605, 60, 715, 847) to 1e-4 relative", t5);
    free(f18);

    /* patch features of the 64x96 formula input against the PyTorch build */
    size_t n;
    float *ref = test_load_npy("cnn/mobilenet_shipped_feats_64x96.npy", &n);
    ds_image *img2 = formula_image(64, 96);
    float *x2 = malloc(sizeof(float) * 2 * 3 * 64 * 96), *f = calloc(2 * n + 1, sizeof(float));
    ds_backbone_normalize(bb, img2, x2);
    ds_backbone_normalize(bb, img2, x2 + 3 * 64 * 96);
    st = ds_backbone_forward(bb, x2, 2, 64, 96, 4, f, NULL);
    test_cond("patch features are [8*12, 128] for a 64x96 input", st == DS_OK && n == (size_t)8 * 12 * 128);
    check_rel("shipped MobileNetV2 patch features (64x96, TF-SAME, blocks 6 + 13)", st == DS_OK ? f : NULL, ref, n, 1e-4);
    test_cond("both images of the batch give identical features", st == DS_OK && memcmp(f, f + n, sizeof(float) * n) == 0);
    st = ds_backbone_forward(bb, x2, 1, 64, 80, 4, f, NULL);
    test_cond("a forward at 64x80 is refused (not a multiple of 32) with a message naming the size",
              st == DS_ERR_ARG && strstr(ds_last_error(), "64x80"));
    ds_image_free(img2);
    free(x2), free(f), free(ref);
done:
    ds_cnn_free(cnn);
    ds_weights_free(wts);
    ds_image_free(img);
    free(x);
    ds_backbone_free(bb);
}

/* ---- malformed files ----------------------------------------------------- */

/* A safetensors file of zero-filled F32 tensors: names[i] with shapes. */
static const char *write_zero_st(const char *file, int n, const char *const *names, const int64_t (*shapes)[4],
                                 const int *nd) {
    static char path[1024];
    const char *dir = test_env("DS_TMP", "build/testtmp");
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/cnn_%s", dir, file);
    char json[4096];
    size_t len = (size_t)snprintf(json, sizeof json, "{");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        size_t cnt = 1;
        len += (size_t)snprintf(json + len, sizeof json - len, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "",
                                names[i]);
        for (int d = 0; d < nd[i]; d++) {
            len += (size_t)snprintf(json + len, sizeof json - len, "%s%lld", d ? "," : "", (long long)shapes[i][d]);
            cnt *= (size_t)shapes[i][d];
        }
        len += (size_t)snprintf(json + len, sizeof json - len, "],\"data_offsets\":[%zu,%zu]}", off, off + 4 * cnt);
        off += 4 * cnt;
    }
    len += (size_t)snprintf(json + len, sizeof json - len, "}");
    FILE *fp = fopen(path, "wb");
    if (!fp) return path;
    uint64_t hl = len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hl >> (8 * i));
    fwrite(le, 1, 8, fp);
    fwrite(json, 1, len, fp);
    for (size_t i = 0; i < off; i++) fputc(0, fp);
    fclose(fp);
    return path;
}

static void expect_load_fail(const char *what, const char *path, ds_status want, const char *substr) {
    ds_backbone *sentinel = (ds_backbone *)(uintptr_t)0x1234, *bb = sentinel;
    ds_status st = ds_backbone_load(path, NULL, &bb);
    const char *msg = ds_last_error();
    printf("     %s -> %d: %s\n", what, (int)st, msg);
    char descr[300];
    snprintf(descr, sizeof descr, "%s is rejected with a one-line message naming '%s'", what, substr);
    test_cond(descr, st == want && bb == sentinel && !strchr(msg, '\n') && strstr(msg, substr));
    if (st == DS_OK && bb != sentinel) ds_backbone_free(bb);
}

static void test_malformed(void) {
    {
        const char *names[] = {"conv1.weight", "layer1.0.conv1.weight"};
        const int64_t shapes[][4] = {{8, 3, 7, 7}, {8, 5, 3, 3}};
        const int nd[] = {4, 4};
        expect_load_fail("a ResNet whose layer1.0.conv1 has the wrong input channels",
                         write_zero_st("bad_resnet.safetensors", 2, names, shapes, nd), DS_ERR_SHAPE,
                         "'layer1.0.conv1.weight' has shape [8,5,3,3], expected [8,8,3,3]");
    }
    {
        const char *names[] = {"conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "bn1.weight"};
        const int64_t shapes[][4] = {{8, 3, 7, 7}, {8, 8, 3, 3}, {8, 8, 3, 3}, {8}};
        const int nd[] = {4, 4, 4, 1};
        expect_load_fail("a ResNet with bn1.weight but not the rest of bn1",
                         write_zero_st("bad_bn.safetensors", 4, names, shapes, nd), DS_ERR_FORMAT,
                         "missing tensor 'bn1.bias'");
    }
    {
        const char *names[] = {"features.0.0.weight", "features.1.conv.0.0.weight"};
        const int64_t shapes[][4] = {{32, 3, 3, 3}, {32, 1, 3, 3}};
        const int nd[] = {4, 4};
        expect_load_fail("a MobileNetV2 cut after block 1",
                         write_zero_st("bad_mobilenet.safetensors", 2, names, shapes, nd), DS_ERR_FORMAT,
                         "features.1.conv.1.weight");
    }
    {
        const char *names[] = {"fc.weight"};
        const int64_t shapes[][4] = {{10, 4}};
        const int nd[] = {2};
        expect_load_fail("a file of no known model", write_zero_st("unknown.safetensors", 1, names, shapes, nd),
                         DS_ERR_UNSUPPORTED, "unknown model");
    }
}

int main(void) {
    test_ops();
    char *js = test_read_text(fixture("cnn/manifest.json"));
    cJSON *man = js ? cJSON_Parse(js) : NULL;
    test_cond("cnn/manifest.json loads", man != NULL);
    test_resnet("basic", cJSON_GetObjectItemCaseSensitive(man, "resnet_basic"), "resnet basic blocks=1,1,1 stem=8");
    test_resnet("wide", cJSON_GetObjectItemCaseSensitive(man, "resnet_wide"), "resnet bottleneck blocks=1,2,2 stem=8 widths=8,16,32");
    test_mobilenet_torchvision(cJSON_GetObjectItemCaseSensitive(man, "mobilenet_tv"));
    test_mobilenet_shipped();
    test_malformed();
    cJSON_Delete(man);
    free(js);
    test_report();
}
