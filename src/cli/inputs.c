/* Helpers for commands that read lists of images and write files. */
#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/image.h"
#include "dinoscope/shard.h"

int cli_probe_images(const char *cmd, const cli_image_opts *o, const ds_image_list *list, bool *bad, int *n_bad) {
    int nb = 0;
    for (int i = 0; i < list->n; i++) {
        bad[i] = false;
        if (ds_image_probe(list->paths[i], &o->load, NULL, NULL) == DS_OK) continue;
        if (!o->skip_bad) return cli_lib_error(cmd);
        bad[i] = true;
        nb++;
        fprintf(stderr, "dinoscope %s: skipping: %s\n", cmd, ds_last_error());
    }
    *n_bad = nb;
    return CLI_OK;
}

bool cli_mkdir_p(const char *cmd, const char *dir) {
    char *p = strdup(dir);
    if (!p) {
        cli_error(cmd, "out of memory");
        return false;
    }
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') p[--len] = 0;
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != 0) continue;
        *s = 0;
        struct stat st;
        if (stat(p, &st) != 0) {
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                cli_error(cmd, "cannot create folder '%s': %s", p, strerror(errno));
                free(p);
                return false;
            }
        } else if (!S_ISDIR(st.st_mode)) {
            cli_error(cmd, "'%s' exists and is not a folder", p);
            free(p);
            return false;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    return true;
}

int cli_write_text(const char *cmd, const char *path, const char *text, size_t len) {
    if (!path) {
        fwrite(text, 1, len, stdout);
        return CLI_OK;
    }
    return ds_write_file_atomic(path, text, len) == DS_OK ? CLI_OK : cli_lib_error(cmd);
}

char *cli_stem(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, base, n);
        s[n] = 0;
    }
    return s;
}

int cli_parse_shard(const char *cmd, const char *text, int *index, int *count) {
    if (ds_shard_parse(text, index, count) != DS_OK) return cli_error(cmd, "--shard: %s", ds_last_error());
    return CLI_OK;
}

void cli_keep_shard(ds_image_list *list, int index, int count) {
    if (count <= 1) return;
    int keep = 0;
    for (int i = 0; i < list->n; i++) {
        if (ds_shard_has(i, index, count)) {
            list->paths[keep] = list->paths[i];
            if (list->labels) list->labels[keep] = list->labels[i];
            if (list->splits) list->splits[keep] = list->splits[i];
            if (list->masks) list->masks[keep] = list->masks[i];
            keep++;
            continue;
        }
        free(list->paths[i]);
        if (list->splits) free(list->splits[i]);
        if (list->masks) free(list->masks[i]);
    }
    list->n = keep;
}

int cli_read_list(const char *cmd, const char *path, char ***lines, int *n) {
    FILE *fp = fopen(path, "r");
    if (!fp) return cli_error(cmd, "cannot open list '%s': %s", path, strerror(errno));
    char **v = NULL, buf[4096];
    int cnt = 0, cap = 0, rc = CLI_OK;
    while (rc == CLI_OK && fgets(buf, sizeof buf, fp)) {
        size_t len = strlen(buf);
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') rc = cli_error(cmd, "list '%s': a line is longer than %zu bytes", path, sizeof buf - 2);
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = 0;
        if (rc != CLI_OK || !len || buf[0] == '#') continue;
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            char **nv = realloc(v, sizeof(char *) * (size_t)cap);
            if (!nv) {
                rc = cli_error(cmd, "out of memory");
                break;
            }
            v = nv;
        }
        if (!(v[cnt] = strdup(buf))) rc = cli_error(cmd, "out of memory");
        else cnt++;
    }
    fclose(fp);
    if (rc == CLI_OK && cnt == 0) rc = cli_error(cmd, "list '%s' names no images", path);
    if (rc != CLI_OK) {
        cli_free_list(v, cnt);
        return rc;
    }
    *lines = v;
    *n = cnt;
    return CLI_OK;
}

void cli_free_list(char **lines, int n) {
    for (int i = 0; i < n; i++) free(lines[i]);
    free(lines);
}

int cli_expand_images(const char *cmd, const cli_positional *pos, bool recursive, ds_image_list **list) {
    *list = NULL;
    if (ds_image_list_expand(pos->v, pos->n, recursive, list) != DS_OK) return cli_lib_error(cmd);
    if ((*list)->n > 0) return CLI_OK;
    ds_image_list_free(*list);
    *list = NULL;
    return cli_error(cmd, "no images found in the inputs");
}

void cli_json_string(GString *s, const char *v) {
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\') g_string_append_printf(s, "\\%c", *p);
        else if (*p < 0x20) g_string_append_printf(s, "\\u%04x", *p);
        else g_string_append_c(s, (char)*p);
    }
    g_string_append_c(s, '"');
}

