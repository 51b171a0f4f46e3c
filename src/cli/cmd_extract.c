/* dinoscope extract --weights FILE [options] --out FEATS.npy IMAGE...|DIR|CSV
 * Writes float32 [n_images, N, D] (or [n_images, D] with --cls). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "dinoscope/npy.h"

typedef struct {
    const char *weights, *out;
    long size, layers;
    bool cls;
} extract_args;

static const cli_opt extract_opts[] = {
    {{"--weights", "--backbone"}, "FILE", "backbone weights (safetensors or .pth)", CLI_STR,
     offsetof(extract_args, weights), 0, 0, NULL, NULL, NULL, CLI_REQUIRED},
    CLI_STR_OPT(extract_args, out, "--out", "FEATS.npy", "output features", CLI_REQUIRED),
    {{"--size"}, "S", "network input S x S", CLI_INT, offsetof(extract_args, size), 1, 8192, NULL, NULL,
     "518 DINOv2, 224 CNNs", 0},
    {{"--layers"}, "N", "mean of the last N blocks, each through the final norm", CLI_INT, offsetof(extract_args, layers),
     1, 1000, NULL, NULL, "4, or the --preset's", 0},
    CLI_FLAG_OPT(extract_args, cls, "--cls", "last-layer CLS tokens [n, D] instead of patch tokens"),
};

static const cli_spec extract_spec = {
    "extract", "--weights FILE --out FEATS.npy [options] IMAGE...|DIR|CSV",
    "  Writes DINOv2 features as float32 .npy: [n_images, N, D] patch tokens (mean of the last N\n"
    "  layers, each through the final norm), or [n_images, D] last-layer CLS tokens with --cls.\n",
    "IMAGES", true};

typedef struct {
    ds_npy_writer *w;
    size_t row;
    int64_t n_rows;
} extract_state;

static int extract_sink(void *ud, const ds_pipeline_item *it) {
    extract_state *s = ud;
    if (ds_npy_writer_append(s->w, it->cls ? it->cls : it->feats, s->row) != DS_OK) return cli_lib_error("extract");
    s->n_rows++;
    return 0;
}

static int run_extract(const char *cmd, const extract_args *a, const cli_backbone_opts *bo, const cli_model_opts *run,
                       const cli_image_opts *io, const ds_image_list *list) {
    ds_backbone *bb = NULL;
    ds_backbone_params bp = cli_backbone_params(bo, run->threads);
    if (ds_backbone_load(a->weights, &bp, &bb) != DS_OK) return cli_lib_error(cmd);
    int layers = a->layers ? (int)a->layers : ds_backbone_default_layers(bb);
    int size = a->size ? (int)a->size : ds_backbone_native_size(bb), gh, gw, D, rc = CLI_ERROR, n_skipped = 0;
    extract_state s = {0};
    if (ds_backbone_grid(bb, size, size, &gh, &gw, &D) != DS_OK) {
        rc = cli_error(cmd, "--size %d: %s", size, ds_last_error());
        goto done;
    }
    int64_t shape[3] = {list->n, a->cls ? D : (int64_t)gh * gw, D};
    s.row = a->cls ? (size_t)D : (size_t)gh * gw * D;
    if (ds_npy_writer_open(a->out, a->cls ? 2 : 3, shape, &s.w) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    cli_feature_opts fo = {.size = size, .n_layers = layers, .batch = (int)run->batch, .want_cls = a->cls};
    rc = cli_feature_pass(cmd, bb, io, &fo, list, extract_sink, &s, &n_skipped);
    if (rc == CLI_OK && s.n_rows == 0) rc = cli_error(cmd, "no image could be read; nothing written");
    if (ds_npy_writer_close(s.w, rc == CLI_OK, s.n_rows) != DS_OK && rc == CLI_OK) rc = cli_lib_error(cmd);
    if (rc == CLI_OK) {
        if (a->cls) fprintf(stderr, "dinoscope %s: wrote %s [%lld, %d]\n", cmd, a->out, (long long)s.n_rows, D);
        else fprintf(stderr, "dinoscope %s: wrote %s [%lld, %d, %d]\n", cmd, a->out, (long long)s.n_rows, gh * gw, D);
        if (n_skipped) rc = CLI_SKIPPED;
    }
done:
    ds_backbone_free(bb);
    return rc;
}

int cmd_extract(int argc, char **argv) {
    const char *cmd = "extract";
    extract_args a = {0};
    cli_backbone_cmd c;
    const cli_group own = {"options", extract_opts, CLI_N(extract_opts), &a};
    int rc = cli_backbone_cmd_parse(&extract_spec, &own, 1, &c, argc, argv);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    ds_image_list *list;
    rc = cli_expand_images(cmd, &c.pos, c.io.recursive, &list);
    if (rc == CLI_OK) rc = run_extract(cmd, &a, &c.bo, &c.run, &c.io, list);
    ds_image_list_free(list);
    free(c.pos.v);
    return rc;
}
