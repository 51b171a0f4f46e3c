/* A DICOM series (a folder of single-slice files) as a volume: slices
 * grouped by Series Instance UID and ordered along the slice normal by
 * Image Position (Patient), the rule of dcm2niix and ITK's
 * GDCMSeriesFileNames (file names and Instance Numbers are not trusted:
 * exports shuffle both). The slices are decoded by DCMTK in
 * src/image/dicom.cpp (modality values, no VOI window). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "dinoscope/pipeline.h"
#include "dinoscope/volume.h"
#include "image/dicom.h"

#define MAX_SLICES 100000

typedef struct {
    ds_dicom_slice s;
    double pos; /* Image Position (Patient) projected on the slice normal, mm */
    char *path;
} slice_rec;

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_pos(const void *a, const void *b) {
    double x = ((const slice_rec *)a)->pos, y = ((const slice_rec *)b)->pos;
    return (x > y) - (x < y);
}

/* Files of the series: *.dcm (any case) and names without an extension
 * (DICOM exports often have none); other names (.txt, .png, DICOMDIR...)
 * are not slices. */
static bool slice_name(const char *n) {
    if (n[0] == '.' || !strcmp(n, "DICOMDIR")) return false;
    const char *dot = strrchr(n, '.');
    if (!dot) return true;
    char ext[8] = {0};
    for (int i = 0; i < 7 && dot[1 + i]; i++) ext[i] = (char)tolower((unsigned char)dot[1 + i]);
    return !strcmp(ext, "dcm") || !strcmp(ext, "dicom") || !strcmp(ext, "ima");
}

/* Sorted file names of dir that may be slices; *n of them. */
static ds_status list_files(const char *dir, char ***out, int *n) {
    DIR *d = opendir(dir);
    if (!d) return ds_set_error(DS_ERR_IO, "'%s': %s", dir, strerror(errno));
    char **v = NULL;
    int nv = 0, cap = 0;
    ds_status st = DS_OK;
    for (struct dirent *e; (e = readdir(d)) && st == DS_OK;) {
        if (!slice_name(e->d_name)) continue;
        char *p = malloc(strlen(dir) + strlen(e->d_name) + 2);
        struct stat sb;
        if (p) sprintf(p, "%s/%s", dir, e->d_name);
        if (p && (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode))) {
            free(p);
            continue;
        }
        if (nv == cap) {
            cap = cap ? 2 * cap : 64;
            char **nvp = cap <= MAX_SLICES ? realloc(v, sizeof(char *) * (size_t)cap) : NULL;
            if (nvp) v = nvp;
            else free(p), p = NULL;
        }
        if (!p) st = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory listing the folder (or over %d files)", dir, MAX_SLICES);
        else v[nv++] = p;
    }
    closedir(d);
    if (st == DS_OK && nv == 0) st = ds_set_error(DS_ERR_FORMAT, "'%s': no DICOM files (*.dcm or without extension)", dir);
    if (st != DS_OK) {
        for (int i = 0; i < nv; i++) free(v[i]);
        free(v);
        return st;
    }
    qsort(v, (size_t)nv, sizeof(char *), cmp_name);
    *out = v;
    *n = nv;
    return DS_OK;
}

static void cross(const double a[3], const double b[3], double c[3]) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

/* The slices of series uid among r[0..n) moved to the front, in file order; their count. */
static int select_series(slice_rec *r, int n, const char *uid) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(r[i].s.series_uid, uid)) {
            slice_rec t = r[m];
            r[m++] = r[i];
            r[i] = t;
        }
    return m;
}

/* An error naming the series found in dir (at most 4). */
static ds_status several_series(const char *dir, slice_rec *r, int n) {
    char msg[512] = "";
    int n_series = 0;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(r[j].s.series_uid, r[i].s.series_uid);
        if (seen) continue;
        int count = 0;
        for (int j = i; j < n; j++) count += !strcmp(r[j].s.series_uid, r[i].s.series_uid);
        if (n_series++ < 4 && len < sizeof msg)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%s'%s' (%d slices)", n_series > 1 ? ", " : "",
                                    r[i].s.series_uid, count);
    }
    return ds_set_error(DS_ERR_ARG, "'%s': %d series: %s%s; choose one by its Series Instance UID", dir, n_series, msg,
                        n_series > 4 ? ", ..." : "");
}

/* The slices r[0..m) ordered and checked, into a volume. */
static ds_status build_volume(const char *dir, slice_rec *r, int m, ds_volume **out) {
    const ds_dicom_slice *s0 = &r[0].s;
    const int nx = s0->cols, ny = s0->rows;
    double normal[3];
    cross(s0->iop, s0->iop + 3, normal);
    for (int i = 0; i < m; i++) {
        const ds_dicom_slice *s = &r[i].s;
        if (s->rows != ny || s->cols != nx)
            return ds_set_error(DS_ERR_FORMAT, "'%s': slices of %dx%d and %dx%d pixels in one series ('%s')", dir, nx,
                                ny, s->cols, s->rows, r[i].path);
        if (s->has_position != s0->has_position)
            return ds_set_error(DS_ERR_FORMAT, "'%s': '%s' lacks Image Position/Orientation (Patient) that others have",
                                dir, s->has_position ? r[0].path : r[i].path);
        double d = 0;
        for (int c = 0; c < 6; c++) d = fmax(d, fabs(s->iop[c] - s0->iop[c]));
        if (s->has_position && d > 1e-4)
            return ds_set_error(DS_ERR_FORMAT, "'%s': slices of different orientations in one series ('%s')", dir,
                                r[i].path);
        /* the projection on the normal orders slices whatever the tilt (dcm2niix) */
        r[i].pos = s->has_position ? s->ipp[0] * normal[0] + s->ipp[1] * normal[1] + s->ipp[2] * normal[2]
                                   : (double)s->instance;
    }
    qsort(r, (size_t)m, sizeof *r, cmp_pos);
    double step = 0;
    if (m > 1) {
        step = (r[m - 1].pos - r[0].pos) / (m - 1);
        for (int i = 1; i < m; i++) {
            double d = r[i].pos - r[i - 1].pos;
            if (!(d > 1e-6))
                return ds_set_error(DS_ERR_FORMAT, "'%s': '%s' and '%s' are at the same slice position", dir,
                                    r[i - 1].path, r[i].path);
            /* uneven gaps: a missing slice; 1% of the mean step, as dcm2niix's warning */
            if (fabs(d - step) > 0.01 * step + 1e-4)
                return ds_set_error(DS_ERR_FORMAT,
                                    "'%s': uneven slice spacing (%g mm between '%s' and '%s', %g mm on average): a "
                                    "missing slice?", dir, d, r[i - 1].path, r[i].path, step);
        }
    }
    ds_volume *v = calloc(1, sizeof *v);
    const size_t plane = (size_t)nx * ny;
    if (v) v->data = ds_alloc(plane * (size_t)m, sizeof(float), "ds_volume_load_dicom_series");
    if (!v || !v->data) {
        free(v);
        return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %d slices", dir, m);
    }
    for (int k = 0; k < m; k++) memcpy(v->data + (size_t)k * plane, r[k].s.values, sizeof(float) * plane);
    v->nx = nx, v->ny = ny, v->nz = m;
    /* voxel (i = column, j = row, k = slice) -> LPS mm (PS3.3 C.7.6.2.1.1:
     * the row cosine times the column spacing along i, the column cosine
     * times the row spacing along j; along k the mean step between the
     * first and the last Image Position, which follows a gantry tilt), then
     * RAS = diag(-1, -1, 1) LPS, the NIfTI convention (as ITK and 3D Slicer
     * write NIfTI from DICOM). */
    double lps[3][4];
    if (s0->has_position) {
        double kvec[3];
        for (int c = 0; c < 3; c++)
            kvec[c] = m > 1 ? (r[m - 1].s.ipp[c] - r[0].s.ipp[c]) / (m - 1)
                            : normal[c] * (s0->slice_thickness > 0 ? s0->slice_thickness : 1.0);
        for (int c = 0; c < 3; c++) {
            lps[c][0] = s0->iop[c] * s0->spacing[1];
            lps[c][1] = s0->iop[3 + c] * s0->spacing[0];
            lps[c][2] = kvec[c];
            lps[c][3] = r[0].s.ipp[c];
        }
        v->spacing_mm[2] = m > 1 ? fabs(step) : (s0->slice_thickness > 0 ? s0->slice_thickness : 1.0);
    } else {
        /* no geometry: the pixel spacings and the slice thickness on the axes */
        double dz = s0->slice_thickness > 0 ? s0->slice_thickness : 1.0;
        memset(lps, 0, sizeof lps);
        lps[0][0] = s0->spacing[1], lps[1][1] = s0->spacing[0], lps[2][2] = dz;
        v->spacing_mm[2] = dz;
    }
    for (int rr = 0; rr < 3; rr++)
        for (int c = 0; c < 4; c++) v->affine[rr][c] = rr < 2 ? -lps[rr][c] : lps[rr][c];
    v->affine[3][0] = v->affine[3][1] = v->affine[3][2] = 0, v->affine[3][3] = 1;
    v->spacing_mm[0] = s0->spacing[1], v->spacing_mm[1] = s0->spacing[0];
    *out = v;
    return DS_OK;
}

ds_status ds_volume_load_dicom_series(const char *dir, const char *series_uid, ds_volume **out) {
    if (!dir || !out) return ds_set_error(DS_ERR_ARG, "ds_volume_load_dicom_series: NULL argument");
    char **names = NULL;
    int n = 0;
    ds_status st = list_files(dir, &names, &n);
    if (st != DS_OK) return st;
    slice_rec *r = calloc((size_t)n, sizeof *r);
    if (!r) st = ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %d slices", dir, n);
    ds_image_load_params lp = ds_pipeline_defaults().load;
    if (lp.max_pixels <= 0) lp.max_pixels = (int64_t)1 << 28; /* ds_image_load's default (image.h) */
    int n_read = 0;
    for (int i = 0; i < n && st == DS_OK; i++, n_read++) {
        r[i].path = names[i];
        st = ds_dicom_read_slice(names[i], &lp, &r[i].s);
    }
    int m = 0;
    if (st == DS_OK) {
        if (series_uid) {
            m = select_series(r, n, series_uid);
            if (m == 0) st = ds_set_error(DS_ERR_ARG, "'%s': no slice of series '%s'", dir, series_uid);
        } else {
            m = select_series(r, n, r[0].s.series_uid);
            if (m != n) st = several_series(dir, r, n);
        }
    }
    if (st == DS_OK) st = build_volume(dir, r, m, out);
    for (int i = 0; r && i < n_read; i++) free(r[i].s.values);
    free(r);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}
