/* NIfTI-1 volumes through niftiio (Debian libniftiio-dev + libnifti2-dev
 * for its headers): reading with the header checked before the data, slices
 * as 8-bit RGB images (optionally 2.5D: neighbouring slices as channels),
 * and float maps written back with the input's affine. Semantics follow
 * nibabel (the reference of tests/test_volume.c): get_fdata() applies
 * scl_slope / scl_inter unless the slope is 0 or not finite; the affine is
 * the sform when sform_code > 0, else the qform when qform_code > 0. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti1_io.h>
#include <zlib.h>

#include "core/internal.h"
#include "dinoscope/volume.h"
#include "image/image_internal.h"

#define MAX_VOXELS ((int64_t)1 << 30)

void ds_volume_free(ds_volume *v) {
    if (!v) return;
    free(v->data);
    free(v);
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Value i of niftiio's data block of datatype dt as double; false for
 * datatypes we do not read. */
static bool voxel(const void *d, int dt, size_t i, double *out) {
    switch (dt) {
    case DT_UINT8: *out = ((const uint8_t *)d)[i]; return true;
    case DT_INT8: *out = ((const int8_t *)d)[i]; return true;
    case DT_INT16: *out = ((const int16_t *)d)[i]; return true;
    case DT_UINT16: *out = ((const uint16_t *)d)[i]; return true;
    case DT_INT32: *out = ((const int32_t *)d)[i]; return true;
    case DT_UINT32: *out = ((const uint32_t *)d)[i]; return true;
    case DT_INT64: *out = (double)((const int64_t *)d)[i]; return true;
    case DT_UINT64: *out = (double)((const uint64_t *)d)[i]; return true;
    case DT_FLOAT32: *out = ((const float *)d)[i]; return true;
    case DT_FLOAT64: *out = ((const double *)d)[i]; return true;
    default: return false;
    }
}

ds_status ds_volume_load(const char *path, ds_volume **out) {
    if (!path || !out) return ds_set_error(DS_ERR_ARG, "ds_volume_load: NULL argument");
    struct stat st;
    if (stat(path, &st) != 0)
        return ds_set_error(DS_ERR_IO, "'%s': %s", path, errno == ENOENT ? "no such file" : strerror(errno));
    if (!S_ISREG(st.st_mode)) return ds_set_error(DS_ERR_IO, "'%s': not a regular file", path);
    /* our own look at the 348-byte header first (gzread reads plain files
     * too): niftiio prints some complaints on stderr whatever its debug
     * level, and we want one line */
    gzFile gz = gzopen(path, "rb");
    unsigned char h[348];
    int got = gz ? gzread(gz, h, sizeof h) : -1;
    if (gz) gzclose(gz);
    int32_t sz;
    int16_t dim0;
    if (got == (int)sizeof h) memcpy(&sz, h, 4), memcpy(&dim0, h + 40, 2);
    bool swapped = got == (int)sizeof h && sz == 0x5C010000; /* 348 byte-swapped */
    if (swapped) dim0 = (int16_t)(((dim0 & 0xff) << 8) | ((dim0 >> 8) & 0xff));
    if (got != (int)sizeof h || (sz != 348 && !swapped) || (memcmp(h + 344, "n+1", 4) && memcmp(h + 344, "ni1", 4)))
        return ds_set_error(DS_ERR_FORMAT, "'%s': not a NIfTI-1 file (%s)", path,
                            got != (int)sizeof h ? "shorter than the 348-byte header" : "no NIfTI-1 header");
    if (dim0 < 1 || dim0 > 7) return ds_set_error(DS_ERR_FORMAT, "'%s': bad dim[0] %d (expected 1..7)", path, dim0);
    nifti_set_debug_level(0); /* niftiio's messages would duplicate ours on stderr */
    nifti_image *nim = nifti_image_read(path, 0);
    if (!nim) return ds_set_error(DS_ERR_FORMAT, "'%s': not a readable NIfTI-1 file", path);
    ds_status rc = DS_OK;
    ds_volume *v = NULL;
    const int nx = nim->nx, ny = nim->ny, nz = nim->nz > 0 ? nim->nz : 1;
    int nbyper = 0, swap = 0;
    nifti_datatype_sizes(nim->datatype, &nbyper, &swap);
    static const uint64_t zero = 0; /* to ask voxel() whether it reads the datatype */
    double probe;
    if (nx < 1 || ny < 1 || nim->ndim < 1 || nim->ndim > 7) {
        rc = ds_set_error(DS_ERR_FORMAT, "'%s': bad dimensions %d x %d x %d (ndim %d)", path, nx, ny, nz, nim->ndim);
        goto done;
    }
    if ((int64_t)nx * ny * nz > MAX_VOXELS || nim->nvox > (size_t)4 * MAX_VOXELS) {
        rc = ds_set_error(DS_ERR_UNSUPPORTED, "'%s': %d x %d x %d voxels (%zu in all) exceed the limit of 2^30", path, nx,
                          ny, nz, nim->nvox);
        goto done;
    }
    if (!voxel(&zero, nim->datatype, 0, &probe) || nbyper <= 0) {
        rc = ds_set_error(DS_ERR_UNSUPPORTED, "'%s': datatype %s is not supported (complex or RGB)", path,
                          nifti_datatype_string(nim->datatype));
        goto done;
    }
    /* uncompressed: the data must fit in the file before we read it */
    if (!has_suffix(path, ".gz") &&
        (double)nim->iname_offset + (double)nim->nvox * nbyper > (double)st.st_size && has_suffix(path, ".nii")) {
        rc = ds_set_error(DS_ERR_FORMAT, "'%s': truncated: %zu voxels of %d bytes from offset %d do not fit in %lld bytes",
                          path, nim->nvox, nbyper, nim->iname_offset, (long long)st.st_size);
        goto done;
    }
    if (nifti_image_load(nim) != 0 || !nim->data) {
        rc = ds_set_error(DS_ERR_FORMAT, "'%s': cannot read the voxel data (truncated or corrupt)", path);
        goto done;
    }
    v = calloc(1, sizeof *v);
    const size_t n = (size_t)nx * ny * nz;
    if (v) v->data = ds_alloc(n, sizeof(float), "ds_volume_load");
    if (!v || !v->data) {
        rc = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %zu voxels", path, n);
        goto done;
    }
    double slope = nim->scl_slope, inter = nim->scl_inter;
    if (slope == 0 || !isfinite(slope)) slope = 1, inter = 0; /* nibabel: no scaling */
    if (!isfinite(inter)) inter = 0;
    for (size_t i = 0; i < n; i++) {
        double x = 0;
        voxel(nim->data, nim->datatype, i, &x);
        v->data[i] = (float)(x * slope + inter);
    }
    v->nx = nx, v->ny = ny, v->nz = nz;
    const mat44 *a = nim->sform_code > 0 ? &nim->sto_xyz : &nim->qto_xyz;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) v->affine[r][c] = a->m[r][c];
    v->spacing_mm[0] = nim->dx, v->spacing_mm[1] = nim->dy, v->spacing_mm[2] = nim->dz;
    *out = v;
    v = NULL;
done:
    ds_volume_free(v);
    nifti_image_free(nim);
    return rc;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile "linear" of sorted s (as src/image/image.c). */
static double pct_of(const float *s, size_t n, double pct) {
    double idx = pct / 100.0 * (double)(n - 1);
    if (idx <= 0) return s[0];
    if (idx >= (double)(n - 1)) return s[n - 1];
    size_t i = (size_t)floor(idx);
    double t = idx - (double)i, a = s[i], b = s[i + 1], d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

ds_status ds_volume_window(const ds_volume *v, double lo_pct, double hi_pct, double *lo, double *hi) {
    if (!v || !lo || !hi || !(lo_pct >= 0 && lo_pct <= hi_pct && hi_pct <= 100))
        return ds_set_error(DS_ERR_ARG, "ds_volume_window: bad arguments (0 <= lo_pct <= hi_pct <= 100)");
    const size_t n = (size_t)v->nx * v->ny * v->nz;
    float *s = ds_alloc(n, sizeof(float), "ds_volume_window");
    if (!s) return DS_ERR_NOMEM;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v->data[i])) s[m++] = v->data[i];
    if (m == 0) {
        free(s);
        return ds_set_error(DS_ERR_ARG, "ds_volume_window: no finite voxels");
    }
    qsort(s, m, sizeof(float), cmp_float);
    *lo = pct_of(s, m, lo_pct);
    *hi = pct_of(s, m, hi_pct);
    free(s);
    return DS_OK;
}

static uint8_t window_u8(float x, double lo, double hi) {
    double r = hi - lo, m = r > 0 ? rint(((double)x - lo) / r * 255.0) : (x > lo ? 255.0 : 0.0);
    return m >= 0 && m <= 255 ? (uint8_t)m : m > 255 ? 255 : 0; /* NaN -> 0 */
}

ds_status ds_volume_slice(const ds_volume *v, int k, int context, double lo, double hi, ds_image **out) {
    if (!v || !out || k < 0 || k >= v->nz || (context != 0 && context != 1) || !isfinite(lo) || !isfinite(hi))
        return ds_set_error(DS_ERR_ARG, "ds_volume_slice: bad arguments (slice %d of %d, context %d)", k, v ? v->nz : 0,
                            context);
    ds_image *img = ds_image_alloc(v->nx, v->ny, 3);
    if (!img) return DS_ERR_NOMEM;
    const size_t plane = (size_t)v->nx * v->ny;
    const int ks[3] = {context ? DS_MAX(k - 1, 0) : k, k, context ? DS_MIN(k + 1, v->nz - 1) : k};
    for (int c = 0; c < 3; c++) {
        const float *src = v->data + (size_t)ks[c] * plane;
        for (size_t i = 0; i < plane; i++) img->pixels[3 * i + c] = window_u8(src[i], lo, hi);
    }
    img->spacing_mm[0] = v->spacing_mm[1]; /* rows run along j */
    img->spacing_mm[1] = v->spacing_mm[0];
    *out = img;
    return DS_OK;
}

ds_status ds_volume_save_nifti(const char *path, const float *data, int nx, int ny, int nz, const double affine[4][4]) {
    if (!path || !data || !affine || nx < 1 || ny < 1 || nz < 1 || (int64_t)nx * ny * nz > MAX_VOXELS)
        return ds_set_error(DS_ERR_ARG, "ds_volume_save_nifti: bad arguments");
    const char *ext = has_suffix(path, ".nii.gz") ? ".nii.gz" : has_suffix(path, ".nii") ? ".nii" : NULL;
    if (!ext) return ds_set_error(DS_ERR_ARG, "ds_volume_save_nifti: '%s': name must end in .nii or .nii.gz", path);
    /* niftiio picks the format from the name: the temp file keeps the extension */
    size_t stem = strlen(path) - strlen(ext);
    char *tmp = malloc(stem + strlen(ext) + 32);
    if (!tmp) return ds_set_error(DS_ERR_NOMEM, "ds_volume_save_nifti: out of memory");
    snprintf(tmp, stem + strlen(ext) + 32, "%.*s.tmp%ld%s", (int)stem, path, (long)getpid(), ext);
    nifti_set_debug_level(0);
    int dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
    nifti_image *nim = nifti_make_new_nim(dims, DT_FLOAT32, 1);
    ds_status rc = DS_OK;
    if (!nim || !nim->data) {
        rc = ds_set_error(DS_ERR_NOMEM, "ds_volume_save_nifti: out of memory");
        goto done;
    }
    memcpy(nim->data, data, sizeof(float) * (size_t)nx * ny * nz);
    mat44 m;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) m.m[r][c] = (float)affine[r][c];
    nim->sform_code = NIFTI_XFORM_ALIGNED_ANAT;
    nim->sto_xyz = m;
    nim->sto_ijk = nifti_mat44_inverse(m);
    nim->qform_code = NIFTI_XFORM_ALIGNED_ANAT;
    float dx, dy, dz;
    nifti_mat44_to_quatern(m, &nim->quatern_b, &nim->quatern_c, &nim->quatern_d, &nim->qoffset_x, &nim->qoffset_y,
                           &nim->qoffset_z, &dx, &dy, &dz, &nim->qfac);
    nim->dx = nim->pixdim[1] = dx, nim->dy = nim->pixdim[2] = dy, nim->dz = nim->pixdim[3] = dz;
    nim->qto_xyz = nifti_quatern_to_mat44(nim->quatern_b, nim->quatern_c, nim->quatern_d, nim->qoffset_x,
                                          nim->qoffset_y, nim->qoffset_z, dx, dy, dz, nim->qfac);
    nim->xyz_units = NIFTI_UNITS_MM;
    snprintf(nim->descrip, sizeof nim->descrip, "dinoscope anomaly map");
    if (nifti_set_filenames(nim, tmp, 0, 1) != 0) {
        rc = ds_set_error(DS_ERR_IO, "ds_volume_save_nifti: '%s': bad file name", path);
        goto done;
    }
    nifti_image_write(nim); /* returns nothing: read the header back to know */
    nifti_image *chk = nifti_image_read(tmp, 0);
    bool ok = chk && chk->nx == nx && chk->ny == ny && chk->nz == nz;
    nifti_image_free(chk);
    if (!ok || rename(tmp, path) != 0) {
        rc = ds_set_error(DS_ERR_IO, "ds_volume_save_nifti: cannot write '%s'%s%s", path, ok ? ": " : "",
                          ok ? strerror(errno) : "");
        remove(tmp);
    }
done:
    nifti_image_free(nim);
    free(tmp);
    return rc;
}
