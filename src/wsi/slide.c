/* Slides through OpenSlide's C API (Goode et al., J. Pathol. Inform. 2013).
 *
 * OpenSlide hands out premultiplied ARGB; ds_wsi_argb_to_rgb is the one place
 * where it becomes our RGB. Regions are clipped to the level before reading,
 * so nothing is ever asked of OpenSlide outside the slide; the rest of a
 * border tile is white, like the transparent (no data) pixels OpenSlide
 * returns inside a slide. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openslide.h>

#include "core/internal.h"
#include "image/image_internal.h"
#include "wsi/wsi_internal.h"

struct ds_wsi {
    openslide_t *osr;
    char *path;
    int64_t file_size;
    int n_levels;
    int64_t *w, *h; /* [n_levels] */
    double *ds;     /* [n_levels] */
    double mpp_x, mpp_y;
    const char *vendor, *quickhash;
};

void ds_wsi_argb_to_rgb(const uint32_t *argb, size_t n, uint8_t *rgb) {
    for (size_t i = 0; i < n; i++) {
        uint32_t p = argb[i];
        uint32_t a = p >> 24;
        /* premultiplied: c <= a, so c + 255 - a <= 255; a = 255 leaves c,
         * a = 0 (c = 0) gives white */
        uint32_t add = 255u - a;
        rgb[3 * i + 0] = (uint8_t)(((p >> 16) & 0xff) + add);
        rgb[3 * i + 1] = (uint8_t)(((p >> 8) & 0xff) + add);
        rgb[3 * i + 2] = (uint8_t)((p & 0xff) + add);
    }
}

/* A property as a positive finite number, else 0. */
static double prop_positive(openslide_t *osr, const char *name) {
    const char *v = openslide_get_property_value(osr, name);
    if (!v || !*v) return 0;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *end || !isfinite(d) || d <= 0) return 0;
    return d;
}

/* openslide.mpp-*, else the TIFF resolution tags: OpenSlide 3.4 lists them
 * as tiff.XResolution (pixels per unit) and tiff.ResolutionUnit for generic
 * TIFFs without converting them (QuPath reads the same tags). */
static void read_mpp(ds_wsi *w) {
    w->mpp_x = prop_positive(w->osr, OPENSLIDE_PROPERTY_NAME_MPP_X);
    w->mpp_y = prop_positive(w->osr, OPENSLIDE_PROPERTY_NAME_MPP_Y);
    if (w->mpp_x > 0 && w->mpp_y > 0) return;
    const char *unit = openslide_get_property_value(w->osr, "tiff.ResolutionUnit");
    double um_per_unit = 0;
    if (unit && !strcmp(unit, "centimeter")) um_per_unit = 1e4;
    else if (unit && !strcmp(unit, "inch")) um_per_unit = 25400;
    double xr = prop_positive(w->osr, "tiff.XResolution"), yr = prop_positive(w->osr, "tiff.YResolution");
    if (um_per_unit > 0 && xr > 0 && yr > 0) {
        w->mpp_x = um_per_unit / xr;
        w->mpp_y = um_per_unit / yr;
    } else {
        w->mpp_x = w->mpp_y = 0;
    }
}

ds_status ds_wsi_open(const char *path, ds_wsi **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_wsi_open: NULL argument");
    struct stat st;
    if (stat(path, &st) != 0) return ds_set_error(DS_ERR_IO, "'%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        /* OpenSlide reads MIRAX/VMS from their index file, never a folder */
        return ds_set_error(DS_ERR_IO, "'%s': is a directory, not a slide", path);
    }
    if (st.st_size == 0) return ds_set_error(DS_ERR_FORMAT, "'%s': empty file (0 bytes)", path);
    if (!openslide_detect_vendor(path))
        return ds_set_error(DS_ERR_FORMAT, "'%s': not a slide OpenSlide can read (unknown or unsupported format)", path);
    openslide_t *osr = openslide_open(path);
    if (!osr) return ds_set_error(DS_ERR_FORMAT, "'%s': not a slide OpenSlide can read", path);
    const char *err = openslide_get_error(osr);
    if (err) {
        ds_status s = ds_set_error(DS_ERR_IO, "'%s': OpenSlide cannot open it: %s", path, err);
        openslide_close(osr);
        return s;
    }
    ds_wsi *w = calloc(1, sizeof *w);
    int n = openslide_get_level_count(osr);
    if (!w || n < 1) {
        openslide_close(osr);
        free(w);
        return n < 1 ? ds_set_error(DS_ERR_FORMAT, "'%s': slide has no levels", path)
                     : ds_set_error(DS_ERR_NOMEM, "ds_wsi_open: out of memory");
    }
    w->osr = osr;
    w->n_levels = n;
    w->file_size = (int64_t)st.st_size;
    w->path = strdup(path);
    w->w = calloc((size_t)n, sizeof *w->w);
    w->h = calloc((size_t)n, sizeof *w->h);
    w->ds = calloc((size_t)n, sizeof *w->ds);
    if (!w->path || !w->w || !w->h || !w->ds) {
        ds_wsi_free(w);
        return ds_set_error(DS_ERR_NOMEM, "ds_wsi_open: out of memory");
    }
    for (int i = 0; i < n; i++) {
        openslide_get_level_dimensions(osr, i, &w->w[i], &w->h[i]);
        w->ds[i] = openslide_get_level_downsample(osr, i);
        if (w->w[i] <= 0 || w->h[i] <= 0 || !(w->ds[i] >= 1) || !isfinite(w->ds[i]) ||
            w->w[i] > ((int64_t)1 << 40) || w->h[i] > ((int64_t)1 << 40)) {
            ds_wsi_free(w);
            return ds_set_error(DS_ERR_FORMAT, "'%s': level %d has an invalid size or downsample", path, i);
        }
    }
    read_mpp(w);
    w->vendor = openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_VENDOR);
    w->quickhash = openslide_get_property_value(osr, OPENSLIDE_PROPERTY_NAME_QUICKHASH1);
    if (!w->vendor) w->vendor = "";
    if (!w->quickhash) w->quickhash = "";
    *out = w;
    return DS_OK;
}

void ds_wsi_free(ds_wsi *w) {
    if (!w) return;
    if (w->osr) openslide_close(w->osr);
    DS_FREE_ALL(w->path, w->w, w->h, w->ds, w);
}

int ds_wsi_n_levels(const ds_wsi *w) { return w ? w->n_levels : 0; }

ds_status ds_wsi_level_info(const ds_wsi *w, int level, int64_t *width_px, int64_t *height_px, double *downsample) {
    if (!w || level < 0 || level >= w->n_levels)
        return ds_set_error(DS_ERR_ARG, "level %d is out of range: '%s' has levels 0..%d", level, w ? w->path : "?",
                            w ? w->n_levels - 1 : -1);
    if (width_px) *width_px = w->w[level];
    if (height_px) *height_px = w->h[level];
    if (downsample) *downsample = w->ds[level];
    return DS_OK;
}

void ds_wsi_mpp_um(const ds_wsi *w, double *mpp_x_um, double *mpp_y_um) {
    if (mpp_x_um) *mpp_x_um = w ? w->mpp_x : 0;
    if (mpp_y_um) *mpp_y_um = w ? w->mpp_y : 0;
}

const char *ds_wsi_vendor(const ds_wsi *w) { return w ? w->vendor : ""; }
const char *ds_wsi_quickhash(const ds_wsi *w) { return w ? w->quickhash : ""; }
const char *ds_wsi_path(const ds_wsi *w) { return w->path; }
int64_t ds_wsi_file_size(const ds_wsi *w) { return w->file_size; }

ds_status ds_wsi_pick_level(const ds_wsi *w, double mpp_um, int *level) {
    if (!w || !level || !(mpp_um > 0) || !isfinite(mpp_um))
        return ds_set_error(DS_ERR_ARG, "ds_wsi_pick_level: need a positive mpp");
    if (!(w->mpp_x > 0))
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s' states no microns per pixel: choose a level instead of an mpp",
                            w->path);
    int best = 0;
    double best_d = INFINITY;
    for (int i = 0; i < w->n_levels; i++) {
        double d = fabs(w->mpp_x * w->ds[i] - mpp_um);
        if (d < best_d) { /* strict: ties keep the finer level */
            best_d = d;
            best = i;
        }
    }
    *level = best;
    return DS_OK;
}

ds_status ds_wsi_read_rgb(const ds_wsi *w, int level, int64_t x, int64_t y, int width, int height, uint8_t *rgb,
                          size_t rgb_stride, uint32_t *scratch, size_t scratch_px) {
    DS_ASSERT(level >= 0 && level < w->n_levels && width > 0 && height > 0 && scratch_px >= 1);
    /* white first: whatever lies outside the level stays white */
    for (int r = 0; r < height; r++) memset(rgb + (size_t)r * rgb_stride, 255, (size_t)width * 3);
    int64_t x0 = DS_MAX(x, 0), y0 = DS_MAX(y, 0);
    int64_t x1 = DS_MIN(x + width, w->w[level]), y1 = DS_MIN(y + height, w->h[level]);
    if (x1 <= x0 || y1 <= y0) return DS_OK;
    double ds = w->ds[level];
    /* chunks of whole rows when a row fits the scratch, else of columns too */
    int64_t cw = DS_MIN(x1 - x0, (int64_t)scratch_px);
    int64_t ch = DS_MAX((int64_t)1, DS_MIN(y1 - y0, (int64_t)(scratch_px / (size_t)cw)));
    for (int64_t cy = y0; cy < y1; cy += ch) {
        int64_t h = DS_MIN(ch, y1 - cy);
        for (int64_t cx = x0; cx < x1; cx += cw) {
            int64_t wd = DS_MIN(cw, x1 - cx);
            /* OpenSlide takes the top-left corner in level-0 pixels */
            openslide_read_region(w->osr, scratch, llround((double)cx * ds), llround((double)cy * ds), level, wd, h);
            const char *err = openslide_get_error(w->osr);
            if (err)
                return ds_set_error(DS_ERR_IO, "'%s': cannot read level %d at (%lld, %lld): %s", w->path, level,
                                    (long long)cx, (long long)cy, err);
            for (int64_t r = 0; r < h; r++)
                ds_wsi_argb_to_rgb(scratch + (size_t)(r * wd), (size_t)wd,
                                   rgb + (size_t)(cy - y + r) * rgb_stride + (size_t)(cx - x) * 3);
        }
    }
    return DS_OK;
}

ds_status ds_wsi_read_tile(const ds_wsi *w, int level, int64_t x_px, int64_t y_px, ds_image *out) {
    if (!w || !out || !out->pixels || out->channels != 3 || out->width <= 0 || out->height <= 0)
        return ds_set_error(DS_ERR_ARG, "ds_wsi_read_tile: need an RGB image to read into");
    if (level < 0 || level >= w->n_levels)
        return ds_set_error(DS_ERR_ARG, "level %d is out of range: '%s' has levels 0..%d", level, w->path,
                            w->n_levels - 1);
    size_t px = DS_MIN((size_t)out->width * (size_t)out->height, (size_t)1 << 20);
    uint32_t *scratch = ds_alloc(px, sizeof(uint32_t), "ds_wsi_read_tile");
    if (!scratch) return DS_ERR_NOMEM;
    ds_status st =
        ds_wsi_read_rgb(w, level, x_px, y_px, out->width, out->height, out->pixels, (size_t)out->width * 3, scratch, px);
    free(scratch);
    return st;
}

ds_status ds_wsi_read_downsampled(const ds_wsi *w, int out_w, int out_h, ds_image **out) {
    if (!w || !out || out_w < 1 || out_h < 1 || out_w > (1 << 16) || out_h > (1 << 16))
        return ds_set_error(DS_ERR_ARG, "ds_wsi_read_downsampled: bad arguments");
    if (out_w > w->w[0] || out_h > w->h[0])
        return ds_set_error(DS_ERR_ARG, "ds_wsi_read_downsampled: %dx%d is larger than the slide (%lldx%lld)", out_w,
                            out_h, (long long)w->w[0], (long long)w->h[0]);
    double want = DS_MAX((double)w->w[0] / out_w, (double)w->h[0] / out_h);
    int level = openslide_get_best_level_for_downsample(w->osr, DS_MAX(want, 1.0));
    if (level < 0 || level >= w->n_levels) level = 0;
    int64_t W = w->w[level], H = w->h[level];
    ds_image *img = ds_image_alloc(out_w, out_h, 3);
    if (!img) return DS_ERR_NOMEM;
    /* source box of output column i: [bx[i], bx[i+1]) */
    int64_t *bx = malloc(sizeof(int64_t) * ((size_t)out_w + 1));
    uint64_t *acc = calloc((size_t)out_w * 3, sizeof(uint64_t));
    size_t block_cols = 4096, scratch_px = (size_t)1 << 18;
    int64_t max_box_h = H / out_h + 2, max_box_w = W / out_w + 2;
    size_t blk_w = block_cols + (size_t)max_box_w;
    uint8_t *strip = NULL;
    uint32_t *scratch = ds_alloc(scratch_px, sizeof(uint32_t), "ds_wsi_read_downsampled");
    ds_status st = DS_OK;
    size_t strip_n;
    if (!ds_mul_size(blk_w * 3, (size_t)max_box_h, &strip_n)) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_wsi_read_downsampled: size overflow");
        goto done;
    }
    strip = ds_alloc(strip_n, 1, "ds_wsi_read_downsampled");
    if (!bx || !acc || !scratch || !strip) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_wsi_read_downsampled: out of memory");
        goto done;
    }
    for (int i = 0; i <= out_w; i++) bx[i] = (int64_t)((double)i * (double)W / out_w);
    for (int i = 0; i < out_w; i++)
        if (bx[i + 1] <= bx[i]) bx[i + 1] = DS_MIN(bx[i] + 1, W); /* at least one pixel */
    for (int oy = 0; oy < out_h && st == DS_OK; oy++) {
        int64_t y0 = (int64_t)((double)oy * (double)H / out_h), y1 = (int64_t)((double)(oy + 1) * (double)H / out_h);
        y0 = DS_MIN(y0, H - 1);
        if (y1 <= y0) y1 = y0 + 1;
        int bh = (int)(y1 - y0);
        DS_ASSERT(bh <= max_box_h);
        memset(acc, 0, sizeof(uint64_t) * (size_t)out_w * 3);
        for (int i0 = 0; i0 < out_w && st == DS_OK;) {
            /* output columns [i0, i1) whose boxes span at most block_cols */
            int i1 = i0 + 1;
            while (i1 < out_w && bx[i1 + 1] - bx[i0] <= (int64_t)block_cols) i1++;
            int64_t sx0 = DS_MIN(bx[i0], W - 1), sx1 = DS_MAX(bx[i1], sx0 + 1);
            int bw = (int)(sx1 - sx0);
            DS_ASSERT((size_t)bw <= blk_w);
            st = ds_wsi_read_rgb(w, level, sx0, y0, bw, bh, strip, (size_t)bw * 3, scratch, scratch_px);
            for (int i = i0; i < i1 && st == DS_OK; i++) {
                int64_t a = DS_MIN(bx[i], W - 1) - sx0, b = DS_MAX(bx[i + 1], bx[i] + 1) - sx0;
                b = DS_MIN(b, (int64_t)bw);
                for (int r = 0; r < bh; r++) {
                    const uint8_t *p = strip + (size_t)r * bw * 3;
                    for (int64_t c = a; c < b; c++) {
                        acc[3 * i + 0] += p[3 * c + 0];
                        acc[3 * i + 1] += p[3 * c + 1];
                        acc[3 * i + 2] += p[3 * c + 2];
                    }
                }
                uint64_t n = (uint64_t)(b - a) * (uint64_t)bh;
                for (int k = 0; k < 3; k++)
                    img->pixels[((size_t)oy * out_w + i) * 3 + k] = (uint8_t)((acc[3 * i + k] + n / 2) / n);
            }
            i0 = i1;
        }
    }
done:
    DS_FREE_ALL(bx, acc, strip, scratch);
    if (st != DS_OK) {
        ds_image_free(img);
        return st;
    }
    *out = img;
    return DS_OK;
}
