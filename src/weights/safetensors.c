/* safetensors reader (https://github.com/huggingface/safetensors, format in
 * its README): an 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...},                       (optional)
 *    "name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start. The file is
 * mapped read-only and tensors point into the map. Every field is checked the
 * way gguf.cpp checks GGUF (and like the Rust crate's `validate`): header
 * length, dtype, element count overflow, span == elements x itemsize, offsets
 * inside the data section, no overlaps, unique non-empty names. I64
 * tensors named *num_batches_tracked (BatchNorm's step counter) are checked
 * the same way and then left out; other integer dtypes are unsupported. */
#define _POSIX_C_SOURCE 200809L /* pread, strdup, O_CLOEXEC */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "weights/weights_internal.h"

/* The Rust crate's limit (MAX_HEADER_SIZE = 100_000_000): a larger "length"
 * means the file is not safetensors, and it bounds what cJSON is given. */
#define DS_SAFETENSORS_MAX_HEADER 100000000ull

/* JSON numbers are doubles: integers are exact up to 2^53. */
#define DS_JSON_MAX_INT 9007199254740992.0

typedef struct {
    uint64_t begin, end;
    const char *name; /* the tensor's name, in the parsed header */
} ds_span;

static int ds_cmp_span(const void *a, const void *b) {
    const ds_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static bool ds_json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= DS_JSON_MAX_INT) || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

/* safetensors dtypes we recognise but do not compute with. */
static bool ds_known_dtype(const char *s) {
    static const char *const known[] = {"F64", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U64",
                                        "U32", "U16",     "U8",      "BOOL", "C64", "F4",  "F6_E2M3", "F6_E3M2",
                                        "E8M0", "F8_E8M0"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(s, known[i]) == 0) return true;
    return false;
}

static ds_status ds_read_metadata(ds_weights *w, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': __metadata__ is not a JSON object", w->path);
    int n = cJSON_GetArraySize(meta);
    if (n == 0) return DS_OK;
    w->meta_keys = calloc((size_t)n, sizeof *w->meta_keys);
    w->meta_values = calloc((size_t)n, sizeof *w->meta_values);
    if (!w->meta_keys || !w->meta_values)
        return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", w->path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv) || !kv->string)
            return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': __metadata__ value of '%s' is not a string",
                                w->path, kv->string ? kv->string : "");
        for (int i = 0; i < w->n_meta; i++)
            if (strcmp(w->meta_keys[i], kv->string) == 0)
                return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': __metadata__ key '%s' appears more than once",
                                    w->path, kv->string);
        w->meta_keys[w->n_meta] = strdup(kv->string);
        w->meta_values[w->n_meta] = strdup(kv->valuestring);
        w->n_meta++;
        if (!w->meta_keys[w->n_meta - 1] || !w->meta_values[w->n_meta - 1])
            return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", w->path);
    }
    return DS_OK;
}

/* BatchNorm's num_batches_tracked (an int64 step counter that eval mode
 * never reads, present in every torchvision state_dict) is skipped when it
 * is I64; any other integer tensor stays unsupported. */
static bool ds_is_num_batches_tracked(const char *name) {
    static const char suffix[] = "num_batches_tracked";
    size_t n = strlen(name), k = sizeof suffix - 1;
    return n >= k && strcmp(name + n - k, suffix) == 0 && (n == k || name[n - k - 1] == '.');
}

/* One tensor entry, checked in full; on success fills *span and appends it
 * to w, unless it is a num_batches_tracked buffer (*skipped set: its bytes
 * still take part in the overlap check, but it is not handed out). */
static ds_status ds_read_entry(ds_weights *w, const cJSON *e, const unsigned char *data, uint64_t data_offset,
                               uint64_t data_bytes, ds_span *span, bool *skipped) {
    const char *name = e->string;
    const char *path = w->path;
    if (!name || !*name) return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': a tensor has an empty name", path);
    if (!cJSON_IsObject(e))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' is not a JSON object", path, name);

    const cJSON *jdtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *joffs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jdtype))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' has no string \"dtype\"", path, name);
    if (!cJSON_IsArray(jshape))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' has no \"shape\" list", path, name);
    if (!cJSON_IsArray(joffs) || cJSON_GetArraySize(joffs) != 2)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' has no \"data_offsets\" [begin, end]",
                            path, name);

    ds_dtype dtype;
    const char *ds = jdtype->valuestring;
    *skipped = strcmp(ds, "I64") == 0 && ds_is_num_batches_tracked(name);
    if (*skipped) dtype = DS_DTYPE_F32; /* placeholder: checked with 8-byte items below, never handed out */
    else if (strcmp(ds, "F32") == 0) dtype = DS_DTYPE_F32;
    else if (strcmp(ds, "F16") == 0) dtype = DS_DTYPE_F16;
    else if (strcmp(ds, "BF16") == 0) dtype = DS_DTYPE_BF16;
    else if (ds_known_dtype(ds))
        return ds_set_error(DS_ERR_UNSUPPORTED,
                            "ds_weights_load: '%s': tensor '%s' has dtype %s; only F32, F16 and BF16 are supported", path,
                            name, ds);
    else
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' has unknown dtype '%.32s'", path, name, ds);

    int n_dims = cJSON_GetArraySize(jshape);
    if (n_dims > DS_TENSOR_MAX_DIMS)
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_weights_load: '%s': tensor '%s' has %d dimensions, at most %d supported",
                            path, name, n_dims, DS_TENSOR_MAX_DIMS);
    int64_t shape[DS_TENSOR_MAX_DIMS] = {0};
    int d = 0;
    const cJSON *jd;
    cJSON_ArrayForEach(jd, jshape) {
        uint64_t v;
        if (!ds_json_uint(jd, &v))
            return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' shape[%d] is not a non-negative integer",
                                path, name, d);
        shape[d++] = (int64_t)v;
    }
    size_t itemsize = *skipped ? 8 : ds_dtype_size(dtype);
    int64_t n_elements;
    size_t n_bytes;
    if (!ds_shape_elements(shape, n_dims, itemsize, &n_elements, &n_bytes)) {
        char sh[256];
        ds_shape_format(sh, sizeof sh, shape, n_dims, itemsize);
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' size %s bytes overflows", path, name, sh);
    }

    uint64_t begin, end;
    if (!ds_json_uint(cJSON_GetArrayItem(joffs, 0), &begin) || !ds_json_uint(cJSON_GetArrayItem(joffs, 1), &end))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' data_offsets are not non-negative integers",
                            path, name);
    if (begin > end)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' data_offsets [%llu,%llu] end before begin",
                            path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end - begin != (uint64_t)n_bytes) {
        char sh[256];
        ds_shape_format(sh, sizeof sh, shape, n_dims, itemsize);
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_weights_load: '%s': tensor '%s' data_offsets [%llu,%llu] span %llu bytes, expected %s = %zu",
                            path, name, (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)(end - begin), sh, n_bytes);
    }
    if (end > data_bytes)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_weights_load: '%s': tensor '%s' data_offsets [%llu,%llu] run past the data section "
                            "(%llu bytes; truncated file?)",
                            path, name, (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)data_bytes);

    span->begin = begin;
    span->end = end;
    span->name = name;
    if (*skipped) return DS_OK;
    ds_tensor *t = ds_weights_add_tensor(w, name, strlen(name));
    if (!t) return DS_ERR_NOMEM;
    t->dtype = dtype;
    t->n_dims = n_dims;
    memcpy(t->shape, shape, sizeof shape);
    t->n_elements = n_elements;
    const unsigned char *src = data + begin;
    /* The format aligns nothing but the header (to 8 by the Python writer);
     * an odd-length F16 tensor before an F32 one leaves the latter
     * misaligned. Copy such a tensor so that float loads stay aligned. */
    if ((data_offset + begin) % itemsize != 0 && n_bytes > 0) {
        void *copy = ds_alloc(n_bytes, 1, "ds_weights_load");
        if (!copy) return DS_ERR_NOMEM;
        memcpy(copy, src, n_bytes);
        ds_status st = ds_weights_own_buffer(w, copy);
        if (st != DS_OK) return st;
        src = copy;
    }
    t->data = src;
    return DS_OK;
}

ds_status ds_safetensors_read(ds_weights *w, int fd, size_t file_bytes) {
    const char *path = w->path;
    if (file_bytes < 8)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_weights_load: '%s': file is %zu bytes, too short for a safetensors header length "
                            "(not a safetensors or .pth file?)",
                            path, file_bytes);
    unsigned char len8[8];
    ssize_t got = pread(fd, len8, 8, 0);
    if (got != 8) return ds_set_error(DS_ERR_IO, "ds_weights_load: cannot read '%s': %s", path, got < 0 ? strerror(errno) : "short read");
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | len8[i];
    if (n < 2)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': header length %llu is too small for a JSON object", path,
                            (unsigned long long)n);
    if (n > DS_SAFETENSORS_MAX_HEADER)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_weights_load: '%s': header length %llu exceeds the %llu-byte limit (not a safetensors file?)",
                            path, (unsigned long long)n, DS_SAFETENSORS_MAX_HEADER);
    if (n > file_bytes - 8)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': header length %llu exceeds file size %zu", path,
                            (unsigned long long)n, file_bytes);

    void *map = mmap(NULL, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) return ds_set_error(DS_ERR_IO, "ds_weights_load: cannot map '%s': %s", path, strerror(errno));
    w->map = map;
    w->map_bytes = file_bytes;
    const char *header = (const char *)map + 8;
    const unsigned char *data = (const unsigned char *)map + 8 + n;
    uint64_t data_offset = 8 + n, data_bytes = file_bytes - 8 - n;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)n, &end, 0);
    ds_status st = DS_OK;
    ds_span *spans = NULL;
    if (!root) {
        ptrdiff_t at = end && end >= header && end <= header + n ? end - header : 0;
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': header is not valid JSON (at byte %td of %llu)", path,
                            at, (unsigned long long)n);
    }
    /* the Python writer pads the header with spaces to a multiple of 8 */
    for (const char *p = end; p < header + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': header has trailing bytes after the JSON (at byte %td)",
                              path, p - header);
            goto cleanup;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': header is not a JSON object", path);
        goto cleanup;
    }
    int n_entries = cJSON_GetArraySize(root);
    spans = malloc((size_t)(n_entries > 0 ? n_entries : 1) * sizeof *spans);
    if (!spans) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", path);
        goto cleanup;
    }
    int n_spans = 0;
    bool have_meta = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (e->string && strcmp(e->string, "__metadata__") == 0) {
            if (have_meta) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': __metadata__ appears more than once", path);
                goto cleanup;
            }
            have_meta = true;
            if ((st = ds_read_metadata(w, e)) != DS_OK) goto cleanup;
            continue;
        }
        bool skipped;
        if ((st = ds_read_entry(w, e, data, data_offset, data_bytes, &spans[n_spans], &skipped)) != DS_OK) goto cleanup;
        n_spans++;
    }

    /* No two tensors may share bytes (empty tensors occupy none). */
    qsort(spans, (size_t)n_spans, sizeof *spans, ds_cmp_span);
    int prev = -1;
    for (int i = 0; i < n_spans; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (prev >= 0 && spans[prev].end > spans[i].begin) {
            st = ds_set_error(DS_ERR_FORMAT,
                              "ds_weights_load: '%s': tensors '%s' [%llu,%llu] and '%s' [%llu,%llu] overlap", path,
                              spans[prev].name, (unsigned long long)spans[prev].begin,
                              (unsigned long long)spans[prev].end, spans[i].name,
                              (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
            goto cleanup;
        }
        prev = i;
    }
cleanup:
    free(spans);
    cJSON_Delete(root);
    return st;
}
