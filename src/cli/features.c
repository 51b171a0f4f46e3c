/* The feature pass of the commands: the library's loop (ds_pipeline_run)
 * with progress and the --skip-bad report on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

typedef struct {
    const char *cmd;
    cli_progress prog;
    const char **skipped; /* [n] paths skipped */
    int n_skipped;
} pass_state;

static void on_progress(const char *stage, int64_t done, int64_t total, void *user) {
    (void)stage, (void)total;
    cli_progress_update(&((pass_state *)user)->prog, done);
}

static void on_skip(void *user, int index, const char *path, const char *reason) {
    (void)index;
    pass_state *s = user;
    fprintf(stderr, "dinoscope %s: skipping: %s\n", s->cmd, reason);
    s->skipped[s->n_skipped++] = path;
}

int cli_feature_pass(const char *cmd, ds_backbone *bb, const cli_image_opts *io, const cli_feature_opts *fo,
                     const ds_image_list *list, ds_pipeline_sink sink, void *ud, int *n_skipped) {
    pass_state s = {.cmd = cmd, .skipped = calloc((size_t)list->n + 1, sizeof(char *))};
    if (!s.skipped) return cli_error(cmd, "out of memory");
    ds_pipeline_params p = ds_pipeline_defaults();
    p.size = fo->size;
    p.n_layers = fo->n_layers;
    p.batch = fo->batch;
    p.want_cls = fo->want_cls;
    p.keep_original = fo->keep_original;
    p.skip_bad = io->skip_bad;
    p.prep = io->prep;
    p.load = io->load;
    p.progress = on_progress;
    p.progress_user = &s;
    p.on_skip = on_skip;
    p.skip_user = &s;
    cli_progress_start(&s.prog, cmd, list->n);
    ds_status st = ds_pipeline_run(bb, &p, (const char *const *)list->paths, NULL, list->n, sink, ud, NULL);
    cli_progress_end(&s.prog);
    int rc = st == DS_OK ? CLI_OK : st == DS_ERR_STOPPED ? CLI_ERROR : cli_lib_error(cmd);
    if (s.n_skipped > 0) {
        fprintf(stderr, "dinoscope %s: skipped %d bad input%s:\n", cmd, s.n_skipped, s.n_skipped > 1 ? "s" : "");
        for (int k = 0; k < s.n_skipped; k++) fprintf(stderr, "  %s\n", s.skipped[k]);
    }
    *n_skipped = s.n_skipped;
    free(s.skipped);
    return rc;
}
