/* dinoscope fit --backbone W --out MODEL [options] IMAGES...|DIR|CSV
 *
 * Steps: gather the features of the normal images (backbone or --features),
 * hold out every k-th image for the thresholds, fit each scorer, calibrate
 * it on the held-out images, save the model. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/eval.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "dinoscope/store.h"
#include "dinoscope/weights.h"

typedef struct {
    const char *backbone, *out, *features, *scorer, *work_dir;
    double mem_limit; /* bytes; 0 = half of physical memory */
    int coreset_method; /* index into "auto|exact|blocked": the ds_coreset_method value */
    long coreset_block;
    long size, layers, knn_k, max_comp, patch_k, seed;
    long flow_dim, flow_blocks, flow_pos_dim, flow_hidden, flow_epochs, flow_epoch_patches, flow_batch, flow_patience;
    double flow_lr;
    double coreset, val_split, fpr;
    int metric, reduce; /* indices into "l2|cosine" and "max|top1pct": the ds_metric / ds_reduce values */
    bool per_patch;
} fit_args;

/* "4G", "512M", "1.5T", "65536": bytes (powers of 1024). */
static const char *set_mem_limit(void *args, const char *v) {
    char *end;
    double x = strtod(v, &end);
    double unit = !*end ? 1 : (end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB")) ? 0
                  : *end == 'K' || *end == 'k'                                         ? 1024.0
                  : *end == 'M' || *end == 'm'                                         ? 1048576.0
                  : *end == 'G' || *end == 'g'                                         ? 1073741824.0
                  : *end == 'T' || *end == 't'                                         ? 1099511627776.0
                                                                                       : 0;
    if (end == v || !(unit > 0) || !(x > 0) || !isfinite(x)) return "expected a size such as 4G, 512M or 1.5G";
    ((fit_args *)args)->mem_limit = x * unit;
    return NULL;
}

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
    CLI_STR_OPT(fit_args, features, "--features", "FEATS.npy|STORE",
                "features from `dinoscope extract` (rows = images; more .npy files may follow as arguments) or a "
                "feature store a fit left in its --work-dir, instead of running the backbone (the backbone file is "
                "still hashed and recorded); memory-mapped, not read whole", 0),
    {{"--work-dir"}, "DIR", "feature store of this fit: resumed if a killed fit left one there, kept afterwards "
     "(for fit --features DIR)", CLI_STR, offsetof(fit_args, work_dir), 0, 0, NULL, NULL,
     "MODEL.work, removed after the fit", 0},
    {{"--mem-limit"}, "SIZE", "refuse to start a fit whose planned peak memory is larger (4G, 512M, ...)", CLI_FN, 0,
     0, 0, NULL, set_mem_limit, "half of the physical memory", 0},
    CLI_CHOICE_OPT(fit_args, coreset_method, "--coreset-method", "auto|exact|blocked",
                   "patchbank: exact greedy, or the composable blocked coreset (docs/scale.md); auto = exact up to "
                   "2^19 training patches"),
    CLI_INT_OPT(fit_args, coreset_block, "--coreset-block", "N", "patchbank, blocked coreset: points per block (0 = 16384)",
                0, 1L << 40),
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
};

static const cli_spec fit_spec = {
    "fit", "--backbone W --out MODEL [options] IMAGES...|DIR|CSV",
    "  Fits anomaly scorers on NORMAL images (with a labels.csv: rows with split=train, label=0).\n",
    "IMAGES", false};

/* ---- step 1: the normal images ------------------------------------------ */

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
    sp.coreset_method = (ds_coreset_method)a->coreset_method;
    sp.coreset_block = a->coreset_block;
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

/* The plan, before anything starts; with auto, a plan over the limit
 * falls back to the blocked coreset. Returns CLI_OK or the error printed. */
static int plan_fit(const char *cmd, const ds_model_info *info, ds_fit_params *fp, int64_t n, double limit,
                    const char *store_dir) {
    ds_fit_plan pl;
    ds_fit_plan_of(info, fp, n, &pl);
    if (pl.peak_bytes > limit && fp->scorer.coreset_method == DS_CORESET_AUTO && pl.coreset == DS_CORESET_EXACT) {
        fp->scorer.coreset_method = DS_CORESET_BLOCKED;
        ds_fit_plan_of(info, fp, n, &pl);
    }
    const double GB = 1e9;
    fprintf(stderr, "dinoscope fit: %lld training images, %lld held out for thresholds, %d patches of %d dims each\n",
            (long long)pl.n_train, (long long)pl.n_val, info->grid_h * info->grid_w, info->dim);
    fprintf(stderr, "dinoscope fit: plan: %lld training patches; features %.2f GB %s%s\n", (long long)pl.n_patches,
            pl.store_bytes / GB, store_dir ? "on disk in " : "mapped", store_dir ? store_dir : "");
    if (pl.bank_rows)
        fprintf(stderr, "dinoscope fit: plan: patchbank %lld rows, %.2f GB; %s coreset, %.2f GB working set\n",
                (long long)pl.bank_rows, pl.bank_bytes / GB, ds_coreset_method_name(pl.coreset), pl.coreset_bytes / GB);
    fprintf(stderr, "dinoscope fit: plan: expected peak %.2f GB (limit %.2f GB)\n", pl.peak_bytes / GB, limit / GB);
    if (pl.peak_bytes > limit)
        return cli_error(cmd, "the fit would need about %.2f GB, more than --mem-limit %.2f GB: lower --coreset, "
                         "use --coreset-method blocked, fewer scorers, or raise --mem-limit",
                         pl.peak_bytes / GB, limit / GB);
    return CLI_OK;
}

/* Testing: SIGKILL after this many committed batches (as slide's). */
typedef struct {
    cli_pass *ps;
    long kill_after, n;
} kill_hook;

static void progress_or_kill(const char *stage, int64_t done, int64_t total, void *user) {
    kill_hook *k = user;
    k->ps->prog.total = total; /* a resumed run counts the images already stored */
    cli_progress_update(&k->ps->prog, done);
    if (done == total) cli_progress_end(&k->ps->prog); /* the images are done; the scorers report their own */
    if (k->kill_after > 0 && ++k->n >= k->kill_after) raise(SIGKILL);
}

static void remove_store(const char *dir) {
    static const char *const files[] = {"features.f32", "store.txt", "progress.txt"};
    char p[4200];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* The pipeline parameters that make a model's identity (ds_model_info_of). */
static ds_pipeline_params identity_params(const cli_feature_opts *fo, const cli_image_opts *io) {
    ds_pipeline_params pp = ds_pipeline_defaults();
    pp.size = fo->size, pp.n_layers = fo->n_layers, pp.prep = io->prep;
    return pp;
}

/* --features: a store directory or .npy files, mapped; the identity is the
 * store's (which must be this backbone's) or the backbone's. */
static int fit_from_features(const char *cmd, const fit_args *a, const cli_positional *pos, ds_backbone *bb,
                             const ds_pipeline_params *pp, ds_fit_params *fp, double limit, ds_model **model) {
    ds_feature_store *fs = NULL;
    ds_model_info info;
    int rc = CLI_ERROR;
    int64_t N;
    int D;
    if (ds_model_info_of(bb, pp, &info) != DS_OK) return cli_lib_error(cmd);
    if (ds_store_exists(a->features)) {
        if (pos->n > 0) return cli_error(cmd, "--features with a store directory takes no other inputs");
        if (ds_store_open(a->features, &fs) != DS_OK) return cli_lib_error(cmd);
        const ds_model_info *si = ds_store_info(fs);
        if (strcmp(si->backbone_sha256, info.backbone_sha256)) {
            rc = cli_error(cmd, "feature store '%s' was extracted with another backbone (%s), not '%s'", a->features,
                           si->backbone_file, a->backbone);
            goto done;
        }
        info = *si;
    } else {
        const char **paths = malloc(sizeof(char *) * (size_t)(pos->n + 1));
        if (!paths) return cli_error(cmd, "out of memory");
        paths[0] = a->features;
        for (int i = 0; i < pos->n; i++) paths[i + 1] = pos->v[i];
        ds_status st = ds_store_open_npy(paths, pos->n + 1, &fs);
        free(paths);
        if (st != DS_OK) return cli_lib_error(cmd);
    }
    ds_store_shape(fs, &N, &D);
    if (N != (int64_t)info.grid_h * info.grid_w || D != info.dim) {
        rc = cli_error(cmd, "'%s' has the wrong shape: expected [n, %d, %d] for this backbone at --size %d", a->features,
                       info.grid_h * info.grid_w, info.dim, info.prep.size);
        goto done;
    }
    if ((rc = plan_fit(cmd, &info, fp, ds_store_n_images(fs), limit, NULL)) != CLI_OK) goto done;
    ds_row_source src = ds_store_rows(fs);
    rc = ds_model_fit_rows(&info, fp, &src, ds_store_n_images(fs), model) == DS_OK ? CLI_OK : cli_lib_error(cmd);
done:
    ds_store_close(fs);
    return rc;
}

/* Images: through the backbone into the store in the work dir, then fit. */
static int fit_from_images(const char *cmd, const fit_args *a, const cli_positional *pos, cli_backbone_cmd *c,
                           ds_backbone *bb, const cli_feature_opts *fo, ds_fit_params *fp, double limit,
                           ds_model **model, int *n_skipped) {
    ds_image_list *list = NULL;
    char *dir = NULL;
    int rc = CLI_ERROR;
    if (ds_image_list_expand(pos->v, pos->n, c->io.recursive, &list) != DS_OK) return cli_lib_error(cmd);
    keep_normal_training(list);
    if (list->n == 0) {
        rc = cli_error(cmd, "no normal training images in the inputs");
        goto done;
    }
    size_t dl = strlen(a->out) + 8;
    if (!(dir = malloc(dl))) goto done;
    snprintf(dir, dl, "%s%s", a->work_dir ? a->work_dir : a->out, a->work_dir ? "" : ".work");
    ds_pipeline_params pp = identity_params(fo, &c->io);
    cli_pass ps;
    ds_model_info info;
    if (ds_model_info_of(bb, &pp, &info) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    if ((rc = plan_fit(cmd, &info, fp, list->n, limit, dir)) != CLI_OK) goto done;
    rc = CLI_ERROR;
    if (cli_pass_begin(cmd, &c->io, fo, list->n, &ps, &pp) != CLI_OK) goto done;
    const char *env = getenv("DINOSCOPE_TEST_KILL_AFTER_BATCHES");
    kill_hook kh = {&ps, env ? atol(env) : 0, 0};
    pp.progress = progress_or_kill;
    pp.progress_user = &kh;
    int64_t resumed = 0;
    ds_status st = ds_model_fit_store(bb, &pp, fp, (const char *const *)list->paths, list->n, dir, 1, model, NULL, &resumed);
    if (st == DS_ERR_MISMATCH && !a->work_dir) /* our own default dir, left by another fit: start afresh */
        st = ds_model_fit_store(bb, &pp, fp, (const char *const *)list->paths, list->n, dir, 0, model, NULL, &resumed);
    if ((rc = cli_pass_end(&ps, st, n_skipped)) != CLI_OK) goto done;
    if (resumed) fprintf(stderr, "dinoscope fit: resumed: %lld of %d images were already in %s\n", (long long)resumed, list->n, dir);
    if (!a->work_dir) remove_store(dir);
    else fprintf(stderr, "dinoscope fit: features kept in %s (fit --features %s refits them)\n", dir, dir);
done:
    free(dir);
    ds_image_list_free(list);
    return rc;
}

int cmd_fit(int argc, char **argv) {
    const char *cmd = "fit";
    fit_args a = {.scorer = "all", .knn_k = 5, .max_comp = 512, .patch_k = 1, .coreset = 0.1,
                  .val_split = 0.1, .fpr = 0.01, .metric = DS_METRIC_COSINE,
                  .reduce = DS_REDUCE_TOP1PCT /* measured: see README "Choosing the image score" */};
    const ds_scorer_params fd = ds_fit_defaults().scorer; /* the flow's defaults are the library's */
    a.flow_dim = fd.flow_dim, a.flow_blocks = fd.flow_blocks, a.flow_pos_dim = fd.flow_pos_dim;
    a.flow_hidden = fd.flow_hidden, a.flow_epochs = fd.flow_epochs, a.flow_epoch_patches = fd.flow_epoch_patches;
    a.flow_batch = fd.flow_batch, a.flow_lr = fd.flow_lr, a.flow_patience = fd.flow_patience;
    cli_backbone_cmd c;
    cli_group groups[5] = {{"options", fit_opts, CLI_N(fit_opts), &a}};
    cli_backbone_cmd_init(&c, groups + 1);
    cli_positional pos;
    int rc = cli_parse(&fit_spec, groups, CLI_N(groups), argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    ds_scorer_kind kinds[DS_MODEL_MAX_SCORERS];
    int n_kinds = parse_scorers(a.scorer, a.per_patch, kinds, DS_MODEL_MAX_SCORERS);
    if (n_kinds < 1) {
        free(pos.v);
        return cli_error(cmd, "--scorer must be a comma list of knn, gaussian, patchbank, padim, flow, or 'all'; got '%s'", a.scorer);
    }
    if (pos.n == 0 && !a.features) {
        free(pos.v);
        return cli_error(cmd, "give the normal images (files, folders or a labels.csv) or --features");
    }
    ds_backbone *bb = NULL;
    ds_model *model = NULL;
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
    cli_feature_opts fo = {.size = size, .n_layers = (int)a.layers, .batch = (int)c.run.batch};
    double limit = a.mem_limit > 0 ? a.mem_limit : 0.5 * (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (a.features) {
        ds_pipeline_params pp = identity_params(&fo, &c.io);
        rc = fit_from_features(cmd, &a, &pos, bb, &pp, &fp, limit, &model);
    } else {
        rc = fit_from_images(cmd, &a, &pos, &c, bb, &fo, &fp, limit, &model, &n_skipped);
    }
    if (rc != CLI_OK) goto done;
    rc = CLI_ERROR;
    if (ds_model_write(model, a.out) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    fprintf(stderr, "dinoscope fit: wrote %s\n", a.out);
    rc = n_skipped ? CLI_SKIPPED : CLI_OK;
done:
    ds_model_free(model);
    ds_backbone_free(bb);
    free(pos.v);
    return rc;
}
