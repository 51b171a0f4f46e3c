/* ds_weights: format detection, the tensor table (lookup by name), dtype
 * conversion and file hashing. The readers live in safetensors.c and pth.c. */
#define _POSIX_C_SOURCE 200809L /* pread, strdup, O_CLOEXEC */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weights/weights_internal.h"

ds_tensor *ds_weights_add_tensor(ds_weights *w, const char *name, size_t name_len) {
    if (w->n_tensors == w->cap_tensors) {
        int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        if (cap > (1 << 24)) {
            ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': more than %d tensors", w->path, 1 << 24);
            return NULL;
        }
        ds_tensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (!t) {
            ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory for the tensor table", w->path);
            return NULL;
        }
        w->tensors = t;
        w->cap_tensors = cap;
    }
    char *copy = malloc(name_len + 1);
    if (!copy) {
        ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", w->path);
        return NULL;
    }
    memcpy(copy, name, name_len);
    copy[name_len] = '\0';
    ds_tensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = copy;
    return t;
}

ds_status ds_weights_own_buffer(ds_weights *w, void *buf) {
    if (w->n_buffers == w->cap_buffers) {
        int cap = w->cap_buffers ? 2 * w->cap_buffers : 16;
        void **b = cap < (1 << 24) ? realloc(w->buffers, (size_t)cap * sizeof *b) : NULL;
        if (!b) {
            free(buf);
            return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", w->path);
        }
        w->buffers = b;
        w->cap_buffers = cap;
    }
    w->buffers[w->n_buffers++] = buf;
    return DS_OK;
}

static int ds_cmp_name_index(const void *a, const void *b) {
    return strcmp(((const ds_name_index *)a)->name, ((const ds_name_index *)b)->name);
}

ds_status ds_weights_index(ds_weights *w) {
    free(w->by_name);
    w->by_name = NULL;
    if (w->n_tensors == 0) return DS_OK;
    w->by_name = malloc((size_t)w->n_tensors * sizeof *w->by_name);
    if (!w->by_name) return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", w->path);
    for (int i = 0; i < w->n_tensors; i++) w->by_name[i] = (ds_name_index){w->tensors[i].name, i};
    qsort(w->by_name, (size_t)w->n_tensors, sizeof *w->by_name, ds_cmp_name_index);
    for (int i = 1; i < w->n_tensors; i++) {
        if (strcmp(w->by_name[i - 1].name, w->by_name[i].name) == 0)
            return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor name '%s' appears more than once",
                                w->path, w->by_name[i].name);
    }
    return DS_OK;
}

bool ds_shape_elements(const int64_t *shape, int n_dims, size_t itemsize, int64_t *n_elements, size_t *n_bytes) {
    int64_t n = 1;
    for (int i = 0; i < n_dims; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return false;
    }
    size_t bytes;
    if ((uint64_t)n > SIZE_MAX || !ds_mul_size((size_t)n, itemsize, &bytes)) return false;
    *n_elements = n;
    *n_bytes = bytes;
    return true;
}

void ds_shape_format(char *buf, size_t cap, const int64_t *shape, int n_dims, size_t itemsize) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n_dims && len < cap; i++) {
        int k = snprintf(buf + len, cap - len, "%lld x ", (long long)shape[i]);
        if (k < 0) return;
        len += (size_t)k;
    }
    if (len < cap) snprintf(buf + len, cap - len, "%zu", itemsize);
}

void ds_weights_free(ds_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n_tensors; i++) free((char *)w->tensors[i].name);
    free(w->tensors);
    free(w->by_name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    for (int i = 0; i < w->n_buffers; i++) free(w->buffers[i]);
    free(w->buffers);
    if (w->map) munmap(w->map, w->map_bytes);
    free(w->path);
    free(w);
}

ds_status ds_weights_load(const char *path, ds_weights **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_weights_load: path and out must not be NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ds_set_error(DS_ERR_IO, "ds_weights_load: cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        ds_status st = ds_set_error(DS_ERR_IO, "ds_weights_load: cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_set_error(DS_ERR_IO, "ds_weights_load: '%s' is not a regular file", path);
    }
    size_t file_bytes = (size_t)sb.st_size;
    unsigned char magic[4] = {0};
    ssize_t got = file_bytes >= 4 ? pread(fd, magic, 4, 0) : 0;
    if (got < 0) {
        ds_status st = ds_set_error(DS_ERR_IO, "ds_weights_load: cannot read '%s': %s", path, strerror(errno));
        close(fd);
        return st;
    }

    ds_weights *w = calloc(1, sizeof *w);
    if (w) w->path = strdup(path);
    if (!w || !w->path) {
        free(w);
        close(fd);
        return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: out of memory");
    }
    ds_status st;
    /* torch.save writes a zip (local file header "PK\3\4") since PyTorch 1.6
     * (torch/serialization.py, _use_new_zipfile_serialization) */
    if (got == 4 && memcmp(magic, "\x80\x02\x8a\x0a", 4) == 0) {
        /* PROTO 2, LONG1 of 10 bytes: the magic number that opens the legacy
         * (pre-1.6, _use_new_zipfile_serialization=False) format, a bare
         * pickle stream. As a safetensors length it would be 176 MB, beyond
         * the header limit, so this test takes nothing from safetensors. */
        st = ds_set_error(DS_ERR_UNSUPPORTED,
                          "ds_weights_load: '%s': legacy (pre-1.6, non-zip) torch.save format is not supported; re-save "
                          "it with a current torch.save or as safetensors",
                          path);
    } else if (got == 4 && memcmp(magic, "PK\x03\x04", 4) == 0) {
        close(fd);
        fd = -1;
        st = ds_pth_read(w, file_bytes);
    } else {
        st = ds_safetensors_read(w, fd, file_bytes);
    }
    if (fd >= 0) close(fd);
    if (st == DS_OK) st = ds_weights_index(w);
    if (st != DS_OK) {
        ds_weights_free(w);
        return st;
    }
    *out = w;
    return DS_OK;
}

int ds_weights_count(const ds_weights *w) { return w ? w->n_tensors : 0; }

const ds_tensor *ds_weights_get(const ds_weights *w, int i) {
    if (!w || i < 0 || i >= w->n_tensors) return NULL;
    return &w->tensors[i];
}

const ds_tensor *ds_weights_find(const ds_weights *w, const char *name) {
    if (!w || !name || !w->by_name) return NULL;
    int lo = 0, hi = w->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, w->by_name[mid].name);
        if (c == 0) return &w->tensors[w->by_name[mid].index];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *ds_weights_metadata(const ds_weights *w, const char *key) {
    if (!w || !key) return NULL;
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) return w->meta_values[i];
    return NULL;
}

const char *ds_weights_path(const ds_weights *w) { return w ? w->path : NULL; }

void ds_tensor_to_f32(const ds_tensor *t, float *dst) {
    size_t n = (size_t)t->n_elements;
    if (n == 0) return;
    if (t->dtype == DS_DTYPE_F32) {
        memcpy(dst, t->data, n * sizeof(float));
        return;
    }
    const uint16_t *src = t->data; /* 2-byte aligned: the readers guarantee it */
    if (t->dtype == DS_DTYPE_F16) {
        for (size_t i = 0; i < n; i++) dst[i] = ds_f16_to_f32(src[i]);
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = ds_bf16_to_f32(src[i]);
    }
}

ds_status ds_file_sha256(const char *path, char hex[65]) {
    if (!path || !hex) return ds_set_error(DS_ERR_ARG, "ds_file_sha256: path and hex must not be NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ds_set_error(DS_ERR_IO, "ds_file_sha256: cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_set_error(DS_ERR_IO, "ds_file_sha256: '%s' is not a regular file", path);
    }
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    GChecksum *ck = g_checksum_new(G_CHECKSUM_SHA256);
    ds_status st = DS_OK;
    if (!buf || !ck) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_file_sha256: out of memory");
        goto cleanup;
    }
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = ds_set_error(DS_ERR_IO, "ds_file_sha256: cannot read '%s': %s", path, strerror(errno));
            goto cleanup;
        }
        if (n == 0) break;
        g_checksum_update(ck, buf, (gssize)n);
    }
    const char *s = g_checksum_get_string(ck);
    if (!s || strlen(s) != 64) {
        st = ds_set_error(DS_ERR_IO, "ds_file_sha256: '%s': checksum failed", path);
        goto cleanup;
    }
    memcpy(hex, s, 65);
cleanup:
    if (ck) g_checksum_free(ck);
    free(buf);
    close(fd);
    return st;
}
