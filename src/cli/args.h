/* Option tables: one table per command drives both parsing and --help, as
 * llama.cpp's common/arg.cpp does. An entry holds the names, the value's
 * name, the help text and where the value goes (a typed field, or a
 * handler); the default shown in --help is read from the field itself, so a
 * parsed flag is documented and a documented flag is parsed by construction.
 *
 *   typedef struct { const char *out; long threads; bool cls; } my_args;
 *   static const cli_opt my_opts[] = {
 *       CLI_STR_OPT(my_args, out, "--out", "FILE", "output file", CLI_REQUIRED),
 *       CLI_INT_OPT(my_args, threads, "--threads", "T", "threads, 0 = auto", 0, 1024),
 *       CLI_FLAG_OPT(my_args, cls, "--cls", "CLS tokens instead of patch tokens"),
 *   };
 *   my_args a = {.threads = 0};
 *   cli_group groups[] = {{"options", my_opts, CLI_N(my_opts), &a}};
 *   int rc = cli_parse(&spec, groups, 1, argc, argv, &pos);
 */
#ifndef DS_CLI_ARGS_H
#define DS_CLI_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG,   /* bool, no value */
    CLI_STR,    /* const char * (points into argv) */
    CLI_INT,    /* long in [lo, hi] */
    CLI_REAL,   /* double in [lo, hi] */
    CLI_CHOICE, /* int: index of the value in choices "a|b|c" */
    CLI_FN,     /* handler(field, value) */
} cli_opt_type;

enum { CLI_REQUIRED = 1, CLI_HIDDEN_DEFAULT = 2 };

typedef struct cli_opt cli_opt;
/* Custom handler: value is NULL for options without a value name. Returns
 * NULL when accepted, else the reason shown as "bad value 'v' for --x: reason". */
typedef const char *(*cli_opt_handler)(void *args, const char *value);

struct cli_opt {
    const char *names[3];     /* e.g. {"--backbone", "--weights"}: first is the one shown first */
    const char *value_name;   /* "N", "FILE"; NULL: a flag (or a CLI_FN without value) */
    const char *help;         /* one line, without the default */
    cli_opt_type type;
    size_t offset;            /* of the field in the group's args struct */
    double lo, hi;            /* CLI_INT / CLI_REAL range */
    const char *choices;      /* CLI_CHOICE: "cosine|l2" */
    cli_opt_handler handler;  /* CLI_FN */
    const char *default_text; /* shown instead of the field's value (e.g. "518 DINOv2, 224 CNNs") */
    int flags;                /* CLI_REQUIRED, CLI_HIDDEN_DEFAULT */
};

#define CLI_N(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define CLI_FLAG_OPT(T, f, name, help) {{name}, NULL, help, CLI_FLAG, offsetof(T, f), 0, 0, NULL, NULL, NULL, 0}
#define CLI_STR_OPT(T, f, name, val, help, fl) {{name}, val, help, CLI_STR, offsetof(T, f), 0, 0, NULL, NULL, NULL, fl}
#define CLI_INT_OPT(T, f, name, val, help, lo, hi) {{name}, val, help, CLI_INT, offsetof(T, f), lo, hi, NULL, NULL, NULL, 0}
#define CLI_REAL_OPT(T, f, name, val, help, lo, hi) {{name}, val, help, CLI_REAL, offsetof(T, f), lo, hi, NULL, NULL, NULL, 0}
#define CLI_CHOICE_OPT(T, f, name, choices, help) {{name}, choices, help, CLI_CHOICE, offsetof(T, f), 0, 0, choices, NULL, NULL, 0}

/* A table and the struct its offsets point into. */
typedef struct {
    const char *title; /* heading in --help, e.g. "images" */
    const cli_opt *opts;
    int n_opts;
    void *args;
} cli_group;

typedef struct {
    const char *name;        /* "fit" */
    const char *synopsis;    /* after "usage: dinoscope fit " */
    const char *description; /* paragraph(s) under the usage line */
    const char *positional;  /* what the positional arguments are ("IMAGES"), or NULL: none allowed */
    bool need_positional;    /* at least one positional argument is required */
} cli_spec;

/* Positional arguments, in order (they point into argv). */
typedef struct {
    const char **v;
    int n;
} cli_positional;

enum { CLI_PARSED = 0, CLI_HELP_SHOWN = -100 };

/* Parses argv[1..argc) against the groups: "--name value", "--name=value",
 * "--" ends the options; -h/--help prints the help on stdout and returns
 * CLI_HELP_SHOWN. Errors (unknown option, missing or bad value, a missing
 * required option or positional) are printed as one line plus a pointer to
 * --help and return CLI_USAGE (2). pos (may be NULL when spec->positional
 * is NULL) gets a malloc'd array: free pos->v. */
int cli_parse(const cli_spec *spec, const cli_group *groups, int n_groups, int argc, char **argv, cli_positional *pos);

/* The help text: usage line, description, every option of every group with
 * its value name, help and default. */
void cli_print_help(FILE *fp, const cli_spec *spec, const cli_group *groups, int n_groups);

/* What -h/--help writes and where: the text above (default, on stdout), a
 * roff man page section (SYNOPSIS, DESCRIPTION, OPTIONS: `dinoscope help
 * --man CMD`) or one case arm of the bash completion function (`dinoscope
 * help --completion`). All three come from the same tables. fp NULL =
 * stdout. The CLI is single-threaded: a plain static holds the choice. */
typedef enum { CLI_HELP_TEXT = 0, CLI_HELP_MAN = 1, CLI_HELP_COMPLETION = 2 } cli_help_format;
void cli_set_help_output(FILE *fp, cli_help_format fmt);
/* Roff-escapes s onto fp (backslashes, hyphens, a leading dot or quote). */
void cli_roff(FILE *fp, const char *s);

/* For the usual ending of a command's parse: CLI_HELP_SHOWN -> CLI_OK. */
static inline int cli_parse_status(int rc) { return rc == CLI_HELP_SHOWN ? 0 : rc; }

#endif
