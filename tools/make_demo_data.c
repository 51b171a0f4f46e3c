/* Writes a small synthetic anomaly-detection data set in the layout of
 * ../shared/data (labels.csv with filename,split,label,maskfile): grey
 * "tissue" textures (sums of random low-frequency waves plus noise) as
 * normals, the same with a bright or dark blob as anomalies, with masks.
 * Deterministic. Used by scripts/demo.sh so the demo runs on what the repo
 * ships.   usage: ds_make_demo_data OUT_DIR [N_TRAIN N_TEST_NORMAL N_TEST_ANOMALY] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "dinoscope/image.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64* */
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static int make(const char *dir, const char *sub, const char *name, int anomalous, FILE *csv, const char *split) {
    enum { S = 128 };
    ds_image *img = ds_image_create(S, S, 3), *mask = anomalous ? ds_image_create(S, S, 3) : NULL;
    double fx[6], fy[6], ph[6];
    for (int k = 0; k < 6; k++) fx[k] = 0.05 + 0.25 * urand(), fy[k] = 0.05 + 0.25 * urand(), ph[k] = 6.283 * urand();
    double cx = 24 + 80 * urand(), cy = 24 + 80 * urand(), r = 8 + 10 * urand(), sign = urand() < 0.5 ? -1 : 1;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double v = 128;
            for (int k = 0; k < 6; k++) v += 12 * sin(fx[k] * x + fy[k] * y + ph[k]);
            v += 10 * (urand() - 0.5);
            int in = anomalous && (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
            if (in) v += sign * 70 + 25 * sin(0.9 * x) * sin(0.9 * y);
            uint8_t g = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            for (int c = 0; c < 3; c++) img->pixels[(y * S + x) * 3 + c] = g;
            if (mask)
                for (int c = 0; c < 3; c++) mask->pixels[(y * S + x) * 3 + c] = in ? 255 : 0;
        }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s.png", dir, sub, name);
    int rc = ds_image_save_png(path, img) != DS_OK;
    if (mask) {
        snprintf(path, sizeof path, "%s/masks/%s_mask.png", dir, name);
        rc |= ds_image_save_png(path, mask) != DS_OK;
        fprintf(csv, "%s/%s.png,%s,1,masks/%s_mask.png\n", sub, name, split, name);
    } else {
        fprintf(csv, "%s/%s.png,%s,0,\n", sub, name, split);
    }
    ds_image_free(img);
    ds_image_free(mask);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 5) {
        fprintf(stderr, "usage: %s OUT_DIR [N_TRAIN N_TEST_NORMAL N_TEST_ANOMALY]\n", argv[0]);
        return 2;
    }
    int n[3] = {40, 15, 15};
    if (argc == 5)
        for (int i = 0; i < 3; i++) n[i] = atoi(argv[2 + i]);
    if (ds_image_init() != DS_OK) return 1;
    const char *dir = argv[1];
    char p[1024];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1; *q; q++) /* mkdir -p of the parents */
        if (*q == '/') *q = 0, mkdir(p, 0755), *q = '/';
    const char *subs[] = {"", "/train", "/train/normal", "/test", "/test/normal", "/test/anomaly", "/masks"};
    for (int i = 0; i < 7; i++) {
        snprintf(p, sizeof p, "%s%s", dir, subs[i]);
        mkdir(p, 0755);
    }
    snprintf(p, sizeof p, "%s/labels.csv", dir);
    FILE *csv = fopen(p, "w");
    if (!csv) {
        perror(p);
        return 1;
    }
    fprintf(csv, "filename,split,label,maskfile\n");
    int rc = 0;
    char name[64];
    for (int i = 0; i < n[0]; i++) snprintf(name, sizeof name, "train_%03d", i), rc |= make(dir, "train/normal", name, 0, csv, "train");
    for (int i = 0; i < n[1]; i++) snprintf(name, sizeof name, "good_%03d", i), rc |= make(dir, "test/normal", name, 0, csv, "test");
    for (int i = 0; i < n[2]; i++) snprintf(name, sizeof name, "blob_%03d", i), rc |= make(dir, "test/anomaly", name, 1, csv, "test");
    fclose(csv);
    if (rc) fprintf(stderr, "ds_make_demo_data: %s\n", ds_last_error());
    return rc;
}
