/* ds_weights_load on arbitrary bytes (safetensors unless it starts like a
 * zip: fuzz_pth covers those); every tensor handed out is read in full. */
#include "dinoscope/weights.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("in.safetensors", data, size);
    ds_weights *w = NULL;
    if (ds_weights_load(path, &w) != DS_OK) return 0;
    for (int i = 0; i < ds_weights_count(w); i++) {
        const ds_tensor *t = ds_weights_get(w, i);
        if (t->n_elements > (1 << 22)) continue;
        float *f = malloc(sizeof(float) * (size_t)(t->n_elements ? t->n_elements : 1));
        if (!f) abort();
        ds_tensor_to_f32(t, f);
        free(f);
        (void)ds_weights_find(w, t->name);
    }
    (void)ds_weights_metadata(w, "format");
    ds_weights_free(w);
    return 0;
}
