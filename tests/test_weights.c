/* Tests for the weights module: safetensors and .pth loaders against fixtures
 * written by PyTorch / hashlib (tests/fixtures/make_weights_fixtures.py), and
 * malformed files made here at run time under $DS_TMP. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dinoscope/npy.h"
#include "dinoscope/weights.h"
#include "test.h"

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int slot = 0;
    slot = (slot + 1) % 8;
    const char *dir = test_env("DS_TMP", "build/testtmp");
    mkdir(dir, 0777);
    snprintf(buf[slot], sizeof buf[slot], "%s/weights_%s", dir, name);
    return buf[slot];
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    if (len) fwrite(buf, 1, len, fp);
    fclose(fp);
}

/* A safetensors file: 8-byte LE length (header_len, or strlen(json) when
 * header_len is UINT64_MAX) + json + data. */
static const char *write_st(const char *name, const char *json, const void *data, size_t data_len, uint64_t header_len) {
    const char *path = tmp_path(name);
    size_t jl = strlen(json);
    uint64_t n = header_len == UINT64_MAX ? jl : header_len;
    unsigned char *buf = malloc(8 + jl + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, json, jl);
    if (data_len) memcpy(buf + 8 + jl, data, data_len);
    write_all(path, buf, 8 + jl + data_len);
    free(buf);
    return path;
}

/* Loading path must fail (with want status unless 0), leave *out untouched,
 * and give a one-line message containing substr. */
static void expect_fail(const char *what, const char *path, ds_status want, const char *substr) {
    ds_weights *sentinel = (ds_weights *)(uintptr_t)0x1234, *w = sentinel;
    ds_status st = ds_weights_load(path, &w);
    const char *msg = ds_last_error();
    printf("     %s -> %d: %s\n", what, (int)st, msg);
    char descr[512];
    snprintf(descr, sizeof descr, "%s is rejected%s%s with a message naming the problem", what,
             want == DS_ERR_UNSUPPORTED ? " as unsupported" : want == DS_ERR_FORMAT ? " as malformed" : "",
             want == DS_ERR_IO ? " as an I/O error" : "");
    test_cond(descr, st != DS_OK && (want == 0 || st == want) && w == sentinel && msg[0] != '\0' &&
                         strchr(msg, '\n') == NULL && (!substr || strstr(msg, substr) != NULL));
    if (st == DS_OK && w != sentinel) ds_weights_free(w);
}

static bool same_shape(const ds_tensor *t, int n_dims, const int64_t *shape) {
    if (t->n_dims != n_dims) return false;
    for (int i = 0; i < n_dims; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

/* Tensor converted to f32 equals the expected .npy bit for bit (NaN too). */
static bool tensor_matches_npy(const ds_tensor *t, const char *npy) {
    float *ref = NULL;
    int nd = 0;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(npy, &ref, &nd, shape) != DS_OK) {
        printf("     %s: %s\n", npy, ds_last_error());
        return false;
    }
    bool ok = same_shape(t, nd, shape);
    if (ok && t->n_elements > 0) {
        float *got = malloc((size_t)t->n_elements * sizeof *got);
        ds_tensor_to_f32(t, got);
        ok = memcmp(got, ref, (size_t)t->n_elements * sizeof *got) == 0;
        free(got);
    }
    free(ref);
    return ok;
}

static const char *const k_names[] = {"odd.f16", "f32.arange", "f16.specials", "bf16.specials",
                                      "blocks.0.attn.qkv.weight", "scalar", "empty", "last.bf16"};
#define N_NAMES ((int)(sizeof k_names / sizeof *k_names))

static bool all_match_expected(const ds_weights *w) {
    bool ok = ds_weights_count(w) == N_NAMES;
    for (int i = 0; i < N_NAMES && ok; i++) {
        char npy[512];
        snprintf(npy, sizeof npy, "weights/expected/%s.npy", k_names[i]);
        const ds_tensor *t = ds_weights_find(w, k_names[i]);
        ok = t && tensor_matches_npy(t, fixture(npy));
        if (!ok) printf("     mismatch in '%s'\n", k_names[i]);
    }
    return ok;
}

static bool is_arange(const ds_tensor *t, float start, float step) {
    if (!t || t->dtype != DS_DTYPE_F32) return false;
    const float *v = t->data;
    for (int64_t i = 0; i < t->n_elements; i++)
        if (v[i] != start + step * (float)i) return false;
    return true;
}

static void test_safetensors(void) {
    ds_weights *w = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s", fixture("weights/weights.safetensors"));
    ds_status st = ds_weights_load(path, &w);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    test_cond("weights.safetensors loads", st == DS_OK && w);
    if (!w) return;
    test_cond("it has the 8 tensors the script wrote", ds_weights_count(w) == N_NAMES);
    test_cond("every tensor (F32, F16 incl. subnormals/inf/NaN, BF16) converts to torch's float32 bit for bit",
              all_match_expected(w));
    const ds_tensor *f16 = ds_weights_find(w, "f16.specials"), *bf16 = ds_weights_find(w, "bf16.specials");
    const ds_tensor *qkv = ds_weights_find(w, "blocks.0.attn.qkv.weight"), *sc = ds_weights_find(w, "scalar");
    const ds_tensor *empty = ds_weights_find(w, "empty");
    test_cond("dtypes are read: F16, BF16, F32", f16 && f16->dtype == DS_DTYPE_F16 && bf16 &&
                                                      bf16->dtype == DS_DTYPE_BF16 && qkv && qkv->dtype == DS_DTYPE_F32);
    test_cond("shapes are read outermost first ([12,4], [4,8])",
              qkv && same_shape(qkv, 2, (int64_t[]){12, 4}) && qkv->n_elements == 48 && f16 &&
                  same_shape(f16, 2, (int64_t[]){4, 8}));
    test_cond("a 0-dim tensor has 1 element", sc && sc->n_dims == 0 && sc->n_elements == 1 && *(const float *)sc->data == 3.25f);
    test_cond("an empty [0,3] tensor has 0 elements", empty && same_shape(empty, 2, (int64_t[]){0, 3}) && empty->n_elements == 0);
    bool aligned = true;
    for (int i = 0; i < ds_weights_count(w); i++) {
        const ds_tensor *t = ds_weights_get(w, i);
        if (t->n_elements > 0 && (uintptr_t)t->data % (t->dtype == DS_DTYPE_F32 ? 4 : 2) != 0) aligned = false;
    }
    test_cond("F32 tensors after an odd-length F16 one are handed out aligned", aligned);
    test_cond("get(i) walks the tensors in file order", ds_weights_get(w, 0) && strcmp(ds_weights_get(w, 0)->name, "odd.f16") == 0 &&
                                                            ds_weights_get(w, -1) == NULL && ds_weights_get(w, N_NAMES) == NULL);
    test_cond("find() of an absent name is NULL", ds_weights_find(w, "blocks.0.attn.qkv") == NULL &&
                                                       ds_weights_find(w, "") == NULL && ds_weights_find(w, "zzz") == NULL);
    const char *fmt = ds_weights_metadata(w, "format"), *src = ds_weights_metadata(w, "source");
    test_cond("__metadata__ values are read", fmt && strcmp(fmt, "pt") == 0 && src &&
                                                   strcmp(src, "tests/fixtures/make_weights_fixtures.py") == 0 &&
                                                   ds_weights_metadata(w, "absent") == NULL);
    test_cond("path() is the path loaded", strcmp(ds_weights_path(w), path) == 0);
    ds_weights_free(w);
    ds_weights_free(NULL);
}

static void test_pth(void) {
    ds_weights *w = NULL, *s = NULL;
    ds_status st = ds_weights_load(fixture("weights/weights.pth"), &w);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    test_cond("weights.pth (torch.save) loads", st == DS_OK && w);
    if (!w) return;
    test_cond("every .pth tensor converts to torch's float32 bit for bit", all_match_expected(w));
    ds_weights_load(fixture("weights/weights.safetensors"), &s);
    bool same = s && ds_weights_count(s) == ds_weights_count(w);
    for (int i = 0; same && i < ds_weights_count(w); i++) {
        const ds_tensor *a = ds_weights_get(w, i), *b = ds_weights_find(s, a->name);
        same = b && a->dtype == b->dtype && same_shape(a, b->n_dims, b->shape) &&
               memcmp(a->data, b->data, (size_t)a->n_elements * (a->dtype == DS_DTYPE_F32 ? 4 : 2)) == 0;
    }
    test_cond(".pth tensors equal the safetensors ones (dtype, shape, bytes)", same);
    test_cond("an nn.Parameter (_rebuild_parameter) loads as its tensor", ds_weights_find(w, "blocks.0.attn.qkv.weight") != NULL);
    test_cond(".pth has no __metadata__", ds_weights_metadata(w, "format") == NULL);
    ds_weights_free(s);
    ds_weights_free(w);

    w = NULL;
    st = ds_weights_load(fixture("weights/views.pth"), &w);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    const ds_tensor *base = w ? ds_weights_find(w, "base") : NULL, *tail = w ? ds_weights_find(w, "tail") : NULL,
                    *mid = w ? ds_weights_find(w, "mid") : NULL;
    test_cond("views of one storage load: base = arange(10)", st == DS_OK && is_arange(base, 0, 1) && base->n_elements == 10);
    test_cond("tail = base[4:10].view(2,3) starts at element 4 of the shared storage",
              tail && same_shape(tail, 2, (int64_t[]){2, 3}) && is_arange(tail, 4, 1) && base &&
                  (const float *)tail->data == (const float *)base->data + 4);
    test_cond("mid = base[1:3]", mid && same_shape(mid, 1, (int64_t[]){2}) && is_arange(mid, 1, 1));
    ds_weights_free(w);

    w = NULL;
    st = ds_weights_load(fixture("weights/nested.pth"), &w);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    const ds_tensor *lw = w ? ds_weights_find(w, "0.weight") : NULL, *lb = w ? ds_weights_find(w, "0.bias") : NULL;
    const ds_tensor *nw = w ? ds_weights_find(w, "1.weight") : NULL, *nb = w ? ds_weights_find(w, "1.bias") : NULL;
    test_cond("a checkpoint {'model': state_dict (with _metadata), 'epoch', 'lr', ...} yields the model's 4 tensors",
              st == DS_OK && ds_weights_count(w) == 4);
    test_cond("its values are the ones the script set",
              lw && same_shape(lw, 2, (int64_t[]){3, 4}) && is_arange(lw, 0, 0.25f) && is_arange(lb, -1, 1) &&
                  is_arange(nw, 1, 1) && nb && ((const float *)nb->data)[2] == 0.5f);
    ds_weights_free(w);

    w = NULL;
    st = ds_weights_load(fixture("weights/handmade.pth"), &w);
    test_cond("a hand-built archive (the writer of the bad_*.pth cases; 2.x-style byteorder and 64-byte aligned entries) loads",
              st == DS_OK && ds_weights_count(w) == 1 && is_arange(ds_weights_find(w, "w"), 0, 1));
    ds_weights_free(w);
}

static void test_pth_rejects(void) {
    expect_fail("a transposed (non-contiguous) tensor", fixture("weights/noncontig.pth"), DS_ERR_UNSUPPORTED, "tensor 't' is not contiguous");
    expect_fail("a float64 tensor", fixture("weights/float64.pth"), DS_ERR_UNSUPPORTED, "tensor 'd' is torch.DoubleStorage (float64)");
    expect_fail("the legacy non-zip torch.save format", fixture("weights/legacy.pth"), DS_ERR_UNSUPPORTED, "legacy");
    unlink("/tmp/dinoscope_pwned");
    expect_fail("a pickle calling posix.system", fixture("weights/hostile_posix.pth"), DS_ERR_FORMAT,
                "pickle refers to 'posix.system', which is not allowed");
    expect_fail("a pickle calling builtins.eval", fixture("weights/hostile_eval.pth"), DS_ERR_FORMAT, "'builtins.eval'");
    expect_fail("a protocol-4 STACK_GLOBAL os.system", fixture("weights/hostile_stack_global.pth"), DS_ERR_FORMAT, "'os.system'");
    test_cond("nothing in the hostile pickles ran", access("/tmp/dinoscope_pwned", F_OK) != 0);
    expect_fail("a storage missing from the archive", fixture("weights/bad_missing_storage.pth"), DS_ERR_FORMAT, "missing from the archive");
    expect_fail("a storage entry shorter than its numel", fixture("weights/bad_storage_size.pth"), DS_ERR_FORMAT, "expected 24");
    expect_fail("a tensor past the end of its storage", fixture("weights/bad_offset.pth"), DS_ERR_FORMAT, "outside its storage");
    expect_fail("BINGET of an unset memo slot", fixture("weights/bad_memo.pth"), DS_ERR_FORMAT, "memo index 5");
    expect_fail("SETITEM on an empty stack", fixture("weights/bad_underflow.pth"), DS_ERR_FORMAT, "stack underflow");
    expect_fail("TUPLE without MARK", fixture("weights/bad_mark.pth"), DS_ERR_FORMAT, "MARK");
    expect_fail("a pickle without STOP", fixture("weights/bad_no_stop.pth"), DS_ERR_FORMAT, "without STOP");
    expect_fail("an opcode outside the subset (INST)", fixture("weights/bad_opcode.pth"), DS_ERR_FORMAT, "opcode 0x69");
    expect_fail("a string running past the pickle", fixture("weights/bad_string.pth"), DS_ERR_FORMAT, "truncated");
    expect_fail("a pickle of a list", fixture("weights/bad_not_dict.pth"), DS_ERR_FORMAT, "not a dict");
    expect_fail("a big-endian archive", fixture("weights/bad_byteorder.pth"), DS_ERR_UNSUPPORTED, "byteorder");
    expect_fail("a zip without data.pkl", fixture("weights/bad_no_pickle.pth"), DS_ERR_FORMAT, "data.pkl");

    /* truncations and a flipped storage byte of the real torch.save file */
    size_t len = 0;
    unsigned char *pth = read_all(fixture("weights/weights.pth"), &len);
    test_cond("weights.pth is readable", pth && len > 1000);
    if (!pth) return;
    size_t cuts[] = {4, 30, 100, len / 2, len - 100, len - 22, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64], what[96];
        snprintf(name, sizeof name, "trunc_%zu.pth", cuts[i]);
        snprintf(what, sizeof what, ".pth truncated to %zu of %zu bytes", cuts[i], len);
        const char *p = tmp_path(name);
        write_all(p, pth, cuts[i]);
        expect_fail(what, p, 0, "ds_weights_load");
    }
    /* f32.arange's first floats: -3.0, -2.5, -2.0 */
    const float pat[3] = {-3.0f, -2.5f, -2.0f};
    unsigned char *hit = NULL;
    for (size_t i = 0; i + sizeof pat <= len && !hit; i++)
        if (memcmp(pth + i, pat, sizeof pat) == 0) hit = pth + i;
    test_cond("the f32.arange storage is found in the archive", hit != NULL);
    if (hit) {
        hit[5] ^= 0x40;
        const char *p = tmp_path("crc.pth");
        write_all(p, pth, len);
        expect_fail("a .pth with a flipped byte in a storage", p, DS_ERR_FORMAT, "CRC");
    }
    free(pth);
}

static void test_safetensors_rejects(void) {
    size_t len = 0;
    unsigned char *st = read_all(fixture("weights/weights.safetensors"), &len);
    test_cond("weights.safetensors is readable", st && len > 16);
    if (!st) return;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | st[i];
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + (size_t)n / 2, 8 + (size_t)n - 1, 8 + (size_t)n, 8 + (size_t)n + 5, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char name[64], what[96];
        snprintf(name, sizeof name, "trunc_%zu.safetensors", cuts[i]);
        snprintf(what, sizeof what, "safetensors truncated to %zu of %zu bytes", cuts[i], len);
        const char *p = tmp_path(name);
        write_all(p, st, cuts[i]);
        expect_fail(what, p, DS_ERR_FORMAT, NULL);
    }
    free(st);

    static const float four[4] = {1, 2, 3, 4};
    char big[64];
    snprintf(big, sizeof big, "header length 1000 exceeds file size");
    expect_fail("a header length larger than the file", write_st("hlen_big.st", "{}", NULL, 0, 1000), DS_ERR_FORMAT, big);
    expect_fail("a header length of 0", write_st("hlen0.st", "", four, 16, 0), DS_ERR_FORMAT, "too small");
    expect_fail("a header length of 2^63", write_st("hlen_huge.st", "{}", NULL, 0, (uint64_t)1 << 63), DS_ERR_FORMAT, "limit");
    expect_fail("invalid JSON", write_st("badjson.st", "{\"a\": {\"dtype\": \"F32\", ", NULL, 0, UINT64_MAX), DS_ERR_FORMAT, "not valid JSON");
    expect_fail("a JSON list header", write_st("list.st", "[1,2]", NULL, 0, UINT64_MAX), DS_ERR_FORMAT, "not a JSON object");
    expect_fail("trailing bytes after the JSON", write_st("trail.st", "{}  x", NULL, 0, UINT64_MAX), DS_ERR_FORMAT, "trailing");
    expect_fail("offsets past the data section",
                write_st("oob.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", four, 12, UINT64_MAX),
                DS_ERR_FORMAT, "run past the data section");
    expect_fail("overlapping tensors",
                write_st("overlap.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "overlap");
    expect_fail("a span not matching the shape",
                write_st("span.st", "{\"blocks.0.attn.qkv.weight\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                         four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "tensor 'blocks.0.attn.qkv.weight' data_offsets [0,8] span 8 bytes, expected 3 x 4 = 12");
    expect_fail("dims whose product overflows",
                write_st("overflow.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}",
                         NULL, 0, UINT64_MAX),
                DS_ERR_FORMAT, "overflows");
    expect_fail("dims whose byte count overflows",
                write_st("overflow2.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]}}",
                         NULL, 0, UINT64_MAX),
                DS_ERR_FORMAT, "overflows");
    expect_fail("a dim beyond 2^53",
                write_st("dim53.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,0]}}", NULL, 0, UINT64_MAX),
                DS_ERR_FORMAT, "shape[0]");
    expect_fail("a negative dim",
                write_st("negdim.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", NULL, 0, UINT64_MAX),
                DS_ERR_FORMAT, "shape[0]");
    expect_fail("a fractional offset",
                write_st("fracoff.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "data_offsets");
    expect_fail("end before begin",
                write_st("backwards.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "end before begin");
    expect_fail("9 dimensions",
                write_st("dims9.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", four, 16,
                         UINT64_MAX),
                DS_ERR_UNSUPPORTED, "9 dimensions");
    expect_fail("duplicate names",
                write_st("dup.st",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                         four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "'a' appears more than once");
    expect_fail("an empty tensor name",
                write_st("noname.st", "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "empty name");
    expect_fail("an unknown dtype",
                write_st("f33.st", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", four, 16, UINT64_MAX),
                DS_ERR_FORMAT, "unknown dtype 'F33'");
    expect_fail("an I64 tensor",
                write_st("i64.st", "{\"pos\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", four, 16, UINT64_MAX),
                DS_ERR_UNSUPPORTED, "tensor 'pos' has dtype I64");
    expect_fail("a tensor without data_offsets",
                write_st("nooffs.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", four, 16, UINT64_MAX), DS_ERR_FORMAT,
                "data_offsets");
    expect_fail("a tensor entry that is a number", write_st("num.st", "{\"a\":3}", four, 16, UINT64_MAX), DS_ERR_FORMAT,
                "not a JSON object");
    expect_fail("a non-string __metadata__ value",
                write_st("meta.st", "{\"__metadata__\":{\"k\":1}}", NULL, 0, UINT64_MAX), DS_ERR_FORMAT, "__metadata__");
    expect_fail("an empty file", write_st("empty.st", "", NULL, 0, 0) /* 8 bytes */, DS_ERR_FORMAT, NULL);
    const char *zero = tmp_path("zero.st");
    write_all(zero, "", 0);
    expect_fail("a 0-byte file", zero, DS_ERR_FORMAT, "0 bytes");
    expect_fail("a directory", test_env("DS_TMP", "build/testtmp"), DS_ERR_IO, "not a regular file");
    expect_fail("a missing file", tmp_path("does_not_exist.safetensors"), DS_ERR_IO, "cannot open");

    ds_weights *w = NULL;
    ds_status s1 = ds_weights_load(write_st("emptyobj.st", "{}", NULL, 0, UINT64_MAX), &w);
    test_cond("a header '{}' is a valid file with no tensors", s1 == DS_OK && ds_weights_count(w) == 0 &&
                                                                   ds_weights_find(w, "a") == NULL);
    ds_weights_free(w);
    w = NULL;
    s1 = ds_weights_load(write_st("zero_len.st",
                                  "{\"z\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[2,2]},"
                                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ",
                                  four, 8, UINT64_MAX),
                         &w);
    test_cond("a zero-length tensor inside another's span is not an overlap (and space padding is fine)",
              s1 == DS_OK && ds_weights_count(w) == 2 && is_arange(ds_weights_find(w, "a"), 1, 1));
    ds_weights_free(w);
    test_cond("ds_weights_load(NULL) is an argument error", ds_weights_load(NULL, &w) == DS_ERR_ARG);
}

static void test_sha256(void) {
    size_t len = 0;
    char *json = (char *)read_all(fixture("weights/sha256.json"), &len);
    cJSON *root = json ? cJSON_ParseWithLength(json, len) : NULL;
    const char *files[] = {"weights.safetensors", "weights.pth"};
    for (int i = 0; i < 2; i++) {
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(root, files[i]);
        char path[256], hex[65] = "", descr[128];
        snprintf(path, sizeof path, "weights/%s", files[i]);
        ds_status st = ds_file_sha256(fixture(path), hex);
        snprintf(descr, sizeof descr, "ds_file_sha256(%s) equals Python's hashlib", files[i]);
        test_cond(descr, st == DS_OK && cJSON_IsString(ref) && strcmp(hex, ref->valuestring) == 0);
    }
    cJSON_Delete(root);
    free(json);
    const char *zero = tmp_path("zero.sha");
    write_all(zero, "", 0);
    char hex[65] = "unchanged";
    test_cond("SHA-256 of an empty file is the FIPS 180-4 empty-message digest",
              ds_file_sha256(zero, hex) == DS_OK &&
                  strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    strcpy(hex, "unchanged");
    test_cond("SHA-256 of a missing file is an I/O error and leaves hex unchanged",
              ds_file_sha256(tmp_path("nope"), hex) == DS_ERR_IO && strcmp(hex, "unchanged") == 0 && ds_last_error()[0]);
    test_cond("SHA-256 of a directory is an I/O error", ds_file_sha256(test_env("DS_TMP", "build/testtmp"), hex) == DS_ERR_IO);
}

/* The real backbone in ../shared: 106 tensors; sha256 from its README. */
static void test_shared_model(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/mobilenet_v2_imagenet.safetensors", test_env("DS_SHARED", "../shared"));
    if (access(path, R_OK) != 0) {
        printf("     (skipped: %s not present)\n", path);
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ds_weights *w = NULL;
    ds_status st = ds_weights_load(path, &w);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("     mobilenet_v2 safetensors load: %.2f ms\n", (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    const ds_tensor *cls = w ? ds_weights_find(w, "classifier.1.weight") : NULL;
    const char *arch = w ? ds_weights_metadata(w, "architecture") : NULL;
    test_cond("the shared MobileNetV2 safetensors loads with its 106 tensors (its README)", st == DS_OK && ds_weights_count(w) == 106);
    test_cond("its classifier.1.weight is [1001,1280] F32 and its metadata names mobilenet_v2",
              cls && cls->dtype == DS_DTYPE_F32 && same_shape(cls, 2, (int64_t[]){1001, 1280}) && arch &&
                  strcmp(arch, "mobilenet_v2") == 0);
    int64_t total = 0;
    for (int i = 0; i < ds_weights_count(w); i++) total += ds_weights_get(w, i)->n_elements;
    test_cond("its parameter count is 3,489,097 (its README)", total == 3489097);
    ds_weights_free(w);
    char hex[65];
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = ds_file_sha256(path, hex);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("     sha256 of 14 MB: %.2f ms\n", (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    test_cond("its SHA-256 matches its README",
              st == DS_OK && strcmp(hex, "0bb7ddee0a31be888267edfcb848bcda9c3fc1ad4dc4766f91328feae2a08742") == 0);
}

/* BatchNorm's int64 num_batches_tracked buffers: skipped (they are in every
 * torchvision state_dict and eval mode never reads them), while any other
 * integer tensor is still refused. The .pth files are torch.save'd by
 * tests/fixtures/make_cnn_fixtures.py. */
static void test_num_batches_tracked(void) {
    ds_weights *w = NULL;
    ds_status st = ds_weights_load(fixture("cnn/resnet_basic.pth"), &w);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    bool none = st == DS_OK;
    for (int i = 0; none && i < ds_weights_count(w); i++) none = !strstr(ds_weights_get(w, i)->name, "num_batches_tracked");
    test_cond("a torchvision ResNet .pth with int64 num_batches_tracked loads, without those buffers",
              none && ds_weights_find(w, "bn1.running_var") && ds_weights_find(w, "layer1.0.bn2.weight") &&
                  !ds_weights_find(w, "bn1.num_batches_tracked"));
    ds_weights_free(w);
    w = NULL;
    st = ds_weights_load(fixture("cnn/resnet_basic.safetensors"), &w);
    test_cond("the same state_dict as safetensors (I64 num_batches_tracked) loads, without those buffers",
              st == DS_OK && ds_weights_find(w, "bn1.running_mean") && !ds_weights_find(w, "bn1.num_batches_tracked"));
    ds_weights_free(w);
    expect_fail("an int64 tensor not named num_batches_tracked in a .pth", fixture("cnn/int64_other.pth"),
                DS_ERR_UNSUPPORTED, "tensor 'index' is torch.LongStorage (int64)");

    static const unsigned char data[24] = {7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64};
    w = NULL;
    st = ds_weights_load(write_st("nbt.st",
                                  "{\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                                  "\"bn.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                                  data, 16, UINT64_MAX),
                         &w);
    const ds_tensor *t = st == DS_OK ? ds_weights_find(w, "bn.weight") : NULL;
    test_cond("a safetensors I64 scalar 'bn.num_batches_tracked' is skipped and the F32 tensor after it reads [1, 2]",
              t && ds_weights_count(w) == 1 && ((const float *)t->data)[0] == 1.0f && ((const float *)t->data)[1] == 2.0f);
    ds_weights_free(w);
    expect_fail("an I64 tensor with another name",
                write_st("i64.st", "{\"bn.num_batches\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}",
                         data, 8, UINT64_MAX),
                DS_ERR_UNSUPPORTED, "dtype I64");
    expect_fail("an I32 num_batches_tracked",
                write_st("i32.st",
                         "{\"bn.num_batches_tracked\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}",
                         data, 8, UINT64_MAX),
                DS_ERR_UNSUPPORTED, "dtype I32");
    expect_fail("a skipped I64 num_batches_tracked whose span is not 8 bytes",
                write_st("nbt_span.st",
                         "{\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,4]}}",
                         data, 8, UINT64_MAX),
                DS_ERR_FORMAT, "num_batches_tracked");
    expect_fail("a skipped I64 num_batches_tracked overlapping a tensor",
                write_st("nbt_overlap.st",
                         "{\"bn.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                         "\"bn.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                         data, 16, UINT64_MAX),
                DS_ERR_FORMAT, "overlap");
}

int main(void) {
    test_safetensors();
    test_pth();
    test_pth_rejects();
    test_safetensors_rejects();
    test_sha256();
    test_shared_model();
    test_num_batches_tracked();
    test_report();
}
