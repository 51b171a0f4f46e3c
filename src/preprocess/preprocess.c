/* The preparation the seed Python pipeline applies before DINOv2:
 *   img = cv2 CLAHE on L of LAB (optional, on the full-resolution image)
 *   img = torchvision Resize((S, S), BICUBIC)(PIL image)
 *   x   = Normalize(mean, std)(ToTensor()(img))
 * Each step reproduces its reference's integer/float arithmetic (see lab.c,
 * clahe.c, resize.c), so the tensor fed to the network does not depend on
 * which tool prepared it. No threading here: callers parallelise over images
 * (STYLE: one level of parallelism). */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/preprocess.h"
#include "image/image_internal.h"
#include "preprocess/preprocess_internal.h"

/* torchvision / DINOv2 ImageNet statistics (as float32, like torch.tensor) */
const float DS_IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f};
const float DS_IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};

ds_preprocess_params ds_preprocess_defaults(void) {
    ds_preprocess_params p = {.size = 518, .stain = DS_STAIN_NONE, .clahe_clip = 2.0, .clahe_tiles = 8};
    return p;
}

static ds_status check_image(const char *fn, const ds_image *img) {
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || (img->channels != 1 && img->channels != 3))
        return ds_set_error(DS_ERR_ARG, "%s: invalid image (NULL, empty or channels not 1 or 3)", fn);
    return DS_OK;
}

ds_status ds_resize_bicubic(const ds_image *src, int out_w, int out_h, ds_image **out) {
    ds_status st = check_image("ds_resize_bicubic", src);
    if (st != DS_OK) return st;
    if (!out) return ds_set_error(DS_ERR_ARG, "ds_resize_bicubic: out is NULL");
    if (out_w <= 0 || out_h <= 0)
        return ds_set_error(DS_ERR_ARG, "ds_resize_bicubic: output size %dx%d must be positive", out_w, out_h);
    ds_image *dst = ds_image_alloc(out_w, out_h, src->channels);
    if (!dst) return DS_ERR_NOMEM;
    st = ds_resize_bicubic_u8(src->pixels, src->width, src->height, src->channels, dst->pixels, out_w, out_h);
    if (st != DS_OK) {
        ds_image_free(dst);
        return st;
    }
    *out = dst;
    return DS_OK;
}

ds_status ds_clahe_rgb(ds_image *img, double clip, int tiles) {
    ds_status st = check_image("ds_clahe_rgb", img);
    if (st != DS_OK) return st;
    if (img->channels != 3)
        return ds_set_error(DS_ERR_SHAPE, "ds_clahe_rgb: image has %d channel(s), expected 3 (RGB)", img->channels);
    if (tiles < 1 || tiles > 4096) return ds_set_error(DS_ERR_ARG, "ds_clahe_rgb: tiles %d out of range [1, 4096]", tiles);
    if (!(clip >= 0.0)) return ds_set_error(DS_ERR_ARG, "ds_clahe_rgb: clip limit %g must be >= 0", clip);
    const size_t n = (size_t)img->width * (size_t)img->height;
    uint8_t *lab = ds_alloc(n, 3, "ds_clahe_rgb");
    if (!lab) return DS_ERR_NOMEM;
    ds_lab_from_rgb_u8(img->pixels, lab, n);
    const size_t stride = (size_t)img->width * 3;
    st = ds_clahe_plane_u8(lab, stride, 3, lab, stride, 3, img->width, img->height, clip, tiles, tiles);
    if (st == DS_OK) ds_lab_to_rgb_u8(lab, img->pixels, n); /* img untouched on failure */
    free(lab);
    return st;
}

ds_status ds_preprocess_image(const ds_image *src, const ds_preprocess_params *params, ds_image **out) {
    ds_status st = check_image("ds_preprocess_image", src);
    if (st != DS_OK) return st;
    if (!out) return ds_set_error(DS_ERR_ARG, "ds_preprocess_image: out is NULL");
    ds_preprocess_params p = params ? *params : ds_preprocess_defaults();
    if (p.size < 0) return ds_set_error(DS_ERR_ARG, "ds_preprocess_image: size %d must be >= 0", p.size);
    if (p.stain != DS_STAIN_NONE && p.stain != DS_STAIN_CLAHE)
        return ds_set_error(DS_ERR_ARG, "ds_preprocess_image: unknown stain normalisation %d", (int)p.stain);

    /* RGB working copy (grey replicated: the reference converts to RGB first) */
    ds_image *work = ds_image_alloc(src->width, src->height, 3);
    if (!work) return DS_ERR_NOMEM;
    const size_t n = (size_t)src->width * (size_t)src->height;
    if (src->channels == 3) {
        memcpy(work->pixels, src->pixels, n * 3);
    } else {
        for (size_t i = 0; i < n; i++) work->pixels[3 * i] = work->pixels[3 * i + 1] = work->pixels[3 * i + 2] = src->pixels[i];
    }
    if (p.stain == DS_STAIN_CLAHE && (st = ds_clahe_rgb(work, p.clahe_clip, p.clahe_tiles)) != DS_OK) {
        ds_image_free(work);
        return st;
    }
    if (p.size > 0 && (work->width != p.size || work->height != p.size)) {
        ds_image *resized = NULL;
        st = ds_resize_bicubic(work, p.size, p.size, &resized);
        ds_image_free(work);
        if (st != DS_OK) return st;
        work = resized;
    }
    *out = work;
    return DS_OK;
}

void ds_image_to_tensor(const ds_image *img, const float mean[3], const float std[3], float *dst) {
    /* torchvision ToTensor (v / 255 in float32) then Normalize ((x - m) / s),
     * same float operations, tabulated per channel. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
    const size_t n = (size_t)img->width * (size_t)img->height;
    const int ch = img->channels;
    for (int c = 0; c < 3; c++) {
        const int sc = ch == 3 ? c : 0;
        float *d = dst + (size_t)c * n;
        for (size_t i = 0; i < n; i++) d[i] = lut[c][img->pixels[i * (size_t)ch + (size_t)sc]];
    }
}
