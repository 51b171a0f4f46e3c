/* Evaluation metrics: image-level AUROC, average precision, F1-max and its
 * threshold, a threshold at a chosen false-positive rate, and pixel-level
 * AUROC and AUPRO over whole test sets.
 *
 * Each metric equals its reference on the same scores, ties included:
 *   AUROC              sklearn.metrics.roc_auc_score
 *   average precision  sklearn.metrics.average_precision_score (step-wise)
 *   F1-max             max over sklearn.metrics.precision_recall_curve
 *   AUPRO              MVTec AD compute_pro + trapezoid(x_max) / x_max
 *                      (Bergmann et al., IJCV 2021)
 * Counts are exact integers and areas are accumulated in double.
 *
 * Image level, scores [n] f32 (higher = more anomalous), labels [n] int
 * (0 = normal, 1 = anomalous):
 *
 *   double auroc;
 *   if (ds_eval_auroc(scores, labels, n, &auroc) != DS_OK)
 *       fprintf(stderr, "%s\n", ds_last_error());
 *
 * Pixel level, one image at a time (sizes may differ between images):
 *
 *   ds_eval_pixels *px;
 *   ds_eval_pixels_create(0, &px);
 *   for (i = 0; i < n_test; i++)
 *       ds_eval_pixels_add(px, map[i], mask[i], H, W); // mask NULL: normal image
 *   ds_eval_pixels_auroc(px, &pixel_auroc);
 *   ds_eval_pixels_aupro(px, 0.3, &aupro);
 *   ds_eval_pixels_free(px);
 *
 * Threshold convention everywhere: a score s is predicted anomalous when
 * s >= threshold (sklearn's precision_recall_curve convention).
 * Scores must be finite (sklearn rejects NaN and inf too).
 * Reports that gather these figures over a test set: report.h.
 */
#ifndef DINOSCOPE_EVAL_H
#define DINOSCOPE_EVAL_H

#include "dinoscope.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* ---- Image level ------------------------------------------------------- */
/* Common to the calls below: scores [n] f32, finite; labels [n], each 0 or 1;
 * n >= 1 and n < 2^32. Errors (DS_ERR_ARG, message naming the call): NULL
 * pointers, n out of range, a non-finite score (its index is named), a label
 * other than 0/1, and a missing class (see each call). DS_ERR_NOMEM when the
 * sort buffer cannot be allocated. On error the outputs are unchanged. */

/* Area under the ROC curve, as sklearn's roc_auc_score: the trapezoid over
 * distinct thresholds, i.e. P(score_pos > score_neg) + 0.5 P(equal).
 * Needs both classes: otherwise DS_ERR_ARG, e.g. "ds_eval_auroc: only one
 * class present (n_pos=0, n_neg=12)". */
ds_status ds_eval_auroc(const float *scores, const int *labels, int64_t n, double *auroc);

/* Average precision, as sklearn's average_precision_score:
 * sum over distinct thresholds of (R_k - R_{k-1}) P_k, no interpolation.
 * Needs at least one anomalous label (n_neg = 0 gives 1, as sklearn). */
ds_status ds_eval_average_precision(const float *scores, const int *labels, int64_t n, double *ap);

/* Maximum F1 = 2PR/(P+R) over the points of sklearn's precision_recall_curve,
 * i.e. over the thresholds t taken from the scores, predicting s >= t.
 * threshold gets that t (a value of scores). Ties in F1 are compared exactly
 * (as fractions of counts) and resolve to the LOWEST such threshold, which is
 * what np.argmax over sklearn's ascending-threshold arrays picks when no
 * rounding intervenes (and what anomalib's F1AdaptiveThreshold picks).
 * threshold may be NULL. Needs at least one anomalous label. */
ds_status ds_eval_f1_max(const float *scores, const int *labels, int64_t n, double *f1, float *threshold);

/* Threshold from normal scores only (held-out normal images), for a target
 * false-positive rate fpr in [0, 1]:
 *   threshold = the smallest value v among normal_scores such that
 *               count(normal_scores >= v) / n <= fpr (compared in double);
 *   if no score qualifies (fpr below 1/n, or ties at the maximum), the next
 *   float above the maximum, so that no normal score is flagged.
 * So the flagged fraction of the held-out normals is <= fpr, and lowering
 * the threshold to the next smaller score would exceed it. fpr = 1 gives
 * the minimum score. n >= 1; no labels. */
ds_status ds_eval_threshold_at_fpr(const float *normal_scores, int64_t n, double fpr, float *threshold);

/* The distinct-threshold curve behind all of the above (sklearn's
 * _binary_clf_curve), for ROC and PR plots. In descending threshold order,
 * point k has thresholds[k] (a score value) and the counts tp[k], fp[k] of
 * anomalous / normal samples with score >= thresholds[k]. The caller's
 * buffers hold n entries each (n_points <= n). ROC: (fp/n_neg, tp/n_pos);
 * precision tp/(tp+fp), recall tp/n_pos. No class requirement. */
ds_status ds_eval_curve(const float *scores, const int *labels, int64_t n,
                        float *thresholds, int64_t *tp, int64_t *fp, int64_t *n_points);

/* ---- Pixel level -------------------------------------------------------- */
/* An accumulator over a test set's anomaly maps and ground-truth masks.
 * Memory: 8 bytes per added pixel (score key + region id), plus 8 more per
 * pixel for the sort during the first metric call after an add, plus 8
 * bytes per pixel of the largest image for labelling regions. One sort
 * serves all metric calls until the next add. Single-threaded; one
 * accumulator must not be used from two threads at once. Measured: 19.7M
 * pixels (300 maps of 256x256) add in ~0.07 s and sort in ~0.45 s. */
typedef struct ds_eval_pixels ds_eval_pixels;

/* n_pixels_hint: expected total pixel count, to allocate once (0 = grow as
 * needed). Returns DS_OK, DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_eval_pixels_create(int64_t n_pixels_hint, ds_eval_pixels **out);
void ds_eval_pixels_free(ds_eval_pixels *px);

/* Adds one image. map: [height, width] f32 anomaly scores, finite.
 * mask: [height, width] u8 ground truth, nonzero = anomalous, or NULL for a
 * normal image (all zero). Ground-truth regions are the 8-connected
 * components of the mask, as MVTec's compute_pro labels them with
 * scipy.ndimage.label(gt, np.ones((3, 3))). Images may differ in size.
 * Returns DS_ERR_ARG (bad size, non-finite score: image index and pixel
 * named) or DS_ERR_NOMEM; on error nothing is added. */
ds_status ds_eval_pixels_add(ds_eval_pixels *px, const float *map, const uint8_t *mask, int height, int width);

/* Totals so far; any output may be NULL. */
void ds_eval_pixels_counts(const ds_eval_pixels *px, int64_t *n_images, int64_t *n_pixels,
                           int64_t *n_anomalous_pixels, int64_t *n_regions);

/* Pixel AUROC: exactly sklearn's roc_auc_score on the flattened maps and
 * (mask != 0). Needs anomalous and normal pixels (DS_ERR_ARG otherwise). */
ds_status ds_eval_pixels_auroc(ds_eval_pixels *px, double *auroc);

/* Pixel F1-max and its threshold, as ds_eval_f1_max on the flattened pixels.
 * threshold may be NULL. Needs anomalous pixels. */
ds_status ds_eval_pixels_f1_max(ds_eval_pixels *px, double *f1, float *threshold);

/* Area under the PRO curve up to fpr_limit (0 < fpr_limit <= 1; MVTec AD
 * uses 0.3), divided by fpr_limit, so 1 is perfect.
 * At each distinct threshold t (pixels with score >= t are positive):
 *   PRO(t) = mean over all ground-truth regions of all images of the
 *            fraction of the region's pixels that are positive;
 *   FPR(t) = positive normal pixels / all normal pixels (mask == 0, over
 *            all images, normal images included).
 * The curve runs from (0,0) through these points to (1,1) and is integrated
 * with the trapezoid rule, the last segment cut at fpr_limit by linear
 * interpolation (MVTec's trapezoid(x_max)). Needs at least one region and
 * one normal pixel (DS_ERR_ARG otherwise). */
ds_status ds_eval_pixels_aupro(ds_eval_pixels *px, double fpr_limit, double *aupro);

/* One-call forms over same-size images: maps [n_images, height, width] f32,
 * masks [n_images, height, width] u8 (nonzero = anomalous) or NULL. They
 * build a temporary accumulator (16 bytes per pixel at the peak). */
ds_status ds_eval_pixel_auroc(const float *maps, const uint8_t *masks, int64_t n_images, int height, int width,
                              double *auroc);
ds_status ds_eval_aupro(const float *maps, const uint8_t *masks, int64_t n_images, int height, int width,
                        double fpr_limit, double *aupro);

/* ---- Figures of one scorer on one test set ----------------------------- */

/* Every figure of the report for one scorer. Undefined figures are NaN:
 * the image metrics without both classes (AP and F1 need anomalies only),
 * the pixel metrics without ground-truth masks. */
typedef struct {
    int64_t n_normal, n_anomalous;
    double image_auroc;       /* ds_eval_auroc */
    double average_precision; /* ds_eval_average_precision */
    double f1_max;            /* ds_eval_f1_max */
    float f1_threshold;       /* its threshold (a score value) */
    double pixel_auroc;       /* ds_eval_pixels_auroc, NaN: no masks */
    double aupro;             /* ds_eval_pixels_aupro at 0.3, NaN: no masks */
} ds_eval_figures;

/* The image-level figures of scores/labels (as ds_eval_auroc etc.); the
 * pixel fields are set to NaN. A missing class is not an error here: the
 * figures it makes undefined are NaN. Errors (DS_ERR_ARG): NULL pointers,
 * n < 1, non-finite scores, labels other than 0/1; DS_ERR_NOMEM. */
ds_status ds_eval_image_figures(const float *scores, const int *labels, int64_t n, ds_eval_figures *out);

/* Decisions at one threshold (s >= threshold is anomalous). precision is
 * NaN when nothing is flagged, recall NaN without anomalies, fpr NaN
 * without normals. */
typedef struct {
    float threshold;
    int64_t tp, fp, tn, fn;
    double precision, recall, fpr;
} ds_eval_confusion;

/* Same argument checks as ds_eval_image_figures. */
ds_status ds_eval_at_threshold(const float *scores, const int *labels, int64_t n, float threshold,
                               ds_eval_confusion *out);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
