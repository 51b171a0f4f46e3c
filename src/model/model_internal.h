#ifndef DS_MODEL_INTERNAL_H
#define DS_MODEL_INTERNAL_H

#include "dinoscope/model.h"

/* A model in memory from fitted scorers (ds_model_fit): takes ownership of
 * scorers[0..n) (set to NULL) on success only; calib may be NULL. */
ds_status ds_model_from_fitted(const ds_model_info *info, ds_scorer **scorers, const ds_scorer_calibration *calib,
                               int n_scorers, ds_model **out);

#endif
