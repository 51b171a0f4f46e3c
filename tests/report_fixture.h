/* The report test set of tests/fixtures/report (made by
 * make_report_fixtures.py), shared by test_report.c and
 * test_report_browser.c: loading it and building its ds_report. */
#ifndef DS_REPORT_FIXTURE_H
#define DS_REPORT_FIXTURE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/eval.h"
#include "dinoscope/report.h"
#include "dinoscope/npy.h"
#include "test.h"

static double num(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const cJSON *obj(const cJSON *o, const char *name) { return cJSON_GetObjectItemCaseSensitive(o, name); }

/* ---- the fixture ---------------------------------------------------------- */

typedef struct {
    cJSON *root;
    int n, H, W;
    int *labels;
    float *scores[2];
    float *maps, *masks;
} fixture_set;

static bool load_fixture(fixture_set *f) {
    char *text = test_read_text(fixture("report/expected.json"));
    if (!text) return false;
    f->root = cJSON_Parse(text);
    free(text);
    if (!f->root) return false;
    f->n = (int)num(f->root, "n");
    f->H = (int)num(f->root, "height");
    f->W = (int)num(f->root, "width");
    f->labels = malloc(sizeof(int) * (size_t)f->n);
    const cJSON *lab = obj(f->root, "labels"), *sc = obj(f->root, "scores");
    for (int k = 0; k < 2; k++) {
        f->scores[k] = malloc(sizeof(float) * (size_t)f->n);
        for (int i = 0; i < f->n; i++) f->scores[k][i] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(sc, k), i)->valuedouble;
    }
    for (int i = 0; i < f->n; i++) f->labels[i] = cJSON_GetArrayItem(lab, i)->valueint;
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(fixture("report/maps.npy"), &f->maps, &nd, shape) != DS_OK) return false;
    if (ds_npy_read_f32(fixture("report/masks.npy"), &f->masks, &nd, shape) != DS_OK) return false;
    return true;
}

static void free_fixture(fixture_set *f) {
    cJSON_Delete(f->root);
    free(f->labels);
    free(f->scores[0]);
    free(f->scores[1]);
    free(f->maps);
    free(f->masks);
}

/* Builds the fixture's report: scorer 0 "knn" (no maps), scorer 1
 * "patchbank" (maps, stored threshold). */
static ds_report *build_report(const fixture_set *f, bool with_folds) {
    ds_report_params p = {.model_path = "model.dsm", .data_path = "data/labels.csv", .layout = "labels.csv",
                          .backbone = "mobilenet_v2 taps=6,13 D=128", .backbone_file = "m.safetensors",
                          .input_size = 224, .n_scorers = 2};
    p.scorers[0] = (ds_report_scorer){.name = "knn", .params = "k=5"};
    p.scorers[1] = (ds_report_scorer){.name = "patchbank", .has_threshold = 1,
                                      .threshold = (float)num(f->root, "stored_threshold"),
                                      .threshold_fpr = num(f->root, "stored_fpr"), .has_maps = 1};
    ds_report *r = NULL;
    if (ds_report_create(&p, &r) != DS_OK) return NULL;
    const cJSON *prep = obj(f->root, "prep_ms"), *bb = obj(f->root, "backbone_ms"), *sms = obj(f->root, "score_ms");
    size_t hw = (size_t)f->H * f->W;
    uint8_t *mask = malloc(hw);
    for (int i = 0; i < f->n; i++) {
        char path[64];
        snprintf(path, sizeof path, "data/%s_%02d.png", f->labels[i] ? "anomaly" : "normal", i);
        float sc[2] = {f->scores[0][i], f->scores[1][i]};
        double ms[2] = {cJSON_GetArrayItem(cJSON_GetArrayItem(sms, 0), i)->valuedouble,
                        cJSON_GetArrayItem(cJSON_GetArrayItem(sms, 1), i)->valuedouble};
        ds_report_image im = {.path = path, .label = f->labels[i], .defect = f->labels[i] ? "blob" : NULL,
                              .mask_path = f->labels[i] ? "masks/m.png" : NULL, .scores = sc,
                              .prep_ms = cJSON_GetArrayItem(prep, i)->valuedouble,
                              .backbone_ms = cJSON_GetArrayItem(bb, i)->valuedouble, .score_ms = ms, .map_ms = 0.5};
        int idx = -1;
        if (ds_report_add_image(r, &im, &idx) != DS_OK || idx != i) {
            ds_report_free(r);
            free(mask);
            return NULL;
        }
        for (size_t q = 0; q < hw; q++) mask[q] = f->masks[i * hw + q] > 0;
        if (ds_report_add_map(r, 1, f->maps + i * hw, f->labels[i] ? mask : NULL, f->H, f->W) != DS_OK) {
            ds_report_free(r);
            free(mask);
            return NULL;
        }
    }
    free(mask);
    if (with_folds) {
        for (int k = 0; k < 2; k++)
            for (int fo = 0; fo < 3; fo++) {
                float s[64];
                int l[64], m = 0;
                for (int i = 0; i < f->n; i++)
                    if (f->labels[i] == 1 || i % 3 == fo) s[m] = f->scores[k][i], l[m] = f->labels[i], m++;
                ds_eval_figures fig;
                if (ds_eval_image_figures(s, l, m, &fig) != DS_OK || ds_report_add_fold(r, k, &fig) != DS_OK) {
                    ds_report_free(r);
                    return NULL;
                }
            }
    }
    return r;
}

#endif
