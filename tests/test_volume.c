/* NIfTI volumes (src/volume/nifti.c). References: nibabel 5.0's get_fdata()
 * and affine (tests/fixtures/make_volume_fixtures.py). Tolerances: voxel
 * values exactly (both apply slope/intercept in floating point and the
 * values are small integers times 2 minus 10, or float32 data as stored);
 * affines to 1e-5 (niftiio builds the qform matrix from the quaternion in
 * float, nibabel in double). Slices and the 2.5D channels are checked
 * against the nibabel data windowed here; the written map is read back by
 * ds_volume_load, with the affine it was given.
 * DICOM series (ds_volume_load_dicom_series): voxels against pydicom's
 * apply_modality_lut ordered by Image Position along the normal, exactly
 * (integers times 2 minus 1024); the affine against nibabel's DICOM
 * wrapper (in-plane) and the positions' step to 1e-4 mm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/npy.h"
#include "dinoscope/volume.h"
#include "test.h"

static int check_volume(const char *name, float tol_affine) {
    char p[256], pd[256], pa[256];
    snprintf(p, sizeof p, "volume/%s", name);
    const char *stem_end = strstr(name, ".nii");
    snprintf(pd, sizeof pd, "volume/%.*s_data.npy", (int)(stem_end - name), name);
    snprintf(pa, sizeof pa, "volume/%.*s_affine.npy", (int)(stem_end - name), name);
    ds_volume *v = NULL;
    if (ds_volume_load(fixture(p), &v) != DS_OK) {
        printf("     %s\n", ds_last_error());
        return 0;
    }
    size_t nd = 0, na = 0;
    float *d = test_load_npy(pd, &nd), *a = test_load_npy(pa, &na);
    int ok = d && a && na == 16 && nd == (size_t)v->nx * v->ny * v->nz && v->nx == 20 && v->ny == 16 && v->nz == 6;
    double md = 0, ma = 0;
    for (size_t i = 0; ok && i < nd; i++) md = fmax(md, fabs((double)v->data[i] - d[i]));
    for (int i = 0; ok && i < 16; i++) ma = fmax(ma, fabs(v->affine[i / 4][i % 4] - a[i]));
    printf("     %s: max |voxel diff| %g, max |affine diff| %g\n", name, md, ma);
    ok = ok && md == 0 && ma <= tol_affine;
    free(d);
    free(a);
    ds_volume_free(v);
    return ok;
}

/* The DICOM series of make_volume_fixtures.py against pydicom / nibabel. */
static void check_series(void) {
    ds_volume *v = NULL;
    ds_status st = ds_volume_load_dicom_series(fixture("volume/series/ct"), NULL, &v);
    if (st != DS_OK) printf("     %s\n", ds_last_error());
    size_t nd = 0, na = 0;
    float *d = test_load_npy("volume/series/ct_data.npy", &nd), *a = test_load_npy("volume/series/ct_affine.npy", &na);
    int ok = st == DS_OK && d && a && na == 16 && v->nx == 32 && v->ny == 24 && v->nz == 6 && nd == (size_t)32 * 24 * 6;
    double md = 0, ma = 0;
    for (size_t i = 0; ok && i < nd; i++) md = fmax(md, fabs((double)v->data[i] - d[i]));
    for (int i = 0; ok && i < 16; i++) ma = fmax(ma, fabs(v->affine[i / 4][i % 4] - a[i]));
    printf("     series: %d x %d x %d, max |voxel diff| %g, max |affine diff| %g\n", v ? v->nx : 0, v ? v->ny : 0,
           v ? v->nz : 0, md, ma);
    test_cond("a shuffled DICOM series reads in Image Position order with pydicom's modality values", ok && md == 0);
    test_cond("its affine (RAS) equals nibabel's in-plane axes and the positions' step", ok && ma < 1e-4);
    test_cond("its spacings are the Pixel Spacing (column, row) and the 2.5 mm step",
              ok && fabs(v->spacing_mm[0] - 0.7) < 1e-9 && fabs(v->spacing_mm[1] - 0.8) < 1e-9 &&
                  fabs(v->spacing_mm[2] - 2.5) < 1e-6);

    /* reslicing: along i the slices are the (j, k) planes, and back */
    ds_volume *r = NULL;
    float *back = malloc(sizeof(float) * nd);
    st = ok ? ds_volume_reslice(v, 0, &r) : DS_ERR_ARG;
    int ok_r = st == DS_OK && back && r->nx == 24 && r->ny == 6 && r->nz == 32;
    for (int i = 0; ok_r && i < 32; i++) /* voxel (i, j, k) is at (x' = j, y' = k, z' = i) */
        for (int k = 0; k < 6; k++)
            for (int j = 0; j < 24; j++)
                ok_r = ok_r && r->data[((size_t)i * 6 + k) * 24 + j] == v->data[((size_t)k * 24 + j) * 32 + i];
    for (int row = 0; ok_r && row < 4; row++) /* the same world point for the same voxel */
        ok_r = r->affine[row][0] == v->affine[row][1] && r->affine[row][1] == v->affine[row][2] &&
               r->affine[row][2] == v->affine[row][0] && r->affine[row][3] == v->affine[row][3];
    test_cond("reslicing along i puts voxel (i, j, k) at (j, k, i) with the affine's columns permuted", ok_r);
    test_cond("unslicing gives the input layout back",
              ok_r && ds_volume_unslice(r->data, v, 0, back) == DS_OK && !memcmp(back, v->data, sizeof(float) * nd));
    ds_volume_free(r);
    r = NULL;
    st = ok ? ds_volume_reslice(v, 1, &r) : DS_ERR_ARG;
    test_cond("reslicing along j and back is the identity too",
              st == DS_OK && r->nx == 32 && r->ny == 6 && r->nz == 24 && ds_volume_unslice(r->data, v, 1, back) == DS_OK &&
                  !memcmp(back, v->data, sizeof(float) * nd));
    ds_volume_free(r);
    free(back);

    /* windows: a CT preset as the DICOM LINEAR ramp of ds_image_load */
    ds_image_load_params lp = {.voi_set = 1, .voi_center = 40, .voi_width = 80};
    double lo = 0, hi = 0;
    test_cond("the brain preset 40/80 is the ramp [0.5 - 39.5, 0.5 + 39.5] - 1 = [0, 79]",
              ok && ds_volume_window_params(v, &lp, &lo, &hi) == DS_OK && lo == 0 && hi == 79);
    lp = (ds_image_load_params){.window_set = 1, .window_min = -100, .window_max = 300};
    test_cond("--window MIN,MAX is taken as it is",
              ok && ds_volume_window_params(v, &lp, &lo, &hi) == DS_OK && lo == -100 && hi == 300);
    free(d);
    free(a);
    ds_volume_free(v);

    v = NULL;
    st = ds_volume_load_dicom_series(fixture("volume/series/two_series"), NULL, &v);
    printf("     %s\n", ds_last_error());
    test_cond("a folder of two series without a choice is refused, naming both",
              st == DS_ERR_ARG && !v && strstr(ds_last_error(), "2 series") && strstr(ds_last_error(), "(3 slices)"));
    st = ds_volume_load_dicom_series(fixture("volume/series/two_series"), "1.2.826.0.1.3680043.10.1234.77.3", &v);
    test_cond("choosing a series by its UID reads its slices", st == DS_OK && v->nz == 2);
    ds_volume_free(v);
    v = NULL;
    st = ds_volume_load_dicom_series(fixture("volume/series/gap"), NULL, &v);
    printf("     %s\n", ds_last_error());
    test_cond("a series with a missing slice is refused (uneven spacing)",
              st == DS_ERR_FORMAT && !v && strstr(ds_last_error(), "uneven") && !strchr(ds_last_error(), '\n'));
    st = ds_volume_load_dicom_series(fixture("volume/bad"), NULL, &v);
    printf("     %s\n", ds_last_error());
    test_cond("a folder without DICOM files is one line", st != DS_OK && !v && !strchr(ds_last_error(), '\n'));
}

int main(void) {
    check_series();
    test_cond("int16 .nii.gz with slope/intercept: voxels and the sform equal nibabel's",
              check_volume("vol_int16.nii.gz", 1e-5f));
    test_cond("float32 .nii with only a qform: voxels and the qform affine equal nibabel's",
              check_volume("vol_qform.nii", 1e-5f));

    ds_volume *v = NULL;
    ds_status st = ds_volume_load(fixture("volume/vol_int16.nii.gz"), &v);
    size_t nd = 0;
    float *d = test_load_npy("volume/vol_int16_data.npy", &nd);
    if (st != DS_OK || !d) return 1;
    double lo, hi;
    st = ds_volume_window(v, 0.5, 99.5, &lo, &hi);
    /* numpy.percentile of the nibabel data, by sorting here */
    float *s = malloc(sizeof(float) * nd);
    memcpy(s, d, sizeof(float) * nd);
    for (size_t i = 1; i < nd; i++) { /* insertion sort: 1920 values */
        float x = s[i];
        size_t j = i;
        while (j > 0 && s[j - 1] > x) s[j] = s[j - 1], j--;
        s[j] = x;
    }
    double ref[2];
    for (int q = 0; q < 2; q++) { /* numpy's linear method: s[i] + (s[i+1] - s[i]) * t at index pct (n - 1) */
        double idx = (q ? 0.995 : 0.005) * (double)(nd - 1), t = idx - floor(idx);
        ref[q] = s[(size_t)idx] + (s[(size_t)idx + 1] - s[(size_t)idx]) * t;
    }
    printf("     window [%g, %g], numpy's [%g, %g]\n", lo, hi, ref[0], ref[1]);
    test_cond("the volume window is the 0.5/99.5 percentile of all voxels",
              st == DS_OK && fabs(lo - ref[0]) < 1e-3 && fabs(hi - ref[1]) < 1e-3);
    ds_image *g = NULL, *c = NULL;
    ds_status s1 = ds_volume_slice(v, 2, 0, lo, hi, &g), s2 = ds_volume_slice(v, 0, 1, lo, hi, &c);
    int ok_g = s1 == DS_OK && g->width == 20 && g->height == 16, ok_c = s2 == DS_OK;
    const size_t plane = 20 * 16;
    for (size_t i = 0; ok_g && i < plane; i++) {
        double m = rint(((double)d[2 * plane + i] - lo) / (hi - lo) * 255.0);
        uint8_t e = m < 0 ? 0 : m > 255 ? 255 : (uint8_t)m;
        ok_g = g->pixels[3 * i] == e && g->pixels[3 * i + 1] == e && g->pixels[3 * i + 2] == e;
    }
    for (size_t i = 0; ok_c && i < plane; i++) {
        for (int ch = 0; ch < 3; ch++) {
            int k = ch == 2 ? 1 : 0; /* slice 0: k-1 clamps to 0 */
            double m = rint(((double)d[k * plane + i] - lo) / (hi - lo) * 255.0);
            uint8_t e = m < 0 ? 0 : m > 255 ? 255 : (uint8_t)m;
            ok_c = ok_c && c->pixels[3 * i + ch] == e;
        }
    }
    test_cond("slice 2 is the windowed nibabel slice, grey", ok_g);
    test_cond("2.5D slice 0 has slices 0, 0, 1 as R, G, B (clamped at the end)", ok_c);
    test_cond("a slice past the end is refused", ds_volume_slice(v, 6, 0, lo, hi, &g) == DS_ERR_ARG);
    ds_image_free(g);
    ds_image_free(c);

    char out[1024];
    snprintf(out, sizeof out, "%s/volume_map.nii.gz", test_env("DS_TMP", "/tmp"));
    char mk[1100];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", test_env("DS_TMP", "/tmp"));
    if (system(mk) != 0) return 1;
    st = ds_volume_save_nifti(out, v->data, v->nx, v->ny, v->nz, (const double(*)[4])v->affine);
    ds_volume *w = NULL;
    if (st == DS_OK) st = ds_volume_load(out, &w);
    double md = 0, ma = 0;
    for (size_t i = 0; st == DS_OK && i < nd; i++) md = fmax(md, fabs((double)w->data[i] - v->data[i]));
    for (int i = 0; st == DS_OK && i < 16; i++) ma = fmax(ma, fabs(w->affine[i / 4][i % 4] - v->affine[i / 4][i % 4]));
    printf("     written map read back: max |voxel diff| %g, |affine diff| %g\n", md, ma);
    test_cond("a map written with the input's affine reads back with that affine and those values",
              st == DS_OK && md == 0 && ma < 1e-5);
    test_cond("a name without .nii / .nii.gz is refused",
              ds_volume_save_nifti("/tmp/x.png", v->data, 1, 1, 1, (const double(*)[4])v->affine) == DS_ERR_ARG);
    ds_volume_free(w);
    remove(out);

    const char *bad[] = {"volume/bad/truncated.nii", "volume/bad/rgb.nii", "volume/bad/not_nifti.nii",
                         "volume/none.nii"};
    for (int i = 0; i < 4; i++) {
        ds_volume *b = NULL;
        ds_status e = ds_volume_load(fixture(bad[i]), &b);
        char what[200];
        snprintf(what, sizeof what, "%s fails with one line naming the file", bad[i]);
        printf("     %s\n", ds_last_error());
        test_cond(what, e != DS_OK && !b && strstr(ds_last_error(), bad[i]) && !strchr(ds_last_error(), '\n'));
    }
    free(s);
    free(d);
    ds_volume_free(v);
    test_report();
}
