/* Internal to src/image and its users in src/ (not installed). */
#ifndef DS_IMAGE_INTERNAL_H
#define DS_IMAGE_INTERNAL_H

#include "dinoscope/image.h"

/* As ds_image_create, but the pixels are left uninitialised: for outputs that
 * are written in full, which saves zeroing (and first-touching twice) a
 * buffer of up to w*h*c bytes. NULL (error set) on bad size or no memory. */
ds_image *ds_image_alloc(int width, int height, int channels);

/* The last non-empty line of libvips' error buffer (the most specific
 * reason), copied into buf[n]; clears the buffer. Returns buf. (image.c) */
const char *ds_vips_reason(char *buf, size_t n);

/* DS_ERR_FORMAT when the header of the PNG or TIFF at path declares more
 * pixel data than its file_bytes can hold (declared_size.c), DS_OK for
 * other formats and for headers it cannot read (libvips reports those). */
ds_status ds_image_check_declared_size(const char *path, uint64_t file_bytes);

#endif
