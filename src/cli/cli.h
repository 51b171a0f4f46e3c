/* The dinoscope command-line tool: a thin user of the public API. Each
 * subcommand lives in cmd_<name>.c and returns the process exit status:
 * 0 success, 1 error (one line on stderr), 2 usage, 3 finished but some
 * inputs were skipped (--skip-bad). */
#ifndef DS_CLI_H
#define DS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "dinoscope/dinoscope.h"
#include "dinoscope/preprocess.h"

enum { CLI_OK = 0, CLI_ERROR = 1, CLI_USAGE = 2, CLI_SKIPPED = 3 };

int cmd_extract(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_slide(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints "dinoscope <cmd>: <message>\n" to stderr; returns CLI_ERROR. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the library's last error prefixed with the command name. */
int cli_lib_error(const char *cmd);

/* Strict number parsing: false if s is not entirely a number in [lo, hi]. */
bool cli_parse_int(const char *s, long lo, long hi, long *out);
bool cli_parse_double(const char *s, double lo, double hi, double *out);

/* Shared image-reading options (every command that reads images):
 *   --stain-norm none|clahe  --clahe-clip X  --clahe-tiles N
 *   --window MIN,MAX  --max-pixels N  --recursive  --skip-bad
 * cli_image_opt tries to consume argv[*i] (and its value); returns 1 if it
 * did, 0 if the flag is not one of these, -1 on a bad value (error printed). */
typedef struct {
    ds_preprocess_params prep;
    ds_image_load_params load;
    bool recursive;
    bool skip_bad;
} cli_image_opts;
void cli_image_opts_init(cli_image_opts *o);
int cli_image_opt(const char *cmd, cli_image_opts *o, int argc, char **argv, int *i);

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

/* Checks every header of list (ds_image_probe: exists, is an image, within
 * --max-pixels) before a long run, so that a bad file is reported before any
 * work. Without --skip-bad the first bad file ends it: the error is printed
 * and CLI_ERROR returned. With it, each bad file is printed as "skipping: ...",
 * bad[i] (caller array of list->n) is set and *n_bad counts them; CLI_OK.
 * Header-only: a truncated file passes and fails at its load. (inputs.c) */
int cli_probe_images(const char *cmd, const cli_image_opts *o, const ds_image_list *list, bool *bad, int *n_bad);

/* mkdir -p dir; prints the error and returns false on failure. (inputs.c) */
bool cli_mkdir_p(const char *cmd, const char *dir);

#endif

/* ---- the feature pass shared by extract / fit / score ----------------- */
#include "dinoscope/backbone.h"
#include "dinoscope/image.h"

/* Called once per good image, in input order: feats [N*D] (patch tokens),
 * cls [D] or NULL. Return CLI_OK to go on, anything else to stop. */
typedef struct {
    double prep_ms;     /* decode + stain norm + resize + normalise, this image */
    double backbone_ms; /* this image's share of its batch's forward pass */
} cli_feature_timing;
typedef int (*cli_feature_sink)(void *ud, int index, const char *path, const ds_image *original, const float *feats,
                                const float *cls, const cli_feature_timing *timing);

typedef struct {
    int size;       /* SxS network input */
    int n_layers;
    int batch;
    bool want_cls;
    bool keep_original; /* pass the decoded original image to the sink (for overlays) */
} cli_feature_opts;

/* Decodes, prepares and runs every image of list through bb in batches.
 * A bad image stops the pass with an error (CLI_ERROR), or with io->skip_bad
 * is listed on stderr at the end and counted in *n_skipped. Progress is shown
 * on stderr for long runs. Returns CLI_OK, CLI_ERROR or the sink's status. */
int cli_feature_pass(const char *cmd, ds_backbone *bb, const cli_image_opts *io, const cli_feature_opts *fo,
                     const ds_image_list *list, cli_feature_sink sink, void *ud, int *n_skipped);

int cli_extract_run(const char *cmd, const char *weights_path, int size, int layers, int batch, int threads, bool want_cls,
                    const cli_image_opts *io, const char **inputs, int n_inputs, const char *out_path);
