/* Images in and out through libvips: PNG, JPEG, TIFF (first page), WebP, BMP,
 * PNM; 8/16-bit; grey, grey+alpha, RGB, RGBA, CMYK. DICOM (Part 10 files;
 * .dcm, or any file with the "DICM" marker) through DCMTK, with its pixel
 * semantics (rescale, VOI window, MONOCHROME1, YBR). Loaded images are always
 * 8-bit RGB, alpha composited on white, EXIF orientation applied.
 *
 * Memory layout: pixels [H,W,C] u8, top-left first, no padding between rows.
 */
#ifndef DINOSCOPE_IMAGE_H
#define DINOSCOPE_IMAGE_H

#include "dinoscope.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef struct {
    int width, height, channels; /* channels: 1 or 3 */
    uint8_t *pixels;             /* [height, width, channels], owned */
    /* physical size of a pixel in mm, [row spacing, column spacing] (DICOM
     * Pixel Spacing, else Imager Pixel Spacing); 0 = unknown */
    double spacing_mm[2];
} ds_image;

typedef struct {
    int64_t max_pixels;       /* refuse larger images (decompression bombs); 0 = default 2^28 */
    int window_set;           /* 1: map >8-bit samples by the fixed window [window_min, window_max] */
    double window_min, window_max;
    /* otherwise >8-bit images are windowed at these percentiles of all their
     * samples (numpy's linear method); both 0 = the default 0.5 and 99.5 */
    double window_lo_pct, window_hi_pct;
    /* DICOM only (other formats ignore them):
     * voi_set: 1 = apply this VOI window (DICOM PS3.3 C.11.2.1.2 "LINEAR"
     * with Window Center/Width) to the modality values (CT: Hounsfield
     * units) instead of the file's own window; see ds_image_window_preset.
     * frame: 0-based frame of a multi-frame file (default 0). */
    int voi_set;
    double voi_center, voi_width;
    int frame;
} ds_image_load_params;

/* The CT window of a named preset (Radiopaedia, "Windowing (CT)"; center /
 * width in HU): "lung" -600/1500, "soft-tissue" 40/400, "bone" 400/1800,
 * "brain" 40/80. Returns DS_OK, or DS_ERR_ARG (error names the presets) for
 * an unknown name; outputs are only set on success. */
ds_status ds_image_window_preset(const char *name, double *center, double *width);

/* Initialises libvips once (thread-safe, idempotent; the other image calls
 * also call it). libvips' own warnings on stderr are silenced because every
 * failure is reported through ds_last_error(); set DS_VIPS_WARNINGS=1 to keep
 * them. Returns DS_OK or DS_ERR_UNSUPPORTED. */
ds_status ds_image_init(void);

/* New zeroed image (channels 1 or 3), NULL (error set) on bad size or no
 * memory. Free with ds_image_free, which accepts NULL. */
ds_image *ds_image_create(int width, int height, int channels);
void ds_image_free(ds_image *img);

/* Loads path as 8-bit RGB (channels = 3). params may be NULL (defaults).
 *   - grey is replicated to RGB; alpha is composited on white; CMYK, LAB
 *     etc. go to sRGB through libvips' colour management; an RGB image's
 *     ICC profile is ignored (as PIL's convert("RGB"));
 *   - samples of more than 8 bits are mapped to 0..255 by a window [lo, hi]:
 *     v' = round((v - lo) / (hi - lo) * 255) clipped; lo, hi are fixed
 *     (window_set) or percentiles of the image (default 0.5 and 99.5);
 *   - EXIF orientation is applied (as PIL's ImageOps.exif_transpose);
 *   - multi-page files (TIFF, GIF): the first page.
 * DICOM files (see ds_image_is_dicom) are read through DCMTK: uncompressed
 * (implicit/explicit VR, little/big endian, deflated), JPEG baseline,
 * extended and lossless, JPEG-LS and RLE; JPEG 2000 is refused (Debian's
 * DCMTK has no JPEG 2000 codec). The frame params->frame is decoded, then:
 *   - monochrome: modality values = stored * Rescale Slope + Rescale
 *     Intercept (or the Modality LUT), then the first of: --window [min,max]
 *     (linear, as above), params->voi_center/width, the file's VOI LUT
 *     Sequence, its first Window Center/Width (VOI LUT Function LINEAR,
 *     LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2-3), the stored values as they
 *     are when they are 8-bit without rescale, else the percentile window;
 *     MONOCHROME1 is inverted after the window (255 - v);
 *   - colour (RGB, YBR_*, PALETTE COLOR): converted to RGB by DCMTK;
 *   - Pixel Spacing goes to img->spacing_mm.
 * Errors are one line naming the file, e.g. "'x.dcm': not a DICOM file (...)",
 * "'x.dcm': no pixel data", "'x.dcm': frame 5 of 3", "'x.dcm': transfer
 * syntax JPEG 2000 ... is not supported".
 * Errors name the file and the reason, one line: "'x.png': no such file",
 * "'x.png': empty file (0 bytes)", "'x.txt': not an image (unknown or
 * unsupported format)", "'x.png': cannot decode (truncated or corrupt): ...",
 * "'x.tif': 40000x40000 = ... pixels exceeds the limit of ...". The pixel
 * limit is checked from the header, before decoding.
 * Returns DS_OK, DS_ERR_IO (missing, unreadable, directory), DS_ERR_FORMAT
 * (not an image, corrupt), DS_ERR_UNSUPPORTED (over the pixel limit),
 * DS_ERR_ARG or DS_ERR_NOMEM; *out is only set on success. */
ds_status ds_image_load(const char *path, const ds_image_load_params *params, ds_image **out);

/* True when path names a DICOM file: extension .dcm / .dicom (any case), or
 * the Part 10 marker "DICM" at byte 128. Reads at most 132 bytes; false for
 * unreadable files. This function can't fail. */
int ds_image_is_dicom(const char *path);

/* Header-only check of path (exists, is an image libvips can open, within
 * the pixel limit) without decoding the pixels: cheap, to reject bad inputs
 * before a long run. width/height (may be NULL) receive the size after EXIF
 * orientation. A file that passes may still fail ds_image_load when its
 * pixel data is truncated. Same errors as ds_image_load. */
ds_status ds_image_probe(const char *path, const ds_image_load_params *params, int *width, int *height);

/* Writes img (1 or 3 channels) as an 8-bit PNG atomically (temp file +
 * rename: no partial file is left on failure). Returns DS_OK, DS_ERR_ARG or
 * DS_ERR_IO. */
ds_status ds_image_save_png(const char *path, const ds_image *img);

/* Encodes img (1 or 3 channels) as an 8-bit PNG in memory, e.g. for a data
 * URI. compression: zlib level 0..9 (6 = libvips' default). *data is a new
 * malloc'd buffer of *n_bytes bytes; free it with free(). Returns DS_OK,
 * DS_ERR_ARG or DS_ERR_NOMEM; outputs are only set on success. */
ds_status ds_image_encode_png(const ds_image *img, int compression, uint8_t **data, size_t *n_bytes);

/* A list of input images with optional labels from a labels.csv. */
typedef struct {
    int n;
    char **paths;   /* [n] */
    int *labels;    /* [n], -1 when unknown */
    char **splits;  /* [n], NULL entries when unknown */
    char **masks;   /* [n], NULL entries when none */
} ds_image_list;

/* Expands command-line arguments: a file is itself; a folder means every image
 * in it (sorted, recursive if asked; DICOM files by extension .dcm/.dicom or,
 * without an extension, by their "DICM" marker); a file named DICOMDIR means
 * the image files its records reference (relative to its folder); a .csv
 * with a `filename` column means those files relative to the CSV
 * (split/label/maskfile read when present).
 * Returns DS_OK or an error naming the argument. */
ds_status ds_image_list_expand(const char *const *args, int n_args, int recursive, ds_image_list **out);
void ds_image_list_free(ds_image_list *list);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
