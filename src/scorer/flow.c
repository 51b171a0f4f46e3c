/* Conditional normalizing flow over patch features, CFlow-AD style
 * (Gudovskiy et al. WACV 2022; reference implementation
 * gudovskiy/cflow-ad, model.py / train.py), trained here in C.
 *
 * The architecture is in flow.h. Deviations from CFlow-AD, on purpose:
 *   - the coupling block is a plain affine coupling (RealNVP, Dinh et al.
 *     ICLR 2017) followed by a fixed random orthogonal mixing, where CFlow
 *     uses FrEIA's AllInOneBlock (which also has a learned global affine
 *     and ActNorm): the features are PCA-whitened first, so the flow starts
 *     at the global Gaussian of the patches and the extra affine adds little;
 *   - the loss is the plain mean nll per dimension (maximum likelihood),
 *     not CFlow's -logsigmoid(log_prob / C);
 *   - the last layer of each subnetwork starts at zero (Glow, Kingma &
 *     Dhariwal 2018, Sec. 3.3) so every block starts as the identity;
 *   - early stopping on the nll of held-out normal images.
 * Forward and backward are written out by hand (no autograd for C is worth
 * the dependency); the GEMMs go through cblas_sgemm. tests/test_flow.c
 * checks log-determinants, the inverse, every gradient and a whole training
 * run against a PyTorch float64 implementation of the same architecture
 * (tests/fixtures/make_flow_fixtures.py). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/flow.h"

extern void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
                    const int *lwork, int *info);
extern void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
                    double *work, const int *lwork, int *info);
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

#define LOG_2PI 1.8378770664093453

size_t ds_flow_n_params(int d, int P, int H, int L) {
    int d1 = d / 2, d2 = d - d1;
    return (size_t)L * ((size_t)H * (size_t)(d1 + P) + (size_t)H + (size_t)2 * d2 * H + (size_t)2 * d2);
}

void ds_flow_net_bind(ds_flow_net *net, const float *theta) {
    int d1 = net->d / 2, d2 = net->d - d1;
    size_t L = (size_t)net->L, H = (size_t)net->H;
    net->w1 = theta;
    net->b1 = net->w1 + L * H * (size_t)(d1 + net->P);
    net->w2 = net->b1 + L * H;
    net->b2 = net->w2 + L * 2 * (size_t)d2 * H;
}

void ds_flow_posenc(int P, int gh, int gw, float *out) {
    const int half = P / 2;
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            float *o = out + ((size_t)y * gw + x) * (size_t)P;
            for (int k = 0; 2 * k < half; k++) {
                double div = exp((double)(2 * k) * -(log(1e4) / (double)half));
                o[2 * k] = (float)sin(x * div);
                o[2 * k + 1] = (float)cos(x * div);
                o[half + 2 * k] = (float)sin(y * div);
                o[half + 2 * k + 1] = (float)cos(y * div);
            }
        }
}

ds_status ds_flow_random_mix(int d, int L, uint64_t seed, float *out) {
    double *a = ds_alloc((size_t)d * d, sizeof(double), "ds_scorer_fit: flow mixing");
    double *tau = ds_alloc((size_t)d, sizeof(double), "ds_scorer_fit: flow mixing");
    double *r = ds_alloc((size_t)d, sizeof(double), "ds_scorer_fit: flow mixing");
    int lwork = 64 * d, info = 0;
    double *work = ds_alloc((size_t)lwork, sizeof(double), "ds_scorer_fit: flow mixing");
    ds_status st = DS_OK;
    if (!a || !tau || !r || !work) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    ds_rng rng;
    ds_rng_seed(&rng, seed ^ 0x666c6f77ull); /* "flow": not the stream of the batches */
    for (int l = 0; l < L && st == DS_OK; l++) {
        for (size_t i = 0; i < (size_t)d * d; i++) a[i] = ds_rng_normal(&rng);
        dgeqrf_(&d, &d, a, &d, tau, work, &lwork, &info);
        for (int i = 0; i < d; i++) r[i] = a[(size_t)i * d + i] < 0 ? -1.0 : 1.0;
        if (info == 0) dorgqr_(&d, &d, &d, a, &d, tau, work, &lwork, &info);
        if (info != 0) {
            st = ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow mixing QR failed (LAPACK info=%d)", info);
            break;
        }
        /* a is column-major Q; column j times sign(R_jj). Stored as-is
         * (row-major: Q^T, just as orthogonal and Haar). */
        float *o = out + (size_t)l * d * d;
        for (int j = 0; j < d; j++)
            for (int i = 0; i < d; i++) o[(size_t)j * d + i] = (float)(a[(size_t)j * d + i] * r[j]);
    }
done:
    free(a);
    free(tau);
    free(r);
    free(work);
    return st;
}

ds_status ds_flow_whiten_fit(const float *X, int64_t n, int D, int d, float *mean, float *proj) {
    enum { CHUNK = 2048 };
    double *mu = ds_calloc((size_t)D, sizeof(double), "ds_scorer_fit: flow PCA");
    double *cov = ds_calloc((size_t)D * D, sizeof(double), "ds_scorer_fit: flow PCA");
    double *buf = ds_alloc((size_t)CHUNK * D, sizeof(double), "ds_scorer_fit: flow PCA");
    double *w = ds_alloc((size_t)D, sizeof(double), "ds_scorer_fit: flow PCA");
    int lwork = 1 + 6 * D + 2 * D * D, liwork = 3 + 5 * D, info = 0;
    double *work = ds_alloc((size_t)lwork, sizeof(double), "ds_scorer_fit: flow PCA");
    int *iwork = ds_alloc((size_t)liwork, sizeof(int), "ds_scorer_fit: flow PCA");
    ds_status st = DS_OK;
    if (!mu || !cov || !buf || !w || !work || !iwork) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < D; c++) mu[c] += X[(size_t)i * D + c];
    for (int c = 0; c < D; c++) {
        mu[c] /= (double)n;
        if (!isfinite(mu[c])) {
            st = ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow: NaN or inf in the features (channel %d)", c);
            goto done;
        }
    }
    /* covariance (/n), centred in double, upper triangle (row-major) */
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int m = (int)DS_MIN((int64_t)CHUNK, n - i0);
        for (int r = 0; r < m; r++)
            for (int c = 0; c < D; c++) buf[(size_t)r * D + c] = (double)X[(size_t)(i0 + r) * D + c] - mu[c];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, m, 1.0 / (double)n, buf, D, 1.0, cov, D);
    }
    /* row-major upper = column-major lower; eigenvectors come back in the
     * columns (column-major), i.e. rows of cov as we index it, ascending */
    dsyevd_("V", "L", &D, cov, &D, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    if (info != 0) {
        st = ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow PCA eigendecomposition failed (LAPACK info=%d)", info);
        goto done;
    }
    double tr = 0;
    for (int c = 0; c < D; c++) tr += w[c] > 0 ? w[c] : 0;
    const double eps = 1e-3 * tr / D; /* keeps near-constant channels from blowing up */
    for (int k = 0; k < d; k++) {
        int e = D - 1 - k;
        const double *v = cov + (size_t)e * D;
        int amax = 0;
        for (int c = 1; c < D; c++)
            if (fabs(v[c]) > fabs(v[amax])) amax = c;
        double scale = (v[amax] < 0 ? -1.0 : 1.0) / sqrt((w[e] > 0 ? w[e] : 0) + eps);
        for (int c = 0; c < D; c++) proj[(size_t)k * D + c] = (float)(v[c] * scale);
    }
    for (int c = 0; c < D; c++) mean[c] = (float)mu[c];
done:
    free(mu);
    free(cov);
    free(buf);
    free(w);
    free(work);
    free(iwork);
    return st;
}

void ds_flow_whiten(const float *X, int64_t n, int D, int d, const float *mean, const float *proj, float *Z) {
    double pm[4096]; /* proj mean; d <= 4096 is checked at fit and load */
    DS_ASSERT(d <= 4096);
    for (int k = 0; k < d; k++) {
        double s = 0;
        for (int c = 0; c < D; c++) s += (double)proj[(size_t)k * D + c] * mean[c];
        pm[k] = s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, d, D, 1.0f, X, D, proj, D, 0.0f, Z, d);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < d; k++) Z[(size_t)i * d + k] = (float)((double)Z[(size_t)i * d + k] - pm[k]);
}

/* ---- one batch: activations kept for the backward pass */
struct ds_flow_ws {
    int cap, B;
    float *X;  /* [(L+1), cap, d]  block inputs; X[L] = output */
    float *U;  /* [L, cap, d1+P]   subnet inputs */
    float *Hh; /* [L, cap, H]      relu(W1 u + b1) */
    float *S;  /* [L, cap, d2]     log-scales */
    float *Y;  /* [L, cap, d]      coupled, before the mixing */
    float *A;  /* [cap, 2*d2]      subnet outputs / their gradient */
    float *gH; /* [cap, H] */
    float *gU; /* [cap, d1+P] */
    float *G;  /* [cap, d] */
    float *gY; /* [cap, d] */
    double *ld;/* [cap] */
};

ds_flow_ws *ds_flow_ws_create(const ds_flow_net *net, int B) {
    const int d = net->d, d1 = d / 2, d2 = d - d1, P = net->P, H = net->H, L = net->L;
    size_t per = (size_t)(L + 1) * d + (size_t)L * (d1 + P) + (size_t)L * H + (size_t)L * d2 + (size_t)L * d +
                 (size_t)2 * d2 + H + (d1 + P) + 2 * (size_t)d;
    ds_flow_ws *w = calloc(1, sizeof *w);
    float *buf = ds_alloc((size_t)B, per * sizeof(float), "flow workspace");
    double *ld = ds_alloc((size_t)B, sizeof(double), "flow workspace");
    if (!w || !buf || !ld) {
        free(w);
        free(buf);
        free(ld);
        if (!w) ds_set_error(DS_ERR_NOMEM, "flow workspace: out of memory");
        return NULL;
    }
    size_t b = (size_t)B;
    w->cap = B;
    w->X = buf;
    w->U = w->X + (size_t)(L + 1) * b * d;
    w->Hh = w->U + (size_t)L * b * (d1 + P);
    w->S = w->Hh + (size_t)L * b * H;
    w->Y = w->S + (size_t)L * b * d2;
    w->A = w->Y + (size_t)L * b * d;
    w->gH = w->A + b * 2 * d2;
    w->gU = w->gH + b * H;
    w->G = w->gU + b * (d1 + P);
    w->gY = w->G + b * d;
    w->ld = ld;
    return w;
}

void ds_flow_ws_free(ds_flow_ws *w) {
    if (!w) return;
    free(w->X);
    free(w->ld);
    free(w);
}

/* a = W2 relu(W1 [x1, c] + b1) + b2 for B rows of block l; u, h kept. */
static void subnet(const ds_flow_net *net, int l, const float *x, const float *cond, int B, float *u, float *h,
                   float *a) {
    const int d = net->d, d1 = d / 2, d2 = d - d1, P = net->P, H = net->H, K = d1 + P;
    const float *W1 = net->w1 + (size_t)l * H * K, *b1 = net->b1 + (size_t)l * H;
    const float *W2 = net->w2 + (size_t)l * 2 * d2 * H, *b2 = net->b2 + (size_t)l * 2 * d2;
    for (int b = 0; b < B; b++) {
        memcpy(u + (size_t)b * K, x + (size_t)b * d, sizeof(float) * (size_t)d1);
        memcpy(u + (size_t)b * K + d1, cond + (size_t)b * P, sizeof(float) * (size_t)P);
    }
    for (int b = 0; b < B; b++) memcpy(h + (size_t)b * H, b1, sizeof(float) * (size_t)H);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, K, 1.0f, u, K, W1, K, 1.0f, h, H);
    for (size_t i = 0; i < (size_t)B * H; i++) h[i] = h[i] > 0 ? h[i] : 0;
    for (int b = 0; b < B; b++) memcpy(a + (size_t)b * 2 * d2, b2, sizeof(float) * (size_t)2 * d2);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, 2 * d2, H, 1.0f, h, H, W2, H, 1.0f, a, 2 * d2);
}

double ds_flow_forward(const ds_flow_net *net, ds_flow_ws *ws, const float *x0, const float *cond, int B,
                       float *z_out, double *logdet, double *nll) {
    const int d = net->d, d1 = d / 2, d2 = d - d1, P = net->P, H = net->H, L = net->L;
    const float c = net->clamp;
    const size_t b = (size_t)ws->cap;
    DS_ASSERT(B <= ws->cap);
    ws->B = B;
    memcpy(ws->X, x0, sizeof(float) * (size_t)B * d);
    for (int i = 0; i < B; i++) ws->ld[i] = 0;
    for (int l = 0; l < L; l++) {
        const float *X = ws->X + (size_t)l * b * d;
        float *U = ws->U + (size_t)l * b * (d1 + P), *Hh = ws->Hh + (size_t)l * b * H;
        float *S = ws->S + (size_t)l * b * d2, *Y = ws->Y + (size_t)l * b * d, *A = ws->A;
        subnet(net, l, X, cond, B, U, Hh, A);
        for (int i = 0; i < B; i++) {
            const float *x = X + (size_t)i * d, *a = A + (size_t)i * 2 * d2;
            float *y = Y + (size_t)i * d, *s = S + (size_t)i * d2;
            double ld = 0;
            memcpy(y, x, sizeof(float) * (size_t)d1);
            for (int j = 0; j < d2; j++) {
                s[j] = c * tanhf(a[j] / c);
                y[d1 + j] = x[d1 + j] * expf(s[j]) + a[d2 + j];
                ld += s[j];
            }
            ws->ld[i] += ld;
        }
        /* X' = Y Q^T (x' = Q y per row) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, d, d, 1.0f, Y, d, net->mix + (size_t)l * d * d, d,
                    0.0f, ws->X + (size_t)(l + 1) * b * d, d);
    }
    const float *Z = ws->X + (size_t)L * b * d;
    double sum = 0;
    for (int i = 0; i < B; i++) {
        double q = 0;
        for (int j = 0; j < d; j++) q += (double)Z[(size_t)i * d + j] * Z[(size_t)i * d + j];
        double v = (0.5 * q - ws->ld[i]) / d + 0.5 * LOG_2PI;
        if (nll) nll[i] = v;
        if (logdet) logdet[i] = ws->ld[i];
        sum += v;
    }
    if (z_out) memcpy(z_out, Z, sizeof(float) * (size_t)B * d);
    return sum / B;
}

void ds_flow_backward(const ds_flow_net *net, ds_flow_ws *ws, float *grad) {
    const int d = net->d, d1 = d / 2, d2 = d - d1, P = net->P, H = net->H, L = net->L, K = d1 + P, B = ws->B;
    const float c = net->clamp;
    const size_t b = (size_t)ws->cap;
    ds_flow_net g = *net;
    ds_flow_net_bind(&g, grad);
    float *gw1 = (float *)g.w1, *gb1 = (float *)g.b1, *gw2 = (float *)g.w2, *gb2 = (float *)g.b2;
    /* loss = mean_b [(0.5 |x_L|^2 - sum s) / d]: d loss / d x_L = x_L / (B d), d loss / d s = -1 / (B d) */
    const float inv = 1.0f / ((float)B * (float)d);
    float *G = ws->G, *gY = ws->gY, *gA = ws->A, *gH = ws->gH, *gU = ws->gU;
    const float *XL = ws->X + (size_t)L * b * d;
    for (size_t i = 0; i < (size_t)B * d; i++) G[i] = XL[i] * inv;
    for (int l = L - 1; l >= 0; l--) {
        const float *X = ws->X + (size_t)l * b * d, *U = ws->U + (size_t)l * b * K;
        const float *Hh = ws->Hh + (size_t)l * b * H, *S = ws->S + (size_t)l * b * d2;
        const float *W1 = net->w1 + (size_t)l * H * K, *W2 = net->w2 + (size_t)l * 2 * d2 * H;
        /* y = Q^T-side: gY = G Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, d, d, 1.0f, G, d, net->mix + (size_t)l * d * d, d,
                    0.0f, gY, d);
        for (int i = 0; i < B; i++) {
            const float *x = X + (size_t)i * d, *s = S + (size_t)i * d2, *gy = gY + (size_t)i * d;
            float *ga = gA + (size_t)i * 2 * d2, *gx = G + (size_t)i * d;
            for (int j = 0; j < d2; j++) {
                float e = expf(s[j]), r = s[j] / c;
                float gs = gy[d1 + j] * x[d1 + j] * e - inv;
                ga[j] = gs * (1.0f - r * r); /* d/da c tanh(a/c) = 1 - tanh^2 */
                ga[d2 + j] = gy[d1 + j];
                gx[d1 + j] = gy[d1 + j] * e;
            }
            memcpy(gx, gy, sizeof(float) * (size_t)d1);
        }
        float *gW2 = gw2 + (size_t)l * 2 * d2 * H, *gB2 = gb2 + (size_t)l * 2 * d2;
        float *gW1 = gw1 + (size_t)l * H * K, *gB1 = gb1 + (size_t)l * H;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 2 * d2, H, B, 1.0f, gA, 2 * d2, Hh, H, 0.0f, gW2, H);
        for (int j = 0; j < 2 * d2; j++) {
            double s = 0;
            for (int i = 0; i < B; i++) s += gA[(size_t)i * 2 * d2 + j];
            gB2[j] = (float)s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, 2 * d2, 1.0f, gA, 2 * d2, W2, H, 0.0f, gH, H);
        for (size_t i = 0; i < (size_t)B * H; i++)
            if (!(Hh[i] > 0)) gH[i] = 0;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, K, B, 1.0f, gH, H, U, K, 0.0f, gW1, K);
        for (int j = 0; j < H; j++) {
            double s = 0;
            for (int i = 0; i < B; i++) s += gH[(size_t)i * H + j];
            gB1[j] = (float)s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, K, H, 1.0f, gH, H, W1, K, 0.0f, gU, K);
        for (int i = 0; i < B; i++)
            for (int j = 0; j < d1; j++) G[(size_t)i * d + j] += gU[(size_t)i * K + j];
    }
}

void ds_flow_inverse(const ds_flow_net *net, ds_flow_ws *ws, const float *z_out, const float *cond, int B, float *x0) {
    const int d = net->d, d1 = d / 2, d2 = d - d1, P = net->P, H = net->H, L = net->L;
    const float c = net->clamp;
    DS_ASSERT(B <= ws->cap);
    float *Y = ws->gY, *X = ws->G;
    memcpy(X, z_out, sizeof(float) * (size_t)B * d);
    for (int l = L - 1; l >= 0; l--) {
        /* y = Q^T x' : Y = X' Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, d, d, 1.0f, X, d, net->mix + (size_t)l * d * d, d,
                    0.0f, Y, d);
        subnet(net, l, Y, cond, B, ws->U, ws->Hh, ws->A);
        for (int i = 0; i < B; i++) {
            const float *y = Y + (size_t)i * d, *a = ws->A + (size_t)i * 2 * d2;
            float *x = X + (size_t)i * d;
            memcpy(x, y, sizeof(float) * (size_t)d1);
            for (int j = 0; j < d2; j++) x[d1 + j] = (y[d1 + j] - a[d2 + j]) * expf(-c * tanhf(a[j] / c));
        }
    }
    (void)P;
    (void)H;
    memcpy(x0, X, sizeof(float) * (size_t)B * d);
}

/* rows of Z / posenc gathered into the batch buffers */
static void gather(const float *Z, const int32_t *pos, const float *posenc, const int64_t *idx, int B, int d, int P,
                   float *xb, float *cb) {
    for (int i = 0; i < B; i++) {
        int64_t r = idx ? idx[i] : i;
        memcpy(xb + (size_t)i * d, Z + (size_t)r * d, sizeof(float) * (size_t)d);
        memcpy(cb + (size_t)i * P, posenc + (size_t)pos[r] * P, sizeof(float) * (size_t)P);
    }
}

enum { EVAL_BATCH = 1024 };

ds_status ds_flow_nll_rows(const ds_flow_net *net, const float *Z, const int32_t *pos, int64_t n,
                           const float *posenc, float *nll, double *mean) {
    const int d = net->d, P = net->P;
    int cap = (int)DS_MIN((int64_t)EVAL_BATCH, n > 0 ? n : 1);
    ds_flow_ws *ws = ds_flow_ws_create(net, cap);
    float *xb = ds_alloc((size_t)cap, sizeof(float) * (size_t)(d + P), "flow: batch");
    double *v = ds_alloc((size_t)cap, sizeof(double), "flow: batch");
    if (!ws || !xb || !v) {
        ds_flow_ws_free(ws);
        free(xb);
        free(v);
        return DS_ERR_NOMEM;
    }
    double sum = 0;
    for (int64_t i0 = 0; i0 < n; i0 += cap) {
        int B = (int)DS_MIN((int64_t)cap, n - i0);
        float *cb = xb + (size_t)cap * d;
        for (int i = 0; i < B; i++) {
            memcpy(xb + (size_t)i * d, Z + (size_t)(i0 + i) * d, sizeof(float) * (size_t)d);
            memcpy(cb + (size_t)i * P, posenc + (size_t)pos[i0 + i] * P, sizeof(float) * (size_t)P);
        }
        sum += ds_flow_forward(net, ws, xb, cb, B, NULL, NULL, v) * B;
        if (nll)
            for (int i = 0; i < B; i++) nll[i0 + i] = (float)v[i];
    }
    if (mean) *mean = n > 0 ? sum / (double)n : NAN;
    ds_flow_ws_free(ws);
    free(xb);
    free(v);
    return DS_OK;
}

ds_status ds_flow_train(ds_flow_net *net, float *theta, const float *Z, const int32_t *pos, int64_t n,
                        const float *Zval, const int32_t *pos_val, int64_t n_val, const float *posenc,
                        const ds_flow_train_opts *o, ds_flow_train_result *res) {
    /* The stage string carries the epoch and the losses. It must outlive this
     * call (a progress display may print it after we return), hence static;
     * thread-local so that concurrent fits do not share it. */
    static _Thread_local char stage[160];
    const int d = net->d, P = net->P;
    const int64_t m_ep = o->epoch_rows > 0 && o->epoch_rows < n ? o->epoch_rows : n;
    const int Bmax = (int)DS_MIN((int64_t)o->batch, m_ep);
    const size_t np = ds_flow_n_params(net->d, net->P, net->H, net->L);
    const int64_t steps_per_epoch = (m_ep + Bmax - 1) / Bmax;
    const int64_t total = (int64_t)o->max_epochs * steps_per_epoch;
    ds_status st = DS_OK;
    ds_flow_ws *ws = ds_flow_ws_create(net, Bmax);
    float *grad = ds_alloc(np, sizeof(float), "ds_scorer_fit: flow gradient");
    float *m = ds_calloc(np, sizeof(float), "ds_scorer_fit: flow Adam state");
    float *v = ds_calloc(np, sizeof(float), "ds_scorer_fit: flow Adam state");
    float *best = ds_alloc(np, sizeof(float), "ds_scorer_fit: flow best weights");
    float *xb = ds_alloc((size_t)Bmax, sizeof(float) * (size_t)(d + P), "ds_scorer_fit: flow batch");
    int64_t *perm = ds_alloc((size_t)n, sizeof(int64_t), "ds_scorer_fit: flow order");
    float *curve = ds_alloc((size_t)o->max_epochs + 1, 2 * sizeof(float), "ds_scorer_fit: flow curve");
    if (!ws || !grad || !m || !v || !best || !xb || !perm || !curve) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    ds_flow_net_bind(net, theta);
    memcpy(best, theta, np * sizeof(float));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    double tr0, va0 = NAN;
    if ((st = ds_flow_nll_rows(net, Z, pos, n, posenc, NULL, &tr0)) != DS_OK) goto done;
    if (n_val > 0 && (st = ds_flow_nll_rows(net, Zval, pos_val, n_val, posenc, NULL, &va0)) != DS_OK) goto done;
    curve[0] = (float)tr0, curve[1] = (float)va0;
    double best_val = va0, best_tr = tr0;
    int best_epoch = 0, epoch = 0, bad = 0;
    ds_rng rng;
    ds_rng_seed(&rng, o->seed);
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    int64_t t = 0;
    snprintf(stage, sizeof stage, "flow epoch 1/%d (start nll %.4f, val %.4f)", o->max_epochs, tr0, va0);
    while (epoch < o->max_epochs) {
        epoch++;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(ds_rng_u64(&rng) % (uint64_t)(i + 1));
            int64_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        double ep_sum = 0;
        for (int64_t i0 = 0; i0 < m_ep; i0 += Bmax) {
            int B = (int)DS_MIN((int64_t)Bmax, m_ep - i0);
            gather(Z, pos, posenc, perm + i0, B, d, P, xb, xb + (size_t)Bmax * d);
            double loss = ds_flow_forward(net, ws, xb, xb + (size_t)Bmax * d, B, NULL, NULL, NULL);
            if (!isfinite(loss)) {
                st = ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow training diverged (nll %g at epoch %d, step %lld); "
                                  "try a lower learning rate", loss, epoch, (long long)(t + 1));
                goto done;
            }
            if (o->step_loss) o->step_loss[t] = loss;
            ep_sum += loss * B;
            ds_flow_backward(net, ws, grad);
            /* torch.optim.Adam (1.13, single-tensor path), exactly */
            t++;
            const double bc1 = 1.0 - pow(b1, (double)t), bc2s = sqrt(1.0 - pow(b2, (double)t));
            const double step = o->lr / bc1;
            for (size_t k = 0; k < np; k++) {
                float gk = grad[k];
                m[k] = (float)(b1 * m[k] + (1 - b1) * gk);
                v[k] = (float)(b2 * v[k] + (1 - b2) * (double)gk * gk);
                theta[k] = (float)(theta[k] - step * m[k] / (sqrt((double)v[k]) / bc2s + eps));
            }
            if (o->progress) o->progress(stage, (int64_t)(epoch - 1) * steps_per_epoch + (i0 / Bmax) + 1, total,
                                         o->progress_user);
        }
        double tr = ep_sum / (double)m_ep, va = NAN;
        if (n_val > 0 && (st = ds_flow_nll_rows(net, Zval, pos_val, n_val, posenc, NULL, &va)) != DS_OK) goto done;
        curve[2 * epoch] = (float)tr, curve[2 * epoch + 1] = (float)va;
        if (n_val == 0 || va < best_val) {
            best_val = va, best_tr = tr, best_epoch = epoch, bad = 0;
            memcpy(best, theta, np * sizeof(float));
        } else {
            bad++;
        }
        snprintf(stage, sizeof stage, "flow epoch %d/%d (nll %.4f, val %.4f, best %.4f at %d)",
                 DS_MIN(epoch + 1, o->max_epochs), o->max_epochs, tr, va, best_val, best_epoch);
        if (n_val > 0 && bad >= o->patience) break;
    }
    if (o->progress) o->progress(stage, total, total, o->progress_user);
    memcpy(theta, best, np * sizeof(float));
    res->epochs_run = epoch;
    res->best_epoch = best_epoch;
    res->train_nll = best_tr;
    res->val_nll = best_val;
    res->curve = curve;
    curve = NULL;
done:
    ds_flow_ws_free(ws);
    free(grad);
    free(m);
    free(v);
    free(best);
    free(xb);
    free(perm);
    free(curve);
    return st;
}

/* ---- the scorer */

ds_status ds_flow_fit(const float *feats, int64_t n_images, int64_t N, int D, const ds_scorer_params *p,
                      ds_flow_fit_out *o) {
    const int d = p->flow_dim <= 0 ? D : DS_MIN(p->flow_dim, D), P = p->flow_pos_dim, L = p->flow_blocks;
    const int d1 = d / 2, d2 = d - d1;
    const int H = p->flow_hidden > 0 ? p->flow_hidden : 2 * (d1 + P); /* CFlow subnet_fc: 2 * dims_in */
    int gw = p->grid_w, gh;
    if (gw <= 0) {
        gw = (int)llround(sqrt((double)N));
        if ((int64_t)gw * gw != N)
            return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow needs the patch grid: N=%lld is not a square, "
                                "set grid_w", (long long)N);
    }
    if (N % gw != 0)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow grid_w=%d does not divide N=%lld", gw, (long long)N);
    gh = (int)(N / gw);
    if (d < 2) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow needs at least 2 dimensions (D=%d)", D);
    if (P < 4 || P % 4 != 0 || P > 4096)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow_pos_dim=%d must be a positive multiple of 4", P);
    if (L < 1 || L > 256) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow_blocks=%d must be in 1..256", L);
    if (H < 1 || H > 65536) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow_hidden=%d out of range", H);
    if (p->flow_epochs < 1 || p->flow_batch < 1 || p->flow_patience < 1 || p->flow_epoch_patches < 0 ||
        !(p->flow_lr > 0 && p->flow_lr < 1))
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow needs epochs >= 1, batch >= 1, patience >= 1 and a "
                            "learning rate in (0, 1)");
    if (N > INT32_MAX) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow: too many patches per image");
    if (d > 4096) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: flow_dim %d > 4096", d);
    if (p->metric != DS_METRIC_L2 && p->metric != DS_METRIC_COSINE)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown metric %d", (int)p->metric);
    /* Held-out normal images for early stopping: every 10th (none below 10). */
    const int64_t n_val_img = n_images >= 10 ? n_images / 10 : 0, n_tr_img = n_images - n_val_img;
    const int64_t n_tr = n_tr_img * N, n_va = n_val_img * N;
    const size_t np = ds_flow_n_params(d, P, H, L);
    ds_status st = DS_OK;
    float *mean = ds_alloc((size_t)D, sizeof(float), "ds_scorer_fit: flow mean");
    float *proj = ds_alloc((size_t)d * D, sizeof(float), "ds_scorer_fit: flow projection");
    float *theta = ds_calloc(np, sizeof(float), "ds_scorer_fit: flow weights");
    float *mix = ds_alloc((size_t)L * d * d, sizeof(float), "ds_scorer_fit: flow mixing");
    float *posenc = ds_alloc((size_t)N, sizeof(float) * (size_t)P, "ds_scorer_fit: flow positions");
    float *Z = ds_alloc((size_t)(n_tr + n_va), sizeof(float) * (size_t)d, "ds_scorer_fit: whitened features");
    int32_t *pos = ds_alloc((size_t)(n_tr + n_va), sizeof(int32_t), "ds_scorer_fit: flow positions");
    float *trf = NULL, *fn = NULL;
    int blas_prev = -1;
    ds_flow_train_result res = {0};
    if (!mean || !proj || !theta || !mix || !posenc || !Z || !pos) {
        st = DS_ERR_NOMEM;
        goto fail;
    }
    /* cosine: the flow models the directions of the tokens, as the patch
     * bank's cosine distance does (measured: brain_mri image AUROC 0.92
     * against 0.77 on the raw features, docs/flow.md). Costs a copy. */
    if (p->metric == DS_METRIC_COSINE) {
        if (!(fn = ds_alloc((size_t)(n_tr + n_va), sizeof(float) * (size_t)D, "ds_scorer_fit: normalised features"))) {
            st = DS_ERR_NOMEM;
            goto fail;
        }
        ds_l2_normalize_rows(feats, fn, n_tr + n_va, D);
        feats = fn;
    }
    blas_prev = ds_blas_set_threads(ds_resolve_threads(p->n_threads)); /* one level: BLAS threads */
    /* training images first, then the held-out ones (image i is held out when i % 10 == 9) */
    int64_t r_tr = 0, r_va = n_tr;
    if (n_val_img > 0) {
        trf = ds_alloc((size_t)n_tr, sizeof(float) * (size_t)D, "ds_scorer_fit: flow training rows");
        if (!trf) {
            st = DS_ERR_NOMEM;
            goto fail;
        }
    }
    for (int64_t i = 0, kv = 0; i < n_images; i++) {
        bool is_val = n_val_img > 0 && i % 10 == 9 && kv < n_val_img;
        int64_t r0 = is_val ? r_va : r_tr;
        if (is_val) kv++, r_va += N;
        else r_tr += N;
        for (int64_t j = 0; j < N; j++) pos[r0 + j] = (int32_t)j;
        if (trf && !is_val) memcpy(trf + (size_t)r0 * D, feats + (size_t)i * N * D, sizeof(float) * (size_t)N * D);
    }
    DS_ASSERT(r_tr == n_tr && r_va == n_tr + n_va);
    /* the whitening sees the training rows only */
    if ((st = ds_flow_whiten_fit(trf ? trf : feats, n_tr, D, d, mean, proj)) != DS_OK) goto fail;
    r_tr = 0, r_va = n_tr;
    for (int64_t i = 0, kv = 0; i < n_images; i++) {
        bool is_val = n_val_img > 0 && i % 10 == 9 && kv < n_val_img;
        int64_t r0 = is_val ? r_va : r_tr;
        if (is_val) kv++, r_va += N;
        else r_tr += N;
        ds_flow_whiten(feats + (size_t)i * N * D, N, D, d, mean, proj, Z + (size_t)r0 * d);
    }
    free(trf);
    free(fn);
    trf = fn = NULL;
    ds_flow_posenc(P, gh, gw, posenc);
    if ((st = ds_flow_random_mix(d, L, p->seed, mix)) != DS_OK) goto fail;
    /* W1 ~ N(0, 1/fan_in) (LeCun / He-style for the relu), b1 = 0, W2 = b2 = 0 (Glow) */
    {
        ds_rng r;
        ds_rng_seed(&r, p->seed ^ 0x696e6974ull); /* "init" */
        ds_flow_net tmp = {.d = d, .P = P, .H = H, .L = L};
        ds_flow_net_bind(&tmp, theta);
        float *w1 = (float *)tmp.w1;
        const double sd = sqrt(2.0 / (double)(d1 + P));
        for (size_t i = 0; i < (size_t)L * H * (d1 + P); i++) w1[i] = (float)(sd * ds_rng_normal(&r));
    }
    ds_flow_net net = {.d = d, .P = P, .H = H, .L = L, .clamp = DS_FLOW_CLAMP, .mix = mix};
    ds_flow_train_opts to = {.batch = p->flow_batch,
                             .max_epochs = p->flow_epochs,
                             .patience = p->flow_patience,
                             .epoch_rows = p->flow_epoch_patches,
                             .lr = p->flow_lr,
                             .seed = p->seed,
                             .progress = p->progress,
                             .progress_user = p->progress_user};
    if ((st = ds_flow_train(&net, theta, Z, pos, n_tr, Z + (size_t)n_tr * d, pos + n_tr, n_va, posenc, &to, &res)) !=
        DS_OK)
        goto fail;
    free(Z);
    free(pos);
    free(posenc);
    Z = NULL, pos = NULL, posenc = NULL;
    /* one buffer per stored array */
    ds_flow_net_bind(&net, theta);
    size_t n1 = (size_t)L * H * (d1 + P), nb1 = (size_t)L * H, n2 = (size_t)L * 2 * d2 * H, nb2 = (size_t)L * 2 * d2;
    o->w1 = ds_alloc(n1, sizeof(float), "ds_scorer_fit: flow");
    o->b1 = ds_alloc(nb1, sizeof(float), "ds_scorer_fit: flow");
    o->w2 = ds_alloc(n2, sizeof(float), "ds_scorer_fit: flow");
    o->b2 = ds_alloc(nb2, sizeof(float), "ds_scorer_fit: flow");
    if (!o->w1 || !o->b1 || !o->w2 || !o->b2) {
        free(o->w1), free(o->b1), free(o->w2), free(o->b2);
        o->w1 = o->b1 = o->w2 = o->b2 = NULL;
        st = DS_ERR_NOMEM;
        goto fail;
    }
    memcpy(o->w1, net.w1, n1 * sizeof(float));
    memcpy(o->b1, net.b1, nb1 * sizeof(float));
    memcpy(o->w2, net.w2, n2 * sizeof(float));
    memcpy(o->b2, net.b2, nb2 * sizeof(float));
    free(theta);
    o->metric = p->metric;
    o->D = D, o->d = d, o->P = P, o->H = H, o->L = L, o->gh = gh, o->gw = gw;
    o->mean = mean, o->proj = proj, o->mix = mix, o->curve = res.curve;
    o->n_curve = res.epochs_run + 1;
    o->n_train = n_tr;
    o->epochs_run = res.epochs_run, o->best_epoch = res.best_epoch;
    o->train_nll = res.train_nll, o->val_nll = res.val_nll;
    ds_blas_set_threads(blas_prev);
    return DS_OK;
fail:
    if (blas_prev > 0) ds_blas_set_threads(blas_prev);
    free(mean);
    free(proj);
    free(theta);
    free(mix);
    free(posenc);
    free(Z);
    free(pos);
    free(trf);
    free(fn);
    free(res.curve);
    return st;
}

ds_status ds_flow_score(const ds_flow_net *net, int D, int gh, int gw, ds_metric metric, const float *mean,
                        const float *proj, const float *feats, int64_t N, int n_threads, float *ps) {
    const int d = net->d, P = net->P;
    float *fn = NULL;
    if (metric == DS_METRIC_COSINE) {
        if (!(fn = ds_alloc((size_t)N, sizeof(float) * (size_t)D, "ds_scorer_score: flow"))) return DS_ERR_NOMEM;
        ds_l2_normalize_rows(feats, fn, N, D);
        feats = fn;
    }
    float *Z = ds_alloc((size_t)N, sizeof(float) * (size_t)d, "ds_scorer_score: flow");
    float *posenc = ds_alloc((size_t)N, sizeof(float) * (size_t)P, "ds_scorer_score: flow");
    int32_t *pos = ds_alloc((size_t)N, sizeof(int32_t), "ds_scorer_score: flow");
    ds_status st = DS_OK;
    if (!Z || !posenc || !pos) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    int blas_prev = ds_blas_set_threads(ds_resolve_threads(n_threads));
    ds_flow_posenc(P, gh, gw, posenc);
    for (int64_t i = 0; i < N; i++) pos[i] = (int32_t)i;
    ds_flow_whiten(feats, N, D, d, mean, proj, Z);
    st = ds_flow_nll_rows(net, Z, pos, N, posenc, ps, NULL);
    ds_blas_set_threads(blas_prev);
done:
    free(fn);
    free(Z);
    free(posenc);
    free(pos);
    return st;
}
