/* Feature stores on disk (store.h): write with resume, read mapped. */
#define _DEFAULT_SOURCE /* madvise, MADV_DONTNEED (glibc ignores posix_madvise DONTNEED) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "core/internal.h"
#include "dinoscope/npy.h"
#include "dinoscope/store.h"

#define STORE_FORMAT "dinoscope-feature-store 1"

typedef struct {
    void *base;         /* mapping from file offset 0 */
    size_t map_bytes;
    const float *data;  /* n_images * N * D floats */
    int64_t n_images;
    size_t lo, hi;      /* bytes of the mapping maybe resident: [lo, hi) */
} store_map;

struct ds_feature_store {
    char *dir;
    int64_t N;
    int D;
    ds_model_info info;
    int has_info;
    /* writing */
    int fd;
    int64_t rows;        /* images appended */
    int n_inputs;
    /* reading */
    store_map *maps;
    int n_maps;
    int64_t n_images;
};

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static size_t image_bytes(const ds_feature_store *s) { return sizeof(float) * (size_t)s->N * (size_t)s->D; }

/* The identity lines; backbone_file comes first and is not compared. */
static char *identity(const ds_model_info *in, const char *const *paths, int n) {
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) crc = (uint32_t)crc32(crc, (const Bytef *)paths[i], (uInt)strlen(paths[i]) + 1);
    size_t cap = 2048 + strlen(in->backbone_file) + strlen(in->backbone_arch);
    char *t = malloc(cap);
    if (!t) return NULL;
    snprintf(t, cap,
             "backbone_file=%s\nformat=%s\nbackbone_sha256=%s\nbackbone_arch=%s\nsize=%d\nlayers=%d\nstain_norm=%s\n"
             "clahe_clip=%.17g\nclahe_tiles=%d\ngrid=%dx%d\ndim=%d\ninputs=%d crc32 %08x\n",
             in->backbone_file, STORE_FORMAT, in->backbone_sha256, in->backbone_arch, in->prep.size, in->n_layers,
             in->prep.stain == DS_STAIN_CLAHE ? "clahe" : "none", in->prep.clahe_clip, in->prep.clahe_tiles,
             in->grid_h, in->grid_w, in->dim, n, crc);
    return t;
}

/* The value of "key=" in text (up to the line's end) into out. */
static int get_line(const char *text, const char *key, char *out, size_t n) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1, *e = strchr(v, '\n');
            size_t len = e ? (size_t)(e - v) : strlen(v);
            if (len >= n) return 0;
            memcpy(out, v, len);
            out[len] = 0;
            return 1;
        }
    }
    return 0;
}

static ds_status parse_identity(const char *path, const char *t, ds_model_info *in, int *n_inputs) {
    char v[1024], stain[16];
    memset(in, 0, sizeof *in);
    int ok = get_line(t, "format", v, sizeof v) && !strcmp(v, STORE_FORMAT);
    ok = ok && get_line(t, "backbone_file", in->backbone_file, sizeof in->backbone_file);
    ok = ok && get_line(t, "backbone_sha256", in->backbone_sha256, sizeof in->backbone_sha256);
    ok = ok && get_line(t, "backbone_arch", in->backbone_arch, sizeof in->backbone_arch);
    ok = ok && get_line(t, "size", v, sizeof v) && sscanf(v, "%d", &in->prep.size) == 1;
    ok = ok && get_line(t, "layers", v, sizeof v) && sscanf(v, "%d", &in->n_layers) == 1;
    ok = ok && get_line(t, "stain_norm", stain, sizeof stain);
    ok = ok && get_line(t, "clahe_clip", v, sizeof v) && sscanf(v, "%lf", &in->prep.clahe_clip) == 1;
    ok = ok && get_line(t, "clahe_tiles", v, sizeof v) && sscanf(v, "%d", &in->prep.clahe_tiles) == 1;
    ok = ok && get_line(t, "grid", v, sizeof v) && sscanf(v, "%dx%d", &in->grid_h, &in->grid_w) == 2;
    ok = ok && get_line(t, "dim", v, sizeof v) && sscanf(v, "%d", &in->dim) == 1;
    ok = ok && get_line(t, "inputs", v, sizeof v) && sscanf(v, "%d", n_inputs) == 1;
    if (!ok || in->grid_h < 1 || in->grid_w < 1 || in->dim < 1 || in->prep.size < 1 || *n_inputs < 0 ||
        (strcmp(stain, "none") && strcmp(stain, "clahe")))
        return ds_set_error(DS_ERR_FORMAT, "feature store '%s': unreadable or from another version", path);
    in->prep.stain = strcmp(stain, "clahe") ? DS_STAIN_NONE : DS_STAIN_CLAHE;
    in->map_sigma = DS_ANOMALY_MAP_SIGMA;
    return DS_OK;
}

/* progress.txt: inputs_done, rows, complete. */
static ds_status read_progress(const char *dir, int64_t *inputs_done, int64_t *rows, int *complete) {
    char *path = join(dir, "progress.txt");
    if (!path) return ds_set_error(DS_ERR_NOMEM, "ds_store: out of memory");
    FILE *fp = fopen(path, "rb");
    long long a = -1, b = -1;
    int c = -1;
    int ok = fp && fscanf(fp, "inputs_done=%lld\nrows=%lld\ncomplete=%d", &a, &b, &c) == 3 && a >= 0 && b >= 0;
    if (fp) fclose(fp);
    ds_status st = ok ? DS_OK : ds_set_error(DS_ERR_FORMAT, "feature store: '%s' is missing or unreadable", path);
    free(path);
    *inputs_done = a, *rows = b, *complete = c;
    return st;
}

static ds_status write_progress(const ds_feature_store *s, int64_t inputs_done, int complete) {
    char *path = join(s->dir, "progress.txt"), text[128];
    if (!path) return ds_set_error(DS_ERR_NOMEM, "ds_store: out of memory");
    int n = snprintf(text, sizeof text, "inputs_done=%lld\nrows=%lld\ncomplete=%d\n", (long long)inputs_done,
                     (long long)s->rows, complete);
    ds_status st = ds_write_file_atomic(path, text, (size_t)n);
    free(path);
    return st;
}

static char *read_text(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    char *t = malloc(65537);
    size_t n = t ? fread(t, 1, 65536, fp) : 0;
    fclose(fp);
    if (t) t[n] = 0;
    return t;
}

/* First line of a (after the first, backbone_file) that b lacks. */
static const char *first_mismatch(const char *a, const char *b, char *line, size_t n) {
    for (const char *p = strchr(a, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        const char *e = strchr(p + 1, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char want[1100];
        snprintf(want, sizeof want, "%.*s", (int)DS_MIN(len, sizeof want - 1), p); /* "\nkey=value" */
        if (!strstr(b, want)) {
            snprintf(line, n, "%s", want + 1);
            return line;
        }
    }
    return NULL;
}

void ds_store_close(ds_feature_store *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    for (int i = 0; i < s->n_maps; i++)
        if (s->maps[i].base) munmap(s->maps[i].base, s->maps[i].map_bytes);
    free(s->maps);
    free(s->dir);
    free(s);
}

static ds_feature_store *store_new(const char *dir) {
    ds_feature_store *s = calloc(1, sizeof *s);
    if (s) s->fd = -1;
    if (s && dir && !(s->dir = strdup(dir))) {
        free(s);
        return NULL;
    }
    return s;
}

int ds_store_exists(const char *dir) {
    char *p = dir ? join(dir, "store.txt") : NULL;
    int ok = p && access(p, F_OK) == 0;
    free(p);
    return ok;
}

ds_status ds_store_create(const char *dir, const ds_model_info *info, const char *const *paths, int n_inputs,
                          int resume, ds_feature_store **out, int64_t *inputs_done) {
    if (!dir || !info || (!paths && n_inputs > 0) || n_inputs < 0 || !out || info->grid_h < 1 || info->grid_w < 1 ||
        info->dim < 1)
        return ds_set_error(DS_ERR_ARG, "ds_store_create: bad arguments");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return ds_set_error(DS_ERR_IO, "feature store: cannot create '%s': %s", dir, strerror(errno));
    ds_feature_store *s = store_new(dir);
    char *id = identity(info, paths, n_inputs);
    char *id_path = join(dir, "store.txt"), *f_path = join(dir, "features.f32"), *old = NULL;
    ds_status st = s && id && id_path && f_path ? DS_OK : ds_set_error(DS_ERR_NOMEM, "ds_store_create: out of memory");
    int64_t done = 0;
    if (st != DS_OK) goto cleanup;
    s->N = (int64_t)info->grid_h * info->grid_w, s->D = info->dim, s->info = *info, s->has_info = 1;
    s->n_inputs = n_inputs;
    old = resume ? read_text(id_path) : NULL;
    if (old) {
        char line[1100];
        if (first_mismatch(id, old, line, sizeof line)) {
            st = ds_set_error(DS_ERR_MISMATCH,
                              "feature store '%s' holds other features (this fit has '%s'): give another --work-dir or "
                              "delete it",
                              dir, line);
            goto cleanup;
        }
        int64_t rows;
        int complete;
        if ((st = read_progress(dir, &done, &rows, &complete)) != DS_OK) goto cleanup;
        s->fd = open(f_path, O_RDWR);
        struct stat sb;
        if (s->fd < 0 || fstat(s->fd, &sb) != 0) {
            st = ds_set_error(DS_ERR_IO, "feature store: cannot open '%s': %s", f_path, strerror(errno));
            goto cleanup;
        }
        if ((uint64_t)sb.st_size < (uint64_t)rows * image_bytes(s) || done > n_inputs) {
            st = ds_set_error(DS_ERR_FORMAT, "feature store '%s': features.f32 is shorter than its %lld images", dir,
                              (long long)rows);
            goto cleanup;
        }
        /* cut off what a killed run wrote after its last commit */
        off_t keep = (off_t)((uint64_t)rows * image_bytes(s));
        if (ftruncate(s->fd, keep) != 0 || lseek(s->fd, keep, SEEK_SET) != keep) {
            st = ds_set_error(DS_ERR_IO, "feature store: cannot truncate '%s': %s", f_path, strerror(errno));
            goto cleanup;
        }
        s->rows = rows;
    } else {
        s->fd = open(f_path, O_RDWR | O_CREAT | O_TRUNC, 0666);
        if (s->fd < 0) {
            st = ds_set_error(DS_ERR_IO, "feature store: cannot create '%s': %s", f_path, strerror(errno));
            goto cleanup;
        }
        if ((st = write_progress(s, 0, 0)) != DS_OK || (st = ds_write_file_atomic(id_path, id, strlen(id))) != DS_OK)
            goto cleanup;
    }
cleanup:
    free(id);
    free(id_path);
    free(f_path);
    free(old);
    if (st != DS_OK) {
        ds_store_close(s);
        return st;
    }
    if (inputs_done) *inputs_done = done;
    *out = s;
    return DS_OK;
}

ds_status ds_store_append(ds_feature_store *s, const float *feats) {
    if (!s || s->fd < 0 || !feats) return ds_set_error(DS_ERR_ARG, "ds_store_append: not a store open for writing");
    const char *p = (const char *)feats;
    size_t left = image_bytes(s);
    while (left > 0) {
        ssize_t w = write(s->fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return ds_set_error(DS_ERR_IO, "cannot write '%s/features.f32': %s", s->dir,
                                w < 0 ? strerror(errno) : "short write");
        p += w, left -= (size_t)w;
    }
    s->rows++;
    return DS_OK;
}

ds_status ds_store_commit(ds_feature_store *s, int64_t inputs_done) {
    if (!s || s->fd < 0) return ds_set_error(DS_ERR_ARG, "ds_store_commit: not a store open for writing");
    if (fdatasync(s->fd) != 0)
        return ds_set_error(DS_ERR_IO, "cannot write '%s/features.f32': %s", s->dir, strerror(errno));
    return write_progress(s, inputs_done, 0);
}

ds_status ds_store_finish(ds_feature_store *s) {
    if (!s || s->fd < 0) return ds_set_error(DS_ERR_ARG, "ds_store_finish: not a store open for writing");
    if (fdatasync(s->fd) != 0)
        return ds_set_error(DS_ERR_IO, "cannot write '%s/features.f32': %s", s->dir, strerror(errno));
    return write_progress(s, s->n_inputs, 1);
}

/* ---- reading ------------------------------------------------------------ */

static ds_status add_map(ds_feature_store *s, void *base, size_t map_bytes, size_t data_off, int64_t n_images) {
    store_map *m = realloc(s->maps, sizeof(store_map) * (size_t)(s->n_maps + 1));
    if (!m) {
        munmap(base, map_bytes);
        return ds_set_error(DS_ERR_NOMEM, "ds_store_open: out of memory");
    }
    s->maps = m;
    m[s->n_maps++] = (store_map){base, map_bytes, (const float *)((const char *)base + data_off), n_images, 0, 0};
    s->n_images += n_images;
    return DS_OK;
}

ds_status ds_store_open(const char *dir, ds_feature_store **out) {
    if (!dir || !out) return ds_set_error(DS_ERR_ARG, "ds_store_open: bad arguments");
    ds_feature_store *s = store_new(dir);
    char *id_path = join(dir, "store.txt"), *f_path = join(dir, "features.f32");
    char *id = id_path ? read_text(id_path) : NULL;
    ds_status st = s && id_path && f_path ? DS_OK : ds_set_error(DS_ERR_NOMEM, "ds_store_open: out of memory");
    int64_t done, rows;
    int complete, n_inputs;
    int fd = -1;
    if (st == DS_OK && !id) st = ds_set_error(DS_ERR_IO, "'%s' is not a feature store (no store.txt)", dir);
    if (st == DS_OK) st = parse_identity(dir, id, &s->info, &n_inputs);
    if (st == DS_OK) st = read_progress(dir, &done, &rows, &complete);
    if (st == DS_OK && complete != 1)
        st = ds_set_error(DS_ERR_ARG, "feature store '%s' is not finished (%lld of %d inputs): run the fit again to "
                          "resume it", dir, (long long)done, n_inputs);
    if (st == DS_OK && rows < 1) st = ds_set_error(DS_ERR_FORMAT, "feature store '%s' holds no images", dir);
    if (st == DS_OK) {
        s->has_info = 1;
        s->N = (int64_t)s->info.grid_h * s->info.grid_w, s->D = s->info.dim;
        struct stat sb;
        size_t bytes = (size_t)rows * image_bytes(s);
        if ((fd = open(f_path, O_RDONLY)) < 0 || fstat(fd, &sb) != 0)
            st = ds_set_error(DS_ERR_IO, "feature store: cannot open '%s': %s", f_path, strerror(errno));
        else if ((uint64_t)sb.st_size < (uint64_t)bytes)
            st = ds_set_error(DS_ERR_FORMAT, "feature store '%s': features.f32 holds %lld bytes, less than its %lld images",
                              dir, (long long)sb.st_size, (long long)rows);
        else {
            void *base = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
            if (base == MAP_FAILED) st = ds_set_error(DS_ERR_IO, "feature store: cannot map '%s': %s", f_path, strerror(errno));
            else st = add_map(s, base, bytes, 0, rows);
        }
    }
    if (fd >= 0) close(fd);
    free(id);
    free(id_path);
    free(f_path);
    if (st == DS_OK) *out = s;
    else ds_store_close(s);
    return st;
}

ds_status ds_store_open_npy(const char *const *paths, int n, ds_feature_store **out) {
    if (!paths || n < 1 || !out) return ds_set_error(DS_ERR_ARG, "ds_store_open_npy: no files");
    ds_feature_store *s = store_new(NULL);
    ds_status st = s ? DS_OK : ds_set_error(DS_ERR_NOMEM, "ds_store_open_npy: out of memory");
    for (int i = 0; i < n && st == DS_OK; i++) {
        ds_npy_map m;
        if ((st = ds_npy_map_f32(paths[i], &m)) != DS_OK) break;
        if (m.n_dims != 3 || m.shape[0] < 1 || m.shape[1] < 1 || m.shape[2] < 1 || m.shape[2] > INT32_MAX ||
            (i > 0 && (m.shape[1] != s->N || m.shape[2] != s->D))) {
            st = ds_set_error(DS_ERR_SHAPE, "'%s' has the wrong shape: expected [n, %lld, %d] like the first file",
                              paths[i], (long long)(i ? s->N : 0), i ? s->D : 0);
            if (i == 0) ds_set_error(DS_ERR_SHAPE, "'%s' has the wrong shape: expected [n, N, D] features", paths[i]);
            ds_npy_unmap(&m);
            break;
        }
        s->N = m.shape[1], s->D = (int)m.shape[2];
        st = add_map(s, m.base, m.map_bytes, m.data_offset, m.shape[0]);
    }
    if (st == DS_OK) *out = s;
    else ds_store_close(s);
    return st;
}

int64_t ds_store_n_images(const ds_feature_store *s) { return s ? (s->maps ? s->n_images : s->rows) : 0; }

void ds_store_shape(const ds_feature_store *s, int64_t *N, int *D) {
    if (N) *N = s ? s->N : 0;
    if (D) *D = s ? s->D : 0;
}

const ds_model_info *ds_store_info(const ds_feature_store *s) { return s && s->has_info ? &s->info : NULL; }

/* Drops the pages of [a, b) (rounded inward to pages) from our mapping:
 * they stay in the page cache but no longer count in our RSS. */
static void release(store_map *m, size_t a, size_t b) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    a = (a + pg - 1) / pg * pg, b = b / pg * pg;
    if (b > a) madvise((char *)m->base + a, b - a, MADV_DONTNEED);
}

/* Copies [off, off + n) bytes of map m, releasing behind the reader: on a
 * backward jump all it had read, going forward what lies more than
 * DS_STORE_WINDOW behind. */
static void map_copy(store_map *m, size_t off, size_t n, void *out) {
    memcpy(out, (const char *)m->base + off, n);
    if (off < m->lo) {
        release(m, 0, m->hi);
        m->lo = off, m->hi = off + n;
        return;
    }
    if (off + n > m->hi) m->hi = off + n;
    if (off - m->lo > DS_STORE_WINDOW) {
        release(m, m->lo, off);
        m->lo = off;
    }
}

static int store_read(void *user, int64_t first, int64_t n, float *out) {
    ds_feature_store *s = user;
    const size_t D = (size_t)s->D;
    int64_t start = 0;
    for (int i = 0; i < s->n_maps && n > 0; i++) {
        store_map *m = &s->maps[i];
        int64_t end = start + m->n_images * s->N;
        if (first < end) {
            int64_t k = DS_MIN(n, end - first);
            size_t off = (size_t)((const char *)m->data - (const char *)m->base) + sizeof(float) * D * (size_t)(first - start);
            map_copy(m, off, sizeof(float) * D * (size_t)k, out);
            out += (size_t)k * D, first += k, n -= k;
        }
        start = end;
    }
    if (n > 0) return ds_set_error(DS_ERR_ARG, "feature store: rows past its end");
    return DS_OK;
}

ds_row_source ds_store_rows(ds_feature_store *s) {
    return (ds_row_source){.n_rows = s->n_images * s->N, .dim = s->D, .read = store_read, .user = s};
}
