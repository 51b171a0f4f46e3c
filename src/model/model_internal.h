#ifndef DS_MODEL_INTERNAL_H
#define DS_MODEL_INTERNAL_H

#include "dinoscope/model.h"

/* A model in memory from fitted scorers (ds_model_fit): takes ownership of
 * scorers[0..n) (set to NULL) on success only; calib may be NULL. */
ds_status ds_model_from_fitted(const ds_model_info *info, ds_scorer **scorers, const ds_scorer_calibration *calib,
                               int n_scorers, ds_model **out);

/* 1 if image i of n is held out when n_val are (fit.c's rule: every
 * (n / n_val)-th image, the first n_val such). */
int ds_fit_held_out_at(int64_t i, int64_t n, int64_t n_val);

/* ds_model_fit's calibration of scorer sc on the held-out features val
 * [n_val, N, D] at fpr (image threshold; map threshold and map_vmax for
 * scorers with maps). n_val 0: leaves cal untouched. */
ds_status ds_fit_calibrate(const ds_model_info *info, const float *val, int64_t n_val, int n_threads, double fpr,
                           const ds_scorer *sc, ds_scorer_calibration *cal);

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
