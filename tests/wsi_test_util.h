/* Helpers shared by tests/test_wsi.c and tests/test_wsi_shared.c: slides
 * built with libvips, small file utilities, point-in-polygon for GeoJSON. */
#ifndef DS_WSI_TEST_UTIL_H
#define DS_WSI_TEST_UTIL_H

#include <cjson/cJSON.h>
#include <vips/vips.h>

#include "dinoscope/image.h"
#include "test.h"

#define DS_TEST_MAX(a, b) ((a) > (b) ? (a) : (b))

static char tmp[512];

static inline char *path_in(const char *dir, const char *name) {
    static char buf[8][4096];
    static int slot = 0;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", dir, name);
    return buf[slot];
}

/* Pyramidal tiled TIFF (OpenSlide's "generic tiled TIFF") with its
 * resolution set so that the slide states mpp_um. */
static inline int save_slide(VipsImage *im, const char *path, double mpp_um, int tile) {
    double px_per_mm = 1000.0 / mpp_um;
    int rc = vips_tiffsave(im, path, "tile", TRUE, "tile_width", tile, "tile_height", tile, "pyramid", TRUE,
                           "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, "xres", px_per_mm, "yres", px_per_mm,
                           "resunit", VIPS_FOREIGN_TIFF_RESUNIT_CM, NULL);
    if (rc) fprintf(stderr, "vips_tiffsave: %s\n", vips_error_buffer());
    return rc;
}

static inline int load_rgb(const char *path, ds_image **out) { return ds_image_load(path, NULL, out) == DS_OK ? 0 : -1; }

static inline bool same_files(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = false;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Even-odd test of (px, py) against a GeoJSON ring [[x, y], ...]. */
static inline bool point_in_ring(cJSON *ring, double px, double py) {
    int n = cJSON_GetArraySize(ring);
    bool in = false;
    for (int i = 0, j = n - 1; i < n; j = i++) {
        cJSON *a = cJSON_GetArrayItem(ring, i), *b = cJSON_GetArrayItem(ring, j);
        double xi = cJSON_GetArrayItem(a, 0)->valuedouble, yi = cJSON_GetArrayItem(a, 1)->valuedouble;
        double xj = cJSON_GetArrayItem(b, 0)->valuedouble, yj = cJSON_GetArrayItem(b, 1)->valuedouble;
        if ((yi > py) != (yj > py) && px < (xj - xi) * (py - yi) / (yj - yi) + xi) in = !in;
    }
    return in;
}

/* Runs `dinoscope slide` and returns the exit status (128 + signal when killed). */

/* Creates $DS_TMP/<name> afresh into tmp. */
static inline int make_tmp(const char *name) {
    snprintf(tmp, sizeof tmp, "%s/%s", test_env("DS_TMP", "/tmp"), name);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
