/* Cost of preparing one image for the network: decode a 512x512 RGB PNG
 * (and JPEG) from disk, CLAHE stain normalisation, bicubic resize to
 * 518x518, ToTensor + Normalize. Median of N runs, per stage and in total,
 * in milliseconds, single thread (preparation runs one image per thread).
 * The lead compares the total with a ViT-S/14 forward pass at 518.
 *
 * Build and run (from the repository root, after building the library in
 * build-<name>):
 *   gcc -O3 -march=native -std=c11 -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc \
 *       bench/bench_preprocess.c build-<name>/libdinoscope.a \
 *       $(pkg-config --cflags --libs vips openblas libcjson libzip) -fopenmp -lm \
 *       -o build-<name>/bench_preprocess
 *   build-<name>/bench_preprocess [N=50] [size=512]
 *   BENCH_CPU=1 build-<name>/bench_preprocess    # process CPU time instead of wall time
 * The test image is synthetic (seeded, H&E-like: pink background, purple
 * blobs, noise) and written to $TMPDIR (default /tmp). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "dinoscope/image.h"
#include "dinoscope/preprocess.h"

/* Wall time, or with BENCH_CPU=1 the CPU time of the whole process (libvips
 * decodes in a worker thread): on a shared, loaded machine CPU time is the
 * stabler measure of the work itself. */
static clockid_t g_clock = CLOCK_MONOTONIC;
static double now_ms(void) {
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* deterministic H&E-like picture */
static void synth(ds_image *img) {
    uint32_t s = 12345;
    const int w = img->width, h = img->height;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double r = 235, g = 190, b = 215;
            double m = 0.5 + 0.5 * sin(x / 23.0) * cos(y / 19.0);
            m = m * m * m;
            r = r * (1 - 0.8 * m) + 90 * 0.8 * m;
            g = g * (1 - 0.8 * m) + 40 * 0.8 * m;
            b = b * (1 - 0.8 * m) + 140 * 0.8 * m;
            s = s * 1664525u + 1013904223u;
            double n = ((s >> 24) & 255) / 255.0 * 12 - 6;
            uint8_t *p = img->pixels + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)fmin(255, fmax(0, r + n));
            p[1] = (uint8_t)fmin(255, fmax(0, g + n));
            p[2] = (uint8_t)fmin(255, fmax(0, b + n));
        }
}

static void run(const char *label, const char *path, int n_runs) {
    double *t_dec = malloc(sizeof(double) * n_runs), *t_clahe = malloc(sizeof(double) * n_runs),
           *t_res = malloc(sizeof(double) * n_runs), *t_ten = malloc(sizeof(double) * n_runs),
           *t_all = malloc(sizeof(double) * n_runs);
    float *tensor = malloc(sizeof(float) * 3 * 518 * 518);
    for (int r = -10; r < n_runs; r++) { /* 10 warm-up runs: the first ones pay for fresh pages */
        double t0 = now_ms();
        ds_image *img = NULL, *res = NULL;
        if (ds_image_load(path, NULL, &img) != DS_OK) {
            fprintf(stderr, "%s\n", ds_last_error());
            exit(1);
        }
        double t1 = now_ms();
        ds_clahe_rgb(img, 2.0, 8);
        double t2 = now_ms();
        ds_resize_bicubic(img, 518, 518, &res);
        double t3 = now_ms();
        ds_image_to_tensor(res, DS_IMAGENET_MEAN, DS_IMAGENET_STD, tensor);
        double t4 = now_ms();
        ds_image_free(img);
        ds_image_free(res);
        if (r < 0) continue;
        t_dec[r] = t1 - t0, t_clahe[r] = t2 - t1, t_res[r] = t3 - t2, t_ten[r] = t4 - t3, t_all[r] = t4 - t0;
    }
    printf("%-5s decode %6.2f  clahe %6.2f  resize %6.2f  to_tensor %6.2f  total %6.2f ms (median of %d)\n", label,
           median(t_dec, n_runs), median(t_clahe, n_runs), median(t_res, n_runs), median(t_ten, n_runs),
           median(t_all, n_runs), n_runs);
    free(t_dec), free(t_clahe), free(t_res), free(t_ten), free(t_all), free(tensor);
}

int main(int argc, char **argv) {
    int n_runs = argc > 1 ? atoi(argv[1]) : 50, size = argc > 2 ? atoi(argv[2]) : 512;
    if (n_runs < 1 || size < 8 || ds_image_init() != DS_OK) return 2;
    if (getenv("BENCH_CPU") && atoi(getenv("BENCH_CPU"))) g_clock = CLOCK_PROCESS_CPUTIME_ID;
    vips_concurrency_set(1); /* one image per thread, as in a parallel run over images */
    const char *tmpdir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char png[512], jpg[512];
    snprintf(png, sizeof png, "%s/bench_preprocess_%d.png", tmpdir, (int)getpid());
    snprintf(jpg, sizeof jpg, "%s/bench_preprocess_%d.jpg", tmpdir, (int)getpid());
    ds_image *img = ds_image_create(size, size, 3);
    synth(img);
    if (ds_image_save_png(png, img) != DS_OK) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    VipsImage *v = vips_image_new_from_memory(img->pixels, (size_t)size * size * 3, size, size, 3, VIPS_FORMAT_UCHAR);
    if (!v || vips_jpegsave(v, jpg, "Q", 90, NULL) != 0) return 1;
    g_object_unref(v);
    ds_image_free(img);
    printf("preprocess %dx%d RGB -> CLAHE(2.0, 8x8) -> bicubic 518x518 -> tensor, 1 thread, libvips %s, %s time\n",
           size, size, vips_version_string(), g_clock == CLOCK_MONOTONIC ? "wall" : "process CPU");
    run("PNG", png, n_runs);
    run("JPEG", jpg, n_runs);
    remove(png);
    remove(jpg);
    return 0;
}
