#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/internal.h"
#include "dinoscope/model.h"

static const char MAGIC[8] = {'D', 'S', 'C', 'O', 'P', 'E', 'M', 'D'};
enum { HDR = 64, ENTRY = 128, NAME_MAX_LEN = 64, MAX_SECTIONS = 4096 };

static void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* zlib's crc32 takes uInt lengths: feed large sections in chunks. */
static uint32_t crc_of(const void *data, uint64_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    const unsigned char *p = data;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

struct ds_model_file {
    void *map;
    size_t size;
    int n;
    ds_model_section *sec;
    char (*names)[NAME_MAX_LEN + 1];
};

void ds_model_file_close(ds_model_file *m) {
    if (!m) return;
    if (m->map) munmap(m->map, m->size);
    free(m->sec);
    free(m->names);
    free(m);
}

/* Bytes of one element; 0 for bytes sections (their shape is not checked). */
static size_t elem_size(uint32_t dtype) {
    static const size_t sz[] = {4, 0, 1, 1, 2, 8};
    return dtype <= DS_SECTION_I64 ? sz[dtype] : 0;
}

ds_status ds_model_file_open(const char *path, ds_model_file **out) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ds_set_error(DS_ERR_IO, "cannot open model '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ds_set_error(DS_ERR_IO, "model '%s' is not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < HDR) {
        close(fd);
        return ds_set_error(DS_ERR_FORMAT, "model '%s' is truncated (%zu bytes) or not a dinoscope model", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ds_set_error(DS_ERR_IO, "cannot map model '%s': %s", path, strerror(errno));
    ds_model_file *m = calloc(1, sizeof *m);
    ds_status st = DS_OK;
    if (!m) {
        munmap(map, size);
        return ds_set_error(DS_ERR_NOMEM, "out of memory");
    }
    m->map = map;
    m->size = size;
    const unsigned char *h = map;
    if (memcmp(h, MAGIC, 8) != 0) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s' is not a dinoscope model (bad magic)", path);
        goto fail;
    }
    uint32_t version = get32(h + 8), n = get32(h + 12);
    uint64_t table = get64(h + 16), fsize = get64(h + 24);
    if (version > DS_MODEL_FORMAT_VERSION || version == 0) {
        st = ds_set_error(DS_ERR_UNSUPPORTED, "model '%s' has format version %u; this dinoscope reads up to %d (upgrade dinoscope)",
                          path, version, DS_MODEL_FORMAT_VERSION);
        goto fail;
    }
    if (fsize != size) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s' is truncated or padded: header says %llu bytes, file has %zu", path,
                          (unsigned long long)fsize, size);
        goto fail;
    }
    if (n == 0 || n > MAX_SECTIONS || table < HDR || table > size || (size - table) / ENTRY < n) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': section table out of bounds", path);
        goto fail;
    }
    if (crc_of(h + table, (uint64_t)n * ENTRY) != get32(h + 32)) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': section table checksum mismatch (corrupt file)", path);
        goto fail;
    }
    m->sec = calloc(n, sizeof *m->sec);
    m->names = calloc(n, sizeof *m->names);
    if (!m->sec || !m->names) {
        st = ds_set_error(DS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++) {
        const unsigned char *e = h + table + (size_t)i * ENTRY;
        ds_model_section *s = &m->sec[i];
        memcpy(m->names[i], e, NAME_MAX_LEN);
        m->names[i][NAME_MAX_LEN] = 0;
        s->name = m->names[i];
        uint32_t dtype = get32(e + 64), nd = get32(e + 68);
        uint64_t off = get64(e + 104), nb = get64(e + 112);
        if (!s->name[0] || dtype > DS_SECTION_I64 || (version < 2 && dtype > DS_SECTION_BYTES) || nd > 4 || off % 64 || off < HDR || off > table ||
            nb > table - off) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': section %u ('%s') has a bad entry or lies out of bounds", path, i,
                              s->name);
            goto fail;
        }
        s->dtype = (ds_section_dtype)dtype;
        s->n_dims = (int)nd;
        size_t count = 1;
        for (uint32_t d = 0; d < nd; d++) {
            s->shape[d] = (int64_t)get64(e + 72 + 8 * d);
            if (s->shape[d] < 0 || !ds_mul_size(count, (size_t)s->shape[d], &count)) {
                st = ds_set_error(DS_ERR_FORMAT, "model '%s': section '%s' has a bad shape", path, s->name);
                goto fail;
            }
        }
        if (elem_size(dtype) && (!ds_mul_size(count, elem_size(dtype), &count) || count != nb)) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': section '%s' holds %llu bytes, its shape needs %zu", path,
                              s->name, (unsigned long long)nb, count);
            goto fail;
        }
        s->data = h + off;
        s->n_bytes = nb;
        if (crc_of(s->data, nb) != get32(e + 120)) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': section '%s' checksum mismatch (corrupt file)", path, s->name);
            goto fail;
        }
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(m->names[j], s->name)) {
                st = ds_set_error(DS_ERR_FORMAT, "model '%s': duplicate section '%s'", path, s->name);
                goto fail;
            }
    }
    m->n = (int)n;
    *out = m;
    return DS_OK;
fail:
    ds_model_file_close(m);
    return st;
}

const char *ds_section_dtype_name(ds_section_dtype dtype) {
    static const char *const names[] = {"f32", "bytes", "i8", "u8", "u16", "i64"};
    return (unsigned)dtype <= DS_SECTION_I64 ? names[dtype] : "unknown";
}

int ds_model_file_n_sections(const ds_model_file *m) { return m->n; }
const ds_model_section *ds_model_file_section_at(const ds_model_file *m, int i) {
    return i >= 0 && i < m->n ? &m->sec[i] : NULL;
}
const ds_model_section *ds_model_file_section(const ds_model_file *m, const char *name) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->sec[i].name, name)) return &m->sec[i];
    return NULL;
}

struct ds_model_writer {
    ds_atomic_file af;
    uint64_t pos;
    int n, cap;
    unsigned char *table;
    bool failed;
    uint32_t version; /* 2 once a section needs it */
};

ds_status ds_model_writer_open(const char *path, ds_model_writer **out) {
    void *mem;
    ds_status st = ds_atomic_writer_new(sizeof(ds_model_writer), offsetof(ds_model_writer, af), path, &mem);
    if (st != DS_OK) return st;
    ds_model_writer *w = mem;
    unsigned char zero[HDR] = {0};
    w->failed = fwrite(zero, 1, HDR, w->af.fp) != HDR;
    w->pos = HDR;
    *out = w;
    return DS_OK;
}

ds_status ds_model_writer_add(ds_model_writer *w, const char *name, ds_section_dtype dtype, int n_dims,
                              const int64_t *shape, const void *data, uint64_t n_bytes) {
    if (strlen(name) == 0 || strlen(name) > NAME_MAX_LEN || n_dims < 0 || n_dims > 4)
        return ds_set_error(DS_ERR_ARG, "ds_model_writer_add: bad section '%s'", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        unsigned char *t = realloc(w->table, (size_t)cap * ENTRY);
        if (!t) return ds_set_error(DS_ERR_NOMEM, "out of memory");
        w->table = t;
        w->cap = cap;
    }
    unsigned char *e = w->table + (size_t)w->n * ENTRY;
    memset(e, 0, ENTRY);
    memcpy(e, name, strlen(name));
    if (dtype > DS_SECTION_BYTES) w->version = 2;
    put32(e + 64, (uint32_t)dtype);
    put32(e + 68, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) put64(e + 72 + 8 * d, (uint64_t)shape[d]);
    put64(e + 104, w->pos);
    put64(e + 112, n_bytes);
    put32(e + 120, crc_of(data, n_bytes));
    w->n++;
    static const unsigned char zero[64] = {0};
    size_t pad = (size_t)((64 - (n_bytes % 64)) % 64);
    if (!w->failed && n_bytes && fwrite(data, 1, n_bytes, w->af.fp) != n_bytes) w->failed = true;
    if (!w->failed && pad && fwrite(zero, 1, pad, w->af.fp) != pad) w->failed = true;
    w->pos += n_bytes + pad;
    return w->failed ? ds_set_error(DS_ERR_IO, "cannot write '%s': %s", w->af.final_path, strerror(errno)) : DS_OK;
}

ds_status ds_model_writer_close(ds_model_writer *w, int ok) {
    if (!w) return DS_OK;
    ds_status st = DS_OK;
    if (ok && (w->failed || w->n == 0)) {
        st = ds_set_error(DS_ERR_IO, "cannot write model '%s'%s", w->af.final_path, w->n ? "" : ": no sections");
        ok = 0;
    }
    if (ok) {
        uint64_t table = w->pos, tbytes = (uint64_t)w->n * ENTRY;
        unsigned char h[HDR] = {0};
        memcpy(h, MAGIC, 8);
        put32(h + 8, w->version ? w->version : 1);
        put32(h + 12, (uint32_t)w->n);
        put64(h + 16, table);
        put64(h + 24, table + tbytes);
        put32(h + 32, crc_of(w->table, tbytes));
        if (fwrite(w->table, 1, tbytes, w->af.fp) != tbytes || fseek(w->af.fp, 0, SEEK_SET) != 0 ||
            fwrite(h, 1, HDR, w->af.fp) != HDR) {
            st = ds_set_error(DS_ERR_IO, "cannot write model '%s': %s", w->af.final_path, strerror(errno));
            ok = 0;
        }
    }
    ds_status st2 = ds_atomic_commit(&w->af, ok);
    free(w->table);
    free(w);
    return st != DS_OK ? st : st2;
}
