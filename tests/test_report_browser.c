/* report.html in a real browser: headless Chromium (Debian's `chromium`)
 * renders the report of the fixture test set (tests/fixtures/report, with
 * gallery pictures made by ds_map_overlay), and the test asserts that
 *   1. the DOM after load has the ROC/PR curves as SVG paths with a real
 *      extent (getBBox) and every gallery <img> decoded from its data URI
 *      to the picture's size (naturalWidth/Height), read through a small
 *      wrapper page that holds report.html in an iframe
 *      (--allow-file-access-from-files) and prints what it measured;
 *   2. the screenshot of report.html (decoded with the dinoscope library)
 *      shows the curves' colours inside the curve plots' boxes, the
 *      histogram bars in theirs, and colour-mapped pictures with the cyan
 *      mask outline in the gallery's image boxes.
 * Skipped (exit 77) when /usr/bin/chromium (or $DS_CHROMIUM) is absent. The
 * screenshot stays in $DS_TMP/test_report_browser/screenshot.png to look at. */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dinoscope/eval.h"
#include "dinoscope/report.h"
#include "dinoscope/image.h"
#include "dinoscope/maps.h"
#include "report_fixture.h"
#include "test.h"

enum { WIN_W = 1200, WIN_H = 3000, MAX_BOXES = 64 };

typedef struct {
    char kind[16], id[32];
    double x, y, w, h;
    int nat_w, nat_h, complete;
} box;

static const char *WRAPPER =
    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>body{margin:0}iframe{border:0;display:block}</style>"
    "</head><body><iframe id=\"f\" src=\"report.html\" width=\"1200\" height=\"3000\"></iframe><script>\n"
    "document.getElementById('f').addEventListener('load', function () {\n"
    "  var d = this.contentDocument, out = [];\n"
    "  if (!d) out.push('noaccess');\n"
    "  else {\n"
    "    d.querySelectorAll('img.overlay').forEach(function (i) { var r = i.getBoundingClientRect();\n"
    "      out.push(['img', '-', r.left, r.top, r.width, r.height, i.naturalWidth, i.naturalHeight, i.complete ? 1 : 0].join(' ')); });\n"
    "    d.querySelectorAll('svg.curve, svg.hist').forEach(function (s) { var r = s.getBoundingClientRect();\n"
    "      out.push(['svg', s.id, r.left, r.top, r.width, r.height, 0, 0, 1].join(' ')); });\n"
    "    d.querySelectorAll('path.roc-curve, path.pr-curve').forEach(function (p) { var b = p.getBBox();\n"
    "      out.push(['path', p.getAttribute('class'), b.x, b.y, b.width, b.height, 0, 0, 1].join(' ')); });\n"
    "  }\n"
    "  var pre = document.createElement('pre'); pre.id = 'measured'; pre.textContent = out.join('\\n');\n"
    "  document.body.appendChild(pre);\n"
    "});\n</script></body></html>\n";

/* Runs cmd, returns its stdout (malloc'd) or NULL. */
static char *run_capture(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) {
            char *b = realloc(buf, cap * 2);
            if (!b) break;
            buf = b, cap *= 2;
        }
    }
    int rc = pclose(p);
    if (buf) buf[len] = 0;
    if (rc != 0) printf("  command exited with status %d: %s\n", rc, cmd);
    return buf;
}

static int parse_boxes(const char *dom, box *b, int max) {
    const char *p = strstr(dom, "<pre id=\"measured\">");
    if (!p) return -1;
    p += strlen("<pre id=\"measured\">");
    const char *end = strstr(p, "</pre>");
    int n = 0;
    while (p && p < end && n < max) {
        box x = {0};
        if (sscanf(p, "%15s %31s %lf %lf %lf %lf %d %d %d", x.kind, x.id, &x.x, &x.y, &x.w, &x.h, &x.nat_w, &x.nat_h,
                   &x.complete) == 9)
            b[n++] = x;
        p = strchr(p, '\n');
        if (p) p++;
    }
    return n;
}

/* Pixels of the screenshot inside box (shrunk by inset px) for which
 * pred is true; *total gets the number looked at. */
typedef bool (*pixel_pred)(const uint8_t *rgb);
static int count_in(const ds_image *shot, const box *b, int inset, pixel_pred pred, int *total) {
    int x0 = (int)ceil(b->x) + inset, y0 = (int)ceil(b->y) + inset;
    int x1 = (int)floor(b->x + b->w) - inset, y1 = (int)floor(b->y + b->h) - inset;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > shot->width) x1 = shot->width;
    if (y1 > shot->height) y1 = shot->height;
    int n = 0, t = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++, t++) n += pred(shot->pixels + ((size_t)y * shot->width + x) * 3);
    if (total) *total = t;
    return n;
}

static bool near_rgb(const uint8_t *p, int r, int g, int b, int tol) {
    return abs(p[0] - r) <= tol && abs(p[1] - g) <= tol && abs(p[2] - b) <= tol;
}
/* tab10 blue and orange: the curves of scorers 0 and 1 (report_html.c COLOURS) */
static bool is_curve0(const uint8_t *p) { return near_rgb(p, 0x1f, 0x77, 0xb4, 12); }
static bool is_curve1(const uint8_t *p) { return near_rgb(p, 0xff, 0x7f, 0x0e, 12); }
/* the normal bars: #4c72b0 at opacity 0.55 over white = (160, 177, 212) */
static bool is_normal_bar(const uint8_t *p) { return near_rgb(p, 160, 177, 212, 12); }
/* colour-mapped: clearly not grey */
static bool is_colourful(const uint8_t *p) {
    int mx = p[0] > p[1] ? (p[0] > p[2] ? p[0] : p[2]) : (p[1] > p[2] ? p[1] : p[2]);
    int mn = p[0] < p[1] ? (p[0] < p[2] ? p[0] : p[2]) : (p[1] < p[2] ? p[1] : p[2]);
    return mx - mn >= 30;
}
static bool is_cyan(const uint8_t *p) { return p[0] < 90 && p[1] > 190 && p[2] > 190; }
static bool is_white(const uint8_t *p) { return p[0] == 255 && p[1] == 255 && p[2] == 255; }

/* Gallery pictures: a grey textured image at 6x the fixture's map size with
 * the map (nearest-upsampled) as an inferno overlay. */
static ds_status add_pictures(ds_report *r, const fixture_set *f, int *n_pics) {
    int idx[12], n = 0;
    ds_status st = ds_report_gallery_select(r, 4, idx, &n);
    if (st != DS_OK) return st;
    int S = 6, W = f->W * S, H = f->H * S;
    size_t hw = (size_t)f->H * f->W;
    float *map = malloc(sizeof(float) * (size_t)W * H);
    uint8_t *mask = malloc(hw);
    ds_report_set_map_scale(r, -1.0f, 2.5f);
    for (int j = 0; j < n && st == DS_OK; j++) {
        int i = idx[j];
        ds_image *img = ds_image_create(W, H, 1), *ov = NULL;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                img->pixels[(size_t)y * W + x] = (uint8_t)(110 + 40 * sin(0.3 * x + 0.2 * y + i));
                map[(size_t)y * W + x] = f->maps[(size_t)i * hw + (size_t)(y / S) * f->W + x / S];
            }
        for (size_t q = 0; q < hw; q++) mask[q] = f->masks[(size_t)i * hw + q] > 0;
        st = ds_map_overlay(img, map, -1.0f, 2.5f, 0.6f, 0, &ov);
        if (st == DS_OK) st = ds_report_set_picture(r, i, ov, f->labels[i] ? mask : NULL, f->W, f->H, 0);
        ds_image_free(img);
        ds_image_free(ov);
    }
    free(map);
    free(mask);
    *n_pics = n;
    return st;
}

int main(void) {
    const char *chromium = test_env("DS_CHROMIUM", "/usr/bin/chromium");
    if (access(chromium, X_OK) != 0)
        test_skip("no Chromium at /usr/bin/chromium (Debian package 'chromium'; or set DS_CHROMIUM): report.html is not "
                  "rendered in a browser");
    if (ds_image_init() != DS_OK) test_skip("libvips unavailable");
    char dir[1024], path[2048], cmd[8192];
    snprintf(dir, sizeof dir, "%s/test_report_browser", test_env("DS_TMP", "/tmp"));
    g_mkdir_with_parents(dir, 0755);
    char *abs_dir = g_canonicalize_filename(dir, NULL); /* file:// URLs need an absolute path */

    fixture_set f = {0};
    if (!load_fixture(&f)) {
        printf("cannot load the report fixtures under %s\n", fixture("report"));
        return 1;
    }
    ds_report *r = build_report(&f, true);
    int n_pics = 0;
    ds_status st = r ? add_pictures(r, &f, &n_pics) : DS_ERR_ARG;
    if (st == DS_OK) st = ds_report_write(r, abs_dir);
    test_cond("the fixture's report with gallery pictures is written", st == DS_OK && n_pics > 0);
    if (st != DS_OK) {
        printf("  %s\n", ds_last_error());
        test_report();
    }
    snprintf(path, sizeof path, "%s/wrapper.html", abs_dir);
    FILE *fp = fopen(path, "w");
    if (fp) {
        fputs(WRAPPER, fp);
        fclose(fp);
    }

    /* Flags: no network, no first-run UI, a throw-away profile; timeout(1)
     * guards against a hung browser. */
    char *profile = g_dir_make_tmp("ds_chromium_XXXXXX", NULL);
    const char *common = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                         "--disable-background-networking --disable-component-update --disable-sync --hide-scrollbars";
    snprintf(cmd, sizeof cmd,
             "timeout 120 '%s' %s --user-data-dir='%s' --window-size=%d,%d --allow-file-access-from-files "
             "--virtual-time-budget=10000 --dump-dom 'file://%s/wrapper.html' 2>/dev/null",
             chromium, common, profile, WIN_W, WIN_H, abs_dir);
    char *dom = run_capture(cmd);
    box boxes[MAX_BOXES];
    int nb = dom ? parse_boxes(dom, boxes, MAX_BOXES) : -1;
    test_cond("Chromium loads the page and the wrapper measures it (--dump-dom)", nb > 0);
    int n_img = 0, n_decoded = 0, n_paths = 0, n_extent = 0, n_svg = 0;
    for (int i = 0; i < nb; i++) {
        const box *b = &boxes[i];
        if (!strcmp(b->kind, "img")) {
            n_img++;
            /* pictures are 96x72 (6x the 16x12 maps), under the 320 px cap */
            n_decoded += b->complete && b->nat_w == 6 * f.W && b->nat_h == 6 * f.H;
        } else if (!strcmp(b->kind, "path")) {
            n_paths++;
            /* each curve spans most of the 300x240 plot area */
            n_extent += b->w > 200 && b->h > 50;
        } else if (!strcmp(b->kind, "svg")) {
            n_svg++;
        }
    }
    test_cond("DOM: an ROC and a PR path per scorer (2 + 2)", n_paths == 4);
    test_cond("DOM: every curve path has a real extent (getBBox wider than 200 px, taller than 50 px)", n_extent == 4);
    test_cond("DOM: the ROC and PR plots and one histogram per scorer are SVG elements", n_svg == 4);
    test_cond("DOM: one <img> per gallery card", n_img == 12);
    test_cond("DOM: every gallery <img> decoded from its data URI to 96x72", n_decoded == n_img && n_img > 0);

    snprintf(cmd, sizeof cmd,
             "timeout 120 '%s' %s --user-data-dir='%s' --window-size=%d,%d --screenshot='%s/screenshot.png' "
             "'file://%s/report.html' >/dev/null 2>&1",
             chromium, common, profile, WIN_W, WIN_H, abs_dir, abs_dir);
    int rc = system(cmd);
    snprintf(path, sizeof path, "%s/screenshot.png", abs_dir);
    ds_image *shot = NULL;
    bool loaded = rc == 0 && ds_image_load(path, NULL, &shot) == DS_OK;
    test_cond("Chromium takes a 1200x3000 screenshot of report.html", loaded && shot->width == WIN_W && shot->height == WIN_H);
    if (loaded) {
        box corner = {.x = 0, .y = 0, .w = 12, .h = 12};
        test_cond("screenshot: the page background is white", count_in(shot, &corner, 0, is_white, NULL) == 144);
        const box *roc = NULL, *pr = NULL, *hist0 = NULL;
        for (int i = 0; i < nb; i++) {
            if (!strcmp(boxes[i].id, "roc")) roc = &boxes[i];
            if (!strcmp(boxes[i].id, "pr")) pr = &boxes[i];
            if (!strcmp(boxes[i].id, "hist-0")) hist0 = &boxes[i];
        }
        /* a 2 px line across a 300 px plot covers several hundred pixels;
         * 150 leaves room for anti-aliasing and overlap with the other curve */
        test_cond("screenshot: the ROC plot shows both curves in their colours (>= 150 px each)",
                  roc && count_in(shot, roc, 0, is_curve0, NULL) >= 150 && count_in(shot, roc, 0, is_curve1, NULL) >= 150);
        test_cond("screenshot: the PR plot shows both curves in their colours (>= 150 px each)",
                  pr && count_in(shot, pr, 0, is_curve0, NULL) >= 150 && count_in(shot, pr, 0, is_curve1, NULL) >= 150);
        test_cond("screenshot: the first histogram shows its normal bars (>= 300 px)",
                  hist0 && count_in(shot, hist0, 0, is_normal_bar, NULL) >= 300);
        int visible = 0, colourful = 0, with_cyan = 0;
        for (int i = 0; i < nb; i++) {
            const box *b = &boxes[i];
            if (strcmp(b->kind, "img") || b->y + b->h > WIN_H) continue;
            visible++;
            int total = 0, c = count_in(shot, b, 2, is_colourful, &total);
            colourful += total > 0 && c >= total / 2;
            with_cyan += count_in(shot, b, 0, is_cyan, NULL) > 0;
        }
        test_cond("screenshot: some gallery pictures lie within the first 3000 px", visible >= 4);
        test_cond("screenshot: every visible gallery picture is colour-mapped (at least half its pixels coloured)",
                  visible > 0 && colourful == visible);
        test_cond("screenshot: mask outlines (cyan) show on some pictures", with_cyan > 0);
    }
    printf("  screenshot: %s\n", path);
    ds_image_free(shot);
    free(dom);
    ds_report_free(r);
    free_fixture(&f);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", profile);
    if (system(cmd) != 0) printf("  could not remove %s\n", profile);
    g_free(profile);
    g_free(abs_dir);
    test_report();
}
