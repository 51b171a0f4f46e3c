/* Image loading, saving and input lists. References come from
 * tests/fixtures/make_image_fixtures.py (PIL 9.4 / numpy): formats, 16-bit
 * windowing (numpy percentiles), alpha on white, EXIF orientation (PIL's
 * ImageOps.exif_transpose), multi-page TIFF; malformed inputs are made here
 * at run time under $DS_TMP. Tolerances: lossless formats exactly; values
 * computed in floating point (alpha compositing, windowing) within 1 level;
 * JPEG decoding within 2 levels of PIL's decoder. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "dinoscope/image.h"
#include "test.h"

static char g_tmp[900];

static const char *tmp_path(const char *name) {
    static char buf[8][1024];
    static int slot = 0;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_tmp, name);
    return buf[slot];
}

static ds_image *load(const char *path, const ds_image_load_params *p) { return test_load_image(path, p); }

/* max |a - b| over two RGB images of the same size, -1 if sizes differ */
static int max_diff(const ds_image *a, const ds_image *b) {
    if (!a || !b || a->width != b->width || a->height != b->height || a->channels != b->channels) return -1;
    int m = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * a->channels; i++) {
        int d = abs((int)a->pixels[i] - (int)b->pixels[i]);
        if (d > m) m = d;
    }
    return m;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return 0;
    int ok = fwrite(data, 1, n, fp) == n;
    return fclose(fp) == 0 && ok;
}

static void *read_bytes(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *buf = malloc((size_t)len);
    if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

/* compares a loaded file with a reference PNG, max diff <= tol */
static void expect_like(const char *descr, const char *file, const char *ref_png, const ds_image_load_params *p, int tol) {
    ds_image *a = load(fixture(file), p), *b = load(fixture(ref_png), NULL);
    int d = max_diff(a, b);
    char msg[300];
    snprintf(msg, sizeof msg, "%s (max diff %d, tolerance %d)", descr, d, tol);
    test_cond(msg, a && a->channels == 3 && d >= 0 && d <= tol);
    ds_image_free(a);
    ds_image_free(b);
}

static void test_formats(void) {
    ds_image *png = load(fixture("image/load/formats.png"), NULL);
    test_cond("an 8-bit RGB PNG loads as 13x9 RGB", png && png->width == 13 && png->height == 9 && png->channels == 3);
    expect_like("lossless WebP equals the PNG", "image/load/formats.webp", "image/load/formats.png", NULL, 0);
    expect_like("BMP equals the PNG", "image/load/formats.bmp", "image/load/formats.png", NULL, 0);
    expect_like("PPM equals the PNG", "image/load/formats.ppm", "image/load/formats.png", NULL, 0);
    expect_like("JPEG decodes like PIL's decoder", "image/load/formats.jpg", "image/load/formats_jpg_decoded.png", NULL, 2);
    ds_image *pgm = load(fixture("image/load/formats_green.pgm"), NULL);
    int ok = pgm && png && pgm->channels == 3;
    for (int i = 0; ok && i < 13 * 9; i++)
        ok = pgm->pixels[3 * i] == png->pixels[3 * i + 1] && pgm->pixels[3 * i + 1] == png->pixels[3 * i + 1] &&
             pgm->pixels[3 * i + 2] == png->pixels[3 * i + 1];
    test_cond("a grey PGM is replicated to R=G=B", ok);
    ds_image_free(pgm);

    /* tiled TIFF and a multi-page TIFF: the first page */
    VipsImage *v = vips_image_new_from_memory(png->pixels, (size_t)13 * 9 * 3, 13, 9, 3, VIPS_FORMAT_UCHAR);
    int rc = v ? vips_tiffsave(v, tmp_path("tiled.tif"), "tile", TRUE, "tile_width", 16, "tile_height", 16, NULL) : -1;
    if (v) g_object_unref(v);
    ds_image *t = rc == 0 ? load(tmp_path("tiled.tif"), NULL) : NULL;
    test_cond("a tiled TIFF (written by libvips) loads identical to its source", max_diff(t, png) == 0);
    ds_image_free(t);
    expect_like("a two-page TIFF loads its first page", "image/load/multipage.tif", "image/load/multipage_page0.png", NULL, 0);
    expect_like("a palette PNG with a transparent index: colours, transparent -> white", "image/load/palette.png",
                "image/load/palette_expected.png", NULL, 0);
    ds_image_free(png);
}

static void test_depth_and_alpha(void) {
    expect_like("16-bit grey: default window at the 0.5/99.5 percentiles equals numpy's", "image/load/grey16.png",
                "image/load/grey16_window_default.png", NULL, 1);
    ds_image_load_params p = {0};
    p.window_set = 1;
    p.window_min = 3000;
    p.window_max = 9000;
    expect_like("16-bit grey: fixed window [3000, 9000]", "image/load/grey16.png",
                "image/load/grey16_window_3000_9000.png", &p, 1);
    ds_image_load_params bad = {0};
    bad.window_set = 1;
    bad.window_min = 5;
    bad.window_max = 5;
    ds_image *img = NULL;
    test_cond("an empty window (min == max) is refused",
              ds_image_load(fixture("image/load/grey16.png"), &bad, &img) == DS_ERR_ARG && img == NULL);
    /* a float TIFF (written here by libvips): windowed like 16-bit data */
    float fv[5] = {0.0f, 0.25f, 0.5f, 1.0f, 2.0f};
    VipsImage *v = vips_image_new_from_memory(fv, sizeof fv, 5, 1, 1, VIPS_FORMAT_FLOAT);
    int rc = v ? vips_tiffsave(v, tmp_path("float.tif"), NULL) : -1;
    if (v) g_object_unref(v);
    ds_image_load_params fw = {0};
    fw.window_set = 1;
    fw.window_min = 0;
    fw.window_max = 1;
    img = rc == 0 ? load(tmp_path("float.tif"), &fw) : NULL;
    /* round(v * 255): 0, 63.75 -> 64, 127.5 -> 128 (half to even), 255, clipped 255 */
    test_cond("a float TIFF is mapped by the window [0, 1] (0, 64, 128, 255, 255)",
              img && img->width == 5 && img->pixels[0] == 0 && img->pixels[3] == 64 && img->pixels[6] == 128 &&
                  img->pixels[9] == 255 && img->pixels[12] == 255 && img->pixels[13] == 255);
    ds_image_free(img);
    img = rc == 0 ? load(tmp_path("float.tif"), NULL) : NULL;
    test_cond("by default its 0.5 and 99.5 percentiles map to 0 and 255 (min -> 0, max -> 255)",
              img && img->pixels[0] == 0 && img->pixels[12] == 255 && img->pixels[6] > 0 && img->pixels[6] < 255);
    ds_image_free(img);
    img = NULL;

    expect_like("RGBA is composited on white", "image/load/rgba.png", "image/load/rgba_on_white.png", NULL, 1);
    expect_like("grey+alpha is composited on white", "image/load/grey_alpha.png", "image/load/grey_alpha_on_white.png",
                NULL, 1);
    expect_like("16-bit RGBA: composited on white, then windowed", "image/load/rgba16.png",
                "image/load/rgba16_expected.png", NULL, 1);
    expect_like("16-bit grey+alpha: composited on white, then windowed", "image/load/grey_alpha16.png",
                "image/load/grey_alpha16_expected.png", NULL, 1);

    /* CMYK: white, cyan, magenta, yellow, black bands of 8 columns */
    img = load(fixture("image/load/cmyk.jpg"), NULL);
    int ok = img && img->width == 40 && img->height == 16 && img->channels == 3;
    if (ok) {
        const uint8_t *row = img->pixels + (size_t)8 * 40 * 3; /* middle row */
#define PX(x, c) row[(x) * 3 + (c)]
        ok = PX(4, 0) > 230 && PX(4, 1) > 230 && PX(4, 2) > 230;             /* no ink: white */
        ok = ok && PX(12, 0) + 60 < PX(12, 1) && PX(12, 0) + 60 < PX(12, 2); /* cyan: red absorbed */
        ok = ok && PX(20, 1) + 60 < PX(20, 0) && PX(20, 1) + 60 < PX(20, 2); /* magenta: green absorbed */
        ok = ok && PX(28, 2) + 60 < PX(28, 0) && PX(28, 2) + 60 < PX(28, 1); /* yellow: blue absorbed */
        ok = ok && PX(36, 0) < 70 && PX(36, 1) < 70 && PX(36, 2) < 70;       /* black */
#undef PX
    }
    test_cond("a CMYK JPEG converts to sRGB with the right hues (white, cyan, magenta, yellow, black)", ok);
    ds_image_free(img);
}

static void test_exif(void) {
    char file[64], ref[64], msg[128];
    for (int o = 1; o <= 8; o++) {
        snprintf(file, sizeof file, "image/load/exif_%d.jpg", o);
        snprintf(ref, sizeof ref, "image/load/exif_%d_expected.png", o);
        snprintf(msg, sizeof msg, "EXIF orientation %d is applied as PIL's exif_transpose", o);
        expect_like(msg, file, ref, NULL, 2);
        int w = 0, h = 0;
        ds_status st = ds_image_probe(fixture(file), NULL, &w, &h);
        snprintf(msg, sizeof msg, "probe of EXIF orientation %d reports the displayed size", o);
        test_cond(msg, st == DS_OK && (o >= 5 ? (w == 8 && h == 16) : (w == 16 && h == 8)));
    }
}

/* bad input: one-line error naming the file and the reason, *out untouched */
static void expect_fail(const char *descr, const char *path, const ds_image_load_params *p, ds_status want,
                        const char *phrase) {
    ds_image *img = (ds_image *)0x1;
    ds_status st = ds_image_load(path, p, &img);
    const char *e = ds_last_error();
    char msg[400];
    snprintf(msg, sizeof msg, "%s: status %d, error \"%s\"", descr, (int)st, e);
    test_cond(msg, st == want && img == (ds_image *)0x1 && strstr(e, path) && strstr(e, phrase) && !strchr(e, '\n'));
}

static void test_bad_inputs(void) {
    write_bytes(tmp_path("empty.png"), "", 0);
    expect_fail("a zero-byte file", tmp_path("empty.png"), NULL, DS_ERR_FORMAT, "empty file");
    write_bytes(tmp_path("notes.png"), "this is not an image\n", 21);
    expect_fail("a text file named .png", tmp_path("notes.png"), NULL, DS_ERR_FORMAT, "not an image");
    expect_fail("a missing path", tmp_path("does-not-exist.png"), NULL, DS_ERR_IO, "no such file");
    expect_fail("a directory", g_tmp, NULL, DS_ERR_IO, "is a directory");
    size_t n = 0;
    char *png = read_bytes(fixture("image/pipeline_he224_in.png"), &n);
    write_bytes(tmp_path("trunc.png"), png, n / 2);
    expect_fail("a PNG truncated to half", tmp_path("trunc.png"), NULL, DS_ERR_FORMAT, "truncated or corrupt");
    int w = 0, h = 0;
    test_cond("probing the truncated PNG still succeeds (header only)",
              ds_image_probe(tmp_path("trunc.png"), NULL, &w, &h) == DS_OK && w == 224 && h == 224);
    free(png);
    /* a JPEG of real size, truncated */
    ds_image *he = load(fixture("image/pipeline_he224_in.png"), NULL);
    VipsImage *v = he ? vips_image_new_from_memory(he->pixels, (size_t)224 * 224 * 3, 224, 224, 3, VIPS_FORMAT_UCHAR) : NULL;
    if (v && vips_jpegsave(v, tmp_path("full.jpg"), "Q", 90, NULL) == 0) {
        char *jpg = read_bytes(tmp_path("full.jpg"), &n);
        write_bytes(tmp_path("trunc.jpg"), jpg, n / 2);
        free(jpg);
        ds_image *ok = load(tmp_path("full.jpg"), NULL);
        test_cond("the untruncated JPEG loads", ok && ok->width == 224);
        ds_image_free(ok);
        expect_fail("a JPEG truncated to half", tmp_path("trunc.jpg"), NULL, DS_ERR_FORMAT, "truncated or corrupt");
    } else {
        test_cond("libvips writes a test JPEG", 0);
    }
    if (v) g_object_unref(v);
    ds_image_free(he);
    expect_fail("a PNG header claiming 100000x100000 pixels (decompression bomb)", fixture("image/load/bomb.png"), NULL,
                DS_ERR_UNSUPPORTED, "exceeds the limit");
    ds_image_load_params p = {0};
    p.max_pixels = 100;
    expect_fail("a 13x9 image over a 100-pixel limit", fixture("image/load/formats.png"), &p, DS_ERR_UNSUPPORTED,
                "117 pixels exceeds the limit of 100");
    test_cond("probe also refuses the bomb from its header",
              ds_image_probe(fixture("image/load/bomb.png"), NULL, NULL, NULL) == DS_ERR_UNSUPPORTED);
    /* one per format, refused from the header before the decoder allocates
     * the image (the messages are the header checks', not "cannot decode") */
    expect_fail("a JPEG whose SOF0 claims 60000x60000 pixels", fixture("image/bombs/jpeg_60000.jpg"), NULL,
                DS_ERR_UNSUPPORTED, "3600000000 pixels exceeds the limit");
    expect_fail("a TIFF claiming 100000x100000 pixels", fixture("image/bombs/tiff_100000.tif"), NULL, DS_ERR_UNSUPPORTED,
                "exceeds the limit");
    expect_fail("a 16000x16000 PNG (under the pixel limit) with 200 bytes of IDAT", fixture("image/bombs/png_16000_tiny.png"),
                NULL, DS_ERR_FORMAT, "need at least 744186 bytes of compressed data, the file has 257");
    expect_fail("a 16-bit 12000x12000 TIFF whose strip table points past the end of the file",
                fixture("image/bombs/tiff16_bogus_strips.tif"), NULL, DS_ERR_FORMAT, "past the end of the file (222 bytes)");
    expect_fail("a 16-bit 12000x12000 uncompressed TIFF with 100 bytes of strips",
                fixture("image/bombs/tiff16_short_strips.tif"), NULL, DS_ERR_FORMAT, "corrupt");
    test_cond("probe refuses the lying 16-bit TIFF too",
              ds_image_probe(fixture("image/bombs/tiff16_bogus_strips.tif"), NULL, NULL, NULL) == DS_ERR_FORMAT);
    {
        ds_image *ok16 = NULL;
        ds_image_load_params wp = {.window_set = 1, .window_min = 0, .window_max = 65535};
        test_cond("a valid 16-bit TIFF of the same hand-made layout loads (3x2)",
                  ds_image_load(fixture("image/bombs/tiff16_ok.tif"), &wp, &ok16) == DS_OK && ok16->width == 3 &&
                      ok16->height == 2);
        /* v' = round(v / 65535 * 255): 0, 1000, 2000, 30000, 50000, 65535 */
        static const uint8_t want[6] = {0, 4, 8, 117, 195, 255};
        bool same = ok16 != NULL;
        for (int i = 0; same && i < 6; i++) same = ok16->pixels[3 * i] == want[i];
        test_cond("and its samples are windowed as v/65535*255", same);
        ds_image_free(ok16);
    }
    ds_image *img = (ds_image *)0x1;
    test_cond("NULL path is refused", ds_image_load(NULL, NULL, &img) == DS_ERR_ARG && img == (ds_image *)0x1);
}

static void test_create_save(void) {
    test_cond("an image of 0 width is refused", ds_image_create(0, 5, 3) == NULL);
    test_cond("an image of 2 channels is refused", ds_image_create(5, 5, 2) == NULL);
    ds_image_free(NULL);
    test_cond("ds_image_free(NULL) is a no-op", 1);

    ds_image *rgb = ds_image_create(7, 5, 3), *grey = ds_image_create(7, 5, 1);
    for (int i = 0; i < 7 * 5 * 3; i++) rgb->pixels[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < 7 * 5; i++) grey->pixels[i] = (uint8_t)(i * 53);
    test_cond("an RGB image saves as PNG", ds_image_save_png(tmp_path("rgb.png"), rgb) == DS_OK);
    ds_image *back = load(tmp_path("rgb.png"), NULL);
    test_cond("the saved RGB PNG loads back identical", max_diff(back, rgb) == 0);
    ds_image_free(back);
    test_cond("a grey image saves as PNG", ds_image_save_png(tmp_path("grey.png"), grey) == DS_OK);
    back = load(tmp_path("grey.png"), NULL);
    int ok = back && back->channels == 3;
    for (int i = 0; ok && i < 35; i++) ok = back->pixels[3 * i] == grey->pixels[i] && back->pixels[3 * i + 2] == grey->pixels[i];
    test_cond("the saved grey PNG loads back identical (as R=G=B)", ok);
    ds_image_free(back);
    test_cond("saving into a missing folder fails with DS_ERR_IO",
              ds_image_save_png(tmp_path("no/such/dir/x.png"), rgb) == DS_ERR_IO);
    test_cond("and leaves no file behind", !file_exists(tmp_path("no/such/dir/x.png")));
    ds_image_free(rgb);
    ds_image_free(grey);
}

static void touch(const char *rel) { write_bytes(tmp_path(rel), "x", 1); }

static void test_lists(void) {
    mkdir(tmp_path("set"), 0777);
    mkdir(tmp_path("set/sub"), 0777);
    mkdir(tmp_path("set/empty"), 0777);
    touch("set/b.png");
    touch("set/a.JPG");
    touch("set/c.tif");
    touch("set/.hidden.png");
    touch("set/readme.txt");
    touch("set/sub/z.png");
    ds_image_list *l = NULL;
    const char *args[] = {tmp_path("set")};
    ds_status st = ds_image_list_expand(args, 1, 0, &l);
    int ok = st == DS_OK && l->n == 3 && strstr(l->paths[0], "set/a.JPG") && strstr(l->paths[1], "set/b.png") &&
             strstr(l->paths[2], "set/c.tif") && l->labels[0] == -1 && !l->splits[0] && !l->masks[0];
    test_cond("a folder lists its images sorted, skipping hidden and non-image files and sub-folders", ok);
    ds_image_list_free(l);
    l = NULL;
    st = ds_image_list_expand(args, 1, 1, &l);
    test_cond("--recursive adds the images of sub-folders", st == DS_OK && l->n == 4 && strstr(l->paths[3], "set/sub/z.png"));
    ds_image_list_free(l);
    l = NULL;
    const char *empty[] = {tmp_path("set/empty")};
    st = ds_image_list_expand(empty, 1, 0, &l);
    test_cond("an empty folder is an error naming it", st != DS_OK && l == NULL && strstr(ds_last_error(), "set/empty"));

    FILE *fp = fopen(tmp_path("set/labels.csv"), "w");
    fprintf(fp, "filename,split,label,maskfile\r\ntrain/normal/x1.png,train,0,\n\"test/anomaly/y,2.png\",test,1,masks/y2.png\n\n");
    fclose(fp);
    const char *csv[] = {tmp_path("set/labels.csv"), tmp_path("set/b.png")};
    st = ds_image_list_expand(csv, 2, 0, &l);
    ok = st == DS_OK && l->n == 3;
    if (ok) {
        ok = strstr(l->paths[0], "set/train/normal/x1.png") && l->labels[0] == 0 && !strcmp(l->splits[0], "train") &&
             !l->masks[0] && strstr(l->paths[1], "set/test/anomaly/y,2.png") && l->labels[1] == 1 &&
             !strcmp(l->splits[1], "test") && strstr(l->masks[1], "set/masks/y2.png") && strstr(l->paths[2], "b.png") &&
             l->labels[2] == -1;
    }
    test_cond("a labels.csv lists its files relative to the CSV, with split, label and mask (quotes, CRLF)", ok);
    ds_image_list_free(l);
    l = NULL;
    fp = fopen(tmp_path("set/bad.csv"), "w");
    fprintf(fp, "path,label\nx.png,0\n");
    fclose(fp);
    const char *bad[] = {tmp_path("set/bad.csv")};
    st = ds_image_list_expand(bad, 1, 0, &l);
    test_cond("a CSV without a filename column is an error naming it",
              st == DS_ERR_FORMAT && l == NULL && strstr(ds_last_error(), "bad.csv") && strstr(ds_last_error(), "filename"));
    fp = fopen(tmp_path("set/badlabel.csv"), "w");
    fprintf(fp, "filename,label\nx.png,abnormal\n");
    fclose(fp);
    const char *bad2[] = {tmp_path("set/badlabel.csv")};
    st = ds_image_list_expand(bad2, 1, 0, &l);
    test_cond("a non-integer label is an error naming the CSV line",
              st == DS_ERR_FORMAT && strstr(ds_last_error(), "line 2") && strstr(ds_last_error(), "abnormal"));
    const char *missing[] = {tmp_path("set/missing.png")};
    st = ds_image_list_expand(missing, 1, 0, &l);
    test_cond("a missing file is listed (its load fails later with the per-file error)", st == DS_OK && l->n == 1);
    ds_image_list_free(l);
    ds_image_list_free(NULL);

    /* the real layout, when ../shared is there */
    char shared_csv[600];
    snprintf(shared_csv, sizeof shared_csv, "%s/data/brain_mri/labels.csv", test_env("DS_SHARED", "../shared"));
    if (file_exists(shared_csv)) {
        const char *sa[] = {shared_csv};
        l = NULL;
        st = ds_image_list_expand(sa, 1, 0, &l);
        int n_test = 0, n_anom = 0;
        for (int i = 0; st == DS_OK && i < l->n; i++) {
            n_test += l->splits[i] && !strcmp(l->splits[i], "test");
            n_anom += l->labels[i] == 1;
        }
        test_cond("brain_mri/labels.csv lists 550 images: 250 test, 150 anomalous",
                  st == DS_OK && l->n == 550 && n_test == 250 && n_anom == 150);
        ds_image *first = st == DS_OK ? load(l->paths[0], NULL) : NULL;
        test_cond("its first image loads as 224x224 RGB", first && first->width == 224 && first->height == 224);
        ds_image_free(first);
        ds_image_list_free(l);
    } else {
        printf("SKIP shared labels.csv checks: %s not found\n", shared_csv);
    }
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/test_image", test_env("DS_TMP", "build/testtmp"));
    mkdir(test_env("DS_TMP", "build/testtmp"), 0777);
    mkdir(g_tmp, 0777);
    test_cond("ds_image_init starts libvips", ds_image_init() == DS_OK);
    test_cond("ds_image_init is idempotent", ds_image_init() == DS_OK);
    test_formats();
    test_depth_and_alpha();
    test_exif();
    test_bad_inputs();
    test_create_save();
    test_lists();
    test_report();
}
