/* The dinoscope command-line tool: a thin user of the public API. Each
 * subcommand lives in cmd_<name>.c, declares its options in one table
 * (args.h) and returns the process exit status: 0 success, 1 error (one
 * line on stderr), 2 usage, 3 finished but some inputs were skipped
 * (--skip-bad). Shared steps live here: the image and model option groups,
 * opening a model with its backbone, the feature pass with progress. */
#ifndef DS_CLI_H
#define DS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/args.h"
#include "dinoscope/backbone.h"
#include "dinoscope/dinoscope.h"
#include "dinoscope/image.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"
#include "dinoscope/preprocess.h"

enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2, CLI_SKIPPED = 3 };

int cmd_extract(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_slide(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_help(int argc, char **argv);
int cmd_volume(int argc, char **argv);

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} cli_command;
extern const cli_command cli_commands[]; /* commands.c */
extern const int cli_n_commands;
/* The top-level usage text: the command list (commands.c). */
void cli_usage(FILE *fp);

/* Prints "dinoscope <cmd>: <message>\n" to stderr; returns CLI_ERROR. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the library's last error prefixed with the command name; CLI_ERROR. */
int cli_lib_error(const char *cmd);

/* Strict number parsing: false if s is not entirely a number in [lo, hi]. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
bool cli_parse_double(const char *s, double lo, double hi, double *out);

/* ---- option groups shared by several commands (common.c) -------------- */

/* Reading images: --skip-bad --window --max-pixels [--recursive], and the
 * preprocessing: --stain-norm --clahe-clip --clahe-tiles. prep_given has a
 * bit per preprocessing flag the user gave (commands that take the
 * preprocessing from a model refuse ones that disagree with it). */
enum { CLI_GIVEN_STAIN = 1, CLI_GIVEN_CLIP = 2, CLI_GIVEN_TILES = 4 };
typedef struct {
    ds_preprocess_params prep;
    ds_image_load_params load;
    bool recursive;
    bool skip_bad;
    unsigned prep_given;
} cli_image_opts;
void cli_image_opts_init(cli_image_opts *o);
/* The groups "images" (with --recursive when folders are expanded) and
 * "preprocessing" over o. */
cli_group cli_image_group(cli_image_opts *o, bool with_recursive);
cli_group cli_prep_group(cli_image_opts *o, const char *title);
/* "windowing": --window and --window-preset alone (volumes). */
cli_group cli_window_group(cli_image_opts *o);

/* --model (required), --backbone/--weights, --force-backbone, --nprobe; --batch, --threads. */
typedef struct {
    const char *model;
    const char *backbone; /* override of the model's backbone path */
    bool force_backbone;
    long nprobe;          /* 0: the model's */
    long batch;
    long threads;
} cli_model_opts;
cli_group cli_model_group(cli_model_opts *o);
/* --batch and --threads alone, for commands without a model (fit, extract). */
cli_group cli_run_group(cli_model_opts *o);

/* Options of the backbone a command loads from a weights file (extract,
 * fit): --preset, --dtype. ds_backbone_params from them and the thread count. */
typedef struct {
    const char *preset;
    int dtype; /* index in "f32|bf16" */
} cli_backbone_opts;
cli_group cli_backbone_group(cli_backbone_opts *o);
ds_backbone_params cli_backbone_params(const cli_backbone_opts *o, long threads);

/* The options of a command that runs a backbone from a weights file over
 * images (extract, fit): --preset/--dtype, --batch/--threads, the image
 * reading and preprocessing groups. cli_backbone_cmd_init sets the defaults
 * and fills groups[4] with those groups, in that order. */
typedef struct {
    cli_backbone_opts bo;
    cli_model_opts run;
    cli_image_opts io;
    cli_positional pos; /* the inputs (free pos.v) */
} cli_backbone_cmd;
void cli_backbone_cmd_init(cli_backbone_cmd *c, cli_group groups[4]);
/* cli_backbone_cmd_init, then cli_parse over the command's own groups
 * (n_own <= 2) followed by those four. Returns cli_parse's status. */
int cli_backbone_cmd_parse(const cli_spec *spec, const cli_group *own, int n_own, cli_backbone_cmd *c, int argc,
                           char **argv);

/* Scoring finer than one resize to the model input (score, eval): tiles
 * at the native pixel size (--tile S, --overlap F) or half-patch shifted
 * inputs (--stride-shift). */
typedef struct {
    long tile; /* 0: whole images */
    double overlap;
    bool stride_shift;
} cli_tile_opts;
/* tile 0, overlap ds_tile_defaults()'s. Can't fail. */
cli_tile_opts cli_tile_opts_default(void);
cli_group cli_tile_group(cli_tile_opts *o);
/* ds_tile_params from the options and the model group's --batch/--threads. */
ds_tile_params cli_tile_params(const cli_tile_opts *t, const cli_model_opts *mo);

/* The options of a command that scores with a fitted model (score, eval):
 * the model group, image reading (with --recursive when with_recursive),
 * the preprocessing (the model's) and tiled scoring. Parses them after the
 * command's own group, as cli_backbone_cmd_parse (c->pos is left empty
 * when the spec takes no positional arguments). */
typedef struct {
    cli_model_opts mo;
    cli_image_opts io;
    cli_tile_opts to;
    cli_positional pos; /* the inputs, for specs that take them (free pos.v) */
} cli_model_cmd;
int cli_model_cmd_parse(const cli_spec *spec, cli_group own, bool with_recursive, cli_model_cmd *c, int argc,
                        char **argv);

/* Loads the model; refuses --stain-norm/--clahe-* flags of io that differ
 * from the model's preprocessing, then sets io->prep to the model's (io may
 * be NULL); with want_backbone also loads the backbone (the stored path or
 * --backbone), checks its SHA-256 against the model's (a mismatch is an
 * error unless --force-backbone, then a warning) and its architecture.
 * Prints the error and returns CLI_ERROR on failure (nothing to free then). */
int cli_open_model(const char *cmd, const cli_model_opts *mo, cli_image_opts *io, bool want_backbone, ds_model **model,
                   ds_backbone **bb);

/* Frees what cli_open_model opened and clears the pointers (NULLs are fine). */
void cli_close_model(ds_model **model, ds_backbone **bb);

/* ---- progress, files (common.c, inputs.c) ------------------------------ */


/* Progress on stderr when it is long enough to matter: "\r<label> 12/300 (4.0%) ETA 1m20s". */
typedef struct {
    const char *label;
    int64_t total;
    double t0;
    double last_print;
    bool active;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *label, int64_t total);
void cli_progress_update(cli_progress *p, int64_t done);
void cli_progress_end(cli_progress *p);
double cli_now_s(void);

/* A ds_progress_fn that shows each stage of a library call as its own
 * progress line (user: a cli_stage_progress, zero-initialised). */
typedef struct {
    cli_progress prog;
    const char *stage;
} cli_stage_progress;
void cli_on_stage_progress(const char *stage, int64_t done, int64_t total, void *user);
void cli_stage_progress_end(cli_stage_progress *p);

/* Checks every header of list (ds_image_probe: exists, is an image, within
 * --max-pixels) before a long run, so that a bad file is reported before any
 * work. Without --skip-bad the first bad file ends it: the error is printed
 * and CLI_ERROR returned. With it, each bad file is printed as "skipping: ...",
 * bad[i] (caller array of list->n) is set and *n_bad counts them; CLI_OK.
 * Header-only: a truncated file passes and fails at its load. (inputs.c) */
int cli_probe_images(const char *cmd, const cli_image_opts *o, const ds_image_list *list, bool *bad, int *n_bad);

/* The image list of the positional inputs (files, folders, labels.csv),
 * folders searched in depth with recursive. Prints the error ("no images
 * found" for an empty list) and returns CLI_ERROR, else CLI_OK and *list
 * (free with ds_image_list_free). (inputs.c) */
int cli_expand_images(const char *cmd, const cli_positional *pos, bool recursive, ds_image_list **list);

/* mkdir -p dir; prints the error and returns false on failure. (inputs.c) */
bool cli_mkdir_p(const char *cmd, const char *dir);

/* Writes len bytes to path atomically (temp + rename), or to stdout for a
 * NULL path. Prints the error; CLI_OK or CLI_ERROR. (inputs.c) */
int cli_write_text(const char *cmd, const char *path, const char *text, size_t len);

/* Appends v to s as a JSON string (quotes, backslashes and control
 * characters escaped). s: a glib GString. (inputs.c) */
struct _GString;
void cli_json_string(struct _GString *s, const char *v);

/* "dir/x.y.png" -> "x.y": the base name without its last extension (malloc'd, NULL if out of memory). */
char *cli_stem(const char *path);

/* Sharding over many inputs (inputs.c): --shard "I/N" -> index, count
 * (prints the error: CLI_OK or CLI_ERROR); cli_keep_shard keeps the items
 * i % count == index of list, in order, and frees the others (count <= 1:
 * all); cli_read_list reads a list file (one image, folder or CSV per line;
 * blank lines and '#' comments skipped) into *lines[*n], freed with
 * cli_free_list. */
int cli_parse_shard(const char *cmd, const char *text, int *index, int *count);
void cli_keep_shard(ds_image_list *list, int index, int count);
int cli_read_list(const char *cmd, const char *path, char ***lines, int *n);
void cli_free_list(char **lines, int n);

/* ---- fitting options (fit_opts.c): fit and volume fit ------------------- */

typedef struct {
    const char *scorer;
    long size, layers, knn_k, max_comp, patch_k, seed;
    long flow_dim, flow_blocks, flow_pos_dim, flow_hidden, flow_epochs, flow_epoch_patches, flow_batch, flow_patience;
    double flow_lr;
    double coreset, val_split, fpr;
    int metric, reduce; /* indices into "l2|cosine" and "max|top1pct": the ds_metric / ds_reduce values */
    int bank;           /* index into "f32|bf16|f16|int8|ivfpq": the ds_bank_repr value */
    long nprobe, ivf_lists, pq_m;
    int coreset_method; /* index into "auto|exact|blocked": the ds_coreset_method value */
    long coreset_block;
    bool per_patch;
} cli_fit_opts;
/* fit's defaults (size 0 and layers 0: the backbone's). Can't fail. */
void cli_fit_opts_init(cli_fit_opts *o);
/* The group "scorers": --scorer, --size, --layers, each scorer's parameters, --val-split, --fpr. */
cli_group cli_fit_group(cli_fit_opts *o);
/* Reports each fitted scorer on stderr (size of its arrays, padim's memory). */
typedef struct {
    cli_stage_progress *prog;
    size_t N; /* patches per image */
} cli_fit_report;
/* ds_fit_params from o (scorer list parsed: a bad one is printed, CLI_ERROR),
 * with progress and reports through rep (kept by fp: rep outlives the fit). */
int cli_fit_params(const char *cmd, const cli_fit_opts *o, long threads, cli_fit_report *rep, ds_fit_params *fp);

/* ---- the feature pass shared by extract / fit / score / eval ------------ */

typedef struct {
    int size;           /* SxS network input */
    int n_layers;
    int batch;
    bool want_cls;
    bool keep_original; /* pass the decoded original image to the sink (for overlays) */
} cli_feature_opts;

/* The reporting half of a feature pass: progress on stderr, each skipped
 * input listed ("skipping: ...") and summed up at the end. For callers that
 * hand the pipeline parameters to a library call that runs the loop itself
 * (fit: ds_model_fit):
 *   cli_pass ps; ds_pipeline_params pp;
 *   if (cli_pass_begin(cmd, io, fo, n, &ps, &pp) != CLI_OK) ...;
 *   ds_status st = ds_model_fit(bb, &pp, ...);
 *   rc = cli_pass_end(&ps, st, &n_skipped);
 * cli_pass_end always frees what begin allocated. */
typedef struct {
    const char *cmd;
    cli_progress prog;
    const char **skipped; /* [n] paths skipped */
    int n_skipped;
} cli_pass;
int cli_pass_begin(const char *cmd, const cli_image_opts *io, const cli_feature_opts *fo, int n, cli_pass *ps,
                   ds_pipeline_params *pp);
/* st: the library call's status. Returns CLI_OK, or CLI_ERROR (printed,
 * unless DS_ERR_STOPPED: the sink printed it). */
int cli_pass_end(cli_pass *ps, ds_status st, int *n_skipped);

/* ds_pipeline_run over list with the image options and cli_pass's reports.
 * The sink returns 0 to go on, or non-zero after printing its error.
 * Returns CLI_OK or CLI_ERROR (printed); *n_skipped counts skipped inputs. */
int cli_feature_pass(const char *cmd, ds_backbone *bb, const cli_image_opts *io, const cli_feature_opts *fo,
                     const ds_image_list *list, ds_pipeline_sink sink, void *ud, int *n_skipped);

#endif
