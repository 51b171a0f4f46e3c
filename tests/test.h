/* Minimal test harness in the spirit of Redis' testhelp.h: checks read as
 * sentences, a summary line "N passed, N failed" closes each test program. */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/npy.h"

static int ds_test_passed = 0, ds_test_failed = 0;

#define test_cond(descr, cond)                                              \
    do {                                                                    \
        if (cond) {                                                         \
            ds_test_passed++;                                               \
            printf("ok   %s\n", descr);                                     \
        } else {                                                            \
            ds_test_failed++;                                               \
            printf("FAIL %s  (%s:%d)\n", descr, __FILE__, __LINE__);        \
        }                                                                   \
        fflush(stdout);                                                     \
    } while (0)

#define test_report()                                                       \
    do {                                                                    \
        printf("%d passed, %d failed\n", ds_test_passed, ds_test_failed);   \
        return ds_test_failed ? 1 : 0;                                      \
    } while (0)

/* Exit code 77 = skipped (CTest SKIP_RETURN_CODE). */
#define test_skip(why)                                                      \
    do {                                                                    \
        printf("SKIP: %s\n", why);                                          \
        return 77;                                                          \
    } while (0)

static inline const char *test_env(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* path = $DS_FIXTURES/name, in a static buffer rotated over 8 slots. */
static inline const char *fixture(const char *name) {
    static char buf[8][1024];
    static int slot = 0;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", test_env("DS_FIXTURES", "tests/fixtures"), name);
    return buf[slot];
}

/* max |a-b| over n, and max |b| (for "to 1e-3 of the largest magnitude"). */
static inline double max_abs_diff(const float *a, const float *b, size_t n, double *max_ref) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as failure */
        if (fabs((double)b[i]) > r) r = fabs((double)b[i]);
    }
    if (max_ref) *max_ref = r;
    return m;
}

/* Smallest cosine between rows of a and b ([n, D]), e.g. per patch; two
 * zero rows count as 1, NaN as a failure (the result is then below any bar). */
static inline double test_min_cosine(const float *a, const float *b, size_t n, int D) {
    double worst = 1.0;
    for (size_t r = 0; r < n; r++) {
        double ab = 0, aa = 0, bb = 0;
        for (int j = 0; j < D; j++) {
            double x = a[r * D + j], y = b[r * D + j];
            ab += x * y, aa += x * x, bb += y * y;
        }
        double c = aa == 0 && bb == 0 ? 1.0 : ab / sqrt(aa * bb);
        if (!(c >= worst)) worst = c > -2.0 ? c : -2.0; /* NaN -> -2 */
    }
    return worst;
}

/* The whole file (malloc'd, NUL-terminated beyond its *n bytes), NULL if
 * unreadable; n may be NULL. */
static inline unsigned char *test_read_bytes(const char *path, size_t *n_bytes) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    unsigned char *s = NULL;
    long n = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (n >= 0 && fseek(fp, 0, SEEK_SET) == 0 && (s = malloc((size_t)n + 1)) && fread(s, 1, (size_t)n, fp) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = 0;
    if (s && n_bytes) *n_bytes = (size_t)n;
    fclose(fp);
    return s;
}

/* The whole file as a NUL-terminated string (malloc'd), NULL if unreadable. */
static inline char *test_read_text(const char *path) { return (char *)test_read_bytes(path, NULL); }

/* A float32 .npy fixture ($DS_FIXTURES/name), NULL (reason printed) on
 * failure; *count (may be NULL) gets the number of elements. */
static inline float *test_load_npy(const char *name, size_t *count) {
    float *d = NULL;
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(fixture(name), &d, &nd, shape) != DS_OK) {
        printf("     cannot read %s: %s\n", name, ds_last_error());
        return NULL;
    }
    size_t c = 1;
    for (int i = 0; i < nd; i++) c *= (size_t)shape[i];
    if (count) *count = c;
    return d;
}

#ifdef DINOSCOPE_IMAGE_H
/* ds_image_load that prints the reason on failure (tests that include
 * dinoscope/image.h before this header). NULL on failure. */
static inline ds_image *test_load_image(const char *path, const ds_image_load_params *p) {
    ds_image *img = NULL;
    if (ds_image_load(path, p, &img) != DS_OK) {
        printf("     load '%s' failed: %s\n", path, ds_last_error());
        return NULL;
    }
    return img;
}
#endif

#endif
