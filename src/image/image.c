/* Image input and output through libvips.
 *
 * Everything that reaches the rest of dinoscope is 8-bit RGB, [H,W,3], top
 * row first, EXIF orientation applied:
 *   - grey is replicated to R=G=B;
 *   - alpha is composited on white (slides and scans have white background);
 *   - CMYK and other non-RGB colour spaces go to sRGB through libvips'
 *     colour management (the embedded ICC profile when there is one);
 *     embedded ICC profiles of RGB images are ignored, like PIL's
 *     Image.convert("RGB") that the reference pipeline uses;
 *   - samples of more than 8 bits (16-bit X-ray/MRI exports, float TIFF) are
 *     mapped to 0..255 by a window [lo, hi]: v' = round((v - lo) / (hi - lo)
 *     * 255) clipped to 0..255; by default lo and hi are the 0.5 and 99.5
 *     percentiles of all samples of the image (numpy's default linear
 *     interpolation), or a fixed window from the caller (--window).
 * Decoding errors (truncation included) fail the load rather than return a
 * partly grey image (fail_on = error). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "core/internal.h"
#include "dinoscope/image.h"
#include "image/dicom.h"
#include "image/image_internal.h"

#define DEFAULT_MAX_PIXELS ((int64_t)1 << 28)

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_init_failed = 0;

/* libvips reports decoding problems both as errors (which we turn into one
 * line naming the file) and as g_warning()s on stderr ("error in tile 0 x
 * 8"); the latter would duplicate our message, so they are dropped unless
 * DS_VIPS_WARNINGS is set. */
static void quiet_log(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer data) {
    (void)domain, (void)level, (void)msg, (void)data;
}

static void vips_start(void) {
    if (VIPS_INIT("dinoscope") != 0) {
        vips_init_failed = 1;
        return;
    }
    if (!getenv("DS_VIPS_WARNINGS")) g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, quiet_log, NULL);
}

ds_status ds_image_init(void) {
    pthread_once(&vips_once, vips_start);
    if (vips_init_failed) return ds_set_error(DS_ERR_UNSUPPORTED, "ds_image_init: libvips failed to start");
    return DS_OK;
}

static ds_image *image_new(int width, int height, int channels, bool zero, const char *fn) {
    if (width <= 0 || height <= 0 || (channels != 1 && channels != 3)) {
        ds_set_error(DS_ERR_ARG, "%s: invalid size %dx%d with %d channels (expected 1 or 3)", fn, width, height,
                     channels);
        return NULL;
    }
    size_t n;
    if (!ds_mul_size((size_t)width, (size_t)height, &n) || !ds_mul_size(n, (size_t)channels, &n)) {
        ds_set_error(DS_ERR_NOMEM, "%s: %dx%dx%d overflows", fn, width, height, channels);
        return NULL;
    }
    ds_image *img = calloc(1, sizeof *img);
    if (!img) {
        ds_set_error(DS_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    img->pixels = zero ? ds_calloc(n, 1, fn) : ds_alloc(n, 1, fn);
    if (!img->pixels) {
        free(img);
        return NULL;
    }
    img->width = width;
    img->height = height;
    img->channels = channels;
    return img;
}

ds_image *ds_image_create(int width, int height, int channels) {
    return image_new(width, height, channels, true, "ds_image_create");
}

ds_image *ds_image_alloc(int width, int height, int channels) {
    return image_new(width, height, channels, false, "ds_image_alloc");
}

void ds_image_free(ds_image *img) {
    if (!img) return;
    free(img->pixels);
    free(img);
}

/* The last non-empty line of libvips' error buffer (the most specific
 * reason), copied into buf; clears the buffer. The buffer is global to the
 * process (libvips' design, unlike our thread-local error): with loads on
 * several threads a reason can be lost to another thread's clear, and then
 * reads "unknown libvips error"; the file name and the kind of failure stay
 * right. */
const char *ds_vips_reason(char *buf, size_t n) {
    char *all = vips_error_buffer_copy();
    buf[0] = 0;
    if (all) {
        char *end = all + strlen(all);
        while (end > all && (end[-1] == '\n' || end[-1] == ' ')) *--end = 0;
        char *start = strrchr(all, '\n');
        start = start ? start + 1 : all;
        snprintf(buf, n, "%s", start);
        g_free(all);
    }
    if (!buf[0]) snprintf(buf, n, "unknown libvips error");
    return buf;
}

/* Checks that make the error name the real problem before libvips says
 * "is not a known file format" for all of them. */
static ds_status check_file(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return ds_set_error(DS_ERR_IO, "'%s': no such file", path);
        return ds_set_error(DS_ERR_IO, "'%s': %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) return ds_set_error(DS_ERR_IO, "'%s': is a directory, not an image", path);
    if (!S_ISREG(st.st_mode)) return ds_set_error(DS_ERR_IO, "'%s': not a regular file", path);
    if (access(path, R_OK) != 0) return ds_set_error(DS_ERR_IO, "'%s': %s", path, strerror(errno));
    if (st.st_size == 0) return ds_set_error(DS_ERR_FORMAT, "'%s': empty file (0 bytes)", path);
    size_t len = strlen(path);
    if (len > 0 && path[len - 1] == ']')
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': file names ending in ']' are not supported (libvips reads "
                                                "'[...]' as load options); rename the file", path);
    return DS_OK;
}

static void params_resolve(const ds_image_load_params *p, ds_image_load_params *out) {
    memset(out, 0, sizeof *out);
    if (p) *out = *p;
    if (out->max_pixels <= 0) out->max_pixels = DEFAULT_MAX_PIXELS;
    if (out->window_lo_pct == 0 && out->window_hi_pct == 0) { /* unset: the documented default */
        out->window_lo_pct = 0.5;
        out->window_hi_pct = 99.5;
    }
}

/* Opens path lazily (header only) and checks its size against the limit. */
static ds_status open_header(const char *path, const ds_image_load_params *p, VipsImage **out) {
    ds_status st = ds_image_init();
    if (st != DS_OK) return st;
    if ((st = check_file(path)) != DS_OK) return st;
    char why[512];
    vips_error_clear();
    if (!vips_foreign_find_load(path)) {
        vips_error_clear();
        return ds_set_error(DS_ERR_FORMAT, "'%s': not an image (unknown or unsupported format)", path);
    }
    /* sequential: the pipeline below streams, and decoding errors (incl.
     * truncation, fail_on = error) surface when the pixels are read */
    VipsImage *im = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_ERROR,
                                             NULL);
    if (!im) return ds_set_error(DS_ERR_FORMAT, "'%s': cannot read header: %s", path, ds_vips_reason(why, sizeof why));
    int64_t n_px = (int64_t)im->Xsize * (int64_t)im->Ysize;
    if (n_px > p->max_pixels) {
        ds_status e = ds_set_error(DS_ERR_UNSUPPORTED,
                                   "'%s': %dx%d = %lld pixels exceeds the limit of %lld pixels (decompression-bomb "
                                   "guard; raise max_pixels / --max-pixels)",
                                   path, im->Xsize, im->Ysize, (long long)n_px, (long long)p->max_pixels);
        g_object_unref(im);
        return e;
    }
    /* before the decoder allocates w*h*bands: does the file hold that much? */
    struct stat sb;
    if (stat(path, &sb) == 0 && (st = ds_image_check_declared_size(path, (uint64_t)sb.st_size)) != DS_OK) {
        g_object_unref(im);
        return st;
    }
    *out = im;
    return DS_OK;
}

int ds_image_is_dicom(const char *path) {
    if (!path) return 0;
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash) && (strcasecmp(dot, ".dcm") == 0 || strcasecmp(dot, ".dicom") == 0)) return 1;
    /* PS3.10 7.1: 128-byte preamble, then the prefix "DICM" */
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    unsigned char b[132];
    size_t got = fread(b, 1, sizeof b, fp);
    fclose(fp);
    return got == sizeof b && memcmp(b + 128, "DICM", 4) == 0;
}

ds_status ds_image_window_preset(const char *name, double *center, double *width) {
    /* Radiopaedia, "Windowing (CT)": W/L in HU */
    static const struct {
        const char *name;
        double c, w;
    } presets[] = {{"lung", -600, 1500}, {"soft-tissue", 40, 400}, {"bone", 400, 1800}, {"brain", 40, 80}};
    for (size_t i = 0; name && i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            if (center) *center = presets[i].c;
            if (width) *width = presets[i].w;
            return DS_OK;
        }
    return ds_set_error(DS_ERR_ARG, "ds_image_window_preset: unknown preset '%s' (expected lung, soft-tissue, bone or "
                                    "brain)", name ? name : "(null)");
}

/* Window parameters that make no sense for any format. */
static ds_status check_params(const ds_image_load_params *p) {
    if (p->window_set && !(p->window_min < p->window_max))
        return ds_set_error(DS_ERR_ARG, "ds_image_load: window [%g, %g] must have min < max", p->window_min,
                            p->window_max);
    if (p->voi_set && !(isfinite(p->voi_center) && p->voi_width >= 1 && isfinite(p->voi_width)))
        return ds_set_error(DS_ERR_ARG, "ds_image_load: VOI window center %g width %g: width must be >= 1",
                            p->voi_center, p->voi_width);
    if (p->frame < 0) return ds_set_error(DS_ERR_ARG, "ds_image_load: frame %d is negative", p->frame);
    return DS_OK;
}

/* The steps before probing or loading: the parameters resolved and
 * checked, and whether path is DICOM (then check_file runs first, as
 * open_header does for the others). */
static ds_status resolve_input(const char *path, const ds_image_load_params *params, ds_image_load_params *p,
                               bool *dicom) {
    params_resolve(params, p);
    ds_status st = check_params(p);
    if (st != DS_OK) return st;
    *dicom = ds_image_is_dicom(path);
    return *dicom ? check_file(path) : DS_OK;
}

ds_status ds_image_probe(const char *path, const ds_image_load_params *params, int *width, int *height) {
    if (!path) return ds_set_error(DS_ERR_ARG, "ds_image_probe: path is NULL");
    ds_image_load_params p;
    bool dicom;
    ds_status st = resolve_input(path, params, &p, &dicom);
    if (st != DS_OK) return st;
    if (dicom) return ds_dicom_probe(path, &p, width, height, NULL);
    VipsImage *im = NULL;
    st = open_header(path, &p, &im);
    if (st != DS_OK) return st;
    int w = im->Xsize, h = im->Ysize, o = 1;
    if (vips_image_get_typeof(im, VIPS_META_ORIENTATION) && vips_image_get_int(im, VIPS_META_ORIENTATION, &o) == 0 &&
        o >= 5 && o <= 8) {
        int t = w;
        w = h;
        h = t;
    }
    vips_error_clear();
    g_object_unref(im);
    if (width) *width = w;
    if (height) *height = h;
    return DS_OK;
}

/* Runs one libvips operation writing into t and replaces im by its result;
 * on failure jumps to vips_fail. */
#define VIPS_STEP(call)                                                                                      \
    do {                                                                                                     \
        VipsImage *t = NULL;                                                                                 \
        int rc_ = (call);                                                                                    \
        g_object_unref(im);                                                                                  \
        im = rc_ == 0 ? t : NULL;                                                                            \
        if (rc_ != 0) goto vips_fail;                                                                        \
    } while (0)

/* numpy.percentile(a, pct) (method "linear") of the sorted-order statistics
 * given by kth(k): value at virtual index pct/100 * (n - 1). */
typedef double (*kth_fn)(const void *ctx, size_t k);
static double percentile(const void *ctx, kth_fn kth, size_t n, double pct) {
    double idx = pct / 100.0 * (double)(n - 1);
    if (idx <= 0) return kth(ctx, 0);
    if (idx >= (double)(n - 1)) return kth(ctx, n - 1);
    size_t i = (size_t)floor(idx);
    double t = idx - (double)i, a = kth(ctx, i), b = kth(ctx, i + 1), d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t; /* numpy's _lerp */
}

/* k-th smallest of 16-bit samples through a cumulative histogram. */
typedef struct {
    const uint64_t *cum; /* [65536] cumulative counts */
} hist16;
static double hist16_kth(const void *ctx, size_t k) {
    const uint64_t *cum = ((const hist16 *)ctx)->cum;
    size_t lo = 0, hi = 65535;
    while (lo < hi) { /* first v with cum[v] > k */
        size_t mid = (lo + hi) / 2;
        if (cum[mid] > k) hi = mid;
        else lo = mid + 1;
    }
    return (double)lo;
}
static double sorted_kth(const void *ctx, size_t k) { return ((const double *)ctx)[k]; }
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Maps n samples (uint16 when is_u16, else double) to u8 by the window. */
static ds_status window_to_u8(const char *path, const void *samples, bool is_u16, size_t n,
                              const ds_image_load_params *p, uint8_t *dst) {
    double lo, hi;
    if (p->window_set) {
        lo = p->window_min;
        hi = p->window_max;
    } else {
        if (!(p->window_lo_pct >= 0 && p->window_lo_pct <= p->window_hi_pct && p->window_hi_pct <= 100))
            return ds_set_error(DS_ERR_ARG, "ds_image_load: window percentiles %g, %g must satisfy 0 <= lo <= hi <= 100",
                                p->window_lo_pct, p->window_hi_pct);
        if (is_u16) {
            uint64_t *cum = ds_calloc(65536, sizeof(uint64_t), "ds_image_load");
            if (!cum) return DS_ERR_NOMEM;
            const uint16_t *s = samples;
            for (size_t i = 0; i < n; i++) cum[s[i]]++;
            for (size_t v = 1; v < 65536; v++) cum[v] += cum[v - 1];
            hist16 h = {cum};
            lo = percentile(&h, hist16_kth, n, p->window_lo_pct);
            hi = percentile(&h, hist16_kth, n, p->window_hi_pct);
            free(cum);
        } else {
            double *sorted = ds_alloc(n, sizeof(double), "ds_image_load");
            if (!sorted) return DS_ERR_NOMEM;
            memcpy(sorted, samples, n * sizeof(double));
            for (size_t i = 0; i < n; i++)
                if (!isfinite(sorted[i])) {
                    free(sorted);
                    return ds_set_error(DS_ERR_FORMAT, "'%s': contains NaN or infinite samples (give --window)",
                                        path);
                }
            qsort(sorted, n, sizeof(double), cmp_double);
            lo = percentile(sorted, sorted_kth, n, p->window_lo_pct);
            hi = percentile(sorted, sorted_kth, n, p->window_hi_pct);
            free(sorted);
        }
    }
    const double range = hi - lo;
    for (size_t i = 0; i < n; i++) {
        double v = is_u16 ? (double)((const uint16_t *)samples)[i] : ((const double *)samples)[i];
        double m = range > 0 ? rint((v - lo) / range * 255.0) : (v > lo ? 255.0 : 0.0);
        dst[i] = m >= 0 && m <= 255 ? (uint8_t)m : m > 255 ? 255 : 0; /* NaN -> 0 */
    }
    return DS_OK;
}

/* Applies EXIF orientation o (1..8) while expanding [h,w,bands] u8 to RGB:
 * out(x, y) = in(sx, sy) as ImageOps.exif_transpose does. */
static void orient_to_rgb(const uint8_t *in, int w, int h, int bands, int o, ds_image *out) {
    const int ow = out->width, oh = out->height;
    const size_t n = (size_t)w * (size_t)h;
    if (o == 1 && bands == 3) { /* the common cases, without the per-pixel switch */
        memcpy(out->pixels, in, n * 3);
        return;
    }
    if (o == 1 && bands == 1) {
        for (size_t i = 0; i < n; i++) out->pixels[3 * i] = out->pixels[3 * i + 1] = out->pixels[3 * i + 2] = in[i];
        return;
    }
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = w - 1 - x, sy = y; break;                 /* mirror horizontal */
            case 3: sx = w - 1 - x, sy = h - 1 - y; break;         /* rotate 180 */
            case 4: sx = x, sy = h - 1 - y; break;                 /* mirror vertical */
            case 5: sx = y, sy = x; break;                         /* transpose */
            case 6: sx = y, sy = h - 1 - x; break;                 /* rotate 90 clockwise */
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;         /* transverse */
            case 8: sx = w - 1 - y, sy = x; break;                 /* rotate 90 counter-clockwise */
            default: sx = x, sy = y; break;
            }
            const uint8_t *s = in + ((size_t)sy * (size_t)w + (size_t)sx) * (size_t)bands;
            uint8_t *d = out->pixels + ((size_t)y * (size_t)ow + (size_t)x) * 3;
            if (bands == 1) d[0] = d[1] = d[2] = s[0];
            else d[0] = s[0], d[1] = s[1], d[2] = s[2];
        }
    }
}

ds_status ds_image_load(const char *path, const ds_image_load_params *params, ds_image **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_image_load: NULL argument");
    ds_image_load_params p;
    bool dicom;
    ds_status st = resolve_input(path, params, &p, &dicom);
    if (st != DS_OK) return st;
    if (dicom) return ds_dicom_load(path, &p, out);
    VipsImage *im = NULL;
    st = open_header(path, &p, &im);
    if (st != DS_OK) return st;

    char why[512];
    int orient = 1;
    if (vips_image_get_typeof(im, VIPS_META_ORIENTATION)) vips_image_get_int(im, VIPS_META_ORIENTATION, &orient);
    if (orient < 1 || orient > 8) orient = 1;
    void *mem = NULL;
    uint8_t *u8 = NULL;
    ds_image *img = NULL;

    /* coded images (libvips' own LABQ/Radiance packings) to plain values */
    if (im->Coding == VIPS_CODING_LABQ) VIPS_STEP(vips_LabQ2sRGB(im, &t, NULL));
    else if (im->Coding == VIPS_CODING_RAD) VIPS_STEP(vips_rad2float(im, &t, NULL));
    else if (im->Coding != VIPS_CODING_NONE) {
        st = ds_set_error(DS_ERR_UNSUPPORTED, "'%s': unsupported libvips pixel coding %d", path, (int)im->Coding);
        goto done;
    }
    /* Non-RGB colour spaces to sRGB (keeps alpha as an extra band). */
    switch (im->Type) {
    case VIPS_INTERPRETATION_CMYK:
    case VIPS_INTERPRETATION_LAB:
    case VIPS_INTERPRETATION_LABS:
    case VIPS_INTERPRETATION_LCH:
    case VIPS_INTERPRETATION_CMC:
    case VIPS_INTERPRETATION_XYZ:
    case VIPS_INTERPRETATION_YXY:
    case VIPS_INTERPRETATION_HSV:
    case VIPS_INTERPRETATION_scRGB:
        VIPS_STEP(vips_colourspace(im, &t, VIPS_INTERPRETATION_sRGB, NULL));
        break;
    default: break;
    }
    if (vips_image_hasalpha(im)) {
        /* alpha is opaque at 65535 in 16-bit images, at 255 otherwise (as
         * vips_flatten's own default); the background is white at that scale */
        double white = im->BandFmt == VIPS_FORMAT_USHORT || im->Type == VIPS_INTERPRETATION_RGB16 ||
                               im->Type == VIPS_INTERPRETATION_GREY16
                           ? 65535.0
                           : 255.0;
        VipsArrayDouble *bg = vips_array_double_newv(1, white);
        VipsImage *t = NULL;
        int rc = vips_flatten(im, &t, "background", bg, "max_alpha", white, NULL);
        vips_area_unref(VIPS_AREA(bg));
        g_object_unref(im);
        im = rc == 0 ? t : NULL;
        if (rc != 0) goto vips_fail;
    }
    /* Bands left: 1 (grey) or 3 (RGB); a 2-band image without alpha keeps its
     * first band, 4+ bands (multispectral TIFF) their first three. */
    if (im->Bands == 2 || im->Bands > 3) {
        int keep = im->Bands == 2 ? 1 : 3;
        VIPS_STEP(vips_extract_band(im, &t, 0, "n", keep, NULL));
    }
    const bool is_u8 = im->BandFmt == VIPS_FORMAT_UCHAR, is_u16 = im->BandFmt == VIPS_FORMAT_USHORT;
    if (!is_u8 && !is_u16) VIPS_STEP(vips_cast(im, &t, VIPS_FORMAT_DOUBLE, NULL));

    const int w = im->Xsize, h = im->Ysize, bands = im->Bands;
    size_t bytes;
    mem = vips_image_write_to_memory(im, &bytes); /* decodes: truncation fails here */
    if (!mem) {
        ds_set_error(DS_ERR_FORMAT, "'%s': cannot decode (truncated or corrupt): %s", path,
                     ds_vips_reason(why, sizeof why));
        st = DS_ERR_FORMAT;
        goto done;
    }
    const size_t n = (size_t)w * (size_t)h * (size_t)bands;
    if (is_u8) {
        u8 = mem;
    } else {
        u8 = ds_alloc(n, 1, "ds_image_load");
        if (!u8) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        if ((st = window_to_u8(path, mem, is_u16, n, &p, u8)) != DS_OK) goto done;
    }
    const bool swap = orient >= 5;
    img = ds_image_alloc(swap ? h : w, swap ? w : h, 3);
    if (!img) {
        st = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %dx%d pixels", path, w, h);
        goto done;
    }
    orient_to_rgb(u8, w, h, bands, orient, img);
    *out = img;
    img = NULL;
    st = DS_OK;
    goto done;

vips_fail:
    st = ds_set_error(DS_ERR_FORMAT, "'%s': cannot convert: %s", path, ds_vips_reason(why, sizeof why));
done:
    if (u8 && u8 != mem) free(u8);
    g_free(mem);
    if (im) g_object_unref(im);
    ds_image_free(img);
    vips_error_clear();
    return st;
}

ds_status ds_image_save_png(const char *path, const ds_image *img) {
    if (!path || !img || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3))
        return ds_set_error(DS_ERR_ARG, "ds_image_save_png: invalid image or path");
    ds_status st = ds_image_init();
    if (st != DS_OK) return st;
    char why[512];
    VipsImage *im = vips_image_new_from_memory(img->pixels, (size_t)img->width * img->height * img->channels,
                                               img->width, img->height, img->channels, VIPS_FORMAT_UCHAR);
    if (!im) return ds_set_error(DS_ERR_NOMEM, "ds_image_save_png: '%s': %s", path, ds_vips_reason(why, sizeof why));
    void *buf = NULL;
    size_t len = 0;
    int rc = vips_pngsave_buffer(im, &buf, &len, "compression", 6, "strip", TRUE, NULL);
    g_object_unref(im);
    if (rc != 0) return ds_set_error(DS_ERR_IO, "ds_image_save_png: '%s': %s", path, ds_vips_reason(why, sizeof why));
    ds_atomic_file af;
    st = ds_atomic_open(&af, path);
    if (st == DS_OK) {
        bool ok = fwrite(buf, 1, len, af.fp) == len;
        int err = errno;
        st = ds_atomic_commit(&af, ok);
        if (!ok && st == DS_OK)
            st = ds_set_error(DS_ERR_IO, "ds_image_save_png: cannot write '%s': %s", path, strerror(err));
    }
    g_free(buf);
    return st;
}
