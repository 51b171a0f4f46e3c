/* Preprocessing against its references, made by
 * tests/fixtures/make_image_fixtures.py:
 *   - 8-bit RGB <-> Lab against OpenCV 4.6 cvtColor: identical;
 *   - CLAHE (plane and RGB stain normalisation) against OpenCV 4.6, and the
 *     bicubic resize against torchvision 0.14 Resize / PIL 9.4, with the
 *     issue's tolerance: at most 1 grey level of difference on 99.9% of the
 *     pixels and never more than 2 (we measure, and print, exact equality);
 *   - ToTensor + Normalize against torchvision: identical floats;
 *   - real images: OpenCV's stain normalisation of 32x32 crops of
 *     ../shared/data images, skipped when ../shared is absent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/image.h"
#include "dinoscope/npy.h"
#include "dinoscope/preprocess.h"
#include "preprocess/preprocess_internal.h"
#include "test.h"

/* Worst-case statistics over every comparison, printed at the end for the
 * report (max level difference and share of pixels that differ by > 1). */
static int g_max_clahe = 0, g_max_resize = 0;
static size_t g_n_clahe = 0, g_over1_clahe = 0, g_diff_clahe = 0;
static size_t g_n_resize = 0, g_over1_resize = 0, g_diff_resize = 0;

typedef struct {
    int max;       /* largest |a - b| */
    size_t n, n_diff, n_over1;
} diff_stats;

static diff_stats compare_u8(const uint8_t *a, const uint8_t *b, size_t n) {
    diff_stats s = {0, n, 0, 0};
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > s.max) s.max = d;
        s.n_diff += d > 0;
        s.n_over1 += d > 1;
    }
    return s;
}

/* The tolerance: <= 1 level on 99.9% of the values, never > 2. */
static int within_tolerance(diff_stats s) { return s.max <= 2 && (double)s.n_over1 <= 0.001 * (double)s.n; }

static ds_image *load(const char *name) {
    ds_image *img = NULL;
    if (ds_image_load(fixture(name), NULL, &img) != DS_OK) {
        printf("cannot load %s: %s\n", name, ds_last_error());
        return NULL;
    }
    return img;
}

/* First channel of an RGB image loaded from a grey PNG, as a new buffer. */
static uint8_t *plane0(const ds_image *img) {
    size_t n = (size_t)img->width * (size_t)img->height;
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++) p[i] = img->pixels[i * 3];
    return p;
}

static void test_lab(void) {
    ds_image *rin = load("image/lab_rgb_in.png"), *rout = load("image/lab_rgb_out.png");
    ds_image *lin = load("image/lab_lab_in.png"), *lout = load("image/lab_lab_out.png");
    test_cond("Lab fixtures load", rin && rout && lin && lout);
    if (rin && rout && lin && lout) {
        size_t n = (size_t)rin->width * (size_t)rin->height;
        uint8_t *buf = malloc(n * 3);
        ds_lab_from_rgb_u8(rin->pixels, buf, n);
        diff_stats s = compare_u8(buf, rout->pixels, n * 3);
        printf("     RGB->Lab: %zu of %zu values differ from OpenCV\n", s.n_diff, s.n);
        test_cond("RGB -> Lab equals OpenCV 4.6 cvtColor(RGB2LAB) exactly on 4096 colours", s.n_diff == 0);
        ds_lab_to_rgb_u8(lin->pixels, buf, n);
        s = compare_u8(buf, lout->pixels, n * 3);
        printf("     Lab->RGB: %zu of %zu values differ from OpenCV\n", s.n_diff, s.n);
        test_cond("Lab -> RGB equals OpenCV 4.6 cvtColor(LAB2RGB) exactly on 4096 Lab triples", s.n_diff == 0);
        /* in place (same buffer for input and output) */
        memcpy(buf, rin->pixels, n * 3);
        ds_lab_from_rgb_u8(buf, buf, n);
        test_cond("RGB -> Lab works in place", memcmp(buf, rout->pixels, n * 3) == 0);
        free(buf);
    }
    ds_image_free(rin);
    ds_image_free(rout);
    ds_image_free(lin);
    ds_image_free(lout);
}

static void test_clahe_planes(void) {
    FILE *fp = fopen(fixture("image/clahe/cases.txt"), "r");
    test_cond("CLAHE case list opens", fp != NULL);
    if (!fp) return;
    char name[64], msg[256], path[128];
    double clip;
    int tiles, n_cases = 0;
    while (fscanf(fp, "%63s %lf %d", name, &clip, &tiles) == 3) {
        snprintf(path, sizeof path, "image/clahe/%s_in.png", name);
        ds_image *in = load(path);
        snprintf(path, sizeof path, "image/clahe/%s_out.png", name);
        ds_image *ref = load(path);
        if (!in || !ref) {
            test_cond("CLAHE fixture loads", 0);
            ds_image_free(in);
            ds_image_free(ref);
            continue;
        }
        uint8_t *src = plane0(in), *want = plane0(ref);
        size_t n = (size_t)in->width * (size_t)in->height;
        uint8_t *got = malloc(n);
        ds_status st = ds_clahe_plane_u8(src, (size_t)in->width, 1, got, (size_t)in->width, 1, in->width, in->height,
                                         clip, tiles, tiles);
        diff_stats s = st == DS_OK ? compare_u8(got, want, n) : (diff_stats){255, n, n, n};
        snprintf(msg, sizeof msg, "CLAHE %s (%dx%d, clip %g, %dx%d tiles) matches OpenCV (max diff %d, %zu/%zu differ)",
                 name, in->width, in->height, clip, tiles, tiles, s.max, s.n_diff, s.n);
        test_cond(msg, st == DS_OK && within_tolerance(s));
        if (s.max > g_max_clahe) g_max_clahe = s.max;
        g_n_clahe += s.n, g_over1_clahe += s.n_over1, g_diff_clahe += s.n_diff;
        /* in place on the L channel of an interleaved 3-channel buffer */
        uint8_t *inter = calloc(n * 3, 1);
        for (size_t i = 0; i < n; i++) inter[3 * i] = src[i];
        st = ds_clahe_plane_u8(inter, (size_t)in->width * 3, 3, inter, (size_t)in->width * 3, 3, in->width,
                               in->height, clip, tiles, tiles);
        int same = st == DS_OK;
        for (size_t i = 0; i < n && same; i++) same = inter[3 * i] == got[i] && inter[3 * i + 1] == 0;
        snprintf(msg, sizeof msg, "CLAHE %s in place on a strided plane gives the same result", name);
        test_cond(msg, same);
        free(inter);
        free(src);
        free(want);
        free(got);
        ds_image_free(in);
        ds_image_free(ref);
        n_cases++;
    }
    fclose(fp);
    test_cond("all CLAHE cases were read", n_cases >= 14);
}

static void test_clahe_rgb(void) {
    FILE *fp = fopen(fixture("image/clahe_rgb/cases.txt"), "r");
    test_cond("CLAHE RGB case list opens", fp != NULL);
    if (!fp) return;
    char name[64], msg[256], path[128];
    int n_cases = 0;
    while (fscanf(fp, "%63s", name) == 1) {
        snprintf(path, sizeof path, "image/clahe_rgb/%s_in.png", name);
        ds_image *img = load(path);
        snprintf(path, sizeof path, "image/clahe_rgb/%s_out.png", name);
        ds_image *ref = load(path);
        if (img && ref) {
            ds_status st = ds_clahe_rgb(img, 2.0, 8);
            diff_stats s = compare_u8(img->pixels, ref->pixels, (size_t)img->width * img->height * 3);
            snprintf(msg, sizeof msg,
                     "stain normalisation of %s (%dx%d) matches OpenCV RGB2LAB/CLAHE/LAB2RGB (max diff %d, %zu/%zu "
                     "differ)",
                     name, img->width, img->height, s.max, s.n_diff, s.n);
            test_cond(msg, st == DS_OK && within_tolerance(s));
            if (s.max > g_max_clahe) g_max_clahe = s.max;
            g_n_clahe += s.n, g_over1_clahe += s.n_over1, g_diff_clahe += s.n_diff;
            n_cases++;
        } else {
            test_cond("CLAHE RGB fixture loads", 0);
        }
        ds_image_free(img);
        ds_image_free(ref);
    }
    fclose(fp);
    test_cond("all CLAHE RGB cases were read", n_cases >= 7);

    /* argument errors leave the image unchanged */
    ds_image *g = ds_image_create(8, 8, 1);
    test_cond("ds_clahe_rgb refuses a 1-channel image (DS_ERR_SHAPE)", ds_clahe_rgb(g, 2.0, 8) == DS_ERR_SHAPE);
    ds_image_free(g);
    ds_image *c = ds_image_create(8, 8, 3);
    for (int i = 0; i < 8 * 8 * 3; i++) c->pixels[i] = (uint8_t)(i * 7);
    uint8_t before[8 * 8 * 3];
    memcpy(before, c->pixels, sizeof before);
    test_cond("ds_clahe_rgb refuses 0 tiles (DS_ERR_ARG)", ds_clahe_rgb(c, 2.0, 0) == DS_ERR_ARG);
    test_cond("ds_clahe_rgb refuses a negative clip limit (DS_ERR_ARG)", ds_clahe_rgb(c, -1.0, 8) == DS_ERR_ARG);
    test_cond("the error names the call", strstr(ds_last_error(), "ds_clahe_rgb") != NULL);
    test_cond("a refused CLAHE leaves the image unchanged", memcmp(before, c->pixels, sizeof before) == 0);
    ds_image_free(c);
}

static void test_resize(void) {
    FILE *fp = fopen(fixture("image/resize/cases.txt"), "r");
    test_cond("resize case list opens", fp != NULL);
    if (!fp) return;
    char name[64], msg[256], path[128];
    int ow, oh, n_cases = 0;
    while (fscanf(fp, "%63s %d %d", name, &ow, &oh) == 3) {
        snprintf(path, sizeof path, "image/resize/%s_in.png", name);
        ds_image *in = load(path);
        snprintf(path, sizeof path, "image/resize/%s_out.png", name);
        ds_image *ref = load(path);
        ds_image *out = NULL;
        if (in && ref) {
            ds_status st = ds_resize_bicubic(in, ow, oh, &out);
            int ok = st == DS_OK && out->width == ow && out->height == oh && out->channels == 3;
            diff_stats s = ok ? compare_u8(out->pixels, ref->pixels, (size_t)ow * oh * 3) : (diff_stats){255, 1, 1, 1};
            snprintf(msg, sizeof msg, "resize %s %dx%d -> %dx%d matches torchvision/PIL bicubic (max diff %d, %zu/%zu differ)",
                     name, in->width, in->height, ow, oh, s.max, s.n_diff, s.n);
            test_cond(msg, ok && within_tolerance(s));
            if (s.max > g_max_resize) g_max_resize = s.max;
            g_n_resize += s.n, g_over1_resize += s.n_over1, g_diff_resize += s.n_diff;
            /* the same on a 1-channel image (grey fixtures are R=G=B) */
            if (!strcmp(name, "down_grey_checker") || !strcmp(name, "same_width")) {
                ds_image *g = ds_image_create(in->width, in->height, 1), *go = NULL;
                for (int i = 0; i < in->width * in->height; i++) g->pixels[i] = in->pixels[3 * i];
                st = ds_resize_bicubic(g, ow, oh, &go);
                int same = st == DS_OK && go->channels == 1;
                for (int i = 0; same && i < ow * oh; i++) same = go->pixels[i] == out->pixels[3 * i];
                snprintf(msg, sizeof msg, "resize %s on a 1-channel image equals the RGB result", name);
                test_cond(msg, same);
                ds_image_free(go);
                ds_image_free(g);
            }
            n_cases++;
        } else {
            test_cond("resize fixture loads", 0);
        }
        ds_image_free(in);
        ds_image_free(ref);
        ds_image_free(out);
    }
    fclose(fp);
    test_cond("all resize cases were read", n_cases >= 9);

    ds_image *img = ds_image_create(4, 4, 3), *out = (ds_image *)0x1;
    test_cond("resize to 0x5 is refused (DS_ERR_ARG)", ds_resize_bicubic(img, 0, 5, &out) == DS_ERR_ARG);
    test_cond("a refused resize leaves *out unchanged", out == (ds_image *)0x1);
    test_cond("resize of NULL is refused", ds_resize_bicubic(NULL, 5, 5, &out) == DS_ERR_ARG);
    ds_image_free(img);
}

static void test_pipeline(void) {
    ds_image *in = load("image/pipeline_he224_in.png"), *ref = load("image/pipeline_he224_clahe_518.png");
    test_cond("pipeline fixtures load", in && ref);
    if (!in || !ref) return;
    ds_preprocess_params p = ds_preprocess_defaults();
    test_cond("defaults are size 518, no stain norm, clip 2, 8 tiles",
              p.size == 518 && p.stain == DS_STAIN_NONE && p.clahe_clip == 2.0 && p.clahe_tiles == 8);
    p.stain = DS_STAIN_CLAHE;
    ds_image *out = NULL;
    ds_status st = ds_preprocess_image(in, &p, &out);
    int ok = st == DS_OK && out->width == 518 && out->height == 518 && out->channels == 3;
    diff_stats s = ok ? compare_u8(out->pixels, ref->pixels, (size_t)518 * 518 * 3) : (diff_stats){255, 1, 1, 1};
    char msg[256];
    snprintf(msg, sizeof msg,
             "CLAHE then Resize((518, 518)) of a 224x224 H&E-like tile matches OpenCV + torchvision (max diff %d, "
             "%zu/%zu differ)",
             s.max, s.n_diff, s.n);
    test_cond(msg, ok && within_tolerance(s));
    ds_image_free(out);
    out = NULL;

    /* size 0 keeps the size; no stain norm then is a plain copy */
    p = ds_preprocess_defaults();
    p.size = 0;
    st = ds_preprocess_image(in, &p, &out);
    test_cond("size 0 and no stain normalisation return an identical copy",
              st == DS_OK && out->width == 224 && out->height == 224 &&
                  memcmp(out->pixels, in->pixels, (size_t)224 * 224 * 3) == 0);
    ds_image_free(out);
    out = NULL;

    /* a grey image is replicated to RGB before anything else */
    ds_image *g = ds_image_create(3, 2, 1);
    for (int i = 0; i < 6; i++) g->pixels[i] = (uint8_t)(40 * i);
    p.size = 0;
    st = ds_preprocess_image(g, &p, &out);
    int rep = st == DS_OK && out->channels == 3;
    for (int i = 0; rep && i < 6; i++) rep = out->pixels[3 * i] == g->pixels[i] && out->pixels[3 * i + 2] == g->pixels[i];
    test_cond("a 1-channel image comes out as R=G=B", rep);
    ds_image_free(out);
    ds_image_free(g);
    p.size = -3;
    out = (ds_image *)0x1;
    test_cond("a negative size is refused and *out is unchanged",
              ds_preprocess_image(in, &p, &out) == DS_ERR_ARG && out == (ds_image *)0x1);
    ds_image_free(in);
    ds_image_free(ref);
}

static void test_tensor(void) {
    ds_image *img = load("image/tensor_in.png");
    float *want = NULL;
    int nd = 0;
    int64_t shape[DS_NPY_MAX_DIMS];
    ds_status st = ds_npy_read_f32(fixture("image/tensor_out.npy"), &want, &nd, shape);
    test_cond("tensor fixtures load", img && st == DS_OK && nd == 3 && shape[0] == 3 && shape[1] == 6 && shape[2] == 5);
    if (img && st == DS_OK) {
        float got[3 * 6 * 5];
        ds_image_to_tensor(img, DS_IMAGENET_MEAN, DS_IMAGENET_STD, got);
        double m = max_abs_diff(got, want, 90, NULL);
        printf("     max |ours - torchvision| = %g\n", m);
        test_cond("ToTensor + Normalize(ImageNet) equals torchvision's float32 result exactly", m == 0.0);
        /* 1-channel input is replicated to the 3 planes */
        ds_image *g = ds_image_create(5, 6, 1);
        for (int i = 0; i < 30; i++) g->pixels[i] = img->pixels[3 * i];
        float gt[90];
        ds_image_to_tensor(g, DS_IMAGENET_MEAN, DS_IMAGENET_STD, gt);
        test_cond("a 1-channel image fills all three planes from its one channel",
                  gt[0] == got[0] && gt[30] == ((float)img->pixels[0] / 255.0f - DS_IMAGENET_MEAN[1]) / DS_IMAGENET_STD[1]);
        ds_image_free(g);
    }
    free(want);
    ds_image_free(img);
}

static void test_real_crops(void) {
    const char *shared = test_env("DS_SHARED", "../shared");
    FILE *fp = fopen(fixture("image/real/crops.txt"), "r");
    test_cond("real-crop list opens", fp != NULL);
    if (!fp) return;
    char name[64], rel[256], path[512], msg[512];
    int x, y, w, h;
    while (fscanf(fp, "%63s %255s %d %d %d %d", name, rel, &x, &y, &w, &h) == 6) {
        snprintf(path, sizeof path, "%s/data/%s", shared, rel);
        ds_image *full = NULL;
        if (ds_image_load(path, NULL, &full) != DS_OK) {
            printf("SKIP real crop %s: %s (no ../shared?)\n", name, ds_last_error());
            continue;
        }
        ds_image *crop = ds_image_create(w, h, 3);
        for (int r = 0; r < h; r++)
            memcpy(crop->pixels + (size_t)r * w * 3, full->pixels + ((size_t)(y + r) * full->width + x) * 3, (size_t)w * 3);
        snprintf(path, sizeof path, "image/real/%s_crop.png", name);
        ds_image *ref = load(path);
        ds_status st = ds_clahe_rgb(crop, 2.0, 8);
        diff_stats s = ref && st == DS_OK ? compare_u8(crop->pixels, ref->pixels, (size_t)w * h * 3) : (diff_stats){255, 1, 1, 1};
        snprintf(msg, sizeof msg, "stain normalisation of a %dx%d crop of %s matches OpenCV (max diff %d, %zu/%zu differ)",
                 w, h, rel, s.max, s.n_diff, s.n);
        test_cond(msg, within_tolerance(s));
        if (s.max > g_max_clahe) g_max_clahe = s.max;
        g_n_clahe += s.n, g_over1_clahe += s.n_over1, g_diff_clahe += s.n_diff;
        ds_image_free(full);
        ds_image_free(crop);
        ds_image_free(ref);
    }
    fclose(fp);
}

int main(void) {
    if (ds_image_init() != DS_OK) {
        printf("libvips failed to start: %s\n", ds_last_error());
        return 1;
    }
    test_lab();
    test_clahe_planes();
    test_clahe_rgb();
    test_resize();
    test_pipeline();
    test_tensor();
    test_real_crops();
    printf("summary: CLAHE vs OpenCV: max diff %d, %zu of %zu values differ (%zu by more than 1)\n", g_max_clahe,
           g_diff_clahe, g_n_clahe, g_over1_clahe);
    printf("summary: resize vs PIL/torchvision: max diff %d, %zu of %zu values differ (%zu by more than 1)\n",
           g_max_resize, g_diff_resize, g_n_resize, g_over1_resize);
    test_report();
}
