/* dinoscope slide --model MODEL --out DIR [options] SLIDE... */
#include <math.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/shard.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/wsi.h"

typedef struct {
    const char *out;
    long tile, level, map_step, overview;
    double overlap, mpp, threshold, map_vmax;
    int tissue; /* index in "otsu|all" */
    const char *scorer, *shard;
    bool resume, skip_bad;
} slide_args;

static const cli_opt slide_opts[] = {
    CLI_STR_OPT(slide_args, out, "--out", "DIR", "output folder: one subfolder per slide", CLI_REQUIRED),
    CLI_INT_OPT(slide_args, tile, "--tile", "N", "tile size in pixels of the chosen level", 32, 8192),
    CLI_REAL_OPT(slide_args, overlap, "--overlap", "F", "overlap of neighbouring tiles", 0, 0.95),
    {{"--level"}, "L", "pyramid level", CLI_INT, offsetof(slide_args, level), 0, 1000, NULL, NULL,
     "0, or the one --mpp picks", 0},
    {{"--mpp"}, "X", "the level nearest to X microns per pixel (instead of --level)", CLI_REAL, offsetof(slide_args, mpp),
     1e-3, 1e4, NULL, NULL, "off", 0},
    CLI_CHOICE_OPT(slide_args, tissue, "--tissue", "otsu|all", "score only tiles touching tissue, or every tile"),
    CLI_FLAG_OPT(slide_args, resume, "--resume",
                 "continue DIR/<slide>/checkpoint.bin: only missing tiles are computed (same --batch)"),
    {{"--scorer"}, "KIND", "scorer of the heatmap: knn or gaussian give one score per tile, spread over the tile",
     CLI_STR, offsetof(slide_args, scorer), 0, 0, NULL, NULL,
     "the model's map scorer: patchbank, else padim, else its first", 0},
    {{"--threshold"}, "X", "heatmap threshold for anomalous regions", CLI_REAL, offsetof(slide_args, threshold), -1e30,
     1e30, NULL, NULL, "the model's calibrated one", 0},
    {{"--map-vmax"}, "X", "top of the colour scale", CLI_REAL, offsetof(slide_args, map_vmax), 1e-12, 1e12, NULL, NULL,
     "the model's", 0},
    CLI_INT_OPT(slide_args, map_step, "--map-step", "N", "level pixels per heatmap pixel", 1, 8192),
    CLI_INT_OPT(slide_args, overview, "--overview-px", "N", "longest side of overview.png", 16, 16384),
    CLI_FLAG_OPT(slide_args, skip_bad, "--skip-bad", "go on with the next slide after an error (exit 3)"),
    CLI_STR_OPT(slide_args, shard, "--shard", "I/N", "score part I of N of the slides given (every N-th from the I-th)", 0),
};

static const cli_spec slide_spec = {
    "slide", "--model MODEL --out DIR [options] SLIDE...",
    "  Scores whole-slide images (every format OpenSlide reads: SVS, NDPI, MRXS, SCN, generic tiled TIFF, ...)\n"
    "  tile by tile. Per slide, in DIR/<slide name>/: heatmap.tif (float scores, pyramidal), heatmap_rgb.tif\n"
    "  (colour), overview.png, anomalies.geojson (QuPath annotations, level-0 pixels), tiles.csv,\n"
    "  summary.json and checkpoint.bin.\n",
    "SLIDES", true};

typedef struct {
    cli_progress prog;
    bool started;
    int64_t first_done;
    long stop_after; /* testing: signal ourselves after this many checkpointed batches */
    int stop_signal; /* SIGKILL, or SIGINT/SIGTERM ("N:INT", "N:TERM") */
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
        raise(sp->stop_signal); /* SIGKILL as `kill -9`: no cleanup, checkpoint left as is; SIGINT as Ctrl-C */
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

/* Library parameters from the options; prints the error and returns false on a conflict. */
static bool run_params(const char *cmd, const slide_args *a, const cli_model_opts *mo, ds_wsi_run_params *p) {
    *p = ds_wsi_run_defaults();
    p->tile_px = (int)a->tile;
    p->overlap = a->overlap;
    p->level = (int)a->level; /* -1: not given (the library picks by --mpp, else level 0) */
    p->mpp_um = a->mpp;
    p->batch = (int)mo->batch;
    p->n_threads = (int)mo->threads;
    p->map_vmax = (float)a->map_vmax;
    p->map_step_px = (int)a->map_step;
    p->overview_px = (int)a->overview;
    p->tissue_all = a->tissue == 1;
    p->resume = a->resume;
    if (!isnan(a->threshold)) p->threshold = (float)a->threshold, p->has_threshold = 1;
    if (a->scorer) {
        ds_scorer_kind k;
        if (ds_scorer_kind_parse(a->scorer, &k) != DS_OK) {
            cli_error(cmd, "--scorer: unknown scorer '%s'", a->scorer);
            return false;
        }
        p->scorer = (int)k;
    }
    if (a->level >= 0 && a->mpp > 0) {
        cli_error(cmd, "give --level or --mpp, not both");
        return false;
    }
    if (p->map_step_px > p->tile_px) {
        cli_error(cmd, "--map-step (%d) must not exceed --tile (%d)", p->map_step_px, p->tile_px);
        return false;
    }
    return true;
}

static void print_result(const char *path, const char *dir, const ds_wsi_run_result *r) {
    if (r->checkpoint_torn)
        fprintf(stderr, "dinoscope slide: %s: the checkpoint's last record was incomplete (killed while writing) and was dropped\n", path);
    if (r->threads_differ)
        fprintf(stderr, "dinoscope slide: %s: note: the checkpoint was written with another --threads; the outputs "
                        "equal an uninterrupted run's only to float rounding\n", path);
    char mpp[64] = "mpp unknown";
    if (r->mpp_x_um > 0) snprintf(mpp, sizeof mpp, "%.4g um/px", r->mpp_x_um * r->downsample);
    double tps = r->score_ms > 0 ? 1e3 * (double)r->n_tiles_computed / r->score_ms : 0;
    fprintf(stderr,
            "dinoscope slide: %s: level %d (%lldx%lld px, %s), %lld of %lld tiles touch tissue, %lld computed "
            "(%.1f tiles/s), %lld from the checkpoint; %d anomalous region%s at threshold %.6g -> %s\n",
            path, r->level, (long long)r->level_w_px, (long long)r->level_h_px, mpp, (long long)r->n_tiles_tissue,
            (long long)r->n_tiles_grid, (long long)r->n_tiles_computed, tps, (long long)r->n_tiles_resumed, r->n_regions,
            r->n_regions == 1 ? "" : "s", r->threshold, dir);
}

int cmd_slide(int argc, char **argv) {
    const char *cmd = "slide";
    slide_args a = {.level = -1, .tile = 512, .overlap = 0.5, .map_step = 16, .overview = 1024, .threshold = NAN};
    cli_model_opts mo = {.batch = 16};
    cli_group groups[] = {{"options", slide_opts, CLI_N(slide_opts), &a}, cli_model_group(&mo)};
    cli_positional pos;
    int rc = cli_parse(&slide_spec, groups, CLI_N(groups), argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    ds_wsi_run_params p;
    ds_model *model = NULL;
    ds_backbone *bb = NULL;
    int sh_i = 0, sh_n = 1;
    rc = !run_params(cmd, &a, &mo, &p) ? CLI_USAGE
         : a.shard && cli_parse_shard(cmd, a.shard, &sh_i, &sh_n) != CLI_OK ? CLI_ERROR
         : cli_open_model(cmd, &mo, NULL, true, &model, &bb);
    if (rc != CLI_OK) {
        free(pos.v);
        return rc;
    }
    /* testing: "N" SIGKILLs ourselves after N checkpointed batches, "N:INT"
     * and "N:TERM" send that signal instead (the cleanup handlers run) */
    const char *kill_after = getenv("DINOSCOPE_TEST_KILL_AFTER_BATCHES");
    const char *kill_sig = kill_after ? strchr(kill_after, ':') : NULL;
    int stop_signal = !kill_sig ? SIGKILL : !strcmp(kill_sig, ":INT") ? SIGINT : !strcmp(kill_sig, ":TERM") ? SIGTERM : SIGKILL;
    GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    int n_failed = 0;
    rc = CLI_OK;
    for (int i = 0; i < pos.n && rc == CLI_OK; i++) {
        char *dir = slide_dir(a.out, pos.v[i], i, seen); /* every slide's, so that the parts name folders alike */
        if (!ds_shard_has(i, sh_i, sh_n)) {
            g_free(dir);
            continue;
        }
        char *label = g_strdup_printf("%s: tiles", pos.v[i]);
        slide_progress sp = {.stop_after = kill_after ? atol(kill_after) : 0, .stop_signal = stop_signal,
                               .label = label};
        p.progress = on_progress;
        p.progress_user = &sp;
        ds_wsi_run_result r;
        ds_status st = ds_wsi_run(model, bb, pos.v[i], dir, &p, &r);
        if (sp.started) cli_progress_end(&sp.prog);
        if (st != DS_OK) {
            cli_lib_error(cmd);
            n_failed++;
            if (!a.skip_bad) rc = CLI_ERROR;
        } else {
            print_result(pos.v[i], dir, &r);
        }
        g_free(dir);
        g_free(label);
    }
    if (rc == CLI_OK && n_failed) rc = CLI_SKIPPED;
    g_hash_table_destroy(seen);
    cli_close_model(&model, &bb);
    free(pos.v);
    return rc;
}
