/* The feature pass of the commands: the library's loop (ds_pipeline_run)
 * with progress and the --skip-bad report on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

static void on_progress(const char *stage, int64_t done, int64_t total, void *user) {
    (void)stage, (void)total;
    cli_progress_update(&((cli_pass *)user)->prog, done);
}

static void on_skip(void *user, int index, const char *path, const char *reason) {
    (void)index;
    cli_pass *s = user;
    fprintf(stderr, "dinoscope %s: skipping: %s\n", s->cmd, reason);
    s->skipped[s->n_skipped++] = path;
}

int cli_pass_begin(const char *cmd, const cli_image_opts *io, const cli_feature_opts *fo, int n, cli_pass *s,
                   ds_pipeline_params *p) {
    *s = (cli_pass){.cmd = cmd, .skipped = calloc((size_t)n + 1, sizeof(char *))};
    if (!s->skipped) return cli_error(cmd, "out of memory");
    *p = ds_pipeline_defaults();
    p->size = fo->size;
    p->n_layers = fo->n_layers;
    p->batch = fo->batch;
    p->want_cls = fo->want_cls;
    p->keep_original = fo->keep_original;
    p->skip_bad = io->skip_bad;
    p->prep = io->prep;
    p->load = io->load;
    p->progress = on_progress;
    p->progress_user = s;
    p->on_skip = on_skip;
    p->skip_user = s;
    cli_progress_start(&s->prog, cmd, n);
    return CLI_OK;
}

int cli_pass_end(cli_pass *s, ds_status st, int *n_skipped) {
    cli_progress_end(&s->prog);
    int rc = st == DS_OK ? CLI_OK : st == DS_ERR_STOPPED ? CLI_ERROR : cli_lib_error(s->cmd);
    if (s->n_skipped > 0) {
        fprintf(stderr, "dinoscope %s: skipped %d bad input%s:\n", s->cmd, s->n_skipped, s->n_skipped > 1 ? "s" : "");
        for (int k = 0; k < s->n_skipped; k++) fprintf(stderr, "  %s\n", s->skipped[k]);
    }
    *n_skipped = s->n_skipped;
    free(s->skipped);
    s->skipped = NULL;
    return rc;
}

int cli_feature_pass(const char *cmd, ds_backbone *bb, const cli_image_opts *io, const cli_feature_opts *fo,
                     const ds_image_list *list, ds_pipeline_sink sink, void *ud, int *n_skipped) {
    cli_pass s;
    ds_pipeline_params p;
    if (cli_pass_begin(cmd, io, fo, list->n, &s, &p) != CLI_OK) return CLI_ERROR;
    ds_status st = ds_pipeline_run(bb, &p, (const char *const *)list->paths, NULL, list->n, sink, ud, NULL);
    return cli_pass_end(&s, st, n_skipped);
}
