/* The Gaussian scorer's fit: PCA, then a Ledoit-Wolf shrunk covariance of
 * the projected training features, inverted to a precision matrix. In
 * double precision throughout; the results are stored as float32.
 *
 * References (checked by tests/test_scorer.c against fixtures made with
 * scikit-learn 1.2):
 *   PCA:  sklearn.decomposition.PCA(n_components=c, svd_solver='full'):
 *         components = top-c eigenvectors of the covariance of the centred
 *         data (= right singular vectors; signs are irrelevant to the score);
 *   LW:   sklearn.covariance.LedoitWolf().fit(Z) (Ledoit & Wolf, "A
 *         well-conditioned estimator for large-dimensional covariance
 *         matrices", J. Multivariate Anal. 88, 2004), sklearn's
 *         ledoit_wolf_shrinkage() formula below;
 *   precision: scipy.linalg.pinvh of the shrunk covariance (eigenvalues at or
 *         below max|lambda| * c * eps dropped), as LW's get_precision(). */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/gaussian.h"
#include "scorer/scorer_internal.h"

/* LAPACK (from libopenblas), Fortran calling convention with the hidden
 * string lengths that gfortran appends. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

/* Eigen-decomposition of the symmetric n x n matrix a (row-major, full):
 * eigenvalues ascending into w, eigenvectors as ROWS of a. */
static ds_status sym_eig(double *a, int n, double *w) {
    int lwork = -1, liwork = -1, info = 0;
    double wq;
    int iq;
    dsyevd_("V", "U", &n, a, &n, w, &wq, &lwork, &iq, &liwork, &info, 1, 1);
    if (info != 0) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: dsyevd workspace query failed (info=%d)", info);
    lwork = (int)wq;
    liwork = iq;
    double *work = ds_alloc((size_t)lwork, sizeof(double), "ds_scorer_fit: eigen workspace");
    int *iwork = ds_alloc((size_t)liwork, sizeof(int), "ds_scorer_fit: eigen workspace");
    ds_status st = DS_OK;
    if (!work || !iwork) {
        st = DS_ERR_NOMEM;
    } else {
        dsyevd_("V", "U", &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
        if (info != 0)
            st = ds_set_error(DS_ERR_ARG, "ds_scorer_fit: eigen-decomposition did not converge (dsyevd info=%d; "
                              "NaN or inf in the features?)", info);
    }
    free(work);
    free(iwork);
    return st;
}

/* sklearn.covariance.ledoit_wolf_shrinkage(X, assume_centered=True) on the
 * centred Zc [n, p] (sklearn 1.2, covariance/_shrunk_covariance.py). */
static double lw_shrinkage(const double *Zc, int64_t n, int p, const double *emp_cov) {
    if (p == 1) return 0.0; /* sklearn: "for only one feature, the result is the same whatever the shrinkage" */
    double tr_sum = 0, beta_ = 0, delta_ = 0;
    for (int j = 0; j < p; j++) tr_sum += emp_cov[(size_t)j * p + j]; /* = sum(X2)/n */
    double mu = tr_sum / p;
    /* beta_ = sum(X2^T X2) = sum_i (sum_j X_ij^2)^2 */
    for (int64_t i = 0; i < n; i++) {
        double r = 0;
        for (int j = 0; j < p; j++) r += Zc[i * p + j] * Zc[i * p + j];
        beta_ += r * r;
    }
    /* delta_ = sum((X^T X)^2) / n^2 = sum(emp_cov^2) */
    for (size_t i = 0; i < (size_t)p * p; i++) delta_ += emp_cov[i] * emp_cov[i];
    double beta = 1.0 / ((double)p * (double)n) * (beta_ / (double)n - delta_);
    double delta = (delta_ - 2.0 * mu * tr_sum + (double)p * mu * mu) / p;
    beta = beta < delta ? beta : delta;
    if (beta == 0 || !(delta > 0)) return 0.0;
    return beta / delta;
}

ds_status ds_gaussian_fit(const double *X, int64_t n, int D, int max_components, int n_threads, ds_gaussian_fit_out *o) {
    if (n < 2) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: gaussian needs at least 2 training images (got %lld)",
                                   (long long)n);
    if (max_components < 1) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: max_components=%d < 1", max_components);
    int64_t c64 = DS_MIN((int64_t)max_components, DS_MIN(n - 1, (int64_t)D));
    int c = (int)c64;
    ds_status st = DS_OK;
    int blas_prev = 0;
    double *mean = ds_calloc((size_t)D, sizeof(double), "ds_scorer_fit: mean");
    double *Xc = ds_alloc((size_t)n, sizeof(double) * (size_t)D, "ds_scorer_fit: centred features");
    double *cov = ds_alloc((size_t)D, sizeof(double) * (size_t)D, "ds_scorer_fit: covariance");
    double *ev = ds_alloc((size_t)D, sizeof(double), "ds_scorer_fit: eigenvalues");
    double *Z = ds_alloc((size_t)n, sizeof(double) * (size_t)c, "ds_scorer_fit: projections");
    double *loc = ds_calloc((size_t)c, sizeof(double), "ds_scorer_fit: location");
    double *ec = ds_alloc((size_t)c, sizeof(double) * (size_t)c, "ds_scorer_fit: LW covariance");
    double *ew = ds_alloc((size_t)c, sizeof(double), "ds_scorer_fit: LW eigenvalues");
    float *f_mean = ds_alloc((size_t)D, sizeof(float), "ds_scorer_fit: mean");
    float *f_comp = ds_alloc((size_t)c, sizeof(float) * (size_t)D, "ds_scorer_fit: components");
    float *f_loc = ds_alloc((size_t)c, sizeof(float), "ds_scorer_fit: location");
    float *f_prec = ds_alloc((size_t)c, sizeof(float) * (size_t)c, "ds_scorer_fit: precision");
    if (!mean || !Xc || !cov || !ev || !Z || !loc || !ec || !ew || !f_mean || !f_comp || !f_loc || !f_prec) {
        st = DS_ERR_NOMEM;
        goto fail;
    }
    blas_prev = ds_blas_set_threads(n_threads); /* no OpenMP here: BLAS threads are the one level */

    /* PCA: mean, covariance X_c^T X_c / (n-1), top-c eigenvectors. */
    for (int64_t i = 0; i < n; i++)
        for (int d = 0; d < D; d++) mean[d] += X[i * D + d];
    for (int d = 0; d < D; d++) mean[d] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int d = 0; d < D; d++) Xc[i * D + d] = X[i * D + d] - mean[d];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, (int)n, 1.0 / (double)(n - 1), Xc, D, 0.0, cov, D);
    for (int i = 0; i < D; i++)
        for (int j = 0; j < i; j++) cov[(size_t)i * D + j] = cov[(size_t)j * D + i];
    st = sym_eig(cov, D, ev);
    if (st != DS_OK) goto fail;
    /* descending order: component r = eigenvector D-1-r (rows of cov) */
    for (int r = 0; r < c; r++)
        for (int d = 0; d < D; d++) f_comp[(size_t)r * D + d] = (float)cov[(size_t)(D - 1 - r) * D + d];
    /* Z = X_c V^T, from the float32 components we store, so that the fit
     * sees exactly the projection that scoring will compute. */
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < c; r++) {
            double s = 0;
            const float *v = f_comp + (size_t)r * D;
            for (int d = 0; d < D; d++) s += Xc[i * D + d] * (double)v[d];
            Z[i * c + r] = s;
        }

    /* Ledoit-Wolf on Z: location = mean, empirical covariance / n. */
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < c; r++) loc[r] += Z[i * c + r];
    for (int r = 0; r < c; r++) loc[r] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < c; r++) Z[i * c + r] -= loc[r];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, c, (int)n, 1.0 / (double)n, Z, c, 0.0, ec, c);
    for (int i = 0; i < c; i++)
        for (int j = 0; j < i; j++) ec[(size_t)i * c + j] = ec[(size_t)j * c + i];
    double s = lw_shrinkage(Z, n, c, ec);
    double mu = 0;
    for (int r = 0; r < c; r++) mu += ec[(size_t)r * c + r];
    mu /= c;
    for (size_t i = 0; i < (size_t)c * c; i++) ec[i] *= 1.0 - s;
    for (int r = 0; r < c; r++) ec[(size_t)r * c + r] += s * mu;

    /* pinvh: P = U diag(1/lambda) U^T over eigenvalues above the cutoff. */
    st = sym_eig(ec, c, ew);
    if (st != DS_OK) goto fail;
    double lmax = 0;
    for (int r = 0; r < c; r++) lmax = fmax(lmax, fabs(ew[r]));
    double cutoff = lmax * (double)c * DBL_EPSILON;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            double p = 0;
            for (int r = 0; r < c; r++)
                if (fabs(ew[r]) > cutoff) p += ec[(size_t)r * c + i] * ec[(size_t)r * c + j] / ew[r];
            f_prec[(size_t)i * c + j] = (float)p;
        }
    for (int d = 0; d < D; d++) f_mean[d] = (float)mean[d];
    for (int r = 0; r < c; r++) f_loc[r] = (float)loc[r];
    o->n_components = c;
    o->shrinkage = s;
    o->mean = f_mean;
    o->components = f_comp;
    o->location = f_loc;
    o->precision = f_prec;
    f_mean = f_comp = f_loc = f_prec = NULL;

fail:
    if (blas_prev > 0) ds_blas_set_threads(blas_prev);
    free(mean);
    free(Xc);
    free(cov);
    free(ev);
    free(Z);
    free(loc);
    free(ec);
    free(ew);
    free(f_mean);
    free(f_comp);
    free(f_loc);
    free(f_prec);
    return st;
}

double ds_gaussian_score(const double *x, int D, int c, const float *mean, const float *components,
                         const float *location, const float *precision, double *z) {
    for (int r = 0; r < c; r++) {
        const float *v = components + (size_t)r * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (x[d] - (double)mean[d]) * (double)v[d];
        z[r] = s - (double)location[r];
    }
    double q = ds_quad_form(precision, z, c);
    return sqrt(q > 0 ? q : 0);
}
