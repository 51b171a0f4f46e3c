/* The bf16 compute path of the CNN backbones (ds_backbone_params.dtype =
 * DS_DTYPE_BF16: dense convs through ds_gemm_bf16, fp32 accumulation;
 * depthwise convs, batch-norm, activations and residuals in fp32), against
 * the PyTorch float32 references of tests/fixtures/cnn (made by
 * tests/fixtures/make_cnn_fixtures.py, torch 1.13 / torchvision 0.14):
 *   - single convs of ops.json in all their forms: to 1e-2 of the largest
 *     reference magnitude (inputs and weights rounded to bf16, 2^-9
 *     relative each; fp32 sums), with every GEMM kernel the CPU has;
 *   - ResNet basic and wide-bottleneck, torchvision MobileNetV2: each
 *     position's feature vector within cosine 0.999 of the same network in
 *     f32 (issue 13's bar) and of torch's f32 features, and to 3e-2 of the
 *     largest magnitude of torch's (the looser bar: the f32 path is held
 *     to 1e-3 in test_cnn); each kernel the CPU has, the kernels agreeing
 *     to 1e-5 (only the order of fp32 additions may differ);
 *   - the shipped ImageNet MobileNetV2 (../shared, skipped when absent) on
 *     real chest X-rays and a brain MRI at 224, against itself in f32:
 *     every patch within cosine 0.995 and 95% of them within 0.999 (the
 *     0.999-for-every-patch bar holds on the random-weight fixtures above,
 *     not on this trained net: measured min 0.9980-0.9988, 96.7-99.5% of
 *     patches >= 0.999, median relative error 2.2-2.4%;
 *     rounding the input and the stem alone, all else f32, already gives
 *     0.9983 on the X-ray, so no single layer is to blame: the trained
 *     net amplifies 2^-9 roundings where the random one does not. The
 *     fidelity that counts, image AUROC within 0.003 of f32, is
 *     bench/cnn_bf16_auroc.sh's, see bench/README.md); and the .md's top-1 class on its
 *     reference input;
 *   - dtype bookkeeping: get_dtype, the description the model records. */
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "cnn/cnn_internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/image.h"
#include "dinoscope/npy.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/weights.h"
#include "test.h"
#include "test_json.h"
#include "cnn_test_util.h"

/* NCHW planes [C, N] -> rows [N, C], for per-position cosines. */
static float *to_rows(const float *x, int C, size_t N) {
    float *y = malloc(sizeof(float) * C * N + 1);
    for (int c = 0; y && c < C; c++)
        for (size_t i = 0; i < N; i++) y[i * C + c] = x[(size_t)c * N + i];
    return y;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double mref, d = max_abs_diff(a, b, n, &mref);
    return mref > 0 ? d / mref : d;
}

/* The kernels this CPU runs: PORTABLE always, AVX2 and NATIVE when present. */
static int cpu_kernels(ds_gemm_bf16_kernel k[3], const char *names[3]) {
    int n = 0;
    k[n] = DS_GEMM_BF16_PORTABLE, names[n++] = "portable";
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k[n] = DS_GEMM_BF16_AVX2, names[n++] = "avx2";
#endif
    if (ds_cpu_has_avx512bf16()) k[n] = DS_GEMM_BF16_NATIVE, names[n++] = "avx512bf16";
    return n;
}

/* ---- single convs --------------------------------------------------------- */

static void conv_case(const cJSON *c) {
    const char *name = jstr(c, "name"), *act = jstr(c, "act");
    int cin = jint(c, "cin"), cout = jint(c, "cout"), k = jint(c, "k"), H = jint(c, "H"), W = jint(c, "W");
    float *x = op_npy(c, "x"), *w = op_npy(c, "w"), *b = op_npy(c, "b"), *y = op_npy(c, "y");
    float *res = op_npy(c, "res"), *yres = op_npy(c, "y_res");
    cnn_act a = !strcmp(act, "relu") ? CNN_ACT_RELU : !strcmp(act, "relu6") ? CNN_ACT_RELU6 : CNN_ACT_NONE;
    cnn_conv conv;
    ds_status st = x && w && b && y && res && yres
                       ? cnn_conv_init(&conv, cin, cout, k, k, jint(c, "stride"), jint(c, "dilation"), jint(c, "groups"),
                                       !strcmp(jstr(c, "pad_mode"), "tf_same") ? CNN_PAD_TF_SAME : CNN_PAD_SYMMETRIC,
                                       jint(c, "pad"), jint(c, "pad"), a, w, b)
                       : DS_ERR_IO;
    if (st == DS_OK) st = cnn_conv_pack_bf16(&conv);
    char descr[300];
    snprintf(descr, sizeof descr, "conv %s: fixtures load and the weights pack to bf16", name);
    test_cond(descr, st == DS_OK);
    if (st != DS_OK) goto done;
    bool dw = cin / jint(c, "groups") == 1 && jint(c, "groups") > 1;
    snprintf(descr, sizeof descr, "conv %s: %s", name,
             dw ? "depthwise stays f32 (no packed copy)" : "dense: packed per group, the f32 copy freed");
    test_cond(descr, dw ? conv.w16 == NULL && conv.w != NULL : conv.w16 != NULL && conv.w == NULL);
    ds_gemm_bf16_kernel ks[3];
    const char *kn[3];
    int nk = cpu_kernels(ks, kn), Ho, Wo;
    for (int i = 0; i < nk; i++) {
        float *out, *out2;
        conv_run(&conv, ks[i], x, H, W, res, &out, &out2, &Ho, &Wo);
        size_t n = (size_t)cout * Ho * Wo;
        double e1 = rel_err(out, y, n), e2 = rel_err(out2, yres, n);
        snprintf(descr, sizeof descr, "conv %s in bf16 (%s kernel), with and without the residual: to 1e-2 of torch's "
                 "largest magnitude (%.1e, %.1e)", name, kn[i], e1, e2);
        test_cond(descr, Ho == jint(c, "Ho") && Wo == jint(c, "Wo") && e1 <= 1e-2 && e2 <= 1e-2);
        free(out), free(out2);
    }
    cnn_conv_free(&conv);
done:
    free(x), free(w), free(b), free(y), free(res), free(yres);
}

static void test_ops(void) {
    char *js = test_read_text(fixture("cnn/ops.json"));
    cJSON *root = js ? cJSON_Parse(js) : NULL;
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        if (strcmp(jstr(c, "op"), "conv")) continue;
        conv_case(c);
        n++;
    }
    test_cond("cnn/ops.json has the conv cases (dense, grouped, pointwise, depthwise)", n >= 10);
    cJSON_Delete(root);
    free(js);
}

/* ---- whole networks -------------------------------------------------------- */

/* feats [N, D] of one input through file in dtype (and kernel, for bf16);
 * NULL on failure (reason printed). */
static float *cnn_feats(const char *file, ds_dtype dtype, ds_gemm_bf16_kernel kernel, const float *x, int H, int W,
                        int *D) {
    ds_weights *w = NULL;
    ds_cnn *cnn = NULL;
    float *f = NULL;
    if (ds_weights_load(file, &w) == DS_OK && ds_cnn_create(w, 2, dtype, &cnn) == DS_OK) {
        ds_cnn_set_bf16_kernel(cnn, kernel);
        *D = ds_cnn_dim(cnn);
        f = malloc(sizeof(float) * (size_t)(H / 8) * (W / 8) * *D);
        if (ds_cnn_features(cnn, x, 1, H, W, f) != DS_OK) free(f), f = NULL;
    }
    if (!f) printf("     %s: %s\n", file, ds_last_error());
    ds_cnn_free(cnn);
    ds_weights_free(w);
    return f;
}

/* bf16 features of file against its f32 ones and torch's ref [N, D]. */
static void net_case(const char *what, const char *file, const float *x, int H, int W, const float *ref) {
    int D = 0;
    size_t N = (size_t)(H / 8) * (W / 8);
    float *f32 = cnn_feats(file, DS_DTYPE_F32, DS_GEMM_BF16_AUTO, x, H, W, &D), *first = NULL;
    ds_gemm_bf16_kernel ks[3];
    const char *kn[3];
    int nk = cpu_kernels(ks, kn);
    char descr[400];
    for (int i = 0; i < nk; i++) {
        float *f = cnn_feats(file, DS_DTYPE_BF16, ks[i], x, H, W, &D);
        bool ok = f && f32;
        double c32 = ok ? test_min_cosine(f, f32, N, D) : 0, cref = ok && ref ? test_min_cosine(f, ref, N, D) : 0;
        double eref = ok && ref ? rel_err(f, ref, N * D) : INFINITY, e32 = ok ? rel_err(f, f32, N * D) : 0;
        printf("     %s bf16 (%s): min cosine per position vs f32 %.6f, vs torch %.6f; max|diff| / max|torch| %.2e "
               "(vs f32 %.2e)\n", what, kn[i], c32, cref, eref, e32);
        snprintf(descr, sizeof descr, "%s in bf16 (%s kernel): every position within cosine 0.999 of the f32 network "
                 "and of torch's f32 features", what, kn[i]);
        test_cond(descr, ok && c32 >= 0.999 && cref >= 0.999);
        snprintf(descr, sizeof descr, "%s in bf16 (%s kernel): to 3e-2 of torch's largest magnitude, and not the f32 "
                 "values (bf16 rounding shows)", what, kn[i]);
        test_cond(descr, ok && eref <= 3e-2 && e32 > 1e-5);
        if (i == 0) first = f;
        else {
            double ek = ok && first ? rel_err(f, first, N * D) : INFINITY;
            snprintf(descr, sizeof descr, "%s: the %s kernel agrees with the portable one to 1e-5 (%.1e)", what, kn[i], ek);
            test_cond(descr, ek <= 1e-5);
            free(f);
        }
    }
    free(first);
    free(f32);
}

static void test_resnet(const char *tag) {
    char name[128], file[128];
    snprintf(name, sizeof name, "cnn/resnet_%s_input.npy", tag);
    float *x = test_load_npy(name, NULL);
    snprintf(name, sizeof name, "cnn/resnet_%s_feats.npy", tag);
    float *ref = test_load_npy(name, NULL);
    char *js = test_read_text(fixture("cnn/manifest.json"));
    cJSON *man = js ? cJSON_Parse(js) : NULL;
    snprintf(name, sizeof name, "resnet_%s", tag);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(man, name);
    int H = jint(m, "H"), W = jint(m, "W");
    test_cond("the ResNet fixtures load", x && ref && H > 0);
    if (x && ref && H > 0) {
        snprintf(file, sizeof file, "cnn/resnet_%s.safetensors", tag);
        snprintf(name, sizeof name, "resnet_%s PatchCore features", tag);
        net_case(name, fixture(file), x, H, W, ref);

        /* the layer outputs too (the residual adds and the downsample path) */
        ds_weights *w = NULL;
        ds_cnn *cnn = NULL;
        if (ds_weights_load(fixture(file), &w) == DS_OK && ds_cnn_create(w, 2, DS_DTYPE_BF16, &cnn) == DS_OK) {
            float *got[3], *rl[3];
            size_t nl[3];
            for (int l = 0; l < 3; l++) {
                snprintf(name, sizeof name, "cnn/resnet_%s_layer%d.npy", tag, l + 1);
                rl[l] = test_load_npy(name, &nl[l]);
                got[l] = calloc(rl[l] ? nl[l] : 1, sizeof(float));
            }
            ds_status st = rl[0] && rl[1] && rl[2] ? ds_cnn_resnet_layers(cnn, x, H, W, got[0], got[1], got[2]) : DS_ERR_IO;
            for (int l = 0; l < 3; l++) {
                int C = ds_cnn_resnet_channels(cnn, l + 1);
                size_t N = (size_t)(H / (4 << l)) * (W / (4 << l));
                float *a = st == DS_OK ? to_rows(got[l], C, N) : NULL, *b = st == DS_OK ? to_rows(rl[l], C, N) : NULL;
                double cs = a && b ? test_min_cosine(a, b, N, C) : 0;
                snprintf(name, sizeof name, "resnet_%s layer%d in bf16: every position within cosine 0.999 of torch's (%.6f)",
                         tag, l + 1, cs);
                test_cond(name, cs >= 0.999);
                free(a), free(b), free(got[l]), free(rl[l]);
            }
        } else {
            test_cond("the ResNet builds in bf16 through ds_cnn_create", 0);
        }
        ds_cnn_free(cnn);
        ds_weights_free(w);
    }
    cJSON_Delete(man);
    free(js), free(x), free(ref);
}

static void test_mobilenet_torchvision(void) {
    const int H = 64, W = 96;
    float *ref = test_load_npy("cnn/mobilenet_tv_feats.npy", NULL);
    ds_image *img = formula_image(H, W);
    float *x = malloc(sizeof(float) * 3 * H * W);
    ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, x);
    test_cond("the torchvision MobileNetV2 reference loads", ref != NULL);
    if (ref) net_case("torchvision MobileNetV2 (width 0.125) patch features", fixture("cnn/mobilenet_tv.safetensors"), x, H,
                      W, ref);
    ds_image_free(img);
    free(x), free(ref);
}

/* ---- the shipped MobileNetV2 on real images -------------------------------- */

static void test_mobilenet_shipped(void) {
    const char *shared = test_env("DS_SHARED", "../shared");
    char model[1024];
    snprintf(model, sizeof model, "%s/models/mobilenet_v2_imagenet.safetensors", shared);
    if (access(model, R_OK) != 0) {
        printf("SKIP (part): %s not found (set DS_SHARED); the shipped MobileNetV2 checks are skipped\n", model);
        return;
    }
    ds_backbone *b32 = NULL, *b16 = NULL;
    ds_status st = ds_backbone_load(model, &(ds_backbone_params){.n_threads = 2}, &b32);
    if (st == DS_OK) st = ds_backbone_load(model, &(ds_backbone_params){.n_threads = 2, .dtype = DS_DTYPE_BF16}, &b16);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    test_cond("the shipped MobileNetV2 loads in f32 and in bf16", st == DS_OK);
    if (st != DS_OK) goto done;
    printf("     describe: %s\n", ds_backbone_describe(b16));
    char want[200];
    snprintf(want, sizeof want, "mobilenet_v2 taps=6,13 D=128 dtype=bf16 (%s)", ds_gemm_bf16_kernel_name());
    test_cond("in bf16 it reports dtype bf16 and is described as the f32 one plus ' dtype=bf16 (kernel)'",
              ds_backbone_get_dtype(b16) == DS_DTYPE_BF16 && ds_backbone_get_dtype(b32) == DS_DTYPE_F32 &&
                  !strcmp(ds_backbone_describe(b16), want) &&
                  !strcmp(ds_backbone_describe(b32), "mobilenet_v2 taps=6,13 D=128"));
    /* one normal and one anomalous image of two tasks (the first rows of
     * each split in labels.csv order are not needed: fixed names) */
    const char *imgs[] = {"cxr_covidqu/test/anomaly", "brain_mri/test/anomaly", "cxr_covidqu/train/normal"};
    for (size_t i = 0; i < sizeof imgs / sizeof *imgs; i++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/data/%s", shared, imgs[i]);
        const char *arg = dir;
        ds_image_list *list = NULL;
        if (ds_image_list_expand(&arg, 1, 0, &list) != DS_OK || list->n == 0) {
            printf("SKIP (part): no images in %s\n", dir);
            ds_image_list_free(list);
            continue;
        }
        ds_image *src = test_load_image(list->paths[0], NULL), *prep = NULL;
        ds_preprocess_params pp = ds_preprocess_defaults();
        pp.size = 224;
        if (src && ds_preprocess_image(src, &pp, &prep) == DS_OK) {
            float *x = malloc(sizeof(float) * 3 * 224 * 224), *f = malloc(sizeof(float) * 784 * 128),
                  *g = malloc(sizeof(float) * 784 * 128);
            ds_backbone_normalize(b32, prep, x);
            bool ok = ds_backbone_forward(b32, x, 1, 224, 224, 1, f, NULL) == DS_OK &&
                      ds_backbone_forward(b16, x, 1, 224, 224, 1, g, NULL) == DS_OK;
            double cs = ok ? test_min_cosine(g, f, 784, 128) : 0, e = ok ? rel_err(g, f, 784 * 128) : INFINITY;
            int n999 = 0;
            for (int p = 0; ok && p < 784; p++) n999 += test_min_cosine(g + p * 128, f + p * 128, 1, 128) >= 0.999;
            char descr[1400];
            printf("     %s: bf16 vs f32 per patch: min cosine %.6f, %d of 784 >= 0.999, max|diff| / max|f32| %.2e\n",
                   list->paths[0], cs, n999, e);
            snprintf(descr, sizeof descr, "shipped MobileNetV2 at 224 on %s in bf16: every patch within cosine 0.995 of "
                     "f32, 95%% within 0.999", list->paths[0]);
            test_cond(descr, ok && cs >= 0.995 && n999 >= 745);
            free(x), free(f), free(g);
        } else {
            test_cond("a ../shared image loads and preprocesses", 0);
        }
        ds_image_free(src);
        ds_image_free(prep);
        ds_image_list_free(list);
    }

    /* the classifier on the .md's reference input: q = (R=w, G=h, B=(h+w)//2) */
    ds_weights *w = NULL;
    ds_cnn *cnn = NULL;
    if (ds_weights_load(model, &w) == DS_OK && ds_cnn_create(w, 2, DS_DTYPE_BF16, &cnn) == DS_OK) {
        ds_image *img = ds_image_create(224, 224, 3);
        for (int h = 0; h < 224; h++)
            for (int x = 0; x < 224; x++) {
                uint8_t *p = img->pixels + ((size_t)h * 224 + x) * 3;
                p[0] = (uint8_t)x, p[1] = (uint8_t)h, p[2] = (uint8_t)((h + x) / 2);
            }
        float *x = malloc(sizeof(float) * 3 * 224 * 224), logits[1001];
        ds_backbone_normalize(b32, img, x);
        int top = -1;
        if (ds_cnn_classify(cnn, x, 224, 224, NULL, logits) == DS_OK)
            for (int i = 0; i < 1001; i++)
                if (top < 0 || logits[i] > logits[top]) top = i;
        printf("     bf16 top-1: %d:%.5f (.md 645:4.65340)\n", top, top >= 0 ? logits[top] : 0.0f);
        test_cond("in bf16 the classifier's top-1 is the .md's class 645 with its logit to 2e-2 relative",
                  top == 645 && fabs(logits[645] / 4.65340 - 1) < 2e-2);
        ds_image_free(img);
        free(x);
    } else {
        test_cond("the shipped model builds in bf16 through ds_cnn_create", 0);
    }
    ds_cnn_free(cnn);
    ds_weights_free(w);
done:
    ds_backbone_free(b32);
    ds_backbone_free(b16);
}

static void test_params(void) {
    ds_weights *w = NULL;
    ds_cnn *cnn = NULL;
    bool loaded = ds_weights_load(fixture("cnn/resnet_basic.safetensors"), &w) == DS_OK;
    ds_status st = loaded ? ds_cnn_create(w, 1, DS_DTYPE_F16, &cnn) : DS_ERR_IO;
    printf("     f16: %s\n", ds_last_error());
    test_cond("a CNN in dtype f16 is refused as unsupported, naming the file", st == DS_ERR_UNSUPPORTED && !cnn &&
                                                                                 strstr(ds_last_error(), "resnet_basic"));
    ds_weights_free(w);
    const ds_dtype dts[2] = {DS_DTYPE_F32, DS_DTYPE_BF16};
    for (int i = 0; i < 2; i++) {
        ds_backbone *bb = NULL;
        bool bf = dts[i] == DS_DTYPE_BF16;
        st = ds_backbone_load(fixture("cnn/resnet_wide.safetensors"), &(ds_backbone_params){.dtype = dts[i]}, &bb);
        const char *d = st == DS_OK ? ds_backbone_describe(bb) : "";
        printf("     describe (%s): %s\n", ds_backbone_dtype_name(dts[i]), d);
        test_cond(bf ? "a ResNet loaded with dtype bf16 reports it and ends its description in ' dtype=bf16 (kernel)'"
                     : "a ResNet loaded in f32 (the default) reports f32, with no dtype note",
                  st == DS_OK && ds_backbone_get_dtype(bb) == dts[i] && (strstr(d, " dtype=bf16 (") != NULL) == bf &&
                      (strstr(d, "dtype") != NULL) == bf);
        ds_backbone_free(bb);
    }
}

int main(void) {
    test_params();
    test_ops();
    test_resnet("basic");
    test_resnet("wide");
    test_mobilenet_torchvision();
    test_mobilenet_shipped();
    test_report();
}
