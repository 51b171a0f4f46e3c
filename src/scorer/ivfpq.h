/* IVF-PQ index of a memory bank (src/scorer/ivfpq.c): the internal half of
 * DS_BANK_IVFPQ (include/dinoscope/scorer.h documents the numerics). */
#ifndef DS_SCORER_IVFPQ_H
#define DS_SCORER_IVFPQ_H

#include "scorer/scorer_internal.h"

/* The index's arrays, views (into a model file) or buffers owned[] of a
 * training run:
 *   centroids [nlist, D] f32, codebook [m, ksub, dsub] f32 (dsub = D / m),
 *   codes [M, m] u8 in list order, offsets [nlist + 1] i64. */
typedef struct {
    int64_t M;
    int D, nlist, m, ksub, dsub, nprobe;
    const float *centroids, *codebook;
    const uint8_t *codes;
    const int64_t *offsets;
    int64_t *src_row;  /* [M] training row of each list-order row; NULL when loaded */
    float *lut_w;      /* [m][dsub][256] the codebook transposed, zero past ksub (ds_ivfpq_prepare) */
    float *lut_n;      /* [m][256] ||codeword||^2, +inf past ksub */
    void *owned[4];
} ds_ivfpq;

/* Trains the coarse quantiser and the product quantiser on rows [M, D] and
 * encodes them (rows are reordered into list order). */
ds_status ds_ivfpq_train(const float *rows, int64_t M, int D, const ds_ivfpq_params *p, ds_ivfpq *out);
/* Checks views read from a file: sizes, offsets ascending from 0 to M,
 * codes < ksub, finite centroids and codebook. DS_ERR_FORMAT naming the part. */
ds_status ds_ivfpq_check(const ds_ivfpq *ix);
/* Builds the search's tables from the codebook (after train or check). */
ds_status ds_ivfpq_prepare(ds_ivfpq *ix);
void ds_ivfpq_free(ds_ivfpq *ix);
/* Bytes of its arrays. */
size_t ds_ivfpq_bytes(const ds_ivfpq *ix);
/* k-NN by ADC over the nprobe nearest lists (ds_nn_bank_search's contract). */
ds_status ds_ivfpq_search(const ds_ivfpq *ix, const float *queries, int64_t Q, int k, ds_metric metric, int n_threads,
                          float *dist, int64_t *idx);
/* Row j decoded: its list's centroid + the decoded residual. */
void ds_ivfpq_decode(const ds_ivfpq *ix, int64_t j, float *out);

#endif
