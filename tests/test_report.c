/* Evaluation reports (src/eval/report*.c) against scikit-learn / numpy /
 * MVTec-AUPRO references made by tests/fixtures/make_report_fixtures.py:
 * the figures in report.json, the thresholds' confusion counts, the
 * cross-validation mean/std, timings, gallery choice; the other outputs'
 * contents (scores.csv round-trips every score, report.md's table, a
 * self-contained report.html); mask outlines on gallery pictures; errors.
 * Also ds_image_encode_png and ds_scorer_params_of. Tolerance 1e-6 on
 * figures (the metrics are exact up to double rounding), 1e-9 on timings. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dinoscope/eval.h"
#include "dinoscope/report.h"
#include "dinoscope/image.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "report_fixture.h"
#include "test.h"

#define TOL 1e-6

static bool near(double a, double b, double tol) { return fabs(a - b) <= tol; }

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* The file names (alt attributes) of the cards in gallery section id, in
 * page order, compared with the reference's image indices. */
static bool section_matches(const char *html, const char *id, const cJSON *want, const int *labels) {
    char key[64];
    snprintf(key, sizeof key, "<div class=\"gallery\" id=\"gallery-%s\">", id);
    const char *p = strstr(html, key);
    if (!p) return false;
    const char *end = strstr(p, "</div>");
    int j = 0;
    for (const char *a = strstr(p, "alt=\""); a && a < end; a = strstr(a + 1, "alt=\"")) {
        const cJSON *w = cJSON_GetArrayItem(want, j++);
        if (!w) return false;
        char name[64];
        snprintf(name, sizeof name, "alt=\"%s_%02d.png\"", labels[w->valueint] ? "anomaly" : "normal", w->valueint);
        if (strncmp(a, name, strlen(name)) != 0) return false;
    }
    return j == cJSON_GetArraySize(want);
}

/* Number of entries in dir (hidden ones too). */
static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_figures(const fixture_set *f) {
    const cJSON *ex = obj(f->root, "expected");
    for (int k = 0; k < 2; k++) {
        const cJSON *e = cJSON_GetArrayItem(ex, k);
        ds_eval_figures g;
        ds_status st = ds_eval_image_figures(f->scores[k], f->labels, f->n, &g);
        char d[160];
        snprintf(d, sizeof d, "ds_eval_image_figures equals sklearn's AUROC, AP, F1-max and threshold (scorer %d%s)", k,
                 k == 0 ? ", heavy ties" : "");
        test_cond(d, st == DS_OK && near(g.image_auroc, num(e, "image_auroc"), TOL) &&
                         near(g.average_precision, num(e, "average_precision"), TOL) &&
                         near(g.f1_max, num(e, "f1_max"), TOL) && g.f1_threshold == (float)num(e, "f1_threshold") &&
                         isnan(g.pixel_auroc) && isnan(g.aupro) && g.n_anomalous == 18 && g.n_normal == 22);
        const cJSON *c = obj(e, "at_f1_threshold");
        ds_eval_confusion cf;
        st = ds_eval_at_threshold(f->scores[k], f->labels, f->n, (float)num(c, "threshold"), &cf);
        snprintf(d, sizeof d, "ds_eval_at_threshold equals sklearn's precision, recall, FPR and confusion counts (scorer %d)", k);
        test_cond(d, st == DS_OK && near(cf.precision, num(c, "precision"), TOL) && near(cf.recall, num(c, "recall"), TOL) &&
                         near(cf.fpr, num(c, "fpr"), TOL) && cf.tp == (int64_t)num(c, "tp") &&
                         cf.fp == (int64_t)num(c, "fp") && cf.tn == (int64_t)num(c, "tn") && cf.fn == (int64_t)num(c, "fn"));
    }
    /* one class: defined figures only, no error */
    float s[3] = {0.1f, 0.2f, 0.3f};
    int l0[3] = {0, 0, 0}, l1[3] = {1, 1, 1}, bad[3] = {0, 2, 1};
    ds_eval_figures g;
    test_cond("only normals: DS_OK with AUROC, AP and F1 undefined (NaN)",
              ds_eval_image_figures(s, l0, 3, &g) == DS_OK && isnan(g.image_auroc) && isnan(g.average_precision) &&
                  isnan(g.f1_max) && g.n_normal == 3);
    test_cond("only anomalies: AUROC undefined, AP = 1 and F1-max = 1 (sklearn)",
              ds_eval_image_figures(s, l1, 3, &g) == DS_OK && isnan(g.image_auroc) && g.average_precision == 1.0 &&
                  g.f1_max == 1.0);
    ds_eval_confusion cf;
    test_cond("nothing flagged: precision undefined (NaN), recall 0",
              ds_eval_at_threshold(s, l1, 3, 1.0f, &cf) == DS_OK && isnan(cf.precision) && cf.recall == 0 && isnan(cf.fpr));
    test_cond("a label of 2 is an error naming its index",
              ds_eval_image_figures(s, bad, 3, &g) == DS_ERR_ARG && strstr(ds_last_error(), "label 1 is 2"));
    float nan_s[2] = {0.1f, NAN};
    int l2[2] = {0, 1};
    test_cond("a NaN score is an error naming its index",
              ds_eval_at_threshold(nan_s, l2, 2, 0.5f, &cf) == DS_ERR_ARG && strstr(ds_last_error(), "score 1"));
}

static void test_report_files(const fixture_set *f, const char *dir) {
    ds_report *r = build_report(f, true);
    test_cond("a report of the fixture's 40 images builds", r != NULL);
    if (!r) return;
    ds_report_add_note(r, "a note with <html> & \"quotes\"");
    ds_report_set_resources(r, 12.5, 300ll << 20);
    /* gallery */
    const cJSON *gal = obj(f->root, "gallery");
    int n_per = (int)num(gal, "n_per"), idx[12], n = 0;
    ds_status st = ds_report_gallery_select(r, n_per, idx, &n);
    static const char *const secs[3] = {"top", "low_anomaly", "high_normal"};
    bool order_ok = st == DS_OK;
    int want = 0, seen[64] = {0};
    for (int s = 0; s < 3; s++)
        for (int j = 0; j < n_per; j++) {
            int v = cJSON_GetArrayItem(obj(gal, secs[s]), j)->valueint;
            if (!seen[v]) seen[v] = 1, want++;
        }
    test_cond("gallery: as many distinct images as the reference's three sections hold", order_ok && n == want);
    bool all_listed = true;
    for (int j = 0; j < n; j++) all_listed = all_listed && idx[j] >= 0 && idx[j] < 64 && seen[idx[j]];
    test_cond("gallery: every chosen image is one of the reference's", all_listed);
    /* pictures: a grey 24x32 image (2x the map) with the mask outline */
    size_t hw = (size_t)f->H * f->W;
    for (int j = 0; j < n; j++) {
        ds_image *pic = ds_image_create(2 * f->W, 2 * f->H, 1);
        memset(pic->pixels, 90, (size_t)pic->width * pic->height);
        uint8_t m[12 * 16];
        for (size_t q = 0; q < hw; q++) m[q] = f->masks[(size_t)idx[j] * hw + q] > 0;
        st = ds_report_set_picture(r, idx[j], pic, f->labels[idx[j]] ? m : NULL, f->W, f->H, 0);
        ds_image_free(pic);
        if (st != DS_OK) break;
    }
    test_cond("gallery pictures are accepted", st == DS_OK);
    st = ds_report_write(r, dir);
    test_cond("ds_report_write writes the folder", st == DS_OK);
    if (st != DS_OK) printf("  %s\n", ds_last_error());
    char path[2048];
    snprintf(path, sizeof path, "%s/report.json", dir);
    char *text = test_read_text(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    test_cond("report.json is valid JSON", j != NULL);
    if (!j) {
        ds_report_free(r);
        return;
    }
    const cJSON *scs = obj(j, "scorers"), *ex = obj(f->root, "expected"), *cvx = obj(f->root, "cv");
    test_cond("report.json lists both scorers", cJSON_GetArraySize(scs) == 2);
    for (int k = 0; k < 2 && cJSON_GetArraySize(scs) == 2; k++) {
        const cJSON *o = cJSON_GetArrayItem(scs, k), *e = cJSON_GetArrayItem(ex, k);
        char d[200];
        snprintf(d, sizeof d, "report.json: %s's image AUROC, AP, F1-max and threshold equal sklearn's", k ? "patchbank" : "knn");
        test_cond(d, near(num(o, "image_auroc"), num(e, "image_auroc"), TOL) &&
                         near(num(o, "average_precision"), num(e, "average_precision"), TOL) &&
                         near(num(o, "f1_max"), num(e, "f1_max"), TOL) &&
                         (float)num(o, "f1_threshold") == (float)num(e, "f1_threshold"));
        const cJSON *a = obj(o, "at_f1_threshold"), *b = obj(e, "at_f1_threshold");
        snprintf(d, sizeof d, "report.json: %s's precision/recall/FPR at the F1 threshold equal sklearn's", k ? "patchbank" : "knn");
        test_cond(d, near(num(a, "precision"), num(b, "precision"), TOL) && near(num(a, "recall"), num(b, "recall"), TOL) &&
                         near(num(a, "fpr"), num(b, "fpr"), TOL) && num(a, "tp") == num(b, "tp") && num(a, "fp") == num(b, "fp"));
        snprintf(d, sizeof d, "report.json: %s's inference ms (prep + backbone + scoring) median and mean equal numpy's",
                 k ? "patchbank" : "knn");
        const cJSON *inf = obj(obj(o, "timing_ms"), "inference"), *infx = obj(e, "inference_ms");
        test_cond(d, near(num(inf, "median"), num(infx, "median"), 1e-9) && near(num(inf, "mean"), num(infx, "mean"), 1e-9));
        const cJSON *cv = obj(o, "cv"), *cx = cJSON_GetArrayItem(cvx, k);
        static const char *const names[3] = {"image_auroc", "average_precision", "f1_max"};
        bool cv_ok = cv && num(cv, "folds") == 3;
        for (int q = 0; q < 3 && cv_ok; q++)
            cv_ok = near(num(obj(cv, "mean"), names[q]), num(obj(cx, names[q]), "mean"), TOL) &&
                    near(num(obj(cv, "std"), names[q]), num(obj(cx, names[q]), "std"), TOL);
        snprintf(d, sizeof d, "report.json: %s's 3-fold mean and std (ddof 0) equal numpy's over sklearn's folds",
                 k ? "patchbank" : "knn");
        test_cond(d, cv_ok);
    }
    const cJSON *o0 = cJSON_GetArrayItem(scs, 0), *o1 = cJSON_GetArrayItem(scs, 1), *e1 = cJSON_GetArrayItem(ex, 1);
    test_cond("report.json: knn has no maps, so its pixel figures are null",
              cJSON_IsNull(obj(o0, "pixel_auroc")) && cJSON_IsNull(obj(o0, "aupro")) && cJSON_IsNull(obj(o0, "stored_threshold")));
    test_cond("report.json: patchbank's pixel AUROC equals sklearn's (normals as all-zero masks, one empty mask)",
              near(num(o1, "pixel_auroc"), num(e1, "pixel_auroc"), TOL));
    test_cond("report.json: patchbank's AUPRO@0.3 equals the MVTec reference", near(num(o1, "aupro"), num(e1, "aupro"), TOL));
    const cJSON *stj = obj(o1, "stored_threshold"), *stx = obj(e1, "stored_threshold");
    test_cond("report.json: the stored threshold's precision, recall and FPR equal sklearn's",
              stj && near(num(stj, "precision"), num(stx, "precision"), TOL) && near(num(stj, "recall"), num(stx, "recall"), TOL) &&
                  near(num(stj, "fpr"), num(stx, "fpr"), TOL) && near(num(stj, "target_fpr"), 0.05, 0));
    const cJSON *tm = obj(j, "timing_ms"), *tmx = obj(f->root, "timing");
    test_cond("report.json: preprocessing and backbone median/mean equal numpy's",
              near(num(obj(tm, "preprocess"), "median"), num(obj(tmx, "preprocess"), "median"), 1e-9) &&
                  near(num(obj(tm, "preprocess"), "mean"), num(obj(tmx, "preprocess"), "mean"), 1e-9) &&
                  near(num(obj(tm, "backbone"), "median"), num(obj(tmx, "backbone"), "median"), 1e-9) &&
                  near(num(obj(tm, "backbone"), "mean"), num(obj(tmx, "backbone"), "mean"), 1e-9));
    test_cond("report.json: peak memory in MB and the notes",
              near(num(obj(j, "resources"), "peak_rss_mb"), 300, 1e-9) && cJSON_GetArraySize(obj(j, "notes")) == 1);
    test_cond("report.json: test-set counts (22 normal, 18 anomalous, 18 masks)",
              num(obj(j, "test_set"), "n_normal") == 22 && num(obj(j, "test_set"), "n_anomalous") == 18 &&
                  num(obj(j, "test_set"), "n_masks") == 18);
    cJSON_Delete(j);

    /* scores.csv: one row per image, scores round-trip exactly */
    snprintf(path, sizeof path, "%s/scores.csv", dir);
    text = test_read_text(path);
    bool csv_ok = text && !strncmp(text, "path,label,defect,maskfile,knn,patchbank,patchbank_anomalous,", 61);
    int rows = 0;
    if (text) {
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            if (rows++ == 0) continue;
            int i = rows - 2;
            char def[32], mk[64];
            int lab, an;
            float s0, s1;
            /* path (no commas here),label,defect,maskfile,knn,patchbank,patchbank_anomalous,... */
            char *rest = strchr(line, ',');
            if (!rest) {
                csv_ok = false;
                break;
            }
            rest++;
            int got;
            if (f->labels[i])
                got = sscanf(rest, "%d,%31[^,],%63[^,],%f,%f,%d", &lab, def, mk, &s0, &s1, &an) == 6;
            else
                got = sscanf(rest, "%d,,,%f,%f,%d", &lab, &s0, &s1, &an) == 4;
            csv_ok = csv_ok && got && lab == f->labels[i] && s0 == f->scores[0][i] && s1 == f->scores[1][i] &&
                     an == (s1 >= (float)num(f->root, "stored_threshold"));
        }
    }
    free(text);
    test_cond("scores.csv: a header and one row per image, every score round-trips exactly", csv_ok && rows == 41);

    snprintf(path, sizeof path, "%s/report.md", dir);
    text = test_read_text(path);
    test_cond("report.md: the seed-style table header",
              text && strstr(text, "| Method | Backbone | Image AUROC | Pixel AUROC | AUPRO | F1-max | Inference ms/img |"));
    char row[256];
    snprintf(row, sizeof row, "| patchbank | mobilenet_v2 | %.4f | %.4f | %.4f | %.4f |", num(e1, "image_auroc"),
             num(e1, "pixel_auroc"), num(e1, "aupro"), num(e1, "f1_max"));
    test_cond("report.md: patchbank's row shows the reference figures to 4 decimals", text && strstr(text, row));
    test_cond("report.md: cross-validation and timing sections", text && strstr(text, "## Cross-validation") &&
                                                                    strstr(text, "## Timing per image"));
    free(text);

    snprintf(path, sizeof path, "%s/report.html", dir);
    text = test_read_text(path);
    test_cond("report.html: one page with ROC and PR SVGs and a histogram per scorer",
              text && strstr(text, "<svg class=\"curve\" id=\"roc\"") && strstr(text, "<svg class=\"curve\" id=\"pr\"") &&
                  count(text, "<svg class=\"hist\"") == 2 && count(text, "class=\"roc-curve\"") == 2 &&
                  count(text, "class=\"pr-curve\"") == 2);
    test_cond("report.html: one embedded PNG per gallery card",
              text && count(text, "src=\"data:image/png;base64,") == 3 * n_per);
    test_cond("report.html: self-contained (no scripts, no external links or sources)",
              text && !strstr(text, "<script") && !strstr(text, "<link") && !strstr(text, "src=\"http") &&
                  !strstr(text, "url(http"));
    test_cond("report.html gallery: the most anomalous images in the reference's order (score desc, index asc)",
              text && section_matches(text, "top", obj(gal, "top"), f->labels));
    test_cond("report.html gallery: the lowest-scoring anomalies in the reference's order",
              text && section_matches(text, "missed", obj(gal, "low_anomaly"), f->labels));
    test_cond("report.html gallery: the highest-scoring normals in the reference's order",
              text && section_matches(text, "false-alarms", obj(gal, "high_normal"), f->labels));
    test_cond("report.html: notes are HTML-escaped",
              text && strstr(text, "a note with &lt;html&gt; &amp; &quot;quotes&quot;"));

    /* the outline: decode the first anomalous card's picture */
    bool outline_ok = false;
    if (text) {
        /* find the card of the reference's first 'low_anomaly' image: its alt is its file name */
        int a = cJSON_GetArrayItem(obj(gal, "low_anomaly"), 0)->valueint;
        char alt[64];
        snprintf(alt, sizeof alt, "alt=\"anomaly_%02d.png\" src=\"data:image/png;base64,", a);
        char *p = strstr(text, alt);
        if (p) {
            p += strlen(alt);
            char *end = strchr(p, '"');
            *end = 0;
            gsize len;
            guchar *png = g_base64_decode(p, &len);
            *end = '"';
            char pp[2048];
            snprintf(pp, sizeof pp, "%s/outline.png", dir);
            FILE *fp = fopen(pp, "wb");
            fwrite(png, 1, len, fp);
            fclose(fp);
            g_free(png);
            ds_image *img = NULL;
            if (ds_image_load(pp, NULL, &img) == DS_OK && img->width == 2 * f->W && img->height == 2 * f->H) {
                /* expected: cyan exactly where the 2x nearest mask has a 4-neighbour outside it */
                outline_ok = true;
                int Wd = img->width, Hd = img->height;
                for (int y = 0; y < Hd; y++)
                    for (int x = 0; x < Wd; x++) {
                        const float *mk = f->masks + (size_t)a * hw;
#define M(yy, xx) ((yy) >= 0 && (xx) >= 0 && (yy) < Hd && (xx) < Wd && mk[(size_t)((yy) / 2) * f->W + (xx) / 2] > 0)
                        bool in = M(y, x);
                        bool edge = in && (x == 0 || y == 0 || x == Wd - 1 || y == Hd - 1 || !M(y, x - 1) ||
                                           !M(y, x + 1) || !M(y - 1, x) || !M(y + 1, x));
#undef M
                        const uint8_t *q = img->pixels + ((size_t)y * Wd + x) * 3;
                        bool cyan = q[0] == 0 && q[1] == 255 && q[2] == 255, grey = q[0] == 90 && q[1] == 90 && q[2] == 90;
                        if (edge ? !cyan : !grey) outline_ok = false;
                    }
            }
            ds_image_free(img);
            remove(pp);
        }
    }
    test_cond("gallery picture: the mask outline is cyan exactly on the mask's border pixels, the rest untouched", outline_ok);
    free(text);
    test_cond("the folder holds exactly the four outputs (no temp files)", dir_entries(dir) == 4);
    ds_report_free(r);
}

static void test_report_errors(const fixture_set *f, const char *dir) {
    ds_report *r = NULL;
    ds_report_params p = {.n_scorers = 0};
    test_cond("a report without scorers is refused", ds_report_create(&p, &r) == DS_ERR_ARG && r == NULL);
    p.n_scorers = 1;
    p.scorers[0] = (ds_report_scorer){.name = "knn"};
    test_cond("a report with one scorer is created", ds_report_create(&p, &r) == DS_OK && r);
    test_cond("writing a report without images is refused", ds_report_write(r, dir) == DS_ERR_ARG);
    float s = NAN;
    ds_report_image im = {.path = "x.png", .label = 0, .scores = &s};
    test_cond("a NaN score is refused, naming the image",
              ds_report_add_image(r, &im, NULL) == DS_ERR_ARG && strstr(ds_last_error(), "'x.png'"));
    s = 1;
    im.label = 3;
    test_cond("a label of 3 is refused, naming the image",
              ds_report_add_image(r, &im, NULL) == DS_ERR_ARG && strstr(ds_last_error(), "label 3"));
    im.label = 0;
    test_cond("an image is added", ds_report_add_image(r, &im, NULL) == DS_OK);
    ds_eval_figures g;
    test_cond("figures of one class: AUROC undefined, no error",
              ds_report_figures(r, 0, &g) == DS_OK && isnan(g.image_auroc));
    char missing[2048];
    snprintf(missing, sizeof missing, "%s/no/such/folder", dir);
    test_cond("writing into a missing folder is an I/O error", ds_report_write(r, missing) == DS_ERR_IO);
    char *t = NULL;
    test_cond("an unknown output format is refused", ds_report_format(r, "pdf", &t) == DS_ERR_ARG && !t);
    test_cond("one-class reports still format (markdown)", ds_report_format(r, "md", &t) == DS_OK && t && strstr(t, "| knn |"));
    free(t);
    ds_image *pic = ds_image_create(4, 4, 3);
    test_cond("a picture for an image index out of range is refused", ds_report_set_picture(r, 5, pic, NULL, 0, 0, 0) == DS_ERR_ARG);
    ds_image_free(pic);
    test_cond("a map for a scorer out of range is refused", ds_report_add_map(r, 3, f->maps, NULL, 2, 2) == DS_ERR_ARG);
    ds_report_free(r);
    ds_report_free(NULL);
    test_cond("ds_report_free(NULL) is a no-op", true);
}

static void test_encode_png(const char *dir) {
    ds_image *rgb = ds_image_create(7, 5, 3), *grey = ds_image_create(3, 9, 1);
    for (int i = 0; i < 7 * 5 * 3; i++) rgb->pixels[i] = (uint8_t)(i * 37 + 11);
    for (int i = 0; i < 3 * 9; i++) grey->pixels[i] = (uint8_t)(i * 29);
    bool ok = true;
    for (int t = 0; t < 2; t++) {
        const ds_image *src = t ? grey : rgb;
        uint8_t *png = NULL;
        size_t len = 0;
        if (ds_image_encode_png(src, t ? 9 : 0, &png, &len) != DS_OK) {
            ok = false;
            break;
        }
        ok = ok && len > 8 && !memcmp(png, "\x89PNG\r\n\x1a\n", 8);
        char p[2048];
        snprintf(p, sizeof p, "%s/enc%d.png", dir, t);
        FILE *fp = fopen(p, "wb");
        fwrite(png, 1, len, fp);
        fclose(fp);
        free(png);
        ds_image *back = NULL;
        ok = ok && ds_image_load(p, NULL, &back) == DS_OK && back->width == src->width && back->height == src->height;
        for (int i = 0; ok && i < src->width * src->height; i++)
            for (int c = 0; c < 3; c++) ok = ok && back->pixels[3 * i + c] == src->pixels[i * src->channels + (src->channels == 3 ? c : 0)];
        ds_image_free(back);
        remove(p);
    }
    test_cond("ds_image_encode_png: RGB and grey PNGs in memory decode to the same pixels", ok);
    uint8_t *png = NULL;
    size_t len = 0;
    test_cond("ds_image_encode_png: compression 10 is refused", ds_image_encode_png(rgb, 10, &png, &len) == DS_ERR_ARG && !png);
    ds_image_free(rgb);
    ds_image_free(grey);
}

static void test_params_of(void) {
    enum { NI = 12, NP = 6, D = 8 };
    float *feats = malloc(sizeof(float) * NI * NP * D);
    uint64_t x = 7;
    for (int i = 0; i < NI * NP * D; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        feats[i] = (float)((x >> 40) % 1000) / 1000.0f - 0.5f;
    }
    ds_scorer_params p = ds_scorer_defaults(), q;
    p.k = 3;
    p.max_components = 4;
    p.coreset_ratio = 0.5;
    p.patch_k = 2;
    p.metric = DS_METRIC_L2;
    p.reduce = DS_REDUCE_TOP1PCT;
    ds_scorer *s = NULL;
    bool ok = ds_scorer_fit(DS_SCORER_KNN, &p, feats, NI, NP, D, &s) == DS_OK && ds_scorer_params_of(s, &q) == DS_OK;
    test_cond("ds_scorer_params_of: knn gives back k", ok && q.k == 3);
    ds_scorer_free(s);
    s = NULL;
    ok = ds_scorer_fit(DS_SCORER_GAUSSIAN, &p, feats, NI, NP, D, &s) == DS_OK && ds_scorer_params_of(s, &q) == DS_OK;
    test_cond("ds_scorer_params_of: gaussian gives back the components kept", ok && q.max_components == 4);
    ds_scorer_free(s);
    s = NULL;
    ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, feats, NI, NP, D, &s) == DS_OK && ds_scorer_params_of(s, &q) == DS_OK;
    test_cond("ds_scorer_params_of: patchbank gives back patch_k, metric, reduce and coreset ratio",
              ok && q.patch_k == 2 && q.metric == DS_METRIC_L2 && q.reduce == DS_REDUCE_TOP1PCT && q.coreset_ratio == 0.5);
    test_cond("ds_scorer_params_of: what is not stored keeps the defaults",
              ok && q.coreset_proj_dim == ds_scorer_defaults().coreset_proj_dim && q.seed == 0 && q.n_threads == 0);
    ds_scorer_free(s);
    test_cond("ds_scorer_params_of(NULL) is an argument error", ds_scorer_params_of(NULL, &q) == DS_ERR_ARG);
    free(feats);
}

int main(void) {
    const char *tmp = test_env("DS_TMP", "/tmp");
    char dir[1024], edir[1024];
    snprintf(dir, sizeof dir, "%s/test_report", tmp);
    snprintf(edir, sizeof edir, "%s/test_report_err", tmp);
    g_mkdir_with_parents(dir, 0755);
    g_mkdir_with_parents(edir, 0755);
    /* start from an empty folder */
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.') remove(p);
    }
    if (d) closedir(d);
    if (ds_image_init() != DS_OK) test_skip("libvips unavailable");
    fixture_set f = {0};
    if (!load_fixture(&f)) {
        printf("cannot load the report fixtures under %s\n", fixture("report"));
        return 1;
    }
    test_figures(&f);
    test_report_files(&f, dir);
    test_report_errors(&f, edir);
    test_encode_png(edir);
    test_params_of();
    free_fixture(&f);
    test_report();
}
