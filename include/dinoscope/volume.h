/* Volumes (CT, MRI) from NIfTI-1 files (.nii, .nii.gz) through Debian's
 * niftiio, and anomaly maps written back in the same space.
 *
 *   ds_volume *v;
 *   ds_volume_load("t1.nii.gz", &v);              // [nz, ny, nx] float, scaled
 *   ds_volume_window(v, 0.5, 99.5, &lo, &hi);     // one window for every slice
 *   ds_volume_slice(v, k, 1, lo, hi, &img);       // 2.5D: slices k-1, k, k+1 as R, G, B
 *   ds_volume_save_nifti("map.nii.gz", map, v->nx, v->ny, v->nz, v->affine);
 *
 * Memory layout: data[k][j][i] = voxel (i, j, k), i fastest (NIfTI's own order). */
#ifndef DINOSCOPE_VOLUME_H
#define DINOSCOPE_VOLUME_H

#include "dinoscope.h"
#include "image.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef struct {
    int nx, ny, nz;       /* voxels along i, j, k (NIfTI dim[1..3]; a 2D file has nz = 1) */
    float *data;          /* [nz, ny, nx], stored values * scl_slope + scl_inter (when scl_slope != 0), owned */
    double affine[4][4];  /* voxel (i, j, k, 1) -> (x, y, z, 1) in mm: the sform when sform_code > 0,
                             else the qform when qform_code > 0, else diag(pixdim) (as nibabel's
                             Nifti1Image.affine and niftiio's sto_xyz/qto_xyz) */
    double spacing_mm[3]; /* pixdim[1..3] */
} ds_volume;

/* Loads a 3D NIfTI-1 file (a 4D file: its first volume). Every integer and
 * float datatype; complex and RGB are refused. The header is checked before
 * the data are read (dimensions, voxel count against the file size, at most
 * 2^30 voxels). Errors name the file. Returns DS_OK, DS_ERR_IO, DS_ERR_FORMAT,
 * DS_ERR_UNSUPPORTED or DS_ERR_NOMEM; *out only on success. */
ds_status ds_volume_load(const char *path, ds_volume **out);
void ds_volume_free(ds_volume *v);

/* Percentiles lo_pct, hi_pct (numpy "linear", as ds_image_load's window) of
 * all voxels: one window for every slice, so that slices compare. Returns
 * DS_OK or DS_ERR_ARG / DS_ERR_NOMEM. */
ds_status ds_volume_window(const ds_volume *v, double lo_pct, double hi_pct, double *lo, double *hi);

/* Slice k (0 <= k < nz) as an 8-bit RGB image of nx x ny (row j, column i):
 * v' = round((v - lo) / (hi - lo) * 255) clipped. context 0: grey (R = G = B
 * = slice k); context 1 ("2.5D"): R, G, B = slices k-1, k, k+1 (clamped at
 * the ends), so that the backbone sees the neighbouring slices. Returns
 * DS_OK, DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_volume_slice(const ds_volume *v, int k, int context, double lo, double hi, ds_image **out);

/* Writes data [nz, ny, nx] float32 as a NIfTI-1 file (.nii or .nii.gz by the
 * name) with the given affine as sform and qform (codes 2 "aligned"), so
 * that viewers (3D Slicer, ITK-SNAP) overlay it on the scan it came from.
 * Written atomically (temp file + rename). Returns DS_OK, DS_ERR_ARG or
 * DS_ERR_IO. */
ds_status ds_volume_save_nifti(const char *path, const float *data, int nx, int ny, int nz, const double affine[4][4]);

/* Scores every slice k of v with a fitted model (its preprocessing,
 * backbone bb and scorers; ds_model_score_images in batches of batch
 * slices): each slice is ds_volume_slice(v, k, context, lo, hi). A model
 * meant for context 1 must have been fitted on 2.5D slices too.
 *   slice_scores: [nz, n_scorers] output, the model's scorer order;
 *   map:          [nz, ny, nx] output or NULL: the map scorer's anomaly map
 *                 of each slice at nx x ny (ds_model_anomaly_map), to be
 *                 written with ds_volume_save_nifti and v->affine;
 *   volume_scores: [n_scorers] output or NULL: the max over slices.
 * Returns DS_OK or the first error; outputs are unspecified on failure. */
struct ds_model;
struct ds_backbone;
ds_status ds_volume_score(const struct ds_model *m, struct ds_backbone *bb, const ds_volume *v, int context, double lo,
                          double hi, int batch, int n_threads, float *slice_scores, float *map, float *volume_scores);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
