/* PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for
 * Anomaly Detection and Localization", ICPR 2021): one Gaussian per patch
 * position over a random subset of channels. Reference implementation
 * xiahaifeng1995/PaDiM-Anomaly-Detection-Localization-master (main.py):
 *   idx = random subset of d channels (d = 100 for ResNet18);
 *   mean[:, i] = mean over the n training images of the position-i vectors;
 *   cov[:, :, i] = np.cov(X_i, rowvar=False) + 0.01 * I   (divides by n-1);
 *   score_i = scipy.spatial.distance.mahalanobis(x_i, mean_i, inv(cov_i)).
 * Deviations: the subset is drawn from our seeded RNG (not torch's), kept
 * ascending (the distance does not depend on the order); the image score is
 * the max of the patch scores before the map's upsampling and blur (the
 * reference takes the max of the blurred upsampled map).
 * The inverse is a Cholesky inverse (LAPACK dpotrf/dpotri) in double: the
 * regulariser makes every cov_i positive definite. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/padim.h"
#include "scorer/scorer_internal.h"

/* LAPACK (from libopenblas), Fortran calling convention with the hidden
 * string length that gfortran appends. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);

/* PaDiM's regulariser, added to each position's covariance (main.py). */
#define PADIM_EPS 0.01

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void ds_padim_channels(int D, int d, uint64_t seed, int *perm, int *channels) {
    if (d >= D) {
        for (int c = 0; c < D; c++) channels[c] = c;
        return;
    }
    for (int c = 0; c < D; c++) perm[c] = c;
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int c = 0; c < d; c++) {
        int j = c + (int)(ds_rng_u64(&r) % (uint64_t)(D - c));
        int t = perm[c];
        perm[c] = perm[j];
        perm[j] = t;
    }
    memcpy(channels, perm, sizeof(int) * (size_t)d);
    qsort(channels, (size_t)d, sizeof(int), cmp_int);
}

int ds_padim_inverse(double *cov, int d, float *P) {
    int info = 0, finite = 1;
    for (int c = 0; c < d; c++) {
        cov[(size_t)c * d + c] += PADIM_EPS;
        finite &= isfinite(cov[(size_t)c * d + c]);
    }
    if (!finite) return -1;
    /* The row-major upper triangle is LAPACK's (column-major) lower. */
    dpotrf_("L", &d, cov, &d, &info, 1);
    if (info == 0) dpotri_("L", &d, cov, &d, &info, 1);
    if (info != 0) return info;
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) P[(size_t)a * d + b] = P[(size_t)b * d + a] = (float)cov[(size_t)a * d + b];
    return 0;
}

ds_status ds_padim_fit(const float *feats, int64_t n, int64_t N, int D, int max_channels, uint64_t seed,
                       int n_threads, ds_padim_fit_out *o) {
    if (n < 2)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: padim needs at least 2 training images (got %lld)",
                            (long long)n);
    if (max_channels < 1) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: padim_dim=%d < 1", max_channels);
    const int d = DS_MIN(max_channels, D);
    size_t dd = (size_t)d * (size_t)d, n_prec;
    if (!ds_mul_size((size_t)N, dd, &n_prec))
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: padim precision [%lld, %d, %d] too large", (long long)N, d, d);
    int T = ds_resolve_threads(n_threads);
    if ((int64_t)T > N) T = (int)N;
    ds_status st = DS_OK;
    int *ch = ds_alloc((size_t)d, sizeof(int), "ds_scorer_fit: padim channels");
    int *perm = ds_alloc((size_t)D, sizeof(int), "ds_scorer_fit: padim channels");
    float *f_ch = ds_alloc((size_t)d, sizeof(float), "ds_scorer_fit: padim channels");
    float *f_mean = ds_alloc((size_t)N, sizeof(float) * (size_t)d, "ds_scorer_fit: padim means");
    float *f_prec = ds_alloc(n_prec, sizeof(float), "ds_scorer_fit: padim precisions");
    /* per thread: X [n, d], cov [d, d], mean [d] in double */
    size_t per_thread = (size_t)n * (size_t)d + dd + (size_t)d;
    double *ws = ds_alloc((size_t)T, sizeof(double) * per_thread, "ds_scorer_fit: padim workspace");
    if (!ch || !perm || !f_ch || !f_mean || !f_prec || !ws) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    ds_padim_channels(D, d, seed, perm, ch);
    for (int c = 0; c < d; c++) f_ch[c] = (float)ch[c];
    int blas_prev = ds_blas_set_threads(1); /* we parallelise over positions */

    int64_t bad_pos = -1;
    int bad_info = 0;
#pragma omp parallel num_threads(T)
    {
        double *X = ws + (size_t)omp_get_thread_num() * per_thread;
        double *cov = X + (size_t)n * d, *mu = cov + dd;
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < N; i++) {
            for (int c = 0; c < d; c++) mu[c] = 0;
            for (int64_t j = 0; j < n; j++) {
                const float *x = feats + ((size_t)j * (size_t)N + (size_t)i) * (size_t)D;
                double *row = X + (size_t)j * d;
                for (int c = 0; c < d; c++) {
                    row[c] = x[ch[c]];
                    mu[c] += row[c];
                }
            }
            for (int c = 0; c < d; c++) mu[c] /= (double)n;
            for (int64_t j = 0; j < n; j++)
                for (int c = 0; c < d; c++) X[(size_t)j * d + c] -= mu[c];
            /* np.cov(rowvar=False): X_c^T X_c / (n-1), upper triangle (row-major) */
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)n, 1.0 / (double)(n - 1), X, d, 0.0, cov, d);
            int finite = 1;
            for (int c = 0; c < d; c++) finite &= isfinite(mu[c]);
            int info = finite ? ds_padim_inverse(cov, d, f_prec + (size_t)i * dd) : -1;
            if (info == -1) finite = 0;
            if (!finite || info != 0) {
#pragma omp critical(ds_padim_err)
                if (bad_pos < 0 || i < bad_pos) {
                    bad_pos = i;
                    bad_info = finite ? info : 0;
                }
                continue;
            }
            for (int c = 0; c < d; c++) f_mean[(size_t)i * d + c] = (float)mu[c];
        }
    }
    ds_blas_set_threads(blas_prev);
    /* The error is set here, in the calling thread: the message buffer is thread-local. */
    if (bad_pos >= 0) {
        st = bad_info ? ds_set_error(DS_ERR_ARG, "ds_scorer_fit: padim covariance at patch position %lld is not "
                                     "invertible (LAPACK info=%d)", (long long)bad_pos, bad_info)
                      : ds_set_error(DS_ERR_ARG, "ds_scorer_fit: padim: NaN or inf in the features at patch "
                                     "position %lld", (long long)bad_pos);
        goto done;
    }
    o->n_channels = d;
    o->channels = f_ch;
    o->mean = f_mean;
    o->precision = f_prec;
    f_ch = f_mean = f_prec = NULL;
done:
    free(ch);
    free(perm);
    free(f_ch);
    free(f_mean);
    free(f_prec);
    free(ws);
    return st;
}

ds_status ds_padim_score(const float *feats, int64_t N, int D, int d, const float *channels, const float *mean,
                         const float *precision, int n_threads, float *ps) {
    int T = ds_resolve_threads(n_threads);
    /* Below ~1 MFLOP a team costs more than it saves. */
    if ((double)N * d * d < 1e6) T = 1;
    if ((int64_t)T > N) T = (int)N;
    int *ch = ds_alloc((size_t)d, sizeof(int), "ds_scorer_score: padim channels");
    double *diff = ds_alloc((size_t)T, sizeof(double) * (size_t)d, "ds_scorer_score: padim workspace");
    if (!ch || !diff) {
        free(ch);
        free(diff);
        return DS_ERR_NOMEM;
    }
    for (int c = 0; c < d; c++) ch[c] = (int)channels[c];
    const size_t dd = (size_t)d * (size_t)d;
#pragma omp parallel num_threads(T)
    {
        double *z = diff + (size_t)omp_get_thread_num() * d;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < N; i++) {
            const float *x = feats + (size_t)i * (size_t)D, *mu = mean + (size_t)i * d;
            const float *P = precision + (size_t)i * dd;
            for (int c = 0; c < d; c++) z[c] = (double)x[ch[c]] - (double)mu[c];
            double q = ds_quad_form(P, z, d);
            /* q >= 0 in exact arithmetic (P is positive definite); NaN stays NaN */
            ps[i] = (float)sqrt(q < 0 ? 0 : q);
        }
    }
    free(ch);
    free(diff);
    return DS_OK;
}
