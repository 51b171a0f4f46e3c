/* dinoscope score --model MODEL [--maps DIR] [--out scores.csv|.json] IMAGES...|DIR|CSV
 *
 * Steps: open the model and its backbone, write the table header, one row
 * (and with --maps one map and overlay) per image, write the table. */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/maps.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"

typedef struct {
    const char *out, *maps, *features, *shard;
    double map_vmax;
} score_args;

static const cli_opt score_opts[] = {
    CLI_STR_OPT(score_args, out, "--out", "FILE", "FILE.csv or FILE.json (default: CSV on stdout)", 0),
    CLI_STR_OPT(score_args, maps, "--maps", "DIR",
                "per image <name>.npy (float32 [H,W] anomaly map at the original size) and <name>_overlay.png "
                "(inferno on a fixed scale [0, vmax], colour bar on the right)", 0),
    {{"--map-vmax"}, "X", "top of the overlay colour scale", CLI_REAL, offsetof(score_args, map_vmax), 1e-12, 1e12,
     NULL, NULL, "the model's, 2 x the 99th percentile of held-out normal patch scores", 0},
    CLI_STR_OPT(score_args, features, "--features", "FEATS.npy",
                "features from `dinoscope extract` (rows = the images given, in order) instead of the backbone", 0),
    CLI_STR_OPT(score_args, shard, "--shard", "I/N",
                "score part I of N of the inputs (every N-th from the I-th); `dinoscope merge --scores` joins the parts", 0),
};

static const cli_spec score_spec = {
    "score", "--model MODEL [options] IMAGES...|DIR|CSV",
    "  Scores images with a fitted model: one row per image (path, one score column per scorer,\n"
    "  <scorer>_anomalous 0/1 where the model holds a threshold, label when a labels.csv gives it, ms).\n"
    "  The preprocessing is the model's.\n",
    "IMAGES", false};

typedef struct {
    const char *cmd;
    const ds_model *model;
    const ds_image_list *list;
    const char *maps_dir;
    float map_vmax;
    int map_k; /* ds_model_map_scorer, or -1 */
    int threads;
    GString *out;
    bool json;
    int n_rows;
    float *patch; /* [n_scorers, N] */
    float *map;
    size_t map_cap;
    GHashTable *stems;
    ds_backbone *bb;     /* for --tile and --stride-shift */
    ds_tile_params tile; /* tile.tile_px 0: whole images */
    bool shift;          /* --stride-shift */
} score_state;

static void csv_field(GString *s, const char *v) {
    if (!strpbrk(v, ",\"\n\r")) {
        g_string_append(s, v);
        return;
    }
    g_string_append_c(s, '"');
    for (const char *p = v; *p; p++) {
        if (*p == '"') g_string_append_c(s, '"');
        g_string_append_c(s, *p);
    }
    g_string_append_c(s, '"');
}

static const char *scorer_name(const ds_model *m, int k) {
    return ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(m, k)));
}

/* A unique file stem per image for the maps: the base name without its
 * extension, suffixed with the input index if another image had it. */
static char *map_stem(score_state *s, const char *path, int index) {
    char *base = cli_stem(path);
    if (base && g_hash_table_contains(s->stems, base)) {
        char *u = g_strdup_printf("%s_%d", base, index);
        free(base);
        base = strdup(u);
        g_free(u);
    }
    if (base) g_hash_table_add(s->stems, g_strdup(base));
    return base;
}

/* s->map holds [n_scorers, H, W] with --tile (the stitched maps), else one map */
static float *map_buffer(score_state *s, size_t n) {
    if (n > s->map_cap) {
        free(s->map);
        s->map = malloc(sizeof(float) * n);
        s->map_cap = s->map ? n : 0;
    }
    return s->map;
}

/* The map scorer's map of orig: from patch scores, or (patch NULL, --tile)
 * the stitched map already in s->map. */
static int write_maps(score_state *s, int index, const char *path, const ds_image *orig, const float *patch) {
    size_t n = (size_t)orig->width * orig->height;
    if (patch) {
        if (!map_buffer(s, n)) return cli_error(s->cmd, "out of memory for a %dx%d map", orig->width, orig->height);
        if (ds_model_anomaly_map(s->model, patch, orig->width, orig->height, s->map) != DS_OK) return cli_lib_error(s->cmd);
    } else if (s->map_k > 0) {
        memmove(s->map, s->map + (size_t)s->map_k * n, sizeof(float) * n);
    }
    char *stem = map_stem(s, path, index);
    if (!stem) return cli_error(s->cmd, "out of memory");
    char *npy = g_strdup_printf("%s/%s.npy", s->maps_dir, stem);
    char *png = g_strdup_printf("%s/%s_overlay.png", s->maps_dir, stem);
    int rc = CLI_OK;
    int64_t shape[2] = {orig->height, orig->width};
    ds_image *ov = NULL;
    float vmax = s->map_vmax;
    if (!(vmax > 0)) {
        /* no calibration: scale by this map's maximum (NOT comparable across images) */
        vmax = 1e-6f;
        for (size_t i = 0; i < n; i++) vmax = s->map[i] > vmax ? s->map[i] : vmax;
    }
    if (ds_npy_write_f32(npy, s->map, 2, shape) != DS_OK ||
        ds_map_overlay(orig, s->map, 0.0f, vmax, 0.5f, 1, &ov) != DS_OK || ds_image_save_png(png, ov) != DS_OK)
        rc = cli_lib_error(s->cmd);
    ds_image_free(ov);
    g_free(npy);
    g_free(png);
    free(stem);
    return rc;
}

static void table_header(score_state *s, const char *model_path) {
    GString *o = s->out;
    if (s->json) {
        g_string_append(o, "{\"model\": ");
        cli_json_string(o, model_path);
        g_string_append_printf(o, ", \"map_vmax\": %.9g, \"images\": [", s->map_vmax);
        return;
    }
    g_string_append(o, "path");
    for (int k = 0; k < ds_model_n_scorers(s->model); k++) {
        g_string_append_printf(o, ",%s", scorer_name(s->model, k));
        if (ds_model_calibration(s->model, k)->has_threshold) g_string_append_printf(o, ",%s_anomalous", scorer_name(s->model, k));
    }
    if (s->list && s->list->labels) g_string_append(o, ",label");
    g_string_append(o, ",ms\n");
}

static void table_row(score_state *s, const char *path, int label, const float *scores, double ms) {
    GString *o = s->out;
    int n = ds_model_n_scorers(s->model);
    if (s->json) {
        g_string_append(o, s->n_rows ? ",\n  {\"path\": " : "\n  {\"path\": ");
        cli_json_string(o, path);
        for (int k = 0; k < n; k++) {
            const ds_scorer_calibration *c = ds_model_calibration(s->model, k);
            g_string_append_printf(o, ", \"%s\": %.9g", scorer_name(s->model, k), scores[k]);
            if (c->has_threshold) g_string_append_printf(o, ", \"%s_anomalous\": %d", scorer_name(s->model, k), scores[k] >= c->threshold);
        }
        if (label >= 0) g_string_append_printf(o, ", \"label\": %d", label);
        g_string_append_printf(o, ", \"ms\": %.2f}", ms);
    } else {
        csv_field(o, path);
        for (int k = 0; k < n; k++) {
            const ds_scorer_calibration *c = ds_model_calibration(s->model, k);
            g_string_append_printf(o, ",%.9g", scores[k]);
            if (c->has_threshold) g_string_append_printf(o, ",%d", scores[k] >= c->threshold);
        }
        if (s->list && s->list->labels) g_string_append_printf(o, ",%d", label);
        g_string_append_printf(o, ",%.2f\n", ms);
    }
    s->n_rows++;
}

static int score_sink(void *ud, const ds_pipeline_item *it) {
    score_state *s = ud;
    float scores[DS_MODEL_MAX_SCORERS];
    double t0 = cli_now_s();
    if (s->tile.tile_px > 0 || s->shift) {
        const ds_image *img = it->original;
        size_t n = (size_t)ds_model_n_scorers(s->model) * img->width * img->height;
        if (!map_buffer(s, n)) return cli_error(s->cmd, "out of memory for %dx%d tiled maps", img->width, img->height);
        float *maps = s->maps_dir ? s->map : NULL;
        ds_status st = s->shift ? ds_model_score_shifted(s->model, s->bb, img, s->threads, scores, maps)
                                : ds_model_score_tiled(s->model, s->bb, img, &s->tile, scores, maps, NULL);
        if (st != DS_OK) return cli_error(s->cmd, "'%s': %s", it->path, ds_last_error());
        double ms = it->prep_ms + it->backbone_ms + 1e3 * (cli_now_s() - t0);
        int label = s->list && s->list->labels ? s->list->labels[it->index] : -1;
        table_row(s, it->path, label, scores, ms);
        return s->maps_dir && s->map_k >= 0 ? write_maps(s, it->index, it->path, img, NULL) : CLI_OK;
    }
    if (ds_model_score_features(s->model, it->feats, s->threads, scores, s->patch, NULL) != DS_OK)
        return cli_error(s->cmd, "'%s': %s", it->path, ds_last_error());
    double ms = it->prep_ms + it->backbone_ms + 1e3 * (cli_now_s() - t0);
    int label = s->list && s->list->labels ? s->list->labels[it->index] : -1;
    table_row(s, it->path, label, scores, ms);
    if (s->maps_dir && s->map_k >= 0 && it->original) {
        const ds_model_info *in = ds_model_get_info(s->model);
        const float *patch = s->patch + (size_t)s->map_k * in->grid_h * in->grid_w;
        return write_maps(s, it->index, it->path, it->original, patch);
    }
    return CLI_OK;
}

/* Rows of a features file from `dinoscope extract` instead of the backbone. */
static int score_features_file(score_state *s, const char *path) {
    const ds_model_info *in = ds_model_get_info(s->model);
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS], N = (int64_t)in->grid_h * in->grid_w;
    float *feats = NULL;
    if (ds_npy_read_f32(path, &feats, &nd, shape) != DS_OK) return cli_lib_error(s->cmd);
    int rc = CLI_OK;
    if (nd != 3 || shape[1] != N || shape[2] != in->dim)
        rc = cli_error(s->cmd, "'%s' has the wrong shape: the model expects [n, %lld, %d]", path, (long long)N, in->dim);
    else if (s->list && s->list->n != shape[0])
        rc = cli_error(s->cmd, "'%s' has %lld rows but %d images were given", path, (long long)shape[0], s->list->n);
    for (int64_t i = 0; i < shape[0] && rc == CLI_OK; i++) {
        char name[32];
        snprintf(name, sizeof name, "row_%lld", (long long)i);
        ds_pipeline_item it = {.index = (int)i, .path = s->list ? s->list->paths[i] : name,
                               .feats = feats + (size_t)i * N * in->dim};
        rc = score_sink(s, &it);
    }
    free(feats);
    return rc;
}

static int run_score(score_state *s, const score_args *a, const cli_model_opts *mo, cli_image_opts *io, int *n_skipped) {
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    bool from_images = !a->features;
    if (cli_open_model(s->cmd, mo, io, from_images, &model, &bb) != CLI_OK) return CLI_ERROR;
    const ds_model_info *in = ds_model_get_info(model);
    s->model = model;
    s->bb = bb;
    s->map_k = ds_model_map_scorer(model);
    if (s->map_k >= 0) s->map_vmax = ds_model_calibration(model, s->map_k)->map_vmax;
    if (a->map_vmax > 0) s->map_vmax = (float)a->map_vmax;
    int rc = CLI_OK;
    s->patch = malloc(sizeof(float) * (size_t)ds_model_n_scorers(model) * in->grid_h * in->grid_w);
    if (!s->patch) rc = cli_error(s->cmd, "out of memory");
    if (rc == CLI_OK) table_header(s, mo->model);
    if (rc == CLI_OK && !from_images) {
        rc = score_features_file(s, a->features);
    } else if (rc == CLI_OK) {
        cli_feature_opts fo = {.size = in->prep.size, .n_layers = in->n_layers, .batch = (int)mo->batch,
                               .keep_original = a->maps != NULL || s->tile.tile_px > 0 || s->shift};
        rc = cli_feature_pass(s->cmd, bb, io, &fo, s->list, score_sink, s, n_skipped);
    }
    if (rc == CLI_OK && s->json) g_string_append(s->out, "\n]}\n");
    cli_close_model(&model, &bb);
    s->model = NULL;
    return rc;
}

int cmd_score(int argc, char **argv) {
    const char *cmd = "score";
    score_args a = {0};
    cli_model_cmd c;
    int rc = cli_model_cmd_parse(&score_spec, (cli_group){"options", score_opts, CLI_N(score_opts), &a}, true, &c, argc,
                                 argv);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    ds_image_list *list = NULL;
    score_state s = {.cmd = cmd, .maps_dir = a.maps, .threads = (int)c.mo.threads, .tile = cli_tile_params(&c.to, &c.mo)};
    s.shift = c.to.stride_shift;
    int n_skipped = 0, sh_i = 0, sh_n = 1;
    rc = CLI_ERROR;
    if (a.shard && cli_parse_shard(cmd, a.shard, &sh_i, &sh_n) != CLI_OK) rc = CLI_ERROR;
    else if (a.shard && a.features) rc = cli_error(cmd, "--shard selects images: give images, not --features");
    else if (c.pos.n == 0 && !a.features) rc = cli_error(cmd, "give the images to score (files, folders or a labels.csv) or --features");
    else if (a.maps && a.features) rc = cli_error(cmd, "--maps needs the images themselves, not --features");
    else if (c.to.tile && a.features) rc = cli_error(cmd, "--tile needs the images themselves, not --features");
    else if (c.to.stride_shift && a.features) rc = cli_error(cmd, "--stride-shift needs the images themselves, not --features");
    else if (c.to.stride_shift && c.to.tile) rc = cli_error(cmd, "--stride-shift and --tile go one at a time");
    else if (c.pos.n > 0 && cli_expand_images(cmd, &c.pos, c.io.recursive, &list) != CLI_OK) rc = CLI_ERROR;
    else if (list && (cli_keep_shard(list, sh_i, sh_n), list->n == 0)) rc = cli_error(cmd, "no images in part %s", a.shard);
    else if (a.maps && g_mkdir_with_parents(a.maps, 0755) != 0) rc = cli_error(cmd, "cannot create '%s': %s", a.maps, strerror(errno));
    else {
        s.list = list;
        s.json = a.out && g_str_has_suffix(a.out, ".json");
        s.out = g_string_new(NULL);
        s.stems = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        rc = run_score(&s, &a, &c.mo, &c.io, &n_skipped);
        if (rc == CLI_OK) rc = cli_write_text(cmd, a.out, s.out->str, s.out->len);
        if (rc == CLI_OK && a.out) fprintf(stderr, "dinoscope score: wrote %d rows to %s\n", s.n_rows, a.out);
        if (rc == CLI_OK && n_skipped) rc = CLI_SKIPPED;
    }
    if (s.out) g_string_free(s.out, TRUE);
    if (s.stems) g_hash_table_destroy(s.stems);
    free(s.patch);
    free(s.map);
    ds_image_list_free(list);
    free(c.pos.v);
    return rc;
}
