/* DICOM input (src/image/dicom.cpp through DCMTK). References are pydicom
 * 2.3's decoded pixels (tests/fixtures/make_dicom_fixtures.py): pixel_array
 * -> apply_modality_lut -> apply_voi_lut (or the percentile window), mapped
 * to 0..255, MONOCHROME1 inverted, saved as PNG next to each file.
 * Tolerances: grey values computed in floating point on both sides within 1
 * level (rounding of values that land on .5); colour conversion of YBR_FULL
 * within 2 levels (DCMTK converts in integers, pydicom in floats); JPEG
 * baseline within 3 levels of pydicom's decoder (Pillow / libjpeg-turbo
 * against DCMTK's IJG 6b: different IDCTs). Lossless codecs (RLE, JPEG
 * lossless, JPEG-LS) must give the uncompressed file's reference. Malformed
 * files (dicom/bad/) must fail with one line naming the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/image.h"
#include "test.h"

static ds_image *load(const char *path, const ds_image_load_params *p) { return test_load_image(path, p); }

static const char *dcm(const char *name) {
    static char buf[8][1024];
    static int slot = 0;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "dicom/%s", name);
    return fixture(buf[slot]);
}

/* max |a - b|, -1 if the sizes differ; *n_diff = values that differ at all */
static int max_diff(const ds_image *a, const ds_image *b, size_t *n_diff) {
    if (!a || !b || a->width != b->width || a->height != b->height || a->channels != b->channels) {
        if (a && b)
            printf("     sizes differ: %dx%dx%d vs %dx%dx%d\n", a->width, a->height, a->channels, b->width,
                   b->height, b->channels);
        return -1;
    }
    int m = 0;
    size_t nd = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * a->channels; i++) {
        int d = abs((int)a->pixels[i] - (int)b->pixels[i]);
        if (d > m) m = d;
        nd += d != 0;
    }
    if (n_diff) *n_diff = nd;
    return m;
}

/* Loads name.dcm with p and compares it with the reference PNG ref. */
static int diff_with(const char *name, const ds_image_load_params *p, const char *ref, size_t *n_diff) {
    ds_image *a = load(dcm(name), p), *b = load(dcm(ref), NULL);
    int d = max_diff(a, b, n_diff);
    if (d > 0) printf("     %s vs %s: max diff %d\n", name, ref, d);
    ds_image_free(a);
    ds_image_free(b);
    return d;
}

static int diff(const char *name, const char *ref) { return diff_with(name, NULL, ref, NULL); }

/* The load fails, with one line that names the file. */
static int fails_cleanly(const char *path, ds_status *st_out) {
    ds_image *img = NULL;
    ds_status st = ds_image_load(path, NULL, &img);
    if (st_out) *st_out = st;
    const char *e = ds_last_error();
    int ok = st != DS_OK && img == NULL && strstr(e, path) != NULL && strchr(e, '\n') == NULL;
    printf("     %s -> %d: %s\n", path, (int)st, e);
    ds_image_free(img);
    return ok;
}

int main(void) {
    ds_image_load_params p = {0};

    test_cond("a .dcm file is recognised as DICOM", ds_image_is_dicom(dcm("ct16.dcm")));
    test_cond("a DICOM file without extension is recognised by its DICM marker",
              ds_image_is_dicom(dcm("dicomdir/IMAGES/IM000001")));
    test_cond("a PNG is not DICOM", !ds_image_is_dicom(dcm("ct16.png")));

    /* grey-scale value chain */
    test_cond("16-bit signed CT with slope/intercept and its first window matches pydicom to 1 level",
              (unsigned)diff("ct16.dcm", "ct16.png") <= 1);
    const char *presets[] = {"lung", "soft-tissue", "bone", "brain"};
    for (int i = 0; i < 4; i++) {
        char ref[64], what[160];
        snprintf(ref, sizeof ref, "ct16_%s.png", presets[i]);
        ds_image_load_params q = {0};
        q.voi_set = ds_image_window_preset(presets[i], &q.voi_center, &q.voi_width) == DS_OK;
        snprintf(what, sizeof what, "the %s preset window matches pydicom's windowing with that center/width",
                 presets[i]);
        test_cond(what, q.voi_set && (unsigned)diff_with("ct16.dcm", &q, ref, NULL) <= 1);
    }
    double c = 0, w = 0;
    test_cond("an unknown preset is refused, naming the presets",
              ds_image_window_preset("liver", &c, &w) == DS_ERR_ARG && strstr(ds_last_error(), "lung"));
    test_cond("implicit VR, slope 2 and no window: the 0.5/99.5 percentile window of the modality values",
              (unsigned)diff("implicit_nowindow.dcm", "implicit_nowindow.png") <= 1);
    test_cond("MONOCHROME1 (12 of 16 bits) is windowed then inverted as pydicom's reference",
              (unsigned)diff("mono1.dcm", "mono1.png") <= 1);
    test_cond("explicit VR big endian decodes as pydicom", (unsigned)diff("bigendian.dcm", "bigendian.png") <= 1);
    test_cond("deflated explicit VR little endian gives the uncompressed file's pixels",
              (unsigned)diff("deflated.dcm", "ct16.png") <= 1);
    test_cond("a VOI LUT Sequence is applied (pydicom apply_voi_lut) to 1 level",
              (unsigned)diff("voilut.dcm", "voilut.png") <= 1);
    test_cond("8-bit grey without rescale or window keeps its stored values exactly",
              diff("grey8.dcm", "grey8.png") == 0);

    /* multi-frame */
    for (int k = 0; k < 3; k++) {
        char ref[64], what[96];
        snprintf(ref, sizeof ref, "multiframe_%d.png", k);
        snprintf(what, sizeof what, "frame %d of a 3-frame file is that frame exactly", k);
        ds_image_load_params q = {0};
        q.frame = k;
        test_cond(what, diff_with("multiframe.dcm", &q, ref, NULL) == 0);
    }
    {
        ds_image_load_params q = {0};
        q.frame = 3;
        ds_image *img = NULL;
        ds_status st = ds_image_load(dcm("multiframe.dcm"), &q, &img);
        printf("     %s\n", ds_last_error());
        test_cond("frame 3 of 3 is refused with the frame count", st == DS_ERR_ARG && !img &&
                                                                  strstr(ds_last_error(), "3 frames"));
        int fw = 0, fh = 0;
        test_cond("probe reads the size without decoding",
                  ds_image_probe(dcm("multiframe.dcm"), NULL, &fw, &fh) == DS_OK && fw == 64 && fh == 48);
    }

    /* colour */
    test_cond("RGB with planar configuration 1 matches pydicom exactly", diff("rgb_planar.dcm", "rgb_planar.png") == 0);
    test_cond("YBR_FULL is converted to RGB within 2 levels of pydicom's convert_color_space",
              (unsigned)diff("ybr_full.dcm", "ybr_full.png") <= 2);

    /* compressed transfer syntaxes */
    test_cond("RLE lossless gives the uncompressed file's pixels", (unsigned)diff("rle.dcm", "ct16.png") <= 1);
    test_cond("JPEG lossless SV1 (process 14) gives the uncompressed file's pixels",
              (unsigned)diff("jpeg_lossless.dcm", "ct16.png") <= 1);
    test_cond("JPEG-LS lossless gives the uncompressed file's pixels", (unsigned)diff("jpegls.dcm", "ct16.png") <= 1);
    test_cond("JPEG baseline grey is within 3 levels of pydicom + Pillow",
              (unsigned)diff("jpeg_baseline.dcm", "jpeg_baseline.png") <= 3);
    test_cond("JPEG baseline colour (YBR_FULL_422) is within 3 levels of pydicom + Pillow",
              (unsigned)diff("jpeg_baseline_rgb.dcm", "jpeg_baseline_rgb.png") <= 3);
    {
        ds_status st;
        test_cond("JPEG 2000 is refused with one line saying so",
                  fails_cleanly(dcm("jpeg2000.dcm"), &st) && st == DS_ERR_UNSUPPORTED &&
                      strstr(ds_last_error(), "JPEG 2000"));
    }

    /* pixel spacing */
    {
        ds_image *a = load(dcm("ct16.dcm"), NULL), *b = load(dcm("mono1.dcm"), NULL), *g = load(dcm("ct16.png"), NULL);
        test_cond("Pixel Spacing is recorded (row 0.7 mm, column 0.65 mm)",
                  a && fabs(a->spacing_mm[0] - 0.7) < 1e-9 && fabs(a->spacing_mm[1] - 0.65) < 1e-9);
        test_cond("Imager Pixel Spacing is the fallback (0.139 mm)",
                  b && fabs(b->spacing_mm[0] - 0.139) < 1e-9 && fabs(b->spacing_mm[1] - 0.139) < 1e-9);
        test_cond("a PNG has no spacing (0)", g && g->spacing_mm[0] == 0 && g->spacing_mm[1] == 0);
        ds_image_free(a);
        ds_image_free(b);
        ds_image_free(g);
    }

    /* --window on DICOM maps modality values (HU) */
    {
        ds_image_load_params q = {0};
        q.window_set = 1, q.window_min = -1000, q.window_max = 500;
        ds_image *a = load(dcm("ct16.dcm"), &q);
        ds_image_load_params r = {0};
        r.voi_set = 1, r.voi_center = -249.5, r.voi_width = 1501; /* the same linear map, PS3.3 C.11.2.1.2 */
        ds_image *b = load(dcm("ct16.dcm"), &r);
        test_cond("--window MIN,MAX equals the DICOM window with center (min+max+1)/2, width max-min+1",
                  (unsigned)max_diff(a, b, NULL) <= 1);
        ds_image_free(a);
        ds_image_free(b);
    }

    /* lists: folders, DICOMDIR */
    {
        ds_image_list *l = NULL;
        const char *arg = dcm("dicomdir/DICOMDIR");
        ds_status st = ds_image_list_expand(&arg, 1, 0, &l);
        test_cond("a DICOMDIR expands to the two image files it references",
                  st == DS_OK && l && l->n == 2 && strstr(l->paths[0], "dicomdir/IMAGES/IM000001") &&
                      strstr(l->paths[1], "IM000002"));
        ds_image_list_free(l);
        l = NULL;
        arg = dcm("dicomdir/IMAGES");
        st = ds_image_list_expand(&arg, 1, 0, &l);
        test_cond("a folder of DICOM files without extension lists them", st == DS_OK && l && l->n == 2);
        ds_image_list_free(l);
        l = NULL;
        arg = dcm("dicomdir");
        st = ds_image_list_expand(&arg, 1, 1, &l);
        test_cond("a recursive folder walk skips the DICOMDIR index itself", st == DS_OK && l && l->n == 2);
        ds_image_list_free(l);
        ds_image *a = load(dcm("dicomdir/IMAGES/IM000002"), NULL);
        ds_image *b = load(dcm("grey8.png"), NULL);
        test_cond("an extensionless DICOM file loads (same pixels as grey8)", max_diff(a, b, NULL) == 0);
        ds_image_free(a);
        ds_image_free(b);
    }

    /* a labels.csv pointing at .dcm files */
    {
        char csv[1200];
        const char *tmp = test_env("DS_TMP", "/tmp");
        snprintf(csv, sizeof csv, "%s/dicom_labels.csv", tmp);
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", tmp);
        int rc = system(cmd);
        FILE *fp = fopen(csv, "w");
        if (fp) {
            fprintf(fp, "filename,split,label,maskfile\n%s,test,1,\n%s,train,0,\n", dcm("mono1.dcm"),
                    dcm("ct16.dcm"));
            fclose(fp);
        }
        ds_image_list *l = NULL;
        const char *arg = csv;
        ds_status st = ds_image_list_expand(&arg, 1, 0, &l);
        ds_image *img = st == DS_OK && l && l->n == 2 ? load(l->paths[0], NULL) : NULL;
        test_cond("a labels.csv may list .dcm files, which load with their labels",
                  rc == 0 && st == DS_OK && l && l->n == 2 && l->labels[0] == 1 && img && img->width == 64);
        ds_image_free(img);
        ds_image_list_free(l);
        remove(csv);
    }

    /* malformed files */
    const char *bad[] = {"truncated_pixels.dcm", "truncated_header.dcm", "preamble_only.dcm",
                         "lying_pixel_length.dcm", "lying_rows_length.dcm", "unknown_transfer_syntax.dcm",
                         "short_pixel_data.dcm", "no_pixel_data.dcm", "corrupt_jpeg.dcm", "not_dicom.dcm"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[128], what[200];
        snprintf(name, sizeof name, "bad/%s", bad[i]);
        snprintf(what, sizeof what, "%s fails with one line naming the file, no crash", bad[i]);
        test_cond(what, fails_cleanly(dcm(name), NULL));
    }
    {
        ds_image_load_params q = {0};
        q.max_pixels = 1000;
        ds_image *img = NULL;
        ds_status st = ds_image_load(dcm("ct16.dcm"), &q, &img);
        test_cond("the pixel limit is checked from the header", st == DS_ERR_UNSUPPORTED && !img &&
                                                                 strstr(ds_last_error(), "exceeds the limit"));
    }
    (void)p;
    test_report();
}
