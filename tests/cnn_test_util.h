/* Helpers shared by the CNN tests (test_cnn.c, test_cnn_bf16.c): the
 * fixture script's formula input and the single-op arrays of ops.json.
 * Include after test.h and test_json.h. */
#ifndef DS_CNN_TEST_UTIL_H
#define DS_CNN_TEST_UTIL_H

#include "cnn/cnn_internal.h"
#include "dinoscope/image.h"

/* The formula input of tests/fixtures/make_cnn_fixtures.py: R = 4w, G = 4h,
 * B = 2(h+w) mod 256. */
static inline ds_image *formula_image(int H, int W) {
    ds_image *img = ds_image_create(W, H, 3);
    for (int h = 0; img && h < H; h++)
        for (int w = 0; w < W; w++) {
            uint8_t *p = img->pixels + ((size_t)h * W + w) * 3;
            p[0] = (uint8_t)((4 * w) % 256), p[1] = (uint8_t)((4 * h) % 256), p[2] = (uint8_t)((2 * (h + w)) % 256);
        }
    return img;
}

/* A .npy named by key in an ops.json case (relative to tests/fixtures/cnn). */
static inline float *op_npy(const cJSON *c, const char *key) {
    char name[256];
    snprintf(name, sizeof name, "cnn/%s", jstr(c, key));
    return test_load_npy(name, NULL);
}

/* conv on x [cin, H, W] with the GEMM kernel given (bf16 convs), without
 * and with the residual res: *out and *out_res (malloc'd, [cout, Ho, Wo]).
 * A dry run first sizes the scratch, as ds_cnn does. */
static inline void conv_run(const cnn_conv *conv, ds_gemm_bf16_kernel kernel, const float *x, int H, int W,
                            const float *res, float **out, float **out_res, int *Ho, int *Wo) {
    cnn_scratch s = {.dry = true, .n_threads = 2, .kernel = kernel};
    cnn_conv_forward(conv, &s, NULL, H, W, NULL, NULL, Ho, Wo);
    s.dry = false;
    s.cols = malloc(sizeof(float) * (s.need_cols + 1));
    s.thread_buf = malloc(sizeof(float) * (2 * s.need_thread + 1));
    size_t n = (size_t)conv->cout * *Ho * *Wo;
    *out = malloc(sizeof(float) * n);
    *out_res = malloc(sizeof(float) * n);
    cnn_conv_forward(conv, &s, x, H, W, *out, NULL, Ho, Wo);
    cnn_conv_forward(conv, &s, x, H, W, *out_res, res, Ho, Wo);
    free(s.cols);
    free(s.thread_buf);
}

#endif
