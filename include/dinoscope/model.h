/* Fitted-model files: one file holds everything `score` needs.
 *
 * Layout (little-endian):
 *   [0,64)    header: magic "DSCOPEMD", u32 format version, u32 n_sections,
 *             u64 table offset, u64 file size, u32 table crc32, 28 bytes zero
 *   sections  each 64-byte aligned, so that f32 arrays are used in place
 *             from the mmap
 *   table     n_sections entries of 128 bytes: name[64] (NUL-padded),
 *             u32 dtype (0 f32, 1 bytes), u32 n_dims, i64 shape[4],
 *             u64 offset, u64 n_bytes, u32 crc32, 4 bytes zero
 * The section "meta" holds a JSON document (backbone identity, preprocessing,
 * scorers' parameters). Files are written atomically (temp + rename).
 * Loading checks the magic, the version (newer is refused), the sizes, every
 * offset and every section's CRC-32 before anything is used. */
#ifndef DINOSCOPE_MODEL_H
#define DINOSCOPE_MODEL_H

#include "dinoscope.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_MODEL_FORMAT_VERSION 1

typedef enum { DS_SECTION_F32 = 0, DS_SECTION_BYTES = 1 } ds_section_dtype;

typedef struct {
    const char *name;
    ds_section_dtype dtype;
    int n_dims;
    int64_t shape[4];
    const void *data; /* view into the mapping, 64-byte aligned */
    uint64_t n_bytes;
} ds_model_section;

typedef struct ds_model_file ds_model_file;

/* Maps and validates path. Errors name the file and the problem. */
ds_status ds_model_file_open(const char *path, ds_model_file **out);
void ds_model_file_close(ds_model_file *m);
int ds_model_file_n_sections(const ds_model_file *m);
const ds_model_section *ds_model_file_section_at(const ds_model_file *m, int i);
/* NULL (no error set) if absent. */
const ds_model_section *ds_model_file_section(const ds_model_file *m, const char *name);

typedef struct ds_model_writer ds_model_writer;
ds_status ds_model_writer_open(const char *path, ds_model_writer **out);
/* Appends a section (data copied to the file now). */
ds_status ds_model_writer_add(ds_model_writer *w, const char *name, ds_section_dtype dtype, int n_dims,
                              const int64_t *shape, const void *data, uint64_t n_bytes);
/* ok: write the table and header, rename into place; !ok: discard. Frees w. */
ds_status ds_model_writer_close(ds_model_writer *w, int ok);

#ifdef __cplusplus
}
#endif
#endif
