/* Sharded fits: partial models fitted on disjoint parts of the normal
 * images (one per job of a cluster array), merged into one model.
 *
 *   // job i of n: every n-th image (ds_shard_select), features as for ds_model_fit_features
 *   ds_shard_params sp = ds_shard_defaults();
 *   sp.index = i; sp.count = n;
 *   ds_model_fit_partial(&info, &fp, &sp, feats, n_images, "part-i.dsm");
 *   // afterwards, anywhere:
 *   ds_model_merge(parts, n, NULL, "model.dsm");
 *
 * A partial model is a model file (it loads and scores: its scorers are
 * fitted on its own images, without thresholds) that also keeps, in
 * sections "shard/..." that loaders of plain models ignore, what the merge
 * needs to refit every scorer on the union of the parts:
 *   shard/meta     JSON: index, count, the target fit parameters (coreset
 *                  ratio, bank representation, threshold FPR, ...), counts;
 *   shard/pooled   [n_train, D] f64 (bytes): the mean-pooled training
 *                  features (knn's and gaussian's inputs), when the model
 *                  has knn or gaussian;
 *   shard/padim_mean [N, d] f64, shard/padim_m2 [N, d*d] f64: per patch
 *                  position the mean and the centred sum of outer products
 *                  over padim's channels, when the model has padim;
 *   shard/val      [n_val, N, D] f32: the held-out normal images' features
 *                  (every (n/n_val)-th image of the part, as ds_model_fit),
 *                  on which the merge recalibrates the thresholds.
 * The partial's patchbank keeps a coreset of keep_ratio of its patches
 * (default 1: all of them, f32), and the merge selects the target ratio of
 * ALL training patches from the union of the partial banks (decoded from
 * any representation) with patchbank's coreset (exact, or blocked when
 * coreset_method resolves so for the union's size; with keep_ratio 1 and
 * the exact coreset the union is every training patch, so the merged bank
 * is the one a plain fit selects, up to the order of the patches), then
 * encodes it in the target bank representation (int8 by default). knn: the union of the pooled features;
 * gaussian: PCA + Ledoit-Wolf refitted on the union of the pooled features;
 * padim: the moments pooled (Chan, Golub and LeVeque 1979's parallel
 * update), then PaDiM's regularised inverse; flow cannot be merged.
 * With count = 1 the merge equals a plain fit (same held-out images, same
 * order of the training images). */
#ifndef DINOSCOPE_SHARD_H
#define DINOSCOPE_SHARD_H

#include "dinoscope.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef struct {
    int index;          /* 0..count-1; -1 with count 0: an explicit list of images */
    int count;          /* number of parts, >= 1, or 0 (explicit list: not checked for completeness) */
    double keep_ratio;  /* (0, 1]: patchbank coreset ratio of the partial's own bank; default 1 (all) */
} ds_shard_params;

/* index 0, count 1, keep_ratio 1. Can't fail. */
ds_shard_params ds_shard_defaults(void);

/* "I/N" -> index, count (0 <= I < N <= 100000). Returns DS_OK or DS_ERR_ARG
 * naming the text. */
ds_status ds_shard_parse(const char *text, int *index, int *count);

/* 1 if item i (0-based, in input order) belongs to part index of count:
 * i % count == index. Can't fail. */
int ds_shard_has(int64_t i, int index, int count);

/* Fits the partial model of one part and writes it to path (atomically).
 * info, p, feats [n, N, D], n: as ds_model_fit_features; p->kinds must not
 * hold flow (DS_ERR_ARG). Returns DS_OK or the first error. */
ds_status ds_model_fit_partial(const ds_model_info *info, const ds_fit_params *p, const ds_shard_params *sp,
                               const float *feats, int64_t n, const char *path);

/* ds_model_fit_partial over a row source of n images (as
 * ds_model_fit_rows). select 1: images holds all the images and the part
 * is the images i with ds_shard_has(i, index, count); 0: images is the part. */
ds_status ds_model_fit_partial_rows(const ds_model_info *info, const ds_fit_params *p, const ds_shard_params *sp,
                                    const ds_row_source *images, int64_t n, int select, const char *path);

/* ds_model_fit_store's feature pass (the part's images paths[n] through bb
 * into the store in dir, resumed as there), then ds_model_fit_partial_rows
 * over the store; the partial model goes to path. */
struct ds_backbone;
ds_status ds_model_fit_partial_store(struct ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                                     const ds_shard_params *sp, const char *const *paths, int n, const char *dir,
                                     int resume, const char *path, int *n_skipped, int64_t *n_resumed);

/* Merge options. */
typedef struct {
    int n_threads;           /* 0 = auto */
    ds_progress_fn progress; /* the coreset's progress; may be NULL */
    void *progress_user;
} ds_merge_params;

/* Merges partial models paths[n] (in any order; the training images are
 * taken in the order of their part index, then of the given order) into one
 * model written to out_path. The parts must agree on the backbone (SHA-256
 * and architecture), the preprocessing, the feature grid, the scorers and
 * their parameters, and, for parts of an I/N split, be exactly the N parts.
 * Returns DS_OK, DS_ERR_MISMATCH (one line naming the two files and what
 * differs), DS_ERR_FORMAT (not a partial model), DS_ERR_ARG, DS_ERR_NOMEM,
 * DS_ERR_IO, or a scorer's error. */
ds_status ds_model_merge(const char *const *paths, int n, const ds_merge_params *mp, const char *out_path);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
