/* The scorer object: fit on normal images' features, score one image, and
 * expose its state as named scalars and arrays for the model file (which
 * hands them back as views into its mmap, see ds_scorer_from_parts). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/flow.h"
#include "scorer/gaussian.h"
#include "scorer/padim.h"
#include "scorer/scorer_internal.h"

enum { SC_MAX_ARRAYS = 8, SC_MAX_SCALARS = 20 };

struct ds_scorer {
    ds_scorer_kind kind;
    int D;
    /* knn / patchbank: the bank [n_bank, D] in its representation */
    int64_t n_bank;
    int k;                 /* knn */
    int patch_k;           /* patchbank */
    ds_bank_repr bank_repr; /* knn / patchbank */
    ds_nn_bank *nnbank;    /* the bank (an f32 one views owned[0] or the file's array) */
    ds_metric metric;
    ds_reduce reduce;
    double coreset_ratio;  /* information only */
    int64_t n_train;       /* images (knn, gaussian) or patches (patchbank) seen at fit */
    /* gaussian */
    int n_comp;
    double shrinkage;
    const float *mean, *components, *location, *precision;
    /* padim: channels [n_ch], mean [n_pos, n_ch], precision [n_pos, n_ch*n_ch] */
    int64_t n_pos;
    int n_ch;
    const float *channels, *pd_mean, *pd_prec;
    /* flow: the network (its pointers are views like the others), whitening,
     * grid and training summary */
    ds_flow_net fl;
    const float *fl_mean, *fl_proj, *fl_curve;
    int64_t n_curve;
    int gh, gw, epochs, best_epoch, max_epochs, batch, patience;
    int64_t epoch_patches;
    double train_nll, val_nll, lr;
    /* what ds_scorer_get_* enumerate */
    int n_arrays, n_scalars;
    ds_scorer_array arrays[SC_MAX_ARRAYS];
    ds_scorer_scalar scalars[SC_MAX_SCALARS];
    void *owned[SC_MAX_ARRAYS]; /* buffers from fit; NULL for views */
};

ds_scorer_params ds_scorer_defaults(void) {
    return (ds_scorer_params){
        .k = 5,
        .max_components = 512,
        .coreset_ratio = 0.1,
        .coreset_proj_dim = 128,
        .patch_k = 1,
        .metric = DS_METRIC_COSINE,
        .reduce = DS_REDUCE_MAX,
        .seed = 0,
        .padim_dim = 100,
        .bank_repr = DS_BANK_F32,
        .flow_dim = 64,
        .flow_blocks = 8,
        .flow_pos_dim = 32,
        .flow_hidden = 0,
        .flow_epochs = 20,
        .flow_batch = 256,
        .flow_epoch_patches = 65536,
        .flow_lr = 1e-3,
        .flow_patience = 2,
        .grid_w = 0,
        .n_threads = 0,
    };
}

/* indexed by ds_scorer_kind */
static const char *const KIND_NAMES[] = {"knn", "gaussian", "patchbank", "padim", "flow"};

const char *ds_scorer_kind_name(ds_scorer_kind kind) {
    return ds_enum_name((int)kind, KIND_NAMES, DS_N_NAMES(KIND_NAMES));
}

ds_status ds_scorer_kind_parse(const char *name, ds_scorer_kind *kind) {
    int i = ds_enum_parse(name, KIND_NAMES, DS_N_NAMES(KIND_NAMES));
    if (i < 0)
        return ds_set_error(DS_ERR_ARG, "unknown scorer '%s' (expected knn, gaussian, patchbank, padim or flow)",
                            name ? name : "");
    *kind = (ds_scorer_kind)i;
    return DS_OK;
}

ds_scorer_kind ds_scorer_get_kind(const ds_scorer *s) { return s->kind; }
int ds_scorer_get_dim(const ds_scorer *s) { return s->D; }
int ds_scorer_has_patch_scores(const ds_scorer *s) {
    return s && (s->kind == DS_SCORER_PATCHBANK || s->kind == DS_SCORER_PADIM || s->kind == DS_SCORER_FLOW);
}
int ds_scorer_n_arrays(const ds_scorer *s) { return s ? s->n_arrays : 0; }
int ds_scorer_n_scalars(const ds_scorer *s) { return s ? s->n_scalars : 0; }

ds_status ds_scorer_get_array(const ds_scorer *s, int i, ds_scorer_array *out) {
    if (!s || !out || i < 0 || i >= s->n_arrays)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_get_array: index %d out of range", i);
    *out = s->arrays[i];
    return DS_OK;
}

ds_status ds_scorer_get_scalar(const ds_scorer *s, int i, ds_scorer_scalar *out) {
    if (!s || !out || i < 0 || i >= s->n_scalars)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_get_scalar: index %d out of range", i);
    *out = s->scalars[i];
    return DS_OK;
}

void ds_scorer_free(ds_scorer *s) {
    if (!s) return;
    for (int i = 0; i < SC_MAX_ARRAYS; i++) free(s->owned[i]);
    ds_nn_bank_free(s->nnbank);
    free(s);
}

static void add_array(ds_scorer *s, const char *name, const float *data, int n_dims, int64_t d0, int64_t d1) {
    DS_ASSERT(s->n_arrays < SC_MAX_ARRAYS);
    s->arrays[s->n_arrays++] = (ds_scorer_array){.name = name, .n_dims = n_dims, .shape = {d0, d1}, .data = data};
}

static void add_scalar(ds_scorer *s, const char *name, double v) {
    DS_ASSERT(s->n_scalars < SC_MAX_SCALARS);
    s->scalars[s->n_scalars++] = (ds_scorer_scalar){.name = name, .value = v};
}

/* The bank's arrays and its representation's scalars (knn, patchbank). */
static void add_bank(ds_scorer *s) {
    DS_ASSERT(s->n_arrays + 4 <= SC_MAX_ARRAYS);
    s->n_arrays += ds_nn_bank_arrays(s->nnbank, s->arrays + s->n_arrays);
}
static void add_bank_scalars(ds_scorer *s) {
    if (s->bank_repr != DS_BANK_F32) add_scalar(s, "bank_repr", (double)s->bank_repr);
    int nprobe = 0;
    ds_nn_bank_ivf_info(s->nnbank, &nprobe, NULL);
    if (s->bank_repr == DS_BANK_IVFPQ) add_scalar(s, "nprobe", nprobe);
}

/* Fills the enumeration from the fields (fit and from_parts share it). */
static void describe(ds_scorer *s) {
    s->n_arrays = s->n_scalars = 0;
    switch (s->kind) {
    case DS_SCORER_KNN:
        add_bank(s);
        add_scalar(s, "k", s->k);
        add_scalar(s, "n_train", (double)s->n_train);
        add_bank_scalars(s);
        break;
    case DS_SCORER_GAUSSIAN:
        add_array(s, "mean", s->mean, 1, s->D, 0);
        add_array(s, "components", s->components, 2, s->n_comp, s->D);
        add_array(s, "location", s->location, 1, s->n_comp, 0);
        add_array(s, "precision", s->precision, 2, s->n_comp, s->n_comp);
        add_scalar(s, "n_components", s->n_comp);
        add_scalar(s, "shrinkage", s->shrinkage);
        add_scalar(s, "n_train", (double)s->n_train);
        break;
    case DS_SCORER_PATCHBANK:
        add_bank(s);
        add_scalar(s, "patch_k", s->patch_k);
        add_scalar(s, "metric", (double)s->metric);
        add_scalar(s, "reduce", (double)s->reduce);
        add_scalar(s, "coreset_ratio", s->coreset_ratio);
        add_scalar(s, "n_train_patches", (double)s->n_train);
        add_bank_scalars(s);
        break;
    case DS_SCORER_PADIM:
        add_array(s, "channels", s->channels, 1, s->n_ch, 0);
        add_array(s, "mean", s->pd_mean, 2, s->n_pos, s->n_ch);
        add_array(s, "precision", s->pd_prec, 2, s->n_pos, (int64_t)s->n_ch * s->n_ch);
        add_scalar(s, "dim", s->D);
        add_scalar(s, "n_train", (double)s->n_train);
        break;
    case DS_SCORER_FLOW: {
        const int d = s->fl.d, d1 = d / 2, d2 = d - d1, L = s->fl.L, H = s->fl.H, P = s->fl.P;
        add_array(s, "mean", s->fl_mean, 1, s->D, 0);
        add_array(s, "proj", s->fl_proj, 2, d, s->D);
        add_array(s, "w1", s->fl.w1, 2, L, (int64_t)H * (d1 + P));
        add_array(s, "b1", s->fl.b1, 2, L, H);
        add_array(s, "w2", s->fl.w2, 2, L, (int64_t)2 * d2 * H);
        add_array(s, "b2", s->fl.b2, 2, L, 2 * d2);
        add_array(s, "mix", s->fl.mix, 2, L, (int64_t)d * d);
        if (s->fl_curve) add_array(s, "curve", s->fl_curve, 2, s->n_curve, 2);
        add_scalar(s, "pos_dim", P);
        add_scalar(s, "grid_h", s->gh);
        add_scalar(s, "grid_w", s->gw);
        add_scalar(s, "clamp", (double)s->fl.clamp);
        add_scalar(s, "reduce", (double)s->reduce);
        add_scalar(s, "metric", (double)s->metric);
        add_scalar(s, "n_train_patches", (double)s->n_train);
        add_scalar(s, "epochs", s->epochs);
        add_scalar(s, "best_epoch", s->best_epoch);
        add_scalar(s, "max_epochs", s->max_epochs);
        add_scalar(s, "patience", s->patience);
        add_scalar(s, "batch", s->batch);
        add_scalar(s, "lr", s->lr);
        add_scalar(s, "epoch_patches", (double)s->epoch_patches);
        /* JSON has no NaN: no held-out images leave val_nll out */
        if (isfinite(s->train_nll)) add_scalar(s, "train_nll", s->train_nll);
        if (isfinite(s->val_nll)) add_scalar(s, "val_nll", s->val_nll);
        break;
    }
    }
}

/* Hands buffer p (from a fit) to the scorer, which frees it; returns p. */
static float *own(ds_scorer *s, int i, float *p) {
    s->owned[i] = p;
    return p;
}

static void mean_pool(const float *feats, int64_t N, int D, double *pooled) {
    for (int d = 0; d < D; d++) pooled[d] = 0;
    for (int64_t j = 0; j < N; j++)
        for (int d = 0; d < D; d++) pooled[d] += feats[j * D + d];
    for (int d = 0; d < D; d++) pooled[d] /= (double)N;
}

/* pooled [n_images, D]: the mean over the N patches of each image, in
 * double, one image read at a time. */
static ds_status pool_images(const ds_row_source *src, int64_t n_images, int64_t N, double *pooled) {
    const int D = src->dim;
    float *img = ds_alloc((size_t)N, sizeof(float) * (size_t)D, "ds_scorer_fit: one image's features");
    ds_status st = img ? DS_OK : DS_ERR_NOMEM;
    for (int64_t i = 0; i < n_images && st == DS_OK; i++)
        if ((st = src->read(src->user, i * N, N, img)) == DS_OK) mean_pool(img, N, D, pooled + i * D);
    free(img);
    return st;
}

static ds_status fit_knn(ds_scorer *s, const ds_scorer_params *p, const ds_row_source *src, int64_t n_images,
                         int64_t N) {
    const int D = s->D;
    if (p->k < 1 || (int64_t)p->k > n_images)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: knn k=%d needs 1 <= k <= n_images=%lld", p->k,
                            (long long)n_images);
    float *bank = ds_alloc((size_t)n_images, sizeof(float) * (size_t)D, "ds_scorer_fit: knn bank");
    double *pooled = ds_alloc((size_t)n_images, sizeof(double) * (size_t)D, "ds_scorer_fit: pooled");
    ds_status st = !bank || !pooled ? DS_ERR_NOMEM : pool_images(src, n_images, N, pooled);
    if (st != DS_OK) {
        free(bank);
        free(pooled);
        return st;
    }
    for (size_t i = 0; i < (size_t)n_images * (size_t)D; i++) bank[i] = (float)pooled[i];
    free(pooled);
    ds_l2_normalize_rows(bank, bank, n_images, D);
    s->owned[0] = bank;
    s->n_bank = n_images;
    s->k = p->k;
    s->n_train = n_images;
    return DS_OK;
}

static ds_status fit_gaussian(ds_scorer *s, const ds_scorer_params *p, const ds_row_source *src, int64_t n_images,
                              int64_t N) {
    const int D = s->D;
    double *X = ds_alloc((size_t)n_images, sizeof(double) * (size_t)D, "ds_scorer_fit: pooled features");
    if (!X) return DS_ERR_NOMEM;
    ds_status st = pool_images(src, n_images, N, X);
    ds_gaussian_fit_out g = {0};
    if (st == DS_OK) st = ds_gaussian_fit(X, n_images, D, p->max_components, p->n_threads, &g);
    free(X);
    if (st != DS_OK) return st;
    s->mean = own(s, 0, g.mean);
    s->components = own(s, 1, g.components);
    s->location = own(s, 2, g.location);
    s->precision = own(s, 3, g.precision);
    s->n_comp = g.n_components;
    s->shrinkage = g.shrinkage;
    s->n_train = n_images;
    return DS_OK;
}

typedef struct {
    int64_t idx, pos;
} sel_pos;

static int cmp_sel(const void *a, const void *b) {
    int64_t x = ((const sel_pos *)a)->idx, y = ((const sel_pos *)b)->idx;
    return (x > y) - (x < y);
}

/* bank[i] = row sel[i] of src, read in increasing row order (sequential on
 * disk: a store then releases what it has read). */
static ds_status gather_rows(const ds_row_source *src, const int64_t *sel, int64_t n, float *bank) {
    const int D = src->dim;
    sel_pos *order = ds_alloc((size_t)n, sizeof(sel_pos), "ds_scorer_fit: bank order");
    if (!order) return DS_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) order[i] = (sel_pos){sel[i], i};
    qsort(order, (size_t)n, sizeof(sel_pos), cmp_sel);
    ds_status st = DS_OK;
    for (int64_t i = 0; i < n && st == DS_OK; i++) st = src->read(src->user, order[i].idx, 1, bank + order[i].pos * D);
    free(order);
    return st;
}

ds_status ds_patchbank_select(const ds_row_source *src, int64_t n_keep, const ds_scorer_params *p, int l2_normalize,
                              int64_t *sel) {
    ds_coreset_params cp = ds_patchbank_coreset_params(p);
    cp.l2_normalize = l2_normalize;
    if (ds_coreset_resolve(p->coreset_method, src->n_rows) == DS_CORESET_EXACT)
        return ds_coreset_greedy_rows(src, n_keep, &cp, sel);
    return ds_coreset_blocked(src, n_keep, &cp, p->coreset_block > 0 ? p->coreset_block : DS_CORESET_DEFAULT_BLOCK,
                              DS_CORESET_DEFAULT_OVERSAMPLE, sel);
}

static ds_status fit_patchbank(ds_scorer *s, const ds_scorer_params *p, const ds_row_source *src, int64_t n_images,
                               int64_t N) {
    const int D = s->D;
    const int64_t total = n_images * N;
    if (!(p->coreset_ratio > 0.0 && p->coreset_ratio <= 1.0))
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: coreset ratio %g must be in (0, 1]", p->coreset_ratio);
    if (p->patch_k < 1) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: patch_k=%d < 1", p->patch_k);
    if (p->metric != DS_METRIC_L2 && p->metric != DS_METRIC_COSINE)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown metric %d", (int)p->metric);
    if (p->reduce != DS_REDUCE_MAX && p->reduce != DS_REDUCE_TOP1PCT)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown reduce %d", (int)p->reduce);
    if (p->coreset_proj_dim < 0) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: coreset_proj_dim < 0");
    if ((int)p->coreset_method < DS_CORESET_AUTO || p->coreset_method > DS_CORESET_BLOCKED)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown coreset method %d", (int)p->coreset_method);
    int64_t n_keep = ds_patchbank_n_keep(p, total);
    if (n_keep > total)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: patch_k=%d exceeds the %lld training patches", p->patch_k,
                            (long long)total);
    float *bank = ds_alloc((size_t)n_keep, sizeof(float) * (size_t)D, "ds_scorer_fit: patch bank");
    if (!bank) return DS_ERR_NOMEM;
    ds_status st = DS_OK;
    if (n_keep == total) {
        st = src->read(src->user, 0, total, bank);
    } else {
        int64_t *sel = ds_alloc((size_t)n_keep, sizeof(int64_t), "ds_scorer_fit: coreset");
        if (!sel) {
            free(bank);
            return DS_ERR_NOMEM;
        }
        st = ds_patchbank_select(src, n_keep, p, p->metric == DS_METRIC_COSINE, sel);
        if (st == DS_OK) st = gather_rows(src, sel, n_keep, bank);
        free(sel);
    }
    if (st != DS_OK) {
        free(bank);
        return st;
    }
    if (p->metric == DS_METRIC_COSINE) ds_l2_normalize_rows(bank, bank, n_keep, D);
    s->owned[0] = bank;
    s->n_bank = n_keep;
    s->patch_k = p->patch_k;
    s->metric = p->metric;
    s->reduce = p->reduce;
    s->coreset_ratio = p->coreset_ratio;
    s->n_train = total;
    return DS_OK;
}

int64_t ds_patchbank_n_keep(const ds_scorer_params *p, int64_t total) {
    /* PatchCore keeps int(len(features) * percentage) patches; we keep at
     * least patch_k so that the k-th neighbour exists. */
    int64_t n_keep = p->coreset_ratio >= 1.0 ? total : (int64_t)((double)total * p->coreset_ratio);
    return n_keep < p->patch_k ? p->patch_k : n_keep;
}

static ds_status fit_padim(ds_scorer *s, const ds_scorer_params *p, const ds_row_source *src, int64_t n_images,
                           int64_t N) {
    ds_padim_fit_out f = {0};
    ds_status st = ds_padim_fit(src, n_images, N, p->padim_dim, p->seed, p->n_threads, &f);
    if (st != DS_OK) return st;
    s->channels = own(s, 0, f.channels);
    s->pd_mean = own(s, 1, f.mean);
    s->pd_prec = own(s, 2, f.precision);
    s->n_ch = f.n_channels;
    s->n_pos = N;
    s->n_train = n_images;
    return DS_OK;
}

static ds_status fit_flow(ds_scorer *s, const ds_scorer_params *p, const ds_row_source *src, const float *feats,
                         int64_t n_images, int64_t N) {
    if (p->reduce != DS_REDUCE_MAX && p->reduce != DS_REDUCE_TOP1PCT)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown reduce %d", (int)p->reduce);
    /* the flow samples patches at random over its epochs: it trains on the
     * rows in memory (read from the source when they are not) */
    float *copy = NULL;
    if (!feats) {
        if (!(copy = ds_alloc((size_t)(n_images * N), sizeof(float) * (size_t)s->D, "ds_scorer_fit: flow features")))
            return DS_ERR_NOMEM;
        ds_status st = src->read(src->user, 0, n_images * N, copy);
        if (st != DS_OK) {
            free(copy);
            return st;
        }
        feats = copy;
    }
    ds_flow_fit_out f = {0};
    ds_status st = ds_flow_fit(feats, n_images, N, s->D, p, &f);
    free(copy);
    if (st != DS_OK) return st;
    float *bufs[8] = {f.mean, f.proj, f.w1, f.b1, f.w2, f.b2, f.mix, f.curve};
    for (int i = 0; i < 8; i++) s->owned[i] = bufs[i];
    s->fl = (ds_flow_net){.d = f.d, .P = f.P, .H = f.H, .L = f.L, .clamp = DS_FLOW_CLAMP,
                          .w1 = f.w1, .b1 = f.b1, .w2 = f.w2, .b2 = f.b2, .mix = f.mix};
    s->fl_mean = f.mean, s->fl_proj = f.proj, s->fl_curve = f.curve, s->n_curve = f.n_curve;
    s->gh = f.gh, s->gw = f.gw, s->n_pos = N;
    s->reduce = p->reduce;
    s->metric = f.metric;
    s->n_train = f.n_train;
    s->epochs = f.epochs_run, s->best_epoch = f.best_epoch;
    s->max_epochs = p->flow_epochs, s->patience = p->flow_patience, s->batch = p->flow_batch, s->lr = p->flow_lr;
    s->epoch_patches = p->flow_epoch_patches;
    s->train_nll = f.train_nll, s->val_nll = f.val_nll;
    return DS_OK;
}

static ds_status fit_rows(ds_scorer_kind kind, const ds_scorer_params *params, const ds_row_source *src,
                          const float *feats, int64_t n_images, int64_t N, ds_scorer **out);

ds_status ds_scorer_fit(ds_scorer_kind kind, const ds_scorer_params *params, const float *feats, int64_t n_images,
                        int64_t N, int D, ds_scorer **out) {
    if (!feats || !out) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: NULL feats or out");
    const float *rows[1] = {feats};
    int64_t n[1] = {n_images * N};
    ds_row_segments sg = {rows, n, 1, D};
    ds_row_source src = ds_row_source_of_segments(&sg);
    return fit_rows(kind, params, &src, feats, n_images, N, out);
}

ds_status ds_scorer_fit_rows(ds_scorer_kind kind, const ds_scorer_params *params, const ds_row_source *src,
                             int64_t n_images, int64_t N, ds_scorer **out) {
    if (!src || !src->read || !out) return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: NULL source or out");
    if (src->n_rows != n_images * N)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: the source has %lld rows, not %lld images x %lld patches",
                            (long long)src->n_rows, (long long)n_images, (long long)N);
    return fit_rows(kind, params, src, NULL, n_images, N, out);
}

/* feats: the rows in one array when the caller has them so (flow trains on
 * it in place), else NULL (flow then reads them into memory). */
static ds_status fit_rows(ds_scorer_kind kind, const ds_scorer_params *params, const ds_row_source *src,
                          const float *feats, int64_t n_images, int64_t N, ds_scorer **out) {
    ds_scorer_params p = params ? *params : ds_scorer_defaults();
    const int D = src->dim;
    if (kind != DS_SCORER_KNN && kind != DS_SCORER_GAUSSIAN && kind != DS_SCORER_PATCHBANK && kind != DS_SCORER_PADIM &&
        kind != DS_SCORER_FLOW)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown scorer kind %d", (int)kind);
    size_t count;
    if (n_images < 1 || N < 1 || D < 1 || !ds_mul_size((size_t)n_images, (size_t)N, &count) ||
        !ds_mul_size(count, (size_t)D, &count) || count > (size_t)INT64_MAX / 4)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: bad feature shape [%lld, %lld, %d]", (long long)n_images,
                            (long long)N, D);
    if ((unsigned)p.bank_repr > DS_BANK_IVFPQ)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: unknown bank representation %d", (int)p.bank_repr);
    if (kind == DS_SCORER_KNN && p.bank_repr == DS_BANK_IVFPQ)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: knn's bank (one row per image) cannot be ivfpq; use f32, bf16, "
                            "f16 or int8");
    if (p.ivf_nlist < 0 || p.pq_m < 0 || p.nprobe < 0)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_fit: negative ivf_nlist, pq_m or nprobe");
    ds_scorer *s = calloc(1, sizeof *s);
    if (!s) return ds_set_error(DS_ERR_NOMEM, "ds_scorer_fit: out of memory");
    s->kind = kind;
    s->D = D;
    ds_status st;
    if (kind == DS_SCORER_KNN) st = fit_knn(s, &p, src, n_images, N);
    else if (kind == DS_SCORER_GAUSSIAN) st = fit_gaussian(s, &p, src, n_images, N);
    else if (kind == DS_SCORER_PATCHBANK) st = fit_patchbank(s, &p, src, n_images, N);
    else if (kind == DS_SCORER_FLOW) st = fit_flow(s, &p, src, feats, n_images, N);
    else st = fit_padim(s, &p, src, n_images, N);
    if (st == DS_OK && (kind == DS_SCORER_KNN || kind == DS_SCORER_PATCHBANK)) {
        /* the scorer keeps the representation only: the f32 rows go once it
         * is built (an f32 bank is a view of them) */
        ds_ivfpq_params ivf = {.nlist = p.ivf_nlist, .pq_m = p.pq_m, .nprobe = p.nprobe, .seed = p.seed,
                               .n_threads = p.n_threads};
        s->bank_repr = p.bank_repr;
        st = ds_nn_bank_create_ex(s->owned[0], s->n_bank, D, s->bank_repr, &ivf, &s->nnbank);
        if (st == DS_OK && s->bank_repr != DS_BANK_F32) {
            free(s->owned[0]);
            s->owned[0] = NULL;
        }
    }
    if (st != DS_OK) {
        ds_scorer_free(s);
        return st;
    }
    describe(s);
    *out = s;
    return DS_OK;
}

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* AnomalyDINO (Damm et al. 2024, src/post_eval.py mean_top1p): mean of the
 * int(0.01 N) largest, or the max when that is 0. */
float ds_reduce_patch_scores(const float *ps, int64_t N, ds_reduce r, float *scratch) {
    int64_t n_top = (int64_t)((double)N * 0.01);
    if (r == DS_REDUCE_MAX || n_top == 0) {
        float m = ps[0];
        for (int64_t i = 1; i < N; i++)
            if (ps[i] > m || ps[i] != ps[i]) m = ps[i]; /* NaN wins: never hide it */
        return m;
    }
    if (scratch != ps) memcpy(scratch, ps, sizeof(float) * (size_t)N);
    qsort(scratch, (size_t)N, sizeof(float), cmp_desc);
    double sum = 0;
    for (int64_t i = 0; i < n_top; i++) sum += scratch[i];
    return (float)(sum / (double)n_top);
}

/* The scorers with one model per patch position (padim, flow): patch
 * scores of the N positions, reduced to the image score. */
static ds_status score_positions(const ds_scorer *s, const float *feats, int64_t N, int D, int n_threads,
                                 ds_reduce reduce, float *image_score, float *patch_scores) {
    float *ps = ds_alloc((size_t)N * 2, sizeof(float), "ds_scorer_score: patch scores");
    if (!ps) return DS_ERR_NOMEM;
    ds_status st = s->kind == DS_SCORER_PADIM
                       ? ds_padim_score(feats, N, D, s->n_ch, s->channels, s->pd_mean, s->pd_prec, n_threads, ps)
                       : ds_flow_score(&s->fl, D, s->gh, s->gw, s->metric, s->fl_mean, s->fl_proj, feats, N,
                                       n_threads, ps);
    if (st == DS_OK) {
        *image_score = ds_reduce_patch_scores(ps, N, reduce, ps + N);
        if (patch_scores) memcpy(patch_scores, ps, sizeof(float) * (size_t)N);
    }
    free(ps);
    return st;
}

ds_status ds_scorer_score(const ds_scorer *s, const float *feats, int64_t N, int n_threads, float *image_score,
                          float *patch_scores) {
    if (!s || !feats || !image_score) return ds_set_error(DS_ERR_ARG, "ds_scorer_score: NULL scorer, feats or score");
    if (N < 1 || N > INT32_MAX / 2)
        return ds_set_error(DS_ERR_SHAPE, "ds_scorer_score: bad patch count N=%lld", (long long)N);
    const int D = s->D;
    ds_status st = DS_OK;
    if (s->kind == DS_SCORER_KNN || s->kind == DS_SCORER_GAUSSIAN) {
        int extra = s->kind == DS_SCORER_KNN ? s->k : s->n_comp;
        double *pooled = ds_alloc((size_t)D + (size_t)extra, sizeof(double), "ds_scorer_score: pooled");
        float *q = ds_alloc((size_t)D + (size_t)extra, sizeof(float), "ds_scorer_score: query");
        if (!pooled || !q) {
            st = DS_ERR_NOMEM;
        } else {
            mean_pool(feats, N, D, pooled);
            if (s->kind == DS_SCORER_GAUSSIAN) {
                *image_score = (float)ds_gaussian_score(pooled, D, s->n_comp, s->mean, s->components, s->location,
                                                        s->precision, pooled + D);
            } else {
                for (int d = 0; d < D; d++) q[d] = (float)pooled[d];
                ds_l2_normalize_rows(q, q, 1, D);
                float *dist = q + D;
                st = ds_nn_bank_search(s->nnbank, q, 1, s->k, DS_METRIC_COSINE, n_threads, dist, NULL);
                if (st == DS_OK) *image_score = dist[s->k - 1];
            }
        }
        free(pooled);
        free(q);
        return st;
    }

    if (s->kind == DS_SCORER_PADIM) {
        if (N != s->n_pos)
            return ds_set_error(DS_ERR_SHAPE, "ds_scorer_score: padim was fitted on %lld patch positions, the image "
                                "has %lld (it needs the backbone and input size of the fit)",
                                (long long)s->n_pos, (long long)N);
        /* PaDiM: the image score is the max of the map */
        return score_positions(s, feats, N, D, n_threads, DS_REDUCE_MAX, image_score, patch_scores);
    }

    if (s->kind == DS_SCORER_FLOW) {
        if (N != s->n_pos)
            return ds_set_error(DS_ERR_SHAPE, "ds_scorer_score: flow was fitted on a %dx%d patch grid, the image "
                                "has %lld patches (it needs the backbone and input size of the fit)",
                                s->gh, s->gw, (long long)N);
        return score_positions(s, feats, N, D, n_threads, s->reduce, image_score, patch_scores);
    }

    /* patchbank */
    const int pk = s->patch_k;
    float *qn = NULL;
    float *dist = ds_alloc((size_t)N, sizeof(float) * (size_t)pk, "ds_scorer_score: distances");
    float *ps = ds_alloc((size_t)N * 2, sizeof(float), "ds_scorer_score: patch scores");
    if (s->metric == DS_METRIC_COSINE) qn = ds_alloc((size_t)N, sizeof(float) * (size_t)D, "ds_scorer_score: tokens");
    if (!dist || !ps || (s->metric == DS_METRIC_COSINE && !qn)) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    const float *q = feats;
    if (qn) {
        ds_l2_normalize_rows(feats, qn, N, D);
        q = qn;
    }
    st = ds_nn_bank_search(s->nnbank, q, N, pk, s->metric, n_threads, dist, NULL);
    if (st != DS_OK) goto done;
    for (int64_t i = 0; i < N; i++) ps[i] = dist[i * pk + pk - 1];
    *image_score = ds_reduce_patch_scores(ps, N, s->reduce, ps + N);
    if (patch_scores) memcpy(patch_scores, ps, sizeof(float) * (size_t)N);
done:
    free(qn);
    free(dist);
    free(ps);
    return st;
}

/* ---- rebuilding from parts */

static const ds_scorer_array *find_array(const ds_scorer_array *a, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (a[i].name && strcmp(a[i].name, name) == 0) return &a[i];
    return NULL;
}

static const ds_scorer_scalar *find_scalar(const ds_scorer_scalar *a, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (a[i].name && strcmp(a[i].name, name) == 0) return &a[i];
    return NULL;
}

/* Checks that name is present, n_dims-D and (where given, >= 0) of shape
 * (e0, e1); returns its shape through s0/s1. */
static ds_status need_array(const ds_scorer_array *arr, int n, ds_scorer_kind kind, const char *name, int n_dims,
                            int64_t e0, int64_t e1, const ds_scorer_array **out) {
    const ds_scorer_array *a = find_array(arr, n, name);
    if (!a) return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s scorer lacks array '%s'",
                                ds_scorer_kind_name(kind), name);
    if (a->n_dims != n_dims || !a->data || a->dtype != DS_ARRAY_F32 || a->shape[0] < 1 || a->shape[0] > INT32_MAX / 2 ||
        (n_dims == 2 && (a->shape[1] < 1 || a->shape[1] > INT32_MAX / 2)) || (e0 >= 0 && a->shape[0] != e0) ||
        (n_dims == 2 && e1 >= 0 && a->shape[1] != e1)) {
        char want[64];
        if (n_dims == 1) snprintf(want, sizeof want, "[%lld]", (long long)e0);
        else snprintf(want, sizeof want, "[%lld,%lld]", (long long)e0, (long long)e1);
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_scorer_from_parts: %s array '%s' has %d dims, shape [%lld,%lld]%s, expected f32 %s "
                            "(-1 = any positive)",
                            ds_scorer_kind_name(kind), name, a->n_dims, (long long)a->shape[0],
                            (long long)(a->n_dims == 2 ? a->shape[1] : 0), a->data ? "" : " and no data", want);
    }
    *out = a;
    return DS_OK;
}

/* An integer-valued scalar in [lo, hi]; def when absent (required: def < lo). */
static ds_status get_int(const ds_scorer_scalar *sc, int n, ds_scorer_kind kind, const char *name, int64_t lo,
                         int64_t hi, int64_t def, int64_t *out) {
    const ds_scorer_scalar *v = find_scalar(sc, n, name);
    if (!v) {
        if (def < lo)
            return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s scorer lacks scalar '%s'",
                                ds_scorer_kind_name(kind), name);
        *out = def;
        return DS_OK;
    }
    if (!(v->value >= (double)lo && v->value <= (double)hi) || v->value != floor(v->value))
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s scalar '%s' = %g, expected an integer in %lld..%lld",
                            ds_scorer_kind_name(kind), name, v->value, (long long)lo, (long long)hi);
    *out = (int64_t)v->value;
    return DS_OK;
}

/* Each of names[n] is one of allowed (NULL-terminated) and appears once. */
static ds_status check_part_names(ds_scorer_kind kind, const char *what, const char *const *allowed,
                                  const char *const *names, int n) {
    if (n > 32) return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %d %ss (at most 32)", n, what);
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (int j = 0; allowed[j]; j++) ok |= names[i] && strcmp(names[i], allowed[j]) == 0;
        if (!ok) return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: unknown %s %s '%s'", ds_scorer_kind_name(kind),
                                     what, names[i] ? names[i] : "(null)");
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s '%s' appears twice", what, names[i]);
    }
    return DS_OK;
}

static ds_status check_names(ds_scorer_kind kind, const ds_scorer_scalar *sc, int n_sc, const ds_scorer_array *arr,
                             int n_arr) {
    static const char *const arr_names[5][9] = {
        {"bank", "bank_scale", NULL},
        {"mean", "components", "location", "precision", NULL},
        {"bank", "bank_scale", "ivf_centroids", "pq_codebook", "pq_codes", "ivf_offsets", NULL},
        {"channels", "mean", "precision", NULL},
        {"mean", "proj", "w1", "b1", "w2", "b2", "mix", "curve", NULL}};
    static const char *const sc_names[5][20] = {
        {"k", "n_train", "bank_repr", "nprobe", NULL},
        {"n_components", "shrinkage", "n_train", NULL},
        {"patch_k", "metric", "reduce", "coreset_ratio", "n_train_patches", "bank_repr", "nprobe", NULL},
        {"dim", "n_train", NULL},
        {"pos_dim", "grid_h", "grid_w", "clamp", "reduce", "metric", "n_train_patches", "epochs", "best_epoch", "max_epochs",
         "patience", "batch", "lr", "train_nll", "val_nll", "epoch_patches", NULL}};
    const char *names[32];
    for (int i = 0; i < n_arr && i < 32; i++) names[i] = arr[i].name;
    ds_status st = check_part_names(kind, "array", arr_names[kind], names, n_arr);
    for (int i = 0; i < n_sc && i < 32 && st == DS_OK; i++) names[i] = sc[i].name;
    if (st == DS_OK) st = check_part_names(kind, "scalar", sc_names[kind], names, n_sc);
    return st;
}

/* The flow's parts: every shape follows from mean [D], proj [d,D], b1
 * [L,H] and the pos_dim scalar, and is checked against them. */
static ds_status flow_from_parts(ds_scorer *s, const ds_scorer_scalar *sc, int n_sc, const ds_scorer_array *arr,
                                 int n_arr) {
    const ds_scorer_kind kind = DS_SCORER_FLOW;
    const ds_scorer_array *mean, *proj, *w1, *b1, *w2, *b2, *mix, *curve;
    int64_t v;
    ds_status st;
    if ((st = need_array(arr, n_arr, kind, "mean", 1, -1, -1, &mean)) != DS_OK) return st;
    s->D = (int)mean->shape[0];
    if ((st = need_array(arr, n_arr, kind, "proj", 2, -1, s->D, &proj)) != DS_OK) return st;
    const int d = (int)proj->shape[0], d1 = d / 2, d2 = d - d1;
    if (d < 2 || d > s->D || d > 4096)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: flow has %d dimensions for D=%d (expected 2..min(D, "
                            "4096))", d, s->D);
    if ((st = get_int(sc, n_sc, kind, "pos_dim", 4, 4096, 0, &v)) != DS_OK) return st;
    const int P = (int)v;
    if (P % 4 != 0) return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: flow pos_dim=%d is not a multiple of 4", P);
    if ((st = need_array(arr, n_arr, kind, "b1", 2, -1, -1, &b1)) != DS_OK) return st;
    const int L = (int)b1->shape[0], H = (int)b1->shape[1];
    if (L > 256 || H > 65536)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: flow has %d blocks of %d hidden units", L, H);
    if ((st = need_array(arr, n_arr, kind, "w1", 2, L, (int64_t)H * (d1 + P), &w1)) != DS_OK ||
        (st = need_array(arr, n_arr, kind, "w2", 2, L, (int64_t)2 * d2 * H, &w2)) != DS_OK ||
        (st = need_array(arr, n_arr, kind, "b2", 2, L, 2 * d2, &b2)) != DS_OK ||
        (st = need_array(arr, n_arr, kind, "mix", 2, L, (int64_t)d * d, &mix)) != DS_OK)
        return st;
    curve = find_array(arr, n_arr, "curve");
    if (curve && (st = need_array(arr, n_arr, kind, "curve", 2, -1, 2, &curve)) != DS_OK) return st;
    if ((st = get_int(sc, n_sc, kind, "grid_h", 1, INT32_MAX / 2, 0, &v)) != DS_OK) return st;
    s->gh = (int)v;
    if ((st = get_int(sc, n_sc, kind, "grid_w", 1, INT32_MAX / 2, 0, &v)) != DS_OK) return st;
    s->gw = (int)v;
    if ((int64_t)s->gh * s->gw > INT32_MAX / 2)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: flow grid %dx%d too large", s->gh, s->gw);
    s->n_pos = (int64_t)s->gh * s->gw;
    if ((st = get_int(sc, n_sc, kind, "reduce", 0, 1, -1, &v)) != DS_OK) return st;
    s->reduce = (ds_reduce)v;
    if ((st = get_int(sc, n_sc, kind, "metric", 0, 1, -1, &v)) != DS_OK) return st;
    s->metric = (ds_metric)v;
    const ds_scorer_scalar *cl = find_scalar(sc, n_sc, "clamp");
    if (!cl || !(cl->value > 0 && cl->value <= 100))
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: flow scalar 'clamp' missing or not in (0, 100]");
    if ((st = get_int(sc, n_sc, kind, "n_train_patches", 0, INT64_MAX / 2, 0, &s->n_train)) != DS_OK) return st;
    int64_t e[5];
    const char *names[5] = {"epochs", "best_epoch", "max_epochs", "patience", "batch"};
    for (int i = 0; i < 5; i++)
        if ((st = get_int(sc, n_sc, kind, names[i], 0, INT32_MAX, 0, &e[i])) != DS_OK) return st;
    s->epochs = (int)e[0], s->best_epoch = (int)e[1], s->max_epochs = (int)e[2], s->patience = (int)e[3];
    s->batch = (int)e[4];
    if ((st = get_int(sc, n_sc, kind, "epoch_patches", 0, INT64_MAX / 2, 0, &s->epoch_patches)) != DS_OK) return st;
    const ds_scorer_scalar *x;
    s->lr = (x = find_scalar(sc, n_sc, "lr")) ? x->value : 0;
    s->train_nll = (x = find_scalar(sc, n_sc, "train_nll")) ? x->value : NAN;
    s->val_nll = (x = find_scalar(sc, n_sc, "val_nll")) ? x->value : NAN;
    s->fl = (ds_flow_net){.d = d, .P = P, .H = H, .L = L, .clamp = (float)cl->value,
                          .w1 = w1->data, .b1 = b1->data, .w2 = w2->data, .b2 = b2->data, .mix = mix->data};
    s->fl_mean = mean->data, s->fl_proj = proj->data;
    s->fl_curve = curve ? curve->data : NULL;
    s->n_curve = curve ? curve->shape[0] : 0;
    return DS_OK;
}

ds_status ds_scorer_from_parts(ds_scorer_kind kind, const ds_scorer_scalar *sc, int n_sc, const ds_scorer_array *arr,
                               int n_arr, ds_scorer **out) {
    if (!out || n_sc < 0 || n_arr < 0 || (n_sc && !sc) || (n_arr && !arr))
        return ds_set_error(DS_ERR_ARG, "ds_scorer_from_parts: NULL or negative argument");
    if (kind != DS_SCORER_KNN && kind != DS_SCORER_GAUSSIAN && kind != DS_SCORER_PATCHBANK && kind != DS_SCORER_PADIM &&
        kind != DS_SCORER_FLOW)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: unknown scorer kind %d", (int)kind);
    ds_status st = check_names(kind, sc, n_sc, arr, n_arr);
    if (st != DS_OK) return st;
    ds_scorer *s = calloc(1, sizeof *s);
    if (!s) return ds_set_error(DS_ERR_NOMEM, "ds_scorer_from_parts: out of memory");
    s->kind = kind;
    const ds_scorer_array *a, *b, *c, *d;
    int64_t v;
    if (kind == DS_SCORER_KNN || kind == DS_SCORER_PATCHBANK) {
        if ((st = get_int(sc, n_sc, kind, "bank_repr", 0, DS_BANK_IVFPQ, 0, &v)) != DS_OK) goto fail;
        s->bank_repr = (ds_bank_repr)v;
        if ((st = get_int(sc, n_sc, kind, "nprobe", 1, INT32_MAX, DS_IVFPQ_NPROBE, &v)) != DS_OK) goto fail;
        if ((st = ds_nn_bank_from_arrays(s->bank_repr, arr, n_arr, (int)v, ds_scorer_kind_name(kind), &s->nnbank)) !=
            DS_OK)
            goto fail;
        s->n_bank = ds_nn_bank_rows(s->nnbank);
        s->D = ds_nn_bank_dim(s->nnbank);
        if (kind == DS_SCORER_KNN) {
            if ((st = get_int(sc, n_sc, kind, "k", 1, s->n_bank, 0, &v)) != DS_OK) goto fail;
            s->k = (int)v;
            if ((st = get_int(sc, n_sc, kind, "n_train", 0, INT64_MAX / 2, 0, &s->n_train)) != DS_OK) goto fail;
        } else {
            if ((st = get_int(sc, n_sc, kind, "patch_k", 1, s->n_bank, 0, &v)) != DS_OK) goto fail;
            s->patch_k = (int)v;
            if ((st = get_int(sc, n_sc, kind, "metric", 0, 1, -1, &v)) != DS_OK) goto fail;
            s->metric = (ds_metric)v;
            if ((st = get_int(sc, n_sc, kind, "reduce", 0, 1, -1, &v)) != DS_OK) goto fail;
            s->reduce = (ds_reduce)v;
            if ((st = get_int(sc, n_sc, kind, "n_train_patches", 0, INT64_MAX / 2, 0, &s->n_train)) != DS_OK)
                goto fail;
            const ds_scorer_scalar *r = find_scalar(sc, n_sc, "coreset_ratio");
            s->coreset_ratio = r ? r->value : 0.0;
            if (r && !(r->value > 0.0 && r->value <= 1.0)) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: patchbank scalar 'coreset_ratio' = %g, "
                                  "expected (0,1]", r->value);
                goto fail;
            }
        }
    } else if (kind == DS_SCORER_FLOW) {
        if ((st = flow_from_parts(s, sc, n_sc, arr, n_arr)) != DS_OK) goto fail;
    } else if (kind == DS_SCORER_PADIM) {
        if ((st = get_int(sc, n_sc, kind, "dim", 1, INT32_MAX / 2, 0, &v)) != DS_OK) goto fail;
        s->D = (int)v;
        if ((st = need_array(arr, n_arr, kind, "channels", 1, -1, -1, &a)) != DS_OK) goto fail;
        s->n_ch = (int)a->shape[0];
        /* the channels index the features: distinct, ascending, integral, < dim */
        for (int j = 0; j < s->n_ch; j++) {
            const float *ch = a->data;
            float f = ch[j];
            if (!(f >= 0 && f < (float)s->D) || f != floorf(f) || (j > 0 && !(f > ch[j - 1]))) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: padim channel %d = %g is not an ascending "
                                  "index below dim=%d", j, f, s->D);
                goto fail;
            }
        }
        if ((st = need_array(arr, n_arr, kind, "mean", 2, -1, s->n_ch, &b)) != DS_OK) goto fail;
        s->n_pos = b->shape[0];
        if ((st = need_array(arr, n_arr, kind, "precision", 2, s->n_pos, (int64_t)s->n_ch * s->n_ch, &c)) != DS_OK)
            goto fail;
        s->channels = a->data;
        s->pd_mean = b->data;
        s->pd_prec = c->data;
        if ((st = get_int(sc, n_sc, kind, "n_train", 0, INT64_MAX / 2, 0, &s->n_train)) != DS_OK) goto fail;
    } else {
        if ((st = need_array(arr, n_arr, kind, "mean", 1, -1, -1, &a)) != DS_OK) goto fail;
        s->D = (int)a->shape[0];
        if ((st = need_array(arr, n_arr, kind, "components", 2, -1, s->D, &b)) != DS_OK) goto fail;
        s->n_comp = (int)b->shape[0];
        if (s->n_comp > s->D) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: gaussian has %d components for D=%d", s->n_comp,
                              s->D);
            goto fail;
        }
        if ((st = need_array(arr, n_arr, kind, "location", 1, s->n_comp, -1, &c)) != DS_OK) goto fail;
        if ((st = need_array(arr, n_arr, kind, "precision", 2, s->n_comp, s->n_comp, &d)) != DS_OK) goto fail;
        s->mean = a->data;
        s->components = b->data;
        s->location = c->data;
        s->precision = d->data;
        if ((st = get_int(sc, n_sc, kind, "n_components", s->n_comp, s->n_comp, s->n_comp, &v)) != DS_OK) goto fail;
        if ((st = get_int(sc, n_sc, kind, "n_train", 0, INT64_MAX / 2, 0, &s->n_train)) != DS_OK) goto fail;
        const ds_scorer_scalar *r = find_scalar(sc, n_sc, "shrinkage");
        s->shrinkage = r ? r->value : 0.0;
    }
    describe(s);
    *out = s;
    return DS_OK;
fail:
    ds_nn_bank_free(s->nnbank);
    free(s);
    return st;
}

const ds_nn_bank *ds_scorer_bank(const ds_scorer *s) {
    return s && (s->kind == DS_SCORER_KNN || s->kind == DS_SCORER_PATCHBANK) ? s->nnbank : NULL;
}

ds_status ds_scorer_set_nprobe(ds_scorer *s, int nprobe) {
    if (!s || !s->nnbank || s->bank_repr != DS_BANK_IVFPQ)
        return ds_set_error(DS_ERR_ARG, "ds_scorer_set_nprobe: the scorer has no ivfpq bank");
    ds_status st = ds_nn_bank_set_nprobe(s->nnbank, nprobe);
    if (st == DS_OK) describe(s); /* the stored "nprobe" follows */
    return st;
}
