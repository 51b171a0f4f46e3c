/* The per-position Gaussian scorer (PaDiM) against numpy/scipy references
 * saved by tests/fixtures/make_padim_fixtures.py (see its header), its
 * channel subset, its round trip through the serialisation parts and its
 * errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "test.h"

static float *load(const char *name, int64_t shape[DS_NPY_MAX_DIMS]) {
    char rel[256];
    snprintf(rel, sizeof rel, "padim/%s.npy", name);
    float *data = NULL;
    int nd = 0;
    if (ds_npy_read_f32(fixture(rel), &data, &nd, shape) != DS_OK) {
        printf("cannot load fixture %s: %s\n", rel, ds_last_error());
        exit(1);
    }
    return data;
}

/* max over n of |a-b| / max(|b|, 1e-6) */
static double max_rel(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)a[i] - (double)b[i]) / fmax(fabs((double)b[i]), 1e-6);
        if (!(r <= m)) m = r;
    }
    return m;
}

/* Scores the n_test images [n_test, N, D]: patch [n_test, N], image [n_test]. */
static ds_status score_all(const ds_scorer *s, const float *test, int n_test, int64_t N, int D, int n_threads,
                           float *patch, float *image) {
    for (int t = 0; t < n_test; t++) {
        ds_status st = ds_scorer_score(s, test + (size_t)t * N * D, N, n_threads, &image[t], patch + (size_t)t * N);
        if (st != DS_OK) return st;
    }
    return DS_OK;
}

int main(void) {
    int64_t sh_tr[DS_NPY_MAX_DIMS], sh_te[DS_NPY_MAX_DIMS], sh_p[DS_NPY_MAX_DIMS], sh_i[DS_NPY_MAX_DIMS];
    float *train = load("train", sh_tr), *test = load("test", sh_te);
    float *ref_patch = load("patch_scores", sh_p), *ref_image = load("image_scores", sh_i);
    const int64_t n = sh_tr[0], N = sh_tr[1];
    const int D = (int)sh_tr[2], n_test = (int)sh_te[0];
    float patch[64], image[8], patch2[64], image2[8];
    if (n_test * N > 64 || n_test > 8) {
        printf("fixture larger than the test's buffers\n");
        return 1;
    }

    ds_scorer_kind kind;
    test_cond("\"padim\" parses to DS_SCORER_PADIM and back",
              ds_scorer_kind_parse("padim", &kind) == DS_OK && kind == DS_SCORER_PADIM &&
                  strcmp(ds_scorer_kind_name(DS_SCORER_PADIM), "padim") == 0);

    /* ---- all channels (d = D) against numpy/scipy */
    ds_scorer_params p = ds_scorer_defaults();
    test_cond("the default keeps 100 channels (PaDiM's d for ResNet18)", p.padim_dim == 100);
    ds_scorer *s = NULL;
    ds_status st = ds_scorer_fit(DS_SCORER_PADIM, &p, train, n, N, D, &s);
    test_cond("padim fits on 12 images of 6 positions x 20 channels (fewer images than channels)", st == DS_OK && s);
    if (!s) {
        printf("%s\n", ds_last_error());
        test_report();
    }
    test_cond("padim gives patch scores (maps)", ds_scorer_has_patch_scores(s) && ds_scorer_get_dim(s) == D);
    for (int threads = 1; threads <= 2; threads++) {
        st = score_all(s, test, n_test, N, D, threads, patch, image);
        char msg[160];
        snprintf(msg, sizeof msg, "patch scores equal scipy's mahalanobis with np.cov + 0.01 I to 1e-4 relative (%d thread%s)",
                 threads, threads > 1 ? "s" : "");
        double rel = max_rel(patch, ref_patch, (size_t)(n_test * N));
        test_cond(msg, st == DS_OK && rel < 1e-4);
        if (threads == 1) printf("     max relative error %.3g\n", rel);
    }
    test_cond("the image score is the max patch score, as numpy's max of the reference",
              max_rel(image, ref_image, (size_t)n_test) < 1e-4);
    test_cond("the shifted position makes the anomalous image score higher than the normal one",
              image[1] > image[0] && patch[N + 4] > patch[4]);
    test_cond("ds_scorer_score accepts NULL patch_scores",
              ds_scorer_score(s, test, N, 1, &image2[0], NULL) == DS_OK && image2[0] == image[0]);

    /* ---- round trip through the parts */
    ds_scorer_array arrs[8];
    ds_scorer_scalar scs[8];
    int na = ds_scorer_n_arrays(s), ns = ds_scorer_n_scalars(s);
    bool got = na == 3 && ns == 2;
    for (int i = 0; got && i < na; i++) got = ds_scorer_get_array(s, i, &arrs[i]) == DS_OK;
    for (int i = 0; got && i < ns; i++) got = ds_scorer_get_scalar(s, i, &scs[i]) == DS_OK;
    test_cond("padim exposes 3 arrays (channels, mean, precision) and 2 scalars (dim, n_train)", got);
    bool shapes = got && !strcmp(arrs[0].name, "channels") && arrs[0].shape[0] == D && !strcmp(arrs[1].name, "mean") &&
                  arrs[1].shape[0] == N && arrs[1].shape[1] == D && !strcmp(arrs[2].name, "precision") &&
                  arrs[2].shape[0] == N && arrs[2].shape[1] == (int64_t)D * D;
    test_cond("the arrays are channels [d], mean [N,d], precision [N,d*d]", shapes);
    ds_scorer *r = NULL;
    st = got ? ds_scorer_from_parts(DS_SCORER_PADIM, scs, ns, arrs, na, &r) : DS_ERR_ARG;
    test_cond("ds_scorer_from_parts rebuilds the padim scorer", st == DS_OK && r);
    if (r) {
        st = score_all(r, test, n_test, N, D, 1, patch2, image2);
        test_cond("the rebuilt scorer gives bit-identical patch and image scores",
                  st == DS_OK && memcmp(patch, patch2, sizeof(float) * (size_t)(n_test * N)) == 0 &&
                      memcmp(image, image2, sizeof(float) * (size_t)n_test) == 0);
        ds_scorer_params q;
        test_cond("ds_scorer_params_of reports the channel count",
                  ds_scorer_params_of(r, &q) == DS_OK && q.padim_dim == D);
        ds_scorer_free(r);
        r = NULL;
    }

    /* ---- malformed parts */
    if (got) {
        ds_scorer_array bad[3];
        memcpy(bad, arrs, sizeof bad);
        float ch[64];
        memcpy(ch, arrs[0].data, sizeof(float) * (size_t)D);
        ch[3] = ch[2]; /* repeated channel */
        bad[0].data = ch;
        test_cond("a repeated channel index is a format error",
                  ds_scorer_from_parts(DS_SCORER_PADIM, scs, ns, bad, 3, &r) == DS_ERR_FORMAT && !r);
        memcpy(ch, arrs[0].data, sizeof(float) * (size_t)D);
        ch[D - 1] = (float)D; /* out of range */
        test_cond("a channel index >= dim is a format error (it would index past the features)",
                  ds_scorer_from_parts(DS_SCORER_PADIM, scs, ns, bad, 3, &r) == DS_ERR_FORMAT && !r &&
                      strstr(ds_last_error(), "channel"));
        memcpy(bad, arrs, sizeof bad);
        bad[2].shape[1] = (int64_t)D * D - 1;
        test_cond("a precision of the wrong shape is a format error",
                  ds_scorer_from_parts(DS_SCORER_PADIM, scs, ns, bad, 3, &r) == DS_ERR_FORMAT && !r &&
                      strstr(ds_last_error(), "precision"));
        test_cond("a missing 'dim' scalar is a format error",
                  ds_scorer_from_parts(DS_SCORER_PADIM, scs + 1, ns - 1, arrs, 3, &r) == DS_ERR_FORMAT && !r &&
                      strstr(ds_last_error(), "dim"));
        ds_scorer_free(r);
        r = NULL;
    }

    /* ---- N mismatch */
    st = ds_scorer_score(s, test, N - 1, 1, &image2[0], patch2);
    test_cond("scoring a different number of patch positions than fitted is DS_ERR_SHAPE naming both",
              st == DS_ERR_SHAPE && strstr(ds_last_error(), "padim") && strstr(ds_last_error(), "6") &&
                  strstr(ds_last_error(), "5"));
    ds_scorer_free(s);
    s = NULL;

    /* ---- a channel subset (d < D) */
    p.padim_dim = 8;
    p.seed = 7;
    st = ds_scorer_fit(DS_SCORER_PADIM, &p, train, n, N, D, &s);
    ds_scorer_array ca = {0};
    bool ok = st == DS_OK && ds_scorer_get_array(s, 0, &ca) == DS_OK && ca.shape[0] == 8;
    int chosen[8] = {0};
    for (int c = 0; ok && c < 8; c++) {
        const float *ch = ca.data;
        float f = ch[c];
        ok = f >= 0 && f < (float)D && f == floorf(f) && (c == 0 || f > ch[c - 1]);
        chosen[c] = (int)f;
    }
    test_cond("with padim_dim=8 < D=20 the scorer keeps 8 distinct ascending channel indices below D", ok);
    bool contiguous = ok && chosen[7] - chosen[0] == 7;
    test_cond("the subset is not simply the first channels", ok && !(chosen[0] == 0 && contiguous));
    if (ok) {
        /* the subset scorer equals a full scorer fitted on just those channels */
        float *sub_tr = malloc(sizeof(float) * (size_t)(n * N * 8)), *sub_te = malloc(sizeof(float) * (size_t)(n_test * N * 8));
        for (int64_t i = 0; i < n * N; i++)
            for (int c = 0; c < 8; c++) sub_tr[i * 8 + c] = train[i * D + chosen[c]];
        for (int64_t i = 0; i < n_test * N; i++)
            for (int c = 0; c < 8; c++) sub_te[i * 8 + c] = test[i * D + chosen[c]];
        ds_scorer *full8 = NULL;
        ds_scorer_params p8 = ds_scorer_defaults();
        st = ds_scorer_fit(DS_SCORER_PADIM, &p8, sub_tr, n, N, 8, &full8);
        if (st == DS_OK) st = score_all(s, test, n_test, N, D, 1, patch, image);
        if (st == DS_OK) st = score_all(full8, sub_te, n_test, N, 8, 1, patch2, image2);
        test_cond("the subset scorer equals a scorer fitted on exactly those 8 channels",
                  st == DS_OK && max_rel(patch, patch2, (size_t)(n_test * N)) < 1e-6);
        ds_scorer *again = NULL;
        ds_scorer_array cb = {0};
        st = ds_scorer_fit(DS_SCORER_PADIM, &p, train, n, N, D, &again);
        test_cond("the same seed picks the same channels",
                  st == DS_OK && ds_scorer_get_array(again, 0, &cb) == DS_OK &&
                      memcmp(ca.data, cb.data, sizeof(float) * 8) == 0);
        ds_scorer_free(again);
        ds_scorer_free(full8);
        free(sub_tr);
        free(sub_te);
    }
    ds_scorer_free(s);
    s = NULL;

    /* ---- fit errors */
    p = ds_scorer_defaults();
    test_cond("padim on one image is an argument error (np.cov divides by n-1)",
              ds_scorer_fit(DS_SCORER_PADIM, &p, train, 1, N, D, &s) == DS_ERR_ARG && !s);
    float *nan_tr = malloc(sizeof(float) * (size_t)(n * N * D));
    memcpy(nan_tr, train, sizeof(float) * (size_t)(n * N * D));
    nan_tr[(size_t)(3 * N + 2) * D + 5] = NAN;
    test_cond("NaN in the training features is an argument error naming the position",
              ds_scorer_fit(DS_SCORER_PADIM, &p, nan_tr, n, N, D, &s) == DS_ERR_ARG && !s &&
                  strstr(ds_last_error(), "position 2"));
    free(nan_tr);

    free(train);
    free(test);
    free(ref_patch);
    free(ref_image);
    test_report();
}
