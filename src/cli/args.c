/* Parsing and --help from the option tables (args.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"

static bool name_matches(const cli_opt *o, const char *arg, size_t len) {
    for (int k = 0; k < 3 && o->names[k]; k++)
        if (strlen(o->names[k]) == len && !strncmp(o->names[k], arg, len)) return true;
    return false;
}

static const cli_opt *find_opt(const cli_group *groups, int n_groups, const char *arg, size_t len, void **args) {
    for (int g = 0; g < n_groups; g++)
        for (int i = 0; i < groups[g].n_opts; i++)
            if (name_matches(&groups[g].opts[i], arg, len)) {
                *args = groups[g].args;
                return &groups[g].opts[i];
            }
    return NULL;
}

/* Index of v in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *v) {
    size_t n = strlen(v);
    int idx = 0;
    for (const char *c = choices; *c; idx++) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && !strncmp(c, v, n)) return idx;
        if (!bar) break;
        c = bar + 1;
    }
    return -1;
}

/* Writes the value into its field; NULL when accepted, else the reason. */
static const char *apply(const cli_opt *o, void *args, const char *v, char *why, size_t n_why) {
    char *field = (char *)args + o->offset;
    long l;
    double d;
    switch (o->type) {
    case CLI_FLAG: *(bool *)field = true; return NULL;
    case CLI_STR: *(const char **)field = v; return NULL;
    case CLI_INT:
        if (!cli_parse_int(v, (long)o->lo, (long)o->hi, &l)) {
            snprintf(why, n_why, "expected an integer in [%ld, %ld]", (long)o->lo, (long)o->hi);
            return why;
        }
        *(long *)field = l;
        return NULL;
    case CLI_REAL:
        if (!cli_parse_double(v, o->lo, o->hi, &d)) {
            snprintf(why, n_why, "expected a number in [%g, %g]", o->lo, o->hi);
            return why;
        }
        *(double *)field = d;
        return NULL;
    case CLI_CHOICE: {
        int idx = choice_index(o->choices, v);
        if (idx < 0) {
            snprintf(why, n_why, "expected one of %s", o->choices);
            return why;
        }
        *(int *)field = idx;
        return NULL;
    }
    case CLI_FN: return o->handler(args, v);
    }
    return "unknown option type";
}

static bool takes_value(const cli_opt *o) { return o->type != CLI_FLAG && o->value_name; }

static FILE *help_fp;
static cli_help_format help_format = CLI_HELP_TEXT;

void cli_set_help_output(FILE *fp, cli_help_format fmt) {
    help_fp = fp;
    help_format = fmt;
}

static void emit_help(const cli_spec *spec, const cli_group *groups, int n_groups);

static int usage_error(const cli_spec *spec, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const cli_spec *spec, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "dinoscope %s: ", spec->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'dinoscope %s --help')\n", spec->name);
    return CLI_USAGE;
}

int cli_parse(const cli_spec *spec, const cli_group *groups, int n_groups, int argc, char **argv, cli_positional *pos) {
    if (pos) {
        pos->n = 0;
        pos->v = calloc((size_t)argc + 1, sizeof(char *));
        if (!pos->v) return cli_error(spec->name, "out of memory");
    }
    /* which required options were seen: at most 64 per command */
    const cli_opt *seen[64];
    int n_seen = 0, rc = CLI_PARSED;
    bool only_positional = false;
    for (int i = 1; i < argc && rc == CLI_PARSED; i++) {
        const char *a = argv[i];
        if (!only_positional && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            emit_help(spec, groups, n_groups);
            rc = CLI_HELP_SHOWN;
            break;
        }
        if (!only_positional && !strcmp(a, "--")) {
            only_positional = true;
            continue;
        }
        if (only_positional || a[0] != '-' || !a[1]) {
            if (!spec->positional) rc = usage_error(spec, "unexpected argument '%s'", a);
            else pos->v[pos->n++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        void *args = NULL;
        const cli_opt *o = find_opt(groups, n_groups, a, len, &args);
        if (!o) {
            rc = usage_error(spec, "unknown option '%.*s'", (int)len, a);
            break;
        }
        const char *v = NULL;
        if (takes_value(o)) {
            if (eq) v = eq + 1;
            else if (i + 1 < argc) v = argv[++i];
            else {
                rc = usage_error(spec, "%s needs a value (%s)", o->names[0], o->value_name);
                break;
            }
        } else if (eq) {
            rc = usage_error(spec, "%s takes no value", o->names[0]);
            break;
        }
        char why[160];
        const char *bad = apply(o, args, v, why, sizeof why);
        if (bad) {
            fprintf(stderr, "dinoscope %s: bad value '%s' for %s: %s (see 'dinoscope %s --help')\n", spec->name,
                    v ? v : "", o->names[0], bad, spec->name);
            rc = CLI_USAGE;
            break;
        }
        if ((o->flags & CLI_REQUIRED) && n_seen < 64) seen[n_seen++] = o;
    }
    for (int g = 0; g < n_groups && rc == CLI_PARSED; g++)
        for (int i = 0; i < groups[g].n_opts && rc == CLI_PARSED; i++) {
            const cli_opt *o = &groups[g].opts[i];
            if (!(o->flags & CLI_REQUIRED)) continue;
            bool found = false;
            for (int s = 0; s < n_seen && !found; s++) found = seen[s] == o;
            if (!found) rc = usage_error(spec, "%s %s is required", o->names[0], o->value_name ? o->value_name : "");
        }
    if (rc == CLI_PARSED && spec->need_positional && pos->n == 0)
        rc = usage_error(spec, "no %s given", spec->positional);
    if (rc != CLI_PARSED && pos) {
        free(pos->v);
        pos->v = NULL;
    }
    return rc;
}

/* "(default: X)" from the field's current value, "" when there is none. */
static void default_of(const cli_opt *o, const void *args, char *buf, size_t n) {
    const char *field = (const char *)args + o->offset;
    buf[0] = 0;
    if (o->flags & CLI_HIDDEN_DEFAULT) return;
    if (o->default_text) {
        snprintf(buf, n, " (default: %s)", o->default_text);
        return;
    }
    switch (o->type) {
    case CLI_INT: snprintf(buf, n, " (default: %ld)", *(const long *)field); break;
    case CLI_REAL: snprintf(buf, n, " (default: %g)", *(const double *)field); break;
    case CLI_STR:
        if (*(const char *const *)field) snprintf(buf, n, " (default: %s)", *(const char *const *)field);
        break;
    case CLI_CHOICE: {
        int idx = *(const int *)field;
        const char *c = o->choices;
        for (int k = 0; k < idx && c; k++) {
            c = strchr(c, '|');
            if (c) c++;
        }
        if (c) {
            const char *bar = strchr(c, '|');
            snprintf(buf, n, " (default: %.*s)", bar ? (int)(bar - c) : (int)strlen(c), c);
        }
        break;
    }
    case CLI_FLAG:
    case CLI_FN: break;
    }
}

/* text from column col, wrapped at spaces to at most width columns. */
static void print_wrapped(FILE *fp, const char *text, int col, int width) {
    int room = width - col;
    while (*text) {
        int n = (int)strlen(text);
        if (n > room) {
            n = room;
            while (n > 0 && text[n] != ' ') n--;
            if (n == 0) n = (int)strcspn(text, " ");
        }
        fprintf(fp, "%.*s\n", n, text);
        text += n;
        while (*text == ' ') text++;
        if (*text) fprintf(fp, "%*s", col, "");
    }
}

void cli_print_help(FILE *fp, const cli_spec *spec, const cli_group *groups, int n_groups) {
    fprintf(fp, "usage: dinoscope %s %s\n", spec->name, spec->synopsis);
    if (spec->description) fprintf(fp, "%s", spec->description);
    for (int g = 0; g < n_groups; g++) {
        if (groups[g].n_opts == 0) continue;
        fprintf(fp, "\n%s:\n", groups[g].title);
        for (int i = 0; i < groups[g].n_opts; i++) {
            const cli_opt *o = &groups[g].opts[i];
            char names[96] = "", def[160];
            size_t len = 0;
            for (int k = 0; k < 3 && o->names[k]; k++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", k ? ", " : "", o->names[k]);
            if (takes_value(o) && len < sizeof names)
                snprintf(names + len, sizeof names - len, " %s", o->value_name);
            default_of(o, groups[g].args, def, sizeof def);
            char text[1024];
            snprintf(text, sizeof text, "%s%s%s", o->help, def, o->flags & CLI_REQUIRED ? " [required]" : "");
            if (strlen(names) <= 24) fprintf(fp, "  %-24s ", names);
            else fprintf(fp, "  %s\n%27s", names, "");
            print_wrapped(fp, text, 27, 100);
        }
    }
    fprintf(fp, "\n  -h, --help               this help\n");
}

/* ---- man pages and bash completion from the same tables --------------------- */

void cli_roff(FILE *fp, const char *s) {
    bool line_start = true;
    for (const char *p = s; *p; p++) {
        if (line_start && (*p == '.' || *p == '\'')) fputs("\\&", fp);
        line_start = *p == '\n';
        if (*p == '\\') fputs("\\e", fp);
        else if (*p == '-') fputs("\\-", fp);
        else fputc(*p, fp);
    }
}

/* The description paragraphs without their two-space indent. */
static void roff_paragraphs(FILE *fp, const char *text) {
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        while (len && *p == ' ') p++, len--;
        char line[512];
        snprintf(line, sizeof line, "%.*s", (int)len, p);
        cli_roff(fp, line);
        fputc('\n', fp);
        p = nl ? nl + 1 : p + len;
    }
}

static void print_man(FILE *fp, const cli_spec *spec, const cli_group *groups, int n_groups) {
    fprintf(fp, ".SH SYNOPSIS\n.B dinoscope %s\n", spec->name);
    cli_roff(fp, spec->synopsis);
    fputs("\n.SH DESCRIPTION\n", fp);
    if (spec->description) roff_paragraphs(fp, spec->description);
    fputs(".SH OPTIONS\n", fp);
    for (int g = 0; g < n_groups; g++) {
        if (groups[g].n_opts == 0) continue;
        fputs(".SS ", fp);
        cli_roff(fp, groups[g].title);
        fputc('\n', fp);
        for (int i = 0; i < groups[g].n_opts; i++) {
            const cli_opt *o = &groups[g].opts[i];
            char def[160];
            default_of(o, groups[g].args, def, sizeof def);
            fputs(".TP\n", fp);
            for (int k = 0; k < 3 && o->names[k]; k++) {
                fputs(k ? ", \\fB" : "\\fB", fp);
                cli_roff(fp, o->names[k]);
                fputs("\\fR", fp);
            }
            if (takes_value(o)) {
                fputs(" \\fI", fp);
                cli_roff(fp, o->value_name);
                fputs("\\fR", fp);
            }
            fputc('\n', fp);
            cli_roff(fp, o->help);
            cli_roff(fp, def);
            fputs(o->flags & CLI_REQUIRED ? " [required]\n" : "\n", fp);
        }
    }
    fputs(".TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\nthis help\n", fp);
}

/* One arm of the case in the completion function: the command's option
 * names, the values of its choice options, and its options that take a
 * value (whose value completes as a file name). */
static void print_completion(FILE *fp, const cli_spec *spec, const cli_group *groups, int n_groups) {
    fprintf(fp, "    %s)\n        opts='", spec->name);
    for (int g = 0; g < n_groups; g++)
        for (int i = 0; i < groups[g].n_opts; i++)
            for (int k = 0; k < 3 && groups[g].opts[i].names[k]; k++) fprintf(fp, "%s ", groups[g].opts[i].names[k]);
    fputs("-h --help'\n        case \"$prev\" in\n", fp);
    for (int g = 0; g < n_groups; g++)
        for (int i = 0; i < groups[g].n_opts; i++) {
            const cli_opt *o = &groups[g].opts[i];
            if (!takes_value(o)) continue;
            fputs("        ", fp);
            for (int k = 0; k < 3 && o->names[k]; k++) fprintf(fp, "%s%s", k ? "|" : "", o->names[k]);
            if (o->type == CLI_CHOICE) {
                fputs(") COMPREPLY=($(compgen -W '", fp);
                for (const char *c = o->choices; *c; c++) fputc(*c == '|' ? ' ' : *c, fp);
                fputs("' -- \"$cur\")); return ;;\n", fp);
            } else {
                fputs(") return ;;\n", fp);
            }
        }
    fputs("        esac ;;\n", fp);
}

static void emit_help(const cli_spec *spec, const cli_group *groups, int n_groups) {
    FILE *fp = help_fp ? help_fp : stdout;
    switch (help_format) {
    case CLI_HELP_TEXT: cli_print_help(fp, spec, groups, n_groups); break;
    case CLI_HELP_MAN: print_man(fp, spec, groups, n_groups); break;
    case CLI_HELP_COMPLETION: print_completion(fp, spec, groups, n_groups); break;
    }
}
