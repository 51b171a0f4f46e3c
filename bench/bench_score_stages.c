/* Where the time of one `dinoscope score` goes, stage by stage, for models
 * fitted in f32 and in bf16 (issue 13: "the end-to-end score of one 518
 * image with ViT-S and a 10% coreset bank: report ms per stage").
 *
 *   bench_score_stages [--rounds R] [--threads T] IMAGE MODEL...
 *
 * Each MODEL is opened as `score` opens it (its backbone file, the preset
 * and dtype its recorded architecture names, ds_model_check_backbone);
 * then, after one warm-up, R rounds run every model once each, in a
 * rotated order so that all see the same machine load, through the stages
 * of src/cli/cmd_score.c + src/model/pipeline.c:
 *   decode      ds_image_load of IMAGE
 *   preprocess  ds_preprocess_image (the model's size and stain settings)
 *               + ds_backbone_normalize
 *   backbone    ds_backbone_forward (the model's layers)
 *   scoring     ds_model_score_features (every scorer, with patch scores)
 *   map         ds_model_anomaly_map of the map scorer at IMAGE's size
 * Prints the median ms per stage and model, and each model's median ratio
 * to the first model's, per stage (from the per-round ratios). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dinoscope/backbone.h"
#include "dinoscope/image.h"
#include "dinoscope/model.h"
#include "dinoscope/preprocess.h"

enum { N_STAGES = 5, MAX_MODELS = 4, MAX_ROUNDS = 64 };
static const char *STAGES[N_STAGES] = {"decode", "preprocess", "backbone", "scoring", "map"};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    const char *path;
    ds_model *m;
    ds_backbone *bb;
    float *x, *feats, *patch, *map, scores[DS_MODEL_MAX_SCORERS];
} bench_model;

static int open_model(bench_model *b, int threads) {
    if (ds_model_load(b->path, &b->m) != DS_OK) return 1;
    const ds_model_info *in = ds_model_get_info(b->m);
    ds_backbone_params bp = {.n_threads = threads, .preset = ds_backbone_preset_in(in->backbone_arch),
                             .dtype = strstr(in->backbone_arch, " dtype=bf16") ? DS_DTYPE_BF16 : DS_DTYPE_F32};
    if (ds_backbone_load(in->backbone_file, &bp, &b->bb) != DS_OK || ds_model_check_backbone(b->m, b->bb) != DS_OK)
        return 1;
    size_t S = (size_t)in->prep.size, N = (size_t)in->grid_h * in->grid_w;
    b->x = malloc(sizeof(float) * 3 * S * S);
    b->feats = malloc(sizeof(float) * N * in->dim);
    b->patch = calloc((size_t)ds_model_n_scorers(b->m) * N, sizeof(float));
    return !b->x || !b->feats || !b->patch;
}

/* One score of image path with model b: ms per stage into t. */
static int run_once(bench_model *b, const char *path, int threads, double t[N_STAGES]) {
    const ds_model_info *in = ds_model_get_info(b->m);
    ds_image *img = NULL, *prep = NULL;
    double t0 = now_ms();
    if (ds_image_load(path, NULL, &img) != DS_OK) return 1;
    double t1 = now_ms();
    if (ds_preprocess_image(img, &in->prep, &prep) != DS_OK) return 1;
    ds_backbone_normalize(b->bb, prep, b->x);
    double t2 = now_ms();
    if (ds_backbone_forward(b->bb, b->x, 1, in->prep.size, in->prep.size, in->n_layers, b->feats, NULL) != DS_OK)
        return 1;
    double t3 = now_ms();
    if (ds_model_score_features(b->m, b->feats, threads, b->scores, b->patch, NULL) != DS_OK) return 1;
    double t4 = now_ms();
    int k = ds_model_map_scorer(b->m);
    if (k >= 0) {
        if (!b->map) b->map = malloc(sizeof(float) * img->width * img->height);
        if (ds_model_anomaly_map(b->m, b->patch + (size_t)k * in->grid_h * in->grid_w, img->width, img->height,
                                 b->map) != DS_OK)
            return 1;
    }
    double t5 = now_ms();
    t[0] = t1 - t0, t[1] = t2 - t1, t[2] = t3 - t2, t[3] = t4 - t3, t[4] = t5 - t4;
    ds_image_free(img);
    ds_image_free(prep);
    return 0;
}

int main(int argc, char **argv) {
    int rounds = 5, threads = 2, a = 1;
    for (; a < argc && argv[a][0] == '-'; a += 2) {
        if (a + 1 >= argc) break;
        if (!strcmp(argv[a], "--rounds")) rounds = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--threads")) threads = atoi(argv[a + 1]);
        else break;
    }
    if (argc - a < 2 || argc - a - 1 > MAX_MODELS || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_score_stages [--rounds R (1..%d)] [--threads T] IMAGE MODEL... (1..%d models)\n",
                MAX_ROUNDS, MAX_MODELS);
        return 2;
    }
    const char *image = argv[a];
    int n = argc - a - 1;
    if (ds_image_init() != DS_OK) return fprintf(stderr, "%s\n", ds_last_error()), 1;
    static bench_model b[MAX_MODELS];
    static double t[MAX_MODELS][MAX_ROUNDS][N_STAGES];
    for (int i = 0; i < n; i++) {
        b[i].path = argv[a + 1 + i];
        if (open_model(&b[i], threads)) return fprintf(stderr, "%s: %s\n", b[i].path, ds_last_error()), 1;
        const ds_model_info *in = ds_model_get_info(b[i].m);
        printf("model %d: %s\n  %s, input %d, grid %dx%dx%d, %d scorer(s)\n", i, b[i].path, in->backbone_arch,
               in->prep.size, in->grid_h, in->grid_w, in->dim, ds_model_n_scorers(b[i].m));
        double w[N_STAGES];
        if (run_once(&b[i], image, threads, w)) return fprintf(stderr, "%s: %s\n", image, ds_last_error()), 1;
    }
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < n; j++) {
            int i = (r + j) % n;
            if (run_once(&b[i], image, threads, t[i][r])) return fprintf(stderr, "%s: %s\n", image, ds_last_error()), 1;
        }
    printf("\nms per stage, median of %d rounds (image %s, %d threads):\n\n| stage |", rounds, image, threads);
    for (int i = 0; i < n; i++) printf(" model %d ms |", i);
    for (int i = 1; i < n; i++) printf(" model %d / model 0 |", i);
    printf("\n|---|");
    for (int i = 0; i < 2 * n - 1; i++) printf("---|");
    printf("\n");
    for (int s = 0; s <= N_STAGES; s++) { /* the last row: the total */
        printf("| %s |", s < N_STAGES ? STAGES[s] : "total");
        double v[MAX_ROUNDS];
        for (int i = 0; i < n; i++) {
            for (int r = 0; r < rounds; r++) {
                v[r] = 0;
                for (int q = 0; q < N_STAGES; q++)
                    if (q == s || s == N_STAGES) v[r] += t[i][r][q];
            }
            printf(" %.1f |", median(v, rounds));
        }
        for (int i = 1; i < n; i++) {
            for (int r = 0; r < rounds; r++) {
                double x = 0, y = 0;
                for (int q = 0; q < N_STAGES; q++)
                    if (q == s || s == N_STAGES) x += t[i][r][q], y += t[0][r][q];
                v[r] = y > 0 ? x / y : 0;
            }
            printf(" %.2f |", median(v, rounds));
        }
        printf("\n");
    }
    for (int i = 0; i < n; i++) {
        ds_backbone_free(b[i].bb);
        ds_model_free(b[i].m);
        free(b[i].x), free(b[i].feats), free(b[i].patch), free(b[i].map);
    }
    return 0;
}
