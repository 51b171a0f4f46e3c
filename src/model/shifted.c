/* A finer patch grid from shifted inputs: the model input scored as it is
 * and shifted by half a patch (7 px for DINOv2's 14) down, right and both,
 * the four patch-score grids averaged on the grid of half-patch cells.
 *
 * Why: a finding of 2-3 px that straddles a token border, or sits in a
 * token with much normal tissue, moves only part of one token's feature
 * (the seed's "patch dilution"); the half-shifted grids give it tokens
 * centred nearer to it, and the map's cells become half a patch wide. This
 * is test-time translation averaging (as "dense" or "shift-and-stitch"
 * evaluation of a strided network, Long et al. 2015, FCN, sec. 3.2),
 * without changing the backbone. */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"
#include "image/image_internal.h"
#include "scorer/scorer_internal.h"

typedef struct {
    const ds_model *m;
    int n_threads, ns, gh, gw;
    float *patch;  /* [4, ns, gh * gw]: shift s = 2 dy + dx */
    float *scores; /* [ns] of the unshifted input */
    ds_status st;
} shift_state;

static int shift_sink(void *user, const ds_pipeline_item *it) {
    shift_state *s = user;
    float sc[DS_MODEL_MAX_SCORERS];
    s->st = ds_model_score_features(s->m, it->feats, s->n_threads, sc,
                                    s->patch + (size_t)it->index * s->ns * s->gh * s->gw, NULL);
    if (s->st != DS_OK) return 1;
    if (it->index == 0) memcpy(s->scores, sc, sizeof(float) * (size_t)s->ns);
    return 0;
}

/* half a patch in input pixels: S / grid / 2 (7 for DINOv2 at 518, 16 for MobileNetV2 at 224) */
static int shift_px(const ds_model *m) {
    const ds_model_info *in = ds_model_get_info(m);
    return in->prep.size / in->grid_w / 2;
}

/* The fine grid [2 gh, 2 gw] of scorer k: cell (Y, X) covers input pixels
 * [Y h, (Y + 1) h) x [X h, (X + 1) h) with h = P / 2; the input shifted by
 * (d h, e h) shows content y + d h at pixel y, so its token r covers cells
 * 2r + d and 2r + d + 1. Each cell is the mean of the tokens covering it
 * (4, or 1-2 on the first row and column, which the shifted inputs do not
 * see). */
static void fine_grid(const shift_state *s, int k, float *fine) {
    const int gh = s->gh, gw = s->gw, FH = 2 * gh, FW = 2 * gw;
    for (int Y = 0; Y < FH; Y++)
        for (int X = 0; X < FW; X++) {
            double sum = 0;
            int n = 0;
            for (int d = 0; d < 2; d++)
                for (int e = 0; e < 2; e++) {
                    int r = (Y - d) >> 1, c = (X - e) >> 1; /* floor: Y - d = -1 gives -1 */
                    if (r < 0 || c < 0 || r >= gh || c >= gw) continue;
                    sum += s->patch[((size_t)(2 * d + e) * s->ns + k) * gh * gw + (size_t)r * gw + c];
                    n++;
                }
            fine[(size_t)Y * FW + X] = (float)(sum / n);
        }
}

ds_status ds_model_score_shifted(const ds_model *m, ds_backbone *bb, const ds_image *img, int n_threads, float *scores,
                                 float *maps) {
    if (!m || !bb || !img || !img->pixels || !scores)
        return ds_set_error(DS_ERR_ARG, "ds_model_score_shifted: NULL argument");
    ds_status st = ds_model_check_backbone(m, bb);
    if (st != DS_OK) return st;
    const ds_model_info *in = ds_model_get_info(m);
    const int S = in->prep.size, h = shift_px(m), ns = ds_model_n_scorers(m);
    if (h < 1 || in->grid_h * 2 * h > S || in->grid_w * 2 * h > S)
        return ds_set_error(DS_ERR_ARG, "ds_model_score_shifted: input %d px and grid %dx%d leave no half patch", S,
                            in->grid_w, in->grid_h);
    shift_state s = {.m = m, .n_threads = n_threads, .ns = ns, .gh = in->grid_h, .gw = in->grid_w};
    const size_t N = (size_t)s.gh * s.gw, NF = 4 * N;
    ds_image *x = NULL, *sh[4] = {0};
    float sc0[DS_MODEL_MAX_SCORERS], *fine = NULL;
    s.scores = sc0;
    s.patch = ds_alloc(4 * (size_t)ns * N, sizeof(float), "ds_model_score_shifted");
    fine = s.patch ? ds_alloc(NF, sizeof(float), "ds_model_score_shifted") : NULL;
    if (!fine) {
        st = DS_ERR_NOMEM;
        goto done;
    }
    /* the model's preprocessing once (stain normalisation on the original,
     * resize to S x S), then the shifts on what the network sees */
    ds_preprocess_params pr = in->prep;
    if ((st = ds_preprocess_image(img, &pr, &x)) != DS_OK) goto done;
    for (int t = 0; t < 4; t++) {
        const int dy = (t >> 1) * h, dx = (t & 1) * h;
        if (!(sh[t] = ds_image_alloc(S, S, 3))) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        for (int y = 0; y < S; y++) /* content moves up/left by the shift; the far edge is replicated */
            for (int xx = 0; xx < S; xx++)
                memcpy(sh[t]->pixels + ((size_t)y * S + xx) * 3,
                       x->pixels + ((size_t)DS_MIN(y + dy, S - 1) * S + DS_MIN(xx + dx, S - 1)) * 3, 3);
    }
    ds_pipeline_params pp = ds_pipeline_defaults();
    pp.size = S;
    pp.n_layers = in->n_layers;
    pp.batch = 4;
    pp.prep = in->prep;
    pp.prep.stain = DS_STAIN_NONE; /* applied above */
    st = ds_pipeline_run(bb, &pp, NULL, (const ds_image *const *)sh, 4, shift_sink, &s, NULL);
    if (st == DS_ERR_STOPPED) st = s.st;
    for (int k = 0; k < ns && st == DS_OK; k++) {
        const ds_scorer *sc = ds_model_scorer(m, k);
        if (!ds_scorer_has_patch_scores(sc)) {
            scores[k] = sc0[k]; /* image-level scorers: the input as it is */
            continue;
        }
        fine_grid(&s, k, fine);
        if (maps) {
            st = ds_anomaly_map(fine, 2 * s.gh, 2 * s.gw, S, in->map_sigma, img->width, img->height,
                                maps + (size_t)k * img->width * img->height);
            if (st != DS_OK) break;
        }
        ds_reduce r = DS_REDUCE_MAX; /* padim: the max of the map */
        ds_scorer_params sp;
        if (ds_scorer_get_kind(sc) == DS_SCORER_PATCHBANK && ds_scorer_params_of(sc, &sp) == DS_OK) r = sp.reduce;
        scores[k] = ds_reduce_patch_scores(fine, (int64_t)NF, r, fine);
    }
done:
    ds_image_free(x);
    for (int t = 0; t < 4; t++) ds_image_free(sh[t]);
    free(s.patch);
    free(fine);
    return st;
}
