/* DINOv2 forward pass against PyTorch references (tests/fixtures/vit, made
 * by tests/fixtures/make_vit_fixtures.py from a reimplementation of the
 * official facebookresearch/dinov2 model). Tolerance: 1e-3 of the largest
 * feature magnitude, as the issue states. */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "dinoscope/npy.h"
#include "dinoscope/vit.h"
#include "dinoscope/weights.h"
#include "test.h"
#include "test_json.h"

/* Runs one model file on one case; returns max error relative to the largest
 * reference magnitude (feats and cls), or +inf on failure. Also writes the
 * raw outputs for the batch consistency check. */
static double run_case(const char *model, const float *input, int B, int H, int W, int n_layers, const float *ref_f,
                       const float *ref_c, size_t nf, size_t nc, const cJSON *arch, float **out_f) {
    ds_weights *w = NULL;
    ds_vit *vit = NULL;
    double err = INFINITY;
    if (ds_weights_load(fixture(model), &w) != DS_OK || ds_vit_create(w, &(ds_vit_params){.n_threads = 2}, &vit) != DS_OK) {
        printf("  %s: %s\n", model, ds_last_error());
        goto done;
    }
    const ds_vit_arch *a = ds_vit_get_arch(vit);
    if (arch && (a->embed_dim != jint(arch, "embed_dim") || a->depth != jint(arch, "depth") ||
                 a->n_heads != jint(arch, "n_heads") || a->n_registers != jint(arch, "n_registers") ||
                 a->swiglu != jint(arch, "swiglu") || a->pos_grid != jint(arch, "pos_grid"))) {
        printf("  %s: inferred architecture differs from the manifest\n", model);
        goto done;
    }
    float *f = malloc(sizeof(float) * nf), *c = malloc(sizeof(float) * nc);
    if (ds_vit_forward(vit, input, B, H, W, n_layers, f, c) == DS_OK) {
        double rf, rc;
        double ef = max_abs_diff(f, ref_f, nf, &rf), ec = max_abs_diff(c, ref_c, nc, &rc);
        err = (ef / rf > ec / rc ? ef / rf : ec / rc);
        if (ef > 3e-5 || ec > 3e-5) err = INFINITY; /* see below */
        printf("  %s %dx%d B=%d n=%d: max|diff| feats %.3g (max|ref| %.3g), cls %.3g\n", model, H, W, B, n_layers, ef,
               rf, ec);
    } else {
        printf("  %s: %s\n", model, ds_last_error());
    }
    free(c);
    if (out_f) *out_f = f;
    else free(f);
done:
    ds_vit_free(vit);
    ds_weights_free(w);
    return err;
}

/* Reads the fixture file at name into a buffer; *n gets its size. */
static char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = malloc(*n);
    if (b && fread(b, 1, *n, fp) != *n) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    return b;
}

/* Copies plain.safetensors with the first `from` after `key` in the JSON
 * header replaced by `to` (same length, so offsets stay valid), and returns
 * the error of building a ViT from it ("" if it was accepted). */
static const char *vit_error_with(const char *key, const char *from, const char *to) {
    static char msg[1024];
    size_t n;
    char *buf = read_all(fixture("vit/plain.safetensors"), &n);
    char *k = buf ? strstr(buf + 8, key) : NULL;
    char *f = k ? strstr(k, from) : NULL;
    snprintf(msg, sizeof msg, "(could not make the file)");
    if (!f || strlen(from) != strlen(to)) {
        free(buf);
        return msg;
    }
    memcpy(f, to, strlen(to));
    char path[1024];
    snprintf(path, sizeof path, "%s/vit_mutated.safetensors", test_env("DS_TMP", "/tmp"));
    mkdir(test_env("DS_TMP", "/tmp"), 0755); /* may already exist */
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite(buf, 1, n, fp);
        fclose(fp);
    }
    free(buf);
    ds_weights *w = NULL;
    ds_vit *vit = NULL;
    msg[0] = 0;
    if (ds_weights_load(path, &w) != DS_OK || ds_vit_create(w, NULL, &vit) != DS_OK)
        snprintf(msg, sizeof msg, "%s", ds_last_error());
    ds_vit_free(vit);
    ds_weights_free(w);
    return msg;
}

static void malformed_models(void) {
    const char *e = vit_error_with("\"patch_embed.proj.weight\"", "[128,3,14,14]", "[128,42,1,14]");
    printf("  %s\n", e);
    test_cond("a patch embedding of the wrong shape is refused, naming it", strstr(e, "patch embedding") != NULL);
    e = vit_error_with("\"blocks.1.attn.proj.weight\"", "[128,128]", "[1024,16]");
    printf("  %s\n", e);
    test_cond("a misshapen block tensor is refused with its name, shape and the expected shape",
              strstr(e, "'blocks.1.attn.proj.weight' has shape [1024,16], expected [128,128]") != NULL);
    e = vit_error_with("\"blocks.3.norm1.weight\"", "norm1.weight", "norm1.weighX");
    printf("  %s\n", e);
    test_cond("a block without its norm1 (a renamed tensor) is refused, not silently dropped",
              strstr(e, "not part of") != NULL);
    e = vit_error_with("\"blocks.2.mlp.fc2.weight\"", "fc2.weight", "fc9.weight");
    printf("  %s\n", e);
    test_cond("a missing FFN tensor is refused with its name and expected shape",
              strstr(e, "missing tensor 'blocks.2.mlp.fc2.weight'") != NULL);
}

int main(void) {
    malformed_models();
    char *json = test_read_text(fixture("vit/manifest.json"));
    if (!json) test_skip("tests/fixtures/vit/manifest.json missing (run tests/fixtures/make_vit_fixtures.py)");
    cJSON *man = cJSON_Parse(json);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(man, "cases");
    if (!cJSON_IsArray(cases)) cases = man;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cases) {
        const char *model = cJSON_GetObjectItemCaseSensitive(cs, "model")->valuestring;
        char name[256];
        int B = jint(cs, "B"), H = jint(cs, "H"), W = jint(cs, "W"), nl = jint(cs, "n_layers");
        size_t ni = 0, nf = 0, nc = 0;
        char path[300];
        snprintf(path, sizeof path, "vit/%s", cJSON_GetObjectItemCaseSensitive(cs, "input")->valuestring);
        float *input = test_load_npy(path, &ni);
        snprintf(path, sizeof path, "vit/%s", cJSON_GetObjectItemCaseSensitive(cs, "feats")->valuestring);
        float *rf = test_load_npy(path, &nf);
        snprintf(path, sizeof path, "vit/%s", cJSON_GetObjectItemCaseSensitive(cs, "cls")->valuestring);
        float *rc = test_load_npy(path, &nc);
        if (!input || !rf || !rc) {
            test_cond("fixture arrays of the case load", 0);
            continue;
        }
        const cJSON *arch = cJSON_GetObjectItemCaseSensitive(cs, "arch");
        snprintf(path, sizeof path, "vit/%s", model);
        float *f1 = NULL;
        double err = run_case(path, input, B, H, W, nl, rf, rc, nf, nc, arch, &f1);
        /* The issue asks for 1e-3 of the largest magnitude; we also hold every
         * value to 3e-5 absolute (torch's own f32 error is ~7e-6), which a
         * tanh GELU (7.7e-4) or LayerNorm eps 1e-5 (4.2e-5) would break. */
        snprintf(name, sizeof name, "%s at %dx%d (B=%d, last %d layers) matches PyTorch to 1e-3 of max |feature| and 3e-5 absolute", model,
                 H, W, B, nl);
        test_cond(name, err < 1e-3);
        const cJSON *eq;
        cJSON_ArrayForEach(eq, cJSON_GetObjectItemCaseSensitive(cs, "also_equal")) {
            snprintf(path, sizeof path, "vit/%s", eq->valuestring);
            float *f2 = NULL;
            double e2 = run_case(path, input, B, H, W, nl, rf, rc, nf, nc, arch, &f2);
            snprintf(name, sizeof name, "%s gives the features of %s (to 1e-3, and identical floats)", eq->valuestring,
                     model);
            test_cond(name, e2 < 1e-3 && f1 && f2 && !memcmp(f1, f2, sizeof(float) * nf));
            free(f2);
        }
        if (B > 1 && f1) {
            /* batch consistency: each image alone gives exactly the batched rows */
            size_t per_in = ni / (size_t)B, per_f = nf / (size_t)B, per_c = nc / (size_t)B;
            bool same = true;
            for (int b = 0; b < B; b++) {
                float *fb = NULL;
                double e = run_case(path, input + b * per_in, 1, H, W, nl, rf + b * per_f, rc + b * per_c, per_f, per_c,
                                    NULL, &fb);
                snprintf(path, sizeof path, "vit/%s", model);
                same = same && e < 1e-3 && fb && !memcmp(fb, f1 + b * per_f, sizeof(float) * per_f);
                free(fb);
            }
            snprintf(name, sizeof name, "%s: a batch of %d equals %d single runs exactly", model, B, B);
            test_cond(name, same);
        }
        free(f1);
        free(input);
        free(rf);
        free(rc);
    }
    cJSON_Delete(man);
    free(json);
    test_report();
}
