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

/* One slice of a series for ds_volume_load_dicom_series: its geometry and
 * its modality values (PS3.3 C.11.1: stored * Rescale Slope + Rescale
 * Intercept, in double precision as pydicom's apply_modality_lut), no VOI
 * window. Grey-scale single-frame images only. */
typedef struct {
    char series_uid[72];     /* Series Instance UID ("" when absent) */
    int rows, cols;
    int has_position;        /* Image Position and Orientation (Patient) both present */
    double ipp[3];           /* Image Position (Patient): centre of the first voxel, LPS mm */
    double iop[6];           /* Image Orientation (Patient): row, then column direction cosines */
    double spacing[2];       /* Pixel Spacing: row spacing, column spacing (mm; 1 when absent) */
    double slice_thickness;  /* Slice Thickness (0 when absent) */
    int instance;            /* Instance Number (0 when absent) */
    float *values;           /* [rows, cols] malloc'd (free it) */
} ds_dicom_slice;

/* Reads path as one slice (values as above). p: the pixel limit. Returns
 * DS_OK; DS_ERR_UNSUPPORTED for colour or multi-frame files; the errors of
 * ds_dicom_load otherwise (naming path); out->values only on success. */
ds_status ds_dicom_read_slice(const char *path, const ds_image_load_params *p, ds_dicom_slice *out);

#ifdef __cplusplus
}
#endif
#endif
