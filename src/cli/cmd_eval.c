/* dinoscope eval --model MODEL --data DIR|labels.csv [--out REPORT_DIR] [--folds K]
 *
 * Scores a labelled test set with a fitted model and reports every figure
 * (the library's ds_report builds the outputs; this file finds the images,
 * runs the backbone once per image, and feeds scores and maps in). */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "dinoscope/eval.h"
#include "dinoscope/maps.h"
#include "dinoscope/model.h"
#include "dinoscope/scorer.h"
#include "dinoscope/weights.h"

static const char *USAGE =
    "usage: dinoscope eval --model MODEL --data DIR|labels.csv [options]\n"
    "  Evaluates a fitted model on a labelled test set. Data layouts (detected):\n"
    "    labels.csv (filename,split,label,maskfile; test = split 'test', or every row without a split column),\n"
    "    a folder holding labels.csv, or MVTec AD: DIR/train/good, DIR/test/<defect>/*.png,\n"
    "    DIR/ground_truth/<defect>/<name>_mask.png ('good' = normal).\n"
    "  Per scorer: image AUROC, average precision, F1-max and its threshold; with masks, pixel AUROC\n"
    "  and AUPRO@0.3 from the maps (patchbank, padim) at each image's original size; the model's stored\n"
    "  threshold's precision/recall/FPR; timing per image (preprocessing, backbone, scoring).\n"
    "  --out DIR: write report.json, report.md, scores.csv, report.html (one self-contained page)\n"
    "             (without --out the results table is printed only)\n"
    "  --folds K: also K-fold cross-validation over the normal TRAINING images: refit each scorer\n"
    "             with the model's parameters on K-1 folds, test on the held-out fold plus all test\n"
    "             anomalies; mean and std per metric (features computed once)\n"
    "  --gallery N (6): images per gallery section of report.html\n"
    "  --backbone W: weights file to use instead of the path stored in the model\n"
    "  --force-backbone: accept a backbone whose SHA-256 differs from the model's\n"
    "  --batch B (1)  --threads T (0 = auto)  --window MIN,MAX  --skip-bad\n";

/* ---- the images --------------------------------------------------------------- */

typedef struct {
    char *path, *mask, *defect;
    int label; /* 0/1 */
    bool test; /* false: a normal training image (cross-validation only) */
} eval_item;

typedef struct {
    eval_item *v;
    int n, cap;
} eval_items;

static void items_free(eval_items *it) {
    for (int i = 0; i < it->n; i++) {
        free(it->v[i].path);
        free(it->v[i].mask);
        free(it->v[i].defect);
    }
    free(it->v);
    memset(it, 0, sizeof *it);
}

/* Takes ownership of path, mask and defect (freed on failure). */
static bool items_push(eval_items *it, char *path, char *mask, char *defect, int label, bool test) {
    if (it->n == it->cap) {
        int cap = it->cap ? 2 * it->cap : 256;
        eval_item *v = realloc(it->v, sizeof *v * (size_t)cap);
        if (!v) {
            free(path), free(mask), free(defect);
            return false;
        }
        it->v = v, it->cap = cap;
    }
    it->v[it->n++] = (eval_item){.path = path, .mask = mask, .defect = defect, .label = label, .test = test};
    return true;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join2(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int from_csv(const char *cmd, const char *csv, bool want_train, eval_items *it) {
    ds_image_list *list = NULL;
    if (ds_image_list_expand(&csv, 1, 0, &list) != DS_OK) return cli_lib_error(cmd);
    bool any_split = false;
    for (int i = 0; i < list->n; i++) any_split = any_split || list->splits[i];
    int rc = CLI_OK;
    for (int i = 0; i < list->n && rc == CLI_OK; i++) {
        const char *sp = list->splits[i];
        bool test = any_split ? sp && !strcmp(sp, "test") : true;
        bool train = any_split && sp && !strcmp(sp, "train") && list->labels[i] == 0;
        if (!test && !(train && want_train)) continue;
        if (test && list->labels[i] < 0) {
            rc = cli_error(cmd, "'%s': test image '%s' has no label", csv, list->paths[i]);
            break;
        }
        char *p = strdup(list->paths[i]), *m = list->masks[i] ? strdup(list->masks[i]) : NULL;
        if (!p || (list->masks[i] && !m) || !items_push(it, p, m, NULL, list->labels[i] > 0, test))
            rc = cli_error(cmd, "out of memory");
    }
    ds_image_list_free(list);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Images of one folder (sorted), as the list expansion sees them. */
static int folder_images(const char *cmd, const char *dir, ds_image_list **out) {
    if (ds_image_list_expand(&dir, 1, 0, out) != DS_OK) return cli_lib_error(cmd);
    return CLI_OK;
}

/* MVTec AD: test/<defect>/ with ground_truth/<defect>/<stem>_mask.png. */
static int from_mvtec(const char *cmd, const char *root, bool want_train, eval_items *it) {
    int rc = CLI_OK;
    if (want_train) {
        char *good = join2(root, "train/good");
        ds_image_list *l = NULL;
        if (!good) return cli_error(cmd, "out of memory");
        if (!is_dir(good)) rc = cli_error(cmd, "--folds needs the normal training images: no folder '%s'", good);
        if (rc == CLI_OK) rc = folder_images(cmd, good, &l);
        for (int i = 0; rc == CLI_OK && i < l->n; i++) {
            char *p = strdup(l->paths[i]);
            if (!p || !items_push(it, p, NULL, NULL, 0, false)) rc = cli_error(cmd, "out of memory");
        }
        ds_image_list_free(l);
        free(good);
        if (rc != CLI_OK) return rc;
    }
    char *test = join2(root, "test");
    DIR *d = test ? opendir(test) : NULL;
    if (!d) {
        rc = cli_error(cmd, "cannot open '%s': %s", test ? test : root, strerror(errno));
        free(test);
        return rc;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = join2(test, e->d_name);
        bool dir = full && is_dir(full);
        free(full);
        if (!dir) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) break;
            names = nn;
        }
        names[n] = strdup(e->d_name);
        if (names[n]) n++;
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    if (n == 0) rc = cli_error(cmd, "'%s' has no defect folders (expected test/good, test/<defect>/)", test);
    for (int j = 0; j < n && rc == CLI_OK; j++) {
        char *dir = join2(test, names[j]);
        ds_image_list *l = NULL;
        rc = dir ? folder_images(cmd, dir, &l) : cli_error(cmd, "out of memory");
        bool good = !strcmp(names[j], "good");
        for (int i = 0; rc == CLI_OK && i < l->n; i++) {
            char *mask = NULL;
            if (!good) {
                /* <stem>_mask.png beside the test image's stem */
                const char *base = strrchr(l->paths[i], '/');
                base = base ? base + 1 : l->paths[i];
                const char *dot = strrchr(base, '.');
                int stem = dot ? (int)(dot - base) : (int)strlen(base);
                size_t len = strlen(root) + strlen(names[j]) + (size_t)stem + 32;
                mask = malloc(len);
                if (mask) snprintf(mask, len, "%s/ground_truth/%s/%.*s_mask.png", root, names[j], stem, base);
                if (mask && !is_file(mask)) {
                    free(mask);
                    mask = NULL;
                }
            }
            char *p = strdup(l->paths[i]), *def = strdup(names[j]);
            if (!p || !def || !items_push(it, p, mask, def, !good, true)) rc = cli_error(cmd, "out of memory");
        }
        ds_image_list_free(l);
        free(dir);
    }
    for (int j = 0; j < n; j++) free(names[j]);
    free(names);
    free(test);
    return rc;
}

/* Detects the layout of --data and lists its images. */
static int find_items(const char *cmd, const char *data, bool want_train, eval_items *it, const char **layout) {
    size_t len = strlen(data);
    if (len > 4 && !strcmp(data + len - 4, ".csv")) {
        *layout = "labels.csv";
        return from_csv(cmd, data, want_train, it);
    }
    if (!is_dir(data)) return cli_error(cmd, "--data '%s' is neither a labels.csv nor a folder", data);
    char *csv = join2(data, "labels.csv"), *test = join2(data, "test");
    int rc;
    if (!csv || !test) rc = cli_error(cmd, "out of memory");
    else if (is_file(csv)) {
        *layout = "labels.csv";
        rc = from_csv(cmd, csv, want_train, it);
    } else if (is_dir(test)) {
        *layout = "mvtec";
        rc = from_mvtec(cmd, data, want_train, it);
    } else {
        rc = cli_error(cmd, "--data '%s' has neither a labels.csv nor an MVTec AD test/ folder", data);
    }
    free(csv);
    free(test);
    return rc;
}

/* ---- the feature pass ------------------------------------------------------------- */

typedef struct {
    const char *cmd;
    const ds_model *model;
    const ds_model_info *info;
    const eval_items *items;
    ds_report *report;
    int threads, n_scorers, pk; /* pk: the first scorer with maps (the gallery's), -1 if none */
    bool maps[DS_MODEL_MAX_SCORERS]; /* scorer k gives patch scores (patchbank, padim) */
    bool pixel_metrics;         /* some test anomaly has a mask */
    int64_t N;
    /* per item */
    int *report_index;          /* test items: index in the report; -1 = skipped */
    int *width, *height;        /* original sizes */
    bool *have;                 /* features seen */
    float *patch;               /* [n_items, N] patch scores of pk (test items) */
    float *patch_tmp;           /* [N] for the other map scorers */
    uint8_t **masks;            /* binary masks at the original size (test anomalies with masks) */
    float *feats;               /* [n_items, N, D] for --folds, else NULL */
    size_t row;
    float *map;
    size_t map_cap;
    int n_resized, n_no_mask;
    cli_progress prog;
} eval_state;

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
    if (!out) {
        ds_image_free(m);
        cli_error(cmd, "out of memory for a %dx%d mask", w, h);
        return NULL;
    }
    *resized = m->width != w || m->height != h;
    for (int y = 0; y < h; y++) {
        int sy = (int)(((double)y + 0.5) * m->height / h);
        if (sy >= m->height) sy = m->height - 1;
        for (int x = 0; x < w; x++) {
            int sx = (int)(((double)x + 0.5) * m->width / w);
            if (sx >= m->width) sx = m->width - 1;
            const uint8_t *p = m->pixels + ((size_t)sy * m->width + sx) * m->channels;
            out[(size_t)y * w + x] = p[0] != 0 || (m->channels == 3 && (p[1] != 0 || p[2] != 0));
        }
    }
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

static int eval_sink(void *ud, int index, const char *path, const ds_image *original, const float *feats,
                     const float *cls, const cli_feature_timing *timing) {
    eval_state *s = ud;
    const eval_item *it = &s->items->v[index];
    s->have[index] = true;
    s->width[index] = original->width;
    s->height[index] = original->height;
    if (s->feats) memcpy(s->feats + (size_t)index * s->row, feats, sizeof(float) * s->row);
    if (!it->test) return CLI_OK;
    float scores[DS_MODEL_MAX_SCORERS];
    double score_ms[DS_MODEL_MAX_SCORERS];
    bool pixels = s->pixel_metrics && (it->label == 0 || it->mask);
    int w = original->width, h = original->height;
    uint8_t *mask = NULL;
    if (pixels && it->label == 1) {
        bool resized = false;
        if (!(mask = load_mask(s->cmd, it->mask, w, h, &resized))) return CLI_ERROR;
        s->n_resized += resized;
        s->masks[index] = mask;
    } else if (it->label == 1 && s->pixel_metrics) {
        s->n_no_mask++;
    }
    double map_ms = 0;
    for (int k = 0; k < s->n_scorers; k++) {
        float *patch = !s->maps[k] ? NULL : k == s->pk ? s->patch + (size_t)index * s->N : s->patch_tmp;
        double t0 = cli_now_s();
        if (ds_scorer_score(ds_model_scorer(s->model, k), feats, s->N, s->threads, &scores[k], patch) != DS_OK)
            return cli_error(s->cmd, "'%s': %s", path, ds_last_error());
        score_ms[k] = 1e3 * (cli_now_s() - t0);
        if (!patch || !pixels) continue;
        float *map = map_buffer(s, w, h);
        if (!map) return cli_error(s->cmd, "out of memory for a %dx%d map", w, h);
        t0 = cli_now_s();
        if (ds_anomaly_map(patch, s->info->grid_h, s->info->grid_w, s->info->prep.size, 4.0f, w, h, map) != DS_OK)
            return cli_lib_error(s->cmd);
        if (k == s->pk) map_ms = 1e3 * (cli_now_s() - t0);
        if (ds_report_add_map(s->report, k, map, mask, h, w) != DS_OK)
            return cli_error(s->cmd, "'%s': %s", path, ds_last_error());
    }
    ds_report_image im = {.path = it->path,
                          .label = it->label,
                          .defect = it->defect,
                          .mask_path = it->mask,
                          .scores = scores,
                          .prep_ms = timing->prep_ms,
                          .backbone_ms = timing->backbone_ms,
                          .score_ms = score_ms,
                          .map_ms = map_ms};
    if (ds_report_add_image(s->report, &im, &s->report_index[index]) != DS_OK) return cli_lib_error(s->cmd);
    return CLI_OK;
}

/* ---- gallery pictures ------------------------------------------------------------- */

static int add_pictures(eval_state *s, const cli_image_opts *io, int n_per, float vmax_model) {
    int cap = 3 * n_per, n = 0;
    int *idx = malloc(sizeof(int) * (size_t)cap);
    int *item_of = malloc(sizeof(int) * (size_t)(s->items->n ? s->items->n : 1));
    if (!idx || !item_of) {
        free(idx);
        free(item_of);
        return cli_error(s->cmd, "out of memory");
    }
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
        ds_report_add_note(s->report, note);
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
        if (s->pk >= 0) {
            float *map = map_buffer(s, img->width, img->height);
            if (!map) rc = cli_error(s->cmd, "out of memory");
            else if (ds_anomaly_map(s->patch + (size_t)i * s->N, s->info->grid_h, s->info->grid_w, s->info->prep.size,
                                    4.0f, img->width, img->height, map) != DS_OK ||
                     ds_map_overlay(img, map, 0.0f, vmax, 0.5f, 0, &ov) != DS_OK)
                rc = cli_lib_error(s->cmd);
            pic = ov;
        }
        uint8_t *mask = s->masks[i];
        bool own = false, resized;
        if (rc == CLI_OK && !mask && it->mask) {
            mask = load_mask(s->cmd, it->mask, img->width, img->height, &resized);
            own = mask != NULL;
        }
        if (rc == CLI_OK &&
            ds_report_set_picture(s->report, idx[j], pic, mask, img->width, img->height, 0) != DS_OK)
            rc = cli_lib_error(s->cmd);
        if (own) free(mask);
        ds_image_free(ov);
        ds_image_free(img);
    }
    free(idx);
    free(item_of);
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
                else if (ds_anomaly_map(patch, in->grid_h, in->grid_w, in->prep.size, 4.0f, w, h, map) != DS_OK ||
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
    }
}

static int load_backbone(const char *cmd, const ds_model_info *in, const char *override, bool force, int threads,
                         ds_backbone **bb) {
    const char *bpath = override ? override : in->backbone_file;
    char sha[65];
    if (ds_file_sha256(bpath, sha) != DS_OK)
        return cli_error(cmd, "backbone of the model: %s (use --backbone to point to the weights file)", ds_last_error());
    if (strcmp(sha, in->backbone_sha256) != 0) {
        if (!force)
            return cli_error(cmd, "backbone '%s' (sha256 %.12s...) is not the one the model was fitted with (sha256 %.12s..., '%s'); use --force-backbone to override",
                             bpath, sha, in->backbone_sha256, in->backbone_file);
        fprintf(stderr, "dinoscope %s: warning: backbone sha256 differs from the model's (--force-backbone)\n", cmd);
    }
    if (ds_backbone_load(bpath, &(ds_backbone_params){.n_threads = threads}, bb) != DS_OK) return cli_lib_error(cmd);
    if (strcmp(ds_backbone_describe(*bb), in->backbone_arch) != 0)
        return cli_error(cmd, "backbone '%s' is a %s, the model was fitted on a %s", bpath, ds_backbone_describe(*bb),
                         in->backbone_arch);
    return CLI_OK;
}

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval", *model_path = NULL, *data = NULL, *out_dir = NULL, *backbone_override = NULL;
    long batch = 1, threads = 0, folds = 0, gallery_n = 6;
    bool force = false;
    double t_start = cli_now_s();
    cli_image_opts io;
    cli_image_opts_init(&io);
    int rc = CLI_USAGE;
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    ds_image_list list = {0};
    eval_items items = {0};
    eval_state s = {.cmd = cmd, .pk = -1};
    char *md = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = cli_image_opt(cmd, &io, argc, argv, &i);
        if (r < 0) goto done;
        if (r > 0) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            rc = CLI_OK;
            goto done;
        }
        if (!strcmp(a, "--force-backbone")) {
            force = true;
            continue;
        }
        if (!v || a[0] != '-') {
            cli_error(cmd, "unknown argument or missing value: '%s' (see --help)", a);
            goto done;
        }
        i++;
        bool ok = true;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--backbone") || !strcmp(a, "--weights")) backbone_override = v;
        else if (!strcmp(a, "--batch")) ok = cli_parse_int(v, 1, 1024, &batch);
        else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, 0, 1024, &threads);
        else if (!strcmp(a, "--folds")) ok = cli_parse_int(v, 2, 100, &folds);
        else if (!strcmp(a, "--gallery")) ok = cli_parse_int(v, 1, 100, &gallery_n);
        else {
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            goto done;
        }
        if (!ok) {
            cli_error(cmd, "bad value '%s' for %s (see --help)", v, a);
            goto done;
        }
    }
    if (!model_path || !data) {
        fputs(USAGE, stderr);
        goto done;
    }
    rc = CLI_ERROR;
    if (ds_model_load(model_path, &model) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    const ds_model_info *in = ds_model_get_info(model);
    if (io.prep.stain != DS_STAIN_NONE && io.prep.stain != in->prep.stain) {
        rc = cli_error(cmd, "--stain-norm differs from the model's preprocessing; the model's settings are used, drop the flag");
        goto done;
    }
    io.prep = in->prep;
    const char *layout = NULL;
    if ((rc = find_items(cmd, data, folds > 0, &items, &layout)) != CLI_OK) goto done;
    rc = CLI_ERROR;
    int n_test = 0, n_test_anom = 0, n_masked = 0, n_train = 0;
    for (int i = 0; i < items.n; i++) {
        n_test += items.v[i].test;
        n_test_anom += items.v[i].test && items.v[i].label;
        n_masked += items.v[i].test && items.v[i].label && items.v[i].mask;
        n_train += !items.v[i].test;
    }
    if (n_test == 0) {
        rc = cli_error(cmd, "no test images in '%s' (labels.csv rows need split=test)", data);
        goto done;
    }
    fprintf(stderr, "dinoscope eval: %s layout: %d test images (%d normal, %d anomalous, %d with masks)%s\n", layout, n_test,
            n_test - n_test_anom, n_test_anom, n_masked, folds ? "" : "");
    if (folds) fprintf(stderr, "dinoscope eval: %d normal training images for %ld-fold cross-validation\n", n_train, folds);
    if ((rc = load_backbone(cmd, in, backbone_override, force, (int)threads, &bb)) != CLI_OK) goto done;
    rc = CLI_ERROR;

    s.model = model;
    s.info = in;
    s.items = &items;
    s.threads = (int)threads;
    s.n_scorers = ds_model_n_scorers(model);
    s.N = (int64_t)in->grid_h * in->grid_w;
    s.row = (size_t)s.N * (size_t)in->dim;
    s.pixel_metrics = n_masked > 0;
    ds_report_params rp = {.model_path = model_path,
                           .data_path = data,
                           .layout = layout,
                           .backbone = in->backbone_arch,
                           .backbone_file = in->backbone_file,
                           .input_size = in->prep.size,
                           .n_scorers = s.n_scorers};
    char desc[DS_MODEL_MAX_SCORERS][128];
    float vmax_model = 0;
    for (int k = 0; k < s.n_scorers; k++) {
        const ds_scorer *sc = ds_model_scorer(model, k);
        const ds_scorer_calibration *c = ds_model_calibration(model, k);
        bool pb = ds_scorer_has_patch_scores(sc) != 0;
        s.maps[k] = pb;
        if (pb && s.pk < 0) {
            s.pk = k;
            vmax_model = c->map_vmax;
        }
        scorer_desc(sc, desc[k], sizeof desc[k]);
        rp.scorers[k] = (ds_report_scorer){.name = ds_scorer_kind_name(ds_scorer_get_kind(sc)),
                                           .params = desc[k],
                                           .has_threshold = c->has_threshold,
                                           .threshold = c->threshold,
                                           .threshold_fpr = c->threshold_fpr,
                                           .has_maps = pb};
    }
    if (ds_report_create(&rp, &s.report) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    size_t n = (size_t)items.n;
    s.report_index = malloc(sizeof(int) * n);
    s.width = calloc(n, sizeof(int));
    s.height = calloc(n, sizeof(int));
    s.have = calloc(n, sizeof(bool));
    s.masks = calloc(n, sizeof(uint8_t *));
    s.patch = calloc(n * (size_t)s.N, sizeof(float));
    s.patch_tmp = malloc(sizeof(float) * (size_t)s.N);
    list.paths = malloc(sizeof(char *) * n);
    list.labels = malloc(sizeof(int) * n);
    list.splits = calloc(n, sizeof(char *));
    list.masks = calloc(n, sizeof(char *));
    if (folds) {
        s.feats = malloc(sizeof(float) * s.row * n);
        if (!s.feats) {
            rc = cli_error(cmd, "out of memory: --folds keeps the features of all %zu images (%.0f MB)", n,
                           4.0 * (double)s.row * (double)n / 1e6);
            goto done;
        }
    }
    if (!s.report_index || !s.width || !s.height || !s.have || !s.masks || !s.patch || !s.patch_tmp || !list.paths || !list.labels ||
        !list.splits || !list.masks) {
        rc = cli_error(cmd, "out of memory");
        goto done;
    }
    for (int i = 0; i < items.n; i++) {
        s.report_index[i] = -1;
        list.paths[i] = items.v[i].path; /* borrowed: list is not freed with ds_image_list_free */
        list.labels[i] = items.v[i].label;
    }
    list.n = items.n;
    cli_feature_opts fo = {.size = in->prep.size, .n_layers = in->n_layers, .batch = (int)batch, .keep_original = true};
    int n_skipped = 0;
    rc = cli_feature_pass(cmd, bb, &io, &fo, &list, eval_sink, &s, &n_skipped);
    if (rc != CLI_OK) goto done;
    rc = CLI_ERROR;
    ds_backbone_free(bb); /* its memory is not needed for the rest */
    bb = NULL;
    char note[512];
    if (s.n_resized) {
        snprintf(note, sizeof note, "%d mask%s differed in size from %s image and %s resized with nearest neighbour.",
                 s.n_resized, s.n_resized > 1 ? "s" : "", s.n_resized > 1 ? "their" : "its", s.n_resized > 1 ? "were" : "was");
        ds_report_add_note(s.report, note);
        fprintf(stderr, "dinoscope eval: %s\n", note);
    }
    if (s.n_no_mask) {
        snprintf(note, sizeof note, "%d anomalous test image%s without a mask %s left out of the pixel metrics.", s.n_no_mask,
                 s.n_no_mask > 1 ? "s" : "", s.n_no_mask > 1 ? "are" : "is");
        ds_report_add_note(s.report, note);
    }
    if (n_masked && s.pk < 0)
        ds_report_add_note(s.report, "The model has no scorer that gives maps (patchbank, padim): no pixel metrics.");
    if (n_skipped) {
        snprintf(note, sizeof note, "%d unreadable image%s skipped (--skip-bad).", n_skipped, n_skipped > 1 ? "s" : "");
        ds_report_add_note(s.report, note);
    }
    if (s.pk >= 0 && s.pixel_metrics)
        ds_report_add_note(s.report, "Pixel metrics: each map scorer's anomaly map (bicubic upsampling, Gaussian blur sigma 4, "
                                     "bilinear resize) at each image's original size; normal images count as all-zero masks.");
    if (folds) {
        snprintf(note, sizeof note, "Cross-validation: %ld folds over the normal training images (image j in fold j mod %ld); "
                 "each fold refits with the model's scorer parameters and tests on its held-out normals plus all "
                 "anomalous test images.", folds, folds);
        ds_report_add_note(s.report, note);
        if ((rc = cross_validate(&s, (int)folds)) != CLI_OK) goto done;
        rc = CLI_ERROR;
    }
    if (out_dir && (rc = add_pictures(&s, &io, (int)gallery_n, vmax_model)) != CLI_OK) goto done;
    rc = CLI_ERROR;
    struct rusage ru;
    int64_t rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : 0; /* Linux: KiB */
    ds_report_set_resources(s.report, cli_now_s() - t_start, rss);
    if (out_dir) {
        if (!cli_mkdir_p(cmd, out_dir)) goto done;
        if (ds_report_write(s.report, out_dir) != DS_OK) {
            rc = cli_lib_error(cmd);
            goto done;
        }
    }
    if (ds_report_format(s.report, "md", &md) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    fputs(md, stdout);
    if (out_dir)
        fprintf(stderr, "dinoscope eval: wrote %s/report.json, report.md, scores.csv, report.html\n", out_dir);
    rc = n_skipped ? CLI_SKIPPED : CLI_OK;
done:
    free(md);
    if (s.masks)
        for (int i = 0; i < items.n; i++) free(s.masks[i]);
    free(s.masks);
    free(s.report_index);
    free(s.width);
    free(s.height);
    free(s.have);
    free(s.patch);
    free(s.patch_tmp);
    free(s.feats);
    free(s.map);
    ds_report_free(s.report);
    free(list.paths);
    free(list.labels);
    free(list.splits);
    free(list.masks);
    items_free(&items);
    ds_backbone_free(bb);
    ds_model_free(model);
    return rc;
}
