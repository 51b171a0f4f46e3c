/* Private to src/weights: the ds_weights object shared by the safetensors and
 * .pth readers, and the helpers they both use. */
#ifndef DS_WEIGHTS_INTERNAL_H
#define DS_WEIGHTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"
#include "dinoscope/weights.h"

typedef struct {
    const char *name; /* == tensors[index].name */
    int index;
} ds_name_index;

struct ds_weights {
    char *path;
    ds_tensor *tensors; /* [n_tensors], in file order; names are owned strings */
    int n_tensors;
    int cap_tensors;
    ds_name_index *by_name; /* [n_tensors] sorted by name, for bsearch */

    char **meta_keys; /* safetensors __metadata__: [n_meta] owned strings */
    char **meta_values;
    int n_meta;

    /* Backing memory, which tensors' data point into: map is the read-only
     * mmap of a safetensors file, or the anonymous arena holding a .pth's
     * storages (read-only once filled); buffers are owned 64-byte-aligned
     * copies of misaligned safetensors tensors. */
    void *map;
    size_t map_bytes;
    void **buffers;
    int n_buffers;
    int cap_buffers;
};

/* Bytes per element of a dtype. */
static inline size_t ds_dtype_size(ds_dtype dt) { return dt == DS_DTYPE_F32 ? 4 : 2; }

/* Appends a tensor (name copied) and returns it, or NULL with DS_ERR_NOMEM
 * set. The caller fills in the remaining fields. */
ds_tensor *ds_weights_add_tensor(ds_weights *w, const char *name, size_t name_len);

/* Takes ownership of buf (freed by ds_weights_free; freed here on failure).
 * Returns DS_OK or DS_ERR_NOMEM. */
ds_status ds_weights_own_buffer(ds_weights *w, void *buf);

/* Builds the sorted name index and rejects duplicate names. Called once by
 * ds_weights_load after a reader succeeds. Returns DS_OK, DS_ERR_FORMAT
 * (duplicate name) or DS_ERR_NOMEM. */
ds_status ds_weights_index(ds_weights *w);

/* Element count of shape[0..n_dims) with overflow checks: false when it, or
 * the byte count at itemsize, does not fit in int64 / size_t. */
bool ds_shape_elements(const int64_t *shape, int n_dims, size_t itemsize, int64_t *n_elements, size_t *n_bytes);

/* Writes "d0 x d1 x ... x itemsize" (or "itemsize" for a scalar) into buf. */
void ds_shape_format(char *buf, size_t cap, const int64_t *shape, int n_dims, size_t itemsize);

/* The two readers. fd-free: each opens path itself; file_bytes is the size
 * from fstat. They fill w (path already set) or return an error with the
 * message set, leaving partial state for ds_weights_free. */
ds_status ds_safetensors_read(ds_weights *w, int fd, size_t file_bytes);
ds_status ds_pth_read(ds_weights *w, size_t file_bytes);

#endif
