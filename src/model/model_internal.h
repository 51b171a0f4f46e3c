#ifndef DS_MODEL_INTERNAL_H
#define DS_MODEL_INTERNAL_H

#include "dinoscope/model.h"

/* A model in memory from fitted scorers (ds_model_fit): takes ownership of
 * scorers[0..n) (set to NULL) on success only; calib may be NULL. */
ds_status ds_model_from_fitted(const ds_model_info *info, ds_scorer **scorers, const ds_scorer_calibration *calib,
                               int n_scorers, ds_model **out);

/* fit.c's hold-out rule: of n images, n_val are held out, every (n /
 * n_val)-th, the first n_val such. train: [n - n_val], val: [n_val] image
 * indices, in order. Can't fail. */
void ds_fit_split_images(int64_t n, int64_t n_val, int64_t *train, int64_t *val);

/* The images img[n_img] (indices into src, image i = rows [i N, (i+1) N))
 * of src as one source; s holds its state and must outlive it. */
typedef struct {
    const ds_row_source *src;
    const int64_t *img;
    int64_t N;
} ds_subset_src;
ds_row_source ds_row_source_subset(ds_subset_src *s, const ds_row_source *src, const int64_t *img, int64_t n_img,
                                   int64_t N);

/* ds_model_fit's calibration of scorer sc on the held-out images val
 * (n_val * N rows) at fpr (image threshold; map threshold and map_vmax for
 * scorers with maps). n_val 0: leaves cal untouched. */
ds_status ds_fit_calibrate(const ds_model_info *info, const ds_row_source *val, int64_t n_val, int n_threads, double fpr,
                           const ds_scorer *sc, ds_scorer_calibration *cal);

/* ds_model_fit_store with another fit: the images through bb into the
 * store in dir (resumed as there), finished, mapped, and given to fit
 * (info: the identity; images: n images of the store). */
struct ds_backbone;
typedef ds_status (*ds_store_fit_fn)(void *user, const ds_model_info *info, const ds_row_source *images, int64_t n);
ds_status ds_fit_via_store(struct ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                          const char *const *paths, int n, const char *dir, int resume, ds_store_fit_fn fit,
                          void *fit_user, int *n_skipped, int64_t *n_resumed);

/* An extra section written after the model's own (ds_model_save_ex). */
typedef struct {
    const char *name;
    ds_section_dtype dtype;
    int n_dims;
    int64_t shape[4];
    const void *data;
    uint64_t n_bytes;
} ds_model_extra;

/* ds_model_save plus extra sections (that loaders ignore: the model's
 * metadata does not name them). */
ds_status ds_model_save_ex(const char *path, const ds_model_info *info, const ds_scorer *const *scorers,
                           const ds_scorer_calibration *calib, int n_scorers, const ds_model_extra *extra,
                           int n_extra);

#endif
