/* The slide checkpoint reader (ds_ckpt_open with resume, then reading the
 * kept records back as a resumed run does). The run's shape is fixed here:
 * 2 scores + 3 patch values per tile, batches of 4, 10 tiles. Record CRCs are
 * recomputed before opening when a record's header is the expected one, so
 * that the fuzzer gets past them (test_wsi covers torn and corrupt records). */
#include <zlib.h>

#include "core/internal.h"
#include "fuzz_util.h"
#include "wsi/wsi_internal.h"

enum { N_SCORES = 2, N_PATCH = 3, BATCH = 4, N_TILES = 10 };
static const char HEADER[] = "slide=fuzz.svs\ntile=512\nlevel=0\n";
static const char SOFT[] = "threads=1\n";

static void fix_crcs(uint8_t *b, size_t size) {
    if (size < 12 || memcmp(b, "DSWSICK1", 8) != 0) return;
    uint32_t len;
    memcpy(&len, b + 8, 4);
    size_t pos = 12 + (size_t)len;
    for (int rec = 0; rec < (N_TILES + BATCH - 1) / BATCH && pos + 16 <= size; rec++) {
        uint32_t head[4];
        memcpy(head, b + pos, 16);
        int n = DS_MIN(BATCH, N_TILES - rec * BATCH);
        if (head[3] != (uint32_t)n) return;
        size_t body = 16 + (size_t)n * (N_SCORES + N_PATCH) * 4;
        if (pos + body + 4 > size) return;
        uint32_t crc = (uint32_t)crc32(0, b + pos, (uInt)body);
        memcpy(b + pos + body, &crc, 4);
        pos += body + 4;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write_fixed("checkpoint.bin", data, size, fix_crcs);
    ds_ckpt *c = NULL;
    int64_t n_done = 0;
    bool truncated, soft_differs;
    if (ds_ckpt_open(path, HEADER, SOFT, 1, N_SCORES, N_PATCH, BATCH, N_TILES, &c, &n_done, &truncated,
                     &soft_differs) != DS_OK)
        return 0;
    if (n_done < 0 || n_done > (N_TILES + BATCH - 1) / BATCH) __builtin_trap();
    float vals[N_SCORES + N_PATCH];
    if (ds_ckpt_rewind(c) == DS_OK) {
        int64_t tiles = DS_MIN((int64_t)N_TILES, n_done * BATCH);
        for (int64_t t = 0; t < tiles; t++)
            if (ds_ckpt_next(c, vals) != DS_OK) __builtin_trap(); /* kept records must read back */
    }
    ds_ckpt_close(c);
    return 0;
}
