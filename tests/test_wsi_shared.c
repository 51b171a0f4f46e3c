/* `dinoscope slide` end to end on slides built here from real H&E tiles
 * (../shared/data/lc25000_colon; skipped when absent): normal colon tiles
 * around a known block of adenocarcinoma tiles, a model fitted through the
 * CLI on other normal tiles with the shipped MobileNetV2. The anomalous
 * region must overlap the block (IoU printed), a run killed midway and
 * resumed must write byte-identical outputs, border tiles are padded, and
 * each bad input is one clear error. About 35 s in Release on 2 cores. */
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wsi_test_util.h"


static int run_cli(const char *args, const char *log) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", test_env("DS_CLI", ""), args, log);
    int rc = system(cmd);
    if (rc == -1) return -1;
    if (WIFSIGNALED(rc)) return 128 + WTERMSIG(rc);
    int code = WEXITSTATUS(rc);
    return code; /* the shell reports a killed child as 128 + signal */
}

static bool log_has(const char *log, const char *needle) {
    char *s = test_read_text(log);
    bool ok = s && strstr(s, needle);
    if (!ok) printf("     log %s:\n%s\n", log, s ? s : "(none)");
    free(s);
    return ok;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted .png names of a folder (at most max). */
static int list_png(const char *dir, char **names, int max) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max)
        if (strstr(e->d_name, ".png")) names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    return n;
}

/* Mosaic geometry (level-0 px): 8x8 cells of 224 px at (OX, OY) on an
 * off-white 2300x2150 slide (no side a multiple of the tile or the stride),
 * adenocarcinoma in cells [3,6) x [2,5). */
enum { CELL = 224, NC = 8, OX = 224, OY = 224, SLW = 2300, SLH = 2150, BX0 = 3, BX1 = 6, BY0 = 2, BY1 = 5 };

static int make_mosaic(const char *colon, const char *path) {
    char *normal[100], *tumour[200];
    char nd[1200], td[1200];
    snprintf(nd, sizeof nd, "%s/test/normal", colon);
    snprintf(td, sizeof td, "%s/test/anomaly", colon);
    int nn = list_png(nd, normal, 100), nt = list_png(td, tumour, 200);
    if (nn < NC * NC - 9 || nt < 9) return -1;
    VipsImage *cells[NC * NC];
    int in = 0, it = 0, rc = 0;
    for (int cy = 0; cy < NC; cy++)
        for (int cx = 0; cx < NC; cx++) {
            bool tum = cx >= BX0 && cx < BX1 && cy >= BY0 && cy < BY1;
            char p[2048];
            snprintf(p, sizeof p, "%s/%s", tum ? td : nd, tum ? tumour[it++] : normal[in++]);
            cells[cy * NC + cx] = vips_image_new_from_file(p, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
            if (!cells[cy * NC + cx]) rc = -1;
        }
    VipsImage *mos = NULL, *slide = NULL, *rgb = NULL;
    double bg[3] = {242, 240, 245};
    if (!rc) rc = vips_arrayjoin(cells, &mos, NC * NC, "across", NC, NULL);
    if (!rc) rc = vips_embed(mos, &slide, OX, OY, SLW, SLH, "extend", VIPS_EXTEND_BACKGROUND, "background",
                             vips_array_double_new(bg, 3), NULL);
    if (!rc) rc = vips_cast_uchar(slide, &rgb, NULL);
    if (!rc) rc = save_slide(rgb, path, 0.5, 256);
    for (int i = 0; i < NC * NC; i++)
        if (cells[i]) g_object_unref(cells[i]);
    if (mos) g_object_unref(mos);
    if (slide) g_object_unref(slide);
    if (rgb) g_object_unref(rgb);
    for (int i = 0; i < nn; i++) free(normal[i]);
    for (int i = 0; i < nt; i++) free(tumour[i]);
    return rc;
}

/* Heatmap TIFF page 0 into a new float array. */
static float *load_heatmap(const char *path, int *w, int *h) {
    VipsImage *im = vips_image_new_from_file(path, NULL);
    if (!im) return NULL;
    size_t n;
    float *data = NULL;
    if (vips_image_get_format(im) == VIPS_FORMAT_FLOAT && vips_image_get_bands(im) == 1) {
        data = vips_image_write_to_memory(im, &n);
        *w = vips_image_get_width(im);
        *h = vips_image_get_height(im);
    }
    g_object_unref(im);
    return data;
}

static int slide_run(const char *model, const char *opts, const char *out, const char *slide, const char *log) {
    char args[12288];
    snprintf(args, sizeof args, "slide --model '%s' %s --out '%s' '%s'", model, opts, out, slide);
    return run_cli(args, log);
}

/* slide_run with the CLI's test hook: stop after N checkpointed batches by
 * SIGKILL ("N") or another signal ("N:INT"). */
static int slide_run_stopped(const char *model, const char *opts, const char *out, const char *slide, const char *log,
                             const char *stop) {
    setenv("DINOSCOPE_TEST_KILL_AFTER_BATCHES", stop, 1);
    int rc = slide_run(model, opts, out, slide, log);
    unsetenv("DINOSCOPE_TEST_KILL_AFTER_BATCHES");
    return rc;
}

/* How many of the n files names[] are byte-identical in folders a and b;
 * prints the ones that differ. */
static int n_same_files(const char *a, const char *b, const char *const *names, int n) {
    int n_same = 0;
    for (int i = 0; i < n; i++) {
        bool same = same_files(path_in(a, names[i]), path_in(b, names[i]));
        if (!same) printf("     %s differs\n", names[i]);
        n_same += same;
    }
    return n_same;
}

static void test_cli(const char *colon, const char *weights) {
    struct stat sb;
    char args[12288], log[2048], model[1024], slide[1024];
    snprintf(model, sizeof model, "%s/colon.dsm", tmp);
    snprintf(slide, sizeof slide, "%s/mosaic.tif", tmp);
    /* fit on the training normals; the mosaic uses the test split only */
    snprintf(args, sizeof args,
             "fit --backbone '%s' --size 224 --scorer gaussian,patchbank --batch 16 --out '%s' '%s/train/normal'", weights,
             model, colon);
    snprintf(log, sizeof log, "%s/fit.log", tmp);
    double t0 = g_get_monotonic_time() * 1e-6;
    int rc = run_cli(args, log);
    printf("     fit: %.1f s\n", g_get_monotonic_time() * 1e-6 - t0);
    test_cond("fit on the 160 training normal colon tiles with MobileNetV2 at 224 succeeds", rc == 0);
    if (rc) {
        log_has(log, "");
        return;
    }
    test_cond("the mosaic slide (normal test tiles around a 3x3 block of adenocarcinoma) is built",
              make_mosaic(colon, slide) == 0);

    /* ---- localisation. Tiles on the mosaic's cells: a tile straddling two
     * cells holds an artificial seam no training tile has, which every scorer
     * finds anomalous (measured: gaussian scores ~28 on seam tiles against
     * ~10 on normal cells), so this check uses overlap 0 with tiles = cells. */
    char aligned[1024], d_al[2048];
    snprintf(aligned, sizeof aligned, "%s/aligned", tmp);
    snprintf(d_al, sizeof d_al, "%s/mosaic", aligned);
    snprintf(log, sizeof log, "%s/aligned.log", tmp);
    t0 = g_get_monotonic_time() * 1e-6;
    rc = slide_run(model, "--scorer gaussian --tile 224 --overlap 0 --batch 16", aligned, slide, log);
    printf("     aligned run: %.1f s\n", g_get_monotonic_time() * 1e-6 - t0);
    test_cond("slide: a run succeeds and reports tiles/s", rc == 0 && log_has(log, "tiles/s"));
    char *sj = test_read_text(path_in(d_al, "summary.json"));
    cJSON *s = sj ? cJSON_Parse(sj) : NULL;
    int hw = 0, hh = 0;
    float *heat = load_heatmap(path_in(d_al, "heatmap.tif"), &hw, &hh);
    test_cond("slide: summary.json and the float heatmap.tif are readable", s && heat);
    if (!s || !heat) {
        free(sj);
        cJSON_Delete(s);
        free(heat);
        return;
    }
    double thr = cJSON_GetObjectItem(s, "threshold")->valuedouble;
    int step = cJSON_GetObjectItem(s, "heatmap_step_px")->valueint;
    test_cond("slide: level 0 by default, recorded; the heatmap has one pixel per 16 px of it",
              cJSON_GetObjectItem(s, "level")->valueint == 0 &&
                  !strcmp(cJSON_GetObjectItem(s, "level_choice")->valuestring, "default (level 0)") && step == 16 &&
                  hw == (SLW + 15) / 16 && hh == (SLH + 15) / 16);
    test_cond("slide: tiles without tissue (the margin) are not scored",
              cJSON_GetObjectItem(s, "tiles_scored")->valueint == NC * NC &&
                  cJSON_GetObjectItem(s, "tiles_grid")->valueint == 11 * 10);
    int64_t inter = 0, uni = 0, n_pred = 0, n_true = 0;
    for (int cy = 0; cy < hh; cy++)
        for (int cx = 0; cx < hw; cx++) {
            double x = (cx + 0.5) * step, y = (cy + 0.5) * step;
            bool tissue = x >= OX && x < OX + NC * CELL && y >= OY && y < OY + NC * CELL;
            bool truth = x >= OX + BX0 * CELL && x < OX + BX1 * CELL && y >= OY + BY0 * CELL && y < OY + BY1 * CELL;
            bool pred = tissue && heat[(size_t)cy * hw + cx] >= thr;
            inter += truth && pred;
            uni += truth || pred;
            n_pred += pred;
            n_true += truth;
        }
    double iou = uni ? (double)inter / (double)uni : 0;
    printf("     IoU of the heatmap >= the model's threshold (%.4f) with the adenocarcinoma block: %.3f "
           "(%lld cells flagged, %lld in the block, %lld both)\n",
           thr, iou, (long long)n_pred, (long long)n_true, (long long)inter);
    /* measured 0.60: the 9 block cells and 6 of the 55 normal ones; 0.5 allows
     * 9 false cells with the block found, where 15 random cells of 64 would
     * give about 0.10 */
    test_cond("slide: the anomalous region overlaps the adenocarcinoma block (IoU >= 0.5)", iou >= 0.5);
    test_cond("slide: most of the block is flagged (recall >= 0.8)", n_true && (double)inter / (double)n_true >= 0.8);

    /* GeoJSON: QuPath annotations; one region holds the block's centre */
    char *gj = test_read_text(path_in(d_al, "anomalies.geojson"));
    cJSON *g = gj ? cJSON_Parse(gj) : NULL;
    cJSON *feats = g ? cJSON_GetObjectItem(g, "features") : NULL;
    bool props_ok = g && !strcmp(cJSON_GetObjectItem(g, "type")->valuestring, "FeatureCollection") &&
                    cJSON_GetArraySize(feats) >= 1 &&
                    cJSON_GetArraySize(feats) == cJSON_GetObjectItem(s, "anomalous_regions")->valueint;
    bool centre_in = false;
    double max_in_block = 0;
    cJSON *f;
    cJSON_ArrayForEach(f, feats) {
        cJSON *pr = cJSON_GetObjectItem(f, "properties"), *geo = cJSON_GetObjectItem(f, "geometry");
        cJSON *cls = cJSON_GetObjectItem(pr, "classification"), *ms = cJSON_GetObjectItem(pr, "measurements");
        props_ok = props_ok && !strcmp(cJSON_GetObjectItem(pr, "objectType")->valuestring, "annotation") &&
                   !strcmp(cJSON_GetObjectItem(cls, "name")->valuestring, "Anomaly") &&
                   cJSON_GetObjectItem(ms, "Max score") && cJSON_GetObjectItem(ms, "Mean score") &&
                   cJSON_GetObjectItem(ms, "Area \xc2\xb5m^2") &&
                   !strcmp(cJSON_GetObjectItem(geo, "type")->valuestring, "Polygon");
        cJSON *rings = cJSON_GetObjectItem(geo, "coordinates");
        /* a point inside the central tumour cell, away from its lumens */
        for (int dy = 0; dy < 5; dy++) {
            double px = OX + 4.5 * CELL + 8, py = OY + 3.2 * CELL + dy * 20.0;
            bool in = point_in_ring(cJSON_GetArrayItem(rings, 0), px, py);
            for (int k = 1; k < cJSON_GetArraySize(rings); k++)
                in = in && !point_in_ring(cJSON_GetArrayItem(rings, k), px, py);
            if (in) {
                centre_in = true;
                max_in_block = cJSON_GetObjectItem(ms, "Max score")->valuedouble;
            }
        }
    }
    test_cond("slide: anomalies.geojson is a FeatureCollection of QuPath annotations (objectType annotation, class "
              "Anomaly, max/mean score, area in um^2), one per region",
              props_ok);
    test_cond("slide: a region contains the middle of the block (level-0 coordinates), its max score >= the threshold",
              centre_in && max_in_block >= thr);
    free(gj);
    cJSON_Delete(g);
    free(sj);
    cJSON_Delete(s);
    free(heat);

    /* ---- killed and resumed: level 1 by --mpp 1.0 (1150x1075), tiles of 256
     * with the default overlap 0.5 and patchbank maps; the last tile column
     * and row stick out of the level and are padded */
    char full[1024], res[1024], d_full[2048], d_res[2048];
    const char *opts = "--mpp 1.0 --tile 256 --batch 8";
    snprintf(full, sizeof full, "%s/full", tmp);
    snprintf(res, sizeof res, "%s/resumed", tmp);
    snprintf(d_full, sizeof d_full, "%s/mosaic", full);
    snprintf(d_res, sizeof d_res, "%s/mosaic", res);
    snprintf(log, sizeof log, "%s/full.log", tmp);
    t0 = g_get_monotonic_time() * 1e-6;
    rc = slide_run(model, opts, full, slide, log);
    printf("     level-1 run: %.1f s\n", g_get_monotonic_time() * 1e-6 - t0);
    test_cond("slide: an uninterrupted run at --mpp 1.0 succeeds", rc == 0);
    snprintf(args, sizeof args, "%s", opts);
    snprintf(log, sizeof log, "%s/killed.log", tmp);
    rc = slide_run_stopped(model, args, res, slide, log, "3");
    test_cond("slide: a run killed after 3 batches (SIGKILL from inside, as kill -9) dies by it", rc == 128 + 9);
    struct stat ck;
    test_cond("slide: the killed run left a checkpoint and no outputs",
              stat(path_in(d_res, "checkpoint.bin"), &ck) == 0 && ck.st_size > 0 &&
                  stat(path_in(d_res, "heatmap.tif"), &sb) != 0 && stat(path_in(d_res, "tiles.csv"), &sb) != 0);
    /* the tail a write cut short by the kill could leave */
    FILE *fp = fopen(path_in(d_res, "checkpoint.bin"), "ab");
    if (fp) {
        fputs("DSRB torn record", fp);
        fclose(fp);
    }
    snprintf(args, sizeof args, "%s --resume", opts);
    snprintf(log, sizeof log, "%s/resume.log", tmp);
    rc = slide_run(model, args, res, slide, log);
    test_cond("slide: --resume finishes, taking 24 tiles (3 batches) from the checkpoint",
              rc == 0 && log_has(log, "24 from the checkpoint"));
    test_cond("slide: --resume drops the torn record and says so", log_has(log, "incomplete"));
    const char *outs[] = {"heatmap.tif", "heatmap_rgb.tif", "overview.png", "anomalies.geojson", "tiles.csv", "summary.json"};
    int n_same = n_same_files(d_full, d_res, outs, 6);
    test_cond("slide: the killed + resumed run's outputs are byte-identical to the uninterrupted run's (6 files)",
              n_same == 6);
    /* Ctrl-C instead of kill -9: the cleanup handlers remove the temp files
     * of the outputs in progress, and the checkpoint stays resumable */
    char intr[1024], d_int[2048];
    snprintf(intr, sizeof intr, "%s/interrupted", tmp);
    snprintf(d_int, sizeof d_int, "%s/mosaic", intr);
    snprintf(log, sizeof log, "%s/sigint.log", tmp);
    rc = slide_run_stopped(model, opts, intr, slide, log, "3:INT");
    test_cond("slide: a run interrupted by SIGINT after 3 batches dies by it (status 130)", rc == 128 + 2);
    char find_cmd[4200];
    snprintf(find_cmd, sizeof find_cmd, "test -z \"$(find '%s' -name '*.tmp.*' -o -name '.heatmap.*')\"", d_int);
    test_cond("slide: the interrupted run left its checkpoint, no output and no temp file",
              stat(path_in(d_int, "checkpoint.bin"), &ck) == 0 && ck.st_size > 0 &&
                  stat(path_in(d_int, "heatmap.tif"), &sb) != 0 && stat(path_in(d_int, "summary.json"), &sb) != 0 &&
                  system(find_cmd) == 0);
    snprintf(args, sizeof args, "%s --resume", opts);
    snprintf(log, sizeof log, "%s/sigint_resume.log", tmp);
    rc = slide_run(model, args, intr, slide, log);
    n_same = n_same_files(d_full, d_int, outs, 6);
    test_cond("slide: --resume after SIGINT takes the 3 batches from the checkpoint and gives the uninterrupted "
              "run's outputs byte for byte",
              rc == 0 && log_has(log, "24 from the checkpoint") && n_same == 6);
    snprintf(args, sizeof args, "--mpp 1.0 --tile 256 --batch 4 --resume");
    snprintf(log, sizeof log, "%s/resume_batch.log", tmp);
    rc = slide_run(model, args, res, slide, log);
    test_cond("slide: --resume with another --batch is refused, naming the setting",
              rc == 1 && log_has(log, "batch=8") && log_has(log, "without --resume"));

    sj = test_read_text(path_in(d_full, "summary.json"));
    s = sj ? cJSON_Parse(sj) : NULL;
    test_cond("slide: --mpp 1.0 chose level 1 and says why",
              s && cJSON_GetObjectItem(s, "level")->valueint == 1 &&
                  !strcmp(cJSON_GetObjectItem(s, "level_choice")->valuestring, "nearest to --mpp"));
    char *csv = test_read_text(path_in(d_full, "tiles.csv"));
    int rows = 0, max_x = 0, max_y = 0;
    bool grid = true;
    for (char *line = csv ? strchr(csv, '\n') : NULL; line && line[1]; line = strchr(line + 1, '\n')) {
        int x, y, level;
        if (sscanf(line + 1, "%d,%d,%d", &x, &y, &level) != 3) break;
        rows++;
        max_x = DS_TEST_MAX(max_x, x);
        max_y = DS_TEST_MAX(max_y, y);
        grid = grid && level == 1 && x % 256 == 0 && y % 256 == 0; /* stride 128 at downsample 2 */
    }
    test_cond("slide: tiles.csv has one row per scored tile, level-0 corners on the stride grid",
              s && csv && !strncmp(csv, "x,y,level,tissue_fraction,score", 31) &&
                  rows == cJSON_GetObjectItem(s, "tiles_scored")->valueint && grid);
    test_cond("slide: the last tile column and row (past the 1150x1075 level's edge) are scored, padded",
              max_x == 1792 && max_y == 1792);
    free(csv);
    free(sj);
    cJSON_Delete(s);

    /* ---- one clear error each */
    char blank[1024], txt[1024];
    snprintf(blank, sizeof blank, "%s/blank.tif", tmp);
    snprintf(txt, sizeof txt, "%s/notes.txt", tmp);
    FILE *tf = fopen(txt, "w");
    if (tf) {
        fputs("not a slide\n", tf);
        fclose(tf);
    }
    VipsImage *bl = NULL, *bn = NULL, *bc = NULL;
    vips_gaussnoise(&bn, 800, 600, "mean", 242.0, "sigma", 2.0, NULL);
    VipsImage *bands[3] = {bn, bn, bn};
    vips_bandjoin(bands, &bl, 3, NULL);
    vips_cast_uchar(bl, &bc, NULL);
    save_slide(bc, blank, 0.5, 256);
    g_object_unref(bn);
    g_object_unref(bl);
    g_object_unref(bc);
    struct {
        const char *what, *opts, *input, *needle;
    } errs[] = {
        {"a slide with no tissue", "--tile 256", blank, "no tissue found"},
        {"an unreadable file", "--tile 256", txt, "not a slide"},
        {"a level out of range", "--tile 256 --level 7", slide, "level 7 is out of range"},
        {"a tile larger than the level", "--tile 256 --level 4", slide, "larger than level 4"},
    };
    for (int i = 0; i < 4; i++) {
        char descr[256], out[1024];
        snprintf(out, sizeof out, "%s/err", tmp);
        snprintf(log, sizeof log, "%s/err%d.log", tmp, i);
        rc = slide_run(model, errs[i].opts, out, errs[i].input, log);
        char *l = test_read_text(log);
        int lines = 0;
        for (char *p = l; p && *p; p++) lines += *p == '\n';
        snprintf(descr, sizeof descr, "slide: %s is one clear error line, exit 1", errs[i].what);
        test_cond(descr, rc == 1 && lines == 1 && log_has(log, errs[i].needle));
        free(l);
    }
}

/* The model's calibration of one scorer (from `dinoscope info`'s JSON). */
static double model_map_threshold(const char *model, const char *kind) {
    char args[2048], log[2048];
    snprintf(args, sizeof args, "info '%s'", model);
    snprintf(log, sizeof log, "%s/info.log", tmp);
    double v = NAN;
    if (run_cli(args, log) != 0) return v;
    char *text = test_read_text(log), *end = text ? strstr(text, "\nsections:") : NULL;
    if (end) *end = 0;
    cJSON *m = text ? cJSON_Parse(text) : NULL, *sc;
    cJSON *list = m ? cJSON_GetObjectItem(m, "scorers") : NULL;
    cJSON_ArrayForEach(sc, list) {
        cJSON *cal = cJSON_GetObjectItem(sc, "calibration"), *t = cal ? cJSON_GetObjectItem(cal, "map_threshold") : NULL;
        if (!strcmp(cJSON_GetObjectItem(sc, "kind")->valuestring, kind) && cJSON_IsNumber(t)) v = t->valuedouble;
    }
    cJSON_Delete(m);
    free(text);
    return v;
}

/* A model with padim and patchbank (issue 10): the heatmap is patchbank's by
 * default and padim's with --scorer padim, each compared with its own
 * map-level threshold, and padim's heatmap is a patch-level map (it varies
 * inside a tile), not a tile score spread over the tile. */
static void test_map_scorers(const char *colon, const char *weights) {
    char args[12288], log[2048], model[1024], slide[1024], out[1024], dir[2048];
    snprintf(model, sizeof model, "%s/colon_pp.dsm", tmp);
    snprintf(slide, sizeof slide, "%s/mosaic.tif", tmp);
    snprintf(args, sizeof args, "fit --backbone '%s' --size 224 --scorer padim,patchbank --batch 16 --out '%s' '%s/train/normal'",
             weights, model, colon);
    snprintf(log, sizeof log, "%s/fit_pp.log", tmp);
    test_cond("fit --scorer padim,patchbank succeeds", run_cli(args, log) == 0);
    const char *kinds[2] = {"patchbank", "padim"}, *opts[2] = {"", "--scorer padim"};
    for (int i = 0; i < 2; i++) {
        char descr[256], o[256];
        snprintf(out, sizeof out, "%s/pp_%s", tmp, kinds[i]);
        snprintf(dir, sizeof dir, "%s/mosaic", out);
        snprintf(log, sizeof log, "%s/pp_%s.log", tmp, kinds[i]);
        snprintf(o, sizeof o, "%s --tile 224 --overlap 0 --batch 16", opts[i]);
        int rc = slide_run(model, o, out, slide, log);
        char *sj = test_read_text(path_in(dir, "summary.json"));
        cJSON *s = sj ? cJSON_Parse(sj) : NULL;
        double want = model_map_threshold(model, kinds[i]);
        snprintf(descr, sizeof descr, "slide %s: the heatmap is %s's, thresholded at its map threshold (%.5g) from the model",
                 opts[i][0] ? opts[i] : "(default)", kinds[i], want);
        test_cond(descr, rc == 0 && s && !strcmp(cJSON_GetObjectItem(s, "scorer")->valuestring, kinds[i]) &&
                             isfinite(want) && fabs(cJSON_GetObjectItem(s, "threshold")->valuedouble - want) <= 1e-6 * fabs(want) &&
                             !strcmp(cJSON_GetObjectItem(s, "threshold_source")->valuestring, "model (map)"));
        int hw = 0, hh = 0, varies = 0;
        float *heat = load_heatmap(path_in(dir, "heatmap.tif"), &hw, &hh);
        /* one tile = 14 x 14 heatmap pixels: count tiles whose pixels differ */
        for (int ty = 0; heat && ty < NC; ty++)
            for (int tx = 0; tx < NC; tx++) {
                int x0 = (OX + tx * CELL) / 16 + 1, y0 = (OY + ty * CELL) / 16 + 1;
                float lo = INFINITY, hi = -INFINITY;
                for (int y = y0; y < y0 + 12 && y < hh; y++)
                    for (int x = x0; x < x0 + 12 && x < hw; x++) {
                        lo = fminf(lo, heat[(size_t)y * hw + x]);
                        hi = fmaxf(hi, heat[(size_t)y * hw + x]);
                    }
                varies += hi > lo * (1 + 1e-4f);
            }
        snprintf(descr, sizeof descr, "slide %s: the heatmap is a patch-level map (it varies inside %d of %d tiles)",
                 opts[i][0] ? opts[i] : "(default)", varies, NC * NC);
        test_cond(descr, varies >= NC * NC / 2);
        free(heat);
        cJSON_Delete(s);
        free(sj);
    }
}

int main(void) {
    if (ds_image_init() != DS_OK || make_tmp("test_wsi_shared") != 0) return 1;
    const char *shared = test_env("DS_SHARED", "../shared");
    char colon[1024], weights[1024];
    snprintf(colon, sizeof colon, "%s/data/lc25000_colon", shared);
    snprintf(weights, sizeof weights, "%s/models/mobilenet_v2_imagenet.safetensors", shared);
    struct stat sb;
    if (!*test_env("DS_CLI", "") || stat(colon, &sb) != 0 || stat(weights, &sb) != 0) {
        char why[2200];
        snprintf(why, sizeof why, "needs DS_CLI, %s and %s", colon, weights);
        test_skip(why);
    }
    test_cli(colon, weights);
    test_map_scorers(colon, weights);
    test_report();
}
