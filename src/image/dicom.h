/* DICOM through DCMTK (dicom.cpp, the one C++ file): a C interface for
 * image.c and list.c. Internal to src/ (not installed). */
#ifndef DS_IMAGE_DICOM_H
#define DS_IMAGE_DICOM_H

#include "dinoscope/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes frame p->frame of the DICOM file path into a new 8-bit RGB image
 * (semantics in image.h, ds_image_load). p is resolved (no NULL, defaults
 * filled in). Returns DS_OK or an error naming path; *out only on success. */
ds_status ds_dicom_load(const char *path, const ds_image_load_params *p, ds_image **out);

/* Header only: width, height and number of frames (each may be NULL), with
 * the pixel limit and frame index checked. Same errors as ds_dicom_load. */
ds_status ds_dicom_probe(const char *path, const ds_image_load_params *p, int *width, int *height, int *n_frames);

/* The files a DICOMDIR references in its IMAGE records, in record order, as
 * paths joined to the DICOMDIR's folder. *paths: malloc'd array of *n
 * malloc'd strings (free each, then the array). Returns DS_OK, DS_ERR_IO or
 * DS_ERR_FORMAT (not a DICOMDIR, no image records); outputs only on success. */
ds_status ds_dicom_dir_files(const char *dicomdir, char ***paths, int *n);

#ifdef __cplusplus
}
#endif
#endif
