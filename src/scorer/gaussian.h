/* Internal: PCA + Ledoit-Wolf fit of the Gaussian scorer (gaussian.c). */
#ifndef DS_SCORER_GAUSSIAN_H
#define DS_SCORER_GAUSSIAN_H

#include "scorer/scorer_internal.h"

typedef struct {
    int n_components;  /* c */
    double shrinkage;  /* Ledoit-Wolf shrinkage in [0,1] */
    float *mean;       /* [D]   malloc'd, caller frees */
    float *components; /* [c,D] */
    float *location;   /* [c]   LW location (mean of the projections, ~0) */
    float *precision;  /* [c,c] pinvh of the shrunk covariance */
} ds_gaussian_fit_out;

/* X: [n, D] pooled training features (double). c = min(max_components,
 * n-1, D). Returns DS_OK, DS_ERR_ARG (n < 2, LAPACK failure), DS_ERR_NOMEM. */
ds_status ds_gaussian_fit(const double *X, int64_t n, int D, int max_components, int n_threads,
                          ds_gaussian_fit_out *out);

/* sqrt((V(x-mean) - loc)' P (V(x-mean) - loc)); z: [c] scratch. */
double ds_gaussian_score(const double *x, int D, int c, const float *mean, const float *components,
                         const float *location, const float *precision, double *z);

#endif
