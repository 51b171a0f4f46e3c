/* Writes the seed model files of fuzz_model (corpus/model/): one small model
 * per scorer kind (and one with all four, calibrated), and one patchbank
 * model per compact bank representation (seed_bank_<repr>.dsm), fitted on a fixed
 * pseudo-random [6 images, 4 patches, 8 channels] feature set. Seeds only
 * need to be valid models; their values are not asserted anywhere.
 *   build-fuzz/tests/fuzz/fuzz_make_model_seeds tests/fuzz/corpus/model */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/model.h"

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    enum { NI = 6, NP = 4, D = 8 };
    static float f[NI * NP * D];
    unsigned s = 12345;
    for (int i = 0; i < NI * NP * D; i++) {
        s = s * 1103515245u + 12345u;
        f[i] = (float)((s >> 16) & 0x7fff) / 32768.0f - 0.5f;
    }
    ds_model_info info = {0};
    strcpy(info.backbone_file, "w.safetensors");
    strcpy(info.backbone_sha256, "0000000000000000000000000000000000000000000000000000000000000000");
    strcpy(info.backbone_arch, "dinov2 vit D=8 depth=1 heads=1 patch=14 reg=0 mlp");
    info.prep = ds_preprocess_defaults();
    info.prep.size = 28;
    info.n_layers = 1;
    info.grid_h = info.grid_w = 2;
    info.dim = D;
    info.n_train = NI;
    ds_scorer_params p = ds_scorer_defaults();
    p.k = 2;
    p.padim_dim = 4;
    p.coreset_ratio = 0.5;
    p.n_threads = 1;
    ds_scorer *all[4];
    ds_scorer_calibration cal[4] = {{0}};
    for (int k = 0; k < 4; k++) {
        if (ds_scorer_fit((ds_scorer_kind)k, &p, f, NI, NP, D, &all[k]) != DS_OK) {
            fprintf(stderr, "%s\n", ds_last_error());
            return 1;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/seed_%s.dsm", argv[1], ds_scorer_kind_name((ds_scorer_kind)k));
        const ds_scorer *one[1] = {all[k]};
        if (ds_model_save(path, &info, one, NULL, 1) != DS_OK) {
            fprintf(stderr, "%s\n", ds_last_error());
            return 1;
        }
        cal[k] = (ds_scorer_calibration){.has_threshold = 1, .threshold_fpr = 0.05, .threshold = 0.5f, .n_val = 3,
                                         .map_vmax = 1.5f, .has_map_threshold = k >= 2, .map_threshold = 0.7f};
    }
    char path[512];
    snprintf(path, sizeof path, "%s/seed_all_calibrated.dsm", argv[1]);
    if (ds_model_save(path, &info, (const ds_scorer *const *)all, cal, 4) != DS_OK) {
        fprintf(stderr, "%s\n", ds_last_error());
        return 1;
    }
    for (int k = 0; k < 4; k++) ds_scorer_free(all[k]);
    for (int r = DS_BANK_BF16; r <= DS_BANK_IVFPQ; r++) {
        ds_scorer *s = NULL;
        p.bank_repr = (ds_bank_repr)r;
        snprintf(path, sizeof path, "%s/seed_bank_%s.dsm", argv[1], ds_bank_repr_name((ds_bank_repr)r));
        if (ds_scorer_fit(DS_SCORER_PATCHBANK, &p, f, NI, NP, D, &s) != DS_OK ||
            ds_model_save(path, &info, (const ds_scorer *const *)&s, NULL, 1) != DS_OK) {
            fprintf(stderr, "%s\n", ds_last_error());
            return 1;
        }
        ds_scorer_free(s);
    }
    return 0;
}
