#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/npy.h"

int cli_feature_pass(const char *cmd, ds_backbone *bb, const cli_image_opts *io, const cli_feature_opts *fo,
                     const ds_image_list *list, cli_feature_sink sink, void *ud, int *n_skipped) {
    int gh, gw, D;
    if (ds_backbone_grid(bb, fo->size, fo->size, &gh, &gw, &D) != DS_OK) return cli_error(cmd, "--size: %s", ds_last_error());
    size_t N = (size_t)gh * gw, S = (size_t)fo->size, B = (size_t)fo->batch;
    float *input = malloc(sizeof(float) * B * 3 * S * S);
    float *feats = malloc(sizeof(float) * B * N * (size_t)D);
    float *cls = fo->want_cls ? malloc(sizeof(float) * B * (size_t)D) : NULL;
    int *index = malloc(sizeof(int) * B);
    cli_feature_timing *timing = malloc(sizeof(cli_feature_timing) * B);
    ds_image **originals = calloc(B, sizeof(ds_image *));
    char **skipped = calloc((size_t)list->n + 1, sizeof(char *));
    int n_skip = 0, rc = CLI_OK;
    if (!input || !feats || (fo->want_cls && !cls) || !index || !timing || !originals || !skipped) {
        rc = cli_error(cmd, "out of memory (batch %d at %dx%d)", fo->batch, fo->size, fo->size);
        goto done;
    }
    ds_preprocess_params prep = io->prep;
    prep.size = fo->size;
    cli_progress prog;
    cli_progress_start(&prog, cmd, list->n);
    int i = 0;
    while (i < list->n && rc == CLI_OK) {
        int nb = 0;
        for (; i < list->n && nb < fo->batch; i++) {
            ds_image *img = NULL, *ready = NULL;
            double t0 = cli_now_s();
            ds_status st = ds_image_load(list->paths[i], &io->load, &img);
            if (st == DS_OK) st = ds_preprocess_image(img, &prep, &ready);
            if (st != DS_OK) {
                ds_image_free(img);
                if (!io->skip_bad) {
                    rc = cli_lib_error(cmd);
                    break;
                }
                fprintf(stderr, "dinoscope %s: skipping: %s\n", cmd, ds_last_error());
                skipped[n_skip++] = list->paths[i];
                continue;
            }
            ds_backbone_normalize(bb, ready, input + (size_t)nb * 3 * S * S);
            ds_image_free(ready);
            if (fo->keep_original) originals[nb] = img;
            else ds_image_free(img);
            timing[nb].prep_ms = 1e3 * (cli_now_s() - t0);
            index[nb++] = i;
        }
        if (rc == CLI_OK && nb > 0) {
            double t0 = cli_now_s();
            if (ds_backbone_forward(bb, input, nb, fo->size, fo->size, fo->n_layers, feats, cls) != DS_OK)
                rc = cli_lib_error(cmd);
            double per = 1e3 * (cli_now_s() - t0) / nb;
            for (int b = 0; b < nb; b++) timing[b].backbone_ms = per;
            for (int b = 0; b < nb && rc == CLI_OK; b++)
                rc = sink(ud, index[b], list->paths[index[b]], originals[b], feats + (size_t)b * N * D,
                          cls ? cls + (size_t)b * D : NULL, &timing[b]);
        }
        for (int b = 0; b < nb; b++) {
            ds_image_free(originals[b]);
            originals[b] = NULL;
        }
        cli_progress_update(&prog, i);
    }
    cli_progress_end(&prog);
    if (n_skip > 0) {
        fprintf(stderr, "dinoscope %s: skipped %d bad input%s:\n", cmd, n_skip, n_skip > 1 ? "s" : "");
        for (int k = 0; k < n_skip; k++) fprintf(stderr, "  %s\n", skipped[k]);
    }
    *n_skipped = n_skip;
done:
    free(input);
    free(feats);
    free(cls);
    free(index);
    free(timing);
    free(originals);
    free(skipped);
    return rc;
}

typedef struct {
    ds_npy_writer *w;
    size_t row;
    int64_t n_rows;
} extract_state;

static int extract_sink(void *ud, int index, const char *path, const ds_image *original, const float *feats,
                        const float *cls, const cli_feature_timing *timing) {
    extract_state *s = ud;
    if (ds_npy_writer_append(s->w, cls ? cls : feats, s->row) != DS_OK) return cli_lib_error("extract");
    s->n_rows++;
    return CLI_OK;
}

int cli_extract_run(const char *cmd, const char *weights_path, int size, int layers, int batch, int threads, bool want_cls,
                    const cli_image_opts *io, const char **inputs, int n_inputs, const char *out_path) {
    ds_image_list *list = NULL;
    ds_backbone *bb = NULL;
    int rc = CLI_ERROR, n_skipped = 0;
    if (ds_image_list_expand(inputs, n_inputs, io->recursive, &list) != DS_OK) return cli_lib_error(cmd);
    if (list->n == 0) {
        rc = cli_error(cmd, "no images found in the inputs");
        goto done;
    }
    if (ds_backbone_load(weights_path, &(ds_backbone_params){.n_threads = threads}, &bb) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    if (size == 0) size = ds_backbone_native_size(bb);
    int gh, gw, D;
    if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) {
        rc = cli_error(cmd, "--size %d: %s", size, ds_last_error());
        goto done;
    }
    extract_state s = {0};
    int64_t shape[3] = {list->n, (int64_t)gh * gw, D};
    if (want_cls) shape[1] = D;
    s.row = want_cls ? (size_t)D : (size_t)gh * gw * D;
    if (ds_npy_writer_open(out_path, want_cls ? 2 : 3, shape, &s.w) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    cli_feature_opts fo = {.size = size, .n_layers = layers, .batch = batch, .want_cls = want_cls};
    rc = cli_feature_pass(cmd, bb, io, &fo, list, extract_sink, &s, &n_skipped);
    if (rc == CLI_OK && s.n_rows == 0) rc = cli_error(cmd, "no image could be read; nothing written");
    if (ds_npy_writer_close(s.w, rc == CLI_OK, s.n_rows) != DS_OK && rc == CLI_OK) rc = cli_lib_error(cmd);
    if (rc == CLI_OK) {
        if (want_cls)
            fprintf(stderr, "dinoscope %s: wrote %s [%lld, %d]\n", cmd, out_path, (long long)s.n_rows, D);
        else
            fprintf(stderr, "dinoscope %s: wrote %s [%lld, %d, %d]\n", cmd, out_path, (long long)s.n_rows, gh * gw, D);
        if (n_skipped) rc = CLI_SKIPPED;
    }
done:
    ds_backbone_free(bb);
    ds_image_list_free(list);
    return rc;
}
