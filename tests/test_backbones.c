/* Medical foundation backbones against their official code (tests/fixtures/
 * backbones, made by tests/fixtures/make_backbone_fixtures.py with timm,
 * open_clip and transformers' modelling classes on random weights): each
 * family loads from its native file with the config that ships next to it,
 * and its patch features (last 4 blocks through the final norm, averaged),
 * CLS token and, for Virchow2, the concat(CLS, mean patch) embedding equal
 * the reference to 1e-3 of their largest magnitude, at the native size and at
 * one that needs position-embedding interpolation by the family's rule. */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "dinoscope/backbone.h"
#include "dinoscope/image.h"
#include "dinoscope/model.h"
#include "dinoscope/npy.h"
#include "dinoscope/preprocess.h"
#include "dinoscope/scorer.h"
#include "test.h"
#include "test_json.h"

/* A binary file and its size (test_read_text gives no size). */
static char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    if (s && fread(s, 1, (size_t)len, fp) != (size_t)len) {
        free(s);
        s = NULL;
    }
    if (s) s[len] = 0;
    fclose(fp);
    if (n) *n = (size_t)len;
    return s;
}

static int write_all(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = fwrite(data, 1, n, fp);
    fclose(fp);
    return w == n ? 0 : -1;
}

/* Relative max error of out vs ref (max |diff| / max |ref|). */
static double rel_err(const float *out, const float *ref, size_t n) {
    double r, e = max_abs_diff(out, ref, n, &r);
    return r > 0 ? e / r : INFINITY;
}

/* Loads weights (a fixture path) with preset (NULL = none), runs every case
 * of the family and checks features, CLS and (if given) embeddings. */
static void check_family(const cJSON *fam, const cJSON *cases, const char *weights, const char *preset) {
    const char *name = jstr(fam, "name");
    char descr[512];
    ds_backbone *bb = NULL;
    char wpath[600];
    snprintf(wpath, sizeof wpath, "backbones/%s", weights);
    ds_status st = ds_backbone_load(fixture(wpath), &(ds_backbone_params){.n_threads = 2, .preset = preset}, &bb);
    snprintf(descr, sizeof descr, "%s: '%s'%s%s loads", name, weights, preset ? " with preset " : "", preset ? preset : "");
    if (st != DS_OK) printf("  %s\n", ds_last_error());
    test_cond(descr, st == DS_OK);
    if (st != DS_OK) return;
    printf("     describe: %s\n", ds_backbone_describe(bb));
    int gh, gw, D;
    int native = jint(fam, "native_size");
    ds_backbone_grid(bb, native, native, &gh, &gw, &D);
    float mean[3], std[3];
    ds_backbone_mean_std(bb, mean, std);
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(fam, "mean"), *js = cJSON_GetObjectItemCaseSensitive(fam, "std");
    bool norm_ok = true;
    for (int i = 0; i < 3; i++)
        norm_ok = norm_ok && fabs(mean[i] - cJSON_GetArrayItem(jm, i)->valuedouble) < 1e-6 &&
                  fabs(std[i] - cJSON_GetArrayItem(js, i)->valuedouble) < 1e-6;
    snprintf(descr, sizeof descr, "%s: D=%d, patch %d, the %s's input size and the model's mean/std", name,
             jint(fam, "embed_dim"), jint(fam, "patch_size"), preset ? "preset" : "config");
    test_cond(descr, D == jint(fam, "embed_dim") && ds_backbone_stride(bb) == jint(fam, "patch_size") &&
                         (preset ? ds_backbone_native_size(bb) == ds_backbone_preset_find(preset)->input_size
                                : ds_backbone_native_size(bb) == native) &&
                         norm_ok);
    if (preset) {
        snprintf(descr, sizeof descr, "%s: the description records preset=%s", name, preset);
        test_cond(descr, ds_backbone_preset_in(ds_backbone_describe(bb)) &&
                             !strcmp(ds_backbone_preset_in(ds_backbone_describe(bb)), preset));
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        int S = jint(c, "size");
        char p[600];
        size_t ni = 0, nf = 0, nc = 0, ne = 0;
        snprintf(p, sizeof p, "backbones/%s/%s", name, jstr(c, "input"));
        float *in = test_load_npy(p, &ni);
        snprintf(p, sizeof p, "backbones/%s/%s", name, jstr(c, "feats"));
        float *rf = test_load_npy(p, &nf);
        snprintf(p, sizeof p, "backbones/%s/%s", name, jstr(c, "cls"));
        float *rc = test_load_npy(p, &nc);
        float *re = NULL;
        if (jstr(c, "embed")[0]) {
            snprintf(p, sizeof p, "backbones/%s/%s", name, jstr(c, "embed"));
            re = test_load_npy(p, &ne);
        }
        int B = in ? (int)(ni / (3 * (size_t)S * S)) : 0;
        float *f = malloc(sizeof(float) * (nf ? nf : 1)), *cl = malloc(sizeof(float) * (nc ? nc : 1));
        double ef = INFINITY, ec = INFINITY, ee = 0;
        if (in && rf && rc && ds_backbone_forward(bb, in, B, S, S, jint(fam, "n_layers"), f, cl) == DS_OK) {
            ef = rel_err(f, rf, nf);
            ec = rel_err(cl, rc, nc);
        } else {
            printf("  %s\n", ds_last_error());
        }
        if (re && preset) {
            float *e = malloc(sizeof(float) * ne);
            ee = ds_backbone_embed_dim(bb) * (size_t)B == ne && ds_backbone_embed(bb, in, B, S, S, e) == DS_OK
                     ? rel_err(e, re, ne)
                     : INFINITY;
            free(e);
        }
        printf("     %s %dx%d B=%d: rel err feats %.3g, cls %.3g%s", name, S, S, B, ef, ec, re && preset ? "" : "\n");
        if (re && preset) printf(", embed %.3g\n", ee);
        snprintf(descr, sizeof descr, "%s at %dx%d%s: patch features and CLS%s equal the reference to 1e-3 of max |ref|",
                 weights, S, S, S == native ? "" : " (interpolated positions)", re && preset ? " and embedding" : "");
        test_cond(descr, ef < 1e-3 && ec < 1e-3 && ee < 1e-3);
        free(in);
        free(rf);
        free(rc);
        free(re);
        free(f);
        free(cl);
    }
    ds_backbone_free(bb);
}

static const char *tmpdir(const char *sub) {
    static char d[1024];
    snprintf(d, sizeof d, "%s", test_env("DS_TMP", "/tmp"));
    mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/%s", test_env("DS_TMP", "/tmp"), sub);
    mkdir(d, 0755);
    return d;
}

/* Copies fixture src to dir/name with the first `from` replaced by `to`
 * (same length) when given. Returns 0 on success. */
static int copy_fixture(const char *src, const char *dir, const char *name, const char *from, const char *to) {
    size_t n;
    char *buf = read_all(fixture(src), &n);
    if (!buf) return -1;
    if (from) {
        char *f = NULL;
        for (size_t i = 0; i + strlen(from) <= n && !f; i++)
            if (!memcmp(buf + i, from, strlen(from))) f = buf + i;
        if (!f || strlen(from) != strlen(to)) {
            free(buf);
            return -1;
        }
        memcpy(f, to, strlen(to));
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = write_all(path, buf, n);
    free(buf);
    return rc;
}

static const char *load_error(const char *path, const char *preset) {
    static char msg[1024];
    ds_backbone *bb = NULL;
    msg[0] = 0;
    if (ds_backbone_load(path, &(ds_backbone_params){.n_threads = 1, .preset = preset}, &bb) != DS_OK)
        snprintf(msg, sizeof msg, "%s", ds_last_error());
    ds_backbone_free(bb);
    printf("     -> %s\n", msg[0] ? msg : "(loaded)");
    return msg;
}

static bool one_line(const char *m) { return m[0] && !strchr(m, '\n'); }

static void wrong_files(void) {
    char path[1200];
    const char *e = load_error(fixture("backbones/uni/pytorch_model.bin"), "uni3");
    test_cond("an unknown preset is refused in one line that lists the known ones",
              one_line(e) && strstr(e, "unknown preset 'uni3'") && strstr(e, "virchow2"));
    e = load_error(fixture("cnn/resnet_basic.safetensors"), "uni");
    test_cond("a ViT preset on a CNN file is refused in one line", one_line(e) && strstr(e, "holds no ViT"));

    /* Virchow2's 48-wide fixture without its config.json: its heads cannot be read from the tensors */
    const char *d = tmpdir("bb_noconfig");
    snprintf(path, sizeof path, "%s/pytorch_model.bin", d);
    copy_fixture("backbones/virchow2/pytorch_model.bin", d, "pytorch_model.bin", NULL, NULL);
    e = load_error(path, NULL);
    test_cond("a ViT whose head count the tensors cannot tell, without config or preset, is refused in one line",
              one_line(e) && strstr(e, "number of attention heads"));

    /* a config that describes another width */
    d = tmpdir("bb_badconfig");
    copy_fixture("backbones/uni/pytorch_model.bin", d, "pytorch_model.bin", NULL, NULL);
    copy_fixture("backbones/uni/config.json", d, "config.json", "\"embed_dim\": 32", "\"embed_dim\": 99");
    snprintf(path, sizeof path, "%s/pytorch_model.bin", d);
    e = load_error(path, NULL);
    test_cond("a config.json that describes another width than the weights is refused in one line",
              one_line(e) && strstr(e, "describes D=99") && strstr(e, "D=32"));
    snprintf(path, sizeof path, "%s/config.json", d);
    write_all(path, "{\"architecture\": ", 17);
    snprintf(path, sizeof path, "%s/pytorch_model.bin", d);
    e = load_error(path, NULL);
    test_cond("a config.json that is not JSON is refused in one line naming it",
              one_line(e) && strstr(e, "config.json") && strstr(e, "not valid JSON"));

    /* a renamed tensor inside a timm SwiGLU block (safetensors header edit) */
    d = tmpdir("bb_renamed");
    copy_fixture("backbones/h-optimus-0/config.json", d, "config.json", NULL, NULL);
    copy_fixture("backbones/h-optimus-0/model.safetensors", d, "model.safetensors", "blocks.1.mlp.fc1_x.weight",
                 "blocks.1.mlp.fc1_y.weight");
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    e = load_error(path, NULL);
    test_cond("a timm SwiGLU block with a renamed half is refused in one line naming the missing tensor",
              one_line(e) && strstr(e, "missing tensor 'blocks.1.mlp.fc1_x.weight'"));

    /* an extra tensor inside the open_clip trunk is refused, outside (text tower) ignored */
    d = tmpdir("bb_trunk");
    copy_fixture("backbones/phikon/config.json", d, "config.json", NULL, NULL);
    copy_fixture("backbones/phikon/model.safetensors", d, "model.safetensors", "encoder.layer.2.output.dense.bias",
                 "encoder.layer.2.output.dense.bia5");
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    e = load_error(path, NULL);
    test_cond("an HF ViT with a renamed tensor is refused in one line", one_line(e) &&
                                                                          strstr(e, "encoder.layer.2.output.dense.bia"));
}

/* A model fitted on a preset backbone records the preset and its
 * normalisation; scoring refuses the same file loaded without it and works
 * with the preset read back from the model. */
static void model_identity(void) {
    const char *w = fixture("backbones/h-optimus-0/model.safetensors");
    ds_backbone *bb = NULL, *plain = NULL, *again = NULL;
    ds_model *m = NULL;
    ds_scorer *sc = NULL;
    ds_image *img = ds_image_create(40, 30, 3);
    int S = 56, gh, gw, D;
    bool ok = ds_backbone_load(w, &(ds_backbone_params){.n_threads = 2, .preset = "h-optimus-0"}, &bb) == DS_OK &&
              ds_backbone_load(w, &(ds_backbone_params){.n_threads = 2}, &plain) == DS_OK && img &&
              ds_backbone_grid(bb, S, S, &gh, &gw, &D) == DS_OK;
    for (int i = 0; img && i < 40 * 30 * 3; i++) img->pixels[i] = (uint8_t)(i * 37 % 251);
    float *in = malloc(sizeof(float) * 3 * S * S), *f = malloc(sizeof(float) * (size_t)gh * gw * D);
    if (ok) {
        ds_image *r = NULL;
        ds_preprocess_params pp = ds_preprocess_defaults();
        pp.size = S;
        ok = ds_preprocess_image(img, &pp, &r) == DS_OK;
        if (ok) ds_backbone_normalize(bb, r, in);
        ds_image_free(r);
        ds_scorer_params sp = ds_scorer_defaults();
        sp.k = 1;
        ok = ok && ds_backbone_forward(bb, in, 1, S, S, 4, f, NULL) == DS_OK &&
             ds_scorer_fit(DS_SCORER_KNN, &sp, f, 1, (int64_t)gh * gw, D, &sc) == DS_OK;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/preset_model.dsm", tmpdir("bb_model"));
    ds_model_info info = {0};
    if (ok) {
        snprintf(info.backbone_arch, sizeof info.backbone_arch, "%s", ds_backbone_describe(bb));
        info.prep = ds_preprocess_defaults();
        info.prep.size = S;
        info.n_layers = 4, info.grid_h = gh, info.grid_w = gw, info.dim = D, info.n_train = 1;
        ok = ds_model_save(path, &info, (const ds_scorer *const *)&sc, NULL, 1) == DS_OK && ds_model_load(path, &m) == DS_OK;
    }
    if (!ok) printf("  %s\n", ds_last_error());
    const char *arch = m ? ds_model_get_info(m)->backbone_arch : "";
    printf("     stored: %s\n", arch);
    test_cond("a model file stores the whole backbone identity: family, preset, mean/std",
              ok && !strcmp(arch, ds_backbone_describe(bb)) && strstr(arch, "preset=h-optimus-0") &&
                  strstr(arch, "mean=0.707223,0.578729,0.703617 std=0.211883,0.230117,0.177517"));
    float score = 0;
    const ds_image *imgs[1] = {img};
    ds_status st = m ? ds_model_score_images(m, plain, imgs, 1, 1, 2, &score, -1, NULL) : DS_ERR_ARG;
    printf("     without the preset: %s\n", ds_last_error());
    test_cond("scoring with the backbone loaded without the model's preset is refused (DS_ERR_MISMATCH)",
              st == DS_ERR_MISMATCH);
    const char *preset = ds_backbone_preset_in(arch);
    st = preset ? ds_backbone_load(w, &(ds_backbone_params){.n_threads = 2, .preset = preset}, &again) : DS_ERR_ARG;
    st = st == DS_OK ? ds_model_score_images(m, again, imgs, 1, 1, 2, &score, -1, NULL) : st;
    printf("     with preset '%s' read back: score %.6g\n", preset ? preset : "(none)", (double)score);
    test_cond("the preset read back from the model loads the same backbone, which scores its own training image ~0",
              st == DS_OK && fabsf(score) < 1e-4f);
    free(in);
    free(f);
    ds_scorer_free(sc);
    ds_model_free(m);
    ds_image_free(img);
    ds_backbone_free(bb);
    ds_backbone_free(plain);
    ds_backbone_free(again);
}

int main(void) {
    char *json = test_read_text(fixture("backbones/manifest.json"));
    if (!json) test_skip("tests/fixtures/backbones/manifest.json missing (run tests/fixtures/make_backbone_fixtures.py)");
    cJSON *m = cJSON_Parse(json);
    const cJSON *fam;
    cJSON_ArrayForEach(fam, cJSON_GetObjectItemCaseSensitive(m, "families")) {
        const char *name = jstr(fam, "name");
        printf("%s (%s)\n", name, jstr(fam, "family"));
        /* from the native file and the config next to it, then with the preset */
        const cJSON *cases = cJSON_GetObjectItemCaseSensitive(fam, "cases");
        check_family(fam, cases, jstr(fam, "weights"), NULL);
        check_family(fam, cases, jstr(fam, "weights"), name);
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(fam, "official");
        if (off)
            /* RAD-DINO's backbone_compatible file, official names: as torch.hub's
             * dinov2 code runs it (offset-0.1 interpolation) */
            check_family(fam, cJSON_GetObjectItemCaseSensitive(off, "cases"), jstr(off, "weights"), NULL);
    }
    cJSON_Delete(m);
    free(json);
    wrong_files();
    model_identity();
    test_report();
}
