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

/* Loads a DICOM series from the folder dir: every *.dcm file (any case;
 * also .dicom, .ima) and every file without an extension is a slice (other
 * files are ignored; a slice that cannot be read is an error naming it).
 * Slices are grouped by Series Instance UID: series_uid chooses one, NULL
 * takes the only one (several: DS_ERR_ARG listing them). They are ordered
 * along the slice normal (row cosine x column cosine of Image Orientation
 * (Patient)) by the projection of Image Position (Patient), not by file name
 * or Instance Number (which orders them only when no slice has a position);
 * duplicate positions, uneven spacing (a missing slice: more than 1% off the
 * mean step), mixed sizes or orientations are DS_ERR_FORMAT.
 * Voxels: modality values (stored * Rescale Slope + Rescale Intercept, e.g.
 * CT in HU), no VOI window; grey-scale single-frame slices only.
 * Voxel (i, j, k) = (column, row, slice). affine: to RAS mm, the NIfTI
 * convention: diag(-1, -1, 1, 1) times the LPS matrix of PS3.3 C.7.6.2.1.1
 * [row cosine * column spacing, column cosine * row spacing, step, first
 * position], the step being (last position - first) / (nz - 1) (as ITK and
 * 3D Slicer write NIfTI from DICOM). spacing_mm: column spacing, row
 * spacing, |step|. Returns DS_OK, DS_ERR_IO, DS_ERR_FORMAT, DS_ERR_ARG,
 * DS_ERR_UNSUPPORTED or DS_ERR_NOMEM; *out only on success. */
ds_status ds_volume_load_dicom_series(const char *dir, const char *series_uid, ds_volume **out);

/* The volume cut along axis (0 = i, 1 = j, 2 = k; 2 is a copy): a new
 * volume whose slices k' are the planes of constant i (axis 0: voxel (j, k)
 * at column j, row k), constant j (axis 1: (i, k)) or constant k, with the
 * affine's columns and the spacings permuted so that it describes the same
 * voxels in the same space. Free with ds_volume_free. Returns DS_OK,
 * DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_volume_reslice(const ds_volume *v, int axis, ds_volume **out);

/* The inverse of ds_volume_reslice for a map: sliced [nz', ny', nx'] in the
 * layout of ds_volume_reslice(v, axis) back to out [v->nz, v->ny, v->nx]
 * (caller buffer). Returns DS_OK or DS_ERR_ARG. */
ds_status ds_volume_unslice(const float *sliced, const ds_volume *v, int axis, float *out);

/* The window [lo, hi] of v from image loading options (image.h), as
 * ds_image_load chooses it: window_set: [window_min, window_max]; voi_set:
 * the DICOM "LINEAR" ramp of voi_center/voi_width (PS3.3 C.11.2.1.2, lo = c
 * - 0.5 - (w-1)/2, hi = c - 0.5 + (w-1)/2, e.g. a CT preset in HU); else
 * ds_volume_window at window_lo_pct/window_hi_pct. Returns DS_OK or
 * DS_ERR_ARG / DS_ERR_NOMEM. */
ds_status ds_volume_window_params(const ds_volume *v, const ds_image_load_params *p, double *lo, double *hi);

/* A mosaic of the n slices with the highest slice_scores[nz] (ties: the
 * lower slice), shown in slice order, left to right then top to bottom in
 * a grid of ceil(sqrt(n)) columns with 2 black pixels between cells: each
 * is ds_volume_slice(v, k, 0, lo, hi) under map [nz, ny, nx] blended by
 * ds_map_overlay on the fixed scale [0, vmax] (alpha 0.5). n is clamped to
 * nz. chosen (may be NULL): [min(n, nz)] output, the slices shown. *out: a
 * new RGB image. Returns DS_OK, DS_ERR_ARG or DS_ERR_NOMEM. */
ds_status ds_volume_mosaic(const ds_volume *v, const float *map, const float *slice_scores, int n, double lo, double hi,
                           float vmax, int *chosen, ds_image **out);

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
