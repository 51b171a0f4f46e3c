/* dinoscope preprocess [--size S] [--stain-norm clahe] [--side-by-side] --out DIR IMAGE...|DIR|CSV
 * Writes DIR/<stem>.png: the exact 8-bit RGB image the network sees (after
 * stain normalisation and resizing, before mean/std normalisation).
 *
 * All or nothing by default: every header is checked first, then each image
 * is decoded, prepared and written to a hidden temporary file in DIR; only
 * when all succeeded are they renamed to their final names, so a bad file
 * (even one whose truncation only shows while decoding) leaves no output.
 * With --skip-bad, bad files are skipped and listed at the end (exit 3), and
 * each good output is written atomically as it is ready. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/image.h"
#include "dinoscope/preprocess.h"

typedef struct {
    const char *out;
    long size;
    bool side_by_side;
} prep_args;

static const cli_opt prep_cmd_opts[] = {
    CLI_STR_OPT(prep_args, out, "--out", "DIR", "output folder", CLI_REQUIRED),
    CLI_INT_OPT(prep_args, size, "--size", "S", "network input size (0 keeps each image's size)", 0, 16384),
    CLI_FLAG_OPT(prep_args, side_by_side, "--side-by-side",
                 "write original|prepared in one PNG (original resized to the same height)"),
};

static const cli_spec prep_spec = {
    "preprocess", "--out DIR [options] IMAGE...|DIR|CSV",
    "  Writes DIR/<stem>.png for each input: the 8-bit RGB image fed to the network (stain\n"
    "  normalisation, then bicubic resize to SxS), before mean/std normalisation. All or nothing:\n"
    "  without --skip-bad the first bad input stops the run before anything is written.\n",
    "IMAGES", true};

static int cmp_name(const void *a, const void *b) {
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

/* original | prepared, the original resized (bicubic) to prepared's height */
static ds_status side_by_side(const ds_image *orig, const ds_image *prep, ds_image **out) {
    int h = prep->height;
    long w0 = (long)((double)orig->width * h / orig->height + 0.5);
    if (w0 < 1) w0 = 1;
    if (w0 > 65536) w0 = 65536;
    ds_image *left = NULL;
    ds_status st = ds_resize_bicubic(orig, (int)w0, h, &left);
    if (st != DS_OK) return st;
    ds_image *both = ds_image_create((int)w0 + prep->width, h, 3);
    if (!both) {
        ds_image_free(left);
        return DS_ERR_NOMEM;
    }
    for (int y = 0; y < h; y++) {
        uint8_t *row = both->pixels + (size_t)y * both->width * 3;
        memcpy(row, left->pixels + (size_t)y * left->width * 3, (size_t)left->width * 3);
        memcpy(row + (size_t)left->width * 3, prep->pixels + (size_t)y * prep->width * 3, (size_t)prep->width * 3);
    }
    ds_image_free(left);
    *out = both;
    return DS_OK;
}

int cmd_preprocess(int argc, char **argv) {
    const char *cmd = "preprocess";
    prep_args a = {.size = 518};
    cli_image_opts io;
    cli_image_opts_init(&io);
    cli_group groups[] = {{"options", prep_cmd_opts, CLI_N(prep_cmd_opts), &a}, cli_image_group(&io, true),
                          cli_prep_group(&io, NULL)};
    cli_positional pos;
    int rc = cli_parse(&prep_spec, groups, CLI_N(groups), argc, argv, &pos);
    if (rc != CLI_PARSED) return cli_parse_status(rc);
    const char *out_dir = a.out;
    bool sbs = a.side_by_side;
    ds_image_list *list = NULL;
    char **final = NULL, **tmp = NULL;
    bool *bad = NULL, *done = NULL;
    int *slot = NULL; /* ds_temp_register's slot of each part file, -1 if none */
    rc = CLI_ERROR;
    io.prep.size = (int)a.size;
    if (cli_expand_images(cmd, &pos, io.recursive, &list) != CLI_OK) goto out;
    const int n = list->n;
    final = calloc((size_t)n, sizeof *final);
    tmp = calloc((size_t)n, sizeof *tmp);
    bad = calloc((size_t)n, sizeof *bad);
    done = calloc((size_t)n, sizeof *done);
    slot = malloc(sizeof *slot * (size_t)n);
    for (int i = 0; slot && i < n; i++) slot[i] = -1;
    if (!final || !tmp || !bad || !done || !slot) {
        cli_error(cmd, "out of memory");
        goto out;
    }
    /* output names, checked for collisions before anything is written */
    size_t dlen = strlen(out_dir);
    for (int i = 0; i < n; i++) {
        char *stem = cli_stem(list->paths[i]);
        size_t len = dlen + (stem ? strlen(stem) : 0) + 64;
        final[i] = stem ? malloc(len) : NULL;
        tmp[i] = stem ? malloc(len) : NULL;
        if (!final[i] || !tmp[i]) {
            free(stem);
            cli_error(cmd, "out of memory");
            goto out;
        }
        snprintf(final[i], len, "%s/%s.png", out_dir, stem);
        snprintf(tmp[i], len, "%s/.%s.png.part.%ld", out_dir, stem, (long)getpid());
        free(stem);
    }
    {
        const char **pairs = malloc(sizeof(char *) * 2 * (size_t)n);
        if (!pairs) {
            cli_error(cmd, "out of memory");
            goto out;
        }
        for (int i = 0; i < n; i++) pairs[2 * i] = final[i], pairs[2 * i + 1] = list->paths[i];
        qsort(pairs, (size_t)n, 2 * sizeof(char *), cmp_name);
        for (int i = 1; i < n; i++) {
            if (!strcmp(pairs[2 * i], pairs[2 * i - 2])) {
                cli_error(cmd, "'%s' and '%s' would both be written to '%s'; process them in separate runs",
                          pairs[2 * i - 1], pairs[2 * i + 1], pairs[2 * i]);
                free(pairs);
                goto out;
            }
        }
        free(pairs);
    }
    int n_bad = 0;
    if (cli_probe_images(cmd, &io, list, bad, &n_bad) != CLI_OK) goto out;
    if (!cli_mkdir_p(cmd, out_dir)) goto out;

    cli_progress prog;
    cli_progress_start(&prog, cmd, n);
    int n_written = 0;
    rc = CLI_OK;
    for (int i = 0; i < n && rc == CLI_OK; i++) {
        if (bad[i]) continue;
        ds_image *img = NULL, *prep = NULL, *both = NULL;
        ds_status st = ds_image_load(list->paths[i], &io.load, &img);
        if (st == DS_OK) st = ds_preprocess_image(img, &io.prep, &prep);
        if (st == DS_OK && sbs) st = side_by_side(img, prep, &both);
        if (st == DS_OK) st = ds_image_save_png(io.skip_bad ? final[i] : tmp[i], both ? both : prep);
        if (st == DS_OK) {
            done[i] = true;
            n_written++;
            if (!io.skip_bad) slot[i] = ds_temp_register(tmp[i]); /* removed if we are interrupted */
        } else if (io.skip_bad) {
            fprintf(stderr, "dinoscope %s: skipping: %s\n", cmd, ds_last_error());
            bad[i] = true;
            n_bad++;
        } else {
            rc = cli_lib_error(cmd);
        }
        ds_image_free(img);
        ds_image_free(prep);
        ds_image_free(both);
        cli_progress_update(&prog, i + 1);
    }
    cli_progress_end(&prog);

    if (!io.skip_bad) {
        /* all or nothing: publish every output, or remove every part file */
        for (int i = 0; i < n; i++) {
            if (!done[i]) continue;
            if (rc == CLI_OK && rename(tmp[i], final[i]) != 0) rc = cli_error(cmd, "cannot rename '%s' to '%s'", tmp[i], final[i]);
            if (rc != CLI_OK) remove(tmp[i]);
            ds_temp_unregister(slot[i]);
            slot[i] = -1;
        }
        if (rc != CLI_OK) goto out;
    }
    if (n_bad > 0) {
        fprintf(stderr, "dinoscope %s: skipped %d bad input%s:\n", cmd, n_bad, n_bad > 1 ? "s" : "");
        for (int i = 0; i < n; i++)
            if (bad[i]) fprintf(stderr, "  %s\n", list->paths[i]);
        rc = CLI_SKIPPED;
    }
    printf("wrote %d image%s to %s\n", n_written, n_written == 1 ? "" : "s", out_dir);

out:
    if (list) {
        for (int i = 0; i < list->n; i++) {
            if (final) free(final[i]);
            if (tmp) free(tmp[i]);
        }
    }
    free(final);
    free(tmp);
    free(bad);
    free(done);
    for (int i = 0; slot && list && i < list->n; i++) ds_temp_unregister(slot[i]);
    free(slot);
    ds_image_list_free(list);
    free(pos.v);
    return rc;
}
