#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

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
    o->load.window_lo_pct = 0.5;
    o->load.window_hi_pct = 99.5;
}

int cli_image_opt(const char *cmd, cli_image_opts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    long l;
    double d;
    if (!strcmp(a, "--recursive")) {
        o->recursive = true;
        return 1;
    }
    if (!strcmp(a, "--skip-bad")) {
        o->skip_bad = true;
        return 1;
    }
    bool takes_value = !strcmp(a, "--stain-norm") || !strcmp(a, "--clahe-clip") || !strcmp(a, "--clahe-tiles") ||
                       !strcmp(a, "--window") || !strcmp(a, "--max-pixels");
    if (!takes_value) return 0;
    if (!v) {
        cli_error(cmd, "%s needs a value", a);
        return -1;
    }
    (*i)++;
    if (!strcmp(a, "--stain-norm")) {
        if (!strcmp(v, "clahe")) o->prep.stain = DS_STAIN_CLAHE;
        else if (!strcmp(v, "none")) o->prep.stain = DS_STAIN_NONE;
        else {
            cli_error(cmd, "--stain-norm must be 'none' or 'clahe', got '%s'", v);
            return -1;
        }
    } else if (!strcmp(a, "--clahe-clip")) {
        if (!cli_parse_double(v, 0.0, 1000.0, &d)) {
            cli_error(cmd, "--clahe-clip must be a number in [0, 1000], got '%s'", v);
            return -1;
        }
        o->prep.clahe_clip = d;
    } else if (!strcmp(a, "--clahe-tiles")) {
        if (!cli_parse_int(v, 1, 256, &l)) {
            cli_error(cmd, "--clahe-tiles must be an integer in [1, 256], got '%s'", v);
            return -1;
        }
        o->prep.clahe_tiles = (int)l;
    } else if (!strcmp(a, "--max-pixels")) {
        if (!cli_parse_int(v, 1, (long)1 << 40, &l)) {
            cli_error(cmd, "--max-pixels must be a positive integer, got '%s'", v);
            return -1;
        }
        o->load.max_pixels = l;
    } else if (!strcmp(a, "--window")) {
        double lo, hi;
        char extra;
        if (sscanf(v, "%lf,%lf%c", &lo, &hi, &extra) != 2 || !(lo < hi)) {
            cli_error(cmd, "--window must be MIN,MAX with MIN < MAX, got '%s'", v);
            return -1;
        }
        o->load.window_set = 1;
        o->load.window_min = lo;
        o->load.window_max = hi;
    }
    return 1;
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
