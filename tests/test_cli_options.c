/* Every option a command accepts is in its --help, and every option its
 * --help lists is accepted (one option table drives both, src/cli/args.h).
 * The commands run in-process, their output captured:
 *   1. each name on an option line of `CMD --help` is parsed: given alone
 *      (with a dummy value where the help shows a value name), the command
 *      never answers "unknown option";
 *   2. every "--flag" string literal in the .c files of src/cli that the command's help
 *      does not list is refused as an unknown option: nothing is parsed that
 *      the help does not show.
 * No call gets past parsing: each lacks a required option or input and
 * stops with a usage error before any file is opened. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include "cli/cli.h"
#include "test.h"

static char out_path[1024], err_path[1024];

/* Runs cmd with args (argv[0] = the command name); its stdout and stderr
 * go to out_path / err_path. Returns its status. */
static int run_cmd(const cli_command *c, int n, const char **args) {
    char *argv[8] = {(char *)c->name};
    for (int i = 0; i < n && i < 6; i++) argv[1 + i] = (char *)args[i];
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fo, 1);
    dup2(fe, 2);
    int rc = c->fn(1 + n, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so), close(se), close(fo), close(fe);
    return rc;
}

/* The option names of a help text: "  -t, --threads T   help" lines. */
typedef struct {
    char name[64];
    bool takes_value;
} opt_name;

static int help_options(const char *help, opt_name *out, int max) {
    int n = 0;
    for (const char *line = help; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, "  -", 3) != 0) continue;
        const char *p = line + 2;
        int first = n;
        /* names separated by ", ", then an optional value name, then two spaces */
        while (*p == '-' && n < max) {
            size_t len = strcspn(p, " ,\n");
            snprintf(out[n].name, sizeof out[n].name, "%.*s", (int)len, p);
            out[n++].takes_value = false;
            p += len;
            if (p[0] == ',' && p[1] == ' ') p += 2;
            else break;
        }
        bool value = p[0] == ' ' && p[1] != ' ' && p[1] != '\n' && p[1] != 0;
        for (int k = first; k < n; k++) out[k].takes_value = value;
    }
    return n;
}

static bool listed(const opt_name *names, int n, const char *flag) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i].name, flag)) return true;
    return false;
}

/* Every "--flag" literal of the CLI's sources. */
static int source_flags(const char *src_dir, char (*flags)[64], int max) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/src/cli", src_dir);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 3 || strcmp(e->d_name + len - 2, ".c")) continue;
        char path[1300];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *text = test_read_text(path);
        for (char *p = text; p && (p = strstr(p, "\"--")); p += 3) {
            size_t l = strspn(p + 1, "-abcdefghijklmnopqrstuvwxyz0123456789");
            if (l < 3 || l >= 63 || p[1 + l] != '"') continue;
            char f[64];
            snprintf(f, sizeof f, "%.*s", (int)l, p + 1);
            bool seen = false;
            for (int i = 0; i < n && !seen; i++) seen = !strcmp(flags[i], f);
            if (!seen && n < max) snprintf(flags[n++], 64, "%s", f);
        }
        free(text);
    }
    if (d) closedir(d);
    return n;
}

int main(void) {
    const char *tmp = test_env("DS_TMP", "/tmp");
    snprintf(out_path, sizeof out_path, "%s/cli_options.out", tmp);
    snprintf(err_path, sizeof err_path, "%s/cli_options.err", tmp);
    char mk[1100];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", tmp);
    if (system(mk) != 0) test_skip("cannot create DS_TMP");
    static char flags[512][64];
    int n_flags = source_flags(test_env("DS_SRC", "."), flags, 512);
    test_cond("the CLI's sources name flags (DS_SRC points at the source tree)", n_flags > 20);
    char msg[512];
    for (int c = 0; c < cli_n_commands; c++) {
        const cli_command *cmd = &cli_commands[c];
        const char *help_args[] = {"--help"};
        int rc = run_cmd(cmd, 1, help_args);
        char *help = test_read_text(out_path);
        snprintf(msg, sizeof msg, "%s --help exits 0 and shows its usage", cmd->name);
        test_cond(msg, rc == 0 && help && strstr(help, "usage: dinoscope"));
        static opt_name names[128];
        int n = help_options(help, names, 128);
        int n_unparsed = 0, n_hidden = 0, n_other = 0;
        for (int i = 0; i < n; i++) {
            if (!strcmp(names[i].name, "--help") || !strcmp(names[i].name, "-h")) continue;
            const char *args[] = {names[i].name, "x"};
            run_cmd(cmd, names[i].takes_value ? 2 : 1, args);
            char *err = test_read_text(err_path);
            if (err && strstr(err, "unknown option")) {
                printf("     %s: '%s' is in --help but not parsed: %s", cmd->name, names[i].name, err);
                n_unparsed++;
            }
            free(err);
        }
        snprintf(msg, sizeof msg, "%s: each of the %d option names of its --help is parsed", cmd->name, n);
        test_cond(msg, n_unparsed == 0);
        for (int f = 0; f < n_flags; f++) {
            if (listed(names, n, flags[f])) continue;
            n_other++;
            const char *args[] = {flags[f], "x"};
            run_cmd(cmd, 2, args);
            char *err = test_read_text(err_path);
            char want[128];
            snprintf(want, sizeof want, "unknown option '%.60s'", flags[f]);
            if (!err || !strstr(err, want)) {
                printf("     %s: '%s' is accepted but not in --help: %s", cmd->name, flags[f], err ? err : "");
                n_hidden++;
            }
            free(err);
        }
        snprintf(msg, sizeof msg, "%s: none of the %d other flags of src/cli is accepted", cmd->name, n_other);
        test_cond(msg, n_hidden == 0);
        free(help);
    }
    test_report();
}
