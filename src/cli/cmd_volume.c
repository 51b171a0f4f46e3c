/* dinoscope volume fit --backbone W --out MODEL [options] VOLUMES...
 * dinoscope volume score --model MODEL --out DIR [options] VOLUME
 *
 * Volumes (NIfTI files, DICOM series folders) cut into slices along --axis,
 * windowed, optionally 2.5D (--context 1: neighbouring slices as the three
 * channels); fit runs the library fit (ds_model_fit) on the slices of
 * normal volumes, score runs ds_volume_score and writes the per-slice
 * table, the volume score, the map as NIfTI in the input's space and a
 * mosaic of the most anomalous slices. */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "dinoscope/volume.h"

typedef struct {
    const char *backbone, *out, *model, *series;
    int axis, context; /* indices into "i|j|k" and "0|1" */
    double lo_pct, hi_pct;
    bool force_backbone;
    long mosaic;
    double map_vmax;
} volume_args;

static const char *set_pct(void *args, const char *v) {
    volume_args *a = args;
    double lo, hi;
    char extra;
    if (sscanf(v, "%lf,%lf%c", &lo, &hi, &extra) != 2 || !(lo >= 0 && lo < hi && hi <= 100))
        return "expected LO,HI with 0 <= LO < HI <= 100";
    a->lo_pct = lo, a->hi_pct = hi;
    return NULL;
}

static const cli_opt volume_opts[] = {
    {{"--backbone", "--weights"}, "W",
     "fit: the backbone weights (required); score: weights to use instead of the path stored in the model",
     CLI_STR, offsetof(volume_args, backbone), 0, 0, NULL, NULL, NULL, 0},
    CLI_STR_OPT(volume_args, out, "--out", "PATH",
                "fit: the model file; score: a folder for slices.csv, volume.json, map.nii.gz, mosaic.png",
                CLI_REQUIRED),
    CLI_STR_OPT(volume_args, model, "--model", "MODEL", "score: the model (from volume fit)", 0),
    CLI_CHOICE_OPT(volume_args, axis, "--axis", "i|j|k",
                   "slices are the planes across this voxel axis (k: NIfTI's third axis, a DICOM series' slices)"),
    CLI_CHOICE_OPT(volume_args, context, "--context", "0|1",
                   "1: 2.5D, slices k-1, k, k+1 as R, G, B (score with the context the model was fitted with)"),
    {{"--window-pct"}, "LO,HI", "without --window/--window-preset: the window is these percentiles of the volume",
     CLI_FN, 0, 0, 0, NULL, set_pct, "0.5,99.5", 0},
    CLI_STR_OPT(volume_args, series, "--series", "UID", "DICOM folders: the Series Instance UID to read", 0),
    CLI_FLAG_OPT(volume_args, force_backbone, "--force-backbone",
                 "score: accept a backbone whose SHA-256 differs from the model's"),
    {{"--mosaic-slices"}, "N", "score: slices in mosaic.png (the N highest scores)", CLI_INT,
     offsetof(volume_args, mosaic), 1, 1024, NULL, NULL, "9", 0},
    {{"--map-vmax"}, "X", "score: top of the colour scale of the mosaic", CLI_REAL, offsetof(volume_args, map_vmax),
     1e-12, 1e12, NULL, NULL, "the model's, 2 x the 99th percentile of held-out normal patch scores", 0},
};

static const cli_spec volume_spec = {
    "volume", "fit|score [options] VOLUMES...",
    "  volume fit --backbone W --out MODEL VOLUMES...: fits on every slice of NORMAL volumes.\n"
    "  volume score --model MODEL --out DIR VOLUME: scores each slice; writes DIR/slices.csv (one row per\n"
    "  slice), DIR/volume.json (volume score = the max over slices), DIR/map.nii.gz (float32 anomaly map\n"
    "  with the input's affine, to overlay in 3D Slicer / ITK-SNAP) and DIR/mosaic.png; prints the volume\n"
    "  score. A volume is a NIfTI-1 file (.nii, .nii.gz) or a folder of DICOM slices (one series, ordered\n"
    "  by Image Position). Give score the --axis, --context and window the model was fitted with.\n",
    "fit|score VOLUMES", true};

typedef struct {
    volume_args a;
    cli_fit_opts fit;
    cli_backbone_opts bo;
    cli_model_opts run;
    cli_image_opts io;
} volume_cmd;

/* The volume at path, cut along the axis: a NIfTI file or a DICOM folder. */
static int load_sliced(const char *cmd, const volume_cmd *c, const char *path, ds_volume **orig, ds_volume **sliced) {
    struct stat sb;
    bool dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!dir && c->a.series) return cli_error(cmd, "--series is for DICOM folders; '%s' is not a folder", path);
    ds_status st = dir ? ds_volume_load_dicom_series(path, c->a.series, orig) : ds_volume_load(path, orig);
    if (st != DS_OK) return cli_lib_error(cmd);
    if (ds_volume_reslice(*orig, c->a.axis, sliced) != DS_OK) {
        ds_volume_free(*orig);
        *orig = NULL;
        return cli_lib_error(cmd);
    }
    return CLI_OK;
}

static ds_status window_of(const volume_cmd *c, const ds_volume *v, double *lo, double *hi) {
    ds_image_load_params lp = c->io.load;
    lp.window_lo_pct = c->a.lo_pct, lp.window_hi_pct = c->a.hi_pct;
    return ds_volume_window_params(v, &lp, lo, hi);
}

/* ---- volume fit -------------------------------------------------------- */

static int volume_fit(const char *cmd, volume_cmd *c, const cli_positional *pos) {
    if (!c->a.backbone) return cli_error(cmd, "volume fit needs --backbone W");
    if (c->a.model || c->a.force_backbone || c->a.mosaic || c->a.map_vmax > 0)
        return cli_error(cmd, "--model, --force-backbone, --mosaic-slices and --map-vmax are for volume score");
    cli_stage_progress prog = {0};
    cli_fit_report rep = {&prog, 0};
    ds_fit_params fp;
    if (cli_fit_params(cmd, &c->fit, c->run.threads, &rep, &fp) != CLI_OK) return CLI_ERROR;
    ds_backbone *bb = NULL;
    ds_model *model = NULL;
    ds_image **imgs = NULL;
    int n = 0, cap = 0, rc = CLI_OK;
    ds_backbone_params bp = cli_backbone_params(&c->bo, c->run.threads);
    if (ds_backbone_load(c->a.backbone, &bp, &bb) != DS_OK) return cli_lib_error(cmd);
    for (int i = 1; i < pos->n && rc == CLI_OK; i++) {
        ds_volume *v = NULL, *s = NULL;
        double lo, hi;
        if ((rc = load_sliced(cmd, c, pos->v[i], &v, &s)) != CLI_OK) break;
        if (window_of(c, s, &lo, &hi) != DS_OK) rc = cli_error(cmd, "'%s': %s", pos->v[i], ds_last_error());
        if (rc == CLI_OK && n + s->nz > cap) {
            cap = 2 * (n + s->nz);
            ds_image **ni = realloc(imgs, sizeof *imgs * (size_t)cap);
            if (ni) imgs = ni;
            else rc = cli_error(cmd, "out of memory for %d slices", n + s->nz);
        }
        for (int k = 0; k < s->nz && rc == CLI_OK; k++, n++)
            if (ds_volume_slice(s, k, c->a.context, lo, hi, &imgs[n]) != DS_OK) rc = cli_lib_error(cmd);
        if (rc == CLI_OK)
            fprintf(stderr, "dinoscope volume: %s: %d slices of %dx%d (window [%g, %g])\n", pos->v[i], s->nz, s->nx,
                    s->ny, lo, hi);
        ds_volume_free(v);
        ds_volume_free(s);
    }
    if (rc == CLI_OK) {
        ds_pipeline_params pp = ds_pipeline_defaults();
        pp.size = (int)c->fit.size;
        pp.n_layers = c->fit.layers ? (int)c->fit.layers : ds_backbone_default_layers(bb);
        pp.batch = (int)c->run.batch;
        pp.prep = c->io.prep;
        pp.progress = cli_on_stage_progress;
        pp.progress_user = &prog;
        int gh, gw, D, size = pp.size ? pp.size : ds_backbone_native_size(bb);
        if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) rc = cli_error(cmd, "--size %d: %s", size, ds_last_error());
        rep.N = (size_t)gh * gw;
        if (rc == CLI_OK)
            fprintf(stderr, "dinoscope volume: fitting on %d slices (%lld held out for thresholds), context %d\n", n,
                    (long long)ds_fit_n_held_out(&fp, n), c->a.context);
        if (rc == CLI_OK && (ds_model_fit(bb, &pp, &fp, NULL, (const ds_image *const *)imgs, n, &model, NULL) != DS_OK ||
                             ds_model_write(model, c->a.out) != DS_OK))
            rc = cli_lib_error(cmd);
        cli_stage_progress_end(&prog);
        if (rc == CLI_OK) fprintf(stderr, "dinoscope volume: wrote %s\n", c->a.out);
    }
    for (int i = 0; i < n; i++) ds_image_free(imgs[i]);
    free(imgs);
    ds_model_free(model);
    ds_backbone_free(bb);
    return rc;
}

/* ---- volume score ------------------------------------------------------ */

static const char *scorer_name(const ds_model *m, int k) {
    return ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(m, k)));
}

static char *join(const char *dir, const char *name) { return g_strdup_printf("%s/%s", dir, name); }

/* slices.csv: slice, then each scorer's score (and 0/1 against its threshold) */
static GString *slice_table(const ds_model *m, const float *scores, int nz) {
    const int ns = ds_model_n_scorers(m);
    GString *o = g_string_new("slice");
    for (int s = 0; s < ns; s++) {
        g_string_append_printf(o, ",%s", scorer_name(m, s));
        if (ds_model_calibration(m, s)->has_threshold) g_string_append_printf(o, ",%s_anomalous", scorer_name(m, s));
    }
    g_string_append_c(o, '\n');
    for (int k = 0; k < nz; k++) {
        g_string_append_printf(o, "%d", k);
        for (int s = 0; s < ns; s++) {
            const ds_scorer_calibration *cal = ds_model_calibration(m, s);
            float x = scores[(size_t)k * ns + s];
            g_string_append_printf(o, ",%.9g", x);
            if (cal->has_threshold) g_string_append_printf(o, ",%d", x >= cal->threshold);
        }
        g_string_append_c(o, '\n');
    }
    return o;
}

/* volume.json: the volume score of each scorer (max over slices) and its slice */
static GString *volume_json(const volume_cmd *c, const char *path, const ds_model *m, const ds_volume *s,
                            const float *scores, const float *vol, double lo, double hi) {
    const int ns = ds_model_n_scorers(m);
    GString *o = g_string_new("{\"volume\": ");
    cli_json_string(o, path);
    g_string_append_printf(o, ", \"axis\": \"%c\", \"context\": %d, \"n_slices\": %d, \"slice_size\": [%d, %d], "
                              "\"window\": [%.9g, %.9g], \"scores\": {",
                           "ijk"[c->a.axis], c->a.context, s->nz, s->nx, s->ny, lo, hi);
    for (int k = 0; k < ns; k++) {
        int arg = 0;
        for (int z = 1; z < s->nz; z++)
            if (scores[(size_t)z * ns + k] > scores[(size_t)arg * ns + k]) arg = z;
        const ds_scorer_calibration *cal = ds_model_calibration(m, k);
        g_string_append_printf(o, "%s\"%s\": {\"score\": %.9g, \"slice\": %d", k ? ", " : "", scorer_name(m, k),
                               vol[k], arg);
        if (cal->has_threshold)
            g_string_append_printf(o, ", \"threshold\": %.9g, \"anomalous\": %s", cal->threshold,
                                   vol[k] >= cal->threshold ? "true" : "false");
        g_string_append_c(o, '}');
    }
    g_string_append(o, "}}\n");
    return o;
}

/* map.nii.gz (in the input's layout and affine) and mosaic.png */
static int write_map(const char *cmd, const volume_cmd *c, const ds_model *m, const ds_volume *v, const ds_volume *s,
                     const float *map, const float *scores, double lo, double hi) {
    const int ns = ds_model_n_scorers(m), mk = ds_model_map_scorer(m);
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    float *out = malloc(sizeof(float) * n), *ks = malloc(sizeof(float) * (size_t)s->nz);
    char *nii = join(c->a.out, "map.nii.gz"), *png = join(c->a.out, "mosaic.png");
    int rc = out && ks ? CLI_OK : cli_error(cmd, "out of memory for the map (%zu voxels)", n);
    float vmax = c->a.map_vmax > 0 ? (float)c->a.map_vmax : ds_model_calibration(m, mk)->map_vmax;
    if (!(vmax > 0)) /* no calibration: this volume's maximum (not comparable across volumes) */
        for (size_t i = 0; i < n; i++) vmax = map[i] > vmax ? map[i] : vmax;
    if (!(vmax > 0)) vmax = 1e-6f;
    ds_image *mosaic = NULL;
    for (int z = 0; rc == CLI_OK && z < s->nz; z++) ks[z] = scores[(size_t)z * ns + mk];
    if (rc == CLI_OK && (ds_volume_unslice(map, v, c->a.axis, out) != DS_OK ||
                         ds_volume_save_nifti(nii, out, v->nx, v->ny, v->nz, v->affine) != DS_OK ||
                         ds_volume_mosaic(s, map, ks, c->a.mosaic, lo, hi, vmax, NULL, &mosaic) != DS_OK ||
                         ds_image_save_png(png, mosaic) != DS_OK))
        rc = cli_lib_error(cmd);
    ds_image_free(mosaic);
    free(out);
    free(ks);
    g_free(nii);
    g_free(png);
    return rc;
}

static int write_text(const char *cmd, const char *dir, const char *name, GString *text) {
    char *p = join(dir, name);
    int rc = cli_write_text(cmd, p, text->str, text->len);
    g_free(p);
    g_string_free(text, TRUE);
    return rc;
}

static int volume_score(const char *cmd, volume_cmd *c, const cli_positional *pos) {
    if (!c->a.model) return cli_error(cmd, "volume score needs --model MODEL");
    if (pos->n != 2) return cli_error(cmd, "volume score takes one volume, not %d", pos->n - 1);
    cli_fit_opts f0;
    cli_fit_opts_init(&f0);
    if (memcmp(&f0, &c->fit, sizeof f0) != 0 || c->bo.preset || c->bo.dtype)
        return cli_error(cmd, "the scorer and backbone options (--scorer, --size, --preset, ...) are for volume fit; "
                              "score uses the model's");
    if (!c->a.mosaic) c->a.mosaic = 9;
    cli_model_opts mo = {.model = c->a.model, .backbone = c->a.backbone, .force_backbone = c->a.force_backbone,
                         .batch = c->run.batch, .threads = c->run.threads};
    ds_model *m = NULL;
    ds_backbone *bb = NULL;
    ds_volume *v = NULL, *s = NULL;
    float *scores = NULL, *map = NULL;
    double lo, hi;
    const char *path = pos->v[1];
    int rc = cli_open_model(cmd, &mo, &c->io, true, &m, &bb);
    if (rc == CLI_OK) rc = load_sliced(cmd, c, path, &v, &s);
    if (rc == CLI_OK && window_of(c, s, &lo, &hi) != DS_OK) rc = cli_error(cmd, "'%s': %s", path, ds_last_error());
    const int ns = m ? ds_model_n_scorers(m) : 0, mk = m ? ds_model_map_scorer(m) : -1;
    float vol[DS_MODEL_MAX_SCORERS];
    if (rc == CLI_OK) {
        scores = malloc(sizeof(float) * (size_t)s->nz * ns);
        map = mk >= 0 ? malloc(sizeof(float) * (size_t)s->nx * s->ny * s->nz) : NULL;
        if (!scores || (mk >= 0 && !map)) rc = cli_error(cmd, "out of memory for %d slices", s->nz);
    }
    if (rc == CLI_OK && ds_volume_score(m, bb, s, c->a.context, lo, hi, (int)c->run.batch, (int)c->run.threads, scores,
                                        map, vol) != DS_OK)
        rc = cli_error(cmd, "'%s': %s", path, ds_last_error());
    if (rc == CLI_OK && !cli_mkdir_p(cmd, c->a.out)) rc = CLI_ERROR;
    if (rc == CLI_OK) rc = write_text(cmd, c->a.out, "slices.csv", slice_table(m, scores, s->nz));
    if (rc == CLI_OK) rc = write_text(cmd, c->a.out, "volume.json", volume_json(c, path, m, s, scores, vol, lo, hi));
    if (rc == CLI_OK && mk >= 0) rc = write_map(cmd, c, m, v, s, map, scores, lo, hi);
    else if (rc == CLI_OK) fprintf(stderr, "dinoscope volume: the model has no scorer with maps: no map.nii.gz, no mosaic\n");
    if (rc == CLI_OK) {
        printf("%s", path);
        for (int k = 0; k < ns; k++) printf(" %s=%.6g", scorer_name(m, k), vol[k]);
        printf("\n");
        fprintf(stderr, "dinoscope volume: %d slices scored; wrote %s/\n", s->nz, c->a.out);
    }
    free(scores);
    free(map);
    ds_volume_free(v);
    ds_volume_free(s);
    cli_close_model(&m, &bb);
    return rc;
}

int cmd_volume(int argc, char **argv) {
    const char *cmd = "volume";
    volume_cmd c;
    memset(&c, 0, sizeof c);
    c.a.axis = 2, c.a.lo_pct = 0.5, c.a.hi_pct = 99.5;
    c.run.batch = 8;
    cli_fit_opts_init(&c.fit);
    cli_image_opts_init(&c.io);
    cli_group groups[] = {{"volumes", volume_opts, CLI_N(volume_opts), &c.a},
                          cli_window_group(&c.io),
                          cli_fit_group(&c.fit),
                          cli_backbone_group(&c.bo),
                          cli_run_group(&c.run),
                          cli_prep_group(&c.io, "preprocessing (fit; score uses the model's)")};
    cli_positional pos;
    int rc = cli_parse(&volume_spec, groups, CLI_N(groups), argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    const char *mode = pos.v[0];
    if (!strcmp(mode, "fit") && pos.n >= 2) rc = volume_fit(cmd, &c, &pos);
    else if (!strcmp(mode, "score") && pos.n >= 2) rc = volume_score(cmd, &c, &pos);
    else if (!strcmp(mode, "fit") || !strcmp(mode, "score")) rc = cli_error(cmd, "volume %s: give the volumes", mode);
    else rc = cli_error(cmd, "expected 'volume fit' or 'volume score', not 'volume %s'", mode);
    free(pos.v);
    return rc;
}
