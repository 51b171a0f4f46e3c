/* dinoscope merge --out MODEL PART...          (partial models from fit --shard)
 * dinoscope merge --scores --out all.csv A.csv B.csv ...  (score --shard outputs)
 *
 * Models: the library's ds_model_merge (shard.h) refits every scorer on the
 * union of the parts. Scores: the parts' rows interleaved back into the
 * order of one run (row j of part i was input i + j*N), under one header. */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/shard.h"

typedef struct {
    const char *out;
    bool scores;
    long threads;
} merge_args;

static const cli_opt merge_opts[] = {
    CLI_STR_OPT(merge_args, out, "--out", "FILE", "the merged model (or, with --scores, the merged CSV)", CLI_REQUIRED),
    CLI_FLAG_OPT(merge_args, scores, "--scores",
                 "merge score CSVs of `score --shard I/N` (given in shard order 0..N-1) instead of models"),
    CLI_INT_OPT(merge_args, threads, "--threads", "T", "threads, 0 = auto", 0, 1024),
};

static const cli_spec merge_spec = {
    "merge", "--out MODEL [options] PART...",
    "  Merges the partial models of `fit --shard I/N` (or --shard-list) into one model: the patch bank\n"
    "  is a coreset of the union of the parts' banks, knn/gaussian/padim are refitted on the pooled\n"
    "  statistics, the thresholds recalibrated on the union of the held-out normals. The parts must\n"
    "  share the backbone, preprocessing, scorers and parameters, and be all N parts of the split.\n"
    "  With --scores, joins score CSVs of `score --shard` into the table one run would write.\n",
    "PART", true};

/* The parts' lines (header first), round-robin: row j of part i is input
 * i + j*N when the parts are given in shard order. */
static int merge_scores(const char *cmd, const cli_positional *pos, const char *out) {
    int n = pos->n, rc = CLI_OK;
    char **text = calloc((size_t)n, sizeof *text);
    char ***lines = calloc((size_t)n, sizeof *lines);
    int *n_lines = calloc((size_t)n, sizeof *n_lines);
    GString *o = g_string_new(NULL);
    if (!text || !lines || !n_lines) rc = cli_error(cmd, "out of memory");
    int max_rows = 0;
    for (int i = 0; i < n && rc == CLI_OK; i++) {
        GError *err = NULL;
        if (!g_file_get_contents(pos->v[i], &text[i], NULL, &err)) {
            rc = cli_error(cmd, "cannot read '%s': %s", pos->v[i], err->message);
            g_error_free(err);
            break;
        }
        lines[i] = g_strsplit(text[i], "\n", -1);
        int k = 0;
        while (lines[i][k]) k++;
        while (k > 0 && !lines[i][k - 1][0]) k--; /* the trailing newline */
        n_lines[i] = k;
        if (k < 1 || strncmp(lines[i][0], "path,", 5))
            rc = cli_error(cmd, "'%s' is not a scores CSV of `dinoscope score` (no 'path,...' header)", pos->v[i]);
        else if (i > 0 && strcmp(lines[i][0], lines[0][0]))
            rc = cli_error(cmd, "'%s' and '%s' have different columns ('%s' vs '%s'): scored with different models?",
                           pos->v[0], pos->v[i], lines[0][0], lines[i][0]);
        if (k - 1 > max_rows) max_rows = k - 1;
    }
    if (rc == CLI_OK) {
        g_string_append_printf(o, "%s\n", lines[0][0]);
        for (int j = 1; j <= max_rows; j++)
            for (int i = 0; i < n; i++)
                if (j < n_lines[i]) g_string_append_printf(o, "%s\n", lines[i][j]);
        rc = cli_write_text(cmd, out, o->str, o->len);
    }
    if (rc == CLI_OK) {
        int rows = 0;
        for (int i = 0; i < n; i++) rows += n_lines[i] - 1;
        fprintf(stderr, "dinoscope merge: wrote %d rows of %d parts to %s\n", rows, n, out);
    }
    for (int i = 0; i < n && lines; i++) {
        g_strfreev(lines[i]);
        g_free(text[i]);
    }
    g_string_free(o, TRUE);
    free(text);
    free(lines);
    free(n_lines);
    return rc;
}

int cmd_merge(int argc, char **argv) {
    const char *cmd = "merge";
    merge_args a = {0};
    cli_group groups[] = {{"options", merge_opts, CLI_N(merge_opts), &a}};
    cli_positional pos;
    int rc = cli_parse(&merge_spec, groups, CLI_N(groups), argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    if (a.scores) {
        rc = merge_scores(cmd, &pos, a.out);
    } else {
        cli_stage_progress prog = {0};
        ds_merge_params mp = {.n_threads = (int)a.threads, .progress = cli_on_stage_progress, .progress_user = &prog};
        fprintf(stderr, "dinoscope merge: %d partial models\n", pos.n);
        rc = ds_model_merge(pos.v, pos.n, &mp, a.out) == DS_OK ? CLI_OK : cli_lib_error(cmd);
        cli_stage_progress_end(&prog);
        if (rc == CLI_OK) fprintf(stderr, "dinoscope merge: wrote %s\n", a.out);
    }
    free(pos.v);
    return rc;
}
