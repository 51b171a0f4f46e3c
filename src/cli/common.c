#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/weights.h"

int cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "dinoscope %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_ERROR;
}

int cli_lib_error(const char *cmd) { return cli_error(cmd, "%s", ds_last_error()); }

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_double(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

void cli_image_opts_init(cli_image_opts *o) {
    memset(o, 0, sizeof *o);
    o->prep = ds_preprocess_defaults();
    ds_pipeline_params d = ds_pipeline_defaults();
    o->load = d.load;
}

/* ---- the shared option groups ------------------------------------------ */

static const char *set_stain(void *args, const char *v) {
    cli_image_opts *o = args;
    if (!strcmp(v, "clahe")) o->prep.stain = DS_STAIN_CLAHE;
    else if (!strcmp(v, "none")) o->prep.stain = DS_STAIN_NONE;
    else return "expected none or clahe";
    o->prep_given |= CLI_GIVEN_STAIN;
    return NULL;
}

static const char *set_clip(void *args, const char *v) {
    cli_image_opts *o = args;
    if (!cli_parse_double(v, 0.0, 1000.0, &o->prep.clahe_clip)) return "expected a number in [0, 1000]";
    o->prep_given |= CLI_GIVEN_CLIP;
    return NULL;
}

static const char *set_tiles(void *args, const char *v) {
    cli_image_opts *o = args;
    long l;
    if (!cli_parse_int(v, 1, 256, &l)) return "expected an integer in [1, 256]";
    o->prep.clahe_tiles = (int)l;
    o->prep_given |= CLI_GIVEN_TILES;
    return NULL;
}

static const char *set_window(void *args, const char *v) {
    cli_image_opts *o = args;
    double lo, hi;
    char extra;
    if (sscanf(v, "%lf,%lf%c", &lo, &hi, &extra) != 2 || !(lo < hi)) return "expected MIN,MAX with MIN < MAX";
    o->load.window_set = 1;
    o->load.window_min = lo;
    o->load.window_max = hi;
    return NULL;
}

static const char *set_window_preset(void *args, const char *v) {
    cli_image_opts *o = args;
    if (ds_image_window_preset(v, &o->load.voi_center, &o->load.voi_width) != DS_OK)
        return "expected lung, soft-tissue, bone or brain";
    o->load.voi_set = 1;
    return NULL;
}

static const char *set_frame(void *args, const char *v) {
    cli_image_opts *o = args;
    long l;
    if (!cli_parse_int(v, 0, 1 << 30, &l)) return "expected a frame index >= 0";
    o->load.frame = (int)l;
    return NULL;
}

static const char *set_max_pixels(void *args, const char *v) {
    cli_image_opts *o = args;
    long l;
    if (!cli_parse_int(v, 1, (long)1 << 40, &l)) return "expected a positive integer";
    o->load.max_pixels = l;
    return NULL;
}

#define FN_OPT(name, val, help, fn, def) {{name}, val, help, CLI_FN, 0, 0, 0, NULL, fn, def, 0}

/* --recursive stays last: commands that do not expand folders leave it out */
static const cli_opt image_opts[] = {
    CLI_FLAG_OPT(cli_image_opts, skip_bad, "--skip-bad", "skip unreadable inputs, list them at the end, exit 3"),
    FN_OPT("--window", "MIN,MAX", "map images of more than 8 bits by this window", set_window,
           "their 0.5/99.5 percentiles"),
    FN_OPT("--window-preset", "lung|soft-tissue|bone|brain",
           "DICOM: this CT window (HU, center/width -600/1500, 40/400, 400/1800, 40/80) instead of the file's",
           set_window_preset, "the file's first window"),
    FN_OPT("--frame", "N", "DICOM: frame N (0-based) of multi-frame files", set_frame, "0"),
    FN_OPT("--max-pixels", "N", "refuse images of more pixels than N (decompression bombs)", set_max_pixels,
           "268435456 = 2^28"),
    CLI_FLAG_OPT(cli_image_opts, recursive, "--recursive", "look for images in subfolders of folder inputs too"),
};

static const cli_opt prep_opts[] = {
    FN_OPT("--stain-norm", "none|clahe", "CLAHE on the L channel of LAB before resizing (OpenCV semantics)",
           set_stain, "none"),
    FN_OPT("--clahe-clip", "X", "CLAHE clip limit (OpenCV clipLimit)", set_clip, "2"),
    FN_OPT("--clahe-tiles", "N", "CLAHE tile grid N x N (OpenCV tileGridSize)", set_tiles, "8"),
};

cli_group cli_image_group(cli_image_opts *o, bool with_recursive) {
    return (cli_group){"reading images", image_opts, CLI_N(image_opts) - (with_recursive ? 0 : 1), o};
}

/* --window and --window-preset (the second and third entries) */
cli_group cli_window_group(cli_image_opts *o) { return (cli_group){"windowing", image_opts + 1, 2, o}; }

cli_group cli_prep_group(cli_image_opts *o, const char *title) {
    return (cli_group){title ? title : "preprocessing", prep_opts, CLI_N(prep_opts), o};
}

static const cli_opt model_opts[] = {
    CLI_STR_OPT(cli_model_opts, model, "--model", "MODEL", "fitted model file (from dinoscope fit)", CLI_REQUIRED),
    {{"--backbone", "--weights"}, "W", "weights file to use instead of the path stored in the model", CLI_STR,
     offsetof(cli_model_opts, backbone), 0, 0, NULL, NULL, NULL, 0},
    CLI_FLAG_OPT(cli_model_opts, force_backbone, "--force-backbone",
                 "accept a backbone whose SHA-256 differs from the one the model was fitted with"),
    {{"--nprobe"}, "N", "ivfpq banks: lists visited per query (recall against speed)", CLI_INT,
     offsetof(cli_model_opts, nprobe), 1, 1 << 24, NULL, NULL, "the model's", 0},
    CLI_INT_OPT(cli_model_opts, batch, "--batch", "B", "images per backbone call", 1, 4096),
    {{"-t", "--threads"}, "T", "threads, 0 = all cores", CLI_INT, offsetof(cli_model_opts, threads), 0, 1024, NULL,
     NULL, NULL, 0},
};

cli_group cli_model_group(cli_model_opts *o) { return (cli_group){"model", model_opts, CLI_N(model_opts), o}; }
/* the last two entries of model_opts */
cli_group cli_run_group(cli_model_opts *o) { return (cli_group){"compute", model_opts + 4, 2, o}; }

void cli_close_model(ds_model **model, ds_backbone **bb) {
    ds_backbone_free(*bb);
    ds_model_free(*model);
    *bb = NULL;
    *model = NULL;
}

static const cli_opt backbone_opts[] = {
    CLI_STR_OPT(cli_backbone_opts, preset, "--preset", "NAME",
                "a published model's settings the weights cannot tell (normalisation, input size, layers, "
                "embedding): uni, uni2-h, virchow2, h-optimus-0, prov-gigapath, biomedclip, phikon, phikon-v2, "
                "rad-dino, dinov2", 0),
    CLI_CHOICE_OPT(cli_backbone_opts, dtype, "--dtype", "f32|bf16",
                   "compute type of the ViT's Linear layers and the CNN's convolutions (bf16: bf16 products, fp32 sums; "
                   "AVX-512 BF16 where the CPU has it); score, eval and slide use the model's"),
};

cli_group cli_backbone_group(cli_backbone_opts *o) { return (cli_group){"backbone", backbone_opts, CLI_N(backbone_opts), o}; }

ds_backbone_params cli_backbone_params(const cli_backbone_opts *o, long threads) {
    return (ds_backbone_params){.n_threads = (int)threads, .preset = o->preset,
                                .dtype = o->dtype == 1 ? DS_DTYPE_BF16 : DS_DTYPE_F32};
}

void cli_backbone_cmd_init(cli_backbone_cmd *c, cli_group groups[4]) {
    memset(c, 0, sizeof *c);
    c->run.batch = 1;
    cli_image_opts_init(&c->io);
    groups[0] = cli_backbone_group(&c->bo);
    groups[1] = cli_run_group(&c->run);
    groups[2] = cli_image_group(&c->io, true);
    groups[3] = cli_prep_group(&c->io, NULL);
}

static const cli_opt tile_opts[] = {
    {{"--tile"}, "S", "score each image in S x S tiles at its native pixel size (large images: mammograms, "
                      "radiographs); maps stitched by overlap averaging, image score reduced over all tiles "
                      "(eval's --folds stays whole-image)",
     CLI_INT, offsetof(cli_tile_opts, tile), 14, 65536, NULL, NULL, "off: the whole image resized to the model input", 0},
    CLI_REAL_OPT(cli_tile_opts, overlap, "--overlap", "F", "with --tile: overlap of neighbouring tiles", 0, 0.95),
    CLI_FLAG_OPT(cli_tile_opts, stride_shift, "--stride-shift",
                 "also score the input with its token grid shifted by half a patch (7 px for /14) down, right and both; "
                 "patch scores averaged on the twice finer grid (against patch dilution; 4 forward passes; eval's "
                 "--folds stays as it is)"),
};

cli_tile_opts cli_tile_opts_default(void) { return (cli_tile_opts){.tile = 0, .overlap = ds_tile_defaults().overlap}; }

cli_group cli_tile_group(cli_tile_opts *o) { return (cli_group){"finer scoring", tile_opts, CLI_N(tile_opts), o}; }

ds_tile_params cli_tile_params(const cli_tile_opts *t, const cli_model_opts *mo) {
    ds_tile_params p = ds_tile_defaults();
    p.tile_px = (int)t->tile;
    p.overlap = t->overlap;
    if (mo->batch > 1) p.batch = (int)mo->batch;
    p.n_threads = (int)mo->threads;
    return p;
}

int cli_backbone_cmd_parse(const cli_spec *spec, const cli_group *own, int n_own, cli_backbone_cmd *c, int argc,
                           char **argv) {
    if (n_own < 1 || n_own > 2) return cli_error(spec->name, "internal error: %d own option groups", n_own);
    cli_group groups[6];
    memcpy(groups, own, sizeof *own * (size_t)n_own);
    cli_backbone_cmd_init(c, groups + n_own);
    return cli_parse(spec, groups, n_own + 4, argc, argv, &c->pos);
}

int cli_model_cmd_parse(const cli_spec *spec, cli_group own, bool with_recursive, cli_model_cmd *c, int argc,
                        char **argv) {
    c->pos = (cli_positional){0};
    c->mo = (cli_model_opts){.batch = 1};
    c->to = cli_tile_opts_default();
    cli_image_opts_init(&c->io);
    cli_group groups[] = {own, cli_model_group(&c->mo), cli_image_group(&c->io, with_recursive),
                          cli_prep_group(&c->io, "preprocessing (the model's; a flag that differs is refused)"),
                          cli_tile_group(&c->to)};
    return cli_parse(spec, groups, CLI_N(groups), argc, argv, spec->positional ? &c->pos : NULL);
}

/* ---- opening a model ----------------------------------------------------- */

/* The preprocessing flags given that disagree with the model's, or NULL. */
static const char *prep_conflict(const cli_image_opts *io, const ds_preprocess_params *mp) {
    if ((io->prep_given & CLI_GIVEN_STAIN) && io->prep.stain != mp->stain) return "--stain-norm";
    bool clahe = mp->stain == DS_STAIN_CLAHE;
    if ((io->prep_given & CLI_GIVEN_CLIP) && (!clahe || io->prep.clahe_clip != mp->clahe_clip)) return "--clahe-clip";
    if ((io->prep_given & CLI_GIVEN_TILES) && (!clahe || io->prep.clahe_tiles != mp->clahe_tiles)) return "--clahe-tiles";
    return NULL;
}

static int open_backbone(const char *cmd, const cli_model_opts *mo, const ds_model *m, ds_backbone **bb) {
    const ds_model_info *in = ds_model_get_info(m);
    const char *bpath = mo->backbone ? mo->backbone : in->backbone_file;
    char sha[65];
    if (ds_file_sha256(bpath, sha) != DS_OK)
        return cli_error(cmd, "backbone of the model: %s (use --backbone to point to the weights file)", ds_last_error());
    bool sha_differs = strcmp(sha, in->backbone_sha256) != 0;
    if (sha_differs && !mo->force_backbone)
        return cli_error(cmd, "backbone '%s' (sha256 %.12s...) is not the one the model was fitted with (sha256 %.12s..., '%s'); use --force-backbone to override",
                         bpath, sha, in->backbone_sha256, in->backbone_file);
    /* the preset the model was fitted with, recorded in its architecture */
    ds_backbone_params bp = {.n_threads = (int)mo->threads, .preset = ds_backbone_preset_in(in->backbone_arch),
                             .dtype = strstr(in->backbone_arch, " dtype=bf16") ? DS_DTYPE_BF16 : DS_DTYPE_F32};
    if (ds_backbone_load(bpath, &bp, bb) != DS_OK) return cli_lib_error(cmd);
    if (ds_model_check_backbone(m, *bb) != DS_OK) {
        ds_backbone_free(*bb);
        *bb = NULL;
        return cli_lib_error(cmd);
    }
    if (sha_differs) fprintf(stderr, "dinoscope %s: warning: backbone sha256 differs from the model's (--force-backbone)\n", cmd);
    return CLI_OK;
}

int cli_open_model(const char *cmd, const cli_model_opts *mo, cli_image_opts *io, bool want_backbone, ds_model **model,
                   ds_backbone **bb) {
    ds_model *m = NULL;
    if (ds_model_load(mo->model, &m) != DS_OK) return cli_lib_error(cmd);
    const ds_model_info *in = ds_model_get_info(m);
    const char *conflict = io ? prep_conflict(io, &in->prep) : NULL;
    if (conflict) {
        cli_error(cmd, "%s differs from the model's preprocessing (stain-norm %s, clip %g, tiles %d), which is always used: drop the flag",
                  conflict, in->prep.stain == DS_STAIN_CLAHE ? "clahe" : "none", in->prep.clahe_clip, in->prep.clahe_tiles);
        ds_model_free(m);
        return CLI_ERROR;
    }
    if (io) io->prep = in->prep;
    if (mo->nprobe > 0 && ds_model_set_nprobe(m, (int)mo->nprobe) != DS_OK) {
        cli_error(cmd, "--nprobe %ld: %s", mo->nprobe, ds_last_error());
        ds_model_free(m);
        return CLI_ERROR;
    }
    if (want_backbone && open_backbone(cmd, mo, m, bb) != CLI_OK) {
        ds_model_free(m);
        return CLI_ERROR;
    }
    *model = m;
    return CLI_OK;
}

double cli_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_start(cli_progress *p, const char *label, int64_t total) {
    p->label = label;
    p->total = total;
    p->t0 = cli_now_s();
    p->last_print = 0;
    p->active = false;
}

static void fmt_duration(double s, char *buf, size_t n) {
    if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

void cli_progress_update(cli_progress *p, int64_t done) {
    double now = cli_now_s();
    /* only bother the user after 2 s, then at most 4 times a second on a
     * terminal, every 30 s in a log file */
    double every = isatty(2) ? 0.25 : 30.0;
    if (now - p->t0 < 2.0 || now - p->last_print < every) return;
    p->last_print = now;
    p->active = true;
    char eta[32] = "?";
    if (done > 0) fmt_duration((now - p->t0) / (double)done * (double)(p->total - done), eta, sizeof eta);
    fprintf(stderr, isatty(2) ? "\r%s %lld/%lld (%.1f%%) ETA %s   " : "%s %lld/%lld (%.1f%%) ETA %s\n", p->label, (long long)done, (long long)p->total,
            p->total ? 100.0 * (double)done / (double)p->total : 100.0, eta);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (!p->active) return;
    char el[32];
    fmt_duration(cli_now_s() - p->t0, el, sizeof el);
    fprintf(stderr, isatty(2) ? "\r%s %lld/%lld done in %s            \n" : "%s %lld/%lld done in %s\n", p->label, (long long)p->total, (long long)p->total, el);
    p->active = false;
}

void cli_on_stage_progress(const char *stage, int64_t done, int64_t total, void *user) {
    cli_stage_progress *p = user;
    if (p->stage != stage) {
        cli_progress_end(&p->prog);
        cli_progress_start(&p->prog, stage, total);
        p->stage = stage;
    }
    cli_progress_update(&p->prog, done);
}

void cli_stage_progress_end(cli_stage_progress *p) {
    cli_progress_end(&p->prog);
    p->stage = NULL;
}
