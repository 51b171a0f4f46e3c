/* Images in and out through libvips: PNG, JPEG, TIFF (first page), WebP, BMP,
 * PNM; 8/16-bit; grey, grey+alpha, RGB, RGBA, CMYK. Loaded images are always
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

typedef struct {
    int width, height, channels; /* channels: 1 or 3 */
    uint8_t *pixels;             /* [height, width, channels], owned */
} ds_image;

typedef struct {
    int64_t max_pixels;       /* refuse larger images (decompression bombs); 0 = default 2^28 */
    int window_set;           /* 1: map 16-bit by [window_min, window_max] */
    double window_min, window_max;
    /* otherwise 16-bit images are windowed at these percentiles (default 0.5, 99.5) */
    double window_lo_pct, window_hi_pct;
} ds_image_load_params;

/* Must be called once before any other image call (initialises libvips).
 * Returns DS_OK or DS_ERR_UNSUPPORTED. */
ds_status ds_image_init(void);

/* New zeroed image, NULL (error set) on bad size or no memory. */
ds_image *ds_image_create(int width, int height, int channels);
void ds_image_free(ds_image *img);

/* Loads path as 8-bit RGB. params may be NULL (defaults). Errors name the file
 * and the reason ("'x.png': truncated PNG", "'y': not an image"). */
ds_status ds_image_load(const char *path, const ds_image_load_params *params, ds_image **out);

/* Writes img as PNG atomically (temp + rename). */
ds_status ds_image_save_png(const char *path, const ds_image *img);

/* A list of input images with optional labels from a labels.csv. */
typedef struct {
    int n;
    char **paths;   /* [n] */
    int *labels;    /* [n], -1 when unknown */
    char **splits;  /* [n], NULL entries when unknown */
    char **masks;   /* [n], NULL entries when none */
} ds_image_list;

/* Expands command-line arguments: a file is itself; a folder means every image
 * in it (sorted, recursive if asked); a .csv with a `filename` column means
 * those files relative to the CSV (split/label/maskfile read when present).
 * Returns DS_OK or an error naming the argument. */
ds_status ds_image_list_expand(const char *const *args, int n_args, int recursive, ds_image_list **out);
void ds_image_list_free(ds_image_list *list);

#ifdef __cplusplus
}
#endif
#endif
