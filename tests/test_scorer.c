/* Scorers, nearest-neighbour search, greedy coreset and anomaly maps against
 * scikit-learn / numpy / torch / OpenCV references saved by
 * tests/fixtures/make_scorer_fixtures.py (see its header for what each is). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "scorer/scorer_internal.h"
#include "test.h"

/* ---- helpers */

static float *load(const char *name, int64_t *n_elems, int64_t shape[DS_NPY_MAX_DIMS]) {
    char rel[256];
    snprintf(rel, sizeof rel, "scorer/%s.npy", name);
    float *data = NULL;
    int nd = 0;
    int64_t sh[DS_NPY_MAX_DIMS] = {0};
    if (ds_npy_read_f32(fixture(rel), &data, &nd, sh) != DS_OK) {
        printf("cannot load fixture %s: %s\n", rel, ds_last_error());
        exit(1);
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= sh[i];
    if (n_elems) *n_elems = n;
    if (shape) memcpy(shape, sh, sizeof sh);
    return data;
}

/* The fixture script's integer hash (see its header). */
static float *hash_array(int64_t n, int d, int salt) {
    float *a = malloc(sizeof(float) * (size_t)n * (size_t)d);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            uint32_t h = (uint32_t)((uint64_t)i * 2654435761u + (uint64_t)j * 40503u + (uint64_t)salt * 97u);
            h ^= h >> 13;
            h *= 1274126177u;
            h ^= h >> 16;
            a[i * d + j] = (float)((int)(h % 2001u) - 1000) / 1000.0f;
        }
    return a;
}

/* Distances within abs+rel tol; indices equal wherever the reference
 * distance is separated from its neighbours by more than gap (ties in the
 * reference may be ordered either way). ref_* are [Q, ref_k], ours [Q, k]. */
static int nn_matches(const float *dist, const int64_t *idx, int k, const float *ref_d, const float *ref_i, int ref_k,
                      int64_t Q, double tol, double gap) {
    for (int64_t q = 0; q < Q; q++)
        for (int j = 0; j < k; j++) {
            double r = ref_d[q * ref_k + j], o = dist[q * k + j];
            if (!(fabs(o - r) <= tol * (1 + fabs(r)))) {
                printf("  query %lld rank %d: distance %.7g, expected %.7g\n", (long long)q, j, o, r);
                return 0;
            }
            int distinct = (j == 0 || fabs(r - ref_d[q * ref_k + j - 1]) > gap) &&
                           (j + 1 >= ref_k || fabs(ref_d[q * ref_k + j + 1] - r) > gap);
            if (distinct && idx[q * k + j] != (int64_t)ref_i[q * ref_k + j]) {
                printf("  query %lld rank %d: index %lld, expected %lld\n", (long long)q, j, (long long)idx[q * k + j],
                       (long long)ref_i[q * ref_k + j]);
                return 0;
            }
        }
    return 1;
}

static int same_indices(const int64_t *a, const float *ref, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != (int64_t)ref[i]) {
            printf("  position %lld: %lld, expected %lld\n", (long long)i, (long long)a[i], (long long)ref[i]);
            return 0;
        }
    return 1;
}

static double max_rel_err(const float *a, const float *ref, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)ref[i]) / fmax(1e-6, fabs((double)ref[i]));
        if (!(e <= m)) m = e;
    }
    return m;
}

static const char *path_name(ds_nn_path p) { return p == DS_NN_PATH_AVX512 ? "AVX-512" : "BLAS"; }

/* ---- nearest neighbours */

static void test_nn(void) {
    int64_t sh[8];
    float *bank = load("nn_bank", NULL, sh);
    const int64_t M = sh[0];
    const int D = (int)sh[1];
    float *qs = load("nn_queries", NULL, sh);
    const int64_t Q = sh[0];
    float *bu = load("nn_bank_unit", NULL, NULL), *qu = load("nn_queries_unit", NULL, NULL);
    float *l2d = load("nn_l2_dist", NULL, NULL), *l2i = load("nn_l2_idx", NULL, NULL);
    float *cd = load("nn_cos_dist", NULL, NULL), *ci = load("nn_cos_idx", NULL, NULL);
    float dist[64 * 5];
    int64_t idx[64 * 5];
    char msg[256];

    ds_nn_path paths[2] = {DS_NN_PATH_BLAS, DS_NN_PATH_AVX512};
    int n_paths = ds_cpu_has_avx512() ? 2 : 1;
    if (n_paths == 1) printf("note: no AVX-512 on this CPU, only the BLAS path is tested\n");
    for (int pi = 0; pi < n_paths; pi++)
        for (int th = 1; th <= 2; th++) {
            ds_nn_path p = paths[pi];
            int ok = ds_nn_search_ex(bank, M, qs, Q, D, 5, DS_METRIC_L2, th, p, dist, idx) == DS_OK &&
                     nn_matches(dist, idx, 5, l2d, l2i, 5, Q, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path, %d thread(s): L2 k=5 distances and indices equal sklearn's (D=37)",
                     path_name(p), th);
            test_cond(msg, ok);
            ok = ds_nn_search_ex(bank, M, qs, Q, D, 1, DS_METRIC_L2, th, p, dist, idx) == DS_OK &&
                 nn_matches(dist, idx, 1, l2d, l2i, 5, Q, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path, %d thread(s): L2 k=1 equals sklearn's first neighbour", path_name(p), th);
            test_cond(msg, ok);
            ok = ds_nn_search_ex(bu, M, qu, Q, D, 5, DS_METRIC_COSINE, th, p, dist, idx) == DS_OK &&
                 nn_matches(dist, idx, 5, cd, ci, 5, Q, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path, %d thread(s): cosine k=5 equals sklearn's metric='cosine'",
                     path_name(p), th);
            test_cond(msg, ok);
            ok = ds_nn_search_ex(bu, M, qu, Q, D, 1, DS_METRIC_COSINE, th, p, dist, idx) == DS_OK &&
                 nn_matches(dist, idx, 1, cd, ci, 5, Q, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path, %d thread(s): cosine k=1 equals sklearn's", path_name(p), th);
            test_cond(msg, ok);
        }

    /* Query 3 equals bank rows 10, 150 and 151 (exact duplicates). */
    ds_nn_search(bank, M, qs, Q, D, 5, DS_METRIC_L2, 2, dist, idx);
    test_cond("a query equal to a bank row is at distance exactly 0 (winners recomputed directly)",
              dist[3 * 5] == 0.0f && dist[4 * 5] == 0.0f && idx[4 * 5] == 77);
    test_cond("equal distances are ordered by bank row (10, 150, 151)",
              dist[3 * 5 + 2] == 0.0f && idx[3 * 5] == 10 && idx[3 * 5 + 1] == 150 && idx[3 * 5 + 2] == 151);

    /* Larger: 5000 x 200 bank (several blocks), 301 queries. */
    {
        float *hb = hash_array(5000, 200, 1), *hq = hash_array(301, 200, 2);
        float *hd = load("nn_hash_l2_dist", NULL, NULL), *hi = load("nn_hash_l2_idx", NULL, NULL);
        float *hcd = load("nn_hash_cos_dist", NULL, NULL), *hci = load("nn_hash_cos_idx", NULL, NULL);
        float *d2 = malloc(sizeof(float) * 301 * 5);
        int64_t *i2 = malloc(sizeof(int64_t) * 301 * 5);
        for (int pi = 0; pi < n_paths; pi++) {
            int ok = ds_nn_search_ex(hb, 5000, hq, 301, 200, 5, DS_METRIC_L2, 2, paths[pi], d2, i2) == DS_OK &&
                     nn_matches(d2, i2, 5, hd, hi, 5, 301, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path: 5000x200 bank, 301 queries, L2 k=5 equal sklearn's", path_name(paths[pi]));
            test_cond(msg, ok);
            ds_l2_normalize_rows(hb, hb, 5000, 200);
            ds_l2_normalize_rows(hq, hq, 301, 200);
            ok = ds_nn_search_ex(hb, 5000, hq, 301, 200, 5, DS_METRIC_COSINE, 2, paths[pi], d2, i2) == DS_OK &&
                 nn_matches(d2, i2, 5, hcd, hci, 5, 301, 1e-5, 1e-4);
            snprintf(msg, sizeof msg, "%s path: 5000x200 bank, cosine k=5 equal sklearn's", path_name(paths[pi]));
            test_cond(msg, ok);
            free(hb);
            free(hq);
            hb = hash_array(5000, 200, 1);
            hq = hash_array(301, 200, 2);
        }
        free(hb);
        free(hq);
        free(hd);
        free(hi);
        free(hcd);
        free(hci);
        free(d2);
        free(i2);
    }

    /* Edges and errors. */
    dist[0] = -7.0f;
    ds_status st = ds_nn_search(bank, 4, qs, 1, D, 5, DS_METRIC_L2, 1, dist, idx);
    test_cond("k > M is a clear DS_ERR_ARG and leaves the outputs unchanged",
              st == DS_ERR_ARG && strstr(ds_last_error(), "k=5") && strstr(ds_last_error(), "M=4") && dist[0] == -7.0f);
    st = ds_nn_search(bank, M, qs, Q, D, 0, DS_METRIC_L2, 1, dist, idx);
    test_cond("k = 0 is DS_ERR_ARG", st == DS_ERR_ARG);
    st = ds_nn_search(bank + 5 * D, 1, qs, 2, D, 1, DS_METRIC_L2, 2, dist, idx);
    test_cond("a one-row bank returns that row for every query", st == DS_OK && idx[0] == 0 && idx[1] == 0);
    {
        float nanq[37];
        memcpy(nanq, qs, sizeof nanq);
        nanq[5] = NAN;
        st = ds_nn_search(bank, M, nanq, 1, D, 1, DS_METRIC_L2, 1, dist, idx);
        test_cond("a NaN query gives an error, not garbage", st == DS_ERR_ARG && strstr(ds_last_error(), "NaN"));
    }
    st = ds_nn_search(bank, M, qs, Q, D, 1, (ds_metric)7, 1, dist, idx);
    test_cond("an unknown metric is DS_ERR_ARG", st == DS_ERR_ARG);
    free(bank);
    free(qs);
    free(bu);
    free(qu);
    free(l2d);
    free(l2i);
    free(cd);
    free(ci);
}

/* ---- coreset */

static int64_t progress_last_done = -1, progress_last_total = -1, progress_calls = 0;
static void progress_cb(const char *stage, int64_t done, int64_t total, void *user) {
    (void)user;
    if (strcmp(stage, "coreset") == 0) {
        progress_last_done = done;
        progress_last_total = total;
        progress_calls++;
    }
}

static void test_coreset(void) {
    int64_t sh[8];
    float *x = load("coreset_x", NULL, sh);
    const int64_t N = sh[0];
    const int D = (int)sh[1];
    float *ref_plain = load("coreset_sel_plain", NULL, NULL);
    float *ref_norm = load("coreset_sel_norm", NULL, NULL);
    float *ref_proj = load("coreset_sel_proj", NULL, NULL);
    int64_t sel[400];
    char msg[200];
    for (int run = 0; run < 3; run++) {
        int th = run == 0 ? 1 : 2, portable = run == 2;
        const char *how = run == 0 ? "1 thread" : run == 1 ? "2 threads" : "portable kernel";
        ds_coreset_params p = ds_coreset_defaults();
        p.proj_dim = 0;
        p.start = 7;
        p.n_threads = th;
        p.progress = progress_cb;
        progress_calls = 0;
        int ok = ds_coreset_greedy_ex(x, N, D, 40, &p, portable, sel) == DS_OK && same_indices(sel, ref_plain, 40);
        snprintf(msg, sizeof msg, "%s: greedy coreset (no projection, start 7) selects numpy's 40 indices", how);
        test_cond(msg, ok);
        test_cond("progress reaches done == total", progress_calls > 0 && progress_last_done == 40 &&
                                                        progress_last_total == 40);
        p.l2_normalize = 1;
        p.start = 123;
        ok = ds_coreset_greedy_ex(x, N, D, 40, &p, portable, sel) == DS_OK && same_indices(sel, ref_norm, 40);
        snprintf(msg, sizeof msg, "%s: coreset on L2-normalised rows equals numpy's", how);
        test_cond(msg, ok);
        p.l2_normalize = 0;
        p.proj_dim = 8;
        p.seed = 99;
        p.start = 0;
        ok = ds_coreset_greedy_ex(x, N, D, 40, &p, portable, sel) == DS_OK && same_indices(sel, ref_proj, 40);
        snprintf(msg, sizeof msg, "%s: coreset with the seeded 8-d Gaussian projection equals numpy's", how);
        test_cond(msg, ok);
    }
    {
        float *hx = hash_array(3000, 24, 3), *ref = load("coreset_hash_sel", NULL, NULL);
        for (int i = 1536 * 24; i < 3000 * 24; i++) hx[i] *= 0.25f; /* as the fixture script */
        int64_t hs[400];
        for (int run = 0; run < 3; run++) {
            ds_coreset_params p = ds_coreset_defaults();
            p.proj_dim = 0;
            p.start = 11;
            p.n_threads = run == 0 ? 1 : 2;
            int ok = ds_coreset_greedy_ex(hx, 3000, 24, 400, &p, run == 2, hs) == DS_OK && same_indices(hs, ref, 400);
            snprintf(msg, sizeof msg, "%s: 400 of 3000 points (two scales: lagging blocks catch up in batches) equal numpy's",
                     run == 0 ? "1 thread" : run == 1 ? "2 threads" : "portable kernel");
            test_cond(msg, ok);
        }
        free(hx);
        free(ref);
    }
    /* All points identical: every distance is 0, so the rule "argmax over
     * unselected points, lowest index on ties" takes 0, 1, 2, ... after the start. */
    {
        float same[50 * 19];
        for (int i = 0; i < 50 * 19; i++) same[i] = (float)(i % 19) * 0.25f;
        ds_coreset_params p = ds_coreset_defaults();
        p.proj_dim = 0;
        p.start = 3;
        int ok = ds_coreset_greedy(same, 50, 19, 10, &p, sel) == DS_OK && sel[0] == 3 && sel[1] == 0 && sel[2] == 1 &&
                 sel[3] == 2 && sel[4] == 4 && sel[9] == 9;
        test_cond("identical points: start, then the lowest unselected indices", ok);
    }
    {
        ds_coreset_params p = ds_coreset_defaults();
        p.proj_dim = 0;
        p.start = 5;
        int ok = ds_coreset_greedy(x, N, D, N, &p, sel) == DS_OK;
        int seen[300] = {0};
        for (int64_t i = 0; ok && i < N; i++) ok = sel[i] >= 0 && sel[i] < N && !seen[sel[i]]++;
        test_cond("selecting all N points yields a permutation", ok);
        ds_status st = ds_coreset_greedy(x, N, D, N + 1, &p, sel);
        test_cond("n_select > N is DS_ERR_ARG naming n_select", st == DS_ERR_ARG && strstr(ds_last_error(), "n_select"));
        p.start = N;
        st = ds_coreset_greedy(x, N, D, 3, &p, sel);
        test_cond("start >= N is DS_ERR_ARG", st == DS_ERR_ARG && strstr(ds_last_error(), "start"));
        p = ds_coreset_defaults();
        p.seed = 42;
        int64_t a[20], b[20];
        ok = ds_coreset_greedy(x, N, D, 20, &p, a) == DS_OK && ds_coreset_greedy(x, N, D, 20, &p, b) == DS_OK &&
             memcmp(a, b, sizeof a) == 0;
        test_cond("the default (random start, 128-d projection) is deterministic for a seed", ok);
        ok = ds_coreset_greedy(x, 1, D, 1, &p, a) == DS_OK && a[0] == 0;
        test_cond("a single point is selected alone", ok);
        float nanx[20 * 20];
        memcpy(nanx, x, sizeof nanx);
        nanx[7 * 20 + 3] = NAN;
        st = ds_coreset_greedy(nanx, 20, 20, 5, &p, a);
        test_cond("a NaN feature is DS_ERR_ARG naming the point", st == DS_ERR_ARG && strstr(ds_last_error(), "point 7"));
    }
    free(x);
    free(ref_plain);
    free(ref_norm);
    free(ref_proj);
}

/* ---- scorers */

static void test_knn(void) {
    int64_t sh[8], sht[8];
    float *tr = load("knn_train", NULL, sh), *te = load("knn_test", NULL, sht);
    const int D = (int)sh[2];
    char msg[200];
    for (int k = 1; k <= 5; k += 4) {
        char name[32];
        snprintf(name, sizeof name, "knn_scores_k%d", k);
        float *ref = load(name, NULL, NULL);
        ds_scorer_params p = ds_scorer_defaults();
        p.k = k;
        ds_scorer *s = NULL;
        int ok = ds_scorer_fit(DS_SCORER_KNN, &p, tr, sh[0], sh[1], D, &s) == DS_OK;
        float sc[16];
        for (int64_t i = 0; ok && i < sht[0]; i++)
            ok = ds_scorer_score(s, te + i * sht[1] * D, sht[1], 1, &sc[i], NULL) == DS_OK;
        double err = ok ? max_abs_diff(sc, ref, (size_t)sht[0], NULL) : 1;
        snprintf(msg, sizeof msg, "knn k=%d: image scores equal sklearn NearestNeighbors(metric='cosine') to 1e-6", k);
        test_cond(msg, ok && err <= 1e-6);
        if (k == 1) test_cond("knn k=1: a training image scores ~0", ok && fabsf(sc[0]) < 1e-6f);
        ds_scorer_free(s);
        free(ref);
    }
    ds_scorer_params p = ds_scorer_defaults();
    p.k = 21;
    ds_scorer *s = NULL;
    ds_status st = ds_scorer_fit(DS_SCORER_KNN, &p, tr, sh[0], sh[1], D, &s);
    test_cond("knn with k > n_images is DS_ERR_ARG naming k", st == DS_ERR_ARG && strstr(ds_last_error(), "k=21") && !s);
    free(tr);
    free(te);
}

static void test_gaussian(void) {
    const char *cases[3] = {"tall", "wide", "cut"};
    for (int c = 0; c < 3; c++) {
        char name[64], msg[200];
        int64_t sh[8], sht[8];
        snprintf(name, sizeof name, "gauss_%s_train", cases[c]);
        float *tr = load(name, NULL, sh);
        snprintf(name, sizeof name, "gauss_%s_test", cases[c]);
        float *te = load(name, NULL, sht);
        snprintf(name, sizeof name, "gauss_%s_scores", cases[c]);
        float *ref = load(name, NULL, NULL);
        snprintf(name, sizeof name, "gauss_%s_info", cases[c]);
        float *info = load(name, NULL, NULL); /* c, shrinkage, max_components */
        const int D = (int)sh[2];
        ds_scorer_params p = ds_scorer_defaults();
        p.max_components = (int)info[2];
        ds_scorer *s = NULL;
        int ok = ds_scorer_fit(DS_SCORER_GAUSSIAN, &p, tr, sh[0], sh[1], D, &s) == DS_OK;
        float sc[16];
        for (int64_t i = 0; ok && i < sht[0]; i++)
            ok = ds_scorer_score(s, te + i * sht[1] * D, sht[1], 1, &sc[i], NULL) == DS_OK;
        double err = ok ? max_rel_err(sc, ref, sht[0]) : 1;
        snprintf(msg, sizeof msg,
                 "gaussian '%s' (n=%lld, D=%d): sqrt of sklearn PCA+LedoitWolf mahalanobis to 1e-4 relative",
                 cases[c], (long long)sh[0], D);
        test_cond(msg, ok && err <= 1e-4);
        if (!(err <= 1e-4)) printf("  max relative error %.3g\n", err);
        ds_scorer_scalar v[8];
        int nc = -1;
        double shrink = -1;
        for (int i = 0; ok && i < ds_scorer_n_scalars(s); i++) {
            ds_scorer_get_scalar(s, i, &v[i]);
            if (!strcmp(v[i].name, "n_components")) nc = (int)v[i].value;
            if (!strcmp(v[i].name, "shrinkage")) shrink = v[i].value;
        }
        snprintf(msg, sizeof msg, "gaussian '%s': %d components and sklearn's shrinkage %.4f (1e-5)", cases[c],
                 (int)info[0], info[1]);
        test_cond(msg, nc == (int)info[0] && fabs(shrink - info[1]) < 1e-5);
        ds_scorer_free(s);
        free(tr);
        free(te);
        free(ref);
        free(info);
    }
    float one[2 * 3 * 5] = {0};
    ds_scorer *s = NULL;
    ds_status st = ds_scorer_fit(DS_SCORER_GAUSSIAN, NULL, one, 1, 3, 5, &s);
    test_cond("gaussian on one image is DS_ERR_ARG", st == DS_ERR_ARG && strstr(ds_last_error(), "at least 2"));
}

static void test_patchbank(void) {
    int64_t sh[8], sht[8];
    float *tr = load("pb_train", NULL, sh), *te = load("pb_test", NULL, sht);
    const int64_t N = sh[1];
    const int D = (int)sh[2];
    char msg[200], name[64];
    float ps[2][256];
    const char *mname[2] = {"cos", "l2"};
    for (int m = 0; m < 2; m++)
        for (int k = 1; k <= 3; k += 2) {
            snprintf(name, sizeof name, "pb_%s_k%d_patch", mname[m], k);
            float *ref = load(name, NULL, NULL); /* [2, N] */
            ds_scorer_params p = ds_scorer_defaults();
            p.coreset_ratio = 1.0;
            p.patch_k = k;
            p.metric = m == 0 ? DS_METRIC_COSINE : DS_METRIC_L2;
            ds_scorer *s = NULL, *s2 = NULL;
            int ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s) == DS_OK;
            p.reduce = DS_REDUCE_TOP1PCT;
            ok = ok && ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s2) == DS_OK;
            float img[2], img2[2];
            for (int i = 0; ok && i < 2; i++)
                ok = ds_scorer_score(s, te + i * N * D, N, 2, &img[i], ps[i]) == DS_OK &&
                     ds_scorer_score(s2, te + i * N * D, N, 1, &img2[i], NULL) == DS_OK;
            double err = ok ? max_abs_diff(&ps[0][0], ref, 2 * (size_t)N, NULL) : 1;
            snprintf(msg, sizeof msg, "patchbank %s, patch_k=%d, coreset 1.0: patch scores equal sklearn's to 1e-5",
                     mname[m], k);
            test_cond(msg, ok && err <= 1e-5);
            /* image scores from the REFERENCE patch scores */
            int ok2 = ok;
            for (int i = 0; ok && i < 2; i++) {
                float r[256], mx = -INFINITY;
                memcpy(r, ref + i * N, sizeof r);
                for (int j = 0; j < N; j++) mx = fmaxf(mx, r[j]);
                /* top1pct: int(0.01 * 256) = 2 largest */
                float a = -INFINITY, b = -INFINITY;
                for (int j = 0; j < N; j++) {
                    if (r[j] > a) {
                        b = a;
                        a = r[j];
                    } else if (r[j] > b) {
                        b = r[j];
                    }
                }
                ok2 = ok2 && fabsf(img[i] - mx) <= 1e-5f && fabsf(img2[i] - 0.5f * (a + b)) <= 1e-5f;
            }
            snprintf(msg, sizeof msg, "patchbank %s k=%d: image score = max, top1pct = mean of the 2 largest of 256",
                     mname[m], k);
            test_cond(msg, ok2);
            if (m == 0 && k == 1)
                test_cond("patches seen in training score ~0", ok && ps[1][0] < 1e-5f && ps[1][39] < 1e-5f);
            ds_scorer_free(s);
            ds_scorer_free(s2);
            free(ref);
        }
    /* Coreset 0.25 with a 16-d projection, seed 5 (random start as the C
     * library draws it, replicated in the fixture script). */
    {
        float *ref = load("pb_coreset_patch", NULL, NULL);
        float *sel = load("pb_coreset_sel", NULL, sht);
        ds_scorer_params p = ds_scorer_defaults();
        p.coreset_ratio = 0.25;
        p.coreset_proj_dim = 16;
        p.seed = 5;
        ds_scorer *s = NULL;
        int ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s) == DS_OK;
        ds_scorer_array a = {0};
        ok = ok && ds_scorer_get_array(s, 0, &a) == DS_OK && !strcmp(a.name, "bank") && a.shape[0] == sht[0] &&
             a.shape[1] == D;
        test_cond("coreset 0.25 keeps int(0.25 * 1024) = 256 patches", ok);
        /* the bank rows are the normalised training patches numpy selected */
        int rows_ok = ok;
        for (int64_t i = 0; rows_ok && i < sht[0]; i++) {
            float row[64];
            ds_l2_normalize_rows(tr + (int64_t)sel[i] * D, row, 1, D);
            rows_ok = max_abs_diff((const float *)a.data + i * D, row, (size_t)D, NULL) < 1e-6;
        }
        test_cond("the bank holds the normalised patches of numpy's coreset, in selection order", rows_ok);
        for (int i = 0; ok && i < 2; i++) {
            float img;
            ok = ds_scorer_score(s, te + i * N * D, N, 2, &img, ps[i]) == DS_OK;
        }
        test_cond("coreset bank: patch scores equal sklearn's against numpy's coreset to 1e-5",
                  ok && max_abs_diff(&ps[0][0], ref, 2 * (size_t)N, NULL) <= 1e-5);
        ds_scorer_free(s);
        free(ref);
        free(sel);
    }
    free(tr);
    free(te);
}

/* ---- serialisation */

static int roundtrip(ds_scorer_kind kind, const ds_scorer_params *p, const float *tr, int64_t n, int64_t N, int D,
                     const float *te) {
    ds_scorer *s = NULL, *r = NULL;
    if (ds_scorer_fit(kind, p, tr, n, N, D, &s) != DS_OK) return 0;
    ds_scorer_array arr[8];
    ds_scorer_scalar sc[8];
    int na = ds_scorer_n_arrays(s), ns = ds_scorer_n_scalars(s);
    for (int i = 0; i < na; i++) ds_scorer_get_array(s, i, &arr[i]);
    for (int i = 0; i < ns; i++) ds_scorer_get_scalar(s, i, &sc[i]);
    /* reversed order: parts are matched by name */
    ds_scorer_array rarr[8];
    for (int i = 0; i < na; i++) rarr[i] = arr[na - 1 - i];
    int ok = ds_scorer_from_parts(kind, sc, ns, rarr, na, &r) == DS_OK;
    for (int i = 0; ok && i < na; i++) {
        ds_scorer_array b;
        ds_scorer_get_array(r, i, &b);
        int found = 0;
        for (int j = 0; j < na; j++) found |= !strcmp(arr[j].name, b.name) && arr[j].data == b.data;
        ok = found; /* views, not copies */
    }
    float a1, a2, p1[64], p2[64];
    ok = ok && ds_scorer_score(s, te, N, 1, &a1, p1) == DS_OK && ds_scorer_score(r, te, N, 1, &a2, p2) == DS_OK &&
         a1 == a2 && (kind != DS_SCORER_PATCHBANK || memcmp(p1, p2, sizeof(float) * (size_t)N) == 0);
    ds_scorer_free(r);
    ds_scorer_free(s);
    return ok;
}

/* The bf16 bank representation: patch scores near sklearn's f32 ones, the
 * stored values exactly bf16, and a model rebuilt from the parts scoring
 * identically. */
static void test_bank_repr(void) {
    int64_t sh[8];
    float *tr = load("pb_train", NULL, sh), *te = load("pb_test", NULL, NULL);
    const int64_t N = sh[1];
    const int D = (int)sh[2];
    const char *mname[2] = {"cos", "l2"};
    for (int m = 0; m < 2; m++) {
        char name[64], msg[200];
        snprintf(name, sizeof name, "pb_%s_k1_patch", mname[m]);
        float *ref = load(name, NULL, NULL);
        ds_scorer_params p = ds_scorer_defaults();
        p.coreset_ratio = 1.0;
        p.metric = m == 0 ? DS_METRIC_COSINE : DS_METRIC_L2;
        p.bank_repr = DS_BANK_BF16;
        ds_scorer *s = NULL;
        float ps[2][256], img;
        int ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s) == DS_OK;
        for (int i = 0; ok && i < 2; i++) ok = ds_scorer_score(s, te + i * N * D, N, 2, &img, ps[i]) == DS_OK;
        double rmax = 0, err = ok ? max_abs_diff(&ps[0][0], ref, 2 * (size_t)N, &rmax) : 1;
        printf("  bf16 bank, %s: max|patch score - sklearn f32| = %.3g (max %.3g)\n", mname[m], err, rmax);
        snprintf(msg, sizeof msg, "patchbank %s with a bf16 bank: patch scores within 1%% of max of sklearn's f32 ones",
                 mname[m]);
        test_cond(msg, ok && err <= 0.01 * rmax);
        ds_scorer_array a = {0};
        int exact = ok && ds_scorer_get_array(s, 0, &a) == DS_OK && a.dtype == DS_ARRAY_U16 && !strcmp(a.name, "bank");
        test_cond("the stored bank holds the bf16 bit patterns (a u16 array)", exact);
        ds_scorer_params back;
        test_cond("params_of reports the bf16 bank",
                  ok && ds_scorer_params_of(s, &back) == DS_OK && back.bank_repr == DS_BANK_BF16);
        ds_scorer_free(s);
        free(ref);
        p.bank_repr = DS_BANK_F32;
        s = NULL;
        ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s) == DS_OK;
        int has = 0;
        for (int i = 0; ok && i < ds_scorer_n_scalars(s); i++) {
            ds_scorer_scalar sc;
            ds_scorer_get_scalar(s, i, &sc);
            has |= !strcmp(sc.name, "bank_repr");
        }
        test_cond("an f32 bank stores no bank_repr scalar (files as before)", ok && !has);
        ds_scorer_free(s);
    }
    /* roundtrip() takes at most 64 patches: the knn fixtures */
    int64_t shk[8];
    float *ktr = load("knn_train", NULL, shk), *kte = load("knn_test", NULL, NULL);
    ds_scorer_params p = ds_scorer_defaults();
    p.k = 2;
    p.coreset_ratio = 0.5;
    p.bank_repr = DS_BANK_BF16;
    test_cond("a bf16 knn rebuilt from its parts scores identically",
              roundtrip(DS_SCORER_KNN, &p, ktr, shk[0], shk[1], (int)shk[2], kte));
    test_cond("a bf16 patchbank rebuilt from its parts scores identically",
              roundtrip(DS_SCORER_PATCHBANK, &p, ktr, shk[0], shk[1], (int)shk[2], kte));
    free(ktr);
    free(kte);
    p.bank_repr = (ds_bank_repr)7;
    ds_scorer *s = NULL;
    test_cond("an unknown bank representation is refused",
              ds_scorer_fit(DS_SCORER_PATCHBANK, &p, tr, sh[0], N, D, &s) == DS_ERR_ARG && !s);
    ds_bank_repr r;
    test_cond("bank representations parse by name",
              ds_bank_repr_parse("bf16", &r) == DS_OK && r == DS_BANK_BF16 && ds_bank_repr_parse("f32", &r) == DS_OK &&
                  r == DS_BANK_F32 && ds_bank_repr_parse("int3", &r) == DS_ERR_ARG);
    free(tr);
    free(te);
}

static void test_parts(void) {
    int64_t sh[8];
    float *tr = load("knn_train", NULL, sh), *te = load("knn_test", NULL, NULL);
    const int64_t n = sh[0], N = sh[1];
    const int D = (int)sh[2];
    ds_scorer_params p = ds_scorer_defaults();
    p.coreset_ratio = 0.5;
    test_cond("knn rebuilt from its parts (views) scores identically", roundtrip(DS_SCORER_KNN, &p, tr, n, N, D, te));
    test_cond("gaussian rebuilt from its parts scores identically", roundtrip(DS_SCORER_GAUSSIAN, &p, tr, n, N, D, te));
    test_cond("patchbank rebuilt from its parts scores identically",
              roundtrip(DS_SCORER_PATCHBANK, &p, tr, n, N, D, te));

    ds_scorer *s = NULL, *r = NULL;
    ds_scorer_fit(DS_SCORER_GAUSSIAN, &p, tr, n, N, D, &s);
    ds_scorer_array arr[4];
    ds_scorer_scalar sc[8];
    int na = ds_scorer_n_arrays(s), ns = ds_scorer_n_scalars(s);
    for (int i = 0; i < na; i++) ds_scorer_get_array(s, i, &arr[i]);
    for (int i = 0; i < ns; i++) ds_scorer_get_scalar(s, i, &sc[i]);
    ds_status st = ds_scorer_from_parts(DS_SCORER_GAUSSIAN, sc, ns, arr, na - 1, &r);
    test_cond("a missing array is DS_ERR_FORMAT naming it",
              st == DS_ERR_FORMAT && strstr(ds_last_error(), "'precision'") && !r);
    ds_scorer_array bad[4];
    memcpy(bad, arr, sizeof bad);
    bad[3].shape[1] -= 1;
    st = ds_scorer_from_parts(DS_SCORER_GAUSSIAN, sc, ns, bad, na, &r);
    test_cond("a wrongly shaped array is DS_ERR_FORMAT with both shapes",
              st == DS_ERR_FORMAT && strstr(ds_last_error(), "precision") && strstr(ds_last_error(), "expected"));
    memcpy(bad, arr, sizeof bad);
    bad[1].name = "componentz";
    st = ds_scorer_from_parts(DS_SCORER_GAUSSIAN, sc, ns, bad, na, &r);
    test_cond("an unknown array name is DS_ERR_FORMAT", st == DS_ERR_FORMAT && strstr(ds_last_error(), "componentz"));
    memcpy(bad, arr, sizeof bad);
    bad[1] = bad[0];
    st = ds_scorer_from_parts(DS_SCORER_GAUSSIAN, sc, ns, bad, na, &r);
    test_cond("a duplicated array is DS_ERR_FORMAT", st == DS_ERR_FORMAT && strstr(ds_last_error(), "twice"));
    ds_scorer_free(s);

    ds_scorer_fit(DS_SCORER_KNN, &p, tr, n, N, D, &s);
    na = ds_scorer_n_arrays(s);
    ns = ds_scorer_n_scalars(s);
    for (int i = 0; i < na; i++) ds_scorer_get_array(s, i, &arr[i]);
    for (int i = 0; i < ns; i++) ds_scorer_get_scalar(s, i, &sc[i]);
    ds_scorer_scalar bsc[8];
    memcpy(bsc, sc, sizeof bsc);
    bsc[0].value = 2.5; /* "k" */
    st = ds_scorer_from_parts(DS_SCORER_KNN, bsc, ns, arr, na, &r);
    test_cond("a non-integral k is DS_ERR_FORMAT", st == DS_ERR_FORMAT && strstr(ds_last_error(), "'k'"));
    bsc[0].value = 1e6;
    st = ds_scorer_from_parts(DS_SCORER_KNN, bsc, ns, arr, na, &r);
    test_cond("k larger than the bank is DS_ERR_FORMAT", st == DS_ERR_FORMAT);
    st = ds_scorer_from_parts(DS_SCORER_KNN, sc, 0, arr, na, &r);
    test_cond("a missing required scalar is DS_ERR_FORMAT", st == DS_ERR_FORMAT && strstr(ds_last_error(), "'k'"));
    float img;
    st = ds_scorer_score(s, te, 0, 1, &img, NULL);
    test_cond("scoring zero patches is DS_ERR_SHAPE", st == DS_ERR_SHAPE);
    ds_scorer_free(s);
    ds_scorer_kind kind;
    test_cond("scorer names parse", ds_scorer_kind_parse("patchbank", &kind) == DS_OK && kind == DS_SCORER_PATCHBANK &&
                                        ds_scorer_kind_parse("knn", &kind) == DS_OK && kind == DS_SCORER_KNN &&
                                        ds_scorer_kind_parse("nope", &kind) == DS_ERR_ARG);
    ds_scorer_free(NULL);
    free(tr);
    free(te);
}

/* ---- edge cases */

static void test_edges(void) {
    /* N = 1 patch per image, D = 24: every scorer fits and scores. */
    int64_t sh[8];
    float *tr = load("knn_train", NULL, sh);
    const int D = (int)sh[2];
    const int64_t n = sh[0];
    float *one = malloc(sizeof(float) * (size_t)n * D);
    for (int64_t i = 0; i < n; i++) memcpy(one + i * D, tr + i * sh[1] * D, sizeof(float) * (size_t)D);
    int ok = 1;
    for (int kind = 0; kind < 3; kind++) {
        ds_scorer_params p = ds_scorer_defaults();
        p.coreset_ratio = 0.5;
        ds_scorer *s = NULL;
        float img = NAN, ps = NAN;
        ok = ok && ds_scorer_fit((ds_scorer_kind)kind, &p, one, n, 1, D, &s) == DS_OK &&
             ds_scorer_score(s, one + 2 * D, 1, 1, &img, &ps) == DS_OK && isfinite(img);
        ds_scorer_free(s);
    }
    test_cond("N = 1 patch per image: all three scorers fit and score", ok);

    /* All-identical features: scores are 0 and finite. */
    float *same = malloc(sizeof(float) * 10 * 4 * 19);
    for (int i = 0; i < 10 * 4 * 19; i++) same[i] = 0.1f * (float)(i % 19) + 0.05f;
    const char *names[3] = {"knn", "gaussian", "patchbank"};
    for (int kind = 0; kind < 3; kind++) {
        ds_scorer_params p = ds_scorer_defaults();
        ds_scorer *s = NULL;
        float img = NAN, ps[4];
        ok = ds_scorer_fit((ds_scorer_kind)kind, &p, same, 10, 4, 19, &s) == DS_OK &&
             ds_scorer_score(s, same, 4, 2, &img, ps) == DS_OK && fabsf(img) < 1e-5f;
        char msg[128];
        snprintf(msg, sizeof msg, "%s on all-identical features (D=19) scores an identical image 0", names[kind]);
        test_cond(msg, ok);
        ds_scorer_free(s);
    }
    ds_scorer_params p = ds_scorer_defaults();
    p.coreset_ratio = 0;
    ds_scorer *s = NULL;
    ds_status st = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, same, 10, 4, 19, &s);
    test_cond("coreset ratio 0 is DS_ERR_ARG", st == DS_ERR_ARG && strstr(ds_last_error(), "coreset"));
    free(same);
    free(one);
    free(tr);
}

/* ---- anomaly maps */

static void test_maps(void) {
    int64_t sh[8], n;
    float *g = load("map_a_grid", NULL, sh), *ref = load("map_a_out", &n, NULL);
    float *out = malloc(sizeof(float) * 518 * 518);
    double mref = 0;
    int ok = ds_anomaly_map(g, (int)sh[0], (int)sh[1], 70, 4.0f, 45, 52, out) == DS_OK;
    double err = ok ? max_abs_diff(out, ref, (size_t)n, &mref) : 1;
    test_cond("map 9x7 -> bicubic 70 -> blur sigma 4 -> bilinear 45x52 equals torch/torchvision to 1e-5 of max",
              ok && err <= 1e-5 * mref);
    free(g);
    free(ref);

    g = load("map_b_grid", NULL, sh);
    ref = load("map_b_out_sub", &n, NULL);
    ok = ds_anomaly_map(g, 37, 37, 518, 4.0f, 518, 518, out) == DS_OK;
    float *sub = malloc(sizeof(float) * 74 * 74);
    int m = 0;
    for (int y = 0; y < 518; y += 7)
        for (int x = 0; x < 518; x += 7) sub[m++] = out[y * 518 + x];
    err = ok && m == n ? max_abs_diff(sub, ref, (size_t)n, &mref) : 1;
    test_cond("map 37x37 -> 518 with blur (as for a 518 input) equals torch on every 7th pixel to 1e-5 of max",
              ok && err <= 1e-5 * mref);
    free(sub);
    free(g);
    free(ref);

    g = load("map_c_grid", NULL, sh);
    ref = load("map_c_out", &n, NULL);
    ok = ds_anomaly_map(g, 5, 6, 30, 0.0f, 17, 40, out) == DS_OK;
    err = ok ? max_abs_diff(out, ref, (size_t)n, &mref) : 1;
    test_cond("sigma 0 skips the blur: bicubic 30 then bilinear 17x40 equal torch's", ok && err <= 1e-5 * mref);
    free(g);
    free(ref);

    float c1 = 0.7f;
    ok = ds_anomaly_map(&c1, 1, 1, 5, 4.0f, 3, 2, out) == DS_OK;
    for (int i = 0; ok && i < 6; i++) ok = fabsf(out[i] - 0.7f) < 1e-6f;
    test_cond("a 1x1 grid gives a constant map (image smaller than the blur kernel)", ok);
    test_cond("a zero-sized grid is DS_ERR_ARG", ds_anomaly_map(&c1, 0, 1, 5, 4.0f, 3, 2, out) == DS_ERR_ARG);
    free(out);
}

/* ---- the composable (blocked) coreset against the numpy implementation of
 * its definition (tests/fixtures/make_coreset_blocked_fixture.py) */
static void test_coreset_blocked(void) {
    int64_t sh[8];
    float *x = load("coreset_blk_x", NULL, sh);
    const int64_t N = sh[0];
    const int D = (int)sh[1];
    float *w = load("coreset_blk_w", NULL, NULL);
    float *y = malloc(sizeof(float) * (size_t)N * 8);
    for (int64_t i = 0; i < N; i++) /* y = x @ W in float32, the product numpy saved its selection for */
        for (int j = 0; j < 8; j++) {
            float acc = 0;
            for (int k = 0; k < D; k++) acc += x[i * D + k] * w[k * 8 + j];
            y[i * 8 + j] = acc;
        }
    struct { const char *ref, *what; const float *pts; int dim, l2; int64_t k, B; double over; } cases[] = {
        {"coreset_blk_sel_raw", "raw points, 6 blocks, union of 300 in 2 groups", x, D, 0, 150, 256, 2.0},
        {"coreset_blk_sel_proj", "projected by the fixture's W, oversample 1.5", y, 8, 0, 90, 200, 1.5},
        {"coreset_blk_sel_norm", "L2-normalised rows, one group (the two-round coreset)", x, D, 1, 40, 512, 3.0},
        {"coreset_blk_sel_all", "level 1 keeps every point, level 2 alone selects", x, D, 0, 700, 1000, 4.0},
    };
    int64_t sel[700];
    char msg[200];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float *ref = load(cases[c].ref, NULL, NULL);
        for (int th = 1; th <= 2; th++) {
            const float *rows[2] = {cases[c].pts, cases[c].pts + 700 * cases[c].dim};
            int64_t n[2] = {700, N - 700}; /* two segments: the source joins them */
            ds_row_segments sg = {rows, n, 2, cases[c].dim};
            ds_row_source src = ds_row_source_of_segments(&sg);
            ds_coreset_params p = ds_coreset_defaults();
            p.proj_dim = 0;
            p.l2_normalize = cases[c].l2;
            p.n_threads = th;
            int ok = ds_coreset_blocked(&src, cases[c].k, &p, cases[c].B, cases[c].over, sel) == DS_OK &&
                     same_indices(sel, ref, cases[c].k);
            snprintf(msg, sizeof msg, "blocked coreset, %s, %d thread%s: numpy's %lld indices", cases[c].what, th,
                     th > 1 ? "s" : "", (long long)cases[c].k);
            test_cond(msg, ok);
        }
        free(ref);
    }
    {
        const float *rows[1] = {x};
        int64_t n[1] = {N};
        ds_row_segments sg = {rows, n, 1, D};
        ds_row_source src = ds_row_source_of_segments(&sg);
        ds_coreset_params p = ds_coreset_defaults();
        p.proj_dim = 0;
        p.start = 0;
        int64_t a[60], b[60];
        int ok = ds_coreset_blocked(&src, 60, &p, N, 1.0, a) == DS_OK && ds_coreset_greedy(x, N, D, 60, &p, b) == DS_OK &&
                 memcmp(a, b, sizeof a) == 0;
        test_cond("one block, oversample 1: the blocked coreset is the exact greedy from point 0", ok);
        ok = ds_coreset_greedy_rows(&src, 60, &p, a) == DS_OK && memcmp(a, b, sizeof a) == 0;
        test_cond("the greedy over a row source equals the greedy over the array", ok);
        test_cond("block_rows 1 is DS_ERR_ARG", ds_coreset_blocked(&src, 5, &p, 1, 2.0, a) == DS_ERR_ARG);
        test_cond("oversample 0.5 is DS_ERR_ARG", ds_coreset_blocked(&src, 5, &p, 100, 0.5, a) == DS_ERR_ARG);
        test_cond("n_select > N is DS_ERR_ARG naming n_select",
                  ds_coreset_blocked(&src, N + 1, &p, 100, 2.0, a) == DS_ERR_ARG && strstr(ds_last_error(), "n_select"));
        ds_coreset_method m;
        test_cond("coreset methods parse and auto resolves by size",
                  ds_coreset_method_parse("blocked", &m) == DS_OK && m == DS_CORESET_BLOCKED &&
                      ds_coreset_method_parse("fast", &m) == DS_ERR_ARG &&
                      ds_coreset_resolve(DS_CORESET_AUTO, 1000) == DS_CORESET_EXACT &&
                      ds_coreset_resolve(DS_CORESET_AUTO, DS_CORESET_AUTO_MAX_EXACT + 1) == DS_CORESET_BLOCKED);
    }
    free(x);
    free(w);
    free(y);
}

int main(void) {
    test_nn();
    test_coreset();
    test_coreset_blocked();
    test_knn();
    test_gaussian();
    test_patchbank();
    test_bank_repr();
    test_parts();
    test_edges();
    test_maps();
    test_report();
}
