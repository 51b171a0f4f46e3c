/* Internal: the per-position Gaussian (PaDiM) scorer's fit and score (padim.c). */
#ifndef DS_SCORER_PADIM_H
#define DS_SCORER_PADIM_H

#include "scorer/scorer_internal.h"

typedef struct {
    int n_channels;    /* d */
    float *channels;   /* [d] channel indices, ascending, exact in f32; malloc'd, caller frees */
    float *mean;       /* [N, d] */
    float *precision;  /* [N, d*d] inverse of cov_i + 0.01 I per position */
} ds_padim_fit_out;

/* d <= D distinct channels, ascending, into channels [d]: all of them when
 * d = D, else a seeded uniform subset (partial Fisher-Yates). perm: [D]
 * scratch. Cannot fail. */
void ds_padim_channels(int D, int d, uint64_t seed, int64_t *perm, int *channels);

/* PaDiM's precision of one position: adds the regulariser 0.01 to the
 * diagonal of cov [d, d] (row-major, upper triangle read; overwritten) and
 * writes its Cholesky inverse to P [d, d] (full, f32). Returns 0, -1 if the
 * diagonal is not finite, or LAPACK's info > 0 (not positive definite). */
int ds_padim_inverse(double *cov, int d, float *P);

/* Per position i of N, over the channels ch[d] of the n images of src
 * (image j = rows [j N, (j+1) N)), read once in order: the mean [d] and the
 * centred scatter sum_j (x-mu)(x-mu)' [d, d] (full, row-major; np.cov times
 * n-1). mean [N, d], m2 [N, d*d]. Returns DS_OK, DS_ERR_NOMEM, or the
 * source's read error. */
ds_status ds_padim_moments(const ds_row_source *src, int64_t n, int64_t N, const int *ch, int d, int n_threads,
                           double *mean, double *m2);

/* src: n * N rows of D = src->dim (image j = rows [j N, (j+1) N)) of
 * normal images, n >= 2, read once in order (padim.c: one-pass moments).
 * Returns DS_OK, DS_ERR_ARG (n < 2, non-finite features), DS_ERR_NOMEM, or
 * the source's read error. */
ds_status ds_padim_fit(const ds_row_source *src, int64_t n, int64_t N, int max_channels, uint64_t seed,
                       int n_threads, ds_padim_fit_out *out);

/* patch_scores[i] = sqrt((x_i[ch] - mean_i)' P_i (x_i[ch] - mean_i)) for the
 * N positions of feats [N, D]. channels must be valid indices (< D). */
ds_status ds_padim_score(const float *feats, int64_t N, int D, int d, const float *channels, const float *mean,
                         const float *precision, int n_threads, float *patch_scores);

#endif
