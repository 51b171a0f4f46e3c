/* dinoscope fit --backbone W [--size S --layers N --stain-norm clahe] [--scorer ...]
 *               [--coreset R] --out MODEL IMAGES...|DIR|CSV */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/eval.h"
#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "dinoscope/weights.h"

static const char *USAGE =
    "usage: dinoscope fit --backbone W --out MODEL [options] IMAGES...|DIR|CSV\n"
    "  Fits anomaly scorers on NORMAL images (with a labels.csv: rows with split=train, label=0).\n"
    "  --size S (518 DINOv2, 224 CNNs)  --layers N (4)  --batch B (1)  --threads T (0 = auto)\n"
    "  --stain-norm none|clahe  --clahe-clip X (2.0)  --clahe-tiles N (8)  --window MIN,MAX  --skip-bad  --recursive\n"
    "  --scorer knn,gaussian,patchbank,padim|all (all = knn,gaussian,patchbank)\n"
    "  --gaussian-per-patch: also fit padim (PaDiM: a Gaussian per patch position over 100 random\n"
    "                        channels; gives maps; N*100*100*4 bytes, 55 MB for DINOv2 at 518)\n"
    "  --knn-k K (5)  --max-components C (512)\n"
    "  --coreset R (0.1; 1 = keep every patch)  --patch-k K (1)  --metric cosine|l2 (cosine)\n"
    "  --reduce max|top1pct (top1pct)  --seed N (0)\n"
    "  --val-split F (0.1): normal images held out to set thresholds (needs >= 10 images)\n"
    "  --fpr P (0.01): false-positive rate of the stored threshold on the held-out normals\n"
    "  --features FEATS.npy: use features from `dinoscope extract` (rows = images) instead of\n"
    "                        running the backbone (the backbone file is still hashed and recorded)\n";

typedef struct {
    float *feats;
    int64_t n, cap;
    size_t row;
} fit_state;

static int fit_sink(void *ud, int index, const char *path, const ds_image *original, const float *feats,
                    const float *cls, const cli_feature_timing *timing) {
    fit_state *s = ud;
    memcpy(s->feats + (size_t)s->n * s->row, feats, sizeof(float) * s->row);
    s->n++;
    return CLI_OK;
}

typedef struct {
    cli_progress prog;
    const char *stage;
} fit_progress;

static void on_progress(const char *stage, int64_t done, int64_t total, void *user) {
    fit_progress *p = user;
    if (p->stage != stage) {
        cli_progress_end(&p->prog);
        cli_progress_start(&p->prog, stage, total);
        p->stage = stage;
    }
    cli_progress_update(&p->prog, done);
}

/* Parses "knn,gaussian" / "all" into kinds[4]; returns the count or -1. */
static int parse_scorers(const char *s, ds_scorer_kind *kinds) {
    if (!strcmp(s, "all")) {
        kinds[0] = DS_SCORER_KNN, kinds[1] = DS_SCORER_GAUSSIAN, kinds[2] = DS_SCORER_PATCHBANK;
        return 3;
    }
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        ds_scorer_kind k;
        if (n == 4 || ds_scorer_kind_parse(tok, &k) != DS_OK) return -1;
        for (int i = 0; i < n; i++)
            if (kinds[i] == k) return -1;
        kinds[n++] = k;
    }
    return n;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* 99th percentile of v[n] (lower value; v is reordered). n is at most a few
 * hundred thousand held-out patch scores: a sort is fine. */
static float percentile99(float *v, size_t n) {
    qsort(v, n, sizeof(float), cmp_float);
    return v[(size_t)floor(0.99 * (double)(n - 1))];
}

int cmd_fit(int argc, char **argv) {
    const char *cmd = "fit", *backbone_path = NULL, *out_path = NULL, *features_path = NULL, *scorer_arg = "all";
    long size = 0, layers = 4, batch = 1, threads = 0, knn_k = 5, max_comp = 512, patch_k = 1, seed = 0;
    double coreset = 0.1, val_split = 0.1, fpr = 0.01;
    ds_metric metric = DS_METRIC_COSINE;
    ds_reduce reduce = DS_REDUCE_TOP1PCT; /* measured: see README "Choosing the image score" */
    cli_image_opts io;
    cli_image_opts_init(&io);
    const char **inputs = calloc((size_t)argc, sizeof(char *));
    int n_inputs = 0, rc = CLI_USAGE;
    ds_image_list *list = NULL;
    ds_backbone *bb = NULL;
    fit_state fs = {0};
    ds_scorer *scorers[4] = {0};
    ds_scorer_calibration calib[4] = {0};
    bool per_patch = false;
    int n_scorers = 0;
    float *val_scores = NULL, *val_patch = NULL;
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
        if (!strcmp(a, "--gaussian-per-patch")) {
            per_patch = true;
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
        if (!strcmp(a, "--backbone") || !strcmp(a, "--weights")) backbone_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--features")) features_path = v;
        else if (!strcmp(a, "--scorer")) scorer_arg = v;
        else if (!strcmp(a, "--size")) ok = cli_parse_int(v, 1, 8192, &size);
        else if (!strcmp(a, "--layers")) ok = cli_parse_int(v, 1, 1000, &layers);
        else if (!strcmp(a, "--batch")) ok = cli_parse_int(v, 1, 1024, &batch);
        else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, 0, 1024, &threads);
        else if (!strcmp(a, "--knn-k")) ok = cli_parse_int(v, 1, 100000, &knn_k);
        else if (!strcmp(a, "--max-components")) ok = cli_parse_int(v, 1, 100000, &max_comp);
        else if (!strcmp(a, "--patch-k")) ok = cli_parse_int(v, 1, 100000, &patch_k);
        else if (!strcmp(a, "--seed")) ok = cli_parse_int(v, 0, 1L << 62, &seed);
        else if (!strcmp(a, "--coreset")) ok = cli_parse_double(v, 1e-9, 1.0, &coreset);
        else if (!strcmp(a, "--val-split")) ok = cli_parse_double(v, 0.0, 0.5, &val_split);
        else if (!strcmp(a, "--fpr")) ok = cli_parse_double(v, 0.0, 1.0, &fpr);
        else if (!strcmp(a, "--metric")) {
            ok = !strcmp(v, "cosine") || !strcmp(v, "l2");
            metric = !strcmp(v, "l2") ? DS_METRIC_L2 : DS_METRIC_COSINE;
        } else if (!strcmp(a, "--reduce")) {
            ok = !strcmp(v, "max") || !strcmp(v, "top1pct");
            reduce = !strcmp(v, "top1pct") ? DS_REDUCE_TOP1PCT : DS_REDUCE_MAX;
        } else {
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            goto done;
        }
        if (!ok) {
            cli_error(cmd, "bad value '%s' for %s (see --help)", v, a);
            goto done;
        }
    }
    ds_scorer_kind kinds[4];
    int n_kinds = parse_scorers(scorer_arg, kinds);
    if (n_kinds < 1) {
        cli_error(cmd, "--scorer must be a comma list of knn, gaussian, patchbank, padim, or 'all'; got '%s'",
                  scorer_arg);
        goto done;
    }
    if (per_patch) {
        bool have = false;
        for (int k = 0; k < n_kinds; k++) have = have || kinds[k] == DS_SCORER_PADIM;
        if (!have) kinds[n_kinds++] = DS_SCORER_PADIM; /* at most 3 others: fits in kinds[4] */
    }
    if (!backbone_path || !out_path || (n_inputs == 0 && !features_path)) {
        fputs(USAGE, stderr);
        goto done;
    }
    rc = CLI_ERROR;
    if (ds_backbone_load(backbone_path, &(ds_backbone_params){.n_threads = (int)threads}, &bb) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    if (size == 0) size = ds_backbone_native_size(bb);
    int gh, gw, D;
    if (ds_backbone_grid(bb, (int)size, (int)size, &gh, &gw, &D) != DS_OK) {
        rc = cli_error(cmd, "--size %ld: %s", size, ds_last_error());
        goto done;
    }
    size_t N = (size_t)gh * gw;
    fs.row = N * (size_t)D;
    int n_skipped = 0;
    if (features_path) {
        int nd;
        int64_t shape[DS_NPY_MAX_DIMS];
        if (ds_npy_read_f32(features_path, &fs.feats, &nd, shape) != DS_OK) {
            rc = cli_lib_error(cmd);
            goto done;
        }
        if (nd != 3 || shape[1] != (int64_t)N || shape[2] != D || shape[0] < 1) {
            rc = cli_error(cmd, "'%s' has the wrong shape: expected [n, %zu, %d] for this backbone at --size %ld",
                           features_path, N, D, size);
            goto done;
        }
        fs.n = shape[0];
    } else {
        if (ds_image_list_expand(inputs, n_inputs, io.recursive, &list) != DS_OK) {
            rc = cli_lib_error(cmd);
            goto done;
        }
        /* labels.csv: fit on the normal training rows only */
        int keep = 0;
        for (int i = 0; i < list->n; i++) {
            bool train = !list->splits[i] || !strcmp(list->splits[i], "train");
            bool normal = list->labels[i] <= 0;
            if (train && normal) {
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
        if (list->n == 0) {
            rc = cli_error(cmd, "no normal training images in the inputs");
            goto done;
        }
        fs.feats = malloc(sizeof(float) * fs.row * (size_t)list->n);
        if (!fs.feats) {
            rc = cli_error(cmd, "out of memory for %d x %zu x %d features", list->n, N, D);
            goto done;
        }
        cli_feature_opts fo = {.size = (int)size, .n_layers = (int)layers, .batch = (int)batch};
        io.prep.size = (int)size;
        rc = cli_feature_pass(cmd, bb, &io, &fo, list, fit_sink, &fs, &n_skipped);
        if (rc != CLI_OK) goto done;
        rc = CLI_ERROR;
    }

    /* hold out normals for the threshold: every k-th image, deterministic */
    int64_t n_val = 0;
    if (val_split > 0 && fs.n >= 10) {
        n_val = (int64_t)llround(val_split * (double)fs.n);
        if (n_val < 1) n_val = 1;
    }
    int64_t n_train = fs.n - n_val;
    float *train = fs.feats, *val = NULL;
    if (n_val > 0) {
        /* move every (n / n_val)-th row to the end, keeping order otherwise */
        float *tmp = malloc(sizeof(float) * fs.row * (size_t)fs.n);
        if (!tmp) {
            rc = cli_error(cmd, "out of memory");
            goto done;
        }
        int64_t t = 0, v = 0, step = fs.n / n_val;
        for (int64_t i = 0; i < fs.n; i++) {
            bool is_val = v < n_val && i % step == step - 1;
            float *dst = is_val ? tmp + (size_t)(n_train + v++) * fs.row : tmp + (size_t)(t++) * fs.row;
            memcpy(dst, fs.feats + (size_t)i * fs.row, sizeof(float) * fs.row);
        }
        free(fs.feats);
        fs.feats = train = tmp;
        val = tmp + (size_t)n_train * fs.row;
    }
    fprintf(stderr, "dinoscope fit: %lld training images, %lld held out for thresholds, %zu patches of %d dims each\n",
            (long long)n_train, (long long)n_val, N, D);

    ds_scorer_params sp = ds_scorer_defaults();
    sp.k = (int)knn_k;
    sp.max_components = (int)max_comp;
    sp.coreset_ratio = coreset;
    sp.patch_k = (int)patch_k;
    sp.metric = metric;
    sp.reduce = reduce;
    sp.seed = (uint64_t)seed;
    sp.n_threads = (int)threads;
    fit_progress fp = {0};
    sp.progress = on_progress;
    sp.progress_user = &fp;
    val_scores = malloc(sizeof(float) * (size_t)(n_val + 1));
    val_patch = malloc(sizeof(float) * N * (size_t)(n_val + 1));
    if (!val_scores || !val_patch) {
        rc = cli_error(cmd, "out of memory");
        goto done;
    }
    for (int k = 0; k < n_kinds; k++) {
        double t0 = cli_now_s();
        if (ds_scorer_fit(kinds[k], &sp, train, n_train, (int64_t)N, D, &scorers[k]) != DS_OK) {
            rc = cli_error(cmd, "%s: %s", ds_scorer_kind_name(kinds[k]), ds_last_error());
            goto done;
        }
        cli_progress_end(&fp.prog);
        fp.stage = NULL;
        n_scorers++;
        /* what the scorer adds to the model file and to memory at score time */
        double bytes = 0;
        for (int i = 0; i < ds_scorer_n_arrays(scorers[k]); i++) {
            ds_scorer_array a;
            if (ds_scorer_get_array(scorers[k], i, &a) == DS_OK)
                bytes += 4.0 * (double)a.shape[0] * (double)(a.n_dims > 1 ? a.shape[1] : 1);
        }
        fprintf(stderr, "dinoscope fit: %s fitted in %.1f s, %.1f MB of arrays\n", ds_scorer_kind_name(kinds[k]),
                cli_now_s() - t0, bytes / 1e6);
        if (kinds[k] == DS_SCORER_PADIM) {
            ds_scorer_params pp;
            if (ds_scorer_params_of(scorers[k], &pp) == DS_OK)
                fprintf(stderr, "dinoscope fit: padim memory: N*d*d*4 = %zu*%d*%d*4 bytes = %.1f MB\n",
                        N, pp.padim_dim, pp.padim_dim, 4.0 * (double)N * pp.padim_dim * pp.padim_dim / 1e6);
        }
        if (n_val > 0) {
            for (int64_t i = 0; i < n_val; i++)
                if (ds_scorer_score(scorers[k], val + (size_t)i * fs.row, (int64_t)N, (int)threads, &val_scores[i],
                                    ds_scorer_has_patch_scores(scorers[k]) ? val_patch + (size_t)i * N : NULL) != DS_OK) {
                    rc = cli_lib_error(cmd);
                    goto done;
                }
            calib[k].threshold_fpr = fpr;
            calib[k].n_val = (int)n_val;
            if (ds_eval_threshold_at_fpr(val_scores, n_val, fpr, &calib[k].threshold) != DS_OK) {
                rc = cli_lib_error(cmd);
                goto done;
            }
            calib[k].has_threshold = 1;
            /* overlay colour scale: twice the 99th percentile of normal patch scores */
            if (ds_scorer_has_patch_scores(scorers[k])) {
                /* map-level threshold for region outlines (slides): the same
                 * FPR over the pixels of the held-out normals' anomaly maps at
                 * SxS; image thresholds (max/top1% of patches) sit far above
                 * the smoothed map values and would outline nothing */
                size_t npx = (size_t)size * (size_t)size;
                float *maps = malloc(sizeof(float) * npx * (size_t)n_val);
                if (!maps) {
                    rc = cli_error(cmd, "out of memory for %lld held-out maps", (long long)n_val);
                    goto done;
                }
                for (int64_t i = 0; i < n_val; i++)
                    if (ds_anomaly_map(val_patch + (size_t)i * N, gh, gw, (int)size, 4.0f, (int)size, (int)size,
                                       maps + (size_t)i * npx) != DS_OK) {
                        free(maps);
                        rc = cli_lib_error(cmd);
                        goto done;
                    }
                if (ds_eval_threshold_at_fpr(maps, (int64_t)npx * n_val, fpr, &calib[k].map_threshold) != DS_OK) {
                    free(maps);
                    rc = cli_lib_error(cmd);
                    goto done;
                }
                free(maps);
                calib[k].has_map_threshold = 1;
                calib[k].map_vmax = 2.0f * percentile99(val_patch, (size_t)n_val * N);
            }
        }
    }
    char sha[65];
    if (ds_file_sha256(backbone_path, sha) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    ds_model_info info = {0};
    snprintf(info.backbone_file, sizeof info.backbone_file, "%s", backbone_path);
    memcpy(info.backbone_sha256, sha, sizeof sha);
    snprintf(info.backbone_arch, sizeof info.backbone_arch, "%s", ds_backbone_describe(bb));
    info.prep = io.prep;
    info.prep.size = (int)size;
    info.n_layers = (int)layers;
    info.grid_h = gh, info.grid_w = gw, info.dim = D;
    info.n_train = n_train;
    if (ds_model_save(out_path, &info, (const ds_scorer *const *)scorers, calib, n_scorers) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    fprintf(stderr, "dinoscope fit: wrote %s\n", out_path);
    rc = n_skipped ? CLI_SKIPPED : CLI_OK;
done:
    for (int k = 0; k < 4; k++) ds_scorer_free(scorers[k]);
    free(val_scores);
    free(val_patch);
    free(fs.feats);
    ds_backbone_free(bb);
    ds_image_list_free(list);
    free(inputs);
    return rc;
}
