/* Fitting a model: hold out normals, fit each scorer, calibrate it on the
 * held-out images (model.h: ds_model_fit). The steps `dinoscope fit` runs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/eval.h"
#include "dinoscope/model.h"
#include "dinoscope/weights.h"
#include "model/model_internal.h"

ds_fit_params ds_fit_defaults(void) {
    ds_fit_params p = {.kinds = {DS_SCORER_KNN, DS_SCORER_GAUSSIAN, DS_SCORER_PATCHBANK}, .n_kinds = 3,
                       .scorer = ds_scorer_defaults(), .val_split = 0.1, .fpr = 0.01};
    p.scorer.reduce = DS_REDUCE_TOP1PCT; /* measured better on both tasks: README "Choosing the image score" */
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

int ds_fit_held_out_at(int64_t i, int64_t n, int64_t n_val) {
    if (n_val < 1) return 0;
    int64_t step = n / n_val;
    return i % step == step - 1 && i / step < n_val;
}

/* Moves every (n / n_val)-th image's features to val (a new buffer) and
 * closes the gaps in place, keeping the order otherwise: deterministic, and
 * spreads any ordering of the files over both parts. */
static ds_status hold_out(float *feats, int64_t *n, size_t row, const ds_fit_params *p, float **val, int64_t *n_val) {
    *n_val = 0;
    *val = NULL;
    int64_t nv = ds_fit_n_held_out(p, *n);
    if (nv == 0) return DS_OK;
    float *v = ds_alloc(row * (size_t)nv, sizeof(float), "ds_model_fit: held-out features");
    if (!v) return DS_ERR_NOMEM;
    int64_t t = 0, k = 0;
    for (int64_t i = 0; i < *n; i++) {
        const float *src = feats + (size_t)i * row;
        if (ds_fit_held_out_at(i, *n, nv)) memcpy(v + (size_t)(k++) * row, src, sizeof(float) * row);
        else memmove(feats + (size_t)(t++) * row, src, sizeof(float) * row);
    }
    *n = t;
    *val = v;
    *n_val = nv;
    return DS_OK;
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
    const float *val; /* [n_val, N, D] held-out normals */
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
    ds_status st = !scores || (maps && !patch) ? DS_ERR_NOMEM : DS_OK;
    for (int64_t i = 0; i < c->n_val && st == DS_OK; i++)
        st = ds_scorer_score(sc, c->val + (size_t)i * row, (int64_t)N, c->threads, &scores[i],
                             maps ? patch + (size_t)i * N : NULL);
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

ds_status ds_model_fit_features(const ds_model_info *info, const ds_fit_params *p, float *feats, int64_t n,
                                ds_model **out) {
    if (!info || !p || !feats || !out || n < 1 || info->grid_h < 1 || info->grid_w < 1 || info->dim < 1 ||
        info->prep.size < 1)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: bad arguments (no features, or an empty grid or size)");
    ds_status st = check_params(p);
    if (st != DS_OK) return st;
    ds_model_info mi = *info;
    if (!(mi.map_sigma > 0)) mi.map_sigma = DS_ANOMALY_MAP_SIGMA;
    size_t N = (size_t)mi.grid_h * mi.grid_w, row = N * (size_t)mi.dim;
    float *val = NULL;
    int64_t n_val = 0;
    if ((st = hold_out(feats, &n, row, p, &val, &n_val)) != DS_OK) return st;
    mi.n_train = n;
    ds_scorer *scorers[DS_MODEL_MAX_SCORERS] = {0};
    ds_scorer_calibration calib[DS_MODEL_MAX_SCORERS] = {0};
    calib_ctx cc = {val, n_val, mi.grid_h, mi.grid_w, mi.prep.size, mi.map_sigma, p->scorer.n_threads, p->fpr};
    for (int k = 0; k < p->n_kinds && st == DS_OK; k++) {
        double t0 = ds_now_ms(), fit_s = 0;
        if ((st = ds_scorer_fit(p->kinds[k], &p->scorer, feats, n, (int64_t)N, mi.dim, &scorers[k])) == DS_OK) {
            fit_s = 1e-3 * (ds_now_ms() - t0);
            if (n_val > 0) st = calibrate(&cc, scorers[k], &calib[k]);
        }
        if (st != DS_OK) ds_set_error(st, "%s: %s", ds_scorer_kind_name(p->kinds[k]), ds_last_error());
        else if (p->on_fitted) p->on_fitted(p->on_fitted_user, k, scorers[k], fit_s);
    }
    free(val);
    if (st == DS_OK) st = ds_model_from_fitted(&mi, scorers, calib, p->n_kinds, out);
    for (int k = 0; k < DS_MODEL_MAX_SCORERS; k++) ds_scorer_free(scorers[k]);
    return st;
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

ds_status ds_model_fit(ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p, const char *const *paths,
                       const ds_image *const *images, int n, ds_model **out, int *n_skipped) {
    if (!bb || !pp || !p || !out || n < 1 || !paths == !images)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit: give a backbone and n >= 1 paths or images (one of the two)");
    ds_status st = check_params(p);
    if (st != DS_OK) return st;
    ds_pipeline_params q = *pp;
    if (q.size == 0) q.size = ds_backbone_native_size(bb);
    ds_model_info info = {0};
    if ((st = ds_backbone_grid(bb, q.size, q.size, &info.grid_h, &info.grid_w, &info.dim)) != DS_OK) return st;
    const char *path = ds_backbone_path(bb);
    if ((st = ds_file_sha256(path, info.backbone_sha256)) != DS_OK) return st;
    snprintf(info.backbone_file, sizeof info.backbone_file, "%s", path);
    snprintf(info.backbone_arch, sizeof info.backbone_arch, "%s", ds_backbone_describe(bb));
    info.prep = q.prep;
    info.prep.size = q.size;
    info.n_layers = q.n_layers;
    info.map_sigma = DS_ANOMALY_MAP_SIGMA;
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

ds_status ds_fit_calibrate(const ds_model_info *info, const float *val, int64_t n_val, int n_threads, double fpr,
                           const ds_scorer *sc, ds_scorer_calibration *cal) {
    float sigma = info->map_sigma > 0 ? info->map_sigma : DS_ANOMALY_MAP_SIGMA;
    calib_ctx cc = {val, n_val, info->grid_h, info->grid_w, info->prep.size, sigma, n_threads, fpr};
    return n_val > 0 ? calibrate(&cc, sc, cal) : DS_OK;
}
