/* The dinoscope command end to end: extract against PyTorch (PIL resize +
 * torchvision normalisation + the official model, fixtures from
 * tests/fixtures/make_vit_fixtures.py), fit/score/info round trips on the
 * synthetic demo set, and the errors users meet: bad images, bad weights,
 * bad sizes, corrupt/truncated/mismatched model files. Every failure must be
 * one line on stderr, a non-zero exit, and no output file left behind. */
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dinoscope/npy.h"
#include "test.h"

#pragma GCC diagnostic ignored "-Wformat-truncation" /* paths are short; a cut one fails the check */

static char cli[1024], tmp[900];

/* Runs "<cli> args" with stderr to tmp/err.txt; returns the exit status. */
static int run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/out.txt 2>%s/err.txt", cli, args, tmp, tmp);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* stderr of the last run is exactly one non-empty line mentioning needle */
static bool one_line_error(const char *needle) {
    char path[1200], buf[4096] = {0};
    snprintf(path, sizeof path, "%s/err.txt", tmp);
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += buf[i] == '\n';
    if (lines != 1 || !strstr(buf, needle)) {
        printf("  stderr was: %s", buf);
        return false;
    }
    return true;
}

static double npy_max_diff(const char *a, const char *b, size_t *count) {
    float *x = NULL, *y = NULL;
    int nx, ny;
    int64_t sx[DS_NPY_MAX_DIMS], sy[DS_NPY_MAX_DIMS];
    double d = INFINITY;
    if (ds_npy_read_f32(a, &x, &nx, sx) == DS_OK && ds_npy_read_f32(b, &y, &ny, sy) == DS_OK && nx == ny) {
        size_t n = 1;
        bool same = true;
        for (int i = 0; i < nx; i++) same = same && sx[i] == sy[i], n *= (size_t)sx[i];
        if (same) d = max_abs_diff(x, y, n, NULL), *count = n;
    }
    free(x);
    free(y);
    return d;
}

/* stdout of the last run() holds needle */
static bool out_has(const char *needle) {
    char path[1200];
    snprintf(path, sizeof path, "%s/out.txt", tmp);
    char *text = test_read_text(path);
    bool ok = text && strstr(text, needle);
    free(text);
    return ok;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fwrite(data, 1, n, fp);
        fclose(fp);
    }
}

/* Copies src to dst, keeping only the first keep bytes (keep < 0: all) and
 * xor-ing byte flip_at with 0xff (flip_at < 0: none). */
static void copy_mangled(const char *src, const char *dst, long keep, long flip_at) {
    FILE *fp = fopen(src, "rb");
    if (!fp) return;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) n = 0;
    fclose(fp);
    if (flip_at >= 0 && flip_at < n) buf[flip_at] ^= 0xff;
    write_file(dst, buf, keep >= 0 && keep < n ? (size_t)keep : (size_t)n);
    free(buf);
}

int main(void) {
    snprintf(cli, sizeof cli, "%s", test_env("DS_CLI", "build/dinoscope"));
    snprintf(tmp, sizeof tmp, "%s/test_cli", test_env("DS_TMP", "/tmp"));
    if (access(cli, X_OK) != 0) test_skip("no dinoscope binary (DS_CLI)");
    char cmd[8192], p[1200], q[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    if (system(cmd) != 0) test_skip("cannot create DS_TMP");
    char vit[1024]; /* fixture() returns rotating static buffers: keep a copy */
    snprintf(vit, sizeof vit, "%s", fixture("vit/plain.safetensors"));

    /* --- extract ----------------------------------------------------------- */
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --out %s/f.npy %s", vit, tmp, fixture("vit/extract_in.png"));
    test_cond("extract of one PNG succeeds", run(cmd) == 0);
    snprintf(p, sizeof p, "%s/f.npy", tmp);
    size_t n = 0;
    double d = npy_max_diff(p, fixture("vit/extract_plain_112_feats.npy"), &n);
    printf("  extract vs PyTorch (PIL resize + torchvision normalise + model): max |diff| %.3g over %zu values\n", d, n);
    test_cond("extract's features equal PIL + torchvision + PyTorch DINOv2 to 1e-4", d < 1e-4);
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --cls --out %s/c.npy %s", vit, tmp, fixture("vit/extract_in.png"));
    snprintf(p, sizeof p, "%s/c.npy", tmp);
    test_cond("extract --cls equals PyTorch's normed CLS token to 1e-4",
              run(cmd) == 0 && npy_max_diff(p, fixture("vit/extract_plain_112_cls.npy"), &n) < 1e-4);

    snprintf(q, sizeof q, "%s/bad.npy", tmp);
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 100 --out %s %s", vit, q, fixture("vit/extract_in.png"));
    test_cond("extract --size 100 (not a multiple of 14) fails with one line and no output",
              run(cmd) == 1 && one_line_error("multiple") && !exists(q));
    snprintf(p, sizeof p, "%s/corrupt.png", tmp);
    write_file(p, "\x89PNG\r\n\x1a\n garbage", 16);
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --out %s %s %s", vit, q, fixture("vit/extract_in.png"), p);
    test_cond("a corrupt image among good ones fails naming it, with no output file",
              run(cmd) == 1 && one_line_error("corrupt.png") && !exists(q));
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --skip-bad --out %s %s %s", vit, q,
             fixture("vit/extract_in.png"), p);
    test_cond("--skip-bad skips it, writes the rest and exits with status 3", run(cmd) == 3 && exists(q));
    snprintf(p, sizeof p, "%s/trunc.safetensors", tmp);
    copy_mangled(vit, p, 100000, -1);
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --out %s/t.npy %s", p, tmp, fixture("vit/extract_in.png"));
    test_cond("truncated weights fail with one line naming the file", run(cmd) == 1 && one_line_error("trunc.safetensors"));
    snprintf(cmd, sizeof cmd, "extract --weights %s --size 112 --out %s/t.npy %s", fixture("image/load/rgba.png"), tmp,
             fixture("vit/extract_in.png"));
    test_cond("an image given as weights fails with one line", run(cmd) == 1 && one_line_error("rgba.png"));

    /* --- fit / score / info on the synthetic demo set ------------------------ */
    char demo[1000], model[1000];
    snprintf(demo, sizeof demo, "%s/demo", tmp);
    snprintf(model, sizeof model, "%s/m.dsm", tmp);
    char maker[1100];
    snprintf(maker, sizeof maker, "%s", cli);
    char *slash = strrchr(maker, '/');
    if (slash) strcpy(slash + 1, "ds_make_demo_data");
    snprintf(cmd, sizeof cmd, "'%s' '%s' 20 6 6 >/dev/null 2>&1", maker, demo);
    if (system(cmd) != 0) test_skip("ds_make_demo_data failed");
    snprintf(cmd, sizeof cmd, "fit --backbone %s --size 112 --coreset 0.5 --out %s %s/labels.csv", vit, model, demo);
    test_cond("fit on a labels.csv succeeds", run(cmd) == 0 && exists(model));
    snprintf(cmd, sizeof cmd, "info %s", model);
    test_cond("info prints the model's metadata", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "score --model %s --out %s/s.csv --maps %s/maps --recursive %s/test", model, tmp, tmp, demo);
    snprintf(p, sizeof p, "%s/maps/blob_000_overlay.png", tmp);
    snprintf(q, sizeof q, "%s/maps/blob_000.npy", tmp);
    test_cond("score writes scores, raw maps and overlays", run(cmd) == 0 && exists(p) && exists(q));
    float *map = NULL;
    int nd = 0;
    int64_t shp[DS_NPY_MAX_DIMS] = {0};
    test_cond("a raw map is float32 [H, W] at the image's size (128x128)",
              ds_npy_read_f32(q, &map, &nd, shp) == DS_OK && nd == 2 && shp[0] == 128 && shp[1] == 128);
    free(map);

    /* the model file distrusts itself */
    snprintf(p, sizeof p, "%s/trunc.dsm", tmp);
    copy_mangled(model, p, 3000, -1);
    snprintf(cmd, sizeof cmd, "score --model %s --recursive %s/test", p, demo);
    test_cond("a truncated model file is refused with one line", run(cmd) == 1 && one_line_error("trunc"));
    snprintf(p, sizeof p, "%s/flip.dsm", tmp);
    copy_mangled(model, p, -1, 2000);
    snprintf(cmd, sizeof cmd, "score --model %s --recursive %s/test", p, demo);
    test_cond("a flipped byte is caught by a section checksum", run(cmd) == 1 && one_line_error("checksum"));
    snprintf(p, sizeof p, "%s/magic.dsm", tmp);
    copy_mangled(model, p, -1, 0);
    snprintf(cmd, sizeof cmd, "info %s", p);
    test_cond("a bad magic is 'not a dinoscope model'", run(cmd) == 1 && one_line_error("not a dinoscope model"));
    snprintf(p, sizeof p, "%s/newer.dsm", tmp);
    copy_mangled(model, p, -1, 8); /* version 1 -> 0xfe */
    snprintf(cmd, sizeof cmd, "info %s", p);
    test_cond("a newer format version is refused", run(cmd) == 1 && one_line_error("format version"));

    /* the bf16 compute path: fit records it, score loads the backbone the same way */
    snprintf(cmd, sizeof cmd, "fit --backbone %s --dtype bf16 --size 112 --scorer knn --out %s/bf16.dsm %s/labels.csv", vit,
             tmp, demo);
    test_cond("fit --dtype bf16 succeeds", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "info %s/bf16.dsm", tmp);
    test_cond("the model records the bf16 compute path", run(cmd) == 0 && out_has("dtype=bf16"));
    snprintf(cmd, sizeof cmd, "score --model %s/bf16.dsm --recursive %s/test", tmp, demo);
    test_cond("score of a bf16 model uses the bf16 backbone", run(cmd) == 0);

    /* the flow scorer through fit's --flow-* options */
    snprintf(cmd, sizeof cmd, "fit --backbone %s --size 112 --scorer flow --flow-epochs 2 --flow-epoch-patches 2000 "
             "--flow-dim 16 --out %s/flow.dsm %s/labels.csv", vit, tmp, demo);
    test_cond("fit --scorer flow with --flow-* options succeeds", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "info %s/flow.dsm", tmp);
    test_cond("the flow model records its settings", run(cmd) == 0 && out_has("\"flow\""));

    /* a preset backbone (UNI-shaped timm fixture): fit records the preset, score reads it back */
    char uni_model[1100];
    snprintf(uni_model, sizeof uni_model, "%s/uni.dsm", tmp);
    snprintf(cmd, sizeof cmd, "fit --backbone %s --preset uni --size 64 --scorer knn --out %s %s/labels.csv",
             fixture("backbones/uni/pytorch_model.bin"), uni_model, demo);
    test_cond("fit --preset uni on a timm UNI file succeeds", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "info %s", uni_model);
    test_cond("the model records the preset in its backbone identity", run(cmd) == 0 && out_has("preset=uni"));
    snprintf(cmd, sizeof cmd, "score --model %s --recursive %s/test", uni_model, demo);
    test_cond("score loads the backbone with the model's preset", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "fit --backbone %s --preset nope --out %s/x.dsm %s/labels.csv", vit, tmp, demo);
    test_cond("an unknown --preset is one error line", run(cmd) == 1 && one_line_error("nope"));

    /* a different backbone file than the one fitted with */
    snprintf(cmd, sizeof cmd, "score --model %s --backbone %s --recursive %s/test", model, fixture("vit/plain_hf_f16.safetensors"),
             demo);
    test_cond("a backbone whose sha256 differs is refused", run(cmd) == 1 && one_line_error("force-backbone"));
    snprintf(cmd, sizeof cmd, "score --model %s --backbone %s --force-backbone --out %s/s2.csv --recursive %s/test", model,
             fixture("vit/plain_hf_f16.safetensors"), tmp, demo);
    test_cond("--force-backbone accepts it (same values, other file)", run(cmd) == 0);
    snprintf(cmd, sizeof cmd, "score --model %s --backbone %s --force-backbone --recursive %s/test", model,
             fixture("vit/reg_swiglu.safetensors"), demo);
    test_cond("a backbone of another architecture is refused even with --force-backbone",
              run(cmd) == 1 && one_line_error("fitted on"));
    test_report();
}
