/* dinoscope score --model MODEL [--maps DIR] [--out scores.csv|.json] IMAGES...|DIR|CSV */
#include <errno.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/maps.h"
#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "dinoscope/weights.h"

static const char *USAGE =
    "usage: dinoscope score --model MODEL [options] IMAGES...|DIR|CSV\n"
    "  Scores images with a fitted model: one row per image (path, one score column per scorer,\n"
    "  <scorer>_anomalous 0/1 where the model holds a threshold, label when a labels.csv gives it, ms).\n"
    "  --out FILE.csv|FILE.json (default: CSV on stdout)\n"
    "  --maps DIR: per image, <name>.npy (float32 [H,W] anomaly map at the original size) and\n"
    "              <name>_overlay.png (inferno on a fixed scale [0, vmax], colour bar on the right)\n"
    "  --map-vmax X: top of the overlay colour scale (default: the model's, 2 x the 99th percentile of\n"
    "                held-out normal patch scores)\n"
    "  --backbone W: weights file to use instead of the path stored in the model\n"
    "  --force-backbone: accept a backbone whose SHA-256 differs from the one the model was fitted with\n"
    "  --batch B (1)  --threads T (0 = auto)  --window MIN,MAX  --skip-bad  --recursive\n"
    "  --features FEATS.npy: features from `dinoscope extract` (rows = the images given, in order)\n";

typedef struct {
    const char *cmd;
    const ds_model *model;
    const ds_model_info *info;
    const ds_image_list *list;
    const char *maps_dir;
    float map_vmax;
    int map_k; /* the first scorer that gives patch scores (the maps), or -1 */
    int threads;
    GString *out;
    bool json;
    int n_rows;
    float *patch, *map;
    size_t map_cap;
    GHashTable *stems;
} score_state;

static void csv_field(GString *s, const char *v) {
    bool quote = strpbrk(v, ",\"\n\r") != NULL;
    if (!quote) {
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

static void json_string(GString *s, const char *v) {
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') g_string_append_printf(s, "\\%c", *p);
        else if (*p < 0x20) g_string_append_printf(s, "\\u%04x", *p);
        else g_string_append_c(s, (char)*p);
    }
    g_string_append_c(s, '"');
}

/* A unique file stem per image for the maps: the base name without its
 * extension, suffixed with the input index if another image had it. */
static char *map_stem(score_state *s, const char *path, int index) {
    char *base = g_path_get_basename(path);
    char *dot = strrchr(base, '.');
    if (dot && dot != base) *dot = 0;
    if (g_hash_table_contains(s->stems, base)) {
        char *u = g_strdup_printf("%s_%d", base, index);
        g_free(base);
        base = u;
    }
    g_hash_table_add(s->stems, g_strdup(base));
    return base;
}

static int write_maps(score_state *s, int index, const char *path, const ds_image *orig, const float *patch) {
    const ds_model_info *in = s->info;
    size_t n = (size_t)orig->width * orig->height;
    if (n > s->map_cap) {
        free(s->map);
        s->map = malloc(sizeof(float) * n);
        s->map_cap = s->map ? n : 0;
        if (!s->map) return cli_error(s->cmd, "out of memory for a %dx%d map", orig->width, orig->height);
    }
    if (ds_anomaly_map(patch, in->grid_h, in->grid_w, in->prep.size, 4.0f, orig->width, orig->height, s->map) != DS_OK)
        return cli_lib_error(s->cmd);
    char *stem = map_stem(s, path, index);
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
    g_free(stem);
    return rc;
}

static int score_sink(void *ud, int index, const char *path, const ds_image *original, const float *feats,
                      const float *cls, const cli_feature_timing *timing) {
    score_state *s = ud;
    const ds_model_info *in = s->info;
    int64_t N = (int64_t)in->grid_h * in->grid_w;
    double t0 = cli_now_s();
    int n = ds_model_n_scorers(s->model);
    float scores[DS_MODEL_MAX_SCORERS];
    bool have_patch = s->map_k >= 0;
    for (int k = 0; k < n; k++) {
        const ds_scorer *sc = ds_model_scorer(s->model, k);
        if (ds_scorer_score(sc, feats, N, s->threads, &scores[k], k == s->map_k ? s->patch : NULL) != DS_OK)
            return cli_error(s->cmd, "'%s': %s", path, ds_last_error());
    }
    double ms = timing ? timing->prep_ms + timing->backbone_ms : 0;
    ms += 1e3 * (cli_now_s() - t0);
    int label = s->list && s->list->labels ? s->list->labels[index] : -1;
    GString *o = s->out;
    if (s->json) {
        g_string_append(o, s->n_rows ? ",\n  {\"path\": " : "\n  {\"path\": ");
        json_string(o, path);
        for (int k = 0; k < n; k++) {
            const char *kn = ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(s->model, k)));
            const ds_scorer_calibration *c = ds_model_calibration(s->model, k);
            g_string_append_printf(o, ", \"%s\": %.9g", kn, scores[k]);
            if (c->has_threshold) g_string_append_printf(o, ", \"%s_anomalous\": %d", kn, scores[k] >= c->threshold);
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
    if (s->maps_dir && have_patch && original) return write_maps(s, index, path, original, s->patch);
    return CLI_OK;
}

/* Writes text to path atomically (temp + rename), or to stdout for NULL. */
static int write_text(const char *cmd, const char *path, const GString *text) {
    if (!path) {
        fwrite(text->str, 1, text->len, stdout);
        return CLI_OK;
    }
    char *tmp = g_strdup_printf("%s.tmp.%d", path, (int)getpid());
    FILE *fp = fopen(tmp, "wb");
    bool ok = fp && fwrite(text->str, 1, text->len, fp) == text->len;
    if (fp && fclose(fp) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    int rc = ok ? CLI_OK : cli_error(cmd, "cannot write '%s': %s", path, strerror(errno));
    if (!ok) remove(tmp);
    g_free(tmp);
    return rc;
}

int cmd_score(int argc, char **argv) {
    const char *cmd = "score", *model_path = NULL, *out_path = NULL, *maps_dir = NULL, *features_path = NULL,
               *backbone_override = NULL;
    long batch = 1, threads = 0;
    double map_vmax = 0;
    bool force = false;
    cli_image_opts io;
    cli_image_opts_init(&io);
    const char **inputs = calloc((size_t)argc, sizeof(char *));
    int n_inputs = 0, rc = CLI_USAGE;
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    ds_image_list *list = NULL;
    float *feats = NULL;
    score_state s = {.cmd = cmd};
    if (!inputs) return cli_error(cmd, "out of memory");
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
        if (a[0] != '-' || a[1] != '-') {
            inputs[n_inputs++] = a;
            continue;
        }
        if (!v) {
            cli_error(cmd, "unknown option or missing value: '%s' (see --help)", a);
            goto done;
        }
        i++;
        bool ok = true;
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--maps")) maps_dir = v;
        else if (!strcmp(a, "--features")) features_path = v;
        else if (!strcmp(a, "--backbone") || !strcmp(a, "--weights")) backbone_override = v;
        else if (!strcmp(a, "--batch")) ok = cli_parse_int(v, 1, 1024, &batch);
        else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, 0, 1024, &threads);
        else if (!strcmp(a, "--map-vmax")) ok = cli_parse_double(v, 1e-12, 1e12, &map_vmax);
        else {
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            goto done;
        }
        if (!ok) {
            cli_error(cmd, "bad value '%s' for %s (see --help)", v, a);
            goto done;
        }
    }
    if (!model_path || (n_inputs == 0 && !features_path)) {
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
    if (n_inputs > 0 && ds_image_list_expand(inputs, n_inputs, io.recursive, &list) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    if (maps_dir && features_path) {
        rc = cli_error(cmd, "--maps needs the images themselves, not --features");
        goto done;
    }
    if (maps_dir && g_mkdir_with_parents(maps_dir, 0755) != 0) {
        rc = cli_error(cmd, "cannot create '%s': %s", maps_dir, strerror(errno));
        goto done;
    }
    s.model = model;
    s.info = in;
    s.list = list;
    s.maps_dir = maps_dir;
    s.threads = (int)threads;
    s.json = out_path && g_str_has_suffix(out_path, ".json");
    s.out = g_string_new(NULL);
    s.stems = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    s.patch = malloc(sizeof(float) * (size_t)in->grid_h * in->grid_w);
    s.map_k = -1;
    for (int k = 0; k < ds_model_n_scorers(model) && s.map_k < 0; k++)
        if (ds_scorer_has_patch_scores(ds_model_scorer(model, k))) s.map_k = k;
    if (s.map_k >= 0 && ds_model_calibration(model, s.map_k)->map_vmax > 0)
        s.map_vmax = ds_model_calibration(model, s.map_k)->map_vmax;
    if (map_vmax > 0) s.map_vmax = (float)map_vmax;
    if (s.json) {
        g_string_append(s.out, "{\"model\": ");
        json_string(s.out, model_path);
        g_string_append_printf(s.out, ", \"map_vmax\": %.9g, \"images\": [", s.map_vmax);
    } else {
        g_string_append(s.out, "path");
        for (int k = 0; k < ds_model_n_scorers(model); k++) {
            const char *kn = ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(model, k)));
            g_string_append_printf(s.out, ",%s", kn);
            if (ds_model_calibration(model, k)->has_threshold) g_string_append_printf(s.out, ",%s_anomalous", kn);
        }
        if (list && list->labels) g_string_append(s.out, ",label");
        g_string_append(s.out, ",ms\n");
    }
    int n_skipped = 0;
    if (features_path) {
        int nd;
        int64_t shape[DS_NPY_MAX_DIMS];
        if (ds_npy_read_f32(features_path, &feats, &nd, shape) != DS_OK) {
            rc = cli_lib_error(cmd);
            goto done;
        }
        int64_t N = (int64_t)in->grid_h * in->grid_w;
        if (nd != 3 || shape[1] != N || shape[2] != in->dim) {
            rc = cli_error(cmd, "'%s' has the wrong shape: the model expects [n, %lld, %d]", features_path, (long long)N,
                           in->dim);
            goto done;
        }
        if (list && list->n != shape[0]) {
            rc = cli_error(cmd, "'%s' has %lld rows but %d images were given", features_path, (long long)shape[0], list->n);
            goto done;
        }
        for (int64_t i = 0; i < shape[0] && rc == CLI_ERROR; i++) {
            char name[32];
            snprintf(name, sizeof name, "row_%lld", (long long)i);
            int r = score_sink(&s, (int)i, list ? list->paths[i] : name, NULL, feats + (size_t)i * N * in->dim, NULL, NULL);
            if (r != CLI_OK) {
                rc = r;
                goto done;
            }
        }
    } else {
        if (!list || list->n == 0) {
            rc = cli_error(cmd, "no images found in the inputs");
            goto done;
        }
        const char *bpath = backbone_override ? backbone_override : in->backbone_file;
        char sha[65];
        if (ds_file_sha256(bpath, sha) != DS_OK) {
            rc = cli_error(cmd, "backbone of the model: %s (use --backbone to point to the weights file)", ds_last_error());
            goto done;
        }
        bool sha_differs = strcmp(sha, in->backbone_sha256) != 0;
        if (sha_differs && !force) {
            rc = cli_error(cmd, "backbone '%s' (sha256 %.12s...) is not the one the model was fitted with (sha256 %.12s..., '%s'); use --force-backbone to override",
                           bpath, sha, in->backbone_sha256, in->backbone_file);
            goto done;
        }
        if (ds_backbone_load(bpath, &(ds_backbone_params){.n_threads = (int)threads}, &bb) != DS_OK) {
            rc = cli_lib_error(cmd);
            goto done;
        }
        if (strcmp(ds_backbone_describe(bb), in->backbone_arch) != 0) {
            rc = cli_error(cmd, "backbone '%s' is a %s, the model was fitted on a %s", bpath, ds_backbone_describe(bb),
                           in->backbone_arch);
            goto done;
        }
        if (sha_differs)
            fprintf(stderr, "dinoscope score: warning: backbone sha256 differs from the model's (--force-backbone)\n");
        cli_feature_opts fo = {.size = in->prep.size, .n_layers = in->n_layers, .batch = (int)batch,
                               .keep_original = maps_dir != NULL};
        int r = cli_feature_pass(cmd, bb, &io, &fo, list, score_sink, &s, &n_skipped);
        if (r != CLI_OK) {
            rc = r;
            goto done;
        }
    }
    if (s.json) g_string_append(s.out, "\n]}\n");
    rc = write_text(cmd, out_path, s.out);
    if (rc == CLI_OK && out_path) fprintf(stderr, "dinoscope score: wrote %d rows to %s\n", s.n_rows, out_path);
    if (rc == CLI_OK && n_skipped) rc = CLI_SKIPPED;
done:
    if (s.out) g_string_free(s.out, TRUE);
    if (s.stems) g_hash_table_destroy(s.stems);
    free(s.patch);
    free(s.map);
    free(feats);
    ds_backbone_free(bb);
    ds_model_free(model);
    ds_image_list_free(list);
    free(inputs);
    return rc;
}
