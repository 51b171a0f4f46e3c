/* Volumes cut along another axis, the window from the image loading
 * options, and the mosaic of the most anomalous slices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/maps.h"
#include "dinoscope/volume.h"
#include "image/image_internal.h"

/* perm[t]: the input axis (0 i, 1 j, 2 k) that axis t of the volume sliced
 * along axis has: the slice plane keeps the order of the two other axes,
 * and the chosen axis becomes k */
static const int PERMS[3][3] = {{1, 2, 0}, {0, 2, 1}, {0, 1, 2}};

/* Copies between the input layout [nz, ny, nx] (dims = nx, ny, nz) and the
 * layout sliced along axis (to_sliced) or back. */
static void permute(const float *src, const int dims[3], int axis, bool to_sliced, float *dst) {
    const int *perm = PERMS[axis];
    const int nd[3] = {dims[perm[0]], dims[perm[1]], dims[perm[2]]};
    size_t stride_in[3] = {1, (size_t)dims[0], (size_t)dims[0] * dims[1]};
    size_t t = 0;
    for (int z = 0; z < nd[2]; z++)
        for (int y = 0; y < nd[1]; y++)
            for (int x = 0; x < nd[0]; x++, t++) {
                size_t o = x * stride_in[perm[0]] + y * stride_in[perm[1]] + z * stride_in[perm[2]];
                if (to_sliced) dst[t] = src[o];
                else dst[o] = src[t];
            }
}

ds_status ds_volume_reslice(const ds_volume *v, int axis, ds_volume **out) {
    if (!v || !out || axis < 0 || axis > 2)
        return ds_set_error(DS_ERR_ARG, "ds_volume_reslice: bad arguments (axis %d, expected 0, 1 or 2)", axis);
    const int dims[3] = {v->nx, v->ny, v->nz}, *perm = PERMS[axis];
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    ds_volume *r = calloc(1, sizeof *r);
    if (r) r->data = ds_alloc(n, sizeof(float), "ds_volume_reslice");
    if (!r || !r->data) {
        free(r);
        return ds_set_error(DS_ERR_NOMEM, "ds_volume_reslice: out of memory for %zu voxels", n);
    }
    permute(v->data, dims, axis, true, r->data);
    r->nx = dims[perm[0]], r->ny = dims[perm[1]], r->nz = dims[perm[2]];
    /* the same voxels in the same space: the affine's columns follow the axes */
    for (int row = 0; row < 4; row++) {
        for (int t = 0; t < 3; t++) r->affine[row][t] = v->affine[row][perm[t]];
        r->affine[row][3] = v->affine[row][3];
    }
    for (int t = 0; t < 3; t++) r->spacing_mm[t] = v->spacing_mm[perm[t]];
    *out = r;
    return DS_OK;
}

ds_status ds_volume_unslice(const float *sliced, const ds_volume *v, int axis, float *out) {
    if (!sliced || !v || !out || axis < 0 || axis > 2)
        return ds_set_error(DS_ERR_ARG, "ds_volume_unslice: bad arguments (axis %d)", axis);
    const int dims[3] = {v->nx, v->ny, v->nz};
    permute(sliced, dims, axis, false, out);
    return DS_OK;
}

ds_status ds_volume_window_params(const ds_volume *v, const ds_image_load_params *p, double *lo, double *hi) {
    if (!v || !p || !lo || !hi) return ds_set_error(DS_ERR_ARG, "ds_volume_window_params: NULL argument");
    if (p->window_set) {
        if (!(p->window_min < p->window_max))
            return ds_set_error(DS_ERR_ARG, "ds_volume_window_params: window [%g, %g] is empty", p->window_min,
                                p->window_max);
        *lo = p->window_min, *hi = p->window_max;
        return DS_OK;
    }
    if (p->voi_set) {
        /* PS3.3 C.11.2.1.2 "LINEAR": the ramp from c - 0.5 - (w-1)/2 to
         * c - 0.5 + (w-1)/2, so that slices map as ds_image_load maps a
         * DICOM image with the same center/width */
        if (!(p->voi_width >= 1))
            return ds_set_error(DS_ERR_ARG, "ds_volume_window_params: window width %g < 1", p->voi_width);
        *lo = p->voi_center - 0.5 - (p->voi_width - 1) / 2;
        *hi = p->voi_center - 0.5 + (p->voi_width - 1) / 2;
        return DS_OK;
    }
    return ds_volume_window(v, p->window_lo_pct, p->window_hi_pct, lo, hi);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

ds_status ds_volume_mosaic(const ds_volume *v, const float *map, const float *slice_scores, int n, double lo, double hi,
                           float vmax, int *chosen, ds_image **out) {
    if (!v || !map || !slice_scores || !out || n < 1 || !(vmax > 0))
        return ds_set_error(DS_ERR_ARG, "ds_volume_mosaic: bad arguments (n %d, vmax %g)", n, (double)vmax);
    n = DS_MIN(n, v->nz);
    int *idx = malloc(sizeof(int) * (size_t)n);
    bool *taken = calloc((size_t)v->nz, sizeof(bool));
    if (!idx || !taken) {
        free(idx);
        free(taken);
        return ds_set_error(DS_ERR_NOMEM, "ds_volume_mosaic: out of memory");
    }
    for (int t = 0; t < n; t++) { /* the n highest scores (ties: the lower slice), n x nz comparisons */
        int best = -1;
        for (int k = 0; k < v->nz; k++)
            if (!taken[k] && (best < 0 || slice_scores[k] > slice_scores[best])) best = k;
        taken[best] = true;
        idx[t] = best;
    }
    free(taken);
    qsort(idx, (size_t)n, sizeof(int), cmp_int); /* shown in slice order */
    const int cols = (int)ceil(sqrt((double)n)), rows = (n + cols - 1) / cols, gap = 2;
    const int W = cols * v->nx + (cols - 1) * gap, H = rows * v->ny + (rows - 1) * gap;
    ds_image *m = ds_image_create(W, H, 3); /* zeroed: black gaps and empty cells */
    ds_status st = m ? DS_OK : DS_ERR_NOMEM;
    const size_t plane = (size_t)v->nx * v->ny;
    for (int t = 0; t < n && st == DS_OK; t++) {
        ds_image *g = NULL, *ov = NULL;
        st = ds_volume_slice(v, idx[t], 0, lo, hi, &g);
        if (st == DS_OK) st = ds_map_overlay(g, map + (size_t)idx[t] * plane, 0.0f, vmax, 0.5f, 0, &ov);
        const int x0 = (t % cols) * (v->nx + gap), y0 = (t / cols) * (v->ny + gap);
        for (int y = 0; st == DS_OK && y < v->ny; y++)
            memcpy(m->pixels + ((size_t)(y0 + y) * W + x0) * 3, ov->pixels + (size_t)y * v->nx * 3, (size_t)v->nx * 3);
        ds_image_free(g);
        ds_image_free(ov);
    }
    if (st == DS_OK) {
        if (chosen) memcpy(chosen, idx, sizeof(int) * (size_t)n);
        *out = m;
    } else {
        ds_image_free(m);
    }
    free(idx);
    return st;
}
