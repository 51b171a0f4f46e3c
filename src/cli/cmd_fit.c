/* dinoscope fit --backbone W --out MODEL [options] IMAGES...|DIR|CSV
 *
 * Steps: gather the features of the normal images (backbone or --features),
 * hold out every k-th image for the thresholds, fit each scorer, calibrate
 * it on the held-out images, save the model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/eval.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "dinoscope/weights.h"

typedef struct {
    const char *backbone, *out, *features;
} fit_args;

static const cli_opt fit_opts[] = {
    {{"--backbone", "--weights"}, "W", "backbone weights (safetensors or .pth)", CLI_STR, offsetof(fit_args, backbone),
     0, 0, NULL, NULL, NULL, CLI_REQUIRED},
    CLI_STR_OPT(fit_args, out, "--out", "MODEL", "model file to write", CLI_REQUIRED),
    CLI_STR_OPT(fit_args, features, "--features", "FEATS.npy",
                "features from `dinoscope extract` (rows = images) instead of running the backbone (the backbone "
                "file is still hashed and recorded)", 0),
};

static const cli_spec fit_spec = {
    "fit", "--backbone W --out MODEL [options] IMAGES...|DIR|CSV",
    "  Fits anomaly scorers on NORMAL images (with a labels.csv: rows with split=train, label=0).\n",
    "IMAGES", false};

/* ---- step 1: the features of the normal images -------------------------- */

typedef struct {
    float *feats; /* [n, N, D] */
    int64_t n;
    size_t row;   /* N * D */
} fit_features;

static int fit_sink(void *ud, const ds_pipeline_item *it) {
    fit_features *s = ud;
    memcpy(s->feats + (size_t)s->n * s->row, it->feats, sizeof(float) * s->row);
    s->n++;
    return 0;
}

static int features_from_npy(const char *cmd, const char *path, size_t N, int D, long size, fit_features *fs) {
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(path, &fs->feats, &nd, shape) != DS_OK) return cli_lib_error(cmd);
    if (nd != 3 || shape[1] != (int64_t)N || shape[2] != D || shape[0] < 1)
        return cli_error(cmd, "'%s' has the wrong shape: expected [n, %zu, %d] for this backbone at --size %ld", path, N, D,
                         size);
    fs->n = shape[0];
    return CLI_OK;
}

/* labels.csv inputs: fit on the normal training rows only */
static void keep_normal_training(ds_image_list *list) {
    int keep = 0;
    for (int i = 0; i < list->n; i++) {
        bool train = !list->splits[i] || !strcmp(list->splits[i], "train");
        if (train && list->labels[i] <= 0) {
            list->paths[keep] = list->paths[i], list->labels[keep] = list->labels[i];
            list->splits[keep] = list->splits[i], list->masks[keep] = list->masks[i];
            keep++;
        } else {
            free(list->paths[i]);
            free(list->splits[i]);
            free(list->masks[i]);
        }
    }
    list->n = keep;
}

static int features_from_images(const char *cmd, ds_backbone *bb, const cli_positional *pos, cli_image_opts *io,
                                const cli_feature_opts *fo, fit_features *fs, int *n_skipped) {
    ds_image_list *list = NULL;
    int rc = CLI_ERROR;
    if (ds_image_list_expand(pos->v, pos->n, io->recursive, &list) != DS_OK) return cli_lib_error(cmd);
    keep_normal_training(list);
    if (list->n == 0) {
        rc = cli_error(cmd, "no normal training images in the inputs");
    } else if (!(fs->feats = malloc(sizeof(float) * fs->row * (size_t)list->n))) {
        rc = cli_error(cmd, "out of memory for %d images of %zu floats of features", list->n, fs->row);
    } else {
        rc = cli_feature_pass(cmd, bb, io, fo, list, fit_sink, fs, n_skipped);
        if (rc == CLI_OK && fs->n == 0) rc = cli_error(cmd, "no image could be read");
    }
    ds_image_list_free(list);
    return rc;
}

/* ---- step 2: fit and calibrate each scorer (ds_model_fit_features) ------- */

/* ---- step 3: the model file ------------------------------------------------ */

static int model_info(const char *cmd, const fit_args *a, const cli_fit_opts *fo, ds_backbone *bb,
                      const cli_image_opts *io, int size, ds_model_info *info) {
    memset(info, 0, sizeof *info);
    if (ds_file_sha256(a->backbone, info->backbone_sha256) != DS_OK) return cli_lib_error(cmd);
    snprintf(info->backbone_file, sizeof info->backbone_file, "%s", a->backbone);
    snprintf(info->backbone_arch, sizeof info->backbone_arch, "%s", ds_backbone_describe(bb));
    info->prep = io->prep;
    info->prep.size = size;
    info->n_layers = (int)fo->layers;
    if (ds_backbone_grid(bb, size, size, &info->grid_h, &info->grid_w, &info->dim) != DS_OK) return cli_lib_error(cmd);
    info->map_sigma = DS_ANOMALY_MAP_SIGMA;
    return CLI_OK;
}

int cmd_fit(int argc, char **argv) {
    const char *cmd = "fit";
    fit_args a = {0};
    cli_fit_opts f;
    cli_fit_opts_init(&f);
    cli_backbone_cmd c;
    const cli_group own[2] = {{"options", fit_opts, CLI_N(fit_opts), &a}, cli_fit_group(&f)};
    int rc = cli_backbone_cmd_parse(&fit_spec, own, 2, &c, argc, argv);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    cli_stage_progress prog = {0};
    cli_fit_report rep = {&prog, 0};
    ds_fit_params fp;
    if (cli_fit_params(cmd, &f, c.run.threads, &rep, &fp) != CLI_OK) {
        free(c.pos.v);
        return CLI_ERROR;
    }
    if (c.pos.n == 0 && !a.features) {
        free(c.pos.v);
        return cli_error(cmd, "give the normal images (files, folders or a labels.csv) or --features");
    }
    ds_backbone *bb = NULL;
    ds_model *model = NULL;
    fit_features fs = {0};
    int n_skipped = 0, gh, gw, D;
    rc = CLI_ERROR;
    ds_backbone_params bp = cli_backbone_params(&c.bo, c.run.threads);
    if (ds_backbone_load(a.backbone, &bp, &bb) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    if (!f.layers) f.layers = ds_backbone_default_layers(bb);
    int size = f.size ? (int)f.size : ds_backbone_native_size(bb);
    if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) {
        rc = cli_error(cmd, "--size %d: %s", size, ds_last_error());
        goto done;
    }
    size_t N = (size_t)gh * gw;
    fs.row = N * (size_t)D;
    cli_feature_opts fo = {.size = size, .n_layers = (int)f.layers, .batch = (int)c.run.batch};
    rc = a.features ? features_from_npy(cmd, a.features, N, D, size, &fs)
                    : features_from_images(cmd, bb, &c.pos, &c.io, &fo, &fs, &n_skipped);
    ds_model_info info;
    if (rc != CLI_OK || (rc = model_info(cmd, &a, &f, bb, &c.io, size, &info)) != CLI_OK) goto done;
    rep.N = N;
    int64_t n_val = ds_fit_n_held_out(&fp, fs.n);
    fprintf(stderr, "dinoscope fit: %lld training images, %lld held out for thresholds, %zu patches of %d dims each\n",
            (long long)(fs.n - n_val), (long long)n_val, N, D);
    if (ds_model_fit_features(&info, &fp, fs.feats, fs.n, &model) != DS_OK || ds_model_write(model, a.out) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    fprintf(stderr, "dinoscope fit: wrote %s\n", a.out);
    if (n_skipped) rc = CLI_SKIPPED;
done:
    ds_model_free(model);
    free(fs.feats);
    ds_backbone_free(bb);
    free(c.pos.v);
    return rc;
}
