/* Large 2D images at native resolution: one image scored in overlapping
 * tiles, each resized to the model input, the tiles' maps stitched by
 * overlap averaging (sum / count, as `slide` does, src/wsi/run.c) and the
 * image score reduced over all tiles' patch scores.
 *
 * Why: a 3000 x 4000 mammogram resized to 518 x 518 puts ~8 x 8 original
 * pixels into each model pixel and ~45 x 45 into each 14 px patch token: a
 * 2-3 px microcalcification is diluted within one token (the seed's "patch
 * dilution"). Tiles at native size keep a token at 14 x 14 image pixels when
 * tile_px equals the model input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"
#include "image/image_internal.h"
#include "scorer/scorer_internal.h"

ds_tile_params ds_tile_defaults(void) {
    return (ds_tile_params){.tile_px = 0, .overlap = 0.5, .batch = 8, .n_threads = 0};
}

int ds_tile_origins(int len, int tile_px, int stride, int *origins) {
    if (len < 1 || tile_px < 1 || stride < 1) return 0;
    if (len <= tile_px) {
        if (origins) origins[0] = 0;
        return 1;
    }
    int n = 0;
    for (int o = 0; o + tile_px < len; o += stride) {
        if (origins) origins[n] = o;
        n++;
    }
    /* the last tile ends on the far edge; it may overlap its neighbour more */
    if (origins) origins[n] = len - tile_px;
    return n + 1;
}


typedef struct {
    const ds_model *m;
    const ds_tile_params *p;
    int ns, W, H;
    size_t N;                /* patches per tile */
    const int *tx, *ty;      /* origins of the tiles of this chunk */
    int tw, th;              /* tile size (the same for every tile) */
    int first;               /* global index of the chunk's first tile */
    bool maps_k[DS_MODEL_MAX_SCORERS];
    float *all_patch;        /* [ns, N] of the tile being scored */
    float *patch;            /* [ns, n_tiles, N] all tiles' patch scores */
    float *sum;              /* [ns, H, W] map sums, NULL without maps */
    float *tile_map;         /* [th, tw] */
    float best[DS_MODEL_MAX_SCORERS];
    size_t n_total;          /* tiles overall */
    ds_status st;
} tiled_state;

static int tile_sink(void *user, const ds_pipeline_item *it) {
    tiled_state *s = user;
    float sc[DS_MODEL_MAX_SCORERS];
    s->st = ds_model_score_features(s->m, it->feats, s->p->n_threads, sc, s->all_patch, NULL);
    if (s->st != DS_OK) return 1;
    const size_t t = (size_t)(s->first + it->index);
    const int x0 = s->tx[it->index], y0 = s->ty[it->index];
    for (int k = 0; k < s->ns; k++) {
        if (t == 0 || sc[k] > s->best[k] || sc[k] != sc[k]) s->best[k] = sc[k];
        if (!ds_scorer_has_patch_scores(ds_model_scorer(s->m, k))) continue;
        const float *pk = s->all_patch + (size_t)k * s->N;
        memcpy(s->patch + ((size_t)k * s->n_total + t) * s->N, pk, sizeof(float) * s->N);
        if (!s->sum || !s->maps_k[k]) continue;
        s->st = ds_model_anomaly_map(s->m, pk, s->tw, s->th, s->tile_map);
        if (s->st != DS_OK) return 1;
        float *dst = s->sum + (size_t)k * s->W * s->H;
        for (int y = 0; y < s->th; y++) {
            float *row = dst + (size_t)(y0 + y) * s->W + x0;
            const float *src = s->tile_map + (size_t)y * s->tw;
            for (int x = 0; x < s->tw; x++) row[x] += src[x];
        }
    }
    return 0;
}

ds_status ds_model_score_tiled(const ds_model *m, ds_backbone *bb, const ds_image *img, const ds_tile_params *p,
                               float *scores, float *maps, int *n_tiles) {
    if (!m || !bb || !img || !img->pixels || !p || !scores)
        return ds_set_error(DS_ERR_ARG, "ds_model_score_tiled: NULL argument");
    if (p->tile_px < 14 || !(p->overlap >= 0 && p->overlap <= 0.95) || p->batch < 1 || img->channels != 3)
        return ds_set_error(DS_ERR_ARG, "ds_model_score_tiled: bad parameters (tile %d >= 14 px, overlap %g in [0, 0.95], "
                                        "batch %d >= 1, %d channels, expected 3)",
                            p->tile_px, p->overlap, p->batch, img->channels);
    ds_status st = ds_model_check_backbone(m, bb);
    if (st != DS_OK) return st;
    const ds_model_info *in = ds_model_get_info(m);
    const int W = img->width, H = img->height, ns = ds_model_n_scorers(m);
    const int stride = (int)DS_MAX(1L, lround(p->tile_px * (1.0 - p->overlap)));
    const int nx = ds_tile_origins(W, p->tile_px, stride, NULL), ny = ds_tile_origins(H, p->tile_px, stride, NULL);
    const int tw = DS_MIN(W, p->tile_px), th = DS_MIN(H, p->tile_px);
    tiled_state s = {.m = m, .p = p, .ns = ns, .W = W, .H = H, .N = (size_t)in->grid_h * in->grid_w,
                     .tw = tw, .th = th, .n_total = (size_t)nx * ny};
    const int B = DS_MIN(p->batch, (int)s.n_total);
    int *ox = malloc(sizeof(int) * (size_t)nx), *oy = malloc(sizeof(int) * (size_t)ny);
    int *cx = calloc((size_t)W, sizeof(int)), *cy = calloc((size_t)H, sizeof(int));
    int *tx = malloc(sizeof(int) * (size_t)B), *ty = malloc(sizeof(int) * (size_t)B);
    ds_image **tiles = calloc((size_t)B, sizeof *tiles);
    size_t n_patch;
    bool ok = ox && oy && cx && cy && tx && ty && tiles && ds_mul_size((size_t)ns * s.n_total, s.N, &n_patch);
    s.all_patch = ok ? ds_alloc((size_t)ns * s.N, sizeof(float), "ds_model_score_tiled") : NULL;
    s.patch = s.all_patch ? ds_alloc(n_patch, sizeof(float), "ds_model_score_tiled: patch scores") : NULL;
    bool want_maps = false;
    for (int k = 0; k < ns; k++) want_maps |= s.maps_k[k] = maps && ds_scorer_has_patch_scores(ds_model_scorer(m, k));
    if (s.patch && want_maps) {
        s.sum = ds_calloc((size_t)ns * W * H, sizeof(float), "ds_model_score_tiled: maps");
        s.tile_map = s.sum ? ds_alloc((size_t)tw * th, sizeof(float), "ds_model_score_tiled: tile map") : NULL;
    }
    for (int b = 0; ok && b < B; b++) ok = (tiles[b] = ds_image_alloc(tw, th, 3)) != NULL;
    if (!ok || !s.patch || (want_maps && !s.tile_map)) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_model_score_tiled: out of memory for %zu tiles of %dx%d", s.n_total, tw, th);
        goto done;
    }
    ds_tile_origins(W, p->tile_px, stride, ox);
    ds_tile_origins(H, p->tile_px, stride, oy);
    for (int i = 0; i < nx; i++)
        for (int x = 0; x < tw; x++) cx[ox[i] + x]++;
    for (int j = 0; j < ny; j++)
        for (int y = 0; y < th; y++) cy[oy[j] + y]++;

    ds_pipeline_params pp = ds_pipeline_defaults();
    pp.size = in->prep.size;
    pp.n_layers = in->n_layers;
    pp.batch = B;
    pp.prep = in->prep;
    /* tiles in raster order, B at a time (a fixed order: deterministic sums) */
    for (size_t t0 = 0; t0 < s.n_total && st == DS_OK; t0 += (size_t)B) {
        int nb = (int)DS_MIN((size_t)B, s.n_total - t0);
        for (int b = 0; b < nb; b++) {
            size_t t = t0 + (size_t)b;
            tx[b] = ox[t % (size_t)nx];
            ty[b] = oy[t / (size_t)nx];
            for (int y = 0; y < th; y++)
                memcpy(tiles[b]->pixels + (size_t)y * tw * 3,
                       img->pixels + ((size_t)(ty[b] + y) * W + (size_t)tx[b]) * 3, (size_t)tw * 3);
        }
        s.tx = tx, s.ty = ty, s.first = (int)t0;
        st = ds_pipeline_run(bb, &pp, NULL, (const ds_image *const *)tiles, nb, tile_sink, &s, NULL);
        if (st == DS_ERR_STOPPED) st = s.st;
    }
    if (st != DS_OK) goto done;

    for (int k = 0; k < ns; k++) {
        const ds_scorer *sc = ds_model_scorer(m, k);
        if (!ds_scorer_has_patch_scores(sc)) {
            scores[k] = s.best[k];
            continue;
        }
        ds_reduce r = DS_REDUCE_MAX; /* padim: the max of the map */
        ds_scorer_params sp;
        if (ds_scorer_get_kind(sc) == DS_SCORER_PATCHBANK && ds_scorer_params_of(sc, &sp) == DS_OK) r = sp.reduce;
        float *pk = s.patch + (size_t)k * s.n_total * s.N; /* our copy: reordered in place */
        scores[k] = ds_reduce_patch_scores(pk, (int64_t)(s.n_total * s.N), r, pk);
    }
    if (want_maps) {
        for (int k = 0; k < ns; k++) {
            if (!s.maps_k[k]) continue;
            const float *sum = s.sum + (size_t)k * W * H;
            float *dst = maps + (size_t)k * W * H;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    dst[(size_t)y * W + x] = sum[(size_t)y * W + x] / (float)(cx[x] * cy[y]);
        }
    }
    if (n_tiles) *n_tiles = (int)s.n_total;
done:
    for (int b = 0; tiles && b < B; b++) ds_image_free(tiles[b]);
    free(tiles);
    free(ox), free(oy), free(cx), free(cy), free(tx), free(ty);
    free(s.all_patch), free(s.patch), free(s.sum), free(s.tile_map);
    return st;
}
