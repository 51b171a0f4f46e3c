/* Internal helpers shared by every module (not installed). */
#ifndef DS_INTERNAL_H
#define DS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dinoscope/dinoscope.h"

#define DS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Records the message for ds_last_error() and returns status, so that a
 * failure is reported where it is detected: return ds_set_error(...). */
ds_status ds_set_error(ds_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Internal invariants only: never for input or file contents. Prints and
 * traps so that a bug is loud in tests; callers' data never reaches it. */
#define DS_ASSERT(cond)                                                                      \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: internal invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            __builtin_trap();                                                                \
        }                                                                                    \
    } while (0)

/* Overflow-checked size arithmetic: false when the result does not fit. */
static inline bool ds_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool ds_add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }

/* malloc/calloc of n elements of size sz, NULL (with error set) on overflow or
 * failure. 64-byte aligned, freed with free(). */
void *ds_alloc(size_t n, size_t sz, const char *what);
void *ds_calloc(size_t n, size_t sz, const char *what);

/* Atomic file output: write to "<path>.tmp.<pid>.<serial>" (registered for
 * removal on SIGINT/SIGTERM, see ds_signal_cleanup_install), then rename over
 * path. ds_atomic_open returns an error (naming path) if the temp file
 * cannot be created; ds_atomic_commit closes, fsyncs and renames (or removes
 * the temp file if ok is false or any write failed: a full disk or
 * RLIMIT_FSIZE gives "cannot write '<path>': ..."). */
typedef struct {
    FILE *fp;
    char *tmp_path;
    char *final_path;
    int slot; /* ds_temp_register's, -1 if none */
} ds_atomic_file;
ds_status ds_atomic_open(ds_atomic_file *af, const char *path);
ds_status ds_atomic_commit(ds_atomic_file *af, bool ok);
/* A zeroed writer object of size bytes whose ds_atomic_file (at byte offset
 * af_offset) is open on path: *out, to free after ds_atomic_commit. On
 * failure nothing is allocated and the error is set. */
ds_status ds_atomic_writer_new(size_t size, size_t af_offset, const char *path, void **out);

/* Half- and bfloat16 to f32 conversion (IEEE 754 binary16 incl. subnormals). */
float ds_f16_to_f32(uint16_t h);
/* Round to nearest even, inf beyond +-65504 (numpy float16(x)). */
uint16_t ds_f32_to_f16(float f);
static inline float ds_bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)b << 16};
    return v.f;
}

/* Keys (1981) cubic convolution kernel with a = -0.5, as PIL's
 * bicubic_filter (resize) and its antialiased use for position embeddings. */
static inline double ds_cubic_kernel(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Number of threads for n_threads = 0 (auto): the OpenMP default. */
int ds_resolve_threads(int n_threads);
/* Sets OpenBLAS's thread count (our only BLAS knob; see STYLE threading) and
 * returns the previous one, which the caller restores before it returns:
 *   int prev = ds_blas_set_threads(1); ...; ds_blas_set_threads(prev);
 * so that a library call leaves the process' BLAS setting as it found it. */
int ds_blas_set_threads(int n_threads);

/* Monotonic clock in milliseconds, for the timings callers are given. */
double ds_now_ms(void);

#endif
