/* Evaluation reports (src/eval/report*.c) built on the metrics of eval.h.
 *
 * Collects a test set's per-image scores (and, for scorers that give maps,
 * the maps against ground-truth masks), computes every figure above, and
 * writes a report folder:
 *   report.json  every figure (NaN as null), timings, memory, notes
 *   report.md    the results table: Method | Backbone | Image AUROC |
 *                Pixel AUROC | AUPRO | F1-max | Inference ms/img, then
 *                thresholds, cross-validation and timing tables
 *   scores.csv   one row per test image
 *   report.html  one self-contained page: inline SVG ROC and PR curves,
 *                score histograms (normal vs anomalous), a gallery of the
 *                most anomalous images, the lowest-scoring anomalies and the
 *                highest-scoring normals as embedded PNGs (data URIs)
 * Each file is written atomically (temp file + rename).
 *
 *   ds_report *r;
 *   ds_report_create(&params, &r);
 *   for each test image: ds_report_add_image(r, &im, &index);
 *                        ds_report_add_map(r, k, map, mask_or_NULL, H, W);
 *   ds_report_gallery_select(r, 6, idx, &n);
 *   for each idx: ds_report_set_picture(r, idx[i], overlay, mask_or_NULL, 0);
 *   ds_report_write(r, "report_dir");
 *   ds_report_free(r);
 */
#ifndef DINOSCOPE_REPORT_H
#define DINOSCOPE_REPORT_H

#include "dinoscope.h"
#include "eval.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

#define DS_REPORT_MAX_SCORERS 8

typedef struct {
    const char *name;     /* e.g. "patchbank"; copied */
    const char *params;   /* short description of its settings, may be NULL; copied */
    int has_threshold;    /* the model's stored threshold, if any: */
    float threshold;      /*   s >= threshold is anomalous */
    double threshold_fpr; /*   its target FPR on held-out normals */
    int has_maps;         /* 1: gives anomaly maps (pixel metrics, gallery overlays) */
} ds_report_scorer;

typedef struct {
    const char *model_path, *data_path; /* as given; copied */
    const char *layout;                 /* "labels.csv" or "mvtec" */
    const char *backbone;               /* ds_backbone_describe() */
    const char *backbone_file;
    int input_size;                     /* S of the SxS network input */
    int n_scorers;                      /* 1..DS_REPORT_MAX_SCORERS */
    ds_report_scorer scorers[DS_REPORT_MAX_SCORERS];
} ds_report_params;

typedef struct ds_report ds_report;

/* Returns DS_OK, DS_ERR_ARG (no scorers, NULL names) or DS_ERR_NOMEM. */
ds_status ds_report_create(const ds_report_params *p, ds_report **out);
void ds_report_free(ds_report *r);

/* One test image. Everything is copied. */
typedef struct {
    const char *path;
    int label;              /* 0 normal, 1 anomalous */
    const char *defect;     /* defect type (MVTec folder), may be NULL */
    const char *mask_path;  /* ground truth file, may be NULL */
    const float *scores;    /* [n_scorers] image scores, finite */
    double prep_ms;         /* decode + stain normalisation + resize + normalise */
    double backbone_ms;     /* its share of the batch's forward pass */
    const double *score_ms; /* [n_scorers] time in each scorer, or NULL */
    double map_ms;          /* anomaly map at the original size (0: none) */
} ds_report_image;

/* index (may be NULL) receives the image's 0-based index in the report.
 * Returns DS_OK, DS_ERR_ARG (bad label or score: named) or DS_ERR_NOMEM. */
ds_status ds_report_add_image(ds_report *r, const ds_report_image *im, int *index);

/* Adds one image's anomaly map [height, width] of scorer k and its mask
 * (same size, nonzero = anomalous, NULL = normal image) to the pixel
 * metrics (ds_eval_pixels_add). Returns its errors. */
ds_status ds_report_add_map(ds_report *r, int scorer, const float *map, const uint8_t *mask, int height, int width);

/* Cross-validation: the figures of scorer k on one fold (ds_eval_figures
 * from ds_eval_image_figures and the pixel accumulator). The report shows
 * each metric's mean and standard deviation over the folds (numpy's
 * default, ddof = 0; NaN folds skipped). */
ds_status ds_report_add_fold(ds_report *r, int scorer, const ds_eval_figures *f);

/* A line of text for the "Notes" of every output (e.g. "3 masks resized
 * with nearest neighbour to their image's size"). */
ds_status ds_report_add_note(ds_report *r, const char *note);

/* Whole run: wall-clock seconds and peak resident memory in bytes. */
void ds_report_set_resources(ds_report *r, double wall_s, int64_t peak_rss_bytes);

/* The colour scale [vmin, vmax] of the gallery overlays (for its legend). */
void ds_report_set_map_scale(ds_report *r, float vmin, float vmax);

/* Figures of scorer k over the images added so far (computed once and
 * cached until the next add). Returns DS_ERR_ARG for a bad k or no images,
 * else the metrics' errors. */
ds_status ds_report_figures(ds_report *r, int scorer, ds_eval_figures *out);

/* The images the gallery shows, judged by the gallery scorer (the first
 * with maps, else the first) at its decision threshold (the model's stored
 * one if any, else the F1-optimal one): up to n_per_section each of
 *   - the most anomalous images (highest scores),
 *   - the lowest-scoring anomalous images (missed if below the threshold),
 *   - the highest-scoring normal images (false alarms if above it).
 * indices: caller buffer of 3 * n_per_section; receives the distinct image
 * indices to give a picture (ds_report_set_picture), *n of them. */
ds_status ds_report_gallery_select(ds_report *r, int n_per_section, int *indices, int *n);

/* The picture of image index for the gallery: usually the anomaly-map
 * overlay (ds_map_overlay, RGB or grey). mask: [mask_h, mask_w] u8 ground
 * truth (nonzero = anomalous) or NULL; its outline is drawn on the picture
 * in cyan (the mask is resized with nearest neighbour when the sizes
 * differ). Pictures larger than max_side px (0 = 320) are downscaled
 * (bicubic) first. Encoded as PNG and kept. Returns DS_OK, DS_ERR_ARG,
 * DS_ERR_NOMEM. */
ds_status ds_report_set_picture(ds_report *r, int index, const ds_image *picture, const uint8_t *mask, int mask_w,
                                int mask_h, int max_side);

/* Writes report.json, report.md, scores.csv and report.html into the
 * existing folder dir, each atomically. Returns DS_OK, DS_ERR_ARG (no
 * images), DS_ERR_IO naming the file, DS_ERR_NOMEM. */
ds_status ds_report_write(ds_report *r, const char *dir);

/* One of those outputs as text: which = "json", "md", "csv" or "html".
 * *text is a new NUL-terminated malloc'd string (free()). Returns DS_OK,
 * DS_ERR_ARG (unknown output, no images), DS_ERR_NOMEM. */
ds_status ds_report_format(ds_report *r, const char *which, char **text);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
