/* PyTorch checkpoints as written by torch.save (zip format, the default since
 * PyTorch 1.6; torch.hub downloads these, e.g. dinov2_vitb14_pretrain.pth).
 *
 * Layout (torch/serialization.py: _save, _load; caffe2/serialize/
 * inline_container.h): a zip whose entries all sit under one folder
 * <prefix>/ (the file stem, or "archive"):
 *   <prefix>/data.pkl     the pickled object (protocol 2), tensors replaced by
 *                         persistent ids ('storage', StorageType, key,
 *                         location, numel)
 *   <prefix>/data/<key>   raw little-endian bytes of each storage
 *   <prefix>/version, maybe <prefix>/byteorder ("little") and others.
 *
 * data.pkl is NOT unpickled by Python's rules: a pickle can name any callable
 * (os.system) and REDUCE calls it. We interpret a strict subset of the
 * opcodes (pickletools.py documents each one) and accept only the globals a
 * state_dict needs; they are never called, we build our own objects:
 *   collections.OrderedDict           () -> empty dict (BUILD state, e.g. a
 *                                     module state_dict's _metadata, ignored)
 *   torch._utils._rebuild_tensor_v2   (storage, storage_offset, size, stride,
 *                                     requires_grad, backward_hooks[, metadata])
 *   torch._utils._rebuild_parameter   (tensor, requires_grad, backward_hooks)
 *   torch._utils._rebuild_parameter_with_state (..., state)
 *   torch.<Type>Storage               only as the type in a persistent id;
 *                                     Float/Half/BFloat16 are supported, other
 *                                     dtypes give DS_ERR_UNSUPPORTED, except
 *                                     that int64 tensors named
 *                                     "*num_batches_tracked" (BatchNorm's step
 *                                     counter, unused in eval) are skipped.
 * Any other global is a DS_ERR_FORMAT naming it. The machine is a loop over
 * an explicit stack (no recursion); every read is bounds-checked; memo
 * indices, stack and mark depths are checked; the number of objects is
 * bounded by the pickle's length.
 *
 * Which dict holds the tensors: the root dict if any of its values is a
 * tensor (a flat state_dict, as torch.hub's DINOv2 files are), otherwise the
 * first of root["state_dict"], root["model"], root["teacher"] that has
 * tensors (training checkpoints). Non-tensor values are skipped.
 *
 * Tensors must be row-major contiguous (a transposed view is refused, not
 * copied) and lie inside their storage; several may view one storage at
 * offsets. The storages they use are read (libzip checks each CRC) into one
 * read-only arena owned by the ds_weights; tensors point into it. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_HUGEPAGE */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <zip.h>

#include "weights/weights_internal.h"

#define PK_MAX_PICKLE_BYTES (256u << 20) /* a ViT-S/14 state_dict pickles to 18 KB (~100 B a tensor) */
#define PK_MAX_STACK (1 << 20)
#define PK_MAX_GLOBAL_NAME 128
#define PK_MAX_KEY 64

typedef enum { PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR } pk_type;

typedef enum { PKG_ORDERED_DICT, PKG_REBUILD_TENSOR_V2, PKG_REBUILD_PARAMETER, PKG_REBUILD_PARAMETER_WITH_STATE, PKG_STORAGE_TYPE } pk_global;

typedef struct {
    uint8_t type;
    union {
        int64_t i; /* PK_BOOL, PK_INT */
        double f;
        struct {
            const char *s; /* into the pickle buffer, not NUL-terminated */
            uint32_t len;
        } str;
        struct {
            int32_t *items; /* PK_DICT: key, value, key, value, ... */
            int32_t n, cap;
        } seq;
        struct {
            uint8_t kind;         /* pk_global */
            uint8_t storage_type; /* index in pk_storage_types for PKG_STORAGE_TYPE */
        } global;
        int32_t index; /* PK_STORAGE: into storages, PK_TENSOR: into tensors */
    } u;
} pk_obj;

/* torch.<Name>Storage classes (torch/storage.py _LegacyStorage subclasses) */
static const struct {
    const char *name;
    int dtype; /* ds_dtype, or -1: recognised but unsupported */
    const char *torch_dtype;
    size_t itemsize;
} pk_storage_types[] = {
    {"FloatStorage", DS_DTYPE_F32, "float32", 4},      {"HalfStorage", DS_DTYPE_F16, "float16", 2},
    {"BFloat16Storage", DS_DTYPE_BF16, "bfloat16", 2}, {"DoubleStorage", -1, "float64", 8},
    {"LongStorage", -1, "int64", 8},                   {"IntStorage", -1, "int32", 4},
    {"ShortStorage", -1, "int16", 2},                  {"CharStorage", -1, "int8", 1},
    {"ByteStorage", -1, "uint8", 1},                   {"BoolStorage", -1, "bool", 1},
    {"ComplexFloatStorage", -1, "complex64", 8},       {"ComplexDoubleStorage", -1, "complex128", 16},
};
#define PK_N_STORAGE_TYPES ((int)(sizeof pk_storage_types / sizeof *pk_storage_types))

typedef struct {
    char key[PK_MAX_KEY + 1];
    int type;      /* index in pk_storage_types */
    int64_t numel; /* elements of its type */
    bool needed;               /* referenced by a tensor we hand out */
    zip_int64_t entry;         /* its <prefix>/data/<key> entry */
    size_t bytes, arena_offset;
} pk_storage;

typedef struct {
    int32_t storage;
    int64_t offset;
    int n_dims, n_strides; /* as pickled; may exceed DS_TENSOR_MAX_DIMS (rejected later) */
    int64_t shape[DS_TENSOR_MAX_DIMS];
    int64_t stride[DS_TENSOR_MAX_DIMS];
    int64_t n_elements; /* set when checked */
} pk_tensor;

typedef struct {
    ds_weights *w;
    const unsigned char *buf;
    size_t len, pos, op_pos;

    pk_obj *objs;
    int32_t n_objs, cap_objs;
    int32_t *stack;
    int32_t n_stack, cap_stack;
    int32_t *marks;
    int32_t n_marks, cap_marks;
    int32_t *memo; /* -1 = unset */
    uint32_t cap_memo, n_memo_set;

    pk_storage *storages;
    int32_t n_storages, cap_storages;
    pk_tensor *tensors;
    int32_t n_tensors, cap_tensors;
} pk_ctx;

static ds_status pk_error(pk_ctx *c, ds_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static ds_status pk_error(pk_ctx *c, ds_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ds_set_error(st, "ds_weights_load: '%s': data.pkl byte %zu: %s", c->w->path, c->op_pos, msg);
}

static ds_status pk_nomem(pk_ctx *c) { return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory", c->w->path); }

/* Grows *arr (elements of size sz) to hold at least need; false on failure. */
static bool pk_grow(void **arr, int32_t *cap, int32_t need, size_t sz) {
    if (need <= *cap) return true;
    int64_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    if (n > INT32_MAX) return false;
    void *p = realloc(*arr, (size_t)n * sz);
    if (!p) return false;
    *arr = p;
    *cap = (int32_t)n;
    return true;
}

static const unsigned char *pk_take(pk_ctx *c, size_t n) {
    if (n > c->len - c->pos) return NULL;
    const unsigned char *p = c->buf + c->pos;
    c->pos += n;
    return p;
}

static ds_status pk_truncated(pk_ctx *c) { return pk_error(c, DS_ERR_FORMAT, "truncated pickle (opcode arguments run past the end)"); }

/* New object; returns its index or -1 (error set). */
static int32_t pk_new(pk_ctx *c, pk_type type) {
    /* every opcode makes at most one object: more than the pickle's length is a bug */
    if ((size_t)c->n_objs > c->len || !pk_grow((void **)&c->objs, &c->cap_objs, c->n_objs + 1, sizeof *c->objs)) {
        pk_nomem(c);
        return -1;
    }
    pk_obj *o = &c->objs[c->n_objs];
    memset(o, 0, sizeof *o);
    o->type = (uint8_t)type;
    return c->n_objs++;
}

static ds_status pk_push(pk_ctx *c, int32_t obj) {
    if (obj < 0) return DS_ERR_NOMEM;
    if (c->n_stack >= PK_MAX_STACK) return pk_error(c, DS_ERR_FORMAT, "stack deeper than %d", PK_MAX_STACK);
    if (!pk_grow((void **)&c->stack, &c->cap_stack, c->n_stack + 1, sizeof *c->stack)) return pk_nomem(c);
    c->stack[c->n_stack++] = obj;
    return DS_OK;
}

/* Objects above the innermost MARK (Python's unpickler keeps them in its
 * current stack; what is below the mark is out of reach). */
static int32_t pk_avail(const pk_ctx *c) { return c->n_stack - (c->n_marks ? c->marks[c->n_marks - 1] : 0); }

static ds_status pk_pop(pk_ctx *c, int32_t *obj) {
    if (pk_avail(c) < 1) return pk_error(c, DS_ERR_FORMAT, "stack underflow");
    *obj = c->stack[--c->n_stack];
    return DS_OK;
}

static ds_status pk_top(pk_ctx *c, int32_t *obj) {
    if (pk_avail(c) < 1) return pk_error(c, DS_ERR_FORMAT, "stack underflow");
    *obj = c->stack[c->n_stack - 1];
    return DS_OK;
}

/* Pops everything down to the innermost MARK: items at stack[*first ..
 * *first + *n), still readable until the next push. */
static ds_status pk_pop_mark(pk_ctx *c, int32_t *first, int32_t *n) {
    if (c->n_marks == 0) return pk_error(c, DS_ERR_FORMAT, "no MARK on the stack");
    int32_t m = c->marks[--c->n_marks];
    *first = m;
    *n = c->n_stack - m;
    c->n_stack = m;
    return DS_OK;
}

static ds_status pk_seq_append(pk_ctx *c, int32_t obj, int32_t item) {
    pk_obj *o = &c->objs[obj];
    if (!pk_grow((void **)&o->u.seq.items, &o->u.seq.cap, o->u.seq.n + 1, sizeof(int32_t))) return pk_nomem(c);
    o->u.seq.items[o->u.seq.n++] = item;
    return DS_OK;
}

/* Tuple of n items copied from stack position first (call before pushing). */
static int32_t pk_new_tuple(pk_ctx *c, pk_type type, int32_t first, int32_t n) {
    int32_t t = pk_new(c, type);
    if (t < 0) return -1;
    if (n > 0) {
        int32_t *items = malloc((size_t)n * sizeof *items);
        if (!items) {
            pk_nomem(c);
            return -1;
        }
        memcpy(items, c->stack + first, (size_t)n * sizeof *items);
        c->objs[t].u.seq.items = items;
        c->objs[t].u.seq.n = c->objs[t].u.seq.cap = n;
    }
    return t;
}

static ds_status pk_memo_put(pk_ctx *c, uint64_t idx) {
    int32_t top = -1;
    ds_status st = pk_top(c, &top);
    if (st != DS_OK) return st;
    /* the pickler numbers memo entries 0, 1, 2, ...: one per object */
    if (idx > c->len || idx >= (1u << 30)) return pk_error(c, DS_ERR_FORMAT, "memo index %llu out of range", (unsigned long long)idx);
    if (idx >= c->cap_memo) {
        uint32_t cap = c->cap_memo ? c->cap_memo : 256;
        while (cap <= idx) cap *= 2;
        int32_t *m = realloc(c->memo, (size_t)cap * sizeof *m);
        if (!m) return pk_nomem(c);
        for (uint32_t i = c->cap_memo; i < cap; i++) m[i] = -1;
        c->memo = m;
        c->cap_memo = cap;
    }
    if (c->memo[idx] < 0) c->n_memo_set++;
    c->memo[idx] = top;
    return DS_OK;
}

static ds_status pk_memo_get(pk_ctx *c, uint64_t idx) {
    if (idx >= c->cap_memo || c->memo[idx] < 0)
        return pk_error(c, DS_ERR_FORMAT, "memo index %llu was never stored", (unsigned long long)idx);
    return pk_push(c, c->memo[idx]);
}

static bool pk_printable(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e) return false;
    return true;
}

/* GLOBAL / STACK_GLOBAL: only the state_dict vocabulary above. */
static ds_status pk_global_resolve(pk_ctx *c, const char *mod, size_t mod_len, const char *name, size_t name_len) {
    if (mod_len > PK_MAX_GLOBAL_NAME || name_len > PK_MAX_GLOBAL_NAME || !pk_printable(mod, mod_len) ||
        !pk_printable(name, name_len))
        return pk_error(c, DS_ERR_FORMAT, "pickle refers to a global with a malformed name, which is not allowed in a state_dict");
#define PK_IS(m, n) (mod_len == strlen(m) && memcmp(mod, m, mod_len) == 0 && name_len == strlen(n) && memcmp(name, n, name_len) == 0)
    int kind = -1, stype = 0;
    if (PK_IS("collections", "OrderedDict")) kind = PKG_ORDERED_DICT;
    else if (PK_IS("torch._utils", "_rebuild_tensor_v2")) kind = PKG_REBUILD_TENSOR_V2;
    else if (PK_IS("torch._utils", "_rebuild_parameter")) kind = PKG_REBUILD_PARAMETER;
    else if (PK_IS("torch._utils", "_rebuild_parameter_with_state")) kind = PKG_REBUILD_PARAMETER_WITH_STATE;
    else if (mod_len == 5 && memcmp(mod, "torch", 5) == 0) {
        for (int i = 0; i < PK_N_STORAGE_TYPES; i++) {
            if (name_len == strlen(pk_storage_types[i].name) && memcmp(name, pk_storage_types[i].name, name_len) == 0) {
                kind = PKG_STORAGE_TYPE;
                stype = i;
            }
        }
    }
#undef PK_IS
    if (kind < 0)
        return pk_error(c, DS_ERR_FORMAT, "pickle refers to '%.*s.%.*s', which is not allowed in a state_dict", (int)mod_len,
                        mod, (int)name_len, name);
    int32_t g = pk_new(c, PK_GLOBAL);
    if (g < 0) return DS_ERR_NOMEM;
    c->objs[g].u.global.kind = (uint8_t)kind;
    c->objs[g].u.global.storage_type = (uint8_t)stype;
    return pk_push(c, g);
}

/* Reads "text\n" for GLOBAL's arguments. */
static ds_status pk_line(pk_ctx *c, const char **s, size_t *n) {
    const unsigned char *start = c->buf + c->pos;
    const unsigned char *nl = memchr(start, '\n', DS_MIN(c->len - c->pos, (size_t)PK_MAX_GLOBAL_NAME + 1));
    if (!nl) return pk_error(c, DS_ERR_FORMAT, "GLOBAL name is unterminated or longer than %d bytes", PK_MAX_GLOBAL_NAME);
    *s = (const char *)start;
    *n = (size_t)(nl - start);
    c->pos += *n + 1;
    return DS_OK;
}

static bool pk_is_int(const pk_ctx *c, int32_t o) { return c->objs[o].type == PK_INT || c->objs[o].type == PK_BOOL; }

/* Reads a tuple of ints (size or stride) into out (at most DS_TENSOR_MAX_DIMS
 * kept); *n gets the true length. */
static bool pk_int_tuple(const pk_ctx *c, int32_t o, int64_t *out, int *n) {
    if (c->objs[o].type != PK_TUPLE) return false;
    *n = c->objs[o].u.seq.n;
    for (int i = 0; i < *n; i++) {
        int32_t it = c->objs[o].u.seq.items[i];
        if (!pk_is_int(c, it)) return false;
        if (i < DS_TENSOR_MAX_DIMS) out[i] = c->objs[it].u.i;
    }
    return true;
}

/* REDUCE: callable(*args) for the few callables we know. */
static ds_status pk_reduce(pk_ctx *c) {
    int32_t args = -1, fn = -1;
    ds_status st;
    if ((st = pk_pop(c, &args)) != DS_OK || (st = pk_pop(c, &fn)) != DS_OK) return st;
    if (c->objs[fn].type != PK_GLOBAL) return pk_error(c, DS_ERR_FORMAT, "REDUCE on something that is not a known global");
    if (c->objs[args].type != PK_TUPLE) return pk_error(c, DS_ERR_FORMAT, "REDUCE arguments are not a tuple");
    int32_t n = c->objs[args].u.seq.n;
    const int32_t *a = c->objs[args].u.seq.items;
    switch ((pk_global)c->objs[fn].u.global.kind) {
    case PKG_ORDERED_DICT:
        if (n != 0) return pk_error(c, DS_ERR_FORMAT, "OrderedDict called with %d arguments, expected none", n);
        return pk_push(c, pk_new(c, PK_DICT));
    case PKG_REBUILD_PARAMETER:
    case PKG_REBUILD_PARAMETER_WITH_STATE: {
        int32_t want = c->objs[fn].u.global.kind == PKG_REBUILD_PARAMETER ? 3 : 4;
        if (n != want || c->objs[a[0]].type != PK_TENSOR)
            return pk_error(c, DS_ERR_FORMAT, "_rebuild_parameter expects (tensor, requires_grad, backward_hooks%s)",
                            want == 4 ? ", state" : "");
        return pk_push(c, a[0]); /* a Parameter is its tensor here */
    }
    case PKG_REBUILD_TENSOR_V2: {
        if ((n != 6 && n != 7) || c->objs[a[0]].type != PK_STORAGE || !pk_is_int(c, a[1]))
            return pk_error(c, DS_ERR_FORMAT,
                            "_rebuild_tensor_v2 expects (storage, storage_offset, size, stride, requires_grad, "
                            "backward_hooks[, metadata])");
        pk_tensor t = {.storage = c->objs[a[0]].u.index, .offset = c->objs[a[1]].u.i};
        if (!pk_int_tuple(c, a[2], t.shape, &t.n_dims) || !pk_int_tuple(c, a[3], t.stride, &t.n_strides))
            return pk_error(c, DS_ERR_FORMAT, "_rebuild_tensor_v2: size and stride must be tuples of integers");
        if (!pk_grow((void **)&c->tensors, &c->cap_tensors, c->n_tensors + 1, sizeof *c->tensors)) return pk_nomem(c);
        int32_t o = pk_new(c, PK_TENSOR);
        if (o < 0) return DS_ERR_NOMEM;
        c->tensors[c->n_tensors] = t;
        c->objs[o].u.index = c->n_tensors++;
        return pk_push(c, o);
    }
    case PKG_STORAGE_TYPE:
        break;
    }
    return pk_error(c, DS_ERR_FORMAT, "REDUCE on a storage type, which a state_dict never does");
}

/* BINPERSID: torch.save's persistent_id for a storage,
 * ('storage', StorageType, key, location, numel). */
static ds_status pk_persid(pk_ctx *c) {
    int32_t pid = -1;
    ds_status st = pk_pop(c, &pid);
    if (st != DS_OK) return st;
    const pk_obj *p = &c->objs[pid];
    if (p->type != PK_TUPLE || p->u.seq.n != 5)
        return pk_error(c, DS_ERR_FORMAT, "persistent id is not ('storage', StorageType, key, location, numel)");
    const int32_t *a = p->u.seq.items;
    if (c->objs[a[0]].type != PK_STR || c->objs[a[0]].u.str.len != 7 ||
        memcmp(c->objs[a[0]].u.str.s, "storage", 7) != 0 || c->objs[a[1]].type != PK_GLOBAL ||
        c->objs[a[1]].u.global.kind != PKG_STORAGE_TYPE || c->objs[a[2]].type != PK_STR ||
        c->objs[a[3]].type != PK_STR || !pk_is_int(c, a[4]))
        return pk_error(c, DS_ERR_FORMAT, "persistent id is not ('storage', StorageType, key, location, numel)");
    const char *key = c->objs[a[2]].u.str.s;
    uint32_t key_len = c->objs[a[2]].u.str.len;
    bool key_ok = key_len > 0 && key_len <= PK_MAX_KEY;
    for (uint32_t i = 0; key_ok && i < key_len; i++) {
        char ch = key[i];
        key_ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    }
    if (!key_ok) return pk_error(c, DS_ERR_FORMAT, "storage key is empty, too long or not alphanumeric");
    int type = c->objs[a[1]].u.global.storage_type;
    int64_t numel = c->objs[a[4]].u.i;
    if (numel < 0) return pk_error(c, DS_ERR_FORMAT, "storage '%.*s' has negative size %lld", (int)key_len, key, (long long)numel);

    int32_t idx = -1;
    for (int32_t i = 0; i < c->n_storages; i++) {
        if (strlen(c->storages[i].key) == key_len && memcmp(c->storages[i].key, key, key_len) == 0) {
            idx = i;
            break;
        }
    }
    if (idx >= 0) {
        if (c->storages[idx].type != type || c->storages[idx].numel != numel)
            return pk_error(c, DS_ERR_FORMAT, "storage '%.*s' is referenced with two different types or sizes", (int)key_len, key);
    } else {
        if (!pk_grow((void **)&c->storages, &c->cap_storages, c->n_storages + 1, sizeof *c->storages))
            return pk_nomem(c);
        idx = c->n_storages++;
        pk_storage *s = &c->storages[idx];
        memcpy(s->key, key, key_len);
        s->key[key_len] = '\0';
        s->type = type;
        s->numel = numel;
        s->needed = false;
        s->entry = -1;
        s->bytes = s->arena_offset = 0;
    }
    int32_t o = pk_new(c, PK_STORAGE);
    if (o < 0) return DS_ERR_NOMEM;
    c->objs[o].u.index = idx;
    return pk_push(c, o);
}

static uint64_t pk_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Runs the pickle to STOP; *result gets the unpickled object. */
static ds_status pk_run(pk_ctx *c, int32_t *result) {
    ds_status st = DS_OK;
    for (;;) {
        c->op_pos = c->pos;
        const unsigned char *p = pk_take(c, 1);
        if (!p) return pk_error(c, DS_ERR_FORMAT, "pickle ends without STOP");
        unsigned char op = *p;
        int32_t o = -1, k = -1, v = -1, first = 0, n = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (!(p = pk_take(c, 1))) return pk_truncated(c);
            if (*p > 5) return pk_error(c, DS_ERR_UNSUPPORTED, "pickle protocol %d is not supported", *p);
            break;
        case 0x95: /* FRAME (protocol 4): framing only */
            if (!pk_take(c, 8)) return pk_truncated(c);
            break;
        case '.': /* STOP */
            if ((st = pk_pop(c, result)) != DS_OK) return st;
            return DS_OK;
        case '(': /* MARK */
            if (c->n_marks >= PK_MAX_STACK) return pk_error(c, DS_ERR_FORMAT, "more than %d MARKs", PK_MAX_STACK);
            if (!pk_grow((void **)&c->marks, &c->cap_marks, c->n_marks + 1, sizeof *c->marks)) return pk_nomem(c);
            c->marks[c->n_marks++] = c->n_stack;
            break;
        case '}': /* EMPTY_DICT */
            st = pk_push(c, pk_new(c, PK_DICT));
            break;
        case ']': /* EMPTY_LIST */
            st = pk_push(c, pk_new(c, PK_LIST));
            break;
        case ')': /* EMPTY_TUPLE */
            st = pk_push(c, pk_new(c, PK_TUPLE));
            break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
            if ((st = pk_pop_mark(c, &first, &n)) != DS_OK) return st;
            st = pk_push(c, pk_new_tuple(c, op == 't' ? PK_TUPLE : PK_LIST, first, n));
            break;
        case 'd': /* DICT */
            if ((st = pk_pop_mark(c, &first, &n)) != DS_OK) return st;
            if (n % 2) return pk_error(c, DS_ERR_FORMAT, "DICT with an odd number of items");
            st = pk_push(c, pk_new_tuple(c, PK_DICT, first, n));
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: /* TUPLE3 */
            n = op - 0x84;
            if (pk_avail(c) < n) return pk_error(c, DS_ERR_FORMAT, "stack underflow");
            c->n_stack -= n;
            st = pk_push(c, pk_new_tuple(c, PK_TUPLE, c->n_stack, n));
            break;
        case 'X':  /* BINUNICODE: u32 length + UTF-8 */
        case 0x8c: /* SHORT_BINUNICODE: u8 length */
        {
            int w = op == 'X' ? 4 : 1;
            if (!(p = pk_take(c, (size_t)w))) return pk_truncated(c);
            uint64_t len = pk_le(p, w);
            const unsigned char *s = pk_take(c, (size_t)len);
            if (!s) return pk_truncated(c);
            if ((o = pk_new(c, PK_STR)) < 0) return DS_ERR_NOMEM;
            c->objs[o].u.str.s = (const char *)s;
            c->objs[o].u.str.len = (uint32_t)len;
            st = pk_push(c, o);
            break;
        }
        case 'q': /* BINPUT */
        case 'r': /* LONG_BINPUT */
        {
            int w = op == 'q' ? 1 : 4;
            if (!(p = pk_take(c, (size_t)w))) return pk_truncated(c);
            st = pk_memo_put(c, pk_le(p, w));
            break;
        }
        case 0x94: /* MEMOIZE (protocol 4): next free index */
            st = pk_memo_put(c, c->n_memo_set);
            break;
        case 'h': /* BINGET */
        case 'j': /* LONG_BINGET */
        {
            int w = op == 'h' ? 1 : 4;
            if (!(p = pk_take(c, (size_t)w))) return pk_truncated(c);
            st = pk_memo_get(c, pk_le(p, w));
            break;
        }
        case 'J': /* BININT: i32 */
        case 'K': /* BININT1: u8 */
        case 'M': /* BININT2: u16 */
        {
            int w = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (!(p = pk_take(c, (size_t)w))) return pk_truncated(c);
            uint64_t u = pk_le(p, w);
            if ((o = pk_new(c, PK_INT)) < 0) return DS_ERR_NOMEM;
            c->objs[o].u.i = op == 'J' ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
            st = pk_push(c, o);
            break;
        }
        case 0x8a: /* LONG1: u8 length + little-endian two's complement */
        {
            if (!(p = pk_take(c, 1))) return pk_truncated(c);
            int len = *p;
            if (len > 8) return pk_error(c, DS_ERR_UNSUPPORTED, "integer of %d bytes does not fit in 64 bits", len);
            if (!(p = pk_take(c, (size_t)len))) return pk_truncated(c);
            uint64_t u = pk_le(p, len);
            if (len > 0 && len < 8 && (p[len - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * len); /* sign-extend */
            if ((o = pk_new(c, PK_INT)) < 0) return DS_ERR_NOMEM;
            c->objs[o].u.i = (int64_t)u;
            st = pk_push(c, o);
            break;
        }
        case 'G': /* BINFLOAT: big-endian double */
        {
            if (!(p = pk_take(c, 8))) return pk_truncated(c);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | p[i];
            if ((o = pk_new(c, PK_FLOAT)) < 0) return DS_ERR_NOMEM;
            memcpy(&c->objs[o].u.f, &u, 8);
            st = pk_push(c, o);
            break;
        }
        case 'N': /* NONE */
            st = pk_push(c, pk_new(c, PK_NONE));
            break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if ((o = pk_new(c, PK_BOOL)) < 0) return DS_ERR_NOMEM;
            c->objs[o].u.i = op == 0x88;
            st = pk_push(c, o);
            break;
        case 's': /* SETITEM */
            if ((st = pk_pop(c, &v)) != DS_OK || (st = pk_pop(c, &k)) != DS_OK || (st = pk_top(c, &o)) != DS_OK) return st;
            if (c->objs[o].type != PK_DICT) return pk_error(c, DS_ERR_FORMAT, "SETITEM on something that is not a dict");
            if ((st = pk_seq_append(c, o, k)) == DS_OK) st = pk_seq_append(c, o, v);
            break;
        case 'u': /* SETITEMS */
            if ((st = pk_pop_mark(c, &first, &n)) != DS_OK || (st = pk_top(c, &o)) != DS_OK) return st;
            if (c->objs[o].type != PK_DICT) return pk_error(c, DS_ERR_FORMAT, "SETITEMS on something that is not a dict");
            if (n % 2) return pk_error(c, DS_ERR_FORMAT, "SETITEMS with an odd number of items");
            for (int32_t i = 0; i < n && st == DS_OK; i++) st = pk_seq_append(c, o, c->stack[first + i]);
            break;
        case 'a': /* APPEND */
            if ((st = pk_pop(c, &v)) != DS_OK || (st = pk_top(c, &o)) != DS_OK) return st;
            if (c->objs[o].type != PK_LIST) return pk_error(c, DS_ERR_FORMAT, "APPEND on something that is not a list");
            st = pk_seq_append(c, o, v);
            break;
        case 'e': /* APPENDS */
            if ((st = pk_pop_mark(c, &first, &n)) != DS_OK || (st = pk_top(c, &o)) != DS_OK) return st;
            if (c->objs[o].type != PK_LIST) return pk_error(c, DS_ERR_FORMAT, "APPENDS on something that is not a list");
            for (int32_t i = 0; i < n && st == DS_OK; i++) st = pk_seq_append(c, o, c->stack[first + i]);
            break;
        case 'c': /* GLOBAL: "module\nname\n" */
        {
            const char *mod = NULL, *name = NULL;
            size_t mod_len = 0, name_len = 0;
            if ((st = pk_line(c, &mod, &mod_len)) != DS_OK || (st = pk_line(c, &name, &name_len)) != DS_OK) return st;
            st = pk_global_resolve(c, mod, mod_len, name, name_len);
            break;
        }
        case 0x93: /* STACK_GLOBAL (protocol 4): module, name strings on the stack */
            if ((st = pk_pop(c, &v)) != DS_OK || (st = pk_pop(c, &k)) != DS_OK) return st;
            if (c->objs[k].type != PK_STR || c->objs[v].type != PK_STR)
                return pk_error(c, DS_ERR_FORMAT, "STACK_GLOBAL arguments are not strings");
            st = pk_global_resolve(c, c->objs[k].u.str.s, c->objs[k].u.str.len, c->objs[v].u.str.s, c->objs[v].u.str.len);
            break;
        case 'R': /* REDUCE */
            st = pk_reduce(c);
            break;
        case 'b': /* BUILD: obj.__setstate__(state); only dict attributes (_metadata) and tensors */
            if ((st = pk_pop(c, &v)) != DS_OK || (st = pk_top(c, &o)) != DS_OK) return st;
            if (c->objs[o].type != PK_DICT && c->objs[o].type != PK_TENSOR)
                return pk_error(c, DS_ERR_FORMAT, "BUILD on something that is not a dict or tensor");
            break;
        case 'Q': /* BINPERSID */
            st = pk_persid(c);
            break;
        case '0': /* POP: with nothing above the mark, pops the mark (pickle.py load_pop) */
            if (pk_avail(c) == 0 && c->n_marks > 0) c->n_marks--;
            else st = pk_pop(c, &o);
            break;
        case '1': /* POP_MARK */
            st = pk_pop_mark(c, &first, &n);
            break;
        default:
            return pk_error(c, DS_ERR_FORMAT, "opcode 0x%02x is not in the state_dict subset (see pickletools)", op);
        }
        if (st != DS_OK) return st;
    }
}

/* Value of str key in dict d, or -1. */
static int32_t pk_dict_get(const pk_ctx *c, int32_t d, const char *key) {
    const pk_obj *o = &c->objs[d];
    size_t kl = strlen(key);
    for (int32_t i = 0; i + 1 < o->u.seq.n; i += 2) {
        const pk_obj *k = &c->objs[o->u.seq.items[i]];
        if (k->type == PK_STR && k->u.str.len == kl && memcmp(k->u.str.s, key, kl) == 0) return o->u.seq.items[i + 1];
    }
    return -1;
}

static int32_t pk_dict_n_tensors(const pk_ctx *c, int32_t d) {
    const pk_obj *o = &c->objs[d];
    int32_t n = 0;
    for (int32_t i = 0; i + 1 < o->u.seq.n; i += 2) n += c->objs[o->u.seq.items[i + 1]].type == PK_TENSOR;
    return n;
}

/* Checks entry index of the archive: exactly `bytes` bytes once inflated, and
 * a size the file can hold (stored entries hold their bytes; deflate expands
 * at most ~1032:1, zlib's technical notes), so that no allocation is made for
 * a size the file only claims. what names it in errors. */
static ds_status pth_check_entry(ds_weights *w, zip_t *za, zip_int64_t index, size_t file_bytes, uint64_t bytes,
                                 const char *what) {
    zip_stat_t zs;
    zip_stat_init(&zs);
    if (zip_stat_index(za, (zip_uint64_t)index, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE) ||
        !(zs.valid & ZIP_STAT_COMP_SIZE) || !(zs.valid & ZIP_STAT_COMP_METHOD))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': cannot stat %s: %s", w->path, what, zip_strerror(za));
    if (zs.size != bytes)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s is %llu bytes, expected %llu", w->path, what,
                            (unsigned long long)zs.size, (unsigned long long)bytes);
    if (zs.comp_size > file_bytes || (zs.comp_method == ZIP_CM_STORE && zs.comp_size != zs.size) ||
        (zs.comp_method != ZIP_CM_STORE && zs.size / 1032 > zs.comp_size))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s claims %llu bytes from %llu compressed (corrupt archive?)",
                            w->path, what, (unsigned long long)zs.size, (unsigned long long)zs.comp_size);
    return DS_OK;
}

/* Reads the checked entry (bytes long) into dst. */
static ds_status pth_read_into(ds_weights *w, zip_t *za, zip_int64_t index, uint64_t bytes, const char *what,
                               unsigned char *dst) {
    zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)index, 0);
    if (!zf) return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': cannot open %s: %s", w->path, what, zip_strerror(za));
    uint64_t done = 0;
    ds_status st = DS_OK;
    while (done < bytes) {
        zip_int64_t got = zip_fread(zf, dst + done, bytes - done);
        if (got < 0) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': cannot read %s: %s", w->path, what, zip_file_strerror(zf));
            break;
        }
        if (got == 0) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s ends after %llu of %llu bytes", w->path, what,
                              (unsigned long long)done, (unsigned long long)bytes);
            break;
        }
        done += (uint64_t)got;
    }
    /* one more read reaches the end of the entry, where libzip checks the CRC */
    unsigned char extra;
    if (st == DS_OK && zip_fread(zf, &extra, 1) != 0)
        st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s fails its CRC check or is longer than stated: %s", w->path,
                          what, zip_file_strerror(zf));
    zip_fclose(zf);
    return st;
}

/* A small entry (data.pkl, byteorder) into a malloc'd buffer *out. */
static ds_status pth_read_small(ds_weights *w, zip_t *za, zip_int64_t index, size_t file_bytes, uint64_t bytes,
                                const char *what, unsigned char **out) {
    ds_status st = pth_check_entry(w, za, index, file_bytes, bytes, what);
    if (st != DS_OK) return st;
    unsigned char *buf = malloc(bytes ? (size_t)bytes : 1);
    if (!buf) return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory for %s", w->path, what);
    if ((st = pth_read_into(w, za, index, bytes, what, buf)) != DS_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return DS_OK;
}

/* BatchNorm's num_batches_tracked buffer (an int64 step counter that
 * torch.nn.BatchNorm2d puts in every state_dict and eval mode never reads):
 * left out of the tensor table rather than rejecting the file. Only int64
 * and only under that name: any other integer tensor stays unsupported. */
static bool pth_skipped(const pk_ctx *c, const pk_obj *key, const pk_tensor *t) {
    static const char suffix[] = "num_batches_tracked";
    size_t n = sizeof suffix - 1;
    const pk_storage *s = &c->storages[t->storage];
    return strcmp(pk_storage_types[s->type].name, "LongStorage") == 0 && key->type == PK_STR && key->u.str.len >= n &&
           memcmp(key->u.str.s + key->u.str.len - n, suffix, n) == 0 &&
           (key->u.str.len == n || key->u.str.s[key->u.str.len - n - 1] == '.');
}

/* Pass 1 for one (key, tensor) of the state_dict: checks it against its
 * storage and the archive, without reading data. name gets the key. */
static ds_status pth_check_tensor(pk_ctx *c, zip_t *za, const char *prefix, size_t file_bytes, const pk_obj *key,
                                  pk_tensor *t) {
    ds_weights *w = c->w;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)DS_MIN(key->u.str.len, 255u), key->u.str.s);
    if (key->u.str.len == 0 || memchr(key->u.str.s, '\0', key->u.str.len))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': a tensor name is empty or contains a NUL byte", w->path);
    pk_storage *s = &c->storages[t->storage];
    int dt = pk_storage_types[s->type].dtype;
    size_t itemsize = pk_storage_types[s->type].itemsize;
    if (dt < 0)
        return ds_set_error(DS_ERR_UNSUPPORTED,
                            "ds_weights_load: '%s': tensor '%s' is torch.%s (%s); only float32, float16 and bfloat16 are "
                            "supported",
                            w->path, name, pk_storage_types[s->type].name, pk_storage_types[s->type].torch_dtype);
    if (t->n_dims > DS_TENSOR_MAX_DIMS)
        return ds_set_error(DS_ERR_UNSUPPORTED, "ds_weights_load: '%s': tensor '%s' has %d dimensions, at most %d supported",
                            w->path, name, t->n_dims, DS_TENSOR_MAX_DIMS);
    if (t->n_strides != t->n_dims)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' has %d sizes but %d strides", w->path, name,
                            t->n_dims, t->n_strides);
    size_t n_bytes;
    if (!ds_shape_elements(t->shape, t->n_dims, itemsize, &t->n_elements, &n_bytes)) {
        char sh[256];
        ds_shape_format(sh, sizeof sh, t->shape, t->n_dims, itemsize);
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': tensor '%s' size %s bytes is negative or overflows", w->path,
                            name, sh);
    }
    /* row-major contiguity as torch's is_contiguous: size-1 dims may have any stride */
    int64_t expected = 1;
    for (int d = t->n_dims - 1; d >= 0 && t->n_elements > 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expected) {
            char st[256] = "";
            size_t len = 0;
            for (int i = 0; i < t->n_dims && len < sizeof st; i++)
                len += (size_t)snprintf(st + len, sizeof st - len, "%s%lld", i ? "," : "", (long long)t->stride[i]);
            return ds_set_error(DS_ERR_UNSUPPORTED,
                                "ds_weights_load: '%s': tensor '%s' is not contiguous (stride [%s]); save it with "
                                ".contiguous()",
                                w->path, name, st);
        }
        expected *= t->shape[d]; /* no overflow: the product of all sizes fits */
    }
    int64_t end;
    if (t->offset < 0 || __builtin_add_overflow(t->offset, t->n_elements, &end) || end > s->numel)
        return ds_set_error(DS_ERR_FORMAT,
                            "ds_weights_load: '%s': tensor '%s' elements [%lld, %lld + %lld) lie outside its storage '%s' "
                            "of %lld elements",
                            w->path, name, (long long)t->offset, (long long)t->offset, (long long)t->n_elements, s->key,
                            (long long)s->numel);
    if (s->needed) return DS_OK;

    char entry[PK_MAX_KEY + 300], what[PK_MAX_KEY + 320];
    snprintf(entry, sizeof entry, "%s/data/%s", prefix, s->key);
    snprintf(what, sizeof what, "storage '%s' of tensor '%s'", s->key, name);
    s->entry = zip_name_locate(za, entry, ZIP_FL_ENC_RAW);
    if (s->entry < 0)
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s: entry '%s' is missing from the archive", w->path, what,
                            entry);
    if (!ds_mul_size((size_t)s->numel, itemsize, &s->bytes))
        return ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': %s size overflows", w->path, what);
    ds_status st = pth_check_entry(w, za, s->entry, file_bytes, s->bytes, what);
    if (st != DS_OK) return st;
    s->needed = true;
    return DS_OK;
}

/* Pass 2: every needed storage into one arena (64-byte aligned slots). The
 * arena is anonymous memory advised for huge pages: on this machine first
 * touch of 4 KB pages costs ~6 ms per MB, 2 MB pages ~1.3 ms (measured,
 * 88 MB ViT-S). Read-only once filled: tensors are views. */
static ds_status pth_read_storages(pk_ctx *c, zip_t *za) {
    ds_weights *w = c->w;
    size_t total = 0;
    for (int32_t i = 0; i < c->n_storages; i++) {
        pk_storage *s = &c->storages[i];
        if (!s->needed) continue;
        s->arena_offset = total;
        size_t padded;
        if (!ds_add_size(s->bytes, 63, &padded) || !ds_add_size(total, padded & ~(size_t)63, &total))
            return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': storages total size overflows", w->path);
    }
    if (total == 0) total = 64;
    void *arena = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED)
        return ds_set_error(DS_ERR_NOMEM, "ds_weights_load: '%s': out of memory for %zu bytes of storages", w->path, total);
    w->map = arena;
    w->map_bytes = total;
#ifdef MADV_HUGEPAGE
    if (total >= (8u << 20)) madvise(arena, total, MADV_HUGEPAGE); /* advice only: failure is fine */
#endif
    for (int32_t i = 0; i < c->n_storages; i++) {
        pk_storage *s = &c->storages[i];
        if (!s->needed) continue;
        char what[PK_MAX_KEY + 32];
        snprintf(what, sizeof what, "storage '%s'", s->key);
        ds_status st = pth_read_into(w, za, s->entry, s->bytes, what, (unsigned char *)arena + s->arena_offset);
        if (st != DS_OK) return st;
    }
    mprotect(arena, total, PROT_READ);
    return DS_OK;
}

static void pk_ctx_free(pk_ctx *c) {
    for (int32_t i = 0; i < c->n_objs; i++) {
        pk_type t = (pk_type)c->objs[i].type;
        if (t == PK_TUPLE || t == PK_LIST || t == PK_DICT) free(c->objs[i].u.seq.items);
    }
    DS_FREE_ALL(c->objs, c->stack, c->marks, c->memo, c->storages, c->tensors);
}

ds_status ds_pth_read(ds_weights *w, size_t file_bytes) {
    int zerr = 0;
    zip_t *za = zip_open(w->path, ZIP_RDONLY, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        ds_status st = ds_set_error(zerr == ZIP_ER_OPEN || zerr == ZIP_ER_READ ? DS_ERR_IO : DS_ERR_FORMAT,
                                    "ds_weights_load: '%s': not a readable zip archive (.pth): %s", w->path,
                                    zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return st;
    }
    ds_status st = DS_OK;
    pk_ctx c = {.w = w};
    unsigned char *pkl = NULL;
    char prefix[256] = "";

    /* <prefix>/data.pkl, prefix one path component (inline_container.cc) */
    zip_int64_t n_entries = zip_get_num_entries(za, 0), pkl_index = -1;
    for (zip_int64_t i = 0; i < n_entries; i++) {
        const char *name = zip_get_name(za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        if (!name) continue;
        const char *slash = strchr(name, '/');
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0) continue;
        if (pkl_index >= 0) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': the archive has more than one */data.pkl", w->path);
            goto cleanup;
        }
        if ((size_t)(slash - name) >= sizeof prefix) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': archive folder name is too long", w->path);
            goto cleanup;
        }
        memcpy(prefix, name, (size_t)(slash - name));
        prefix[slash - name] = '\0';
        pkl_index = i;
    }
    if (pkl_index < 0) {
        st = ds_set_error(DS_ERR_FORMAT,
                          "ds_weights_load: '%s': zip archive has no <folder>/data.pkl (not a torch.save checkpoint; "
                          "TorchScript archives are not supported)",
                          w->path);
        goto cleanup;
    }

    /* byteorder: written by newer PyTorch; absent means little-endian */
    char entry[300];
    snprintf(entry, sizeof entry, "%s/byteorder", prefix);
    zip_int64_t bo = zip_name_locate(za, entry, ZIP_FL_ENC_RAW);
    zip_stat_t zs;
    if (bo >= 0) {
        unsigned char *b = NULL;
        zip_stat_init(&zs);
        if (zip_stat_index(za, (zip_uint64_t)bo, 0, &zs) == 0 && (zs.valid & ZIP_STAT_SIZE) && zs.size < 16 &&
            pth_read_small(w, za, bo, file_bytes, zs.size, "byteorder", &b) == DS_OK) {
            bool little = zs.size == 6 && memcmp(b, "little", 6) == 0;
            free(b);
            if (!little) {
                st = ds_set_error(DS_ERR_UNSUPPORTED, "ds_weights_load: '%s': byteorder is not 'little'", w->path);
                goto cleanup;
            }
        } else {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': unreadable byteorder entry", w->path);
            goto cleanup;
        }
    }

    zip_stat_init(&zs);
    if (zip_stat_index(za, (zip_uint64_t)pkl_index, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE)) {
        st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': cannot stat data.pkl: %s", w->path, zip_strerror(za));
        goto cleanup;
    }
    if (zs.size > PK_MAX_PICKLE_BYTES || zs.size == 0) {
        st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': data.pkl is %llu bytes (limit %u)", w->path,
                          (unsigned long long)zs.size, PK_MAX_PICKLE_BYTES);
        goto cleanup;
    }
    if ((st = pth_read_small(w, za, pkl_index, file_bytes, zs.size, "data.pkl", &pkl)) != DS_OK) goto cleanup;

    c.buf = pkl;
    c.len = (size_t)zs.size;
    int32_t root = -1;
    if ((st = pk_run(&c, &root)) != DS_OK) goto cleanup;
    if (c.objs[root].type != PK_DICT) {
        st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': the pickled object is not a dict (state_dict)", w->path);
        goto cleanup;
    }
    int32_t sd = root;
    if (pk_dict_n_tensors(&c, root) == 0) {
        static const char *const nested[] = {"state_dict", "model", "teacher"};
        sd = -1;
        for (size_t i = 0; i < sizeof nested / sizeof *nested && sd < 0; i++) {
            int32_t v = pk_dict_get(&c, root, nested[i]);
            if (v >= 0 && c.objs[v].type == PK_DICT && pk_dict_n_tensors(&c, v) > 0) sd = v;
        }
        if (sd < 0) {
            st = ds_set_error(DS_ERR_FORMAT,
                              "ds_weights_load: '%s': no tensors in the pickled dict, nor under 'state_dict', 'model' "
                              "or 'teacher'",
                              w->path);
            goto cleanup;
        }
    }

    /* pass 1: check every tensor and its storage entry; pass 2: read the
     * storages; pass 3: hand out the views */
    const pk_obj *d = &c.objs[sd];
    for (int32_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        const pk_obj *k = &c.objs[d->u.seq.items[i]], *v = &c.objs[d->u.seq.items[i + 1]];
        if (v->type != PK_TENSOR) continue;
        if (k->type != PK_STR) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_weights_load: '%s': a tensor's key is not a string", w->path);
            goto cleanup;
        }
        if (pth_skipped(&c, k, &c.tensors[v->u.index])) continue;
        if ((st = pth_check_tensor(&c, za, prefix, file_bytes, k, &c.tensors[v->u.index])) != DS_OK) goto cleanup;
    }
    if ((st = pth_read_storages(&c, za)) != DS_OK) goto cleanup;
    for (int32_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        const pk_obj *k = &c.objs[d->u.seq.items[i]], *v = &c.objs[d->u.seq.items[i + 1]];
        if (v->type != PK_TENSOR) continue;
        const pk_tensor *t = &c.tensors[v->u.index];
        if (pth_skipped(&c, k, t)) continue;
        const pk_storage *s = &c.storages[t->storage];
        ds_tensor *out = ds_weights_add_tensor(w, k->u.str.s, k->u.str.len);
        if (!out) {
            st = DS_ERR_NOMEM;
            goto cleanup;
        }
        out->dtype = (ds_dtype)pk_storage_types[s->type].dtype;
        out->n_dims = t->n_dims;
        memcpy(out->shape, t->shape, sizeof out->shape);
        out->n_elements = t->n_elements;
        out->data = (const unsigned char *)w->map + s->arena_offset + (size_t)t->offset * pk_storage_types[s->type].itemsize;
    }
cleanup:
    pk_ctx_free(&c);
    free(pkl);
    zip_discard(za);
    return st;
}
