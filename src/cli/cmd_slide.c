/* dinoscope slide --model MODEL --out DIR [options] SLIDE... */
#include <errno.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/weights.h"
#include "dinoscope/wsi.h"

static const char *USAGE =
    "usage: dinoscope slide --model MODEL --out DIR [options] SLIDE...\n"
    "  Scores whole-slide images (every format OpenSlide reads: SVS, NDPI, MRXS, SCN, generic tiled TIFF, ...)\n"
    "  tile by tile. Per slide, in DIR/<slide name>/: heatmap.tif (float scores, pyramidal), heatmap_rgb.tif\n"
    "  (colour), overview.png, anomalies.geojson (QuPath annotations, level-0 pixels), tiles.csv,\n"
    "  summary.json and checkpoint.bin.\n"
    "  --tile N (512)  --overlap F (0.5)  tile size in pixels of the chosen level, and overlap\n"
    "  --level L | --mpp X   pyramid level, or the level nearest to X microns per pixel (default level 0)\n"
    "  --tissue otsu|all (otsu)  score only tiles touching tissue, or every tile\n"
    "  --batch B (16)  tiles per backbone call; --resume needs the same B\n"
    "  --threads T (0 = auto)\n"
    "  --resume    continue DIR/<slide>/checkpoint.bin: only missing tiles are computed\n"
    "  --scorer KIND   scorer of the heatmap: patchbank (default when the model has it: patch-level maps),\n"
    "                  knn or gaussian (one score per tile, spread over the tile)\n"
    "  --threshold X   heatmap threshold for anomalous regions (default: the model's calibrated one)\n"
    "  --map-vmax X    top of the colour scale (default: the model's)\n"
    "  --map-step N (16)  level pixels per heatmap pixel\n"
    "  --overview-px N (1024)  longest side of overview.png\n"
    "  --backbone W  --force-backbone  --skip-bad (go on with the next slide after an error; exit 3)\n";

typedef struct {
    cli_progress prog;
    bool started;
    int64_t first_done;
    long stop_after; /* testing: SIGKILL ourselves after this many checkpointed batches */
    long batches;
    const char *label;
} slide_progress;

static void on_progress(const char *stage, int64_t done, int64_t total, void *user) {
    slide_progress *sp = user;
    if (strcmp(stage, "tiles") != 0) return;
    if (!sp->started) {
        /* ETA over the tiles left, not those taken from the checkpoint */
        sp->started = true;
        sp->first_done = done;
        cli_progress_start(&sp->prog, sp->label, total - done);
        return;
    }
    cli_progress_update(&sp->prog, done - sp->first_done);
    if (sp->stop_after > 0 && ++sp->batches >= sp->stop_after) {
        fflush(stderr);
        raise(SIGKILL); /* as `kill -9`: no cleanup, checkpoint left as is */
    }
}

/* DIR/<base name without extension>, made unique with the input index. */
static char *slide_dir(const char *out, const char *path, int index, GHashTable *seen) {
    char *base = g_path_get_basename(path);
    char *dot = strrchr(base, '.');
    if (dot && dot != base) *dot = 0;
    if (g_hash_table_contains(seen, base)) {
        char *u = g_strdup_printf("%s_%d", base, index);
        g_free(base);
        base = u;
    }
    g_hash_table_add(seen, g_strdup(base));
    char *dir = g_build_filename(out, base, NULL);
    g_free(base);
    return dir;
}

int cmd_slide(int argc, char **argv) {
    const char *cmd = "slide", *model_path = NULL, *out_dir = NULL, *backbone_override = NULL;
    ds_wsi_run_params p = ds_wsi_run_defaults();
    long l = 0;
    double d = 0;
    bool force = false, skip_bad = false, have_level = false;
    long stop_after = 0;
    const char **inputs = calloc((size_t)argc, sizeof(char *));
    int n_inputs = 0, rc = CLI_USAGE;
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    if (!inputs) return cli_error(cmd, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            rc = CLI_OK;
            goto done;
        }
        if (!strcmp(a, "--resume")) {
            p.resume = 1;
            continue;
        }
        if (!strcmp(a, "--force-backbone")) {
            force = true;
            continue;
        }
        if (!strcmp(a, "--skip-bad")) {
            skip_bad = true;
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
        if (!strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "--out")) out_dir = v;
        else if (!strcmp(a, "--backbone") || !strcmp(a, "--weights")) backbone_override = v;
        else if (!strcmp(a, "--tile")) ok = cli_parse_int(v, 32, 8192, &l), p.tile_px = (int)l;
        else if (!strcmp(a, "--overlap")) ok = cli_parse_double(v, 0, 0.95, &d), p.overlap = d;
        else if (!strcmp(a, "--level")) ok = cli_parse_int(v, 0, 1000, &l), p.level = (int)l, have_level = true;
        else if (!strcmp(a, "--mpp")) ok = cli_parse_double(v, 1e-3, 1e4, &d), p.mpp_um = d;
        else if (!strcmp(a, "--batch")) ok = cli_parse_int(v, 1, 4096, &l), p.batch = (int)l;
        else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, 0, 1024, &l), p.n_threads = (int)l;
        else if (!strcmp(a, "--threshold")) ok = cli_parse_double(v, -1e30, 1e30, &d), p.threshold = (float)d, p.has_threshold = 1;
        else if (!strcmp(a, "--map-vmax")) ok = cli_parse_double(v, 1e-12, 1e12, &d), p.map_vmax = (float)d;
        else if (!strcmp(a, "--map-step")) ok = cli_parse_int(v, 1, 8192, &l), p.map_step_px = (int)l;
        else if (!strcmp(a, "--overview-px")) ok = cli_parse_int(v, 16, 16384, &l), p.overview_px = (int)l;
        else if (!strcmp(a, "--stop-after-batches")) ok = cli_parse_int(v, 1, 1L << 30, &stop_after); /* tests */
        else if (!strcmp(a, "--scorer")) {
            ds_scorer_kind k;
            ok = ds_scorer_kind_parse(v, &k) == DS_OK;
            p.scorer = (int)k;
        } else if (!strcmp(a, "--tissue")) {
            ok = !strcmp(v, "otsu") || !strcmp(v, "all");
            p.tissue_all = !strcmp(v, "all");
        } else {
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            goto done;
        }
        if (!ok) {
            cli_error(cmd, "bad value '%s' for %s (see --help)", v, a);
            goto done;
        }
    }
    if (!model_path || !out_dir || n_inputs == 0) {
        fputs(USAGE, stderr);
        goto done;
    }
    if (have_level && p.mpp_um > 0) {
        cli_error(cmd, "give --level or --mpp, not both");
        goto done;
    }
    if (p.map_step_px > p.tile_px) {
        cli_error(cmd, "--map-step (%d) must not exceed --tile (%d)", p.map_step_px, p.tile_px);
        goto done;
    }
    rc = CLI_ERROR;
    if (ds_model_load(model_path, &model) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    const ds_model_info *in = ds_model_get_info(model);
    const char *bpath = backbone_override ? backbone_override : in->backbone_file;
    char sha[65];
    if (ds_file_sha256(bpath, sha) != DS_OK) {
        rc = cli_error(cmd, "backbone of the model: %s (use --backbone to point to the weights file)", ds_last_error());
        goto done;
    }
    if (strcmp(sha, in->backbone_sha256) != 0) {
        if (!force) {
            rc = cli_error(cmd, "backbone '%s' (sha256 %.12s...) is not the one the model was fitted with (sha256 %.12s..., '%s'); use --force-backbone to override",
                           bpath, sha, in->backbone_sha256, in->backbone_file);
            goto done;
        }
        fprintf(stderr, "dinoscope slide: warning: backbone sha256 differs from the model's (--force-backbone)\n");
    }
    if (ds_backbone_load(bpath, &(ds_backbone_params){.n_threads = p.n_threads}, &bb) != DS_OK) {
        rc = cli_lib_error(cmd);
        goto done;
    }
    int n_failed = 0;
    for (int i = 0; i < n_inputs; i++) {
        char *dir = slide_dir(out_dir, inputs[i], i, seen);
        char *label = g_strdup_printf("%s: tiles", inputs[i]);
        slide_progress sp = {.stop_after = stop_after, .label = label};
        p.progress = on_progress;
        p.progress_user = &sp;
        ds_wsi_run_result r;
        ds_status st = ds_wsi_run(model, bb, inputs[i], dir, &p, &r);
        if (sp.started) cli_progress_end(&sp.prog);
        if (st != DS_OK) {
            cli_lib_error(cmd);
            n_failed++;
        } else {
            if (r.checkpoint_torn)
                fprintf(stderr, "dinoscope slide: %s: the checkpoint's last record was incomplete (killed while writing) and was dropped\n",
                        inputs[i]);
            if (r.threads_differ)
                fprintf(stderr, "dinoscope slide: %s: note: the checkpoint was written with another --threads; the outputs "
                                "equal an uninterrupted run's only to float rounding\n",
                        inputs[i]);
            char mpp[64] = "mpp unknown";
            if (r.mpp_x_um > 0) snprintf(mpp, sizeof mpp, "%.4g um/px", r.mpp_x_um * r.downsample);
            double tps = r.score_ms > 0 ? 1e3 * (double)r.n_tiles_computed / r.score_ms : 0;
            fprintf(stderr,
                    "dinoscope slide: %s: level %d (%lldx%lld px, %s), %lld of %lld tiles touch tissue, %lld computed "
                    "(%.1f tiles/s), %lld from the checkpoint; %d anomalous region%s at threshold %.6g -> %s\n",
                    inputs[i], r.level, (long long)r.level_w_px, (long long)r.level_h_px, mpp,
                    (long long)r.n_tiles_tissue, (long long)r.n_tiles_grid, (long long)r.n_tiles_computed, tps,
                    (long long)r.n_tiles_resumed, r.n_regions, r.n_regions == 1 ? "" : "s", r.threshold, dir);
        }
        g_free(dir);
        g_free(label);
        if (st != DS_OK && !skip_bad) goto done;
    }
    rc = n_failed ? CLI_SKIPPED : CLI_OK;
done:
    g_hash_table_destroy(seen);
    ds_backbone_free(bb);
    ds_model_free(model);
    free(inputs);
    return rc;
}
