/* ds_npy_read_f32 on arbitrary bytes. */
#include "dinoscope/npy.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("in.npy", data, size);
    float *x = NULL;
    int nd = 0;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(path, &x, &nd, shape) == DS_OK) {
        size_t n = 1;
        for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
        float s = 0;
        for (size_t i = 0; i < n; i++) s += x[i]; /* every element is readable */
        __asm__ volatile("" : : "r"(s));
        free(x);
    }
    return 0;
}
