/* Expanding command-line arguments into a list of images: files, folders
 * (sorted, optionally recursive) and labels.csv files (the layout of
 * ../shared/data/<task>/labels.csv: filename,split,label,maskfile with paths
 * relative to the CSV). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "dinoscope/image.h"
#include "image/dicom.h"

/* Extensions of the formats we read through libvips (case-insensitive). */
static const char *const IMAGE_EXTS[] = {"png", "jpg", "jpeg", "jpe", "tif", "tiff", "webp", "bmp",
                                         "pnm", "ppm", "pgm", "pbm", "pfm", "gif", NULL};

static bool has_ext(const char *name, const char *ext) {
    const char *dot = strrchr(name, '.');
    return dot && strcasecmp(dot + 1, ext) == 0;
}

static bool is_image_name(const char *name) {
    for (int i = 0; IMAGE_EXTS[i]; i++)
        if (has_ext(name, IMAGE_EXTS[i])) return true;
    return false;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static bool is_dicomdir_name(const char *path) { return strcasecmp(base_name(path), "DICOMDIR") == 0; }

/* Images of a folder: known extensions, and DICOM files, which archives and
 * CDs often store without an extension (IM000001) or as .dcm; those are
 * recognised by their "DICM" marker (ds_image_is_dicom). A DICOMDIR is an
 * index, not an image. */
static bool is_listed_image(const char *path) {
    if (is_image_name(path)) return true;
    if (is_dicomdir_name(path)) return false;
    return ds_image_is_dicom(path) != 0;
}

typedef struct {
    int n, cap;
    char **paths;
    int *labels;
    char **splits, **masks;
} builder;

static ds_status push(builder *b, char *path, int label, char *split, char *mask) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        char **p = realloc(b->paths, (size_t)cap * sizeof *p);
        if (p) b->paths = p;
        int *l = p ? realloc(b->labels, (size_t)cap * sizeof *l) : NULL;
        if (l) b->labels = l;
        char **s = l ? realloc(b->splits, (size_t)cap * sizeof *s) : NULL;
        if (s) b->splits = s;
        char **m = s ? realloc(b->masks, (size_t)cap * sizeof *m) : NULL;
        if (m) b->masks = m;
        if (!m) {
            free(path);
            free(split);
            free(mask);
            return ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
        }
        b->cap = cap;
    }
    b->paths[b->n] = path;
    b->labels[b->n] = label;
    b->splits[b->n] = split;
    b->masks[b->n] = mask;
    b->n++;
    return DS_OK;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), n = strlen(name);
    char *s = malloc(a + n + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/') s[k++] = '/';
    memcpy(s + k, name, n + 1);
    return s;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends the images under dir (sorted by name; sub-folders in the same
 * order when recursive; hidden entries skipped). */
static ds_status walk(builder *b, const char *dir, bool recursive, int depth) {
    if (depth > 64) return ds_set_error(DS_ERR_ARG, "ds_image_list_expand: '%s': folders nested too deep", dir);
    DIR *d = opendir(dir);
    if (!d) return ds_set_error(DS_ERR_IO, "'%s': cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    ds_status st = DS_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                st = ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = join(dir, e->d_name))) {
            st = ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (st == DS_OK && n > 1) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char *path = names[i];
        names[i] = NULL;
        if (st != DS_OK) {
            free(path);
            continue;
        }
        struct stat sb;
        if (stat(path, &sb) != 0) { /* dangling link: not an image we can list */
            free(path);
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (recursive) st = walk(b, path, recursive, depth + 1);
            free(path);
        } else if (S_ISREG(sb.st_mode) && is_listed_image(path)) {
            st = push(b, path, -1, NULL, NULL);
        } else {
            free(path);
        }
    }
    free(names);
    return st;
}

/* One RFC 4180 field from *p (quotes, doubled quotes); advances past the
 * separator. Returns a new string or NULL on no memory. */
static char *csv_field(const char **p) {
    const char *s = *p;
    size_t cap = strlen(s) + 1;
    char *out = malloc(cap), *o = out;
    if (!out) return NULL;
    if (*s == '"') {
        s++;
        while (*s) {
            if (*s == '"' && s[1] == '"') *o++ = '"', s += 2;
            else if (*s == '"') {
                s++;
                break;
            } else *o++ = *s++;
        }
        while (*s && *s != ',') s++;
    } else {
        while (*s && *s != ',') *o++ = *s++;
    }
    *o = 0;
    if (*s == ',') s++;
    *p = s;
    /* trim surrounding blanks */
    char *start = out;
    while (isspace((unsigned char)*start)) start++;
    char *end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1])) *--end = 0;
    if (start != out) memmove(out, start, strlen(start) + 1);
    return out;
}

/* Splits one CSV line into at most max fields; returns the count or -1. */
static int csv_split(const char *line, char **fields, int max) {
    int n = 0;
    const char *p = line;
    for (;;) {
        if (n == max) break;
        char *f = csv_field(&p);
        if (!f) {
            for (int i = 0; i < n; i++) free(fields[i]);
            return -1;
        }
        fields[n++] = f;
        if (!*p) break;
    }
    return n;
}

static ds_status read_csv(builder *b, const char *csv) {
    FILE *fp = fopen(csv, "r");
    if (!fp) return ds_set_error(DS_ERR_IO, "'%s': %s", csv, strerror(errno));
    char *dir = strdup(csv);
    if (!dir) {
        fclose(fp);
        return ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
    }
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else dir[0] = 0;

    enum { MAXF = 64 };
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int col_file = -1, col_split = -1, col_label = -1, col_mask = -1, n_cols = 0, line_no = 0, n_rows = 0;
    ds_status st = DS_OK;
    while (st == DS_OK && (len = getline(&line, &line_cap, fp)) >= 0) {
        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (line_no == 1 && (unsigned char)line[0] == 0xEF && (unsigned char)line[1] == 0xBB &&
            (unsigned char)line[2] == 0xBF)
            memmove(line, line + 3, (size_t)len - 2); /* UTF-8 byte order mark */
        bool blank = true;
        for (char *c = line; *c; c++)
            if (!isspace((unsigned char)*c)) blank = false;
        if (blank) continue;
        char *f[MAXF];
        int nf = csv_split(line, f, MAXF);
        if (nf < 0) {
            st = ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
            break;
        }
        if (col_file < 0 && n_cols == 0) { /* header */
            n_cols = nf;
            for (int i = 0; i < nf; i++) {
                if (!strcmp(f[i], "filename")) col_file = i;
                else if (!strcmp(f[i], "split")) col_split = i;
                else if (!strcmp(f[i], "label")) col_label = i;
                else if (!strcmp(f[i], "maskfile")) col_mask = i;
            }
            if (col_file < 0)
                st = ds_set_error(DS_ERR_FORMAT, "'%s': no 'filename' column in the header line", csv);
        } else if (col_file >= nf || !f[col_file][0]) {
            st = ds_set_error(DS_ERR_FORMAT, "'%s' line %d: empty filename", csv, line_no);
        } else {
            int label = -1;
            if (col_label >= 0 && col_label < nf && f[col_label][0]) {
                char *end;
                long v = strtol(f[col_label], &end, 10);
                if (*end || v < 0 || v > 1000000)
                    st = ds_set_error(DS_ERR_FORMAT, "'%s' line %d: label '%s' is not a non-negative integer", csv,
                                      line_no, f[col_label]);
                label = (int)v;
            }
            char *path = NULL, *split = NULL, *mask = NULL;
            if (st == DS_OK) {
                path = f[col_file][0] == '/' ? strdup(f[col_file]) : join(dir, f[col_file]);
                if (col_split >= 0 && col_split < nf && f[col_split][0]) split = strdup(f[col_split]);
                if (col_mask >= 0 && col_mask < nf && f[col_mask][0])
                    mask = f[col_mask][0] == '/' ? strdup(f[col_mask]) : join(dir, f[col_mask]);
                bool oom = !path || (col_split >= 0 && col_split < nf && f[col_split][0] && !split) ||
                           (col_mask >= 0 && col_mask < nf && f[col_mask][0] && !mask);
                if (oom) {
                    free(path);
                    free(split);
                    free(mask);
                    st = ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
                } else {
                    st = push(b, path, label, split, mask);
                    n_rows++;
                }
            }
        }
        for (int i = 0; i < nf; i++) free(f[i]);
    }
    if (st == DS_OK && ferror(fp)) st = ds_set_error(DS_ERR_IO, "'%s': read error", csv);
    if (st == DS_OK && col_file < 0) st = ds_set_error(DS_ERR_FORMAT, "'%s': empty CSV (no header line)", csv);
    if (st == DS_OK && n_rows == 0) st = ds_set_error(DS_ERR_FORMAT, "'%s': no rows after the header", csv);
    free(line);
    free(dir);
    fclose(fp);
    return st;
}

void ds_image_list_free(ds_image_list *list) {
    if (!list) return;
    for (int i = 0; i < list->n; i++) {
        free(list->paths[i]);
        free(list->splits[i]);
        free(list->masks[i]);
    }
    free(list->paths);
    free(list->labels);
    free(list->splits);
    free(list->masks);
    free(list);
}

ds_status ds_image_list_expand(const char *const *args, int n_args, int recursive, ds_image_list **out) {
    if (!out || (n_args > 0 && !args) || n_args < 0) return ds_set_error(DS_ERR_ARG, "ds_image_list_expand: bad arguments");
    if (n_args == 0) return ds_set_error(DS_ERR_ARG, "ds_image_list_expand: no input images given");
    builder b = {0};
    ds_status st = DS_OK;
    for (int i = 0; i < n_args && st == DS_OK; i++) {
        const char *a = args[i];
        struct stat sb;
        if (stat(a, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            int before = b.n;
            st = walk(&b, a, recursive != 0, 0);
            if (st == DS_OK && b.n == before)
                st = ds_set_error(DS_ERR_ARG, "'%s': no images in this folder%s", a,
                                  recursive ? "" : " (use --recursive for sub-folders)");
        } else if (has_ext(a, "csv")) {
            st = read_csv(&b, a);
        } else if (is_dicomdir_name(a)) {
            char **files = NULL;
            int n_files = 0;
            st = ds_dicom_dir_files(a, &files, &n_files);
            for (int k = 0; k < n_files; k++) {
                if (st == DS_OK) st = push(&b, files[k], -1, NULL, NULL);
                else free(files[k]);
            }
            free(files);
        } else {
            /* a file is itself; a missing one fails later, when loaded, with
             * the same one-line error as any other bad input */
            char *p = strdup(a);
            st = p ? push(&b, p, -1, NULL, NULL) : ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
        }
    }
    ds_image_list *list = st == DS_OK ? calloc(1, sizeof *list) : NULL;
    if (st == DS_OK && !list) st = ds_set_error(DS_ERR_NOMEM, "ds_image_list_expand: out of memory");
    if (st != DS_OK) {
        ds_image_list tmp = {b.n, b.paths, b.labels, b.splits, b.masks};
        for (int i = 0; i < tmp.n; i++) {
            free(tmp.paths[i]);
            free(tmp.splits[i]);
            free(tmp.masks[i]);
        }
        free(b.paths);
        free(b.labels);
        free(b.splits);
        free(b.masks);
        return st;
    }
    list->n = b.n;
    list->paths = b.paths;
    list->labels = b.labels;
    list->splits = b.splits;
    list->masks = b.masks;
    *out = list;
    return DS_OK;
}
