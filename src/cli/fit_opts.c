/* The scorer options of the commands that fit a model (fit, volume fit):
 * one table (cli.h: cli_fit_group) and its translation into ds_fit_params. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/scorer.h"

static const cli_opt fit_opts[] = {
    CLI_STR_OPT(cli_fit_opts, scorer, "--scorer", "LIST",
                "comma list of knn, gaussian, patchbank, padim, flow, or all (= knn,gaussian,patchbank)", 0),
    {{"--size"}, "S", "network input S x S", CLI_INT, offsetof(cli_fit_opts, size), 1, 8192, NULL, NULL,
     "518 DINOv2, 224 CNNs", 0},
    {{"--layers"}, "N", "mean of the last N blocks, each through the final norm", CLI_INT, offsetof(cli_fit_opts, layers), 1,
     1000, NULL, NULL, "4, or the --preset's", 0},
    CLI_FLAG_OPT(cli_fit_opts, per_patch, "--gaussian-per-patch",
                 "also fit padim (PaDiM: a Gaussian per patch position over 100 random channels; maps; "
                 "N*100*100*4 bytes, 55 MB for DINOv2 at 518)"),
    CLI_INT_OPT(cli_fit_opts, knn_k, "--knn-k", "K", "knn: neighbours (the K-th one's distance is the score)", 1, 100000),
    CLI_INT_OPT(cli_fit_opts, max_comp, "--max-components", "C", "gaussian: PCA components at most", 1, 100000),
    CLI_REAL_OPT(cli_fit_opts, coreset, "--coreset", "R", "patchbank: coreset ratio (1 = keep every patch)", 1e-9, 1.0),
    CLI_CHOICE_OPT(cli_fit_opts, coreset_method, "--coreset-method", "auto|exact|blocked",
                   "patchbank: exact greedy, or the composable blocked coreset (docs/scale.md); auto = exact up to "
                   "2^19 training patches"),
    CLI_INT_OPT(cli_fit_opts, coreset_block, "--coreset-block", "N", "patchbank, blocked coreset: points per block (0 = 16384)",
                0, 1L << 40),
    CLI_INT_OPT(cli_fit_opts, patch_k, "--patch-k", "K", "patchbank: the K-th nearest bank patch scores a patch", 1, 100000),
    CLI_CHOICE_OPT(cli_fit_opts, metric, "--metric", "l2|cosine", "patchbank: distance"),
    CLI_CHOICE_OPT(cli_fit_opts, reduce, "--reduce", "max|top1pct", "patchbank/padim: image score from the patch scores"),
    CLI_CHOICE_OPT(cli_fit_opts, bank, "--bank", "f32|bf16|f16|int8|ivfpq",
                   "knn/patchbank: how the bank is stored and searched (docs/bank.md; ivfpq: patchbank only, knn "
                   "keeps f32)"),
    CLI_INT_OPT(cli_fit_opts, nprobe, "--nprobe", "N", "ivfpq: lists visited per query, stored in the model (score/eval "
                "--nprobe overrides it; 0 = 16)", 0, 1 << 24),
    CLI_INT_OPT(cli_fit_opts, ivf_lists, "--ivf-lists", "N", "ivfpq: coarse k-means lists (0 = sqrt(bank rows))", 0, 1 << 24),
    CLI_INT_OPT(cli_fit_opts, pq_m, "--pq-m", "M", "ivfpq: one-byte codes per row, must divide D (0 = the divisor nearest "
                "D/4)", 0, 65535),
    CLI_INT_OPT(cli_fit_opts, seed, "--seed", "N", "seed of the random choices (coreset start, padim channels)", 0,
                1L << 62),
    CLI_INT_OPT(cli_fit_opts, flow_dim, "--flow-dim", "N", "flow: PCA-whitened dimensions (0 = D)", 0, 100000),
    CLI_INT_OPT(cli_fit_opts, flow_blocks, "--flow-blocks", "N", "flow: coupling blocks", 1, 64),
    CLI_INT_OPT(cli_fit_opts, flow_pos_dim, "--flow-pos-dim", "N", "flow: positional-encoding channels (a multiple of 4)", 4, 1024),
    CLI_INT_OPT(cli_fit_opts, flow_hidden, "--flow-hidden", "N", "flow: subnet hidden units (0 = 2*(d/2 + P))", 0, 100000),
    CLI_INT_OPT(cli_fit_opts, flow_epochs, "--flow-epochs", "N", "flow: maximum epochs", 1, 100000),
    CLI_INT_OPT(cli_fit_opts, flow_epoch_patches, "--flow-epoch-patches", "N", "flow: patches per epoch (0 = all)", 0,
                1L << 40),
    CLI_INT_OPT(cli_fit_opts, flow_batch, "--flow-batch", "N", "flow: patches per Adam step", 1, 1 << 20),
    CLI_REAL_OPT(cli_fit_opts, flow_lr, "--flow-lr", "X", "flow: Adam learning rate", 1e-9, 1.0),
    CLI_INT_OPT(cli_fit_opts, flow_patience, "--flow-patience", "N",
                "flow: stop after N epochs without a better held-out likelihood", 1, 100000),
    CLI_REAL_OPT(cli_fit_opts, val_split, "--val-split", "F",
                 "fraction of the normal images held out to set thresholds (needs >= 10 images)", 0.0, 0.5),
    CLI_REAL_OPT(cli_fit_opts, fpr, "--fpr", "P", "false-positive rate of the stored thresholds on the held-out normals",
                 0.0, 1.0),
};

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
static void report_fitted(void *user, int k, const ds_scorer *sc, double seconds) {
    cli_fit_report *r = user;
    size_t N = r->N;
    cli_stage_progress_end(r->prog);
    double bytes = 0;
    for (int i = 0; i < ds_scorer_n_arrays(sc); i++) {
        ds_scorer_array a;
        if (ds_scorer_get_array(sc, i, &a) == DS_OK)
            bytes += (double)ds_array_dtype_size(a.dtype) * (double)a.shape[0] * (double)(a.n_dims > 1 ? a.shape[1] : 1);
    }
    ds_scorer_kind kind = ds_scorer_get_kind(sc);
    fprintf(stderr, "dinoscope fit: %s fitted in %.1f s, %.1f MB of arrays\n", ds_scorer_kind_name(kind), seconds, bytes / 1e6);
    ds_scorer_params pp;
    if (kind == DS_SCORER_PADIM && ds_scorer_params_of(sc, &pp) == DS_OK)
        fprintf(stderr, "dinoscope fit: padim memory: N*d*d*4 = %zu*%d*%d*4 bytes = %.1f MB\n", N, pp.padim_dim, pp.padim_dim,
                4.0 * (double)N * pp.padim_dim * pp.padim_dim / 1e6);
}

static ds_scorer_params scorer_params(const cli_fit_opts *a, int threads, cli_stage_progress *prog) {
    ds_scorer_params sp = ds_fit_defaults().scorer;
    sp.k = (int)a->knn_k;
    sp.max_components = (int)a->max_comp;
    sp.coreset_ratio = a->coreset;
    sp.patch_k = (int)a->patch_k;
    sp.metric = (ds_metric)a->metric;
    sp.reduce = (ds_reduce)a->reduce;
    sp.coreset_method = (ds_coreset_method)a->coreset_method;
    sp.coreset_block = a->coreset_block;
    sp.bank_repr = (ds_bank_repr)a->bank;
    sp.nprobe = (int)a->nprobe, sp.ivf_nlist = (int)a->ivf_lists, sp.pq_m = (int)a->pq_m;
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

void cli_fit_opts_init(cli_fit_opts *a) {
    *a = (cli_fit_opts){.scorer = "all", .knn_k = 5, .max_comp = 512, .patch_k = 1, .coreset = 0.1,
                        .val_split = 0.1, .fpr = 0.01, .metric = DS_METRIC_COSINE,
                        .reduce = DS_REDUCE_TOP1PCT /* measured: see README "Choosing the image score" */};
    const ds_scorer_params fd = ds_fit_defaults().scorer; /* the flow's defaults are the library's */
    a->flow_dim = fd.flow_dim, a->flow_blocks = fd.flow_blocks, a->flow_pos_dim = fd.flow_pos_dim;
    a->flow_hidden = fd.flow_hidden, a->flow_epochs = fd.flow_epochs, a->flow_epoch_patches = fd.flow_epoch_patches;
    a->flow_batch = fd.flow_batch, a->flow_lr = fd.flow_lr, a->flow_patience = fd.flow_patience;
    a->bank = (int)fd.bank_repr;
}

cli_group cli_fit_group(cli_fit_opts *o) { return (cli_group){"scorers", fit_opts, CLI_N(fit_opts), o}; }

int cli_fit_params(const char *cmd, const cli_fit_opts *a, long threads, cli_fit_report *rep, ds_fit_params *fp) {
    ds_scorer_kind kinds[DS_MODEL_MAX_SCORERS];
    int n_kinds = parse_scorers(a->scorer, a->per_patch, kinds, DS_MODEL_MAX_SCORERS);
    if (n_kinds < 1)
        return cli_error(cmd, "--scorer must be a comma list of knn, gaussian, patchbank, padim, flow, or 'all'; got '%s'",
                         a->scorer);
    *fp = ds_fit_defaults();
    fp->n_kinds = n_kinds;
    memcpy(fp->kinds, kinds, sizeof(ds_scorer_kind) * (size_t)n_kinds);
    fp->scorer = scorer_params(a, (int)threads, rep->prog);
    fp->val_split = a->val_split;
    fp->fpr = a->fpr;
    fp->on_fitted = report_fitted;
    fp->on_fitted_user = rep;
    return CLI_OK;
}
