/* Model weights: safetensors (F32/F16/BF16, memory-mapped) and PyTorch .pth
 * checkpoints (zip of a pickled state_dict + raw storages, as torch.save and
 * torch.hub write them). The file is distrusted: every header field, offset,
 * dtype and element count is checked before a tensor is handed out.
 *
 *   ds_weights *w;
 *   if (ds_weights_load("dinov2_vits14.safetensors", &w) != DS_OK)
 *       fprintf(stderr, "%s\n", ds_last_error());
 *   const ds_tensor *t = ds_weights_find(w, "cls_token");
 *   ...
 *   ds_weights_free(w);
 */
#ifndef DINOSCOPE_WEIGHTS_H
#define DINOSCOPE_WEIGHTS_H

#include "dinoscope.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

#define DS_TENSOR_MAX_DIMS 8

typedef enum { DS_DTYPE_F32 = 0, DS_DTYPE_F16 = 1, DS_DTYPE_BF16 = 2 } ds_dtype;

/* One tensor, a view: data points into the mmap (safetensors) or into a
 * buffer owned by the ds_weights (.pth) and stays valid until
 * ds_weights_free. Row-major, contiguous, little-endian. */
typedef struct {
    const char *name;
    ds_dtype dtype;
    int n_dims;
    int64_t shape[DS_TENSOR_MAX_DIMS]; /* outermost first */
    int64_t n_elements;
    const void *data;
} ds_tensor;

typedef struct ds_weights ds_weights;

/* Loads path, detecting the format from its first bytes (a zip = .pth, else
 * safetensors). Returns DS_OK and *out, or DS_ERR_IO / DS_ERR_FORMAT /
 * DS_ERR_UNSUPPORTED / DS_ERR_NOMEM with a message naming the file and, where
 * it applies, the tensor; *out is untouched on error. */
ds_status ds_weights_load(const char *path, ds_weights **out);
void ds_weights_free(ds_weights *w);

/* Number of tensors; i-th tensor (0 <= i < count), NULL when out of range. */
int ds_weights_count(const ds_weights *w);
const ds_tensor *ds_weights_get(const ds_weights *w, int i);
/* Tensor by exact name, NULL if absent (no error set). */
const ds_tensor *ds_weights_find(const ds_weights *w, const char *name);
/* safetensors __metadata__ value for key, NULL if absent. */
const char *ds_weights_metadata(const ds_weights *w, const char *key);
/* Path the weights were loaded from. */
const char *ds_weights_path(const ds_weights *w);

/* Converts t to float32 into dst [t->n_elements]. This function can't fail
 * for a tensor returned by this module. */
void ds_tensor_to_f32(const ds_tensor *t, float *dst);

/* SHA-256 of the whole file as 64 lowercase hex chars + NUL into hex[65]. */
ds_status ds_file_sha256(const char *path, char hex[65]);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
