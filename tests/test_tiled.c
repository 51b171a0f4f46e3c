/* Tiled scoring of large images (src/model/tiled.c), and volumes scored
 * slice by slice (src/volume/score.c) with the same model. The model is fitted
 * here on synthetic images with the tiny random DINOv2 of the fixtures
 * (vit/plain.safetensors; its forward pass is checked against PyTorch in
 * test_vit). The reference for the tiled outputs is built in this file from
 * the whole-image calls on each tile crop: ds_model_score_images and
 * ds_model_anomaly_map (checked against numpy/torch in test_scorer), summed
 * and divided by the per-pixel tile count written out here, i.e. the
 * overlap averaging of `slide`. Tolerance 1e-5 relative (float sums in a
 * different order). Shifted scoring (src/model/shifted.c): the reference
 * scores the four shifted copies built here with ds_model_score_images and
 * scatters each token's score onto the 2 x 2 half-patch cells it covers,
 * dividing by the number of tokens per cell. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/backbone.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"
#include "dinoscope/volume.h"
#include "test.h"

enum { S = 56 };

/* A deterministic textured image: gradients plus a few bright squares. */
static ds_image *make_image(int w, int h, unsigned seed) {
    ds_image *img = ds_image_create(w, h, 3);
    uint32_t r = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            r = r * 1664525u + 1013904223u;
            for (int c = 0; c < 3; c++)
                img->pixels[((size_t)y * w + x) * 3 + c] = (uint8_t)((x * 3 + y * 2 + c * 40 + (r >> 28)) & 255);
        }
    for (int q = 0; q < 3; q++) {
        int x0 = (int)((seed * 37 + q * 53) % (unsigned)(w - 8)), y0 = (int)((seed * 11 + q * 29) % (unsigned)(h - 8));
        for (int y = y0; y < y0 + 6; y++)
            for (int x = x0; x < x0 + 6; x++) memset(img->pixels + ((size_t)y * w + x) * 3, 250, 3);
    }
    return img;
}

typedef struct {
    float *feats;
    size_t row;
} collect;
static int collect_sink(void *u, const ds_pipeline_item *it) {
    collect *c = u;
    memcpy(c->feats + (size_t)it->index * c->row, it->feats, sizeof(float) * c->row);
    return 0;
}

static ds_image *crop(const ds_image *img, int x0, int y0, int w, int h) {
    ds_image *t = ds_image_create(w, h, 3);
    for (int y = 0; y < h; y++)
        memcpy(t->pixels + (size_t)y * w * 3, img->pixels + ((size_t)(y0 + y) * img->width + x0) * 3, (size_t)w * 3);
    return t;
}

static double rel_diff(const float *a, const float *b, size_t n) {
    double m = 0, r = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
        if (fabs(b[i]) > r) r = fabs(b[i]);
    }
    return m / r;
}

int main(void) {
    /* the tile grid */
    int o[16];
    int n = ds_tile_origins(100, 40, 20, o);
    test_cond("origins of 40 px tiles at stride 20 over 100 px: 0 20 40 60",
              n == 4 && o[0] == 0 && o[1] == 20 && o[2] == 40 && o[3] == 60);
    n = ds_tile_origins(110, 40, 20, o);
    test_cond("over 110 px the last tile is aligned to the edge: 0 20 40 60 70",
              n == 5 && o[3] == 60 && o[4] == 70);
    n = ds_tile_origins(30, 40, 20, o);
    test_cond("an axis shorter than the tile is one tile at 0", n == 1 && o[0] == 0);
    test_cond("bad sizes give 0 tiles", ds_tile_origins(0, 40, 20, NULL) == 0 && ds_tile_origins(10, 4, 0, NULL) == 0);

    ds_backbone *bb = NULL;
    if (ds_backbone_load(fixture("vit/plain.safetensors"), &(ds_backbone_params){0}, &bb) != DS_OK) {
        printf("backbone: %s\n", ds_last_error());
        return 1;
    }
    int gh, gw, D;
    ds_backbone_grid(bb, S, S, &gh, &gw, &D);
    const size_t N = (size_t)gh * gw;

    /* fit knn + patchbank (top1pct) + padim (max) on 6 normal 56 px images */
    enum { NT = 6 };
    ds_image *train[NT];
    for (int i = 0; i < NT; i++) train[i] = make_image(S, S, 100 + i);
    collect c = {malloc(sizeof(float) * NT * N * D), N * D};
    ds_pipeline_params pp = ds_pipeline_defaults();
    pp.size = S;
    pp.n_layers = 1;
    pp.batch = 3;
    ds_status st = ds_pipeline_run(bb, &pp, NULL, (const ds_image *const *)train, NT, collect_sink, &c, NULL);
    ds_scorer *sc[3] = {0};
    ds_scorer_params sp = ds_scorer_defaults();
    sp.k = 2;
    sp.coreset_ratio = 1.0;
    if (st == DS_OK) st = ds_scorer_fit(DS_SCORER_KNN, &sp, c.feats, NT, (int64_t)N, D, &sc[0]);
    sp.reduce = DS_REDUCE_TOP1PCT;
    sp.padim_dim = 32;
    if (st == DS_OK) st = ds_scorer_fit(DS_SCORER_PATCHBANK, &sp, c.feats, NT, (int64_t)N, D, &sc[1]);
    if (st == DS_OK) st = ds_scorer_fit(DS_SCORER_PADIM, &sp, c.feats, NT, (int64_t)N, D, &sc[2]);
    ds_model_info info = {0};
    snprintf(info.backbone_file, sizeof info.backbone_file, "%s", fixture("vit/plain.safetensors"));
    snprintf(info.backbone_arch, sizeof info.backbone_arch, "%s", ds_backbone_describe(bb));
    memset(info.backbone_sha256, '0', 64);
    info.prep = ds_preprocess_defaults();
    info.prep.size = S;
    info.n_layers = 1;
    info.grid_h = gh, info.grid_w = gw, info.dim = D;
    info.n_train = NT;
    info.map_sigma = 4;
    char path[1024];
    snprintf(path, sizeof path, "%s/tiled_model.dsm", test_env("DS_TMP", "/tmp"));
    char mk[1100];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", test_env("DS_TMP", "/tmp"));
    if (system(mk) != 0) return 1;
    ds_model *m = NULL;
    if (st == DS_OK) st = ds_model_save(path, &info, (const ds_scorer *const *)sc, NULL, 3);
    if (st == DS_OK) st = ds_model_load(path, &m);
    test_cond("a model of knn + patch bank + padim is fitted and loaded", st == DS_OK && m);
    if (st != DS_OK) {
        printf("     %s\n", ds_last_error());
        return 1;
    }
    const int ns = 3;

    /* one tile: the whole image */
    ds_image *small = make_image(50, 40, 7);
    float s_tiled[3], s_whole[3];
    float *map_t = calloc((size_t)ns * 50 * 40, sizeof(float)), *map_w = malloc(sizeof(float) * 50 * 40);
    float *patch = malloc(sizeof(float) * N);
    ds_tile_params tp = ds_tile_defaults();
    tp.tile_px = 64;
    int nt = 0;
    st = ds_model_score_tiled(m, bb, small, &tp, s_tiled, map_t, &nt);
    ds_status st2 = ds_model_score_images(m, bb, (const ds_image *const *)&small, 1, 1, 0, s_whole, 1, patch);
    if (st2 == DS_OK) st2 = ds_model_anomaly_map(m, patch, 50, 40, map_w);
    test_cond("an image within one tile is one tile", st == DS_OK && nt == 1);
    test_cond("... and its scores equal the whole-image scores",
              st == DS_OK && st2 == DS_OK && rel_diff(s_tiled, s_whole, 3) < 1e-6);
    test_cond("... and its map equals the whole-image map",
              st == DS_OK && rel_diff(map_t + (size_t)1 * 50 * 40, map_w, 50 * 40) < 1e-6);

    /* a 150 x 110 image in 56 px tiles at overlap 0.5 (stride 28) */
    const int W = 150, H = 110, T = 56, STRIDE = 28;
    ds_image *big = make_image(W, H, 9);
    float *maps = calloc((size_t)ns * W * H, sizeof(float));
    tp.tile_px = T;
    tp.overlap = 0.5;
    tp.batch = 4;
    float s_big[3];
    st = ds_model_score_tiled(m, bb, big, &tp, s_big, maps, &nt);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    /* the reference: origins 0, 28, 56, 84 and the edge tile at 94 (x); 0, 28, 54 (y) */
    const int ox[] = {0, 28, 56, 84, 94}, oy[] = {0, 28, 54};
    (void)STRIDE;
    test_cond("the image is covered by 5 x 3 tiles", st == DS_OK && nt == 15);
    float *sum = calloc((size_t)W * H, sizeof(float)), *cnt = calloc((size_t)W * H, sizeof(float));
    float *tmap = malloc(sizeof(float) * T * T);
    float *allp = malloc(sizeof(float) * 15 * N);
    float best_knn = -INFINITY, best_pb = -INFINITY;
    int t = 0;
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 5; i++, t++) {
            ds_image *tile = crop(big, ox[i], oy[j], T, T);
            float s3[3];
            ds_model_score_images(m, bb, (const ds_image *const *)&tile, 1, 1, 0, s3, 1, patch);
            ds_model_anomaly_map(m, patch, T, T, tmap);
            memcpy(allp + (size_t)t * N, patch, sizeof(float) * N);
            best_knn = fmaxf(best_knn, s3[0]);
            best_pb = fmaxf(best_pb, s3[2]);
            for (int y = 0; y < T; y++)
                for (int x = 0; x < T; x++) {
                    sum[(size_t)(oy[j] + y) * W + ox[i] + x] += tmap[y * T + x];
                    cnt[(size_t)(oy[j] + y) * W + ox[i] + x] += 1;
                }
            ds_image_free(tile);
        }
    for (size_t q = 0; q < (size_t)W * H; q++) sum[q] /= cnt[q];
    test_cond("the stitched map is the per-pixel mean of the tiles' maps (overlap averaging)",
              st == DS_OK && rel_diff(maps + (size_t)1 * W * H, sum, (size_t)W * H) < 1e-5);
    test_cond("the knn score is the max over tiles", st == DS_OK && fabsf(s_big[0] - best_knn) <= 1e-6f * fabsf(best_knn));
    test_cond("the padim score is the max patch score over all tiles",
              st == DS_OK && fabsf(s_big[2] - best_pb) <= 1e-6f * fabsf(best_pb));
    /* top 1%: int(0.01 * 15 N) largest of all tiles' patch-bank patch scores */
    size_t n_all = 15 * N, n_top = (size_t)(0.01 * (double)n_all);
    double top = 0;
    for (size_t k = 0; k < n_top; k++) { /* selection by repeated max: slow but plain */
        size_t arg = 0;
        for (size_t q = 1; q < n_all; q++)
            if (allp[q] > allp[arg]) arg = q;
        top += allp[arg];
        allp[arg] = -INFINITY;
    }
    top /= (double)(n_top ? n_top : 1);
    printf("     tiled %.9g reference %.9g (n_top %zu)\n", s_big[1], top, n_top);
    test_cond("the patch-bank (top1pct) score is the mean of the top 1% patch scores over all tiles",
              st == DS_OK && n_top > 0 && fabs(s_big[1] - top) <= 1e-5 * fabs(top));
    test_cond("knn gives no map (its row is untouched)", maps[0] == 0 && maps[(size_t)W * H - 1] == 0);

    tp.tile_px = 8;
    ds_image_load_params dummy = {0};
    (void)dummy;
    test_cond("a tile below 14 px is refused", ds_model_score_tiled(m, bb, big, &tp, s_big, NULL, NULL) == DS_ERR_ARG);
    tp.tile_px = 56;
    tp.overlap = 0.99;
    test_cond("an overlap above 0.95 is refused", ds_model_score_tiled(m, bb, big, &tp, s_big, NULL, NULL) == DS_ERR_ARG);

    /* a volume, slice by slice (2.5D): each slice's scores and map are those
     * of that slice scored as an image */
    {
        ds_volume *v = NULL;
        double lo = 0, hi = 0;
        ds_status vs = ds_volume_load(fixture("volume/vol_int16.nii.gz"), &v);
        if (vs == DS_OK) vs = ds_volume_window(v, 0.5, 99.5, &lo, &hi);
        float *ss = vs == DS_OK ? malloc(sizeof(float) * (size_t)v->nz * ns) : NULL;
        float *vm = vs == DS_OK ? malloc(sizeof(float) * (size_t)v->nz * v->nx * v->ny) : NULL;
        float vol[3];
        if (vs == DS_OK) vs = ds_volume_score(m, bb, v, 1, lo, hi, 4, 0, ss, vm, vol);
        test_cond("a 6-slice volume is scored slice by slice", vs == DS_OK);
        bool same = vs == DS_OK;
        float best0 = -INFINITY;
        float *sm = vs == DS_OK ? malloc(sizeof(float) * (size_t)v->nx * v->ny) : NULL;
        for (int k = 0; same && k < v->nz; k++) {
            ds_image *sl = NULL;
            float s3[3];
            same = ds_volume_slice(v, k, 1, lo, hi, &sl) == DS_OK &&
                   ds_model_score_images(m, bb, (const ds_image *const *)&sl, 1, 1, 0, s3, -1, patch) == DS_OK &&
                   ds_model_anomaly_map(m, patch, v->nx, v->ny, sm) == DS_OK && rel_diff(ss + (size_t)k * ns, s3, 3) < 1e-6 &&
                   rel_diff(vm + (size_t)k * v->nx * v->ny, sm, (size_t)v->nx * v->ny) < 1e-6;
            best0 = fmaxf(best0, s3[0]);
            ds_image_free(sl);
        }
        test_cond("... each slice's scores and map equal that 2.5D slice scored as an image", same);
        test_cond("... and the volume score is the max over slices", same && vol[0] == best0);
        free(ss), free(vm), free(sm);
        ds_volume_free(v);
    }

    /* --stride-shift: an S x S image (the preprocessing is then the identity) */
    {
        ds_image *img = make_image(S, S, 21);
        const int h = 7, FH = 2 * gh, FW = 2 * gw;
        float s_sh[3], *maps_sh = calloc((size_t)ns * S * S, sizeof(float));
        ds_status ss = ds_model_score_shifted(m, bb, img, 0, s_sh, maps_sh);
        if (ss != DS_OK) printf("     %s\n", ds_last_error());
        double *fsum[3], *fcnt = calloc((size_t)FH * FW, sizeof(double));
        for (int k = 0; k < 3; k++) fsum[k] = calloc((size_t)FH * FW, sizeof(double));
        float s_unshifted[3] = {0}, *pk = malloc(sizeof(float) * N);
        for (int d = 0; d < 2; d++)
            for (int e = 0; e < 2; e++) {
                ds_image *sh = ds_image_create(S, S, 3);
                for (int y = 0; y < S; y++)
                    for (int x = 0; x < S; x++) {
                        int sy = y + d * h < S ? y + d * h : S - 1, sx = x + e * h < S ? x + e * h : S - 1;
                        memcpy(sh->pixels + ((size_t)y * S + x) * 3, img->pixels + ((size_t)sy * S + sx) * 3, 3);
                    }
                for (int k = 1; k < 3; k++) {
                    float s3[3];
                    ds_model_score_images(m, bb, (const ds_image *const *)&sh, 1, 1, 0, s3, k, pk);
                    if (d == 0 && e == 0) memcpy(s_unshifted, s3, sizeof s3);
                    for (int r = 0; r < gh; r++)
                        for (int cc = 0; cc < gw; cc++)
                            for (int a = 0; a < 2; a++)
                                for (int b = 0; b < 2; b++) {
                                    int Y = 2 * r + d + a, X = 2 * cc + e + b;
                                    if (Y >= FH || X >= FW) continue;
                                    fsum[k][(size_t)Y * FW + X] += pk[r * gw + cc];
                                    if (k == 1) fcnt[(size_t)Y * FW + X] += 1;
                                }
                }
                ds_image_free(sh);
            }
        float *fine = malloc(sizeof(float) * FH * FW), *ref_map = malloc(sizeof(float) * S * S);
        float fine_max = -INFINITY;
        for (int q = 0; q < FH * FW; q++) {
            fine[q] = (float)(fsum[1][q] / fcnt[q]);
            fine_max = fmaxf(fine_max, (float)(fsum[2][q] / fcnt[q]));
        }
        ds_anomaly_map(fine, FH, FW, S, 4.0f, S, S, ref_map);
        printf("     shifted: knn %.6g (unshifted %.6g), padim %.6g (fine-grid max %.6g), map rel diff %.2g\n", s_sh[0],
               s_unshifted[0], s_sh[2], fine_max, ss == DS_OK ? rel_diff(maps_sh + (size_t)S * S, ref_map, S * S) : 1.0);
        test_cond("shifted: the map is the anomaly map of the 4 shifts' tokens averaged on half-patch cells",
                  ss == DS_OK && rel_diff(maps_sh + (size_t)S * S, ref_map, S * S) < 1e-5);
        test_cond("shifted: padim's score is the max of its fine grid",
                  ss == DS_OK && fabsf(s_sh[2] - fine_max) <= 1e-5f * fabsf(fine_max));
        test_cond("shifted: knn keeps the unshifted image's score",
                  ss == DS_OK && fabsf(s_sh[0] - s_unshifted[0]) <= 1e-6f * fabsf(s_unshifted[0]));
        for (int k = 0; k < 3; k++) free(fsum[k]);
        free(fcnt), free(pk), free(fine), free(ref_map), free(maps_sh);
        ds_image_free(img);
    }

    for (int i = 0; i < NT; i++) ds_image_free(train[i]);
    for (int k = 0; k < 3; k++) ds_scorer_free(sc[k]);
    ds_image_free(small);
    ds_image_free(big);
    free(c.feats), free(map_t), free(map_w), free(patch), free(maps), free(sum), free(cnt), free(tmap), free(allp);
    ds_model_free(m);
    ds_backbone_free(bb);
    remove(path);
    test_report();
}
