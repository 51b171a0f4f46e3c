/* Images -> preprocessing -> backbone -> scorers, for callers that hold
 * images in memory (slides, evaluation). */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"

ds_status ds_model_score_images(const ds_model *m, ds_backbone *bb, const ds_image *const *imgs, int n, int batch,
                                int n_threads, float *scores, float *patch) {
    if (!m || !bb || (!imgs && n > 0) || n < 0 || batch < 1 || !scores)
        return ds_set_error(DS_ERR_ARG, "ds_model_score_images: bad arguments");
    const ds_model_info *in = ds_model_get_info(m);
    if (strcmp(ds_backbone_describe(bb), in->backbone_arch) != 0)
        return ds_set_error(DS_ERR_MISMATCH, "ds_model_score_images: backbone is a %s, the model was fitted on a %s",
                            ds_backbone_describe(bb), in->backbone_arch);
    int S = in->prep.size, gh, gw, D;
    ds_status st = ds_backbone_grid(bb, S, S, &gh, &gw, &D);
    if (st != DS_OK) return st;
    if (gh != in->grid_h || gw != in->grid_w || D != in->dim)
        return ds_set_error(DS_ERR_MISMATCH, "ds_model_score_images: backbone grid %dx%dx%d, model %dx%dx%d", gh, gw, D,
                            in->grid_h, in->grid_w, in->dim);
    size_t N = (size_t)gh * gw, per_in = (size_t)3 * S * S;
    int ns = ds_model_n_scorers(m), B = DS_MIN(batch, DS_MAX(n, 1));
    float *input = ds_alloc((size_t)B * per_in, sizeof(float), "ds_model_score_images");
    float *feats = ds_alloc((size_t)B * N * D, sizeof(float), "ds_model_score_images");
    /* the maps come from the first scorer that gives patch scores */
    int map_k = -1;
    for (int k = 0; k < ns && map_k < 0; k++)
        if (ds_scorer_has_patch_scores(ds_model_scorer(m, k))) map_k = k;
    if (!input || !feats) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    for (int i0 = 0; i0 < n && st == DS_OK; i0 += B) {
        int nb = DS_MIN(B, n - i0);
        for (int b = 0; b < nb && st == DS_OK; b++) {
            ds_image *ready = NULL;
            st = ds_preprocess_image(imgs[i0 + b], &in->prep, &ready);
            if (st == DS_OK) ds_backbone_normalize(bb, ready, input + (size_t)b * per_in);
            ds_image_free(ready);
        }
        if (st == DS_OK) st = ds_backbone_forward(bb, input, nb, S, S, in->n_layers, feats, NULL);
        for (int b = 0; b < nb && st == DS_OK; b++) {
            float *pp = patch ? patch + (size_t)(i0 + b) * N : NULL;
            if (pp) memset(pp, 0, sizeof(float) * N);
            for (int k = 0; k < ns && st == DS_OK; k++) {
                const ds_scorer *sc = ds_model_scorer(m, k);
                st = ds_scorer_score(sc, feats + (size_t)b * N * D, (int64_t)N, n_threads, &scores[(size_t)(i0 + b) * ns + k],
                                     k == map_k ? pp : NULL);
            }
        }
    }
done:
    free(input);
    free(feats);
    return st;
}
