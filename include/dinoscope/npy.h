/* NumPy .npy files (format 1.0, little-endian float32, C order): the format
 * `extract` writes and `--features` reads, so Python users can np.load() it. */
#ifndef DINOSCOPE_NPY_H
#define DINOSCOPE_NPY_H

#include "dinoscope.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

#define DS_NPY_MAX_DIMS 8

/* Writes data [shape[0], ..., shape[n_dims-1]] f32 to path atomically (temp
 * file + rename). Returns DS_OK, or DS_ERR_IO/DS_ERR_ARG; on error no file
 * is left at path. */
ds_status ds_npy_write_f32(const char *path, const float *data, int n_dims, const int64_t *shape);

/* Reads a '<f4' (or '<f8', converted) C-order .npy. On success *data is a
 * malloc'd buffer the caller frees with free(); shape gets n_dims entries.
 * Returns DS_ERR_FORMAT with a message for anything else. */
ds_status ds_npy_read_f32(const char *path, float **data, int *n_dims, int64_t shape[DS_NPY_MAX_DIMS]);

/* A '<f4' C-order .npy mapped read-only, for files larger than memory:
 * the header is checked as ds_npy_read_f32 does (and the file must hold the
 * declared bytes) before anything is mapped; data points into the mapping
 * (4-byte aligned), valid until ds_npy_unmap. Pages are read on first use.
 * Returns DS_OK, DS_ERR_IO, DS_ERR_FORMAT (float64 too: convert it first). */
typedef struct {
    const float *data;        /* [shape[0], ..., shape[n_dims-1]] */
    int n_dims;
    int64_t shape[DS_NPY_MAX_DIMS];
    void *base;               /* the mapping, map_bytes long, from file offset 0 */
    size_t map_bytes, data_offset;
} ds_npy_map;
ds_status ds_npy_map_f32(const char *path, ds_npy_map *out);
/* Unmaps m (NULL or never mapped: no-op). */
void ds_npy_unmap(ds_npy_map *m);

/* Streaming writer for outputs too large to hold in memory: rows are appended
 * to a temp file and the header (whose first dimension may change, e.g. when
 * inputs are skipped) is rewritten on close, then the file is renamed into
 * place. Nothing appears at path unless ds_npy_writer_close(w, 1) succeeds. */
typedef struct ds_npy_writer ds_npy_writer;
ds_status ds_npy_writer_open(const char *path, int n_dims, const int64_t *shape, ds_npy_writer **out);
/* Appends n floats (whole rows of shape[1:] are expected by the caller). */
ds_status ds_npy_writer_append(ds_npy_writer *w, const float *data, size_t n);
/* ok != 0: set shape[0] = n_rows, finish and rename; ok == 0: discard.
 * Always frees w. Returns the first error met. */
ds_status ds_npy_writer_close(ds_npy_writer *w, int ok, int64_t n_rows);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
