/* eval --scores: the report from score tables (`dinoscope score`, e.g. the
 * parts of `score --shard I/N`) instead of a feature pass. The test images
 * and their labels come from --data, in its order, each image's scores from
 * the row of the tables with its path, so that one table or its parts in
 * any order give the same figures. Image-level figures only: the tables
 * hold no maps. */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/eval_data.h"
#include "cli/eval_scores.h"

/* Splits one CSV line (score's quoting: "..." with "" for a quote) into at
 * most max fields, in place. Returns the count, or -1 on a bad quote. */
static int csv_split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max) return -1;
        if (*p == '"') {
            char *w = ++p;
            f[n++] = w;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"' && p[1] == '"') *w++ = '"', p += 2;
                else if (*p == '"') break;
                else *w++ = *p++;
            }
            *w = 0;
            p++;
            if (*p && *p != ',') return -1;
        } else {
            f[n++] = p;
            p += strcspn(p, ",");
        }
        if (!*p) return n;
        *p++ = 0;
    }
}

typedef struct {
    float scores[DS_MODEL_MAX_SCORERS];
    double ms;
} score_row;

/* The rows of every table, by path; checks that the columns are the model's. */
static int read_tables(const char *cmd, const char *list, const ds_model *m, GHashTable *rows, int *n_files) {
    int n_sc = ds_model_n_scorers(m), rc = CLI_OK;
    char **files = g_strsplit(list, ",", -1);
    *n_files = 0;
    for (int fi = 0; files[fi] && rc == CLI_OK; fi++) {
        char *text = NULL;
        GError *err = NULL;
        if (!g_file_get_contents(files[fi], &text, NULL, &err)) {
            rc = cli_error(cmd, "--scores: cannot read '%s': %s", files[fi], err->message);
            g_error_free(err);
            break;
        }
        (*n_files)++;
        char **lines = g_strsplit(text, "\n", -1);
        enum { MAXF = 3 * DS_MODEL_MAX_SCORERS + 3 };
        char *f[MAXF];
        int col[DS_MODEL_MAX_SCORERS], ms_col = -1;
        int nf = lines[0] ? csv_split(lines[0], f, MAXF) : -1;
        for (int k = 0; k < n_sc; k++) {
            col[k] = -1;
            const char *name = ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(m, k)));
            for (int j = 1; j < nf; j++)
                if (!strcmp(f[j], name)) col[k] = j;
            if (col[k] < 0 && rc == CLI_OK)
                rc = cli_error(cmd, "--scores: '%s' has no column '%s' of the model's scorers (scored with another model?)",
                               files[fi], name);
        }
        for (int j = 1; j < nf; j++)
            if (!strcmp(f[j], "ms")) ms_col = j;
        if (rc == CLI_OK && (nf < 2 || strcmp(f[0], "path")))
            rc = cli_error(cmd, "--scores: '%s' is not a table of `dinoscope score` (CSV with a 'path' column)", files[fi]);
        for (int li = 1; lines[li] && rc == CLI_OK; li++) {
            if (!lines[li][0]) continue;
            int n = csv_split(lines[li], f, MAXF);
            score_row r = {0};
            for (int k = 0; k < n_sc && n == nf; k++) {
                char *end;
                r.scores[k] = strtof(f[col[k]], &end);
                if (*end || end == f[col[k]]) n = -1;
            }
            if (n != nf) {
                rc = cli_error(cmd, "--scores: '%s' line %d is malformed", files[fi], li + 1);
                break;
            }
            r.ms = ms_col > 0 ? atof(f[ms_col]) : 0;
            if (g_hash_table_contains(rows, f[0])) {
                rc = cli_error(cmd, "--scores: '%s' is scored twice (overlapping parts?)", f[0]);
                break;
            }
            g_hash_table_insert(rows, g_strdup(f[0]), g_memdup2(&r, sizeof r));
        }
        g_strfreev(lines);
        g_free(text);
    }
    g_strfreev(files);
    return rc;
}

int eval_scores_report(const char *cmd, const char *list, const ds_model *m, const eval_items *items, ds_report *r) {
    GHashTable *rows = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    int n_files = 0, n_test = 0;
    int rc = read_tables(cmd, list, m, rows, &n_files);
    for (int i = 0; i < items->n && rc == CLI_OK; i++) {
        const eval_item *it = &items->v[i];
        if (!it->test) continue;
        const score_row *sr = g_hash_table_lookup(rows, it->path);
        if (!sr) {
            rc = cli_error(cmd, "--scores: no row for the test image '%s' (a part missing?)", it->path);
            break;
        }
        ds_report_image im = {.path = it->path, .label = it->label, .defect = it->defect, .mask_path = it->mask,
                              .scores = sr->scores, .prep_ms = sr->ms};
        if (ds_report_add_image(r, &im, NULL) != DS_OK) rc = cli_lib_error(cmd);
        n_test++;
    }
    if (rc == CLI_OK) {
        char note[256];
        snprintf(note, sizeof note, "Scores of the %d test images read from %d score table%s (--scores): image-level "
                 "figures only; timings are each image's total.", n_test, n_files, n_files > 1 ? "s" : "");
        if (ds_report_add_note(r, note) != DS_OK) rc = cli_lib_error(cmd);
    }
    g_hash_table_destroy(rows);
    return rc;
}
