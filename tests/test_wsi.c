/* Whole-slide images, library level: OpenSlide reading (ARGB conversion,
 * border padding, levels, mpp from TIFF tags, area-averaged overviews) on a
 * pyramidal TIFF built here with libvips from a fixture whose every pixel is
 * known; tissue masks against OpenCV and anomalous-region outlines against
 * cv2.connectedComponents (tests/fixtures/make_wsi_fixtures.py).
 * `dinoscope slide` end to end on real slides: tests/test_wsi_shared.c. */
#include <sys/stat.h>

#include "dinoscope/wsi.h"
#include "wsi/wsi_internal.h"
#include "wsi_test_util.h"

/* ---- ARGB ---------------------------------------------------------------- */
static void test_argb(void) {
    /* reference: un-premultiply, then blend over white in real arithmetic */
    const uint8_t cols[][4] = {{255, 200, 100, 0}, {0, 0, 0, 0}, {128, 200, 100, 0}, {1, 255, 255, 255}, {77, 10, 250, 3}};
    uint32_t px[5];
    for (int i = 0; i < 5; i++) {
        double a = cols[i][0];
        uint32_t c[3];
        for (int k = 0; k < 3; k++) c[k] = (uint32_t)lround(cols[i][1 + k] * a / 255.0);
        px[i] = ((uint32_t)cols[i][0] << 24) | (c[0] << 16) | (c[1] << 8) | c[2];
    }
    uint8_t rgb[15];
    ds_wsi_argb_to_rgb(px, 5, rgb);
    double worst = 0;
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 3; k++) {
            double a = cols[i][0] / 255.0;
            double ref = cols[i][1 + k] * a + 255.0 * (1 - a);
            worst = fmax(worst, fabs(ref - rgb[3 * i + k]));
        }
    test_cond("premultiplied ARGB becomes RGB on white within 1 level of the exact blend", worst <= 1.0);
    test_cond("opaque ARGB keeps its colour", rgb[0] == 200 && rgb[1] == 100 && rgb[2] == 0);
    test_cond("transparent ARGB (no data) is white", rgb[3] == 255 && rgb[4] == 255 && rgb[5] == 255);
}

/* ---- tissue mask vs OpenCV ------------------------------------------------ */
static void test_tissue(void) {
    ds_image *in = NULL, *ref = NULL, *med = NULL;
    char *js = test_read_text(fixture("wsi/tissue.json"));
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    if (load_rgb(fixture("wsi/tissue_in.png"), &in) || ds_image_load(fixture("wsi/tissue_mask.png"), NULL, &ref) ||
        ds_image_load(fixture("wsi/tissue_med.png"), NULL, &med) || !j) {
        test_cond("tissue fixtures load", 0);
        return;
    }
    int W = in->width, H = in->height;
    int ref_t = cJSON_GetObjectItem(j, "threshold")->valueint;
    uint8_t *mask = malloc((size_t)W * H);
    ds_tissue_params p = ds_tissue_defaults();
    int t = -1;
    ds_status st = ds_tissue_mask(in, &p, mask, &t);
    /* without the area filters: S -> median -> threshold, as cv2 */
    size_t diff = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) diff += mask[i] != (med->pixels[3 * i] > ref_t);
    test_cond("tissue mask: Otsu threshold on the median-blurred saturation equals OpenCV's", st == DS_OK && t == ref_t);
    test_cond("tissue mask before the area filters equals cv2 (HSV S, medianBlur 7, > threshold) on every pixel",
              st == DS_OK && diff == 0);
    p.min_object_px = cJSON_GetObjectItem(j, "min_object")->valueint;
    p.max_hole_px = cJSON_GetObjectItem(j, "max_hole")->valueint;
    st = ds_tissue_mask(in, &p, mask, &t);
    diff = 0;
    size_t n_tissue = 0;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        diff += mask[i] != (ref->pixels[3 * i] > 127);
        n_tissue += mask[i];
    }
    printf("     tissue fixture: threshold %d, %zu tissue px, %zu differ from cv2\n", t, n_tissue, diff);
    test_cond("tissue mask with small objects removed and small holes filled equals cv2 connectedComponents",
              st == DS_OK && diff == 0);
    ds_image_free(in);
    ds_image_free(ref);
    ds_image_free(med);
    free(mask);
    cJSON_Delete(j);
    free(js);

    js = test_read_text(fixture("wsi/blank.json"));
    j = js ? cJSON_Parse(js) : NULL;
    if (load_rgb(fixture("wsi/blank_in.png"), &in) || !j) {
        test_cond("blank fixture loads", 0);
        return;
    }
    mask = malloc((size_t)in->width * in->height);
    st = ds_tissue_mask(in, NULL, mask, &t);
    n_tissue = 0;
    for (size_t i = 0; i < (size_t)in->width * in->height; i++) n_tissue += mask[i];
    test_cond("an empty slide's noise is not tissue (Otsu raised to CLAM's 8), as the reference",
              st == DS_OK && t == cJSON_GetObjectItem(j, "threshold")->valueint && n_tissue == 0 &&
                  cJSON_GetObjectItem(j, "n_tissue")->valueint == 0);
    ds_tissue_params bad = ds_tissue_defaults();
    bad.median_ksize = 4;
    test_cond("an even median kernel is refused", ds_tissue_mask(in, &bad, mask, NULL) == DS_ERR_ARG);
    ds_image_free(in);
    free(mask);
    cJSON_Delete(j);
    free(js);
}

/* ---- reading slides ---------------------------------------------------------- */
static void test_read(void) {
    /* 950x700 slide: the fixture image repeated, so every pixel is known */
    ds_image *src = NULL;
    if (load_rgb(fixture("wsi/tissue_in.png"), &src)) {
        test_cond("fixture loads", 0);
        return;
    }
    int SW = src->width, SH = src->height, W = 950, H = 700;
    VipsImage *a = vips_image_new_from_memory(src->pixels, (size_t)SW * SH * 3, SW, SH, 3, VIPS_FORMAT_UCHAR), *b, *c;
    vips_replicate(a, &b, 4, 4, NULL);
    vips_crop(b, &c, 0, 0, W, H, NULL);
    const char *slide = path_in(tmp, "read.tif");
    int rc = save_slide(c, slide, 0.25, 128);
    g_object_unref(a);
    g_object_unref(b);
    g_object_unref(c);
    ds_wsi *w = NULL;
    ds_status st = rc ? DS_ERR_IO : ds_wsi_open(slide, &w);
    test_cond("a generic tiled TIFF made by libvips opens", st == DS_OK);
    if (st != DS_OK) {
        printf("     %s\n", ds_last_error());
        ds_image_free(src);
        return;
    }
    int64_t lw, lh;
    double ds, mx, my;
    ds_wsi_mpp_um(w, &mx, &my);
    test_cond("its vendor is generic-tiff", !strcmp(ds_wsi_vendor(w), "generic-tiff"));
    test_cond("its mpp comes from the TIFF resolution tags (0.25 um/px)", fabs(mx - 0.25) < 1e-9 && fabs(my - 0.25) < 1e-9);
    test_cond("level 1 is half the size at downsample 2",
              ds_wsi_n_levels(w) >= 3 && ds_wsi_level_info(w, 1, &lw, &lh, &ds) == DS_OK && lw == 475 && lh == 350 &&
                  ds == 2.0);
    test_cond("a level out of range is an error", ds_wsi_level_info(w, ds_wsi_n_levels(w), NULL, NULL, NULL) == DS_ERR_ARG);
    int level = -1;
    test_cond("--mpp 0.6 picks level 1 (0.5 um/px)", ds_wsi_pick_level(w, 0.6, &level) == DS_OK && level == 1);
    test_cond("--mpp 0.75, halfway between levels 1 and 2, picks the finer", ds_wsi_pick_level(w, 0.75, &level) == DS_OK &&
                                                                            level == 1);
    /* border tile: 100x100 at (900, 650): 50x50 inside, the rest white */
    ds_image *tile = ds_image_create(100, 100, 3);
    st = ds_wsi_read_tile(w, 0, 900, 650, tile);
    size_t bad_in = 0, bad_out = 0;
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 100; x++)
            for (int k = 0; k < 3; k++) {
                uint8_t v = tile->pixels[((size_t)y * 100 + x) * 3 + k];
                if (900 + x < W && 650 + y < H)
                    bad_in += v != src->pixels[((size_t)((650 + y) % SH) * SW + (900 + x) % SW) * 3 + k];
                else
                    bad_out += v != 255;
            }
    test_cond("a border tile holds the slide's pixels where it overlaps the slide", st == DS_OK && bad_in == 0);
    test_cond("a border tile is white (padded) beyond the slide's edge", st == DS_OK && bad_out == 0);
    st = ds_wsi_read_tile(w, 0, -10, -20, tile);
    bad_in = bad_out = 0;
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 100; x++)
            for (int k = 0; k < 3; k++) {
                uint8_t v = tile->pixels[((size_t)y * 100 + x) * 3 + k];
                if (x >= 10 && y >= 20) bad_in += v != src->pixels[((size_t)((y - 20) % SH) * SW + (x - 10) % SW) * 3 + k];
                else bad_out += v != 255;
            }
    test_cond("a tile above and left of the slide is padded white there too", st == DS_OK && bad_in == 0 && bad_out == 0);
    ds_image_free(tile);
    /* area-averaged overview straight from level 0 (downsample 1.5 < 2) */
    int ow = 633, oh = 466;
    ds_image *ov = NULL;
    st = ds_wsi_read_downsampled(w, ow, oh, &ov);
    int worst = 0;
    for (int oy = 0; st == DS_OK && oy < oh; oy++) {
        int y0 = (int)((double)oy * H / oh), y1 = (int)((double)(oy + 1) * H / oh);
        for (int ox = 0; ox < ow; ox++) {
            int x0 = (int)((double)ox * W / ow), x1 = (int)((double)(ox + 1) * W / ow);
            for (int k = 0; k < 3; k++) {
                double s = 0;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) s += src->pixels[((size_t)(y % SH) * SW + x % SW) * 3 + k];
                int ref = (int)lround(s / ((double)(y1 - y0) * (x1 - x0)));
                worst = DS_TEST_MAX(worst, abs(ref - ov->pixels[((size_t)oy * ow + ox) * 3 + k]));
            }
        }
    }
    test_cond("a downsampled read is the box average of the level-0 pixels (to rounding)", st == DS_OK && worst <= 1);
    ds_image_free(ov);
    ds_wsi_free(w);
    ds_image_free(src);

    /* unreadable inputs */
    const char *txt = path_in(tmp, "notes.txt");
    FILE *fp = fopen(txt, "w");
    fputs("not a slide\n", fp);
    fclose(fp);
    w = NULL;
    st = ds_wsi_open(txt, &w);
    test_cond("a text file is not a slide (DS_ERR_FORMAT, says so)", st == DS_ERR_FORMAT && strstr(ds_last_error(), "not a slide") && !w);
    st = ds_wsi_open(path_in(tmp, "missing.svs"), &w);
    test_cond("a missing file is DS_ERR_IO naming it", st == DS_ERR_IO && strstr(ds_last_error(), "missing.svs"));
}

/* ---- anomalous regions: outlines and statistics ------------------------------ */
static void test_regions(void) {
    char *js = test_read_text(fixture("wsi/regions.json"));
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    if (!j) {
        test_cond("regions fixture loads", 0);
        return;
    }
    int W = cJSON_GetObjectItem(j, "width")->valueint, H = cJSON_GetObjectItem(j, "height")->valueint;
    cJSON *jm = cJSON_GetObjectItem(j, "mask"), *jv = cJSON_GetObjectItem(j, "values"), *jc = cJSON_GetObjectItem(j, "components");
    uint8_t *m = malloc((size_t)W * H);
    float *v = malloc(sizeof(float) * (size_t)W * H);
    for (int i = 0; i < W * H; i++) {
        m[i] = (uint8_t)cJSON_GetArrayItem(jm, i)->valueint;
        v[i] = (float)cJSON_GetArrayItem(jv, i)->valuedouble;
    }
    ds_regions *r = NULL;
    ds_status st = ds_regions_create(W, H, &r);
    for (int y = 0; y < H && st == DS_OK; y++) st = ds_regions_add_row(r, y, m + (size_t)y * W, v + (size_t)y * W);
    FILE *fp = tmpfile();
    int n = -1;
    /* 10 output units per cell, right and bottom edges clamped half a cell in */
    ds_regions_geo geo = {.sx = 10, .sy = 10, .max_x = W * 10 - 5, .max_y = H * 10 - 5, .mpp_x_um = 0.5, .mpp_y_um = 0.5};
    if (st == DS_OK) st = ds_regions_write_geojson(r, &geo, fp, &n);
    ds_regions_free(r);
    char *text = NULL;
    if (fp) {
        long len = ftell(fp);
        rewind(fp);
        text = calloc((size_t)len + 1, 1);
        if (fread(text, 1, (size_t)len, fp) != (size_t)len) text[0] = 0;
        fclose(fp);
    }
    cJSON *g = text ? cJSON_Parse(text) : NULL;
    cJSON *feats = g ? cJSON_GetObjectItem(g, "features") : NULL;
    int nc = cJSON_GetArraySize(jc);
    test_cond("regions: valid GeoJSON with one feature per 4-connected component (cv2.connectedComponents)",
              st == DS_OK && g && n == nc && cJSON_GetArraySize(feats) == nc);
    /* rasterise the polygons (even-odd over all rings) at the cell centres */
    size_t wrong = 0, multi = 0;
    double worst_stat = 0, worst_area = 0;
    uint8_t *hit = calloc((size_t)W * H, 1);
    for (int k = 0; k < cJSON_GetArraySize(feats) && k < nc; k++) {
        cJSON *rings = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(feats, k), "geometry"), "coordinates");
        cJSON *ms = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(feats, k), "properties"), "measurements");
        cJSON *ref = cJSON_GetArrayItem(jc, k);
        int area = 0, area_units = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                bool in = false;
                for (int q = 0; q < cJSON_GetArraySize(rings); q++)
                    if (point_in_ring(cJSON_GetArrayItem(rings, q), (x + 0.5) * 10 - 0.01 * (x == W - 1),
                                      (y + 0.5) * 10 - 0.01 * (y == H - 1)))
                        in = !in;
                if (in) {
                    multi += hit[(size_t)y * W + x]++;
                    area++;
                    area_units += (x == W - 1 ? 5 : 10) * (y == H - 1 ? 5 : 10);
                }
            }
        worst_stat = fmax(worst_stat, fabs(cJSON_GetObjectItem(ms, "Max score")->valuedouble -
                                           cJSON_GetObjectItem(ref, "max")->valuedouble));
        worst_stat = fmax(worst_stat, fabs(cJSON_GetObjectItem(ms, "Mean score")->valuedouble -
                                           cJSON_GetObjectItem(ref, "mean")->valuedouble));
        worst_area = fmax(worst_area, fabs((double)area - cJSON_GetObjectItem(ref, "area")->valueint));
        worst_area = fmax(worst_area, fabs(cJSON_GetObjectItem(ms, "Area px^2")->valuedouble - area_units));
        worst_area = fmax(worst_area, fabs(cJSON_GetObjectItem(ms, "Area \xc2\xb5m^2")->valuedouble - 0.25 * area_units));
    }
    for (int i = 0; i < W * H; i++) {
        wrong += (hit[i] != 0) != (m[i] != 0);
        if ((hit[i] != 0) != (m[i] != 0) || hit[i] > 1) printf("     cell (%d,%d) mask %d polygons %d\n", i % W, i / W, m[i], hit[i]);
    }
    test_cond("regions: the polygons (outer rings minus holes) cover exactly the anomalous cells, each once",
              g && wrong == 0 && multi == 0);
    test_cond("regions: each polygon holds as many cells as its component (cv2); its area (clamped at the slide's edge) "
              "in px^2 and um^2 is theirs",
              g && worst_area < 1e-9);
    test_cond("regions: max and mean score per region equal the reference's (1e-6)", g && worst_stat < 1e-6);
    free(hit);
    free(text);
    cJSON_Delete(g);
    free(m);
    free(v);
    cJSON_Delete(j);
    free(js);
}

int main(void) {
    if (ds_image_init() != DS_OK || make_tmp("test_wsi") != 0) return 1;
    test_argb();
    test_tissue();
    test_read();
    test_regions();
    test_report();
}
