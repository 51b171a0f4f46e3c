/* PNG encoding into memory (for reports that embed images as data URIs).
 * libvips' pngsave_buffer hands back a g_malloc'd buffer; we copy it into a
 * plain malloc'd one so that callers free it with free() like every other
 * dinoscope output and never need glib. */
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "core/internal.h"
#include "dinoscope/image.h"

ds_status ds_image_encode_png(const ds_image *img, int compression, uint8_t **data, size_t *n_bytes) {
    if (!img || !data || !n_bytes || !img->pixels || img->width <= 0 || img->height <= 0 ||
        (img->channels != 1 && img->channels != 3))
        return ds_set_error(DS_ERR_ARG, "ds_image_encode_png: invalid image or output");
    if (compression < 0 || compression > 9)
        return ds_set_error(DS_ERR_ARG, "ds_image_encode_png: compression %d is not in 0..9", compression);
    size_t n_px;
    if (!ds_mul_size((size_t)img->width, (size_t)img->height, &n_px) || !ds_mul_size(n_px, (size_t)img->channels, &n_px))
        return ds_set_error(DS_ERR_NOMEM, "ds_image_encode_png: %dx%d image is too large", img->width, img->height);
    ds_status st = ds_image_init();
    if (st != DS_OK) return st;
    VipsImage *im = vips_image_new_from_memory(img->pixels, n_px, img->width, img->height, img->channels,
                                               VIPS_FORMAT_UCHAR);
    if (!im) {
        vips_error_clear();
        return ds_set_error(DS_ERR_NOMEM, "ds_image_encode_png: cannot wrap a %dx%d image", img->width, img->height);
    }
    void *buf = NULL;
    size_t len = 0;
    int rc = vips_pngsave_buffer(im, &buf, &len, "compression", compression, "strip", TRUE, NULL);
    g_object_unref(im);
    if (rc != 0 || !buf) {
        vips_error_clear();
        g_free(buf);
        return ds_set_error(DS_ERR_NOMEM, "ds_image_encode_png: libvips could not encode a %dx%d image", img->width,
                            img->height);
    }
    uint8_t *out = malloc(len);
    if (!out) {
        g_free(buf);
        return ds_set_error(DS_ERR_NOMEM, "ds_image_encode_png: out of memory (%zu bytes)", len);
    }
    memcpy(out, buf, len);
    g_free(buf);
    *data = out;
    *n_bytes = len;
    return DS_OK;
}
