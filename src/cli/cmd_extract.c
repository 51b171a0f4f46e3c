/* dinoscope extract --weights FILE [--size S] [--layers N] [--batch B]
 *                   [--threads T] [--cls] --out FEATS.npy IMAGE...|DIR|CSV
 * Writes float32 [n_images, N, D] (or [n_images, D] with --cls). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dinoscope/image.h"
#include "dinoscope/npy.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/vit.h"
#include "dinoscope/weights.h"

static const char *USAGE =
    "usage: dinoscope extract --weights FILE [--size S] [--layers N] [--batch B] [--threads T] [--cls]\n"
    "                         [--stain-norm none|clahe] [--clahe-clip X] [--clahe-tiles N] [--window MIN,MAX]\n"
    "                         [--skip-bad] [--recursive] --out FEATS.npy IMAGE...|DIR|CSV\n"
    "  Writes DINOv2 features as float32 .npy: [n_images, N, D] patch tokens (mean of the last N\n"
    "  layers, each through the final norm), or [n_images, D] last-layer CLS tokens with --cls.\n"
    "  Defaults: --size 518 (DINOv2) / 224 (CNNs) --layers 4 --batch 1 --threads 0 (auto).\n";

int cmd_extract(int argc, char **argv) {
    const char *cmd = "extract", *weights_path = NULL, *out_path = NULL;
    long size = 0, layers = 4, batch = 1, threads = 0;
    bool want_cls = false;
    cli_image_opts io;
    cli_image_opts_init(&io);
    const char **inputs = calloc((size_t)argc, sizeof(char *));
    int n_inputs = 0;
    if (!inputs) return cli_error(cmd, "out of memory");
    int rc = CLI_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = cli_image_opt(cmd, &io, argc, argv, &i);
        if (r < 0) goto done;
        if (r > 0) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            rc = CLI_OK;
            goto done;
        } else if (!strcmp(a, "--cls")) {
            want_cls = true;
        } else if (!strcmp(a, "--weights") || !strcmp(a, "--out") || !strcmp(a, "--size") || !strcmp(a, "--layers") ||
                   !strcmp(a, "--batch") || !strcmp(a, "--threads")) {
            if (!v) {
                cli_error(cmd, "%s needs a value", a);
                goto done;
            }
            i++;
            if (!strcmp(a, "--weights")) weights_path = v;
            else if (!strcmp(a, "--out")) out_path = v;
            else if (!strcmp(a, "--size") && !cli_parse_int(v, 1, 8192, &size)) {
                cli_error(cmd, "--size must be an integer in [1, 8192], got '%s'", v);
                goto done;
            } else if (!strcmp(a, "--layers") && !cli_parse_int(v, 1, 1000, &layers)) {
                cli_error(cmd, "--layers must be a positive integer, got '%s'", v);
                goto done;
            } else if (!strcmp(a, "--batch") && !cli_parse_int(v, 1, 1024, &batch)) {
                cli_error(cmd, "--batch must be an integer in [1, 1024], got '%s'", v);
                goto done;
            } else if (!strcmp(a, "--threads") && !cli_parse_int(v, 0, 1024, &threads)) {
                cli_error(cmd, "--threads must be an integer >= 0, got '%s'", v);
                goto done;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            cli_error(cmd, "unknown option '%s' (see --help)", a);
            goto done;
        } else {
            inputs[n_inputs++] = a;
        }
    }
    if (!weights_path || !out_path || n_inputs == 0) {
        fputs(USAGE, stderr);
        goto done;
    }
    rc = cli_extract_run(cmd, weights_path, (int)size, (int)layers, (int)batch, (int)threads, want_cls, &io, inputs,
                         n_inputs, out_path);
done:
    free(inputs);
    return rc;
}
