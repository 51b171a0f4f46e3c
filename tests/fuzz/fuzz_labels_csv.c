/* labels.csv through ds_image_list_expand (the CSV reader of fit/score/eval). */
#include "dinoscope/image.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_write("labels.csv", data, size);
    const char *args[1] = {path};
    ds_image_list *l = NULL;
    if (ds_image_list_expand(args, 1, 0, &l) != DS_OK) return 0;
    size_t total = 0;
    for (int i = 0; i < l->n; i++) {
        total += strlen(l->paths[i]);
        if (l->splits[i]) total += strlen(l->splits[i]);
        if (l->masks[i]) total += strlen(l->masks[i]);
    }
    __asm__ volatile("" : : "r"(total));
    ds_image_list_free(l);
    return 0;
}
