/* Compact memory banks (src/scorer/bank.c, src/scorer/ivfpq.c) against numpy
 * (tests/fixtures/bank, made by tests/fixtures/make_bank_fixtures.py): the
 * float16 conversion, int8 quantisation values and the exact search over
 * int8 and f16 banks, IVF-PQ's recall@1 against the exact f32 neighbours,
 * determinism, and model files: a round trip for every representation, and
 * a model written before compact banks existed (format 1) still loads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "scorer/scorer_internal.h"
#include "test.h"

static float *load(const char *name, int64_t shape[DS_NPY_MAX_DIMS]) {
    char rel[256];
    snprintf(rel, sizeof rel, "bank/%s.npy", name);
    float *d = NULL;
    int nd = 0;
    int64_t sh[DS_NPY_MAX_DIMS] = {0};
    if (ds_npy_read_f32(fixture(rel), &d, &nd, sh) != DS_OK) {
        printf("cannot load fixture %s: %s\n", rel, ds_last_error());
        exit(1);
    }
    if (shape) memcpy(shape, sh, sizeof sh);
    return d;
}

/* dist/idx [Q, k] against the reference: distances within tol (relative to
 * max(1, |ref|)), rows equal unless the two distances are a near-tie. */
static int same_knn(const float *dist, const int64_t *idx, const float *rd, const float *ri, int64_t n, double tol,
                    double *max_err) {
    int ok = 1;
    *max_err = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)dist[i] - rd[i]) / fmax(1.0, fabs(rd[i]));
        *max_err = fmax(*max_err, e);
        ok &= e <= tol;
        if (idx[i] != (int64_t)ri[i]) ok &= fabs((double)dist[i] - rd[i]) <= tol; /* a tie may swap rows */
    }
    return ok;
}

static void test_f16_conversion(void) {
    int64_t sh[DS_NPY_MAX_DIMS];
    float *in = load("f16_in", sh), *bits = load("f16_bits", NULL);
    int bad = 0;
    for (int64_t i = 0; i < sh[0]; i++) {
        uint16_t h = ds_f32_to_f16(in[i]);
        if (h != (uint16_t)bits[i]) {
            if (bad++ < 3) printf("  f16(%.9g) = 0x%04x, numpy 0x%04x\n", in[i], h, (unsigned)bits[i]);
        }
    }
    test_cond("float -> f16 equals numpy's float16 bit for bit (edges: subnormals, 65504/65520, ties, inf)", bad == 0);
    int back = 1;
    for (int64_t i = 0; i < sh[0]; i++) {
        float f = ds_f16_to_f32((uint16_t)bits[i]);
        back &= (double)f == (double)(float)ds_f16_to_f32(ds_f32_to_f16(f)) && (isinf(in[i]) || isinf(f) || fabs(f - in[i]) <= fabs(in[i]) * 0x1p-11 + 0x1p-25);
    }
    test_cond("f16 -> float -> f16 is the identity and within half an ulp of the input", back);
    free(in);
    free(bits);
}

static void test_int8(void) {
    int64_t sx[DS_NPY_MAX_DIMS], sq[DS_NPY_MAX_DIMS];
    float *x = load("x", sx), *q = load("q", sq);
    const int64_t M = sx[0], Q = sq[0];
    const int D = (int)sx[1];
    float *scale = load("int8_scale", NULL), *codes = load("int8_codes", NULL);
    ds_nn_bank *b = NULL;
    int ok = ds_nn_bank_create(x, M, D, DS_BANK_INT8, &b) == DS_OK;
    test_cond("an int8 bank is created", ok);
    ds_scorer_array arr[4];
    int na = ok ? ds_nn_bank_arrays(b, arr) : 0;
    ok = na == 2 && arr[0].dtype == DS_ARRAY_I8 && arr[1].dtype == DS_ARRAY_F32 && !strcmp(arr[1].name, "bank_scale");
    int vals = ok;
    for (int64_t j = 0; vals && j < M; j++) {
        vals &= ((const float *)arr[1].data)[j] == scale[j];
        for (int d = 0; d < D; d++) vals &= ((const int8_t *)arr[0].data)[j * D + d] == (int8_t)codes[j * D + d];
    }
    test_cond("int8 codes and per-row scales equal numpy's (rint(x / (max|x|/127)), the zero row 0)", vals);
    float row[64];
    int dec = ok;
    for (int64_t j = 0; dec && j < M; j++) {
        ds_nn_bank_row(b, j, row);
        for (int d = 0; d < D; d++) dec &= row[d] == codes[j * D + d] * scale[j];
    }
    test_cond("a decoded int8 row is code * scale exactly", dec);
    test_cond("the int8 bank holds D + 4 bytes a row", ds_nn_bank_bytes(b) == (size_t)M * (size_t)(D + 4));
    float dist[64 * 3];
    int64_t idx[64 * 3];
    double err = 0;
    float *rd = load("int8_l2_dist", NULL), *ri = load("int8_l2_idx", NULL);
    ok = ds_nn_bank_search(b, q, Q, 3, DS_METRIC_L2, 2, dist, idx) == DS_OK && same_knn(dist, idx, rd, ri, Q * 3, 1e-5, &err);
    printf("  int8 l2: max relative distance error %.3g\n", err);
    test_cond("int8 L2 search: the 3 nearest decoded rows and distances of numpy (1e-5)", ok);
    ds_nn_bank_free(b);
    free(rd);
    free(ri);
    /* cosine: unit rows quantised, distance to the decoded row's direction */
    ds_l2_normalize_rows(x, x, M, D);
    ds_l2_normalize_rows(q, q, Q, D);
    rd = load("int8_cos_dist", NULL), ri = load("int8_cos_idx", NULL);
    ok = ds_nn_bank_create(x, M, D, DS_BANK_INT8, &b) == DS_OK &&
         ds_nn_bank_search(b, q, Q, 3, DS_METRIC_COSINE, 1, dist, idx) == DS_OK && same_knn(dist, idx, rd, ri, Q * 3, 1e-5, &err);
    printf("  int8 cos: max relative distance error %.3g\n", err);
    test_cond("int8 cosine search: numpy's 3 nearest (1 - q.row/||row|| of the decoded rows, 1e-5)", ok);
    ds_nn_bank_free(b);
    float bad[4] = {1, NAN, 0, 0};
    b = NULL;
    test_cond("a non-finite row is refused for int8", ds_nn_bank_create(bad, 1, 4, DS_BANK_INT8, &b) == DS_ERR_ARG && !b);
    free(rd);
    free(ri);
    free(x);
    free(q);
    free(scale);
    free(codes);
}

static void test_f16_search(void) {
    int64_t sx[DS_NPY_MAX_DIMS], sq[DS_NPY_MAX_DIMS];
    float *x = load("x", sx), *q = load("q", sq);
    float *rd = load("f16_l2_dist", NULL), *ri = load("f16_l2_idx", NULL);
    ds_nn_bank *b = NULL;
    float dist[64 * 3];
    int64_t idx[64 * 3];
    double err = 0;
    int ok = ds_nn_bank_create(x, sx[0], (int)sx[1], DS_BANK_F16, &b) == DS_OK &&
             ds_nn_bank_search(b, q, sq[0], 3, DS_METRIC_L2, 2, dist, idx) == DS_OK &&
             same_knn(dist, idx, rd, ri, sq[0] * 3, 1e-5, &err);
    printf("  f16 l2: max relative distance error %.3g\n", err);
    test_cond("f16 L2 search: numpy's 3 nearest rows of the float16 bank (1e-5)", ok);
    test_cond("the f16 bank holds 2 bytes a value", ds_nn_bank_bytes(b) == (size_t)sx[0] * (size_t)sx[1] * 2);
    ds_nn_bank_free(b);
    float big[2] = {1.0f, 70000.0f};
    b = NULL;
    test_cond("a value beyond the half range is refused for f16", ds_nn_bank_create(big, 1, 2, DS_BANK_F16, &b) == DS_ERR_ARG);
    free(x);
    free(q);
    free(rd);
    free(ri);
}

/* recall@1 of the IVF-PQ bank b against the exact neighbours ref. */
static double recall1(const ds_nn_bank *b, const float *q, int64_t Q, const float *ref, float *dist, int64_t *idx) {
    if (ds_nn_bank_search(b, q, Q, 1, DS_METRIC_COSINE, 2, dist, idx) != DS_OK) return -1;
    int64_t hit = 0;
    for (int64_t i = 0; i < Q; i++) hit += ds_nn_bank_source_row(b, idx[i]) == (int64_t)ref[i];
    return (double)hit / (double)Q;
}

static void test_ivfpq(void) {
    int64_t sx[DS_NPY_MAX_DIMS], sq[DS_NPY_MAX_DIMS];
    float *x = load("ivf_x", sx), *q = load("ivf_q", sq), *ref = load("ivf_ref_idx", NULL);
    const int64_t M = sx[0], Q = sq[0];
    const int D = (int)sx[1];
    float *dist = malloc(sizeof(float) * (size_t)Q * (size_t)M);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)Q * (size_t)M);
    ds_ivfpq_params p = ds_ivfpq_defaults();
    ds_nn_bank *b = NULL, *b2 = NULL;
    int ok = ds_nn_bank_create_ex(x, M, D, DS_BANK_IVFPQ, &p, &b) == DS_OK;
    test_cond("an ivfpq bank is created with the defaults", ok);
    int nprobe = 0, nlist = 0;
    ds_nn_bank_ivf_info(b, &nprobe, &nlist);
    printf("  ivfpq: M=%lld D=%d nlist=%d nprobe=%d, %zu bytes (f32 %zu)\n", (long long)M, D, nlist, nprobe,
           ds_nn_bank_bytes(b), (size_t)M * D * 4);
    test_cond("default nlist = round(sqrt(M)) = 45, nprobe 16", nlist == 45 && nprobe == DS_IVFPQ_NPROBE);
    test_cond("it holds under 1/4 of the f32 bytes here (1/16 + centroids and codebook)",
              ds_nn_bank_bytes(b) * 4 < (size_t)M * D * 4);
    /* k-means local optima move recall by a few points: compare the mean
     * over 3 seeds with numpy's IVF-PQ mean over 3 seeds */
    float *np_recall = load("ivf_np_recall", NULL);
    double r = 0, r0 = recall1(b, q, Q, ref, dist, idx);
    for (int seed = 1; seed < 3; seed++) {
        ds_ivfpq_params ps = p;
        ps.seed = (uint64_t)seed;
        ok = ds_nn_bank_create_ex(x, M, D, DS_BANK_IVFPQ, &ps, &b2) == DS_OK;
        r += ok ? recall1(b2, q, Q, ref, dist, idx) : 0;
        ds_nn_bank_free(b2);
        b2 = NULL;
    }
    r = (r + r0) / 3;
    printf("  ivfpq recall@1 against numpy's exact cosine neighbours at nprobe %d: %.3f (seed 0), mean of 3 seeds %.3f; "
           "numpy IVF-PQ: %.3f\n", nprobe, r0, r, np_recall[0]);
    test_cond("mean recall@1 at the default nprobe is within 0.03 of numpy's IVF-PQ of the same settings",
              r >= np_recall[0] - 0.03);
    free(np_recall);
    recall1(b, q, Q, ref, dist, idx);
    r = r0;
    /* the ADC distance is the cosine distance to the decoded row */
    float row[64];
    double e = 0;
    for (int64_t i = 0; i < Q; i++) {
        ds_nn_bank_row(b, idx[i], row);
        double dot = 0;
        for (int d = 0; d < D; d++) dot += (double)q[i * D + d] * row[d];
        e = fmax(e, fabs(dist[i] - fmin(2.0, fmax(0.0, 1.0 - dot))));
    }
    test_cond("each distance is 1 - q.(centroid + decoded residual) of the row returned (1e-5)", e <= 1e-5);
    ds_nn_bank_set_nprobe(b, 1 << 20);
    ds_nn_bank_ivf_info(b, &nprobe, NULL);
    double r_all = recall1(b, q, Q, ref, dist, idx);
    printf("  ivfpq recall@1 visiting all %d lists: %.3f\n", nprobe, r_all);
    test_cond("nprobe is clipped to nlist and visiting every list does not lower recall", nprobe == nlist && r_all >= r);
    ds_nn_bank_set_nprobe(b, 1);
    test_cond("with nprobe 1 and k = M every row still comes back once (the other lists are visited too)",
              ds_nn_bank_search(b, q, 1, (int)M, DS_METRIC_COSINE, 1, dist, idx) == DS_OK);
    int seen_ok = 1;
    char *seen = calloc((size_t)M, 1);
    for (int64_t i = 0; i < M; i++) {
        seen_ok &= idx[i] >= 0 && idx[i] < M && !seen[idx[i]] && (i == 0 || dist[i] >= dist[i - 1]);
        if (idx[i] >= 0 && idx[i] < M) seen[idx[i]] = 1;
    }
    free(seen);
    test_cond("... distinct rows in ascending distance", seen_ok);
    /* deterministic: the same arrays again, with another thread count */
    p.n_threads = 1;
    ok = ds_nn_bank_create_ex(x, M, D, DS_BANK_IVFPQ, &p, &b2) == DS_OK;
    ds_scorer_array a1[4], a2[4];
    int n1 = ds_nn_bank_arrays(b, a1), n2 = ok ? ds_nn_bank_arrays(b2, a2) : 0;
    int same = n1 == 4 && n2 == 4;
    for (int i = 0; same && i < 4; i++) {
        size_t bytes = (size_t)a1[i].shape[0] * (size_t)(a1[i].n_dims > 1 ? a1[i].shape[1] : 1) * ds_array_dtype_size(a1[i].dtype);
        same = a1[i].shape[0] == a2[i].shape[0] && a1[i].shape[1] == a2[i].shape[1] && !memcmp(a1[i].data, a2[i].data, bytes);
    }
    test_cond("training is deterministic: identical centroids, codebook, codes and lists with 1 and 2 threads", same);
    ds_nn_bank_free(b2);
    /* small banks and bad settings */
    b2 = NULL;
    ok = ds_nn_bank_create_ex(x, 40, D, DS_BANK_IVFPQ, NULL, &b2) == DS_OK &&
         ds_nn_bank_search(b2, q, Q, 3, DS_METRIC_L2, 1, dist, idx) == DS_OK;
    test_cond("a bank of 40 rows (fewer than 256 codes) trains and searches", ok);
    ds_nn_bank_free(b2);
    b2 = NULL;
    ds_ivfpq_params bad = {.pq_m = 5};
    test_cond("pq_m not dividing D is DS_ERR_ARG", ds_nn_bank_create_ex(x, M, D, DS_BANK_IVFPQ, &bad, &b2) == DS_ERR_ARG);
    bad = (ds_ivfpq_params){.nlist = (int)M + 1};
    test_cond("nlist > M is DS_ERR_ARG", ds_nn_bank_create_ex(x, M, D, DS_BANK_IVFPQ, &bad, &b2) == DS_ERR_ARG && !b2);
    test_cond("set_nprobe on an int8 bank is DS_ERR_ARG", ds_nn_bank_set_nprobe(b2, 4) == DS_ERR_ARG);
    ds_nn_bank_free(b);
    free(x);
    free(q);
    free(ref);
    free(dist);
    free(idx);
}

/* A model file of one patchbank scorer in each representation: saved,
 * loaded, and scoring as the scorer it was saved from. */
static void test_model_roundtrip(void) {
    int64_t sx[DS_NPY_MAX_DIMS];
    float *x = load("ivf_x", sx);
    const int D = (int)sx[1], N = 16, n_img = (int)(sx[0] / N);
    ds_model_info info = {0};
    strcpy(info.backbone_file, "w.safetensors");
    memset(info.backbone_sha256, '0', 64);
    strcpy(info.backbone_arch, "test");
    info.prep = ds_preprocess_defaults();
    info.prep.size = 56;
    info.n_layers = 1;
    info.grid_h = info.grid_w = 4;
    info.dim = D;
    info.n_train = n_img;
    info.map_sigma = DS_ANOMALY_MAP_SIGMA;
    const char *dir = test_env("DS_TMP", "/tmp");
    mkdir(dir, 0755);
    const float *te = x + 5 * N * D; /* an image of the training set, perturbed below */
    float img[16 * 64];
    for (int i = 0; i < N * D; i++) img[i] = te[i] + 0.05f * (float)((i * 7919) % 13 - 6) / 6.0f;
    for (int r = 0; r <= DS_BANK_IVFPQ; r++) {
        ds_scorer_params p = ds_scorer_defaults();
        p.coreset_ratio = 0.5;
        p.bank_repr = (ds_bank_repr)r;
        p.nprobe = 7;
        p.n_threads = 1;
        ds_scorer *s = NULL;
        ds_model *m = NULL;
        char path[1024], msg[160];
        snprintf(path, sizeof path, "%s/bank_roundtrip_%s.dsm", dir, ds_bank_repr_name((ds_bank_repr)r));
        int ok = ds_scorer_fit(DS_SCORER_PATCHBANK, &p, x, n_img, N, D, &s) == DS_OK;
        const ds_scorer *one[1] = {s};
        ok = ok && ds_model_save(path, &info, one, NULL, 1) == DS_OK && ds_model_load(path, &m) == DS_OK;
        float a1 = 0, a2 = -1, p1[16], p2[16];
        const ds_scorer *ls = ok ? ds_model_scorer(m, 0) : NULL;
        ok = ok && ds_scorer_score(s, img, N, 1, &a1, p1) == DS_OK && ds_scorer_score(ls, img, N, 1, &a2, p2) == DS_OK &&
             a1 == a2 && !memcmp(p1, p2, sizeof p1);
        const ds_nn_bank *lb = ds_scorer_bank(ls);
        ok = ok && ds_nn_bank_repr(lb) == (ds_bank_repr)r && ds_nn_bank_bytes(lb) == ds_nn_bank_bytes(ds_scorer_bank(s));
        if (r == DS_BANK_IVFPQ) {
            int np = 0;
            ds_nn_bank_ivf_info(lb, &np, NULL);
            ok = ok && np == 7;
        }
        /* format 1 unless a typed section is needed (f32 files stay readable by older dinoscope) */
        unsigned char hdr[12] = {0};
        FILE *f = fopen(path, "rb");
        if (f) {
            if (fread(hdr, 1, sizeof hdr, f) != sizeof hdr) ok = 0;
            fclose(f);
        }
        uint32_t ver;
        memcpy(&ver, hdr + 8, 4);
        ok = ok && ver == (r == DS_BANK_F32 ? 1u : 2u);
        snprintf(msg, sizeof msg, "a %s patchbank model file loads as %s and scores identically (format %u, %zu bank bytes)",
                 ds_bank_repr_name((ds_bank_repr)r), ds_bank_repr_name((ds_bank_repr)r), ver, ds_nn_bank_bytes(lb));
        test_cond(msg, ok);
        if (r == DS_BANK_IVFPQ && m) {
            int np = 0;
            ok = ds_model_set_nprobe(m, 3) == DS_OK;
            ds_nn_bank_ivf_info(ds_scorer_bank(ds_model_scorer(m, 0)), &np, NULL);
            test_cond("ds_model_set_nprobe changes a loaded ivfpq bank's nprobe", ok && np == 3);
        }
        if (r == DS_BANK_F32 && m) test_cond("ds_model_set_nprobe on a model without ivfpq is DS_ERR_ARG", ds_model_set_nprobe(m, 3) == DS_ERR_ARG);
        ds_model_free(m);
        ds_scorer_free(s);
        remove(path);
    }
    /* knn: ivfpq is refused, int8 works */
    ds_scorer_params p = ds_scorer_defaults();
    p.bank_repr = DS_BANK_IVFPQ;
    ds_scorer *s = NULL;
    test_cond("a knn scorer refuses an ivfpq bank", ds_scorer_fit(DS_SCORER_KNN, &p, x, n_img, N, D, &s) == DS_ERR_ARG && !s);
    p.bank_repr = DS_BANK_INT8;
    test_cond("a knn scorer fits an int8 bank", ds_scorer_fit(DS_SCORER_KNN, &p, x, n_img, N, D, &s) == DS_OK);
    ds_scorer_params back;
    test_cond("params_of recovers the int8 representation", ds_scorer_params_of(s, &back) == DS_OK && back.bank_repr == DS_BANK_INT8);
    ds_scorer_free(s);
    free(x);
}

/* Models written before compact banks: format 1, an f32 bank without a
 * "bank_repr" scalar (fixture copied from the fuzz corpus of that time), and
 * a bf16 bank stored as its rounded f32 values. */
static void test_old_models(void) {
    ds_model *m = NULL;
    int ok = ds_model_load(fixture("bank/old_v1_patchbank.dsm"), &m) == DS_OK;
    const ds_nn_bank *b = ok ? ds_scorer_bank(ds_model_scorer(m, 0)) : NULL;
    float sc = -1, feats[4 * 8] = {0};
    feats[0] = 1;
    ok = ok && b && ds_nn_bank_repr(b) == DS_BANK_F32 && ds_model_score_features(m, feats, 1, &sc, NULL, NULL) == DS_OK &&
         isfinite(sc);
    test_cond("a format-1 model with an f32 bank and no bank_repr loads as f32 and scores", ok);
    ds_model_free(m);
    /* the earlier bf16 form: f32 "bank" holding bf16-rounded values + bank_repr 1 */
    float bank[3 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0.6f, 0.8f, 0, 0};
    for (int i = 0; i < 12; i++) bank[i] = ds_round_bf16(bank[i]);
    ds_scorer_array arr[1] = {{.name = "bank", .n_dims = 2, .shape = {3, 4}, .data = bank}};
    ds_scorer_scalar scs[4] = {{"patch_k", 1}, {"metric", DS_METRIC_COSINE}, {"reduce", DS_REDUCE_MAX}, {"bank_repr", DS_BANK_BF16}};
    ds_scorer *s = NULL;
    float q[4] = {0.6f, 0.8f, 0, 0}, score = -1;
    ok = ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, arr, 1, &s) == DS_OK &&
         ds_nn_bank_repr(ds_scorer_bank(s)) == DS_BANK_BF16 && ds_scorer_score(s, q, 1, 1, &score, NULL) == DS_OK;
    printf("  legacy bf16 bank: score of a bank row %.3g\n", score);
    test_cond("the earlier bf16 form (f32 values + bank_repr 1) loads as bf16 and finds its own row (~0)",
              ok && fabsf(score) < 1e-2f);
    ds_scorer_free(s);
    /* malformed compact parts */
    int8_t codes[12] = {0};
    float scale[3] = {1, -1, 1};
    ds_scorer_array a8[2] = {{.name = "bank", .n_dims = 2, .shape = {3, 4}, .data = codes, .dtype = DS_ARRAY_I8},
                             {.name = "bank_scale", .n_dims = 1, .shape = {3, 0}, .data = scale}};
    scs[3].value = DS_BANK_INT8;
    s = NULL;
    test_cond("a negative int8 scale is DS_ERR_FORMAT",
              ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, a8, 2, &s) == DS_ERR_FORMAT && !s);
    test_cond("an int8 bank without its scales is DS_ERR_FORMAT",
              ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, a8, 1, &s) == DS_ERR_FORMAT);
    a8[0].dtype = DS_ARRAY_U16;
    scale[1] = 1;
    test_cond("an int8 bank of the wrong dtype is DS_ERR_FORMAT",
              ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, a8, 2, &s) == DS_ERR_FORMAT);
    arr[0].dtype = DS_ARRAY_U8;
    scs[3].value = DS_BANK_F32;
    test_cond("an f32 bank of dtype u8 is DS_ERR_FORMAT",
              ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, arr, 1, &s) == DS_ERR_FORMAT);
    /* ivfpq with offsets that do not cover the rows */
    float cent[2 * 4] = {0}, cb[2 * 8] = {0};
    uint8_t pc[3 * 2] = {0};
    int64_t offs[3] = {0, 1, 2};
    ds_scorer_array ai[4] = {{.name = "ivf_centroids", .n_dims = 2, .shape = {2, 4}, .data = cent},
                             {.name = "pq_codebook", .n_dims = 2, .shape = {2, 4}, .data = cb},
                             {.name = "pq_codes", .n_dims = 2, .shape = {3, 2}, .data = pc, .dtype = DS_ARRAY_U8},
                             {.name = "ivf_offsets", .n_dims = 1, .shape = {3, 0}, .data = offs, .dtype = DS_ARRAY_I64}};
    scs[3].value = DS_BANK_IVFPQ;
    test_cond("ivfpq offsets ending before the last row are DS_ERR_FORMAT",
              ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, ai, 4, &s) == DS_ERR_FORMAT);
    offs[2] = 3;
    ok = ds_scorer_from_parts(DS_SCORER_PATCHBANK, scs, 4, ai, 4, &s) == DS_OK;
    test_cond("... and with offsets 0,1,3 the same parts load", ok);
    ds_scorer_free(s);
}

int main(void) {
    test_f16_conversion();
    test_int8();
    test_f16_search();
    test_ivfpq();
    test_model_roundtrip();
    test_old_models();
    test_report();
}
