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

void ds_padim_channels(int D, int d, uint64_t seed, int64_t *perm, int *channels) {
    if (d >= D) {
        for (int c = 0; c < D; c++) channels[c] = c;
        return;
    }
    ds_rng_shuffle_prefix(seed, D, d, perm);
    for (int c = 0; c < d; c++) channels[c] = (int)perm[c];
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

/* One pass over the images, image by image: per position i the sums of
 * u = x[ch] - K_i and of u u' (upper triangle), in double, with the shift
 * K_i = the first image's vector (the shifted-data algorithm: the
 * covariance of the shifted values is the covariance, and the shift keeps
 * the sums small, so the one-pass formula does not cancel; Chan, Golub &
 * LeVeque 1983). Then mean_i = K_i + S1/n and the scatter S2 - S1 S1'/n.
 * Memory: N d doubles of shifts besides the outputs, and one image. */
ds_status ds_padim_moments(const ds_row_source *src, int64_t n, int64_t N, const int *ch, int d, int n_threads,
                           double *mean, double *m2) {
    const int D = src->dim;
    const size_t dd = (size_t)d * (size_t)d;
    int T = ds_resolve_threads(n_threads);
    if ((int64_t)T > N) T = (int)N;
    ds_status st = DS_OK;
    float *img = ds_alloc((size_t)N, sizeof(float) * (size_t)D, "ds_scorer_fit: padim image");
    double *shift = ds_alloc((size_t)N, sizeof(double) * (size_t)d, "ds_scorer_fit: padim sums");
    double *ws = ds_alloc((size_t)T, sizeof(double) * (size_t)d, "ds_scorer_fit: padim workspace"); /* u [d] a thread */
    if (!img || !shift || !ws) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    memset(mean, 0, sizeof(double) * (size_t)N * (size_t)d); /* S1 until the end */
    memset(m2, 0, sizeof(double) * (size_t)N * dd);
    for (int64_t j = 0; j < n; j++) {
        if ((st = src->read(src->user, j * N, N, img)) != DS_OK) goto done;
#pragma omp parallel for num_threads(T) schedule(static)
        for (int64_t i = 0; i < N; i++) {
            double *u = ws + (size_t)omp_get_thread_num() * d, *K = shift + (size_t)i * d;
            const float *x = img + (size_t)i * (size_t)D;
            if (j == 0)
                for (int c = 0; c < d; c++) K[c] = x[ch[c]];
            double *S1 = mean + (size_t)i * d, *S2 = m2 + (size_t)i * dd;
            for (int c = 0; c < d; c++) {
                u[c] = (double)x[ch[c]] - K[c];
                S1[c] += u[c];
            }
            for (int a = 0; a < d; a++) {
                const double ua = u[a];
                double *row = S2 + (size_t)a * d;
                for (int b = a; b < d; b++) row[b] += ua * u[b];
            }
        }
    }
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t i = 0; i < N; i++) {
        double *S1 = mean + (size_t)i * d, *M = m2 + (size_t)i * dd;
        const double *K = shift + (size_t)i * d;
        for (int a = 0; a < d; a++)
            for (int b = a; b < d; b++) M[(size_t)a * d + b] = M[(size_t)b * d + a] = M[(size_t)a * d + b] - S1[a] * S1[b] / (double)n;
        for (int c = 0; c < d; c++) S1[c] = K[c] + S1[c] / (double)n;
    }
done:
    free(img);
    free(shift);
    free(ws);
    return st;
}

/* The moments (ds_padim_moments), then cov_i = scatter / (n-1) + 0.01 I,
 * np.cov's (n-1) divisor, and its inverse. Memory: N (d + d^2) doubles of
 * sums and one image, whatever n. */
ds_status ds_padim_fit(const ds_row_source *src, int64_t n, int64_t N, int max_channels, uint64_t seed,
                       int n_threads, ds_padim_fit_out *o) {
    const int D = src->dim;
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
    int64_t *perm = ds_alloc((size_t)D, sizeof(int64_t), "ds_scorer_fit: padim channels");
    float *f_ch = ds_alloc((size_t)d, sizeof(float), "ds_scorer_fit: padim channels");
    float *f_mean = ds_alloc((size_t)N, sizeof(float) * (size_t)d, "ds_scorer_fit: padim means");
    float *f_prec = ds_alloc(n_prec, sizeof(float), "ds_scorer_fit: padim precisions");
    double *mu = ds_alloc((size_t)N, sizeof(double) * (size_t)d, "ds_scorer_fit: padim sums");
    double *s2 = ds_alloc(n_prec, sizeof(double), "ds_scorer_fit: padim sums");
    if (!ch || !perm || !f_ch || !f_mean || !f_prec || !mu || !s2) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    ds_padim_channels(D, d, seed, perm, ch);
    for (int c = 0; c < d; c++) f_ch[c] = (float)ch[c];
    if ((st = ds_padim_moments(src, n, N, ch, d, n_threads, mu, s2)) != DS_OK) goto done;
    int64_t bad_pos = -1;
    int bad_info = 0;
    int blas_prev = ds_blas_set_threads(1); /* we parallelise over positions */
#pragma omp parallel for num_threads(T) schedule(dynamic, 16)
    for (int64_t i = 0; i < N; i++) {
        double *cov = s2 + (size_t)i * dd; /* the scatter becomes the covariance, then its inverse, in place */
        const double *m = mu + (size_t)i * d;
        int finite = 1;
        for (size_t j = 0; j < dd; j++) cov[j] /= (double)(n - 1);
        for (int c = 0; c < d; c++) finite &= isfinite(m[c]);
        int info = finite ? ds_padim_inverse(cov, d, f_prec + (size_t)i * dd) : -1;
        if (info != 0) {
#pragma omp critical(ds_padim_err)
            if (bad_pos < 0 || i < bad_pos) {
                bad_pos = i;
                bad_info = info > 0 ? info : 0;
            }
            continue;
        }
        for (int c = 0; c < d; c++) f_mean[(size_t)i * d + c] = (float)m[c];
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
    free(mu);
    free(s2);
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
