/* .pth (zip + pickle) through ds_weights_load. Two kinds of input:
 *   - starting with "PK": the whole file (the zip reader and every entry);
 *   - anything else: the bytes of data.pkl, which this target wraps into a
 *     torch.save-shaped zip (archive/data.pkl, archive/version,
 *     archive/byteorder, storages archive/data/0..3 of 1024 bytes each), so
 *     that mutations reach the pickle machine instead of failing the zip's
 *     CRCs. */
#include <zip.h>

#include "dinoscope/weights.h"
#include "fuzz_util.h"

static int add(zip_t *za, const char *name, const void *buf, size_t n) {
    zip_source_t *src = zip_source_buffer(za, buf, n, 0);
    if (!src) return -1;
    zip_int64_t i = zip_file_add(za, name, src, ZIP_FL_OVERWRITE);
    if (i < 0) {
        zip_source_free(src);
        return -1;
    }
    return zip_set_file_compression(za, (zip_uint64_t)i, ZIP_CM_STORE, 0); /* fast: no deflate */
}

static void wrap_pickle(const char *path, const uint8_t *pkl, size_t n) {
    static unsigned char storage[1024];
    static int init;
    if (!init) {
        for (size_t i = 0; i < sizeof storage; i++) storage[i] = (unsigned char)(i * 37 + 11);
        init = 1;
    }
    int err;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!za) abort();
    static const char *const keys[] = {"archive/data/0", "archive/data/1", "archive/data/2", "archive/data/3"};
    if (add(za, "archive/data.pkl", pkl, n) || add(za, "archive/version", "3\n", 2) ||
        add(za, "archive/byteorder", "little", 6))
        abort();
    for (int i = 0; i < 4; i++)
        if (add(za, keys[i], storage, sizeof storage)) abort();
    if (zip_close(za) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path;
    if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
        path = fz_write("in.pth", data, size);
    } else {
        path = fz_path("in.pth");
        if (size == 0) return 0;
        wrap_pickle(path, data, size);
    }
    ds_weights *w = NULL;
    if (ds_weights_load(path, &w) != DS_OK) return 0;
    for (int i = 0; i < ds_weights_count(w); i++) {
        const ds_tensor *t = ds_weights_get(w, i);
        float *f = malloc(sizeof(float) * (size_t)(t->n_elements ? t->n_elements : 1));
        if (!f) abort();
        ds_tensor_to_f32(t, f);
        free(f);
    }
    ds_weights_free(w);
    return 0;
}
