/* Fitted-model files: one file holds everything `score` needs.
 *
 * Layout (little-endian):
 *   [0,64)    header: magic "DSCOPEMD", u32 format version, u32 n_sections,
 *             u64 table offset, u64 file size, u32 table crc32, 28 bytes zero
 *   sections  each 64-byte aligned, so that f32 arrays are used in place
 *             from the mmap
 *   table     n_sections entries of 128 bytes: name[64] (NUL-padded),
 *             u32 dtype (0 f32, 1 bytes, 2 i8, 3 u8, 4 u16, 5 i64), u32 n_dims, i64 shape[4],
 *             u64 offset, u64 n_bytes, u32 crc32, 4 bytes zero
 * The section "meta" holds a JSON document (backbone identity, preprocessing,
 * scorers' parameters). Files are written atomically (temp + rename).
 * Loading checks the magic, the version (newer is refused), the sizes, every
 * offset and every section's CRC-32 before anything is used. */
#ifndef DINOSCOPE_MODEL_H
#define DINOSCOPE_MODEL_H

#include "dinoscope.h"
#include "image.h"
#include "pipeline.h"
#include "preprocess.h"
#include "scorer.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* Version 2 added the integer section dtypes (compact banks); a file
 * without them is written as version 1, readable by older dinoscope. */
#define DS_MODEL_FORMAT_VERSION 2

typedef enum {
    DS_SECTION_F32 = 0,
    DS_SECTION_BYTES = 1,
    DS_SECTION_I8 = 2,
    DS_SECTION_U8 = 3,
    DS_SECTION_U16 = 4,
    DS_SECTION_I64 = 5,
} ds_section_dtype;
/* "f32", "bytes", "i8", "u8", "u16", "i64" */
const char *ds_section_dtype_name(ds_section_dtype dtype);

typedef struct {
    const char *name;
    ds_section_dtype dtype;
    int n_dims;
    int64_t shape[4];
    const void *data; /* view into the mapping, 64-byte aligned */
    uint64_t n_bytes;
} ds_model_section;

typedef struct ds_model_file ds_model_file;

/* Maps and validates path. Errors name the file and the problem. */
ds_status ds_model_file_open(const char *path, ds_model_file **out);
void ds_model_file_close(ds_model_file *m);
int ds_model_file_n_sections(const ds_model_file *m);
const ds_model_section *ds_model_file_section_at(const ds_model_file *m, int i);
/* NULL (no error set) if absent. */
const ds_model_section *ds_model_file_section(const ds_model_file *m, const char *name);

typedef struct ds_model_writer ds_model_writer;
ds_status ds_model_writer_open(const char *path, ds_model_writer **out);
/* Appends a section (data copied to the file now). */
ds_status ds_model_writer_add(ds_model_writer *w, const char *name, ds_section_dtype dtype, int n_dims,
                              const int64_t *shape, const void *data, uint64_t n_bytes);
/* ok: write the table and header, rename into place; !ok: discard. Frees w. */
ds_status ds_model_writer_close(ds_model_writer *w, int ok);

/* ---- fitted models: backbone identity + preprocessing + scorers -------- */

#define DS_MODEL_MAX_SCORERS 8

typedef struct {
    char backbone_file[512];    /* path given at fit time */
    char backbone_sha256[65];   /* hex SHA-256 of the weights file */
    char backbone_arch[320];    /* ds_backbone_describe() (DS_BACKBONE_DESCRIBE_MAX) */
    ds_preprocess_params prep;  /* size, stain normalisation and its parameters */
    int n_layers;               /* last blocks averaged */
    int grid_h, grid_w, dim;    /* feature grid at prep.size and channels */
    int64_t n_train;            /* normal images fitted on */
    float map_sigma;            /* anomaly-map blur the calibration used (DS_ANOMALY_MAP_SIGMA;
                                   models written before it was stored: 4) */
} ds_model_info;

/* Per-scorer calibration from held-out normal images (may be absent). */
typedef struct {
    int has_threshold;
    double threshold_fpr;       /* target false-positive rate on held-out normals */
    float threshold;            /* image score >= threshold => anomalous */
    int n_val;                  /* held-out normal images used */
    float map_vmax;             /* upper end of the overlay colour scale (patch scores); 0 = unset */
    int has_map_threshold;      /* patch-level scorers: */
    float map_threshold;        /* anomaly-map value at threshold_fpr over held-out normal map pixels */
} ds_scorer_calibration;

typedef struct ds_model ds_model;

/* Writes a model file atomically: info, then each scorer's parts and
 * calibration (calib may be NULL). Returns DS_OK or DS_ERR_IO/DS_ERR_ARG. */
ds_status ds_model_save(const char *path, const ds_model_info *info, const ds_scorer *const *scorers,
                        const ds_scorer_calibration *calib, int n_scorers);

/* Opens, validates and maps a model file; the scorers' arrays are views into
 * the mapping. Errors name the file and the problem (bad magic, newer
 * version, checksum, truncated, missing or inconsistent parts). */
ds_status ds_model_load(const char *path, ds_model **out);
void ds_model_free(ds_model *m);

const ds_model_info *ds_model_get_info(const ds_model *m);
int ds_model_n_scorers(const ds_model *m);
const ds_scorer *ds_model_scorer(const ds_model *m, int i);
/* Lists visited per query by every IVF-PQ bank of the model from now on
 * (ds_scorer_set_nprobe; the file is not changed). DS_ERR_ARG when nprobe
 * < 1 or the model has no IVF-PQ bank. */
ds_status ds_model_set_nprobe(ds_model *m, int nprobe);
const ds_scorer_calibration *ds_model_calibration(const ds_model *m, int i);
/* The scorer whose patch scores make "the" anomaly map of a model (score
 * --maps, eval's gallery, slide heatmaps): patchbank if the model has it,
 * else the first scorer that gives patch scores (padim), else -1. */
int ds_model_map_scorer(const ds_model *m);

/* Scores one image's features with every scorer of the model.
 * feats:    [N, D] patch tokens, N = grid_h * grid_w, D = dim of the model.
 * scores:   [n_scorers] output, in the model's scorer order.
 * patch:    [n_scorers, N] output or NULL: row k receives scorer k's patch
 *           scores where ds_scorer_has_patch_scores (other rows untouched).
 * score_ms: [n_scorers] output or NULL: milliseconds per scorer.
 * Returns DS_OK or the first scorer's error (message names the scorer). */
ds_status ds_model_score_features(const ds_model *m, const float *feats, int n_threads, float *scores, float *patch,
                                  double *score_ms);

/* Anomaly map of one image from patch scores [grid_h, grid_w] with the
 * model's grid, input size and sigma: ds_anomaly_map at out_w x out_h into
 * out [out_h, out_w]. Same errors as ds_anomaly_map. */
ds_status ds_model_anomaly_map(const ds_model *m, const float *patch, int out_w, int out_h, float *out);

/* Scores images end to end with a model: its preprocessing (stain
 * normalisation, resize to SxS), the backbone bb (which must be the model's:
 * same ds_backbone_describe(), else DS_ERR_MISMATCH), every scorer; the loop
 * is ds_pipeline_run (pipeline.h).
 * imgs:   n RGB images of any size.
 * batch:  images per backbone call (>= 1).
 * scores: [n, n_scorers] output, in the model's scorer order.
 * patch_scorer: whose patch scores fill patch: a scorer index, or -1 for
 *         the model's map scorer (ds_model_map_scorer).
 * patch:  [n, grid_h*grid_w] output: those patch scores (zeros if that
 *         scorer gives none); may be NULL.
 * Returns DS_OK or the first error (outputs then unspecified). */
ds_status ds_model_score_images(const ds_model *m, struct ds_backbone *bb, const ds_image *const *imgs, int n,
                                int batch, int n_threads, float *scores, int patch_scorer, float *patch);

/* ---- large images at native resolution: tiles ------------------------- */

typedef struct {
    int tile_px;     /* tile side in image pixels (>= 14); each tile is resized to the model's input */
    double overlap;  /* [0, 0.95]: stride = max(1, round(tile_px * (1 - overlap))); default 0.5 */
    int batch;       /* tiles per backbone call (>= 1); default 8 */
    int n_threads;   /* scorers' threads, 0 = auto */
} ds_tile_params;

/* tile_px 0 (set it), overlap 0.5, batch 8, n_threads 0. Can't fail. */
ds_tile_params ds_tile_defaults(void);

/* Tile origins along one axis of len pixels: 0, stride, 2 stride, ... and a
 * last tile aligned to the far edge (origin len - tile), so that every tile
 * lies inside the image (no padding, unlike `slide`, whose tiles may stick
 * out of the level and are padded white). len <= tile: one tile at 0 of
 * length len. origins: caller buffer of at least len / stride + 2 entries,
 * or NULL to count. Returns the number of tiles (>= 1), or 0 on bad sizes. */
int ds_tile_origins(int len, int tile_px, int stride, int *origins);

/* Scores one image in overlapping tiles at its native pixel size (for
 * mammograms, high-resolution radiographs and pathology regions much larger
 * than the model input, whose small findings a single resize to S x S
 * would dilute into one patch). Each tile (tile_px x tile_px, or the image's
 * extent where it is smaller) goes through the model's preprocessing,
 * backbone and every scorer (ds_pipeline_run on images in memory):
 *   scores[k]: patch-level scorers (patchbank, padim): the scorer's own
 *              reduction (patchbank: params.reduce, max or AnomalyDINO's
 *              top 1%; padim: max) over the patch scores of all tiles
 *              together (patches in overlaps counted once per tile);
 *              image-level scorers (knn, gaussian): the max over tiles;
 *   maps:      [n_scorers, H, W] (H, W = img's size) or NULL: row k, for the
 *              patch-level scorers (other rows untouched), receives each
 *              tile's anomaly map (ds_model_anomaly_map at the tile's size)
 *              averaged where tiles overlap (sum / count, the overlap
 *              averaging of `slide`, see wsi.h);
 *   n_tiles:   (may be NULL) tiles scored.
 * An image no larger than the tile is one tile: scores and maps equal
 * ds_model_score_images + ds_model_anomaly_map of the whole image.
 * Memory: batch tiles at a time, plus 4 H W bytes per map and the patch
 * scores of all tiles. The backbone must be the model's (DS_ERR_MISMATCH).
 * Returns DS_OK, DS_ERR_ARG (bad params), DS_ERR_NOMEM or a backbone /
 * scorer error; outputs are only written on success. */
struct ds_backbone;
ds_status ds_model_score_tiled(const ds_model *m, struct ds_backbone *bb, const ds_image *img, const ds_tile_params *p,
                               float *scores, float *maps, int *n_tiles);

/* Scores one image on a patch grid twice as fine (against patch dilution):
 * the model's preprocessing once (stain normalisation, resize to S x S),
 * then that input as it is and shifted by half a patch, h = S / grid_w / 2
 * pixels (7 for DINOv2's 14 px patches), up, left and both (content
 * pixel y + h shown at y, the far edge replicated), four forward passes
 * in one batch. Each scorer's four patch-score grids are averaged on the
 * [2 grid_h, 2 grid_w] grid of half-patch cells (each cell: the mean of
 * the tokens covering it, 4 inside, fewer on the first row and column):
 *   scores[k]: patch-level scorers (patchbank, padim): the scorer's own
 *              reduction (patchbank: params.reduce; padim: max) over that
 *              fine grid; image-level scorers (knn, gaussian): the unshifted
 *              input's score (as ds_model_score_images);
 *   maps:      [n_scorers, H, W] (img's size) or NULL: for the patch-level
 *              scorers (other rows untouched), ds_anomaly_map of the fine
 *              grid at the model's input size and sigma, resized to W x H.
 * Cost: 4 forward passes. The backbone must be the model's
 * (DS_ERR_MISMATCH). Returns DS_OK, DS_ERR_ARG, DS_ERR_NOMEM or a
 * backbone / scorer error; outputs are unspecified on failure. */
ds_status ds_model_score_shifted(const ds_model *m, struct ds_backbone *bb, const ds_image *img, int n_threads,
                                 float *scores, float *maps);

/* Checks that bb is the backbone the model was fitted on: same
 * ds_backbone_describe() and the same feature grid at the model's input
 * size. Returns DS_OK or DS_ERR_MISMATCH naming both. */
ds_status ds_model_check_backbone(const ds_model *m, const struct ds_backbone *bb);

/* ---- fitting: features of normal images -> a model in memory ------------
 *
 *   ds_fit_params fp = ds_fit_defaults();             // knn,gaussian,patchbank
 *   ds_pipeline_params pp = ds_pipeline_defaults();   // pipeline.h
 *   pp.size = 518;
 *   ds_model *m;
 *   ds_model_fit(bb, &pp, &fp, paths, NULL, n, &m);   // or images in memory
 *   ds_model_write(m, "model.dsm");
 *
 * What `dinoscope fit` does: every (n / n_val)-th image (n_val =
 * round(val_split * n), only with n >= 10) is held out, each scorer is
 * fitted on the others, and the held-out images calibrate it: the image
 * threshold at fpr (ds_eval_threshold_at_fpr), and for scorers with maps
 * the map threshold at the same fpr over the held-out maps' pixels at SxS
 * and the overlay scale map_vmax = 2 x the 99th percentile of their patch
 * scores. */
typedef struct {
    ds_scorer_kind kinds[DS_MODEL_MAX_SCORERS]; /* the scorers, in this order */
    int n_kinds;               /* 1..DS_MODEL_MAX_SCORERS, distinct kinds */
    ds_scorer_params scorer;   /* their parameters (threads and progress too) */
    double val_split;          /* [0, 0.5]: fraction held out for the thresholds; 0 = none */
    double fpr;                /* [0, 1]: false-positive rate of the thresholds on the held-out images */
    /* called after scorer k is fitted and calibrated (fit_s: seconds of the fit alone); may be NULL */
    void (*on_fitted)(void *user, int k, const ds_scorer *s, double fit_s);
    void *on_fitted_user;
} ds_fit_params;

/* knn, gaussian, patchbank with ds_scorer_defaults() except reduce =
 * DS_REDUCE_TOP1PCT (fit's default, see README); val_split 0.1, fpr 0.01.
 * Can't fail. */
ds_fit_params ds_fit_defaults(void);

/* How many of n images a fit holds out: round(val_split * n), at least 1,
 * when val_split > 0 and n >= 10; else 0. Can't fail. */
int64_t ds_fit_n_held_out(const ds_fit_params *p, int64_t n);

/* Fits a model on features already computed. info: the backbone identity,
 * preprocessing and feature grid (n_train is set here; map_sigma 0 means
 * DS_ANOMALY_MAP_SIGMA). feats: [n, N, D] with N = grid_h*grid_w, D = dim;
 * not modified (and no copy of it is made: ds_model_fit_rows over it).
 * Returns DS_OK and a model in memory (free with ds_model_free; its
 * ds_model_get_file() is NULL), or the first error (DS_ERR_ARG naming the
 * parameter, or the scorer's error prefixed with its name). */
ds_status ds_model_fit_features(const ds_model_info *info, const ds_fit_params *p, float *feats, int64_t n,
                                ds_model **out);

/* ds_model_fit_features over a row source of n * N rows (image i = rows
 * [i N, (i+1) N)): features that are not in memory, such as a feature
 * store (store.h) or several .npy files. The held-out images are read one
 * at a time for the calibration, the training images by each scorer as
 * ds_scorer_fit_rows says; memory is what the scorers keep plus their
 * working sets (ds_fit_plan_of estimates it), not the features.
 * Returns as ds_model_fit_features, or the source's read error. */
ds_status ds_model_fit_rows(const ds_model_info *info, const ds_fit_params *p, const ds_row_source *images, int64_t n,
                            ds_model **out);

/* The model identity a fit records for backbone bb and pipeline
 * parameters pp (pp->size 0 = ds_backbone_native_size): backbone file,
 * SHA-256 and ds_backbone_describe(), pp's preprocessing at that size, the
 * layers, the feature grid, DS_ANOMALY_MAP_SIGMA; n_train 0.
 * Returns DS_OK, or DS_ERR_IO (hashing the weights file), DS_ERR_ARG. */
ds_status ds_model_info_of(const struct ds_backbone *bb, const ds_pipeline_params *pp, ds_model_info *out);

/* Runs the normal images through bb (ds_pipeline_run with pp: paths[n] or
 * images[n], exactly one of them; pp->size 0 = ds_backbone_native_size)
 * and fits on their features: the backbone identity (file, SHA-256,
 * ds_backbone_describe) and pp's preprocessing are recorded.
 * n_skipped (may be NULL): inputs skipped under pp->skip_bad.
 * Memory: n * N * D floats of features. Returns DS_OK or the first error. */
ds_status ds_model_fit(ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p, const char *const *paths,
                       const ds_image *const *images, int n, ds_model **out, int *n_skipped);

/* Writes m (loaded or fitted) as a model file, atomically (ds_model_save). */
ds_status ds_model_write(const ds_model *m, const char *path);

/* The stored metadata document (JSON text), for `dinoscope info`. */
const char *ds_model_meta_json(const ds_model *m);
/* Sections of the underlying file (for listing). */
const ds_model_file *ds_model_get_file(const ds_model *m);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
