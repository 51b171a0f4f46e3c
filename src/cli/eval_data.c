/* The images of an evaluation: a labels.csv, a folder holding one, or the
 * MVTec AD layout (test/<defect>/, ground_truth/<defect>/<stem>_mask.png). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/eval_data.h"

void eval_items_free(eval_items *it) {
    for (int i = 0; i < it->n; i++) {
        free(it->v[i].path);
        free(it->v[i].mask);
        free(it->v[i].defect);
    }
    free(it->v);
    memset(it, 0, sizeof *it);
}

/* Takes ownership of path, mask and defect (freed on failure). */
static bool items_push(eval_items *it, char *path, char *mask, char *defect, int label, bool test) {
    if (it->n == it->cap) {
        int cap = it->cap ? 2 * it->cap : 256;
        eval_item *v = realloc(it->v, sizeof *v * (size_t)cap);
        if (!v) {
            free(path), free(mask), free(defect);
            return false;
        }
        it->v = v, it->cap = cap;
    }
    it->v[it->n++] = (eval_item){.path = path, .mask = mask, .defect = defect, .label = label, .test = test};
    return true;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static char *join2(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int from_csv(const char *cmd, const char *csv, bool want_train, eval_items *it) {
    ds_image_list *list = NULL;
    if (ds_image_list_expand(&csv, 1, 0, &list) != DS_OK) return cli_lib_error(cmd);
    bool any_split = false;
    for (int i = 0; i < list->n; i++) any_split = any_split || list->splits[i];
    int rc = CLI_OK;
    for (int i = 0; i < list->n && rc == CLI_OK; i++) {
        const char *sp = list->splits[i];
        bool test = any_split ? sp && !strcmp(sp, "test") : true;
        bool train = any_split && sp && !strcmp(sp, "train") && list->labels[i] == 0;
        if (!test && !(train && want_train)) continue;
        if (test && list->labels[i] < 0) {
            rc = cli_error(cmd, "'%s': test image '%s' has no label", csv, list->paths[i]);
            break;
        }
        char *p = strdup(list->paths[i]), *m = list->masks[i] ? strdup(list->masks[i]) : NULL;
        if (!p || (list->masks[i] && !m)) free(p), free(m), p = NULL;
        if (!p || !items_push(it, p, m, NULL, list->labels[i] > 0, test))
            rc = cli_error(cmd, "out of memory");
    }
    ds_image_list_free(list);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Images of one folder (sorted), as the list expansion sees them. */
static int folder_images(const char *cmd, const char *dir, ds_image_list **out) {
    if (ds_image_list_expand(&dir, 1, 0, out) != DS_OK) return cli_lib_error(cmd);
    return CLI_OK;
}

/* MVTec AD: test/<defect>/ with ground_truth/<defect>/<stem>_mask.png. */
static int from_mvtec(const char *cmd, const char *root, bool want_train, eval_items *it) {
    int rc = CLI_OK;
    if (want_train) {
        char *good = join2(root, "train/good");
        ds_image_list *l = NULL;
        if (!good) return cli_error(cmd, "out of memory");
        if (!is_dir(good)) rc = cli_error(cmd, "--folds needs the normal training images: no folder '%s'", good);
        if (rc == CLI_OK) rc = folder_images(cmd, good, &l);
        for (int i = 0; rc == CLI_OK && i < l->n; i++) {
            char *p = strdup(l->paths[i]);
            if (!p || !items_push(it, p, NULL, NULL, 0, false)) rc = cli_error(cmd, "out of memory");
        }
        ds_image_list_free(l);
        free(good);
        if (rc != CLI_OK) return rc;
    }
    char *test = join2(root, "test");
    DIR *d = test ? opendir(test) : NULL;
    if (!d) {
        rc = cli_error(cmd, "cannot open '%s': %s", test ? test : root, strerror(errno));
        free(test);
        return rc;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *full = join2(test, e->d_name);
        bool dir = full && is_dir(full);
        free(full);
        if (!dir) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) {
                rc = cli_error(cmd, "out of memory listing '%s'", test);
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) {
            rc = cli_error(cmd, "out of memory listing '%s'", test);
            break;
        }
        n++;
    }
    closedir(d);
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str);
    if (rc == CLI_OK && n == 0) rc = cli_error(cmd, "'%s' has no defect folders (expected test/good, test/<defect>/)", test);
    for (int j = 0; j < n && rc == CLI_OK; j++) {
        char *dir = join2(test, names[j]);
        ds_image_list *l = NULL;
        rc = dir ? folder_images(cmd, dir, &l) : cli_error(cmd, "out of memory");
        bool good = !strcmp(names[j], "good");
        for (int i = 0; rc == CLI_OK && i < l->n; i++) {
            char *mask = NULL;
            if (!good) {
                /* <stem>_mask.png beside the test image's stem */
                const char *base = strrchr(l->paths[i], '/');
                base = base ? base + 1 : l->paths[i];
                const char *dot = strrchr(base, '.');
                int stem = dot ? (int)(dot - base) : (int)strlen(base);
                size_t len = strlen(root) + strlen(names[j]) + (size_t)stem + 32;
                if (!(mask = malloc(len))) {
                    rc = cli_error(cmd, "out of memory");
                    break;
                }
                snprintf(mask, len, "%s/ground_truth/%s/%.*s_mask.png", root, names[j], stem, base);
                if (!is_file(mask)) {
                    free(mask);
                    mask = NULL;
                }
            }
            char *p = strdup(l->paths[i]), *def = strdup(names[j]);
            if (!p || !def) free(p), free(def), free(mask), p = NULL;
            if (!p || !items_push(it, p, mask, def, !good, true)) rc = cli_error(cmd, "out of memory");
        }
        ds_image_list_free(l);
        free(dir);
    }
    for (int j = 0; j < n; j++) free(names[j]);
    free(names);
    free(test);
    return rc;
}

/* Detects the layout of --data and lists its images. */
int eval_find_items(const char *cmd, const char *data, bool want_train, eval_items *it, const char **layout) {
    size_t len = strlen(data);
    if (len > 4 && !strcmp(data + len - 4, ".csv")) {
        *layout = "labels.csv";
        return from_csv(cmd, data, want_train, it);
    }
    if (!is_dir(data)) return cli_error(cmd, "--data '%s' is neither a labels.csv nor a folder", data);
    char *csv = join2(data, "labels.csv"), *test = join2(data, "test");
    int rc;
    if (!csv || !test) rc = cli_error(cmd, "out of memory");
    else if (is_file(csv)) {
        *layout = "labels.csv";
        rc = from_csv(cmd, csv, want_train, it);
    } else if (is_dir(test)) {
        *layout = "mvtec";
        rc = from_mvtec(cmd, data, want_train, it);
    } else {
        rc = cli_error(cmd, "--data '%s' has neither a labels.csv nor an MVTec AD test/ folder", data);
    }
    free(csv);
    free(test);
    return rc;
}

