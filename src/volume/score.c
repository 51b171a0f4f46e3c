/* A volume scored slice by slice through a fitted model (seed: "CT and MRI
 * volumes need slice-by-slice or volumetric processing"); the optional 2.5D
 * input (neighbouring slices as the three channels) gives the backbone some
 * inter-slice context without changing it. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/volume.h"

ds_status ds_volume_score(const ds_model *m, ds_backbone *bb, const ds_volume *v, int context, double lo, double hi,
                          int batch, int n_threads, float *slice_scores, float *map, float *volume_scores) {
    if (!m || !bb || !v || !slice_scores || batch < 1 || (context != 0 && context != 1))
        return ds_set_error(DS_ERR_ARG, "ds_volume_score: bad arguments");
    const ds_model_info *in = ds_model_get_info(m);
    const int ns = ds_model_n_scorers(m), B = DS_MIN(batch, v->nz);
    const size_t N = (size_t)in->grid_h * in->grid_w, plane = (size_t)v->nx * v->ny;
    ds_image **slices = calloc((size_t)B, sizeof *slices);
    float *patch = map ? ds_alloc((size_t)B * N, sizeof(float), "ds_volume_score") : NULL;
    ds_status st = slices && (!map || patch) ? DS_OK : ds_set_error(DS_ERR_NOMEM, "ds_volume_score: out of memory");
    for (int k0 = 0; k0 < v->nz && st == DS_OK; k0 += B) {
        int nb = DS_MIN(B, v->nz - k0);
        for (int b = 0; b < nb && st == DS_OK; b++) {
            ds_image_free(slices[b]);
            slices[b] = NULL;
            st = ds_volume_slice(v, k0 + b, context, lo, hi, &slices[b]);
        }
        if (st == DS_OK)
            st = ds_model_score_images(m, bb, (const ds_image *const *)slices, nb, nb, n_threads,
                                       slice_scores + (size_t)k0 * ns, -1, patch);
        for (int b = 0; b < nb && st == DS_OK && map; b++)
            st = ds_model_anomaly_map(m, patch + (size_t)b * N, v->nx, v->ny, map + (size_t)(k0 + b) * plane);
    }
    if (st == DS_OK && volume_scores)
        for (int s = 0; s < ns; s++) {
            float best = slice_scores[s];
            for (int k = 1; k < v->nz; k++)
                if (slice_scores[(size_t)k * ns + s] > best) best = slice_scores[(size_t)k * ns + s];
            volume_scores[s] = best;
        }
    for (int b = 0; slices && b < B; b++) ds_image_free(slices[b]);
    free(slices);
    free(patch);
    return st;
}
