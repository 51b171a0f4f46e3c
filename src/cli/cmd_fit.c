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
#include "dinoscope/shard.h"
#include "dinoscope/store.h"
#include "dinoscope/weights.h"

typedef struct {
    const char *backbone, *out, *features, *work_dir, *shard, *shard_list;
    double shard_keep;
    double mem_limit; /* bytes; 0 = half of physical memory */
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
    CLI_STR_OPT(fit_args, features, "--features", "FEATS.npy|STORE",
                "features from `dinoscope extract` (rows = images; more .npy files may follow as arguments) or a "
                "feature store a fit left in its --work-dir, instead of running the backbone (the backbone file is "
                "still hashed and recorded); memory-mapped, not read whole", 0),
    {{"--work-dir"}, "DIR", "feature store of this fit: resumed if a killed fit left one there, kept afterwards "
     "(for fit --features DIR)", CLI_STR, offsetof(fit_args, work_dir), 0, 0, NULL, NULL,
     "MODEL.work, removed after the fit", 0},
    {{"--mem-limit"}, "SIZE", "refuse to start a fit whose planned peak memory is larger (4G, 512M, ...)", CLI_FN, 0,
     0, 0, NULL, set_mem_limit, "half of the physical memory", 0},
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
                             const ds_pipeline_params *pp, ds_fit_params *fp, const ds_shard_params *sp, double limit,
                             ds_model **model) {
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
    ds_status st = sp ? ds_model_fit_partial_rows(&info, fp, sp, &src, ds_store_n_images(fs), sp->count > 0, a->out)
                      : ds_model_fit_rows(&info, fp, &src, ds_store_n_images(fs), model);
    rc = st == DS_OK ? CLI_OK : cli_lib_error(cmd);
done:
    ds_store_close(fs);
    return rc;
}

/* Images: through the backbone into the store in the work dir, then fit. */
static int fit_from_images(const char *cmd, const fit_args *a, const cli_positional *pos, cli_backbone_cmd *c,
                           ds_backbone *bb, const cli_feature_opts *fo, ds_fit_params *fp, const ds_shard_params *sp,
                           double limit, ds_model **model, int *n_skipped) {
    ds_image_list *list = NULL;
    char *dir = NULL;
    int rc = CLI_ERROR;
    if ((rc = cli_expand_images(cmd, pos, c->io.recursive, &list)) != CLI_OK) return rc;
    keep_normal_training(list);
    if (sp) cli_keep_shard(list, sp->index, sp->count);
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
    const char *const *paths = (const char *const *)list->paths;
    ds_status st = DS_ERR_MISMATCH;
    /* resume; a mismatching store in our own default dir (left by another fit): start afresh */
    for (int resume = 1; st == DS_ERR_MISMATCH && resume >= (a->work_dir ? 1 : 0); resume--)
        st = sp ? ds_model_fit_partial_store(bb, &pp, fp, sp, paths, list->n, dir, resume, a->out, NULL, &resumed)
                : ds_model_fit_store(bb, &pp, fp, paths, list->n, dir, resume, model, NULL, &resumed);
    if ((rc = cli_pass_end(&ps, st, n_skipped)) != CLI_OK) goto done;
    if (resumed) fprintf(stderr, "dinoscope fit: resumed: %lld of %d images were already in %s\n", (long long)resumed, list->n, dir);
    if (!a->work_dir) remove_store(dir);
    else fprintf(stderr, "dinoscope fit: features kept in %s (fit --features %s refits them)\n", dir, dir);
done:
    free(dir);
    ds_image_list_free(list);
    return rc;
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
    fit_args a = {.shard_keep = 1.0};
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
    ds_shard_params sp = ds_shard_defaults();
    char **listed = NULL;
    int n_listed = 0;
    bool partial = a.shard || a.shard_list;
    for (int k = 0; partial && k < fp.n_kinds; k++)
        if (fp.kinds[k] == DS_SCORER_FLOW) {
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
    rep.N = N;
    cli_feature_opts fo = {.size = size, .n_layers = (int)f.layers, .batch = (int)c.run.batch};
    double limit = a.mem_limit > 0 ? a.mem_limit : 0.5 * (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (a.features) {
        ds_pipeline_params pp = identity_params(&fo, &c.io);
        rc = fit_from_features(cmd, &a, &c.pos, bb, &pp, &fp, partial ? &sp : NULL, limit, &model);
    } else {
        rc = fit_from_images(cmd, &a, &c.pos, &c, bb, &fo, &fp, partial ? &sp : NULL, limit, &model, &n_skipped);
    }
    if (rc != CLI_OK) goto done;
    rc = CLI_ERROR;
    if (!partial && ds_model_write(model, a.out) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    fprintf(stderr, "dinoscope fit: wrote %s\n", a.out);
    rc = n_skipped ? CLI_SKIPPED : CLI_OK;
done:
    ds_model_free(model);
    ds_backbone_free(bb);
    free(c.pos.v);
    cli_free_list(listed, n_listed);
    return rc;
}
