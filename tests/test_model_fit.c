/* ds_model_fit_features: which images are held out, what the thresholds are
 * computed from, in-memory models written and read back, bad parameters.
 * The thresholds are checked against the rule of ds_eval_threshold_at_fpr
 * (eval.h) applied by hand to the held-out images' scores. */
#include <stdint.h>

#include "dinoscope/model.h"
#include "test.h"

enum { N_IMG = 20, GH = 2, GW = 3, NP = GH * GW, D = 8 };

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) / 16777216.0) - 0.5f;
}

static ds_model_info info_for_test(void) {
    ds_model_info in = {.n_layers = 4, .grid_h = GH, .grid_w = GW, .dim = D};
    in.prep = ds_preprocess_defaults();
    in.prep.size = 28;
    snprintf(in.backbone_file, sizeof in.backbone_file, "synthetic");
    return in;
}

int main(void) {
    static float feats[N_IMG][NP][D], orig[N_IMG][NP][D];
    for (int i = 0; i < N_IMG; i++)
        for (int p = 0; p < NP; p++)
            for (int d = 0; d < D; d++) orig[i][p][d] = feats[i][p][d] = urand() + (d == i % D ? 1.0f : 0.0f);

    ds_fit_params fp = ds_fit_defaults();
    test_cond("the defaults are fit's: knn, gaussian, patchbank, top1pct, val 0.1, fpr 0.01",
              fp.n_kinds == 3 && fp.kinds[0] == DS_SCORER_KNN && fp.kinds[1] == DS_SCORER_GAUSSIAN &&
                  fp.kinds[2] == DS_SCORER_PATCHBANK && fp.scorer.reduce == DS_REDUCE_TOP1PCT && fp.val_split == 0.1 &&
                  fp.fpr == 0.01);
    test_cond("fewer than 10 images hold out none; 10 hold out 1; 36 hold out round(3.6) = 4",
              ds_fit_n_held_out(&fp, 9) == 0 && ds_fit_n_held_out(&fp, 10) == 1 && ds_fit_n_held_out(&fp, 36) == 4);

    fp.kinds[0] = DS_SCORER_KNN, fp.kinds[1] = DS_SCORER_PATCHBANK, fp.n_kinds = 2;
    fp.scorer.k = 3;
    fp.scorer.coreset_ratio = 1.0;
    fp.fpr = 0.5;
    ds_model_info in = info_for_test();
    ds_model *m = NULL;
    ds_status st = ds_model_fit_features(&in, &fp, &feats[0][0][0], N_IMG, &m);
    test_cond("a model is fitted in memory from features", st == DS_OK && m && ds_model_get_file(m) == NULL);
    if (st != DS_OK) {
        printf("  %s\n", ds_last_error());
        test_report();
    }
    /* 20 images, val 0.1: 2 held out, every 10th: images 9 and 19 */
    const ds_model_info *mi = ds_model_get_info(m);
    test_cond("18 training images are recorded and the map sigma is the default",
              mi->n_train == 18 && mi->map_sigma == DS_ANOMALY_MAP_SIGMA);
    test_cond("the features are left as they were (the split reads them in place)", !memcmp(feats, orig, sizeof orig));

    for (int k = 0; k < 2; k++) {
        const ds_scorer *sc = ds_model_scorer(m, k);
        const ds_scorer_calibration *c = ds_model_calibration(m, k);
        float s[2], patch[2][NP];
        ds_scorer_score(sc, &orig[9][0][0], NP, 1, &s[0], patch[0]);
        ds_scorer_score(sc, &orig[19][0][0], NP, 1, &s[1], patch[1]);
        /* fpr 0.5 of 2 scores: the largest v with count(s >= v) / 2 <= 0.5 is the larger score */
        float want = s[0] > s[1] ? s[0] : s[1];
        char what[160];
        snprintf(what, sizeof what, "%s: the threshold is the larger of the held-out images 9 and 19's scores",
                 ds_scorer_kind_name(ds_scorer_get_kind(sc)));
        test_cond(what, c->has_threshold && c->n_val == 2 && c->threshold_fpr == 0.5 && c->threshold == want);
        if (k == 1) {
            /* 2 x the 99th percentile (lower value) of the 12 held-out patch scores: the 11th of 12 sorted */
            float v[2 * NP];
            memcpy(v, patch, sizeof v);
            for (int a = 0; a < 2 * NP; a++)
                for (int b = a + 1; b < 2 * NP; b++)
                    if (v[b] < v[a]) {
                        float x = v[a];
                        v[a] = v[b], v[b] = x;
                    }
            test_cond("patchbank: map_vmax is twice the 99th percentile of the held-out patch scores",
                      c->map_vmax == 2.0f * v[(int)(0.99 * (2 * NP - 1))] && c->has_map_threshold);
        }
    }

    char path[1024];
    snprintf(path, sizeof path, "%s/model_fit_test.dsm", test_env("DS_TMP", "."));
    ds_model *back = NULL;
    test_cond("an in-memory model is written and read back",
              ds_model_write(m, path) == DS_OK && ds_model_load(path, &back) == DS_OK);
    if (back) {
        bool same = ds_model_n_scorers(back) == 2 && ds_model_get_info(back)->n_train == 18;
        for (int k = 0; k < 2 && same; k++) {
            float a, b;
            same = ds_model_calibration(back, k)->threshold == ds_model_calibration(m, k)->threshold &&
                   ds_scorer_score(ds_model_scorer(m, k), &orig[3][0][0], NP, 1, &a, NULL) == DS_OK &&
                   ds_scorer_score(ds_model_scorer(back, k), &orig[3][0][0], NP, 1, &b, NULL) == DS_OK && a == b;
        }
        test_cond("the file read back has the same scorers, thresholds and scores", same);
        test_cond("its metadata is the in-memory model's", !strcmp(ds_model_meta_json(back), ds_model_meta_json(m)));
    }
    ds_model_free(back);
    remove(path);
    ds_model_free(m);

    ds_fit_params bad = ds_fit_defaults();
    bad.kinds[1] = DS_SCORER_KNN;
    m = NULL;
    test_cond("a scorer given twice is refused by name",
              ds_model_fit_features(&in, &bad, &feats[0][0][0], N_IMG, &m) == DS_ERR_ARG && !m &&
                  strstr(ds_last_error(), "knn given twice"));
    bad = ds_fit_defaults();
    bad.val_split = 0.7;
    test_cond("val_split above 0.5 is refused",
              ds_model_fit_features(&in, &bad, &feats[0][0][0], N_IMG, &m) == DS_ERR_ARG &&
                  strstr(ds_last_error(), "val_split"));
    bad = ds_fit_defaults();
    bad.n_kinds = 0;
    test_cond("no scorer is refused", ds_model_fit_features(&in, &bad, &feats[0][0][0], N_IMG, &m) == DS_ERR_ARG);
    bad = ds_fit_defaults();
    bad.scorer.k = 50; /* knn needs n_images >= k */
    test_cond("a scorer's own error is prefixed with its name",
              ds_model_fit_features(&in, &bad, &feats[0][0][0], N_IMG, &m) != DS_OK && !m &&
                  !strncmp(ds_last_error(), "knn: ", 5));
    test_cond("no backbone or images is refused",
              ds_model_fit(NULL, NULL, &bad, NULL, NULL, 0, &m, NULL) == DS_ERR_ARG && !m);
    test_report();
}
