/* Minimal test harness in the spirit of Redis' testhelp.h: checks read as
 * sentences, a summary line "N passed, N failed" closes each test program. */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
