/* ds_model_load (container, JSON metadata, each scorer's parts) on arbitrary
 * bytes, then one scoring call per scorer on fixed features, so that parts
 * that pass the checks are also used. The CRC-32s (table and sections) and
 * the header's file size are recomputed here before loading when the layout
 * allows it: otherwise almost every mutation would stop at a checksum and the
 * fuzzer would never reach the sections' contents. The checksum checks
 * themselves are covered by test_scorer's corrupt-model cases. */
#include <zlib.h>

#include "dinoscope/model.h"
#include "fuzz_util.h"

static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void fix_checksums(uint8_t *b, size_t size) {
    if (size < 64 || memcmp(b, "DSCOPEMD", 8) != 0) return;
    put64(b + 24, size);
    uint32_t n = get32(b + 12);
    uint64_t table = get64(b + 16);
    if (n == 0 || n > 4096 || table < 64 || table > size || (size - table) / 128 < n) return;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *e = b + table + (size_t)i * 128;
        uint64_t off = get64(e + 104), nb = get64(e + 112);
        if (off <= size && nb <= size - off) put32(e + 120, (uint32_t)crc32(0, b + off, (uInt)nb));
    }
    put32(b + 32, (uint32_t)crc32(0, b + table, (uInt)n * 128));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write_fixed("in.dsm", data, size, fix_checksums);
    ds_model *m = NULL;
    if (ds_model_load(path, &m) != DS_OK) return 0;
    const ds_model_info *in = ds_model_get_info(m);
    int64_t N = (int64_t)in->grid_h * in->grid_w;
    if (N * in->dim <= (1 << 20)) {
        float *feats = malloc(sizeof(float) * (size_t)(N * in->dim)), *patch = malloc(sizeof(float) * (size_t)N);
        if (!feats || !patch) abort();
        for (int64_t i = 0; i < N * in->dim; i++) feats[i] = (float)((i * 7919) % 13) / 13.0f - 0.4f;
        for (int i = 0; i < ds_model_n_scorers(m); i++) {
            float score;
            (void)ds_scorer_score(ds_model_scorer(m, i), feats, N, 1, &score, patch);
        }
        free(feats);
        free(patch);
    }
    (void)ds_model_meta_json(m);
    ds_model_free(m);
    return 0;
}
