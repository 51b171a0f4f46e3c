/* Evaluation metrics against scikit-learn 1.2 and a numpy reference of MVTec
 * AD's compute_pro, made by tests/fixtures/make_eval_fixtures.py. Tolerance
 * 1e-6 on every metric; thresholds are score values and compare exactly. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/eval.h"
#include "dinoscope/npy.h"
#include "test.h"

#define TOL 1e-6

static int close_to(double a, double b) { return fabs(a - b) <= TOL; }

/* The LCG of make_eval_fixtures.py's lcg_case(), bit for bit. */
static void lcg_case(int64_t n, uint64_t seed, float *scores, int *labels) {
    uint64_t x = seed;
    for (int64_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t u1 = x >> 40;
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t u2 = x >> 40;
        int lab = u1 < 5033165u;
        labels[i] = lab;
        scores[i] = (float)((double)(u2 >> 12) / 4096.0 + 0.35 * lab);
    }
}

static void check_image_case(const cJSON *e) {
    const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
    int64_t n = (int64_t)cJSON_GetObjectItem(e, "n")->valuedouble;
    float *scores = NULL;
    int *labels = malloc((size_t)n * sizeof *labels);
    char msg[256], fname[128];
    if (cJSON_GetObjectItem(e, "lcg_seed")) {
        scores = malloc((size_t)n * sizeof *scores);
        lcg_case(n, (uint64_t)cJSON_GetObjectItem(e, "lcg_seed")->valuedouble, scores, labels);
    } else {
        size_t ns = 0, nl = 0;
        snprintf(fname, sizeof fname, "eval/%s_scores.npy", name);
        scores = test_load_npy(fname, &ns);
        snprintf(fname, sizeof fname, "eval/%s_labels.npy", name);
        float *lf = test_load_npy(fname, &nl);
        snprintf(msg, sizeof msg, "%s: fixtures load with n = %lld", name, (long long)n);
        test_cond(msg, scores && lf && ns == (size_t)n && nl == (size_t)n);
        if (!scores || !lf || ns != (size_t)n || nl != (size_t)n) {
            free(scores), free(lf), free(labels);
            return;
        }
        for (int64_t i = 0; i < n; i++) labels[i] = lf[i] != 0.0f;
        free(lf);
    }
    int64_t n_pos = (int64_t)cJSON_GetObjectItem(e, "n_pos")->valuedouble;

    const cJSON *ja = cJSON_GetObjectItem(e, "auroc");
    double v = -1;
    ds_status st = ds_eval_auroc(scores, labels, n, &v);
    if (cJSON_IsNumber(ja)) {
        snprintf(msg, sizeof msg, "%s: AUROC equals sklearn's roc_auc_score (%.9f vs %.9f)", name, v, ja->valuedouble);
        test_cond(msg, st == DS_OK && close_to(v, ja->valuedouble));
    } else {
        char want[128];
        snprintf(want, sizeof want, "only one class present (n_pos=%lld, n_neg=%lld)", (long long)n_pos,
                 (long long)(n - n_pos));
        snprintf(msg, sizeof msg, "%s: AUROC with one class is DS_ERR_ARG saying '%s'", name, want);
        test_cond(msg, st == DS_ERR_ARG && strstr(ds_last_error(), want) && v == -1);
    }

    const cJSON *jap = cJSON_GetObjectItem(e, "ap");
    v = -1;
    st = ds_eval_average_precision(scores, labels, n, &v);
    if (cJSON_IsNumber(jap)) {
        snprintf(msg, sizeof msg, "%s: average precision equals sklearn's (%.9f vs %.9f)", name, v, jap->valuedouble);
        test_cond(msg, st == DS_OK && close_to(v, jap->valuedouble));
    } else {
        snprintf(msg, sizeof msg, "%s: average precision without anomalies is a clear DS_ERR_ARG", name);
        test_cond(msg, st == DS_ERR_ARG && strstr(ds_last_error(), "no anomalous sample") && v == -1);
    }

    const cJSON *jf = cJSON_GetObjectItem(e, "f1");
    float thr = -1;
    v = -1;
    st = ds_eval_f1_max(scores, labels, n, &v, &thr);
    if (cJSON_IsNumber(jf)) {
        double want_thr = cJSON_GetObjectItem(e, "f1_threshold")->valuedouble;
        snprintf(msg, sizeof msg, "%s: F1-max equals the max over sklearn's precision_recall_curve (%.9f vs %.9f)",
                 name, v, jf->valuedouble);
        test_cond(msg, st == DS_OK && close_to(v, jf->valuedouble));
        snprintf(msg, sizeof msg, "%s: F1-max threshold is sklearn's threshold, lowest on ties (%.9g vs %.9g)", name,
                 (double)thr, want_thr);
        test_cond(msg, st == DS_OK && thr == (float)want_thr);
    } else {
        snprintf(msg, sizeof msg, "%s: F1-max without anomalies is a clear DS_ERR_ARG, outputs unchanged", name);
        test_cond(msg, st == DS_ERR_ARG && strstr(ds_last_error(), "no anomalous sample") && v == -1 && thr == -1);
    }

    const cJSON *jt = cJSON_GetObjectItem(e, "threshold_at_fpr");
    if (jt) {
        float *normal = malloc((size_t)n * sizeof *normal);
        int64_t nn = 0;
        for (int64_t i = 0; i < n; i++)
            if (!labels[i]) normal[nn++] = scores[i];
        int ok = 1;
        const cJSON *pair;
        cJSON_ArrayForEach(pair, jt) {
            double fpr = cJSON_GetArrayItem(pair, 0)->valuedouble;
            float want = (float)cJSON_GetArrayItem(pair, 1)->valuedouble;
            float got = NAN;
            if (ds_eval_threshold_at_fpr(normal, nn, fpr, &got) != DS_OK || got != want) {
                printf("  fpr %g: got %.9g want %.9g\n", fpr, (double)got, (double)want);
                ok = 0;
            }
        }
        snprintf(msg, sizeof msg, "%s: threshold at FPR 0..1 equals the numpy rule on the normal scores", name);
        test_cond(msg, ok);
        free(normal);
    }

    const cJSON *jc = cJSON_GetObjectItem(e, "curve");
    if (jc) {
        const cJSON *jth = cJSON_GetObjectItem(jc, "thresholds"), *jtp = cJSON_GetObjectItem(jc, "tp"),
                    *jfp = cJSON_GetObjectItem(jc, "fp");
        float *th = malloc((size_t)n * sizeof *th);
        int64_t *tp = malloc((size_t)n * sizeof *tp), *fp = malloc((size_t)n * sizeof *fp), m = -1;
        st = ds_eval_curve(scores, labels, n, th, tp, fp, &m);
        int ok = st == DS_OK && m == cJSON_GetArraySize(jth);
        for (int64_t k = 0; ok && k < m; k++)
            ok = th[k] == (float)cJSON_GetArrayItem(jth, (int)k)->valuedouble &&
                 tp[k] == (int64_t)cJSON_GetArrayItem(jtp, (int)k)->valuedouble &&
                 fp[k] == (int64_t)cJSON_GetArrayItem(jfp, (int)k)->valuedouble;
        snprintf(msg, sizeof msg, "%s: curve points equal sklearn's _binary_clf_curve (%lld points)", name,
                 (long long)m);
        test_cond(msg, ok);
        free(th), free(tp), free(fp);
    }
    free(scores);
    free(labels);
}

static uint8_t *to_mask(const float *m, int64_t n) {
    uint8_t *u = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) u[i] = (uint8_t)m[i]; /* 0 or 255 */
    return u;
}

static void check_pixel_case(const cJSON *e) {
    const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
    const cJSON *shape = cJSON_GetObjectItem(e, "shape");
    int n = cJSON_GetArrayItem(shape, 0)->valueint, h = cJSON_GetArrayItem(shape, 1)->valueint,
        w = cJSON_GetArrayItem(shape, 2)->valueint;
    char msg[256], fname[128];
    size_t nm = 0, nk = 0;
    snprintf(fname, sizeof fname, "eval/%s_maps.npy", name);
    float *maps = test_load_npy(fname, &nm);
    snprintf(fname, sizeof fname, "eval/%s_masks.npy", name);
    float *mf = test_load_npy(fname, &nk);
    const int64_t total = (int64_t)n * h * w;
    snprintf(msg, sizeof msg, "%s: maps and masks load as [%d,%d,%d]", name, n, h, w);
    test_cond(msg, maps && mf && nm == (size_t)total && nk == (size_t)total);
    if (!maps || !mf || nm != (size_t)total || nk != (size_t)total) {
        free(maps), free(mf);
        return;
    }
    uint8_t *masks = to_mask(mf, total);
    const size_t hw = (size_t)h * (size_t)w;

    /* accumulator, images added one at a time; normal images with mask NULL */
    ds_eval_pixels *px = NULL;
    ds_status st = ds_eval_pixels_create(0, &px);
    int ok = st == DS_OK;
    for (int i = 0; ok && i < n; i++) {
        int empty = 1;
        for (size_t k = 0; k < hw; k++) empty &= masks[i * hw + k] == 0;
        ok = ds_eval_pixels_add(px, maps + i * hw, empty ? NULL : masks + i * hw, h, w) == DS_OK;
    }
    snprintf(msg, sizeof msg, "%s: every image adds to the accumulator", name);
    test_cond(msg, ok);

    int64_t c_img, c_px, c_anom, c_reg;
    ds_eval_pixels_counts(px, &c_img, &c_px, &c_anom, &c_reg);
    snprintf(msg, sizeof msg, "%s: region count equals scipy.ndimage.label with 8-connectivity (%lld vs %d)", name,
             (long long)c_reg, cJSON_GetObjectItem(e, "n_regions")->valueint);
    test_cond(msg, c_reg == cJSON_GetObjectItem(e, "n_regions")->valueint && c_img == n && c_px == total &&
                       c_anom == cJSON_GetObjectItem(e, "n_anomalous_pixels")->valueint);

    double want = cJSON_GetObjectItem(e, "pixel_auroc")->valuedouble, v = -1;
    st = ds_eval_pixels_auroc(px, &v);
    snprintf(msg, sizeof msg, "%s: pixel AUROC equals sklearn's on the flattened maps (%.9f vs %.9f)", name, v, want);
    test_cond(msg, st == DS_OK && close_to(v, want));

    float thr = -1;
    want = cJSON_GetObjectItem(e, "pixel_f1")->valuedouble;
    st = ds_eval_pixels_f1_max(px, &v, &thr);
    snprintf(msg, sizeof msg, "%s: pixel F1-max and threshold equal sklearn's (%.9f vs %.9f)", name, v, want);
    test_cond(msg, st == DS_OK && close_to(v, want) &&
                       thr == (float)cJSON_GetObjectItem(e, "pixel_f1_threshold")->valuedouble);

    const cJSON *pair;
    cJSON_ArrayForEach(pair, cJSON_GetObjectItem(e, "aupro")) {
        double lim = cJSON_GetArrayItem(pair, 0)->valuedouble;
        want = cJSON_GetArrayItem(pair, 1)->valuedouble;
        v = -1;
        st = ds_eval_pixels_aupro(px, lim, &v);
        snprintf(msg, sizeof msg, "%s: AUPRO up to FPR %g equals the MVTec compute_pro reference (%.9f vs %.9f)", name,
                 lim, v, want);
        test_cond(msg, st == DS_OK && close_to(v, want));
    }
    ds_eval_pixels_free(px);

    /* one-call forms, masks given for every image (empty ones all zero),
     * images in reverse order: the metrics do not depend on the order */
    float *rmaps = malloc((size_t)total * sizeof *rmaps);
    uint8_t *rmasks = malloc((size_t)total);
    for (int i = 0; i < n; i++) {
        memcpy(rmaps + (size_t)i * hw, maps + (size_t)(n - 1 - i) * hw, hw * sizeof *rmaps);
        memcpy(rmasks + (size_t)i * hw, masks + (size_t)(n - 1 - i) * hw, hw);
    }
    want = cJSON_GetObjectItem(e, "pixel_auroc")->valuedouble;
    st = ds_eval_pixel_auroc(rmaps, rmasks, n, h, w, &v);
    snprintf(msg, sizeof msg, "%s: one-call pixel AUROC (images reversed) equals sklearn's", name);
    test_cond(msg, st == DS_OK && close_to(v, want));
    want = cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetObjectItem(e, "aupro"), 0), 1)->valuedouble;
    st = ds_eval_aupro(rmaps, rmasks, n, h, w, 0.3, &v);
    snprintf(msg, sizeof msg, "%s: one-call AUPRO@0.3 (images reversed) equals the reference", name);
    test_cond(msg, st == DS_OK && close_to(v, want));
    double four = cJSON_GetObjectItem(e, "aupro_4conn_0.3")->valuedouble;
    if (fabs(four - want) > 1e-3) {
        snprintf(msg, sizeof msg, "%s: AUPRO is not the 4-connectivity value (%.6f), corners join regions", name, four);
        test_cond(msg, st == DS_OK && !close_to(v, four));
    }
    free(rmaps), free(rmasks);
    free(maps), free(mf), free(masks);
}

static void check_errors(void) {
    float s[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    int l[4] = {0, 1, 0, 1};
    double v = -1;
    float thr = -1;

    s[2] = NAN;
    test_cond("a NaN score is DS_ERR_ARG naming its index, output unchanged",
              ds_eval_auroc(s, l, 4, &v) == DS_ERR_ARG && strstr(ds_last_error(), "score 2 is NaN") && v == -1);
    s[2] = INFINITY;
    test_cond("an infinite score is DS_ERR_ARG (sklearn rejects it too)",
              ds_eval_average_precision(s, l, 4, &v) == DS_ERR_ARG && strstr(ds_last_error(), "infinite"));
    s[2] = 0.3f;
    l[1] = 2;
    test_cond("a label other than 0/1 is DS_ERR_ARG naming it",
              ds_eval_f1_max(s, l, 4, &v, &thr) == DS_ERR_ARG && strstr(ds_last_error(), "label 1 is 2"));
    l[1] = 1;
    test_cond("n = 0 is DS_ERR_ARG", ds_eval_auroc(s, l, 0, &v) == DS_ERR_ARG && strstr(ds_last_error(), "n = 0"));
    test_cond("NULL labels are DS_ERR_ARG", ds_eval_auroc(s, NULL, 4, &v) == DS_ERR_ARG);
    test_cond("NULL output is DS_ERR_ARG", ds_eval_auroc(s, l, 4, NULL) == DS_ERR_ARG);
    test_cond("fpr outside [0,1] is DS_ERR_ARG",
              ds_eval_threshold_at_fpr(s, 4, 1.5, &thr) == DS_ERR_ARG && strstr(ds_last_error(), "fpr = 1.5"));
    test_cond("fpr NaN is DS_ERR_ARG", ds_eval_threshold_at_fpr(s, 4, NAN, &thr) == DS_ERR_ARG && thr == -1);

    /* threshold rule on a hand case: 10 normals 0..9, fpr 0.2 -> at most 2
     * flagged -> threshold 8 (8 and 9 flagged); fpr 0.05 -> none allowed ->
     * just above 9; ties at the top: {5,5,5,1}, fpr 0.5 -> 5 would flag 3 ->
     * nothing qualifies -> just above 5. */
    float ten[10];
    for (int i = 0; i < 10; i++) ten[i] = (float)(9 - i);
    test_cond("threshold at FPR 0.2 of scores 0..9 is 8",
              ds_eval_threshold_at_fpr(ten, 10, 0.2, &thr) == DS_OK && thr == 8.0f);
    test_cond("threshold at FPR 0.05 of scores 0..9 is the next float above 9",
              ds_eval_threshold_at_fpr(ten, 10, 0.05, &thr) == DS_OK && thr == nextafterf(9.0f, INFINITY));
    float tied[4] = {5, 5, 5, 1};
    test_cond("threshold at FPR 0.5 with three tied maxima is just above them",
              ds_eval_threshold_at_fpr(tied, 4, 0.5, &thr) == DS_OK && thr == nextafterf(5.0f, INFINITY));
    test_cond("threshold at FPR 1 is the minimum score",
              ds_eval_threshold_at_fpr(tied, 4, 1.0, &thr) == DS_OK && thr == 1.0f);

    /* pixel accumulator errors */
    ds_eval_pixels *px = NULL;
    test_cond("accumulator creates", ds_eval_pixels_create(16, &px) == DS_OK && px);
    float map[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    uint8_t mask[6] = {0, 0, 0, 0, 0, 1};
    test_cond("metrics on an empty accumulator are DS_ERR_ARG",
              ds_eval_pixels_auroc(px, &v) == DS_ERR_ARG && strstr(ds_last_error(), "no images added"));
    test_cond("a 0-pixel image is DS_ERR_ARG", ds_eval_pixels_add(px, map, mask, 0, 3) == DS_ERR_ARG);
    map[4] = NAN;
    test_cond("a NaN pixel is DS_ERR_ARG naming image and pixel, nothing added",
              ds_eval_pixels_add(px, map, mask, 2, 3) == DS_ERR_ARG &&
                  strstr(ds_last_error(), "image 0 has a NaN score at (y=1, x=1)"));
    int64_t c_img = -1, c_px = -1;
    ds_eval_pixels_counts(px, &c_img, &c_px, NULL, NULL);
    test_cond("the failed add left the accumulator empty", c_img == 0 && c_px == 0);
    map[4] = 0.5f;
    test_cond("a normal 2x3 image adds", ds_eval_pixels_add(px, map, NULL, 2, 3) == DS_OK);
    test_cond("pixel AUROC with normal pixels only is DS_ERR_ARG saying one class",
              ds_eval_pixels_auroc(px, &v) == DS_ERR_ARG && strstr(ds_last_error(), "only one class present"));
    test_cond("AUPRO without ground-truth regions is DS_ERR_ARG",
              ds_eval_pixels_aupro(px, 0.3, &v) == DS_ERR_ARG && strstr(ds_last_error(), "no ground-truth region"));
    float map2[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.9f};
    test_cond("an image with a 1-pixel region adds", ds_eval_pixels_add(px, map2, mask, 2, 3) == DS_OK);
    test_cond("fpr_limit 0 is DS_ERR_ARG", ds_eval_pixels_aupro(px, 0.0, &v) == DS_ERR_ARG);
    /* the anomalous pixel has the top score 0.9: perfect ranking */
    test_cond("a perfectly ranked 1-pixel region has pixel AUROC 1 and AUPRO 1",
              ds_eval_pixels_auroc(px, &v) == DS_OK && v == 1.0 && ds_eval_pixels_aupro(px, 0.3, &v) == DS_OK &&
                  fabs(v - 1.0) < 1e-12);
    /* a 1x1 image: the smallest possible */
    float one = 0.05f;
    uint8_t on = 1;
    test_cond("a 1x1 anomalous image adds", ds_eval_pixels_add(px, &one, &on, 1, 1) == DS_OK);
    int64_t c_reg = 0;
    ds_eval_pixels_counts(px, NULL, NULL, NULL, &c_reg);
    test_cond("which makes 2 regions", c_reg == 2);
    /* after a new add the records are sorted again: positives 0.9 (above all
     * 11 normals) and 0.05 (below all) -> AUROC (11 + 0) / 22 */
    test_cond("pixel AUROC after a later add is recomputed (0.5 by hand)",
              ds_eval_pixels_auroc(px, &v) == DS_OK && fabs(v - 0.5) < 1e-12);
    ds_eval_pixels_free(px);
    ds_eval_pixels_free(NULL);
    test_cond("ds_eval_pixels_free(NULL) is a no-op", 1);

    uint8_t all[4] = {1, 1, 1, 1};
    float m4[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    test_cond("AUPRO with every pixel anomalous is DS_ERR_ARG (no normal pixel)",
              ds_eval_aupro(m4, all, 1, 2, 2, 0.3, &v) == DS_ERR_ARG && strstr(ds_last_error(), "no normal pixel"));
}

int main(void) {
    char *text = test_read_text(fixture("eval/expected.json"));
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    test_cond("expected.json (from make_eval_fixtures.py) parses", root != NULL);
    if (!root) test_report();
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "image")) check_image_case(e);
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "pixel")) check_pixel_case(e);
    check_errors();
    cJSON_Delete(root);
    free(text);
    test_report();
}
