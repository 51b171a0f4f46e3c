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
#include "dinoscope/shard.h"
#include "dinoscope/weights.h"

typedef struct {
    const char *backbone, *out, *features, *scorer, *shard, *shard_list;
    double shard_keep;
    long size, layers, knn_k, max_comp, patch_k, seed;
    long flow_dim, flow_blocks, flow_pos_dim, flow_hidden, flow_epochs, flow_epoch_patches, flow_batch, flow_patience;
    double flow_lr;
    double coreset, val_split, fpr;
    int metric, reduce; /* indices into "l2|cosine" and "max|top1pct": the ds_metric / ds_reduce values */
    bool per_patch;
} fit_args;

static const cli_opt fit_opts[] = {
    {{"--backbone", "--weights"}, "W", "backbone weights (safetensors or .pth)", CLI_STR, offsetof(fit_args, backbone),
     0, 0, NULL, NULL, NULL, CLI_REQUIRED},
    CLI_STR_OPT(fit_args, out, "--out", "MODEL", "model file to write", CLI_REQUIRED),
    CLI_STR_OPT(fit_args, scorer, "--scorer", "LIST",
                "comma list of knn, gaussian, patchbank, padim, flow, or all (= knn,gaussian,patchbank)", 0),
    {{"--size"}, "S", "network input S x S", CLI_INT, offsetof(fit_args, size), 1, 8192, NULL, NULL,
     "518 DINOv2, 224 CNNs", 0},
    {{"--layers"}, "N", "mean of the last N blocks, each through the final norm", CLI_INT, offsetof(fit_args, layers), 1,
     1000, NULL, NULL, "4, or the --preset's", 0},
    CLI_STR_OPT(fit_args, features, "--features", "FEATS.npy",
                "features from `dinoscope extract` (rows = images) instead of running the backbone (the backbone "
                "file is still hashed and recorded)", 0),
    CLI_FLAG_OPT(fit_args, per_patch, "--gaussian-per-patch",
                 "also fit padim (PaDiM: a Gaussian per patch position over 100 random channels; maps; "
                 "N*100*100*4 bytes, 55 MB for DINOv2 at 518)"),
    CLI_INT_OPT(fit_args, knn_k, "--knn-k", "K", "knn: neighbours (the K-th one's distance is the score)", 1, 100000),
    CLI_INT_OPT(fit_args, max_comp, "--max-components", "C", "gaussian: PCA components at most", 1, 100000),
    CLI_REAL_OPT(fit_args, coreset, "--coreset", "R", "patchbank: coreset ratio (1 = keep every patch)", 1e-9, 1.0),
    CLI_INT_OPT(fit_args, patch_k, "--patch-k", "K", "patchbank: the K-th nearest bank patch scores a patch", 1, 100000),
    CLI_CHOICE_OPT(fit_args, metric, "--metric", "l2|cosine", "patchbank: distance"),
    CLI_CHOICE_OPT(fit_args, reduce, "--reduce", "max|top1pct", "patchbank/padim: image score from the patch scores"),
    CLI_INT_OPT(fit_args, seed, "--seed", "N", "seed of the random choices (coreset start, padim channels)", 0,
                1L << 62),
    CLI_INT_OPT(fit_args, flow_dim, "--flow-dim", "N", "flow: PCA-whitened dimensions (0 = D)", 0, 100000),
    CLI_INT_OPT(fit_args, flow_blocks, "--flow-blocks", "N", "flow: coupling blocks", 1, 64),
    CLI_INT_OPT(fit_args, flow_pos_dim, "--flow-pos-dim", "N", "flow: positional-encoding channels (a multiple of 4)", 4, 1024),
    CLI_INT_OPT(fit_args, flow_hidden, "--flow-hidden", "N", "flow: subnet hidden units (0 = 2*(d/2 + P))", 0, 100000),
    CLI_INT_OPT(fit_args, flow_epochs, "--flow-epochs", "N", "flow: maximum epochs", 1, 100000),
    CLI_INT_OPT(fit_args, flow_epoch_patches, "--flow-epoch-patches", "N", "flow: patches per epoch (0 = all)", 0,
                1L << 40),
    CLI_INT_OPT(fit_args, flow_batch, "--flow-batch", "N", "flow: patches per Adam step", 1, 1 << 20),
    CLI_REAL_OPT(fit_args, flow_lr, "--flow-lr", "X", "flow: Adam learning rate", 1e-9, 1.0),
    CLI_INT_OPT(fit_args, flow_patience, "--flow-patience", "N",
                "flow: stop after N epochs without a better held-out likelihood", 1, 100000),
    CLI_REAL_OPT(fit_args, val_split, "--val-split", "F",
                 "fraction of the normal images held out to set thresholds (needs >= 10 images)", 0.0, 0.5),
    CLI_REAL_OPT(fit_args, fpr, "--fpr", "P", "false-positive rate of the stored thresholds on the held-out normals",
                 0.0, 1.0),
    CLI_STR_OPT(fit_args, shard, "--shard", "I/N",
                "fit the partial model of part I of N (every N-th normal image from the I-th; with --features every "
                "N-th row) for `dinoscope merge`", 0),
    CLI_STR_OPT(fit_args, shard_list, "--shard-list", "FILE",
                "fit a partial model on the images listed in FILE (one image, folder or CSV per line)", 0),
    CLI_REAL_OPT(fit_args, shard_keep, "--shard-keep", "R",
                 "partial models: patchbank coreset ratio kept for the merge (1 = every patch: the merge then "
                 "equals a plain fit's bank)", 1e-9, 1.0),
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

static int features_from_npy(const char *cmd, const char *path, size_t N, int D, long size, const ds_shard_params *sp,
                             fit_features *fs) {
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(path, &fs->feats, &nd, shape) != DS_OK) return cli_lib_error(cmd);
    if (nd != 3 || shape[1] != (int64_t)N || shape[2] != D || shape[0] < 1)
        return cli_error(cmd, "'%s' has the wrong shape: expected [n, %zu, %d] for this backbone at --size %ld", path, N, D,
                         size);
    fs->n = 0; /* --shard: the rows of the part, in order */
    for (int64_t i = 0; i < shape[0]; i++)
        if (ds_shard_has(i, sp->index, sp->count))
            memmove(fs->feats + (size_t)(fs->n++) * fs->row, fs->feats + (size_t)i * fs->row, sizeof(float) * fs->row);
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
                                const cli_feature_opts *fo, const ds_shard_params *sp, fit_features *fs, int *n_skipped) {
    ds_image_list *list = NULL;
    int rc = CLI_ERROR;
    if (ds_image_list_expand(pos->v, pos->n, io->recursive, &list) != DS_OK) return cli_lib_error(cmd);
    keep_normal_training(list);
    cli_keep_shard(list, sp->index, sp->count);
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

/* "knn,gaussian" / "all" (+ padim for --gaussian-per-patch) into kinds; the count or -1. */
static int parse_scorers(const char *s, bool per_patch, ds_scorer_kind *kinds, int max) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", !strcmp(s, "all") ? "knn,gaussian,patchbank" : s);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        ds_scorer_kind k;
        if (n == max || ds_scorer_kind_parse(tok, &k) != DS_OK) return -1;
        for (int i = 0; i < n; i++)
            if (kinds[i] == k) return -1;
        kinds[n++] = k;
    }
    bool have = false;
    for (int i = 0; i < n; i++) have = have || kinds[i] == DS_SCORER_PADIM;
    if (per_patch && !have) {
        if (n == max) return -1;
        kinds[n++] = DS_SCORER_PADIM;
    }
    return n;
}

/* What the scorer adds to the model file and to memory at score time. */
typedef struct {
    cli_stage_progress *prog;
    size_t N;
} fit_report;

static void report_fitted(void *user, int k, const ds_scorer *sc, double seconds) {
    fit_report *r = user;
    size_t N = r->N;
    cli_stage_progress_end(r->prog);
    double bytes = 0;
    for (int i = 0; i < ds_scorer_n_arrays(sc); i++) {
        ds_scorer_array a;
        if (ds_scorer_get_array(sc, i, &a) == DS_OK) bytes += 4.0 * (double)a.shape[0] * (double)(a.n_dims > 1 ? a.shape[1] : 1);
    }
    ds_scorer_kind kind = ds_scorer_get_kind(sc);
    fprintf(stderr, "dinoscope fit: %s fitted in %.1f s, %.1f MB of arrays\n", ds_scorer_kind_name(kind), seconds, bytes / 1e6);
    ds_scorer_params pp;
    if (kind == DS_SCORER_PADIM && ds_scorer_params_of(sc, &pp) == DS_OK)
        fprintf(stderr, "dinoscope fit: padim memory: N*d*d*4 = %zu*%d*%d*4 bytes = %.1f MB\n", N, pp.padim_dim, pp.padim_dim,
                4.0 * (double)N * pp.padim_dim * pp.padim_dim / 1e6);
}

static ds_scorer_params scorer_params(const fit_args *a, int threads, cli_stage_progress *prog) {
    ds_scorer_params sp = ds_fit_defaults().scorer;
    sp.k = (int)a->knn_k;
    sp.max_components = (int)a->max_comp;
    sp.coreset_ratio = a->coreset;
    sp.patch_k = (int)a->patch_k;
    sp.metric = (ds_metric)a->metric;
    sp.reduce = (ds_reduce)a->reduce;
    sp.seed = (uint64_t)a->seed;
    sp.flow_dim = (int)a->flow_dim;
    sp.flow_blocks = (int)a->flow_blocks;
    sp.flow_pos_dim = (int)a->flow_pos_dim;
    sp.flow_hidden = (int)a->flow_hidden;
    sp.flow_epochs = (int)a->flow_epochs;
    sp.flow_epoch_patches = a->flow_epoch_patches;
    sp.flow_batch = (int)a->flow_batch;
    sp.flow_lr = a->flow_lr;
    sp.flow_patience = (int)a->flow_patience;
    sp.n_threads = threads;
    sp.progress = cli_on_stage_progress;
    sp.progress_user = prog;
    return sp;
}

/* ---- step 3: the model file ------------------------------------------------ */

static int model_info(const char *cmd, const fit_args *a, ds_backbone *bb, const cli_image_opts *io, int size,
                      ds_model_info *info) {
    memset(info, 0, sizeof *info);
    if (ds_file_sha256(a->backbone, info->backbone_sha256) != DS_OK) return cli_lib_error(cmd);
    snprintf(info->backbone_file, sizeof info->backbone_file, "%s", a->backbone);
    snprintf(info->backbone_arch, sizeof info->backbone_arch, "%s", ds_backbone_describe(bb));
    info->prep = io->prep;
    info->prep.size = size;
    info->n_layers = (int)a->layers;
    if (ds_backbone_grid(bb, size, size, &info->grid_h, &info->grid_w, &info->dim) != DS_OK) return cli_lib_error(cmd);
    info->map_sigma = DS_ANOMALY_MAP_SIGMA;
    return CLI_OK;
}

/* --shard I/N or --shard-list FILE: the part, and the list's lines as the inputs. */
static int shard_inputs(const char *cmd, const fit_args *a, cli_positional *pos, ds_shard_params *sp, char ***listed,
                        int *n_listed) {
    sp->keep_ratio = a->shard_keep;
    if (a->features && a->shard_list) return cli_error(cmd, "--shard-list selects images: give images, not --features");
    if (a->shard && a->shard_list) return cli_error(cmd, "give --shard or --shard-list, not both");
    if (a->shard) return cli_parse_shard(cmd, a->shard, &sp->index, &sp->count);
    sp->index = -1, sp->count = 0;
    if (pos->n) return cli_error(cmd, "--shard-list names the images: give no other inputs");
    if (cli_read_list(cmd, a->shard_list, listed, n_listed) != CLI_OK) return CLI_ERROR;
    const char **v = malloc(sizeof(char *) * (size_t)*n_listed); /* pos->v is freed on its own */
    if (!v) return cli_error(cmd, "out of memory");
    for (int i = 0; i < *n_listed; i++) v[i] = (*listed)[i];
    free(pos->v);
    pos->v = v;
    pos->n = *n_listed;
    return CLI_OK;
}

int cmd_fit(int argc, char **argv) {
    const char *cmd = "fit";
    fit_args a = {.scorer = "all", .shard_keep = 1.0, .knn_k = 5, .max_comp = 512, .patch_k = 1, .coreset = 0.1,
                  .val_split = 0.1, .fpr = 0.01, .metric = DS_METRIC_COSINE,
                  .reduce = DS_REDUCE_TOP1PCT /* measured: see README "Choosing the image score" */};
    const ds_scorer_params fd = ds_fit_defaults().scorer; /* the flow's defaults are the library's */
    a.flow_dim = fd.flow_dim, a.flow_blocks = fd.flow_blocks, a.flow_pos_dim = fd.flow_pos_dim;
    a.flow_hidden = fd.flow_hidden, a.flow_epochs = fd.flow_epochs, a.flow_epoch_patches = fd.flow_epoch_patches;
    a.flow_batch = fd.flow_batch, a.flow_lr = fd.flow_lr, a.flow_patience = fd.flow_patience;
    cli_backbone_cmd c;
    int rc = cli_backbone_cmd_parse(&fit_spec, (cli_group){"options", fit_opts, CLI_N(fit_opts), &a}, &c, argc, argv);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    ds_scorer_kind kinds[DS_MODEL_MAX_SCORERS];
    int n_kinds = parse_scorers(a.scorer, a.per_patch, kinds, DS_MODEL_MAX_SCORERS);
    if (n_kinds < 1) {
        free(c.pos.v);
        return cli_error(cmd, "--scorer must be a comma list of knn, gaussian, patchbank, padim, flow, or 'all'; got '%s'", a.scorer);
    }
    ds_shard_params sp = ds_shard_defaults();
    char **listed = NULL;
    int n_listed = 0;
    bool partial = a.shard || a.shard_list;
    for (int k = 0; partial && k < n_kinds; k++)
        if (kinds[k] == DS_SCORER_FLOW) {
            free(c.pos.v);
            return cli_error(cmd, "flow cannot be fitted in shards (its training is not a pooled statistic); fit it in one run");
        }
    if (partial && (rc = shard_inputs(cmd, &a, &c.pos, &sp, &listed, &n_listed)) != CLI_OK) {
        free(c.pos.v);
        cli_free_list(listed, n_listed);
        return rc;
    }
    if (c.pos.n == 0 && !a.features) {
        free(c.pos.v);
        cli_free_list(listed, n_listed);
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
    if (!a.layers) a.layers = ds_backbone_default_layers(bb);
    int size = a.size ? (int)a.size : ds_backbone_native_size(bb);
    if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) {
        rc = cli_error(cmd, "--size %d: %s", size, ds_last_error());
        goto done;
    }
    size_t N = (size_t)gh * gw;
    fs.row = N * (size_t)D;
    cli_feature_opts fo = {.size = size, .n_layers = (int)a.layers, .batch = (int)c.run.batch};
    rc = a.features ? features_from_npy(cmd, a.features, N, D, size, &sp, &fs)
                    : features_from_images(cmd, bb, &c.pos, &c.io, &fo, &sp, &fs, &n_skipped);
    ds_model_info info;
    if (rc != CLI_OK || (rc = model_info(cmd, &a, bb, &c.io, size, &info)) != CLI_OK) goto done;
    cli_stage_progress prog = {0};
    fit_report rep = {&prog, N};
    ds_fit_params fp = ds_fit_defaults();
    fp.n_kinds = n_kinds;
    memcpy(fp.kinds, kinds, sizeof(ds_scorer_kind) * (size_t)n_kinds);
    fp.scorer = scorer_params(&a, (int)c.run.threads, &prog);
    fp.val_split = a.val_split;
    fp.fpr = a.fpr;
    fp.on_fitted = report_fitted;
    fp.on_fitted_user = &rep;
    int64_t n_val = ds_fit_n_held_out(&fp, fs.n);
    fprintf(stderr, "dinoscope fit: %lld training images, %lld held out for thresholds, %zu patches of %d dims each\n",
            (long long)(fs.n - n_val), (long long)n_val, N, D);
    if (partial ? ds_model_fit_partial(&info, &fp, &sp, fs.feats, fs.n, a.out) != DS_OK
                : ds_model_fit_features(&info, &fp, fs.feats, fs.n, &model) != DS_OK || ds_model_write(model, a.out) != DS_OK) {
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
    cli_free_list(listed, n_listed);
    return rc;
}
