/* dinoscope eval --model MODEL --data DIR|labels.csv [--out REPORT_DIR] [--folds K]
 *
 * Scores a labelled test set with a fitted model and reports every figure.
 * Steps: find the images (eval_data.c), open the model and its backbone,
 * one feature pass that scores each test image and adds its maps to the
 * report (the library's ds_report builds the outputs), optional
 * cross-validation over the normal training images, the gallery pictures,
 * the report files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#include "cli/eval_data.h"
#include "cli/eval_scores.h"
#include "dinoscope/eval.h"
#include "dinoscope/report.h"
#include "dinoscope/maps.h"
#include "dinoscope/scorer.h"

typedef struct {
    const char *data, *out, *scores;
    long folds, gallery;
} eval_args;

static const cli_opt eval_opts[] = {
    CLI_STR_OPT(eval_args, data, "--data", "DIR|CSV", "the labelled test set (layouts above)", CLI_REQUIRED),
    CLI_STR_OPT(eval_args, out, "--out", "DIR",
                "write report.json, report.md, scores.csv, report.html there (without it the table is printed only)", 0),
    {{"--folds"}, "K", "also K-fold cross-validation over the normal TRAINING images: refit each scorer with the "
                       "model's parameters on K-1 folds, test on the held-out fold plus all test anomalies",
     CLI_INT, offsetof(eval_args, folds), 2, 100, NULL, NULL, "off", 0},
    CLI_INT_OPT(eval_args, gallery, "--gallery", "N", "images per gallery section of report.html", 1, 100),
    CLI_STR_OPT(eval_args, scores, "--scores", "A.csv[,B.csv...]",
                "the test images' scores from tables of `dinoscope score` (e.g. the parts of score --shard I/N) "
                "instead of running the model: image-level figures", 0),
};

static const cli_spec eval_spec = {
    "eval", "--model MODEL --data DIR|labels.csv [options]",
    "  Evaluates a fitted model on a labelled test set. Data layouts (detected):\n"
    "    labels.csv (filename,split,label,maskfile; test = split 'test', or every row without a split column),\n"
    "    a folder holding labels.csv, or MVTec AD: DIR/train/good, DIR/test/<defect>/*.png,\n"
    "    DIR/ground_truth/<defect>/<name>_mask.png ('good' = normal).\n"
    "  Per scorer: image AUROC, average precision, F1-max and its threshold; with masks, pixel AUROC\n"
    "  and AUPRO@0.3 from the maps (patchbank, padim) at each image's original size; the model's stored\n"
    "  threshold's precision/recall/FPR; timing per image (preprocessing, backbone, scoring).\n",
    NULL, false};

/* ---- the feature pass ------------------------------------------------------------- */

typedef struct {
    const char *cmd;
    const ds_model *model;
    const ds_model_info *info;
    const eval_items *items;
    ds_report *report;
    ds_backbone *bb;            /* for --tile */
    ds_tile_params tile;        /* tile.tile_px 0: whole images */
    bool shift;                 /* --stride-shift */
    float *tmaps;               /* [n_scorers, H, W] tiled or shifted maps of the image being scored */
    size_t tmaps_cap;
    int threads, n_scorers, pk; /* pk: the model's map scorer (the gallery's), -1 if none */
    bool maps[DS_MODEL_MAX_SCORERS]; /* scorer k gives patch scores (patchbank, padim) */
    bool pixel_metrics;         /* some test anomaly has a mask */
    int64_t N;
    /* per item */
    int *report_index;          /* test items: index in the report; -1 = skipped */
    int *width, *height;        /* original sizes */
    bool *have;                 /* features seen */
    float *patch;               /* [n_items, N] patch scores of pk (test items) */
    float *patch_all;           /* [n_scorers, N] of the image being scored */
    uint8_t **masks;            /* binary masks at the original size (test anomalies with masks) */
    float *feats;               /* [n_items, N, D] for --folds, else NULL */
    size_t row;
    float *map;
    size_t map_cap;
    int n_resized, n_no_mask;
} eval_state;

static int add_note(eval_state *s, const char *note) {
    return ds_report_add_note(s->report, note) == DS_OK ? CLI_OK : cli_lib_error(s->cmd);
}

/* Loads a mask as 0/1 at w x h: nonzero = anomalous (MVTec AD masks are
 * 0/255); a different size is resized with nearest neighbour (pixel
 * centres). *resized tells whether that happened. NULL on error (printed). */
static uint8_t *load_mask(const char *cmd, const char *path, int w, int h, bool *resized) {
    ds_image *m = NULL;
    if (ds_image_load(path, NULL, &m) != DS_OK) {
        cli_lib_error(cmd);
        return NULL;
    }
    uint8_t *out = malloc((size_t)w * h);
    if (!out) cli_error(cmd, "out of memory for a %dx%d mask", w, h);
    else ds_mask_resize_nearest(m->pixels, m->width, m->height, m->channels, w, h, out);
    *resized = m->width != w || m->height != h;
    ds_image_free(m);
    return out;
}

static float *map_buffer(eval_state *s, int w, int h) {
    size_t n = (size_t)w * h;
    if (n > s->map_cap) {
        free(s->map);
        s->map = malloc(sizeof(float) * n);
        s->map_cap = s->map ? n : 0;
    }
    return s->map;
}

/* --tile or --stride-shift: the test images are scored again from their pixels */
static bool dense(const eval_state *s) { return s->tile.tile_px > 0 || s->shift; }

/* --tile / --stride-shift: the scores and maps of img in tiles or shifted (into s->tmaps). */
static int score_tiled(eval_state *s, const char *path, const ds_image *img, float *scores) {
    size_t n = (size_t)s->n_scorers * img->width * img->height;
    if (n > s->tmaps_cap) {
        free(s->tmaps);
        s->tmaps = malloc(sizeof(float) * n);
        s->tmaps_cap = s->tmaps ? n : 0;
        if (!s->tmaps) return cli_error(s->cmd, "out of memory for %dx%d tiled maps", img->width, img->height);
    }
    ds_status st = s->shift ? ds_model_score_shifted(s->model, s->bb, img, s->threads, scores, s->tmaps)
                            : ds_model_score_tiled(s->model, s->bb, img, &s->tile, scores, s->tmaps, NULL);
    if (st != DS_OK) return cli_error(s->cmd, "'%s': %s", path, ds_last_error());
    return CLI_OK;
}

/* Each map scorer's map of one test image into the pixel metrics (with
 * --tile the stitched maps of s->tmaps). */
static int add_maps(eval_state *s, const char *path, int w, int h, const uint8_t *mask, double *map_ms) {
    for (int k = 0; k < s->n_scorers; k++) {
        if (!s->maps[k]) continue;
        float *map = map_buffer(s, w, h);
        if (!map) return cli_error(s->cmd, "out of memory for a %dx%d map", w, h);
        double t0 = cli_now_s();
        if (dense(s))
            memcpy(map, s->tmaps + (size_t)k * w * h, sizeof(float) * (size_t)w * h);
        else if (ds_model_anomaly_map(s->model, s->patch_all + (size_t)k * s->N, w, h, map) != DS_OK)
            return cli_lib_error(s->cmd);
        if (k == s->pk) *map_ms = 1e3 * (cli_now_s() - t0);
        if (ds_report_add_map(s->report, k, map, mask, h, w) != DS_OK)
            return cli_error(s->cmd, "'%s': %s", path, ds_last_error());
    }
    return CLI_OK;
}

static int eval_sink(void *ud, const ds_pipeline_item *p) {
    eval_state *s = ud;
    int index = p->index;
    const eval_item *it = &s->items->v[index];
    int w = p->original->width, h = p->original->height;
    s->have[index] = true;
    s->width[index] = w;
    s->height[index] = h;
    if (s->feats) memcpy(s->feats + (size_t)index * s->row, p->feats, sizeof(float) * s->row);
    if (!it->test) return CLI_OK;
    float scores[DS_MODEL_MAX_SCORERS];
    double score_ms[DS_MODEL_MAX_SCORERS], map_ms = 0;
    if (ds_model_score_features(s->model, p->feats, s->threads, scores, s->patch_all, score_ms) != DS_OK)
        return cli_error(s->cmd, "'%s': %s", it->path, ds_last_error());
    if (dense(s)) { /* the whole-image patch scores above stay for the gallery's colour scale */
        double t0 = cli_now_s();
        if (score_tiled(s, it->path, p->original, scores) != CLI_OK) return CLI_ERROR;
        for (int k = 0; k < s->n_scorers; k++) score_ms[k] = 1e3 * (cli_now_s() - t0) / s->n_scorers;
    }
    if (s->pk >= 0) memcpy(s->patch + (size_t)index * s->N, s->patch_all + (size_t)s->pk * s->N, sizeof(float) * s->N);
    bool pixels = s->pixel_metrics && (it->label == 0 || it->mask);
    if (pixels && it->label == 1) {
        bool resized = false;
        if (!(s->masks[index] = load_mask(s->cmd, it->mask, w, h, &resized))) return CLI_ERROR;
        s->n_resized += resized;
    } else if (it->label == 1 && s->pixel_metrics) {
        s->n_no_mask++;
    }
    if (pixels && add_maps(s, it->path, w, h, s->masks[index], &map_ms) != CLI_OK) return CLI_ERROR;
    ds_report_image im = {.path = it->path,
                          .label = it->label,
                          .defect = it->defect,
                          .mask_path = it->mask,
                          .scores = scores,
                          .prep_ms = p->prep_ms,
                          .backbone_ms = p->backbone_ms,
                          .score_ms = score_ms,
                          .map_ms = map_ms};
    if (ds_report_add_image(s->report, &im, &s->report_index[index]) != DS_OK) return cli_lib_error(s->cmd);
    return CLI_OK;
}

/* ---- gallery pictures ------------------------------------------------------------- */

static int add_pictures(eval_state *s, const cli_image_opts *io, int n_per, float vmax_model) {
    int cap = 3 * n_per, n = 0;
    /* idx [cap]: the report rows shown; item_of [n_items]: report row -> item */
    int *idx = malloc(sizeof(int) * (size_t)(cap + s->items->n + 1)), *item_of = idx + cap;
    if (!idx) return cli_error(s->cmd, "out of memory");
    int rc = CLI_OK;
    /* report index -> item */
    for (int i = 0; i < s->items->n; i++)
        if (s->items->v[i].test && s->report_index[i] >= 0) item_of[s->report_index[i]] = i;
    if (ds_report_gallery_select(s->report, n_per, idx, &n) != DS_OK) rc = cli_lib_error(s->cmd);
    /* the colour scale: the model's calibrated one (so that pictures from
     * different runs compare), else the largest patch score shown */
    float vmax = vmax_model;
    if (rc == CLI_OK && s->pk >= 0 && !(vmax > 0)) {
        vmax = 1e-6f;
        for (int j = 0; j < n; j++) {
            const float *p = s->patch + (size_t)item_of[idx[j]] * s->N;
            for (int64_t q = 0; q < s->N; q++) vmax = fmaxf(vmax, p[q]);
        }
        char note[200];
        snprintf(note, sizeof note, "The model holds no calibrated map scale: the gallery's colour scale is [0, %.4g], "
                 "the largest patch score among the pictures shown.", vmax);
        rc = add_note(s, note);
    }
    if (s->pk >= 0) ds_report_set_map_scale(s->report, 0.0f, vmax);
    for (int j = 0; j < n && rc == CLI_OK; j++) {
        int i = item_of[idx[j]];
        const eval_item *it = &s->items->v[i];
        ds_image *img = NULL, *ov = NULL;
        if (ds_image_load(it->path, &io->load, &img) != DS_OK) {
            rc = cli_lib_error(s->cmd);
            break;
        }
        const ds_image *pic = img;
        if (s->pk >= 0 && dense(s)) {
            float sc[DS_MODEL_MAX_SCORERS];
            rc = score_tiled(s, it->path, img, sc);
            if (rc == CLI_OK && ds_map_overlay(img, s->tmaps + (size_t)s->pk * img->width * img->height, 0.0f, vmax,
                                               0.5f, 0, &ov) != DS_OK)
                rc = cli_lib_error(s->cmd);
            pic = ov;
        } else if (s->pk >= 0) {
            float *map = map_buffer(s, img->width, img->height);
            if (!map) rc = cli_error(s->cmd, "out of memory");
            else if (ds_model_anomaly_map(s->model, s->patch + (size_t)i * s->N, img->width, img->height, map) != DS_OK ||
                     ds_map_overlay(img, map, 0.0f, vmax, 0.5f, 0, &ov) != DS_OK)
                rc = cli_lib_error(s->cmd);
            pic = ov;
        }
        uint8_t *mask = s->masks[i];
        bool own = false, resized;
        if (rc == CLI_OK && !mask && it->mask) {
            mask = load_mask(s->cmd, it->mask, img->width, img->height, &resized);
            own = mask != NULL;
            if (!mask) rc = CLI_ERROR; /* printed */
        }
        if (rc == CLI_OK &&
            ds_report_set_picture(s->report, idx[j], pic, mask, img->width, img->height, 0) != DS_OK)
            rc = cli_lib_error(s->cmd);
        if (own) free(mask);
        ds_image_free(ov);
        ds_image_free(img);
    }
    free(idx);
    return rc;
}

/* ---- cross-validation ------------------------------------------------------------- */

static int cross_validate(eval_state *s, int K) {
    const eval_items *its = s->items;
    const ds_model_info *in = s->info;
    int n_train = 0, n_anom = 0;
    for (int i = 0; i < its->n; i++) {
        if (!s->have[i]) continue;
        n_train += !its->v[i].test;
        n_anom += its->v[i].test && its->v[i].label == 1;
    }
    if (n_train < K) return cli_error(s->cmd, "--folds %d needs at least %d normal training images, found %d", K, K, n_train);
    if (n_anom == 0) return cli_error(s->cmd, "--folds needs anomalous test images, found none");
    int *train_items = malloc(sizeof(int) * (size_t)n_train);
    int max_test = n_train / K + 1 + n_anom;
    float *fit_feats = malloc(sizeof(float) * s->row * (size_t)n_train);
    float *scores = malloc(sizeof(float) * (size_t)max_test);
    int *labels = malloc(sizeof(int) * (size_t)max_test);
    int *test_items = malloc(sizeof(int) * (size_t)max_test);
    float *patch = malloc(sizeof(float) * (size_t)s->N);
    int rc = CLI_OK;
    if (!train_items || !fit_feats || !scores || !labels || !test_items || !patch) {
        rc = cli_error(s->cmd, "out of memory for cross-validation (%d training images of %zu floats)", n_train, s->row);
        goto done;
    }
    for (int i = 0, t = 0; i < its->n; i++)
        if (s->have[i] && !its->v[i].test) train_items[t++] = i;
    /* Fold f holds the training images at positions j with j % K == f: an
     * interleaved, deterministic split that spreads any ordering of the
     * files (sources, dates) over all folds. */
    for (int f = 0; f < K && rc == CLI_OK; f++) {
        int nf = 0, nt = 0;
        for (int j = 0; j < n_train; j++) {
            int i = train_items[j];
            if (j % K == f) test_items[nt++] = i;
            else memcpy(fit_feats + (size_t)(nf++) * s->row, s->feats + (size_t)i * s->row, sizeof(float) * s->row);
        }
        int n_held = nt;
        for (int i = 0; i < its->n; i++)
            if (s->have[i] && its->v[i].test && its->v[i].label == 1) test_items[nt++] = i;
        for (int q = 0; q < nt; q++) labels[q] = its->v[test_items[q]].label;
        for (int k = 0; k < s->n_scorers && rc == CLI_OK; k++) {
            const ds_scorer *ms = ds_model_scorer(s->model, k);
            ds_scorer_kind kind = ds_scorer_get_kind(ms);
            ds_scorer_params p;
            ds_scorer *sc = NULL;
            ds_eval_pixels *px = NULL;
            double t0 = cli_now_s();
            if (ds_scorer_params_of(ms, &p) != DS_OK) {
                rc = cli_lib_error(s->cmd);
                break;
            }
            p.n_threads = s->threads;
            if (ds_scorer_fit(kind, &p, fit_feats, nf, s->N, in->dim, &sc) != DS_OK) {
                rc = cli_error(s->cmd, "fold %d/%d: %s: %s", f + 1, K, ds_scorer_kind_name(kind), ds_last_error());
                break;
            }
            bool maps = s->maps[k] && s->pixel_metrics;
            if (maps && ds_eval_pixels_create(0, &px) != DS_OK) rc = cli_lib_error(s->cmd);
            for (int q = 0; q < nt && rc == CLI_OK; q++) {
                int i = test_items[q];
                if (ds_scorer_score(sc, s->feats + (size_t)i * s->row, s->N, s->threads, &scores[q], maps ? patch : NULL) !=
                    DS_OK) {
                    rc = cli_lib_error(s->cmd);
                    break;
                }
                if (!maps || (labels[q] == 1 && !s->masks[i])) continue;
                int w = s->width[i], h = s->height[i];
                float *map = map_buffer(s, w, h);
                if (!map) rc = cli_error(s->cmd, "out of memory");
                else if (ds_model_anomaly_map(s->model, patch, w, h, map) != DS_OK ||
                         ds_eval_pixels_add(px, map, labels[q] ? s->masks[i] : NULL, h, w) != DS_OK)
                    rc = cli_lib_error(s->cmd);
            }
            ds_eval_figures fig;
            if (rc == CLI_OK && ds_eval_image_figures(scores, labels, nt, &fig) != DS_OK) rc = cli_lib_error(s->cmd);
            if (rc == CLI_OK && px) {
                int64_t np, na;
                ds_eval_pixels_counts(px, NULL, &np, &na, NULL);
                if (na > 0 && na < np &&
                    (ds_eval_pixels_auroc(px, &fig.pixel_auroc) != DS_OK || ds_eval_pixels_aupro(px, 0.3, &fig.aupro) != DS_OK))
                    rc = cli_lib_error(s->cmd);
            }
            if (rc == CLI_OK && ds_report_add_fold(s->report, k, &fig) != DS_OK) rc = cli_lib_error(s->cmd);
            if (rc == CLI_OK) {
                char pixel[64] = "";
                if (isfinite(fig.pixel_auroc))
                    snprintf(pixel, sizeof pixel, ", pixel AUROC %.4f, AUPRO %.4f", fig.pixel_auroc, fig.aupro);
                fprintf(stderr, "dinoscope eval: fold %d/%d %-9s fit on %d, tested on %d normal + %d anomalous: image AUROC %.4f%s (%.1f s)\n",
                        f + 1, K, ds_scorer_kind_name(kind), nf, n_held, nt - n_held, fig.image_auroc, pixel,
                        cli_now_s() - t0);
            }
            ds_eval_pixels_free(px);
            ds_scorer_free(sc);
        }
    }
done:
    free(train_items);
    free(fit_feats);
    free(scores);
    free(labels);
    free(test_items);
    free(patch);
    return rc;
}

/* ---- the command ----------------------------------------------------------------- */

/* Short description of a scorer's settings for the tables. */
static void scorer_desc(const ds_scorer *sc, char *buf, size_t n) {
    ds_scorer_params p;
    buf[0] = 0;
    if (ds_scorer_params_of(sc, &p) != DS_OK) return;
    switch (ds_scorer_get_kind(sc)) {
    case DS_SCORER_KNN: snprintf(buf, n, "k=%d", p.k); break;
    case DS_SCORER_GAUSSIAN: snprintf(buf, n, "%d components", p.max_components); break;
    case DS_SCORER_PATCHBANK:
        snprintf(buf, n, "coreset %g, k=%d, %s, %s", p.coreset_ratio, p.patch_k, p.metric == DS_METRIC_L2 ? "l2" : "cosine",
                 p.reduce == DS_REDUCE_TOP1PCT ? "top1pct" : "max");
        break;
    case DS_SCORER_PADIM: snprintf(buf, n, "%d channels", p.padim_dim); break;
    case DS_SCORER_FLOW: snprintf(buf, n, "d=%d, %d blocks, %s", p.flow_dim, p.flow_blocks, p.reduce == DS_REDUCE_TOP1PCT ? "top1pct" : "max"); break;
    }
}

/* The report's header: the model, its scorers and their thresholds. */
static int create_report(eval_state *s, const char *model_path, const char *data, const char *layout) {
    const ds_model_info *in = s->info;
    ds_report_params rp = {.model_path = model_path,
                           .data_path = data,
                           .layout = layout,
                           .backbone = in->backbone_arch,
                           .backbone_file = in->backbone_file,
                           .input_size = in->prep.size,
                           .n_scorers = s->n_scorers};
    char desc[DS_MODEL_MAX_SCORERS][128];
    s->pk = ds_model_map_scorer(s->model);
    for (int k = 0; k < s->n_scorers; k++) {
        const ds_scorer *sc = ds_model_scorer(s->model, k);
        const ds_scorer_calibration *c = ds_model_calibration(s->model, k);
        s->maps[k] = ds_scorer_has_patch_scores(sc) != 0;
        scorer_desc(sc, desc[k], sizeof desc[k]);
        rp.scorers[k] = (ds_report_scorer){.name = ds_scorer_kind_name(ds_scorer_get_kind(sc)),
                                           .params = desc[k],
                                           .has_threshold = c->has_threshold,
                                           .threshold = c->threshold,
                                           .threshold_fpr = c->threshold_fpr,
                                           .has_maps = s->maps[k]};
    }
    return ds_report_create(&rp, &s->report) == DS_OK ? CLI_OK : cli_lib_error(s->cmd);
}

static int alloc_state(eval_state *s, int n_items, bool folds) {
    size_t n = (size_t)n_items;
    s->report_index = malloc(sizeof(int) * n);
    s->width = calloc(n, sizeof(int));
    s->height = calloc(n, sizeof(int));
    s->have = calloc(n, sizeof(bool));
    s->masks = calloc(n, sizeof(uint8_t *));
    s->patch = calloc(n * (size_t)s->N, sizeof(float));
    s->patch_all = malloc(sizeof(float) * (size_t)s->n_scorers * (size_t)s->N);
    if (folds && !(s->feats = malloc(sizeof(float) * s->row * n)))
        return cli_error(s->cmd, "out of memory: --folds keeps the features of all %zu images (%.0f MB)", n,
                         4.0 * (double)s->row * (double)n / 1e6);
    if (!s->report_index || !s->width || !s->height || !s->have || !s->masks || !s->patch || !s->patch_all)
        return cli_error(s->cmd, "out of memory");
    for (size_t i = 0; i < n; i++) s->report_index[i] = -1;
    return CLI_OK;
}

static void free_state(eval_state *s) {
    if (s->masks)
        for (int i = 0; i < s->items->n; i++) free(s->masks[i]);
    free(s->masks);
    free(s->report_index);
    free(s->width);
    free(s->height);
    free(s->have);
    free(s->patch);
    free(s->patch_all);
    free(s->feats);
    free(s->map);
    free(s->tmaps);
    ds_report_free(s->report);
}

/* The feature pass over every item (test images, and training images for --folds). */
static int score_items(eval_state *s, ds_backbone *bb, const cli_image_opts *io, long batch, int *n_skipped) {
    int n = s->items->n;
    ds_image_list list = {.n = n, .paths = malloc(sizeof(char *) * (size_t)n), .labels = malloc(sizeof(int) * (size_t)n)};
    int rc = CLI_OK;
    if (!list.paths || !list.labels) rc = cli_error(s->cmd, "out of memory");
    for (int i = 0; i < n && rc == CLI_OK; i++) {
        list.paths[i] = s->items->v[i].path; /* borrowed: list is not freed with ds_image_list_free */
        list.labels[i] = s->items->v[i].label;
    }
    cli_feature_opts fo = {.size = s->info->prep.size, .n_layers = s->info->n_layers, .batch = (int)batch,
                           .keep_original = true};
    if (rc == CLI_OK) rc = cli_feature_pass(s->cmd, bb, io, &fo, &list, eval_sink, s, n_skipped);
    free(list.paths);
    free(list.labels);
    return rc;
}

/* What the report should say about how the figures were made. */
static int add_notes(eval_state *s, int n_masked, int n_skipped, long folds) {
    char note[512];
    int rc = CLI_OK;
    if (s->n_resized) {
        snprintf(note, sizeof note, "%d mask%s differed in size from %s image and %s resized with nearest neighbour.",
                 s->n_resized, s->n_resized > 1 ? "s" : "", s->n_resized > 1 ? "their" : "its", s->n_resized > 1 ? "were" : "was");
        fprintf(stderr, "dinoscope eval: %s\n", note);
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    if (s->n_no_mask) {
        snprintf(note, sizeof note, "%d anomalous test image%s without a mask %s left out of the pixel metrics.", s->n_no_mask,
                 s->n_no_mask > 1 ? "s" : "", s->n_no_mask > 1 ? "are" : "is");
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    if (rc == CLI_OK && n_masked && s->pk < 0)
        rc = add_note(s, "The model has no scorer that gives maps (patchbank, padim): no pixel metrics.");
    if (n_skipped) {
        snprintf(note, sizeof note, "%d unreadable image%s skipped (--skip-bad).", n_skipped, n_skipped > 1 ? "s" : "");
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    if (rc == CLI_OK && s->pk >= 0 && s->pixel_metrics) {
        snprintf(note, sizeof note, "Pixel metrics: each map scorer's anomaly map (bicubic upsampling, Gaussian blur sigma %g, "
                 "bilinear resize) at each image's original size; normal images count as all-zero masks.",
                 (double)s->info->map_sigma);
        rc = add_note(s, note);
    }
    if (s->tile.tile_px > 0) {
        snprintf(note, sizeof note, "Tiled scoring: test images in %d x %d px tiles at their native size, overlap %g "
                 "(edge tiles aligned to the border); maps stitched by overlap averaging, image scores reduced over all "
                 "tiles (knn/gaussian: max over tiles).", s->tile.tile_px, s->tile.tile_px, s->tile.overlap);
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    if (s->shift) {
        snprintf(note, sizeof note, "Shifted scoring (--stride-shift): each test image also shifted by half a patch "
                 "down, right and both; patch scores averaged on the twice finer grid, image scores reduced over it "
                 "(knn/gaussian: the unshifted image).");
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    if (folds) {
        snprintf(note, sizeof note, "Cross-validation: %ld folds over the normal training images (image j in fold j mod %ld); "
                 "each fold refits with the model's scorer parameters and tests on its held-out normals plus all "
                 "anomalous test images.", folds, folds);
        if (rc == CLI_OK) rc = add_note(s, note);
    }
    return rc;
}

static int write_report(eval_state *s, const char *out_dir, double t_start) {
    struct rusage ru;
    int64_t rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : 0; /* Linux: KiB */
    ds_report_set_resources(s->report, cli_now_s() - t_start, rss);
    if (out_dir && !cli_mkdir_p(s->cmd, out_dir)) return CLI_ERROR;
    if (out_dir && ds_report_write(s->report, out_dir) != DS_OK) return cli_lib_error(s->cmd);
    char *md = NULL;
    if (ds_report_format(s->report, "md", &md) != DS_OK) return cli_lib_error(s->cmd);
    fputs(md, stdout);
    free(md);
    if (out_dir) fprintf(stderr, "dinoscope eval: wrote %s/report.json, report.md, scores.csv, report.html\n", out_dir);
    return CLI_OK;
}

static int run_items(eval_state *s, const eval_args *a, const cli_model_opts *mo, cli_image_opts *io, ds_model *model,
                     ds_backbone **bb, const char *layout, double t_start) {
    const eval_items *items = s->items;
    int n_test = 0, n_test_anom = 0, n_masked = 0, n_train = 0, n_skipped = 0;
    for (int i = 0; i < items->n; i++) {
        n_test += items->v[i].test;
        n_test_anom += items->v[i].test && items->v[i].label;
        n_masked += items->v[i].test && items->v[i].label && items->v[i].mask;
        n_train += !items->v[i].test;
    }
    if (n_test == 0) return cli_error(s->cmd, "no test images in '%s' (labels.csv rows need split=test)", a->data);
    fprintf(stderr, "dinoscope eval: %s layout: %d test images (%d normal, %d anomalous, %d with masks)\n", layout, n_test,
            n_test - n_test_anom, n_test_anom, n_masked);
    if (a->folds) fprintf(stderr, "dinoscope eval: %d normal training images for %ld-fold cross-validation\n", n_train, a->folds);
    s->model = model;
    s->info = ds_model_get_info(model);
    s->n_scorers = ds_model_n_scorers(model);
    s->N = (int64_t)s->info->grid_h * s->info->grid_w;
    s->row = (size_t)s->N * (size_t)s->info->dim;
    s->pixel_metrics = n_masked > 0 && !a->scores;
    int rc = create_report(s, mo->model, a->data, layout);
    if (rc == CLI_OK) rc = alloc_state(s, items->n, a->folds > 0);
    s->bb = *bb;
    if (rc == CLI_OK) rc = a->scores ? eval_scores_report(s->cmd, a->scores, model, items, s->report)
                                     : score_items(s, *bb, io, mo->batch, &n_skipped);
    if (!dense(s)) { /* its memory is not needed for the rest (--tile: the gallery's maps) */
        ds_backbone_free(*bb);
        *bb = s->bb = NULL;
    }
    if (rc == CLI_OK) rc = add_notes(s, n_masked, n_skipped, a->folds);
    if (rc == CLI_OK && a->folds) rc = cross_validate(s, (int)a->folds);
    if (rc == CLI_OK && a->out && !a->scores) rc = add_pictures(s, io, (int)a->gallery, s->pk >= 0 ? ds_model_calibration(model, s->pk)->map_vmax : 0);
    if (rc == CLI_OK) rc = write_report(s, a->out, t_start);
    if (rc == CLI_OK && n_skipped) rc = CLI_SKIPPED;
    ds_report_free(s->report);
    s->report = NULL;
    return rc;
}

static int run_eval(eval_state *s, const eval_args *a, const cli_model_opts *mo, cli_image_opts *io, double t_start) {
    const char *layout = NULL;
    eval_items *items = (eval_items *)s->items;
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    if (a->scores && (a->folds || s->tile.tile_px))
        return cli_error(s->cmd, "--scores reads image scores: --folds and --tile need the images");
    if (cli_open_model(s->cmd, mo, io, !a->scores, &model, &bb) != CLI_OK) return CLI_ERROR;
    int rc = eval_find_items(s->cmd, a->data, a->folds > 0, items, &layout);
    if (rc == CLI_OK) rc = run_items(s, a, mo, io, model, &bb, layout, t_start);
    cli_close_model(&model, &bb);
    s->model = NULL;
    return rc;
}

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval";
    double t_start = cli_now_s();
    eval_args a = {.gallery = 6};
    cli_model_cmd c;
    int rc = cli_model_cmd_parse(&eval_spec, (cli_group){"options", eval_opts, CLI_N(eval_opts), &a}, false, &c, argc,
                                 argv);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    eval_items items = {0};
    eval_state s = {.cmd = cmd, .pk = -1, .items = &items, .threads = (int)c.mo.threads,
                    .tile = cli_tile_params(&c.to, &c.mo), .shift = c.to.stride_shift};
    if (s.shift && c.to.tile) return cli_error(cmd, "--stride-shift and --tile go one at a time");
    rc = run_eval(&s, &a, &c.mo, &c.io, t_start);
    free_state(&s);
    eval_items_free(&items);
    return rc;
}
