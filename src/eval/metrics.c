/* Image-level metrics: AUROC, average precision, F1-max, threshold at a
 * false-positive rate, and the distinct-threshold curve.
 *
 * All of them are one walk over the samples sorted by score, from the
 * highest score down, one step per distinct score ("threshold"), as
 * sklearn.metrics._ranking._binary_clf_curve builds its (fps, tps,
 * thresholds) arrays. Counts are integers, so ties are exact. */
#define _DEFAULT_SOURCE /* madvise */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "core/internal.h"
#include "dinoscope/eval.h"
#include "eval/eval_internal.h"

void *ds_eval_alloc_big(size_t n, size_t sz, const char *what) {
    enum { HUGE_PAGE = 2u << 20 };
    size_t bytes;
    if (!ds_mul_size(n, sz, &bytes) || bytes < 2 * (size_t)HUGE_PAGE) return ds_alloc(n, sz, what);
    if (!ds_add_size(bytes, HUGE_PAGE - 1, &bytes)) return ds_alloc(n, sz, what); /* reports the overflow */
    bytes &= ~(size_t)(HUGE_PAGE - 1);
    void *p = aligned_alloc(HUGE_PAGE, bytes);
    if (!p) {
        ds_set_error(DS_ERR_NOMEM, "%s: out of memory (%zu bytes)", what, bytes);
        return NULL;
    }
#if defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE); /* a hint: failure changes nothing */
#endif
    return p;
}

uint64_t *ds_eval_radix_sort(uint64_t *rec, uint64_t *tmp, size_t n) {
    /* LSD radix over the key's 32 bits in 3 digits (11, 11, 10 bits): 2048
     * buckets keep the scatter targets within L1/L2 while needing one pass
     * fewer than 8-bit digits. One read pass builds all three histograms; a
     * digit that is the same for every record is skipped (common for scores
     * in a narrow range, where the top bits never change). */
    enum { BITS = 11, BUCKETS = 1 << BITS };
    static const int shift[3] = {32, 43, 54};
    /* 48 KiB on the stack: small enough for any thread's stack, and the
     * sort then cannot fail. */
    size_t hist[3 * BUCKETS];
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rec[i];
        hist[0 * BUCKETS + ((r >> 32) & (BUCKETS - 1))]++;
        hist[1 * BUCKETS + ((r >> 43) & (BUCKETS - 1))]++;
        hist[2 * BUCKETS + (r >> 54)]++;
    }
    uint64_t *src = rec, *dst = tmp;
    for (int d = 0; d < 3; d++) {
        size_t *h = hist + (size_t)d * BUCKETS;
        size_t sum = 0;
        int trivial = 0;
        for (int b = 0; b < BUCKETS; b++) {
            size_t c = h[b];
            if (c == n) trivial = 1;
            h[b] = sum;
            sum += c;
        }
        if (trivial) continue;
        const int s = shift[d];
        for (size_t i = 0; i < n; i++) {
            uint64_t r = src[i];
            dst[h[(r >> s) & (BUCKETS - 1)]++] = r;
        }
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

void ds_eval_stats_sorted(const uint64_t *rec, size_t n, ds_eval_stats *st) {
    uint64_t n_pos = 0;
    for (size_t i = 0; i < n; i++) n_pos += (uint32_t)rec[i] != 0;
    const uint64_t P = n_pos;

    uint64_t tp = 0, fp = 0;
    /* Twice the ROC area in units of 1/(P*N): the trapezoid between
     * consecutive distinct thresholds is fp_g * (tp_prev + tp_g / 2)
     * (sklearn's np.trapz over its roc_curve), i.e. the Mann-Whitney U with
     * ties counted one half. With n < 2^32 the sum stays below 2PN <= n^2/2
     * < 2^63, so it is exact. */
    uint64_t auc2 = 0;
    double ap = 0;
    /* F1 = 2tp/(tp+fp+P) orders like tp/(fp+P); both factors of the cross
     * products are < 2^32, so comparing in uint64 is exact. */
    uint64_t best_tp = 0, best_den = 1;
    uint32_t best_key = 0;

    size_t i = n;
    while (i > 0) {
        const uint32_t k = (uint32_t)(rec[i - 1] >> 32);
        size_t j = i;
        uint64_t tg = 0;
        do { /* one run of equal scores = one threshold */
            j--;
            tg += (uint32_t)rec[j] != 0;
        } while (j > 0 && (uint32_t)(rec[j - 1] >> 32) == k);
        const uint64_t fg = (uint64_t)(i - j) - tg;
        i = j;
        auc2 += fg * (2 * tp + tg);
        tp += tg;
        fp += fg;
        /* average_precision_score: sum (R_k - R_{k-1}) P_k, R_k - R_{k-1} =
         * tg/P, P_k = tp/(tp+fp) at this threshold; divided by P below. */
        if (tg) ap += (double)tg * ((double)tp / (double)(tp + fp));
        /* ">=": among equal F1 the later (lower) threshold wins. */
        if (tp * best_den >= best_tp * (fp + P)) {
            best_tp = tp;
            best_den = fp + P;
            best_key = k;
        }
    }
    st->n_pos = P;
    st->n_neg = n - P;
    st->auroc = (P && n > P) ? (double)auc2 / (2.0 * (double)P * (double)(n - P)) : 0.0;
    st->ap = P ? ap / (double)P : 0.0;
    st->f1 = P ? 2.0 * (double)best_tp / (double)(best_tp + best_den) : 0.0;
    st->f1_threshold = ds_eval_key_to_float(best_key);
}

/* Checks the common arguments and builds the sorted records. On success
 * *out (to free) and *sorted (within it) are set. */
static ds_status build_sorted(const char *fn, const float *scores, const int *labels, int need_labels, int64_t n,
                              uint64_t **out, uint64_t **sorted) {
    if (!scores || (need_labels && !labels))
        return ds_set_error(DS_ERR_ARG, "%s: NULL %s", fn, scores ? "labels" : "scores");
    if (n < 1 || (uint64_t)n >= (1ull << 32))
        return ds_set_error(DS_ERR_ARG, "%s: n = %lld, expected 1 <= n < 2^32", fn, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(scores[i]))
            return ds_set_error(DS_ERR_ARG, "%s: score %lld is %s (scores must be finite)", fn, (long long)i,
                                isnan(scores[i]) ? "NaN" : "infinite");
        if (labels && labels[i] != 0 && labels[i] != 1)
            return ds_set_error(DS_ERR_ARG, "%s: label %lld is %d, expected 0 (normal) or 1 (anomalous)", fn,
                                (long long)i, labels[i]);
    }
    uint64_t *buf = ds_eval_alloc_big(2 * (size_t)n, sizeof *buf, fn);
    if (!buf) return DS_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++)
        buf[i] = ((uint64_t)ds_eval_key(scores[i]) << 32) | (uint64_t)(labels ? labels[i] : 0);
    *out = buf;
    *sorted = ds_eval_radix_sort(buf, buf + n, (size_t)n);
    return DS_OK;
}

/* The image-level statistics behind AUROC / AP / F1-max, after the checks
 * they share: a non-NULL output, both classes (AUROC) or an anomalous
 * sample (the others). */
static ds_status image_stats(const char *fn, const void *out, bool need_normal, const float *scores, const int *labels,
                             int64_t n, ds_eval_stats *st) {
    if (!out) return ds_set_error(DS_ERR_ARG, "%s: NULL output", fn);
    uint64_t *buf, *sorted;
    ds_status s = build_sorted(fn, scores, labels, 1, n, &buf, &sorted);
    if (s != DS_OK) return s;
    ds_eval_stats_sorted(sorted, (size_t)n, st);
    free(buf);
    if (need_normal && (!st->n_pos || !st->n_neg))
        return ds_set_error(DS_ERR_ARG, "%s: only one class present (n_pos=%llu, n_neg=%llu); "
                            "AUROC needs normal and anomalous samples",
                            fn, (unsigned long long)st->n_pos, (unsigned long long)st->n_neg);
    if (!st->n_pos)
        return ds_set_error(DS_ERR_ARG, "%s: no anomalous sample (n_pos=0, n_neg=%llu)", fn,
                            (unsigned long long)st->n_neg);
    return DS_OK;
}

ds_status ds_eval_auroc(const float *scores, const int *labels, int64_t n, double *auroc) {
    ds_eval_stats st;
    ds_status s = image_stats("ds_eval_auroc", auroc, true, scores, labels, n, &st);
    if (s == DS_OK) *auroc = st.auroc;
    return s;
}

ds_status ds_eval_average_precision(const float *scores, const int *labels, int64_t n, double *ap) {
    ds_eval_stats st;
    ds_status s = image_stats("ds_eval_average_precision", ap, false, scores, labels, n, &st);
    if (s == DS_OK) *ap = st.ap;
    return s;
}

ds_status ds_eval_f1_max(const float *scores, const int *labels, int64_t n, double *f1, float *threshold) {
    ds_eval_stats st;
    ds_status s = image_stats("ds_eval_f1_max", f1, false, scores, labels, n, &st);
    if (s != DS_OK) return s;
    *f1 = st.f1;
    if (threshold) *threshold = st.f1_threshold;
    return DS_OK;
}

ds_status ds_eval_threshold_at_fpr(const float *normal_scores, int64_t n, double fpr, float *threshold) {
    if (!threshold) return ds_set_error(DS_ERR_ARG, "ds_eval_threshold_at_fpr: NULL output");
    if (!(fpr >= 0.0 && fpr <= 1.0))
        return ds_set_error(DS_ERR_ARG, "ds_eval_threshold_at_fpr: fpr = %g, expected 0 <= fpr <= 1", fpr);
    uint64_t *buf, *sorted;
    ds_status s = build_sorted("ds_eval_threshold_at_fpr", normal_scores, NULL, 0, n, &buf, &sorted);
    if (s != DS_OK) return s;
    /* Walk down the distinct scores; the flagged count only grows, so the
     * last value that still satisfies count/n <= fpr is the smallest. The
     * test is written as the rate itself (count/n <= fpr in double) rather
     * than count <= floor(fpr*n), so that e.g. fpr = 0.29, n = 100 allows
     * 29 (0.29*100 rounds to 28.999...). */
    const uint32_t max_key = (uint32_t)(sorted[n - 1] >> 32);
    uint32_t best = 0;
    int found = 0;
    uint64_t count = 0;
    size_t i = (size_t)n;
    while (i > 0) {
        const uint32_t k = (uint32_t)(sorted[i - 1] >> 32);
        while (i > 0 && (uint32_t)(sorted[i - 1] >> 32) == k) {
            count++;
            i--;
        }
        if ((double)count / (double)n <= fpr) {
            best = k;
            found = 1;
        } else {
            break;
        }
    }
    free(buf);
    *threshold = found ? ds_eval_key_to_float(best) : nextafterf(ds_eval_key_to_float(max_key), INFINITY);
    return DS_OK;
}

ds_status ds_eval_curve(const float *scores, const int *labels, int64_t n, float *thresholds, int64_t *tp,
                        int64_t *fp, int64_t *n_points) {
    if (!thresholds || !tp || !fp || !n_points) return ds_set_error(DS_ERR_ARG, "ds_eval_curve: NULL output");
    uint64_t *buf, *sorted;
    ds_status s = build_sorted("ds_eval_curve", scores, labels, 1, n, &buf, &sorted);
    if (s != DS_OK) return s;
    int64_t m = 0, t = 0, f = 0;
    size_t i = (size_t)n;
    while (i > 0) {
        const uint32_t k = (uint32_t)(sorted[i - 1] >> 32);
        while (i > 0 && (uint32_t)(sorted[i - 1] >> 32) == k) {
            if ((uint32_t)sorted[i - 1]) t++;
            else f++;
            i--;
        }
        thresholds[m] = ds_eval_key_to_float(k);
        tp[m] = t;
        fp[m] = f;
        m++;
    }
    free(buf);
    *n_points = m;
    return DS_OK;
}

/* ---- the figures of one scorer, and a threshold's confusion ---------- */

static ds_status check_image_args(const char *fn, const float *scores, const int *labels, int64_t n) {
    if (!scores || !labels) return ds_set_error(DS_ERR_ARG, "%s: NULL scores or labels", fn);
    if (n < 1 || n >= ((int64_t)1 << 32)) return ds_set_error(DS_ERR_ARG, "%s: n = %lld out of range", fn, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(scores[i]))
            return ds_set_error(DS_ERR_ARG, "%s: score %lld is not finite", fn, (long long)i);
        if (labels[i] != 0 && labels[i] != 1)
            return ds_set_error(DS_ERR_ARG, "%s: label %lld is %d, expected 0 or 1", fn, (long long)i, labels[i]);
    }
    return DS_OK;
}

ds_status ds_eval_image_figures(const float *scores, const int *labels, int64_t n, ds_eval_figures *out) {
    if (!out) return ds_set_error(DS_ERR_ARG, "ds_eval_image_figures: NULL output");
    ds_status st = check_image_args("ds_eval_image_figures", scores, labels, n);
    if (st != DS_OK) return st;
    ds_eval_figures f = {.image_auroc = NAN, .average_precision = NAN, .f1_max = NAN, .f1_threshold = NAN,
                         .pixel_auroc = NAN, .aupro = NAN};
    for (int64_t i = 0; i < n; i++) f.n_anomalous += labels[i];
    f.n_normal = n - f.n_anomalous;
    if (f.n_anomalous > 0 && f.n_normal > 0 && (st = ds_eval_auroc(scores, labels, n, &f.image_auroc)) != DS_OK)
        return st;
    if (f.n_anomalous > 0) {
        if ((st = ds_eval_average_precision(scores, labels, n, &f.average_precision)) != DS_OK) return st;
        if ((st = ds_eval_f1_max(scores, labels, n, &f.f1_max, &f.f1_threshold)) != DS_OK) return st;
    }
    *out = f;
    return DS_OK;
}

ds_status ds_eval_at_threshold(const float *scores, const int *labels, int64_t n, float threshold,
                               ds_eval_confusion *out) {
    if (!out) return ds_set_error(DS_ERR_ARG, "ds_eval_at_threshold: NULL output");
    ds_status st = check_image_args("ds_eval_at_threshold", scores, labels, n);
    if (st != DS_OK) return st;
    ds_eval_confusion c = {.threshold = threshold};
    for (int64_t i = 0; i < n; i++) {
        bool flagged = scores[i] >= threshold;
        if (labels[i]) flagged ? c.tp++ : c.fn++;
        else flagged ? c.fp++ : c.tn++;
    }
    c.precision = c.tp + c.fp ? (double)c.tp / (double)(c.tp + c.fp) : NAN;
    c.recall = c.tp + c.fn ? (double)c.tp / (double)(c.tp + c.fn) : NAN;
    c.fpr = c.fp + c.tn ? (double)c.fp / (double)(c.fp + c.tn) : NAN;
    *out = c;
    return DS_OK;
}

/* ---- the report object -------------------------------------------------- */
