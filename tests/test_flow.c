/* The normalizing-flow scorer against the PyTorch float64 implementation of
 * the same architecture saved by tests/fixtures/make_flow_fixtures.py (see
 * its header): positional encoding, PCA whitening, forward pass and
 * log-determinants, the inverse, the gradient of every parameter, a whole
 * training run step by step; then the scorer object: fit, round trip through
 * its parts and a model file, and its errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "dinoscope/scorer.h"
#include "scorer/flow.h"
#include "test.h"

/* flow/<name>.npy; exits when it is missing (the fixtures are committed) */
static float *load(const char *name, int64_t *n_out) {
    char rel[256];
    size_t n = 0;
    snprintf(rel, sizeof rel, "flow/%s.npy", name);
    float *data = test_load_npy(rel, &n);
    if (!data) exit(1);
    if (n_out) *n_out = (int64_t)n;
    return data;
}

/* max |a-b| / max |b| (relative to the largest reference magnitude) */
static double rel_err(const float *a, const float *b, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double dd = fabs((double)a[i] - (double)b[i]);
        if (!(dd <= m)) m = dd;
        if (fabs((double)b[i]) > r) r = fabs((double)b[i]);
    }
    return m / (r > 0 ? r : 1);
}

static double rel_err_d(const double *a, const float *b, size_t n) {
    double m = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double dd = fabs(a[i] - (double)b[i]);
        if (!(dd <= m)) m = dd;
        if (fabs((double)b[i]) > r) r = fabs((double)b[i]);
    }
    return m / (r > 0 ? r : 1);
}

enum { D = 5, d = 4, P = 4, H = 6, L = 3, N = 9 };

static ds_scorer_params tiny_params(void) {
    ds_scorer_params p = ds_scorer_defaults();
    p.flow_dim = d, p.flow_pos_dim = P, p.flow_blocks = L, p.flow_hidden = H;
    p.flow_epochs = 3, p.flow_batch = 16, p.flow_lr = 1e-2;
    p.reduce = DS_REDUCE_MAX;
    p.metric = DS_METRIC_L2; /* the fixture's whitening is of the raw features */
    p.n_threads = 1;
    return p;
}

int main(void) {
    int64_t n;
    float *feats = load("feats", NULL), *wmean = load("wmean", NULL), *wproj = load("wproj", NULL);
    float *posenc_ref = load("posenc", NULL);

    /* ---- positional encoding and whitening */
    float posenc[N * P];
    ds_flow_posenc(P, 3, 3, posenc);
    test_cond("the positional encoding is CFlow-AD's positionalencoding2d (to 1e-6)",
              rel_err(posenc, posenc_ref, N * P) < 1e-6);
    float mean[D], proj[d * D];
    test_cond("PCA whitening of 72 patches fits", ds_flow_whiten_fit(feats, 8 * N, D, d, mean, proj) == DS_OK);
    test_cond("the whitening mean matches numpy (to 1e-6)", rel_err(mean, wmean, D) < 1e-6);
    test_cond("the whitening projection matches numpy eigh with the sign rule (to 1e-5)",
              rel_err(proj, wproj, d * D) < 1e-5);

    /* ---- one batch through the fixture's net */
    float *w1 = load("w1", NULL), *b1 = load("b1", NULL), *w2 = load("w2", NULL), *b2 = load("b2", NULL);
    float *mix = load("mix", NULL), *x0 = load("x0", NULL), *posf = load("pos", NULL);
    float *z_ref = load("z", NULL), *ld_ref = load("logdet", NULL), *nll_ref = load("nll", NULL);
    float *loss_ref = load("loss", NULL);
    const int B = 7;
    size_t np = ds_flow_n_params(d, P, H, L);
    test_cond("the tiny model has L*(H*(d/2+P) + H + d*H + d) parameters", np == (size_t)L * (H * 6 + H + 4 * H + 4));
    float *theta = malloc(np * sizeof(float)), *grad = malloc(np * sizeof(float));
    {
        size_t o = 0;
        memcpy(theta + o, w1, sizeof(float) * L * H * 6), o += L * H * 6;
        memcpy(theta + o, b1, sizeof(float) * L * H), o += L * H;
        memcpy(theta + o, w2, sizeof(float) * L * 4 * H), o += L * 4 * H;
        memcpy(theta + o, b2, sizeof(float) * L * 4);
    }
    ds_flow_net net = {.d = d, .P = P, .H = H, .L = L, .clamp = DS_FLOW_CLAMP, .mix = mix};
    ds_flow_net_bind(&net, theta);
    float cond[7 * P], z[7 * d], xinv[7 * d];
    int32_t pos[7];
    for (int i = 0; i < B; i++) {
        pos[i] = (int32_t)posf[i];
        memcpy(cond + i * P, posenc_ref + pos[i] * P, sizeof(float) * P);
    }
    double ld[7], nll[7];
    ds_flow_ws *ws = ds_flow_ws_create(&net, 16);
    double loss = ds_flow_forward(&net, ws, x0, cond, B, z, ld, nll);
    test_cond("the forward pass matches torch (z to 1e-5)", rel_err(z, z_ref, B * d) < 1e-5);
    test_cond("the log-determinants match torch (to 1e-5)", rel_err_d(ld, ld_ref, B) < 1e-5);
    test_cond("the nll per dimension matches torch (to 1e-5)", rel_err_d(nll, nll_ref, B) < 1e-5);
    test_cond("the batch loss matches torch (to 1e-6 relative)", fabs(loss - loss_ref[0]) < 1e-6 * fabs(loss_ref[0]));
    ds_flow_inverse(&net, ws, z_ref, cond, B, xinv);
    test_cond("the inverse maps torch's z back to the input (to 1e-5)", rel_err(xinv, x0, B * d) < 1e-5);

    ds_flow_forward(&net, ws, x0, cond, B, NULL, NULL, NULL);
    ds_flow_backward(&net, ws, grad);
    {
        const char *names[4] = {"g_w1", "g_b1", "g_w2", "g_b2"};
        size_t sizes[4] = {L * H * 6, L * H, L * 4 * H, L * 4}, o = 0;
        for (int t = 0; t < 4; t++) {
            float *g = load(names[t], NULL);
            char msg[128];
            double e = rel_err(grad + o, g, sizes[t]);
            snprintf(msg, sizeof msg, "the gradient of %s matches torch autograd to 1e-5 relative (%.1e)", names[t] + 2, e);
            test_cond(msg, e < 1e-5);
            o += sizes[t];
            free(g);
        }
    }
    /* the gradient is also the derivative: one central difference */
    {
        const float h = 1e-2f;
        float keep = theta[3];
        theta[3] = keep + h;
        double lp = ds_flow_forward(&net, ws, x0, cond, B, NULL, NULL, NULL);
        theta[3] = keep - h;
        double lm = ds_flow_forward(&net, ws, x0, cond, B, NULL, NULL, NULL);
        theta[3] = keep;
        ds_flow_forward(&net, ws, x0, cond, B, NULL, NULL, NULL);
        ds_flow_backward(&net, ws, grad);
        test_cond("a central difference agrees with the gradient (to 1e-3)",
                  fabs((lp - lm) / (2 * h) - grad[3]) < 1e-3 * fmax(1e-3, fabs(grad[3])) + 1e-4);
    }
    ds_flow_ws_free(ws);

    /* ---- scoring an image: whitening + flow */
    {
        float *tf = load("test_feats", NULL), *tn = load("test_nll", NULL), ps[2 * N];
        ds_status s0 = ds_flow_score(&net, D, 3, 3, DS_METRIC_L2, wmean, wproj, tf, N, 1, ps);
        ds_status s1 = ds_flow_score(&net, D, 3, 3, DS_METRIC_L2, wmean, wproj, tf + N * D, N, 1, ps + N);
        test_cond("ds_flow_score gives torch's patch nll of the whitened features (to 1e-5)",
                  s0 == DS_OK && s1 == DS_OK && rel_err(ps, tn, 2 * N) < 1e-5);
        free(tf);
        free(tn);
    }

    /* ---- a whole training run from the same weights and batches */
    {
        int64_t n_tr, n_va, n_steps, n_th;
        float *tz = load("tr_z", &n_tr), *tp = load("tr_pos", NULL), *vz = load("va_z", &n_va);
        float *vp = load("va_pos", NULL), *th0 = load("tr_theta0", &n_th), *sl = load("tr_step_loss", &n_steps);
        float *curve_ref = load("tr_curve", NULL), *th_ref = load("tr_theta", NULL);
        n_tr /= d, n_va /= d;
        int32_t *ptr = malloc(sizeof(int32_t) * (size_t)n_tr), *pva = malloc(sizeof(int32_t) * (size_t)n_va);
        for (int64_t i = 0; i < n_tr; i++) ptr[i] = (int32_t)tp[i];
        for (int64_t i = 0; i < n_va; i++) pva[i] = (int32_t)vp[i];
        double steps[64];
        test_cond("the fixture's run has 20 steps and as many weights as the net", n_steps == 20 && (size_t)n_th == np);
        float *th = malloc(np * sizeof(float));
        memcpy(th, th0, np * sizeof(float));
        ds_flow_net tnet = {.d = d, .P = P, .H = H, .L = L, .clamp = DS_FLOW_CLAMP, .mix = mix};
        ds_flow_train_opts o = {.batch = 16, .max_epochs = 4, .patience = 10, .lr = 1e-2, .seed = 7, .step_loss = steps};
        ds_flow_train_result res = {0};
        ds_status st = ds_flow_train(&tnet, th, tz, ptr, n_tr, vz, pva, n_va, posenc_ref, &o, &res);
        test_cond("ds_flow_train runs 4 epochs", st == DS_OK && res.epochs_run == 4);
        double worst = 0;
        for (int i = 0; i < 20 && st == DS_OK; i++) worst = fmax(worst, fabs(steps[i] - sl[i]) / fabs((double)sl[i]));
        char msg[160];
        snprintf(msg, sizeof msg, "each of the 20 step losses agrees with torch's Adam run to 1e-5 relative (worst %.1e)",
                 worst);
        test_cond(msg, st == DS_OK && worst < 1e-5);
        test_cond("the (train, val) curve before training and after each epoch agrees (to 1e-5)",
                  st == DS_OK && rel_err(res.curve, curve_ref, 10) < 1e-5);
        int best = 0;
        for (int e = 1; e <= 4; e++)
            if (curve_ref[2 * e + 1] < curve_ref[2 * best + 1]) best = e;
        test_cond("the kept epoch is the one with the lowest val nll", st == DS_OK && res.best_epoch == best);
        test_cond("the kept weights are torch's at that epoch (to 1e-4)", st == DS_OK && rel_err(th, th_ref, np) < 1e-4);
        /* early stopping: patience 1 with a learning rate that overshoots */
        memcpy(th, th0, np * sizeof(float));
        ds_flow_train_opts o2 = {.batch = 16, .max_epochs = 50, .patience = 1, .lr = 1e-2, .seed = 7};
        ds_flow_train_result r2 = {0};
        st = ds_flow_train(&tnet, th, tz, ptr, n_tr, vz, pva, n_va, posenc_ref, &o2, &r2);
        test_cond("with patience 1 training stops one epoch after the best held-out nll",
                  st == DS_OK && r2.epochs_run == r2.best_epoch + 1 && r2.epochs_run < 50);
        free(r2.curve);
        /* epochs of 32 rows: the first 32 of each epoch's order, 2 steps each */
        memcpy(th, th0, np * sizeof(float));
        double steps3[8];
        ds_flow_train_opts o3 = {.batch = 16, .max_epochs = 2, .patience = 10, .epoch_rows = 32, .lr = 1e-2, .seed = 7,
                                 .step_loss = steps3};
        ds_flow_train_result r3 = {0};
        st = ds_flow_train(&tnet, th, tz, ptr, n_tr, vz, pva, n_va, posenc_ref, &o3, &r3);
        test_cond("epochs of 32 rows take the first 2 batches of torch's order (losses to 1e-5)",
                  st == DS_OK && r3.epochs_run == 2 && fabs(steps3[0] - sl[0]) < 1e-5 * fabs(sl[0]) &&
                      fabs(steps3[1] - sl[1]) < 1e-5 * fabs(sl[1]) &&
                      fabs(r3.curve[2] - 0.5 * (steps3[0] + steps3[1])) < 1e-6);
        free(r3.curve);
        free(res.curve);
        free(tz), free(tp), free(vz), free(vp), free(th0), free(sl), free(curve_ref), free(th_ref), free(th);
        free(ptr), free(pva);
    }

    /* ---- the scorer object */
    ds_scorer_kind kind;
    test_cond("\"flow\" parses to DS_SCORER_FLOW and back",
              ds_scorer_kind_parse("flow", &kind) == DS_OK && kind == DS_SCORER_FLOW &&
                  strcmp(ds_scorer_kind_name(DS_SCORER_FLOW), "flow") == 0);
    ds_scorer_params p = tiny_params();
    ds_scorer *s = NULL;
    ds_status st = ds_scorer_fit(DS_SCORER_FLOW, &p, feats, 8, N, D, &s);
    test_cond("ds_scorer_fit fits a flow on 8 images of 3x3 patches", st == DS_OK && s);
    if (st != DS_OK) {
        printf("  %s\n", ds_last_error());
        test_report();
    }
    test_cond("the flow gives patch scores (maps)", ds_scorer_has_patch_scores(s) && ds_scorer_get_dim(s) == D);
    int have = 0;
    for (int i = 0; i < ds_scorer_n_arrays(s); i++) {
        ds_scorer_array a;
        ds_scorer_get_array(s, i, &a);
        if (!strcmp(a.name, "mean")) have += rel_err(a.data, wmean, D) < 1e-6;
        if (!strcmp(a.name, "proj")) have += a.shape[0] == d && rel_err(a.data, wproj, d * D) < 1e-5;
        if (!strcmp(a.name, "curve")) have += a.shape[0] == 4 && a.shape[1] == 2;
    }
    test_cond("its whitening is numpy's (all 8 images: no held-out ones) and its curve has epochs + 1 rows", have == 3);
    float *tf = load("test_feats", NULL), ps1[N], ps2[N], sc1, sc2;
    st = ds_scorer_score(s, tf + N * D, N, 1, &sc1, ps1);
    float m = ps1[0];
    for (int i = 1; i < N; i++) m = fmaxf(m, ps1[i]);
    test_cond("it scores an image: image score = max patch nll (reduce max)", st == DS_OK && sc1 == m);
    {
        float pbig[2 * N];
        test_cond("an image with another patch count is DS_ERR_SHAPE",
                  ds_scorer_score(s, feats, 8, 1, &sc2, pbig) == DS_ERR_SHAPE);
    }
    /* round trip through the parts */
    ds_scorer_array arrs[16];
    ds_scorer_scalar scal[32];
    int na = ds_scorer_n_arrays(s), ns = ds_scorer_n_scalars(s);
    for (int i = 0; i < na; i++) ds_scorer_get_array(s, i, &arrs[i]);
    for (int i = 0; i < ns; i++) ds_scorer_get_scalar(s, i, &scal[i]);
    ds_scorer *s2 = NULL;
    st = ds_scorer_from_parts(DS_SCORER_FLOW, scal, ns, arrs, na, &s2);
    test_cond("ds_scorer_from_parts rebuilds it", st == DS_OK);
    st = s2 ? ds_scorer_score(s2, tf + N * D, N, 1, &sc2, ps2) : DS_ERR_ARG;
    test_cond("the rebuilt flow gives identical scores", st == DS_OK && sc1 == sc2 && !memcmp(ps1, ps2, sizeof ps1));
    ds_scorer_params q;
    test_cond("ds_scorer_params_of gives back its dimensions and training settings",
              ds_scorer_params_of(s2, &q) == DS_OK && q.flow_dim == d && q.flow_blocks == L && q.flow_hidden == H &&
                  q.flow_pos_dim == P && q.flow_epochs == 3 && q.flow_batch == 16 && q.flow_lr == 1e-2 &&
                  q.reduce == DS_REDUCE_MAX && q.metric == DS_METRIC_L2);
    ds_scorer_free(s2);
    /* malformed parts */
    {
        ds_scorer_array a2[16];
        memcpy(a2, arrs, sizeof(ds_scorer_array) * (size_t)na);
        int imix = -1, iw1 = -1;
        for (int i = 0; i < na; i++) {
            if (!strcmp(a2[i].name, "mix")) imix = i;
            if (!strcmp(a2[i].name, "w1")) iw1 = i;
        }
        a2[imix] = a2[na - 1];
        s2 = NULL;
        test_cond("parts without 'mix' are DS_ERR_FORMAT",
                  ds_scorer_from_parts(DS_SCORER_FLOW, scal, ns, a2, na - 1, &s2) == DS_ERR_FORMAT && !s2);
        memcpy(a2, arrs, sizeof(ds_scorer_array) * (size_t)na);
        a2[iw1].shape[1] -= 1;
        test_cond("a 'w1' of the wrong shape is DS_ERR_FORMAT",
                  ds_scorer_from_parts(DS_SCORER_FLOW, scal, ns, a2, na, &s2) == DS_ERR_FORMAT);
        ds_scorer_scalar sc3[32];
        memcpy(sc3, scal, sizeof(ds_scorer_scalar) * (size_t)ns);
        sc3[ns] = (ds_scorer_scalar){.name = "temperature", .value = 1};
        test_cond("an unknown scalar is DS_ERR_FORMAT",
                  ds_scorer_from_parts(DS_SCORER_FLOW, sc3, ns + 1, arrs, na, &s2) == DS_ERR_FORMAT);
        for (int i = 0; i < ns; i++)
            if (!strcmp(sc3[i].name, "pos_dim")) sc3[i].value = 6;
        test_cond("a pos_dim that is not a multiple of 4 is DS_ERR_FORMAT",
                  ds_scorer_from_parts(DS_SCORER_FLOW, sc3, ns, arrs, na, &s2) == DS_ERR_FORMAT);
    }
    /* through a model file */
    {
        char path[512];
        snprintf(path, sizeof path, "%s/test_flow_%d.dsm", test_env("DS_TMP", "/tmp"), (int)getpid());
        ds_model_info info = {0};
        snprintf(info.backbone_file, sizeof info.backbone_file, "none");
        memset(info.backbone_sha256, 'a', 64);
        snprintf(info.backbone_arch, sizeof info.backbone_arch, "test");
        info.prep.size = 42, info.n_layers = 1, info.grid_h = 3, info.grid_w = 3, info.dim = D, info.n_train = 8;
        const ds_scorer *list[1] = {s};
        ds_model *mdl = NULL;
        char cmd[600];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", test_env("DS_TMP", "/tmp"));
        if (system(cmd) != 0) printf("  (mkdir failed)\n");
        st = ds_model_save(path, &info, list, NULL, 1);
        if (st == DS_OK) st = ds_model_load(path, &mdl);
        test_cond("a model file with a flow saves and loads", st == DS_OK);
        st = mdl ? ds_scorer_score(ds_model_scorer(mdl, 0), tf + N * D, N, 1, &sc2, ps2) : DS_ERR_ARG;
        test_cond("the loaded flow gives identical scores", st == DS_OK && sc1 == sc2 && !memcmp(ps1, ps2, sizeof ps1));
        test_cond("the model's metadata carries the training summary",
                  mdl && strstr(ds_model_meta_json(mdl), "\"best_epoch\"") && strstr(ds_model_meta_json(mdl), "\"train_nll\""));
        ds_model_free(mdl);
        remove(path);
    }
    ds_scorer_free(s);
    /* held-out images: 12 images, image 9 held out */
    {
        float *f12 = malloc(sizeof(float) * 12 * N * D);
        memcpy(f12, feats, sizeof(float) * 8 * N * D);
        memcpy(f12 + 8 * N * D, feats, sizeof(float) * 4 * N * D);
        s = NULL;
        st = ds_scorer_fit(DS_SCORER_FLOW, &p, f12, 12, N, D, &s);
        int has_val = 0, n11 = 0;
        for (int i = 0; st == DS_OK && i < ds_scorer_n_scalars(s); i++) {
            ds_scorer_scalar v;
            ds_scorer_get_scalar(s, i, &v);
            if (!strcmp(v.name, "val_nll")) has_val = isfinite(v.value);
            if (!strcmp(v.name, "n_train_patches")) n11 = v.value == 11 * N;
        }
        test_cond("with 12 images one is held out: val_nll is stored, 11 images train", st == DS_OK && has_val && n11);
        ds_scorer_free(s);
        free(f12);
    }
    /* cosine = l2 on L2-normalised features */
    {
        float *fn = malloc(sizeof(float) * 8 * N * D), *tn = malloc(sizeof(float) * N * D), pc[N], pl[N], ic, il;
        ds_l2_normalize_rows(feats, fn, 8 * N, D);
        ds_l2_normalize_rows(tf + N * D, tn, N, D);
        ds_scorer_params pc_ = tiny_params(), pl_ = tiny_params();
        pc_.metric = DS_METRIC_COSINE;
        ds_scorer *sc_ = NULL, *sl_ = NULL;
        st = ds_scorer_fit(DS_SCORER_FLOW, &pc_, feats, 8, N, D, &sc_);
        if (st == DS_OK) st = ds_scorer_fit(DS_SCORER_FLOW, &pl_, fn, 8, N, D, &sl_);
        if (st == DS_OK) st = ds_scorer_score(sc_, tf + N * D, N, 1, &ic, pc);
        if (st == DS_OK) st = ds_scorer_score(sl_, tn, N, 1, &il, pl);
        test_cond("metric cosine is the flow of the L2-normalised features (identical scores)",
                  st == DS_OK && ic == il && !memcmp(pc, pl, sizeof pc));
        ds_scorer_free(sc_);
        ds_scorer_free(sl_);
        free(fn);
        free(tn);
    }
    /* errors */
    s = NULL;
    test_cond("8 patches with grid_w 0 (not a square) is DS_ERR_ARG",
              ds_scorer_fit(DS_SCORER_FLOW, &p, feats, 9, 8, D, &s) == DS_ERR_ARG && !s);
    p.grid_w = 4;
    st = ds_scorer_fit(DS_SCORER_FLOW, &p, feats, 9, 8, D, &s);
    test_cond("... and fits with grid_w 4 (a 2x4 grid)", st == DS_OK);
    ds_scorer_free(s);
    s = NULL;
    p = tiny_params();
    p.flow_pos_dim = 6;
    test_cond("flow_pos_dim 6 is DS_ERR_ARG", ds_scorer_fit(DS_SCORER_FLOW, &p, feats, 8, N, D, &s) == DS_ERR_ARG);
    p = tiny_params();
    p.flow_lr = 0;
    test_cond("a learning rate of 0 is DS_ERR_ARG", ds_scorer_fit(DS_SCORER_FLOW, &p, feats, 8, N, D, &s) == DS_ERR_ARG);
    p = tiny_params();
    {
        float bad[8 * N * D];
        memcpy(bad, feats, sizeof bad);
        bad[17] = NAN;
        test_cond("NaN features are DS_ERR_ARG", ds_scorer_fit(DS_SCORER_FLOW, &p, bad, 8, N, D, &s) == DS_ERR_ARG);
    }
    free(tf);
    free(feats), free(wmean), free(wproj), free(posenc_ref);
    free(w1), free(b1), free(w2), free(b2), free(mix), free(x0), free(posf), free(z_ref), free(ld_ref), free(nll_ref);
    free(loss_ref), free(theta), free(grad);
    (void)n;
    test_report();
}
