/* The one loop from images to scores: decode -> preprocess -> backbone (in
 * batches) -> a sink (pipeline.h), and the model's scorers on top of it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"

ds_pipeline_params ds_pipeline_defaults(void) {
    ds_pipeline_params p = {.n_layers = 4, .batch = 1, .prep = ds_preprocess_defaults()};
    p.load.window_lo_pct = 0.5;
    p.load.window_hi_pct = 99.5;
    return p;
}

/* Buffers of one run, allocated once (first touch of fresh pages is slow). */
typedef struct {
    float *input;           /* [B, 3, S, S] */
    float *feats;           /* [B, N, D] */
    float *cls;             /* [B, D] or NULL */
    ds_pipeline_item *items;/* [B] */
    ds_image **originals;   /* [B] decoded files kept for the sink */
} run_buffers;

static void buffers_free(run_buffers *b) {
    free(b->input);
    free(b->feats);
    free(b->cls);
    free(b->items);
    free(b->originals);
}

/* Decodes (files) and prepares image i into slot b of the batch. */
static ds_status prepare_one(ds_backbone *bb, const ds_pipeline_params *p, const ds_preprocess_params *prep,
                             const char *const *paths, const ds_image *const *images, int i, int b, run_buffers *rb) {
    size_t per_in = (size_t)3 * p->size * p->size;
    double t0 = ds_now_ms();
    ds_image *decoded = NULL, *ready = NULL;
    const ds_image *src = images ? images[i] : NULL;
    ds_status st = DS_OK;
    if (!src) {
        st = ds_image_load(paths[i], &p->load, &decoded);
        src = decoded;
    }
    if (st == DS_OK) st = ds_preprocess_image(src, prep, &ready);
    if (st == DS_OK) ds_backbone_normalize(bb, ready, rb->input + (size_t)b * per_in);
    ds_image_free(ready);
    if (st != DS_OK || !(p->keep_original && decoded)) {
        ds_image_free(decoded);
        decoded = NULL;
    }
    rb->originals[b] = decoded;
    rb->items[b] = (ds_pipeline_item){.index = i,
                                      .path = paths ? paths[i] : NULL,
                                      .original = images ? images[i] : decoded,
                                      .prep_ms = ds_now_ms() - t0};
    return st;
}

ds_status ds_pipeline_run(ds_backbone *bb, const ds_pipeline_params *p, const char *const *paths,
                          const ds_image *const *images, int n, ds_pipeline_sink sink, void *user, int *n_skipped) {
    if (!bb || !p || !sink || n < 0 || (n > 0 && !paths == !images) || p->size < 1 || p->n_layers < 1 || p->batch < 1)
        return ds_set_error(DS_ERR_ARG, "ds_pipeline_run: bad arguments (give paths or images, size/layers/batch >= 1)");
    int gh, gw, D;
    ds_status st = ds_backbone_grid(bb, p->size, p->size, &gh, &gw, &D);
    if (st != DS_OK) return st;
    size_t N = (size_t)gh * gw, S = (size_t)p->size;
    int B = DS_MIN(p->batch, DS_MAX(n, 1));
    run_buffers rb = {0};
    rb.input = ds_alloc((size_t)B * 3 * S * S, sizeof(float), "ds_pipeline_run: input batch");
    rb.feats = ds_alloc((size_t)B * N * (size_t)D, sizeof(float), "ds_pipeline_run: features");
    rb.cls = p->want_cls ? ds_alloc((size_t)B * (size_t)D, sizeof(float), "ds_pipeline_run: CLS tokens") : NULL;
    rb.items = ds_calloc((size_t)B, sizeof(ds_pipeline_item), "ds_pipeline_run: items");
    rb.originals = ds_calloc((size_t)B, sizeof(ds_image *), "ds_pipeline_run: images");
    if (!rb.input || !rb.feats || (p->want_cls && !rb.cls) || !rb.items || !rb.originals) {
        buffers_free(&rb);
        return DS_ERR_NOMEM;
    }
    ds_preprocess_params prep = p->prep;
    prep.size = p->size;
    int skipped = 0, i = 0;
    while (i < n && st == DS_OK) {
        int nb = 0;
        for (; i < n && nb < B && st == DS_OK; i++) {
            st = prepare_one(bb, p, &prep, paths, images, i, nb, &rb);
            if (st == DS_OK) {
                nb++;
            } else if (p->skip_bad && paths && st != DS_ERR_NOMEM) {
                if (p->on_skip) p->on_skip(p->skip_user, i, paths[i], ds_last_error());
                skipped++;
                st = DS_OK;
            }
        }
        if (st == DS_OK && nb > 0) {
            double t0 = ds_now_ms();
            st = ds_backbone_forward(bb, rb.input, nb, p->size, p->size, p->n_layers, rb.feats, rb.cls);
            double per = (ds_now_ms() - t0) / nb;
            for (int b = 0; b < nb && st == DS_OK; b++) {
                ds_pipeline_item *it = &rb.items[b];
                it->feats = rb.feats + (size_t)b * N * D;
                it->cls = rb.cls ? rb.cls + (size_t)b * D : NULL;
                it->backbone_ms = per;
                if (sink(user, it) != 0) st = DS_ERR_STOPPED;
            }
        }
        for (int b = 0; b < B; b++) {
            ds_image_free(rb.originals[b]);
            rb.originals[b] = NULL;
        }
        if (st == DS_OK && p->progress) p->progress("images", i, n, p->progress_user);
    }
    buffers_free(&rb);
    if (n_skipped) *n_skipped = skipped;
    return st;
}

/* ---- a model's scorers on top ------------------------------------------- */

int ds_model_map_scorer(const ds_model *m) {
    int first = -1, ns = ds_model_n_scorers(m);
    for (int k = 0; k < ns; k++) {
        const ds_scorer *s = ds_model_scorer(m, k);
        if (ds_scorer_get_kind(s) == DS_SCORER_PATCHBANK) return k;
        if (first < 0 && ds_scorer_has_patch_scores(s)) first = k;
    }
    return first;
}

ds_status ds_model_score_features(const ds_model *m, const float *feats, int n_threads, float *scores, float *patch,
                                  double *score_ms) {
    if (!m || !feats || !scores) return ds_set_error(DS_ERR_ARG, "ds_model_score_features: NULL argument");
    const ds_model_info *in = ds_model_get_info(m);
    int64_t N = (int64_t)in->grid_h * in->grid_w;
    for (int k = 0; k < ds_model_n_scorers(m); k++) {
        const ds_scorer *sc = ds_model_scorer(m, k);
        float *pk = patch && ds_scorer_has_patch_scores(sc) ? patch + (size_t)k * N : NULL;
        double t0 = ds_now_ms();
        ds_status st = ds_scorer_score(sc, feats, N, n_threads, &scores[k], pk);
        if (st != DS_OK) return ds_set_error(st, "%s: %s", ds_scorer_kind_name(ds_scorer_get_kind(sc)), ds_last_error());
        if (score_ms) score_ms[k] = ds_now_ms() - t0;
    }
    return DS_OK;
}

ds_status ds_model_anomaly_map(const ds_model *m, const float *patch, int out_w, int out_h, float *out) {
    const ds_model_info *in = ds_model_get_info(m);
    return ds_anomaly_map(patch, in->grid_h, in->grid_w, in->prep.size, in->map_sigma, out_w, out_h, out);
}

/* Length of the part of a ds_backbone_describe() string that names the
 * architecture: a bf16 backbone's trailing "(kernel)" note is left out, as
 * the AVX-512 BF16 kernel and its emulation compute the same bf16 pairs
 * (gemm_bf16.h), so a model fitted on one machine scores on the other. */
static size_t arch_len(const char *desc) {
    const char *bf = strstr(desc, " dtype=bf16 (");
    return bf ? (size_t)(bf - desc) + strlen(" dtype=bf16") : strlen(desc);
}

ds_status ds_model_check_backbone(const ds_model *m, const ds_backbone *bb) {
    const ds_model_info *in = ds_model_get_info(m);
    const char *have = ds_backbone_describe(bb);
    size_t n = arch_len(have);
    if (n != arch_len(in->backbone_arch) || strncmp(have, in->backbone_arch, n) != 0)
        return ds_set_error(DS_ERR_MISMATCH, "backbone '%s' is a %s, the model was fitted on a %s", ds_backbone_path(bb),
                            ds_backbone_describe(bb), in->backbone_arch);
    int gh, gw, D;
    ds_status st = ds_backbone_grid(bb, in->prep.size, in->prep.size, &gh, &gw, &D);
    if (st != DS_OK) return st;
    if (gh != in->grid_h || gw != in->grid_w || D != in->dim)
        return ds_set_error(DS_ERR_MISMATCH, "backbone '%s' gives a %dx%dx%d feature grid at %d px, the model holds %dx%dx%d",
                            ds_backbone_path(bb), gh, gw, D, in->prep.size, in->grid_h, in->grid_w, in->dim);
    return DS_OK;
}

typedef struct {
    const ds_model *m;
    int n_threads, map_k, ns;
    size_t N;
    float *scores, *patch; /* caller outputs */
    float *all_patch;      /* [ns, N] */
    ds_status st;
} score_images_state;

static int score_images_sink(void *user, const ds_pipeline_item *it) {
    score_images_state *s = user;
    s->st = ds_model_score_features(s->m, it->feats, s->n_threads, s->scores + (size_t)it->index * s->ns,
                                    s->all_patch, NULL);
    if (s->st == DS_OK && s->patch) {
        float *dst = s->patch + (size_t)it->index * s->N;
        if (s->map_k >= 0) memcpy(dst, s->all_patch + (size_t)s->map_k * s->N, sizeof(float) * s->N);
        else memset(dst, 0, sizeof(float) * s->N);
    }
    return s->st != DS_OK;
}

ds_status ds_model_score_images(const ds_model *m, ds_backbone *bb, const ds_image *const *imgs, int n, int batch,
                                int n_threads, float *scores, int patch_scorer, float *patch) {
    if (!m || !bb || (!imgs && n > 0) || n < 0 || batch < 1 || !scores || patch_scorer < -1 ||
        patch_scorer >= ds_model_n_scorers(m))
        return ds_set_error(DS_ERR_ARG, "ds_model_score_images: bad arguments");
    ds_status st = ds_model_check_backbone(m, bb);
    if (st != DS_OK) return st;
    if (n == 0) return DS_OK;
    const ds_model_info *in = ds_model_get_info(m);
    int map_k = patch_scorer >= 0 ? patch_scorer : ds_model_map_scorer(m);
    if (map_k >= 0 && !ds_scorer_has_patch_scores(ds_model_scorer(m, map_k))) map_k = -1;
    score_images_state s = {.m = m, .n_threads = n_threads, .map_k = map_k,
                            .ns = ds_model_n_scorers(m), .N = (size_t)in->grid_h * in->grid_w,
                            .scores = scores, .patch = patch};
    s.all_patch = ds_alloc((size_t)s.ns * s.N, sizeof(float), "ds_model_score_images: patch scores");
    if (!s.all_patch) return DS_ERR_NOMEM;
    ds_pipeline_params p = ds_pipeline_defaults();
    p.size = in->prep.size;
    p.n_layers = in->n_layers;
    p.batch = batch;
    p.prep = in->prep;
    st = ds_pipeline_run(bb, &p, NULL, imgs, n, score_images_sink, &s, NULL);
    if (st == DS_ERR_STOPPED) st = s.st;
    free(s.all_patch);
    return st;
}
