/* Shared by the files of src/eval (not installed). */
#ifndef DS_EVAL_INTERNAL_H
#define DS_EVAL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* A sample is one 64-bit record: (key << 32) | payload. The key orders like
 * the score; the payload is 0 for a normal sample and nonzero for an
 * anomalous one (1 for image labels, the region id for pixels). Sorting one
 * array of 8-byte records moves label and score together without an index
 * indirection. */

/* Float -> unsigned key with the same order (the usual radix-sort trick:
 * flip all bits of negatives, the sign bit of positives). -0 is mapped to +0
 * first, because sklearn/numpy treat them as one tied threshold. */
static inline uint32_t ds_eval_key(float f) {
    union { float f; uint32_t u; } v = {.f = f + 0.0f}; /* -0 + 0 = +0 */
    return (v.u & 0x80000000u) ? ~v.u : (v.u | 0x80000000u);
}

static inline float ds_eval_key_to_float(uint32_t k) {
    union { float f; uint32_t u; } v = {.u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k};
    return v.f;
}

/* Sorts rec[n] ascending by key (upper 32 bits; payload order within equal
 * keys is unspecified). LSD radix sort, digits of 11/11/10 bits, tmp[n] is
 * scratch. Returns rec or tmp, whichever holds the sorted data. Can't fail. */
uint64_t *ds_eval_radix_sort(uint64_t *rec, uint64_t *tmp, size_t n);

/* ds_alloc for the per-pixel buffers (hundreds of MB): 2 MiB aligned and
 * marked MADV_HUGEPAGE where available, because first touch of fresh 4 KiB
 * pages dominates on this kind of machine (filling 160 MB: 0.49 s with 4 KiB
 * pages, 0.04 s with huge pages). Freed with free(); NULL with the error
 * set on failure. */
void *ds_eval_alloc_big(size_t n, size_t sz, const char *what);

/* Everything one descending walk over distinct thresholds gives. */
typedef struct {
    uint64_t n_pos, n_neg;
    double auroc;     /* valid if n_pos > 0 and n_neg > 0 */
    double ap;        /* valid if n_pos > 0 */
    double f1;        /* valid if n_pos > 0 */
    float f1_threshold;
} ds_eval_stats;

/* rec[n] sorted ascending by key, n < 2^32. Can't fail. */
void ds_eval_stats_sorted(const uint64_t *rec, size_t n, ds_eval_stats *st);

#endif
