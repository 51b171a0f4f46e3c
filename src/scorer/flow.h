/* Internal: the conditional normalizing-flow scorer (flow.c), CFlow-AD style
 * (Gudovskiy et al., "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with
 * Localization via Conditional Normalizing Flows", WACV 2022).
 *
 * A patch feature x [D] is PCA-whitened to z0 [d] (d <= D), then passed
 * through L blocks; block l maps x [d] to x' [d] (d1 = d/2, d2 = d - d1):
 *   u   = [x[:d1], c]                       c [P]: positional encoding of the patch
 *   h   = relu(W1 u + b1)                   W1 [H, d1+P]
 *   a   = W2 h + b2                         W2 [2*d2, H]
 *   s   = clamp * tanh(a[:d2] / clamp)      soft clamp (CFlow's clamp_alpha 1.9)
 *   y   = [x[:d1], x[d1:] * exp(s) + a[d2:]]
 *   x'  = Q y                               Q [d, d] fixed random orthogonal
 * log|det dx'/dx| = sum(s). The score of a patch is its negative
 * log-likelihood per dimension under a standard normal base:
 *   nll = (0.5 |x_L|^2 - sum_l sum(s_l)) / d + 0.5 log(2 pi).
 * Everything is row-major f32; weights follow torch.nn.Linear ([out, in]). */
#ifndef DS_SCORER_FLOW_H
#define DS_SCORER_FLOW_H

#include "scorer/scorer_internal.h"

/* CFlow-AD's clamp_alpha. */
#define DS_FLOW_CLAMP 1.9f

typedef struct {
    int d, P, H, L;  /* flow dims, positional-encoding dims, hidden units, blocks */
    float clamp;
    const float *w1; /* [L, H*(d1+P)] */
    const float *b1; /* [L, H] */
    const float *w2; /* [L, 2*d2*H] */
    const float *b2; /* [L, 2*d2] */
    const float *mix;/* [L, d*d] */
} ds_flow_net;

/* Number of trained floats: w1, b1, w2, b2 of all blocks, laid out in that
 * order in one vector ("theta"; the gradient uses the same layout). */
size_t ds_flow_n_params(int d, int P, int H, int L);
/* Points net->w1..b2 into theta. */
void ds_flow_net_bind(ds_flow_net *net, const float *theta);

/* CFlow-AD's positionalencoding2d(P, gh, gw) as [gh*gw, P] (row p = y*gw + x):
 * with half = P/2 and div_k = exp(-2k ln(1e4) / half), k < half/2:
 * channel 2k sin(x div_k), 2k+1 cos(x div_k), half+2k sin(y div_k),
 * half+2k+1 cos(y div_k). P must be a positive multiple of 4. */
void ds_flow_posenc(int P, int gh, int gw, float *out);

/* Fixed random orthogonal matrices (Haar: QR of a Gaussian with the signs of
 * diag(R), Mezzadri 2007), as FrEIA AllInOneBlock's permute_soft: out [L, d*d].
 * Returns DS_OK, DS_ERR_NOMEM, DS_ERR_ARG (LAPACK failure). */
ds_status ds_flow_random_mix(int d, int L, uint64_t seed, float *out);

/* PCA whitening of X [n, D]: mean [D], proj [d, D] whose row k is the k-th
 * eigenvector (by decreasing eigenvalue) of the covariance (divided by n)
 * scaled by 1/sqrt(lambda_k + eps), eps = 1e-3 * trace / D; each
 * eigenvector's largest-magnitude entry is made positive (sklearn's
 * svd_flip convention) so the result is unique. Double precision, LAPACK
 * dsyevd. Returns DS_OK, DS_ERR_ARG (non-finite features), DS_ERR_NOMEM. */
ds_status ds_flow_whiten_fit(const float *X, int64_t n, int D, int d, float *mean, float *proj);
/* Z [n, d] = (X - mean) proj^T. */
void ds_flow_whiten(const float *X, int64_t n, int D, int d, const float *mean, const float *proj, float *Z);

/* Workspace of one batch of up to B rows. */
typedef struct ds_flow_ws ds_flow_ws;
ds_flow_ws *ds_flow_ws_create(const ds_flow_net *net, int B);
void ds_flow_ws_free(ds_flow_ws *ws);

/* Forward pass of B rows: x0 [B, d], cond [B, P]. Keeps the activations in
 * ws for ds_flow_backward. z_out [B, d] (may be NULL), nll [B] per
 * dimension (may be NULL), logdet [B] (may be NULL). Returns the mean nll. */
double ds_flow_forward(const ds_flow_net *net, ds_flow_ws *ws, const float *x0, const float *cond, int B,
                       float *z_out, double *logdet, double *nll);
/* Gradient of the mean nll of the last forward pass w.r.t. theta, into
 * grad [ds_flow_n_params]. */
void ds_flow_backward(const ds_flow_net *net, ds_flow_ws *ws, float *grad);
/* x0 [B, d] from z_out [B, d] (the exact inverse of the forward pass). */
void ds_flow_inverse(const ds_flow_net *net, ds_flow_ws *ws, const float *z_out, const float *cond, int B, float *x0);

/* Maximum-likelihood training with Adam (Kingma & Ba 2015, torch.optim.Adam
 * with its defaults betas (0.9, 0.999), eps 1e-8): each epoch visits the
 * n rows of Z [n, d] in a Fisher-Yates order drawn from splitmix64(seed)
 * (j = u64 % (i+1) for i = n-1 down to 1), in batches of `batch` (the last
 * one smaller); with epoch_rows < n an epoch is the first epoch_rows of that
 * order (a fresh random subset each epoch). Row r has position pos[r] (its condition: posenc row). After
 * each epoch the mean nll of the validation rows is taken; the best theta
 * so far is kept and training stops after `patience` epochs without
 * improvement (n_val = 0: all epochs, the last theta). */
typedef struct {
    int batch, max_epochs, patience;
    int64_t epoch_rows;     /* rows per epoch: the first ones of each epoch's order; 0 = all n */
    double lr;
    uint64_t seed;
    ds_progress_fn progress;
    void *progress_user;
    double *step_loss;      /* optional [max_epochs * ceil(n/batch)]: each step's batch loss (tests) */
} ds_flow_train_opts;

typedef struct {
    int epochs_run, best_epoch; /* best_epoch 0 = the initial weights */
    double train_nll, val_nll;  /* of best_epoch (val: NaN without validation rows) */
    float *curve;               /* [epochs_run + 1, 2]: (train, val) mean nll; row 0 = before training; malloc'd */
} ds_flow_train_result;

ds_status ds_flow_train(ds_flow_net *net, float *theta, const float *Z, const int32_t *pos, int64_t n,
                        const float *Zval, const int32_t *pos_val, int64_t n_val, const float *posenc,
                        const ds_flow_train_opts *o, ds_flow_train_result *res);

/* Mean nll per dimension of n rows (forward only, batches of 1024). nll [n] may be NULL. */
ds_status ds_flow_nll_rows(const ds_flow_net *net, const float *Z, const int32_t *pos, int64_t n,
                           const float *posenc, float *nll, double *mean);

/* ---- the scorer: fit and score (scorer.c owns the object) */
typedef struct {
    int D, d, P, H, L, gh, gw;
    ds_metric metric;     /* COSINE: features L2-normalised before the whitening */
    float *mean, *proj, *w1, *b1, *w2, *b2, *mix, *curve; /* malloc'd, caller frees */
    int64_t n_curve;
    int64_t n_train;      /* training patches */
    int epochs_run, best_epoch;
    double train_nll, val_nll;
} ds_flow_fit_out;

ds_status ds_flow_fit(const float *feats, int64_t n_images, int64_t N, int D, const ds_scorer_params *p,
                      ds_flow_fit_out *out);

/* Patch scores ps [N] of one image feats [N, D] (N = gh*gw of the net);
 * metric COSINE L2-normalises the features first, as at fit. */
ds_status ds_flow_score(const ds_flow_net *net, int D, int gh, int gw, ds_metric metric, const float *mean,
                        const float *proj, const float *feats, int64_t N, int n_threads, float *ps);

#endif
