/* NumPy .npy format 1.0/2.0 (numpy/lib/format.py): magic "\x93NUMPY", version,
 * header length (u16 in 1.0, u32 in 2.0), a Python dict literal padded with
 * spaces so that the data starts on a 64-byte boundary, then the raw data. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/internal.h"
#include "dinoscope/npy.h"

/* Header of a format 1.0 .npy with the dict padded to a total (preamble +
 * dict + '\n') of hdr_total bytes, a multiple of 64. Returns the length
 * written into buf (= hdr_total) or -1 if it does not fit. */
static int npy_header(char *buf, int hdr_total, int n_dims, const int64_t *shape) {
    char dict[600];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < n_dims; i++)
        len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld,%s", (long long)shape[i],
                        i + 1 < n_dims ? " " : "");
    /* numpy writes "(n,)" for 1-D and "(a, b)" otherwise; both parse the same */
    if (n_dims > 1) len--; /* drop the last comma */
    len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
    int pad = hdr_total - 10 - len - 1;
    if (pad < 0) return -1;
    int hlen = hdr_total - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)len);
    memset(buf + 10 + len, ' ', (size_t)pad);
    buf[hdr_total - 1] = '\n';
    return hdr_total;
}

static bool shape_count(int n_dims, const int64_t *shape, size_t *count) {
    if (n_dims < 0 || n_dims > DS_NPY_MAX_DIMS) return false;
    size_t c = 1;
    for (int i = 0; i < n_dims; i++)
        if (shape[i] < 0 || !ds_mul_size(c, (size_t)shape[i], &c)) return false;
    *count = c;
    return true;
}

/* Room for any shape of up to 8 dims of 19 digits: 256 bytes. */
enum { NPY_HDR = 256 };

struct ds_npy_writer {
    ds_atomic_file af;
    int n_dims;
    int64_t shape[DS_NPY_MAX_DIMS];
    bool failed;
};

ds_status ds_npy_writer_open(const char *path, int n_dims, const int64_t *shape, ds_npy_writer **out) {
    size_t count;
    if (n_dims < 1 || !shape_count(n_dims, shape, &count))
        return ds_set_error(DS_ERR_ARG, "ds_npy_writer_open: bad shape for '%s'", path);
    void *mem;
    ds_status st = ds_atomic_writer_new(sizeof(ds_npy_writer), offsetof(ds_npy_writer, af), path, &mem);
    if (st != DS_OK) return st;
    ds_npy_writer *w = mem;
    w->n_dims = n_dims;
    memcpy(w->shape, shape, sizeof(int64_t) * (size_t)n_dims);
    char hdr[NPY_HDR];
    npy_header(hdr, NPY_HDR, n_dims, shape);
    if (fwrite(hdr, 1, NPY_HDR, w->af.fp) != NPY_HDR) w->failed = true;
    *out = w;
    return DS_OK;
}

ds_status ds_npy_writer_append(ds_npy_writer *w, const float *data, size_t n) {
    if (!w->failed && n && fwrite(data, sizeof(float), n, w->af.fp) != n) w->failed = true;
    return w->failed ? ds_set_error(DS_ERR_IO, "cannot write '%s': %s", w->af.final_path, strerror(errno)) : DS_OK;
}

ds_status ds_npy_writer_close(ds_npy_writer *w, int ok, int64_t n_rows) {
    if (!w) return DS_OK;
    ds_status st = DS_OK;
    if (ok && w->failed) {
        st = ds_set_error(DS_ERR_IO, "cannot write '%s'", w->af.final_path);
        ok = 0;
    }
    if (ok) {
        char hdr[NPY_HDR];
        w->shape[0] = n_rows;
        npy_header(hdr, NPY_HDR, w->n_dims, w->shape);
        if (fseek(w->af.fp, 0, SEEK_SET) != 0 || fwrite(hdr, 1, NPY_HDR, w->af.fp) != NPY_HDR) {
            st = ds_set_error(DS_ERR_IO, "cannot write '%s': %s", w->af.final_path, strerror(errno));
            ok = 0;
        }
    }
    ds_status st2 = ds_atomic_commit(&w->af, ok);
    free(w);
    return st != DS_OK ? st : st2;
}

ds_status ds_npy_write_f32(const char *path, const float *data, int n_dims, const int64_t *shape) {
    size_t count;
    if (!shape_count(n_dims, shape, &count)) return ds_set_error(DS_ERR_ARG, "ds_npy_write_f32: bad shape for '%s'", path);
    if (n_dims == 0) return ds_set_error(DS_ERR_ARG, "ds_npy_write_f32: 0-d arrays not supported");
    ds_npy_writer *w;
    ds_status st = ds_npy_writer_open(path, n_dims, shape, &w);
    if (st != DS_OK) return st;
    st = ds_npy_writer_append(w, data, count);
    ds_status st2 = ds_npy_writer_close(w, st == DS_OK, shape[0]);
    return st != DS_OK ? st : st2;
}

/* Reads and checks the header of the .npy open at fp: dtype '<f4' or '<f8'
 * (*is_f8), C order, the shape, and that the file holds the declared bytes
 * (a 142-byte file may declare 11 GB: found by fuzz_npy). Leaves fp at the
 * data, whose offset is *data_off. */
static ds_status npy_header_read(const char *path, FILE *fp, int *is_f8, int *n_dims, int64_t *shape, size_t *n_bytes,
                                 long *data_off) {
    ds_status st = DS_OK;
    char *hdr = NULL;
    unsigned char pre[12];
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': not a .npy file", path);
        goto cleanup;
    }
    size_t hlen;
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            st = ds_set_error(DS_ERR_FORMAT, "'%s': truncated .npy header", path);
            goto cleanup;
        }
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) | ((size_t)pre[10] << 16) | ((size_t)pre[11] << 24);
    } else {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': unsupported .npy version %d", path, pre[6]);
        goto cleanup;
    }
    if (hlen > 65536) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': .npy header too long", path);
        goto cleanup;
    }
    hdr = malloc(hlen + 1);
    if (!hdr || fread(hdr, 1, hlen, fp) != hlen) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': truncated .npy header", path);
        goto cleanup;
    }
    hdr[hlen] = 0;
    if (strstr(hdr, "'descr': '<f4'")) *is_f8 = 0;
    else if (strstr(hdr, "'descr': '<f8'")) *is_f8 = 1;
    else {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': .npy dtype must be little-endian float32 or float64", path);
        goto cleanup;
    }
    if (!strstr(hdr, "'fortran_order': False")) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': Fortran-order .npy not supported", path);
        goto cleanup;
    }
    char *p = strstr(hdr, "'shape': (");
    if (!p) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': .npy header has no shape", path);
        goto cleanup;
    }
    p += 10;
    int nd = 0;
    size_t count = 1;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || nd >= DS_NPY_MAX_DIMS || !ds_mul_size(count, (size_t)v, &count)) {
            st = ds_set_error(DS_ERR_FORMAT, "'%s': bad .npy shape", path);
            goto cleanup;
        }
        shape[nd++] = v;
        p = end;
    }
    *n_dims = nd;
    if (!ds_mul_size(count, *is_f8 ? 8 : 4, n_bytes)) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': .npy too large", path);
        goto cleanup;
    }
    /* the declared size must be present before anything that large is used */
    long here = ftell(fp);
    if (here < 0 || fseek(fp, 0, SEEK_END) != 0) {
        st = ds_set_error(DS_ERR_IO, "'%s': cannot seek: %s", path, strerror(errno));
        goto cleanup;
    }
    long end = ftell(fp);
    if (end < here || fseek(fp, here, SEEK_SET) != 0) {
        st = ds_set_error(DS_ERR_IO, "'%s': cannot seek: %s", path, strerror(errno));
        goto cleanup;
    }
    if ((uint64_t)(end - here) < (uint64_t)*n_bytes) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': truncated .npy data: the header declares %zu bytes, the file holds %ld",
                          path, *n_bytes, end - here);
        goto cleanup;
    }
    *data_off = here;
cleanup:
    free(hdr);
    return st;
}

ds_status ds_npy_read_f32(const char *path, float **data, int *n_dims, int64_t shape[DS_NPY_MAX_DIMS]) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds_set_error(DS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    void *raw = NULL;
    int is_f8, nd;
    int64_t shp[DS_NPY_MAX_DIMS];
    size_t bytes, count;
    long off;
    ds_status st = npy_header_read(path, fp, &is_f8, &nd, shp, &bytes, &off);
    if (st != DS_OK) goto cleanup;
    count = bytes / (is_f8 ? 8 : 4);
    raw = malloc(bytes ? bytes : 1);
    if (!raw) {
        st = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory", path);
        goto cleanup;
    }
    if (fread(raw, 1, bytes, fp) != bytes) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': truncated .npy data", path);
        goto cleanup;
    }
    if (is_f8) {
        float *f = malloc(count * sizeof(float) + 1);
        if (!f) {
            st = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory", path);
            goto cleanup;
        }
        for (size_t i = 0; i < count; i++) f[i] = (float)((double *)raw)[i];
        free(raw);
        raw = f;
    }
    *data = raw;
    raw = NULL;
    *n_dims = nd;
    memcpy(shape, shp, sizeof(int64_t) * (size_t)nd);
cleanup:
    free(raw);
    fclose(fp);
    return st;
}

ds_status ds_npy_map_f32(const char *path, ds_npy_map *out) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds_set_error(DS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    ds_npy_map m = {0};
    int is_f8;
    size_t bytes;
    long off;
    ds_status st = npy_header_read(path, fp, &is_f8, &m.n_dims, m.shape, &bytes, &off);
    if (st == DS_OK && is_f8)
        st = ds_set_error(DS_ERR_FORMAT, "'%s': mapping needs float32 ('<f4') data, not float64", path);
    if (st == DS_OK && off % 4 != 0)
        st = ds_set_error(DS_ERR_FORMAT, "'%s': .npy data at offset %ld is not 4-byte aligned", path, off);
    if (st == DS_OK) {
        m.map_bytes = (size_t)off + bytes;
        m.base = mmap(NULL, m.map_bytes, PROT_READ, MAP_SHARED, fileno(fp), 0);
        if (m.base == MAP_FAILED) {
            m.base = NULL;
            st = ds_set_error(DS_ERR_IO, "'%s': cannot map %zu bytes: %s", path, m.map_bytes, strerror(errno));
        } else {
            m.data = (const float *)((const char *)m.base + off);
            m.data_offset = (size_t)off;
            *out = m;
        }
    }
    fclose(fp); /* the mapping outlives the descriptor */
    return st;
}

void ds_npy_unmap(ds_npy_map *m) {
    if (m && m->base) munmap(m->base, m->map_bytes);
    if (m) m->base = NULL, m->data = NULL;
}
