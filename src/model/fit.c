/* Fitting a model: hold out normals, fit each scorer, calibrate it on the
 * held-out images (model.h: ds_model_fit). The steps `dinoscope fit` runs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/eval.h"
#include "dinoscope/model.h"
#include "dinoscope/store.h"
#include "dinoscope/weights.h"
#include "model/model_internal.h"

ds_fit_params ds_fit_defaults(void) {
    ds_fit_params p = {.kinds = {DS_SCORER_KNN, DS_SCORER_GAUSSIAN, DS_SCORER_PATCHBANK}, .n_kinds = 3,
                       .scorer = ds_scorer_defaults(), .val_split = 0.1, .fpr = 0.01};
    p.scorer.reduce = DS_REDUCE_TOP1PCT; /* measured better on both tasks: README "Choosing the image score" */
    /* int8 banks: 1/4 of f32's bytes, image AUROC within 0.001 of f32 on both
     * tasks (patchbank and knn), recall@1 0.993: docs/bank.md */
    p.scorer.bank_repr = DS_BANK_INT8;
    return p;
}

static ds_status check_params(const ds_fit_params *p) {
    if (p->n_kinds < 1 || p->n_kinds > DS_MODEL_MAX_SCORERS)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: n_kinds %d is not in [1, %d]", p->n_kinds, DS_MODEL_MAX_SCORERS);
    for (int i = 0; i < p->n_kinds; i++) {
        if ((int)p->kinds[i] < DS_SCORER_KNN || p->kinds[i] > DS_SCORER_FLOW)
            return ds_set_error(DS_ERR_ARG, "ds_model_fit: unknown scorer kind %d", (int)p->kinds[i]);
        for (int j = 0; j < i; j++)
            if (p->kinds[j] == p->kinds[i])
                return ds_set_error(DS_ERR_ARG, "ds_model_fit: scorer %s given twice", ds_scorer_kind_name(p->kinds[i]));
    }
    if (!(p->val_split >= 0 && p->val_split <= 0.5))
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: val_split %g is not in [0, 0.5]", p->val_split);
    if (!(p->fpr >= 0 && p->fpr <= 1)) return ds_set_error(DS_ERR_ARG, "ds_model_fit: fpr %g is not in [0, 1]", p->fpr);
    return DS_OK;
}

int64_t ds_fit_n_held_out(const ds_fit_params *p, int64_t n) {
    if (!p || !(p->val_split > 0) || n < 10) return 0;
    int64_t nv = (int64_t)llround(p->val_split * (double)n);
    return nv < 1 ? 1 : nv;
}

/* Images i with i % step == step - 1 (the first n_val of them, step = n /
 * n_val) are held out: deterministic, and spreads any ordering of the files
 * over both parts. val: [n_val] and train: [n - n_val] image indices. */
void ds_fit_split_images(int64_t n, int64_t n_val, int64_t *train, int64_t *val) {
    int64_t t = 0, k = 0, step = n_val ? n / n_val : 1;
    for (int64_t i = 0; i < n; i++) {
        if (k < n_val && i % step == step - 1) val[k++] = i;
        else train[t++] = i;
    }
}

static int subset_read(void *user, int64_t first, int64_t n, float *out) {
    const ds_subset_src *s = user;
    const size_t D = (size_t)s->src->dim;
    while (n > 0) {
        int64_t t = first / s->N, off = first % s->N, m = DS_MIN(n, s->N - off);
        ds_status st = s->src->read(s->src->user, s->img[t] * s->N + off, m, out);
        if (st != DS_OK) return st;
        out += (size_t)m * D, first += m, n -= m;
    }
    return DS_OK;
}

ds_row_source ds_row_source_subset(ds_subset_src *s, const ds_row_source *src, const int64_t *img, int64_t n_img,
                                   int64_t N) {
    *s = (ds_subset_src){src, img, N};
    return (ds_row_source){.n_rows = n_img * N, .dim = src->dim, .read = subset_read, .user = s};
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* 99th percentile of v[n] (lower value; v is reordered). n is at most a few
 * hundred thousand held-out patch scores: a sort is fine. */
static float percentile99(float *v, size_t n) {
    qsort(v, n, sizeof(float), cmp_float);
    return v[(size_t)floor(0.99 * (double)(n - 1))];
}

typedef struct {
    const ds_row_source *val; /* n_val * N rows: the held-out normals */
    int64_t n_val;
    int gh, gw, size; /* feature grid, input size */
    float sigma;
    int threads;
    double fpr;
} calib_ctx;

/* The map-level threshold for region outlines (slides): the same FPR over the
 * pixels of the held-out normals' anomaly maps at SxS. Image thresholds
 * (max/top1% of patches) sit far above the smoothed map values and would
 * outline nothing. val_patch: [n_val, N]. */
static ds_status calibrate_maps(const calib_ctx *c, float *val_patch, ds_scorer_calibration *cal) {
    size_t N = (size_t)c->gh * c->gw, npx = (size_t)c->size * (size_t)c->size;
    float *maps = ds_alloc(npx * (size_t)c->n_val, sizeof(float), "ds_model_fit: held-out maps");
    if (!maps) return DS_ERR_NOMEM;
    ds_status st = DS_OK;
    for (int64_t i = 0; i < c->n_val && st == DS_OK; i++)
        st = ds_anomaly_map(val_patch + (size_t)i * N, c->gh, c->gw, c->size, c->sigma, c->size, c->size,
                            maps + (size_t)i * npx);
    if (st == DS_OK) st = ds_eval_threshold_at_fpr(maps, (int64_t)npx * c->n_val, c->fpr, &cal->map_threshold);
    free(maps);
    if (st != DS_OK) return st;
    cal->has_map_threshold = 1;
    /* overlay colour scale: twice the 99th percentile of normal patch scores */
    cal->map_vmax = 2.0f * percentile99(val_patch, (size_t)c->n_val * N);
    return DS_OK;
}

static ds_status calibrate(const calib_ctx *c, const ds_scorer *sc, ds_scorer_calibration *cal) {
    size_t N = (size_t)c->gh * c->gw, row = N * (size_t)ds_scorer_get_dim(sc);
    int maps = ds_scorer_has_patch_scores(sc);
    float *scores = ds_alloc((size_t)c->n_val, sizeof(float), "ds_model_fit: held-out scores");
    float *patch = maps ? ds_alloc(N * (size_t)c->n_val, sizeof(float), "ds_model_fit: held-out patch scores") : NULL;
    float *img = ds_alloc(row, sizeof(float), "ds_model_fit: a held-out image");
    ds_status st = !scores || (maps && !patch) || !img ? DS_ERR_NOMEM : DS_OK;
    for (int64_t i = 0; i < c->n_val && st == DS_OK; i++)
        if ((st = c->val->read(c->val->user, i * (int64_t)N, (int64_t)N, img)) == DS_OK)
            st = ds_scorer_score(sc, img, (int64_t)N, c->threads, &scores[i], maps ? patch + (size_t)i * N : NULL);
    free(img);
    if (st == DS_OK) st = ds_eval_threshold_at_fpr(scores, c->n_val, c->fpr, &cal->threshold);
    if (st == DS_OK) {
        cal->threshold_fpr = c->fpr;
        cal->n_val = (int)c->n_val;
        cal->has_threshold = 1;
        if (maps) st = calibrate_maps(c, patch, cal);
    }
    free(scores);
    free(patch);
    return st;
}

ds_status ds_fit_calibrate(const ds_model_info *info, const ds_row_source *val, int64_t n_val, int n_threads, double fpr,
                           const ds_scorer *sc, ds_scorer_calibration *cal) {
    float sigma = info->map_sigma > 0 ? info->map_sigma : DS_ANOMALY_MAP_SIGMA;
    calib_ctx cc = {val, n_val, info->grid_h, info->grid_w, info->prep.size, sigma, n_threads, fpr};
    return n_val > 0 ? calibrate(&cc, sc, cal) : DS_OK;
}

ds_status ds_model_fit_features(const ds_model_info *info, const ds_fit_params *p, float *feats, int64_t n,
                                ds_model **out) {
    if (!info || !feats || info->grid_h < 1 || info->grid_w < 1 || info->dim < 1 || n < 1)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: bad arguments (no features, or an empty grid or size)");
    const float *rows[1] = {feats};
    int64_t nr[1] = {n * info->grid_h * info->grid_w};
    ds_row_segments sg = {rows, nr, 1, info->dim};
    ds_row_source src = ds_row_source_of_segments(&sg);
    return ds_model_fit_rows(info, p, &src, n, out);
}

ds_status ds_model_fit_rows(const ds_model_info *info, const ds_fit_params *p, const ds_row_source *images, int64_t n,
                            ds_model **out) {
    if (!info || !p || !images || !images->read || !out || n < 1 || info->grid_h < 1 || info->grid_w < 1 ||
        info->dim < 1 || info->prep.size < 1)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: bad arguments (no features, or an empty grid or size)");
    ds_status st = check_params(p);
    if (st != DS_OK) return st;
    ds_model_info mi = *info;
    if (!(mi.map_sigma > 0)) mi.map_sigma = DS_ANOMALY_MAP_SIGMA;
    const int64_t N = (int64_t)mi.grid_h * mi.grid_w;
    if (images->dim != mi.dim || images->n_rows != n * N)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: the features hold %lld rows of %d, not %lld images x %lld patches of %d",
                            (long long)images->n_rows, images->dim, (long long)n, (long long)N, mi.dim);
    const int64_t n_val = ds_fit_n_held_out(p, n), n_train = n - n_val;
    int64_t *idx = ds_alloc((size_t)n, sizeof(int64_t), "ds_model_fit: image split");
    if (!idx) return DS_ERR_NOMEM;
    ds_fit_split_images(n, n_val, idx, idx + n_train);
    ds_subset_src tr, va;
    ds_row_source train = ds_row_source_subset(&tr, images, idx, n_train, N);
    ds_row_source val = ds_row_source_subset(&va, images, idx + n_train, n_val, N);
    mi.n_train = n_train;
    ds_scorer *scorers[DS_MODEL_MAX_SCORERS] = {0};
    ds_scorer_calibration calib[DS_MODEL_MAX_SCORERS] = {0};
    calib_ctx cc = {&val, n_val, mi.grid_h, mi.grid_w, mi.prep.size, mi.map_sigma, p->scorer.n_threads, p->fpr};
    for (int k = 0; k < p->n_kinds && st == DS_OK; k++) {
        double t0 = ds_now_ms(), fit_s = 0;
        /* IVF-PQ is the patch bank's: knn's bank (one row per image) is too
         * small to train it and stays f32 */
        ds_scorer_params sp = p->scorer;
        if (p->kinds[k] == DS_SCORER_KNN && sp.bank_repr == DS_BANK_IVFPQ) sp.bank_repr = DS_BANK_F32;
        if ((st = ds_scorer_fit_rows(p->kinds[k], &sp, &train, n_train, N, &scorers[k])) == DS_OK) {
            fit_s = 1e-3 * (ds_now_ms() - t0);
            if (n_val > 0) st = calibrate(&cc, scorers[k], &calib[k]);
        }
        if (st != DS_OK) ds_set_error(st, "%s: %s", ds_scorer_kind_name(p->kinds[k]), ds_last_error());
        else if (p->on_fitted) p->on_fitted(p->on_fitted_user, k, scorers[k], fit_s);
    }
    free(idx);
    if (st == DS_OK) st = ds_model_from_fitted(&mi, scorers, calib, p->n_kinds, out);
    for (int k = 0; k < DS_MODEL_MAX_SCORERS; k++) ds_scorer_free(scorers[k]);
    return st;
}

ds_status ds_model_info_of(const ds_backbone *bb, const ds_pipeline_params *pp, ds_model_info *out) {
    if (!bb || !pp || !out) return ds_set_error(DS_ERR_ARG, "ds_model_info_of: NULL argument");
    ds_model_info info = {0};
    int size = pp->size ? pp->size : ds_backbone_native_size(bb);
    ds_status st = ds_backbone_grid(bb, size, size, &info.grid_h, &info.grid_w, &info.dim);
    if (st != DS_OK) return st;
    const char *path = ds_backbone_path(bb);
    if ((st = ds_file_sha256(path, info.backbone_sha256)) != DS_OK) return st;
    snprintf(info.backbone_file, sizeof info.backbone_file, "%s", path);
    snprintf(info.backbone_arch, sizeof info.backbone_arch, "%s", ds_backbone_describe(bb));
    info.prep = pp->prep;
    info.prep.size = size;
    info.n_layers = pp->n_layers;
    info.map_sigma = DS_ANOMALY_MAP_SIGMA;
    *out = info;
    return DS_OK;
}

typedef struct {
    float *feats; /* [cap, N, D] */
    int64_t n;
    size_t row;
} fit_sink_state;

static int fit_sink(void *user, const ds_pipeline_item *it) {
    fit_sink_state *s = user;
    memcpy(s->feats + (size_t)s->n * s->row, it->feats, sizeof(float) * s->row);
    s->n++;
    return 0;
}

/* What every fit from images starts with: the parameters checked, the
 * pipeline's size resolved, the identity the model records. */
static ds_status fit_begin(const ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                           ds_pipeline_params *q, ds_model_info *info) {
    ds_status st = check_params(p);
    if (st != DS_OK) return st;
    *q = *pp;
    if (q->size == 0) q->size = ds_backbone_native_size(bb);
    return ds_model_info_of(bb, q, info);
}

ds_status ds_model_fit(ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p, const char *const *paths,
                       const ds_image *const *images, int n, ds_model **out, int *n_skipped) {
    if (!bb || !pp || !p || !out || n < 1 || !paths == !images)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: give a backbone and n >= 1 paths or images (one of the two)");
    ds_pipeline_params q;
    ds_model_info info;
    ds_status st = fit_begin(bb, pp, p, &q, &info);
    if (st != DS_OK) return st;
    fit_sink_state s = {.row = (size_t)info.grid_h * info.grid_w * (size_t)info.dim};
    if (!(s.feats = ds_alloc(s.row * (size_t)n, sizeof(float), "ds_model_fit: features"))) return DS_ERR_NOMEM;
    int skipped = 0;
    st = ds_pipeline_run(bb, &q, paths, images, n, fit_sink, &s, &skipped);
    if (st == DS_OK && s.n == 0) st = ds_set_error(DS_ERR_ARG, "ds_model_fit: no image could be read");
    if (st == DS_OK) st = ds_model_fit_features(&info, p, s.feats, s.n, out);
    if (n_skipped) *n_skipped = skipped;
    free(s.feats);
    return st;
}

/* ---- fitting through a feature store (store.h) --------------------------- */

typedef struct {
    ds_feature_store *st;
    int64_t done0;            /* inputs in the store before this run */
    const ds_pipeline_params *user;
    ds_status err;
} store_sink_state;

static int store_sink(void *user, const ds_pipeline_item *it) {
    store_sink_state *s = user;
    return (s->err = ds_store_append(s->st, it->feats)) != DS_OK;
}

/* After each batch: commit, then the caller's progress (which may kill us). */
static void store_progress(const char *stage, int64_t done, int64_t total, void *user) {
    store_sink_state *s = user;
    if (s->err == DS_OK) s->err = ds_store_commit(s->st, s->done0 + done);
    if (s->user->progress) s->user->progress(stage, s->done0 + done, s->done0 + total, s->user->progress_user);
}

ds_status ds_fit_via_store(ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                          const char *const *paths, int n, const char *dir, int resume, ds_store_fit_fn fit,
                          void *fit_user, int *n_skipped, int64_t *n_resumed) {
    if (!bb || !pp || !p || n < 1 || !paths || !dir)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit_store: give a backbone, n >= 1 paths and a directory");
    ds_pipeline_params q;
    ds_model_info info;
    ds_feature_store *w = NULL, *r = NULL;
    int64_t done = 0;
    ds_status st = fit_begin(bb, pp, p, &q, &info);
    if (st != DS_OK) return st;
    if ((st = ds_store_create(dir, &info, paths, n, resume, &w, &done)) != DS_OK) return st;
    if (n_resumed) *n_resumed = done;
    int skipped = 0;
    if (done < n) {
        store_sink_state ss = {w, done, pp, DS_OK};
        q.progress = store_progress;
        q.progress_user = &ss;
        st = ds_pipeline_run(bb, &q, paths + done, NULL, n - (int)done, store_sink, &ss, &skipped);
        if (st == DS_ERR_STOPPED || (st == DS_OK && ss.err != DS_OK)) st = ss.err;
    }
    if (st == DS_OK) st = ds_store_finish(w);
    ds_store_close(w);
    if (n_skipped) *n_skipped = skipped;
    if (st == DS_OK) st = ds_store_open(dir, &r);
    if (st == DS_OK) {
        ds_row_source src = ds_store_rows(r);
        st = fit(fit_user, &info, &src, ds_store_n_images(r));
    }
    ds_store_close(r);
    return st;
}

typedef struct {
    const ds_fit_params *p;
    ds_model **out;
} plain_fit;

static ds_status fit_plain(void *user, const ds_model_info *info, const ds_row_source *images, int64_t n) {
    const plain_fit *f = user;
    return ds_model_fit_rows(info, f->p, images, n, f->out);
}

ds_status ds_model_fit_store(ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                             const char *const *paths, int n, const char *dir, int resume, ds_model **out,
                             int *n_skipped, int64_t *n_resumed) {
    if (!out) return ds_set_error(DS_ERR_ARG, "ds_model_fit_store: give a backbone, n >= 1 paths and a directory");
    plain_fit f = {p, out};
    return ds_fit_via_store(bb, pp, p, paths, n, dir, resume, fit_plain, &f, n_skipped, n_resumed);
}

static int has_kind(const ds_fit_params *p, ds_scorer_kind k) {
    for (int i = 0; i < p->n_kinds; i++)
        if (p->kinds[i] == k) return 1;
    return 0;
}

void ds_fit_plan_of(const ds_model_info *info, const ds_fit_params *p, int64_t n, ds_fit_plan *plan) {
    memset(plan, 0, sizeof *plan);
    const double N = (double)info->grid_h * info->grid_w, D = info->dim, f = 4.0;
    const ds_scorer_params *sp = &p->scorer;
    plan->n_images = n;
    plan->n_val = ds_fit_n_held_out(p, n);
    plan->n_train = n - plan->n_val;
    plan->n_patches = plan->n_train * (int64_t)N;
    plan->store_bytes = (double)n * N * D * f;
    /* what every scorer keeps, and the largest working set beside it */
    double kept = 0, work = 2 * N * D * f + (double)DS_STORE_WINDOW; /* an image buffer or two, the read window */
    if (has_kind(p, DS_SCORER_KNN)) kept += (double)plan->n_train * D * f, work = fmax(work, (double)plan->n_train * D * 8);
    if (has_kind(p, DS_SCORER_GAUSSIAN)) {
        double c = fmin((double)sp->max_components, D);
        kept += (D + c * D + c + c * c) * f;
        work = fmax(work, (double)plan->n_train * D * 8 + 4 * D * D * 8);
    }
    if (has_kind(p, DS_SCORER_PADIM)) {
        double d = fmin((double)sp->padim_dim, D);
        kept += N * (d + d * d) * f;
        work = fmax(work, N * (2 * d + d * d) * 8);
    }
    if (has_kind(p, DS_SCORER_FLOW)) work = fmax(work, (double)plan->n_patches * D * f);
    if (has_kind(p, DS_SCORER_PATCHBANK)) {
        const int64_t total = plan->n_patches;
        plan->bank_rows = ds_patchbank_n_keep(sp, total);
        plan->bank_bytes = (double)plan->bank_rows * D * f;
        kept += plan->bank_bytes;
        plan->coreset = ds_coreset_resolve(sp->coreset_method, total);
        const double dp = sp->coreset_proj_dim > 0 ? (sp->coreset_proj_dim + 15) / 16 * 16 : (D + 15) / 16 * 16;
        const double k = (double)plan->bank_rows;
        if (plan->bank_rows >= total) plan->coreset_bytes = 0;
        else if (plan->coreset == DS_CORESET_EXACT)
            plan->coreset_bytes = (double)total * (dp * f + 8) + k * (dp * f + 4 + 8 + 16);
        else {
            const double B = (double)(sp->coreset_block > 0 ? sp->coreset_block : DS_CORESET_DEFAULT_BLOCK);
            const double S = fmin((double)total, ceil(DS_CORESET_DEFAULT_OVERSAMPLE * k));
            plan->coreset_bytes = S * (dp * f + 8) + 2 * fmin(B, S) * (dp * f + 16) + k * (8 + 16);
        }
        work = fmax(work, plan->coreset_bytes);
    }
    /* calibration: the held-out maps at S x S and patch scores */
    const double S2 = (double)info->prep.size * info->prep.size;
    work = fmax(work, (double)plan->n_val * (S2 + N + 1) * f);
    plan->peak_bytes = kept + work;
}
