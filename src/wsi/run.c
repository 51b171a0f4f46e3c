/* `dinoscope slide`: one slide, tile by tile, into stitched heatmaps.
 *
 * Order of work (each step streams; see docs/wsi.md for the memory budget):
 *   1. level: --level, or the one nearest --mpp (ds_wsi_pick_level);
 *   2. tissue mask on a low-resolution copy (ds_tissue_mask, CLAM's recipe);
 *   3. tile grid at the level: origins k * stride, the last tile of a row or
 *      column may stick out of the level and is padded white; tiles whose
 *      footprint on the mask holds tissue are kept, in raster order;
 *   4. batches of tiles through ds_model_score_images, each batch appended to
 *      the checkpoint (image scores + the heatmap scorer's patch scores);
 *   5. outputs from the checkpoint alone, tile rows in order: each tile's
 *      anomaly map (ds_anomaly_map at tile size, as `score --maps` does for an
 *      image) is summed into heatmap cells of map_step x map_step level
 *      pixels together with the number of pixels summed; a cell's value is
 *      sum / count, i.e. the seed's overlap averaging (sum map / count map)
 *      followed by a box average over the cell. Only a band of cell rows is
 *      held: rows no later tile can reach are finished and written out.
 * The floating-point sums run in a fixed order (tiles in raster order, pixels
 * in raster order inside a tile), so the outputs are a deterministic function
 * of the checkpoint: a resumed run writes the same bytes. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <glib.h>
#include <vips/vips.h>
#include <zlib.h>

#include "core/internal.h"
#include "dinoscope/backbone.h"
#include "dinoscope/maps.h"
#include "dinoscope/model.h"
#include "image/image_internal.h"
#include "wsi/wsi_internal.h"

ds_wsi_run_params ds_wsi_run_defaults(void) {
    return (ds_wsi_run_params){.tile_px = 512, .overlap = 0.5, .level = -1, .mpp_um = 0, .tissue_all = 0,
                               .batch = 16, .n_threads = 0, .resume = 0, .has_threshold = 0, .threshold = 0,
                               .map_vmax = 0, .map_step_px = 16, .scorer = -1, .overview_px = 1024};
}

typedef struct {
    int32_t tx, ty;
    float frac; /* tissue fraction of the tile's footprint */
} tile_t;

/* Tissue mask with its geometry: mask pixel (mx, my) covers level-0 pixels
 * [mx * W0 / mw, (mx+1) * W0 / mw). */
typedef struct {
    uint8_t *m;
    int mw, mh;
    int threshold;
    int64_t W0, H0;
} tissue_t;

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* CRC-32 of the model: its metadata and every section, so that a checkpoint
 * is only continued with the very same model. */
static uint32_t model_crc(const ds_model *m) {
    uLong c = crc32(0L, Z_NULL, 0);
    const char *meta = ds_model_meta_json(m);
    if (meta) c = crc32(c, (const Bytef *)meta, (uInt)strlen(meta));
    const ds_model_file *f = ds_model_get_file(m);
    for (int i = 0; f && i < ds_model_file_n_sections(f); i++) {
        const ds_model_section *s = ds_model_file_section_at(f, i);
        c = crc32(c, (const Bytef *)s->name, (uInt)strlen(s->name));
        const unsigned char *p = s->data;
        for (uint64_t left = s->n_bytes; left > 0;) {
            uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
            c = crc32(c, p, chunk);
            p += chunk;
            left -= chunk;
        }
    }
    return (uint32_t)c;
}

static ds_status make_tissue(const ds_wsi *w, int64_t tile_l0, tissue_t *t) {
    int64_t W0, H0;
    ds_wsi_level_info(w, 0, &W0, &H0, NULL);
    /* one mask pixel per D level-0 pixels, D a power of two up to 64 (CLAM
     * segments at about 64x), the mask at most 2048 px a side, and at least
     * 1024 px when the slide allows */
    int64_t D = 1;
    while (D < 64 && DS_MAX(W0, H0) / (D * 2) >= 1024) D *= 2;
    while (DS_MAX(W0, H0) / D > 2048) D *= 2;
    t->W0 = W0;
    t->H0 = H0;
    t->mw = (int)DS_MAX((int64_t)1, W0 / D);
    t->mh = (int)DS_MAX((int64_t)1, H0 / D);
    ds_image *low = NULL;
    ds_status st = ds_wsi_read_downsampled(w, t->mw, t->mh, &low);
    if (st != DS_OK) return st;
    t->m = ds_alloc((size_t)t->mw * t->mh, 1, "tissue mask");
    if (!t->m) {
        ds_image_free(low);
        return DS_ERR_NOMEM;
    }
    /* small objects: under a quarter of a tile; holes: up to one tile (CLAM's
     * a_t / a_h are absolute, in 512-px reference patches at 40x) */
    double px_area = ((double)W0 / t->mw) * ((double)H0 / t->mh);
    double tile_area = (double)tile_l0 * (double)tile_l0 / px_area;
    ds_tissue_params tp = ds_tissue_defaults();
    tp.min_object_px = (int64_t)(0.25 * tile_area);
    tp.max_hole_px = (int64_t)tile_area;
    st = ds_tissue_mask(low, &tp, t->m, &t->threshold);
    ds_image_free(low);
    return st;
}

/* Fraction of tissue under the level-0 rectangle [x0,x1) x [y0,y1). */
static float tissue_fraction(const tissue_t *t, int64_t x0, int64_t y0, int64_t x1, int64_t y1) {
    x1 = DS_MIN(x1, t->W0);
    y1 = DS_MIN(y1, t->H0);
    int64_t mx0 = x0 * t->mw / t->W0, my0 = y0 * t->mh / t->H0;
    int64_t mx1 = DS_MIN((int64_t)t->mw, ceil_div(x1 * t->mw, t->W0)), my1 = DS_MIN((int64_t)t->mh, ceil_div(y1 * t->mh, t->H0));
    int64_t n = 0, in = 0;
    for (int64_t y = my0; y < my1; y++)
        for (int64_t x = mx0; x < mx1; x++) {
            n++;
            in += t->m[y * t->mw + x];
        }
    return n ? (float)((double)in / (double)n) : 0.0f;
}

static int tissue_at(const tissue_t *t, double x_l0, double y_l0) {
    if (!t->m) return 1;
    int64_t mx = (int64_t)(x_l0 * t->mw / (double)t->W0), my = (int64_t)(y_l0 * t->mh / (double)t->H0);
    mx = DS_MIN(DS_MAX(mx, (int64_t)0), (int64_t)t->mw - 1);
    my = DS_MIN(DS_MAX(my, (int64_t)0), (int64_t)t->mh - 1);
    return t->m[my * t->mw + mx];
}

/* ---- the whole run's state ------------------------------------------------- */
typedef struct {
    const ds_model *m;
    ds_backbone *bb;
    const ds_wsi_run_params *p;
    ds_wsi *w;
    const char *dir;
    int n_threads;
    /* model */
    int ns, primary, has_patch, gh, gw, S;
    int64_t N;
    float thr, vmax;
    const char *thr_source;
    /* level and grid */
    int level;
    const char *level_choice;
    double ds, mpp_x, mpp_y;
    int64_t W0, H0, Wl, Hl;
    int T, stride;
    int64_t nx, ny;
    tissue_t tissue;
    tile_t *tiles;
    int64_t n_tiles;
    /* heatmap */
    int g, HW, HH, band_rows;
    double *band_sum;
    uint64_t *band_cnt;
    int next_row;
    FILE *raw_f, *raw_rgb;
    char *raw_f_path, *raw_rgb_path;
    int raw_f_slot, raw_rgb_slot; /* ds_temp_register's */
    float *row_f;
    uint8_t *row_rgb, *row_anom;
    ds_regions *regions;
    /* overview */
    int tw, th;
    int *tcellx, *tcelly;
    float *theat;
    int next_trow;
} run_t;

static ds_status choose_level(run_t *r) {
    const ds_wsi_run_params *p = r->p;
    int n = ds_wsi_n_levels(r->w);
    if (p->level >= 0) {
        if (p->level >= n)
            return ds_set_error(DS_ERR_ARG, "level %d is out of range: '%s' has levels 0..%d", p->level,
                                ds_wsi_path(r->w), n - 1);
        r->level = p->level;
        r->level_choice = "--level";
    } else if (p->mpp_um > 0) {
        ds_status st = ds_wsi_pick_level(r->w, p->mpp_um, &r->level);
        if (st != DS_OK) return st;
        r->level_choice = "nearest to --mpp";
    } else {
        r->level = 0;
        r->level_choice = "default (level 0)";
    }
    ds_wsi_level_info(r->w, r->level, &r->Wl, &r->Hl, &r->ds);
    ds_wsi_level_info(r->w, 0, &r->W0, &r->H0, NULL);
    ds_wsi_mpp_um(r->w, &r->mpp_x, &r->mpp_y);
    if (r->T > r->Wl || r->T > r->Hl)
        return ds_set_error(DS_ERR_ARG, "'%s': a tile of %d px is larger than level %d (%lldx%lld px): use a smaller --tile or a finer level",
                            ds_wsi_path(r->w), r->T, r->level, (long long)r->Wl, (long long)r->Hl);
    return DS_OK;
}

static ds_status make_tiles(run_t *r) {
    r->nx = 1 + ceil_div(r->Wl - r->T, r->stride);
    r->ny = 1 + ceil_div(r->Hl - r->T, r->stride);
    size_t n;
    if (!ds_mul_size((size_t)r->nx, (size_t)r->ny, &n) || n > UINT32_MAX)
        return ds_set_error(DS_ERR_ARG, "'%s': %lld x %lld tiles is too many", ds_wsi_path(r->w), (long long)r->nx,
                            (long long)r->ny);
    r->tiles = ds_alloc(n, sizeof(tile_t), "tile list");
    if (!r->tiles) return DS_ERR_NOMEM;
    int64_t k = 0;
    double tl0 = r->T * r->ds;
    for (int64_t ty = 0; ty < r->ny; ty++)
        for (int64_t tx = 0; tx < r->nx; tx++) {
            float f = 1.0f;
            if (r->tissue.m) {
                int64_t x0 = llround((double)(tx * r->stride) * r->ds), y0 = llround((double)(ty * r->stride) * r->ds);
                f = tissue_fraction(&r->tissue, x0, y0, x0 + llround(tl0), y0 + llround(tl0));
            }
            if (f > 0) r->tiles[k++] = (tile_t){(int32_t)tx, (int32_t)ty, f};
        }
    r->n_tiles = k;
    if (k == 0)
        return ds_set_error(DS_ERR_ARG, "no tissue found in '%s' (no tile touches tissue): use --tissue all to score every tile",
                            ds_wsi_path(r->w));
    return DS_OK;
}

/* The lines that identify a run for its checkpoint. */
static char *checkpoint_header(const run_t *r) {
    uint32_t tcrc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int64_t i = 0; i < r->n_tiles; i++) tcrc = (uint32_t)crc32(tcrc, (const Bytef *)&r->tiles[i], sizeof(tile_t));
    const char *qh = ds_wsi_quickhash(r->w);
    /* quickhash-1 hashes the slide's smallest level and properties; the file
     * size backs it up for formats without one */
    return g_strdup_printf("format=1\nslide=%s\nslide_bytes=%lld\nslide_size=%lldx%lld\nmodel_crc32=%08x\n"
                           "backbone=%s\nlevel=%d\nheatmap_scorer=%s\ntile_px=%d\nstride_px=%d\ntissue=%s\n"
                           "tiles=%lld crc32 %08x\nbatch=%d\nvalues=%d+%lld\n",
                           *qh ? qh : "(no quickhash)", (long long)ds_wsi_file_size(r->w), (long long)r->W0,
                           (long long)r->H0, model_crc(r->m), ds_backbone_describe(r->bb), r->level,
                           ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(r->m, r->primary))), r->T, r->stride,
                           r->tissue.m ? "otsu" : "all", (long long)r->n_tiles, tcrc, r->p->batch, r->ns,
                           (long long)(r->has_patch ? r->N : 0));
}

static void progress(const run_t *r, const char *stage, int64_t done, int64_t total) {
    if (r->p->progress) r->p->progress(stage, done, total, r->p->progress_user);
}

/* Step 4: the model over every batch not yet in the checkpoint. */
static ds_status score_tiles(run_t *r, ds_ckpt *ck, int64_t n_done_batches, ds_wsi_run_result *res) {
    int B = r->p->batch;
    int64_t n_batches = ceil_div(r->n_tiles, B);
    size_t per = (size_t)r->ns + (size_t)(r->has_patch ? r->N : 0);
    res->n_tiles_resumed = DS_MIN(n_done_batches * B, r->n_tiles);
    progress(r, "tiles", res->n_tiles_resumed, r->n_tiles);
    if (n_done_batches >= n_batches) return DS_OK;
    int nt = r->n_threads;
    ds_status st = DS_OK;
    ds_image **imgs = calloc((size_t)B, sizeof(ds_image *));
    uint32_t **scratch = calloc((size_t)nt, sizeof(uint32_t *));
    float *scores = ds_alloc((size_t)B * r->ns, sizeof(float), "tile scores");
    float *patch = r->has_patch ? ds_alloc((size_t)B * r->N, sizeof(float), "tile scores") : NULL;
    float *vals = ds_alloc((size_t)B, per * sizeof(float), "tile scores");
    ds_status *slot_st = calloc((size_t)B, sizeof(ds_status));
    char(*slot_msg)[256] = calloc((size_t)B, 256);
    if (!imgs || !scratch || !scores || (r->has_patch && !patch) || !vals || !slot_st || !slot_msg) {
        st = ds_set_error(DS_ERR_NOMEM, "out of memory for a batch of %d tiles", B);
        goto done;
    }
    for (int i = 0; i < B && st == DS_OK; i++)
        if (!(imgs[i] = ds_image_alloc(r->T, r->T, 3))) st = DS_ERR_NOMEM;
    for (int i = 0; i < nt && st == DS_OK; i++)
        if (!(scratch[i] = ds_alloc((size_t)r->T * r->T, sizeof(uint32_t), "tile scratch"))) st = DS_ERR_NOMEM;
    double t0 = g_get_monotonic_time() * 1e-3;
    for (int64_t b = n_done_batches; b < n_batches && st == DS_OK; b++) {
        int64_t first = b * B;
        int n = (int)DS_MIN((int64_t)B, r->n_tiles - first);
        /* OpenSlide handles are thread-safe: read the batch in parallel (the
         * model call below runs its own threads, after this region) */
#pragma omp parallel for num_threads(nt) schedule(dynamic)
        for (int i = 0; i < n; i++) {
            const tile_t *t = &r->tiles[first + i];
            int th = omp_get_thread_num();
            slot_st[i] = ds_wsi_read_rgb(r->w, r->level, (int64_t)t->tx * r->stride, (int64_t)t->ty * r->stride, r->T,
                                         r->T, imgs[i]->pixels, (size_t)r->T * 3, scratch[th], (size_t)r->T * r->T);
            if (slot_st[i] != DS_OK) snprintf(slot_msg[i], 256, "%s", ds_last_error());
        }
        for (int i = 0; i < n && st == DS_OK; i++)
            if (slot_st[i] != DS_OK) st = ds_set_error(slot_st[i], "%s", slot_msg[i]);
        if (st != DS_OK) break;
        st = ds_model_score_images(r->m, r->bb, (const ds_image *const *)imgs, n, B, r->p->n_threads, scores, r->primary, patch);
        if (st != DS_OK) break;
        for (int i = 0; i < n; i++) {
            float *v = vals + (size_t)i * per;
            memcpy(v, scores + (size_t)i * r->ns, sizeof(float) * (size_t)r->ns);
            if (r->has_patch) memcpy(v + r->ns, patch + (size_t)i * r->N, sizeof(float) * (size_t)r->N);
        }
        st = ds_ckpt_append(ck, b, first, n, vals);
        if (st != DS_OK) break;
        res->n_tiles_computed += n;
        progress(r, "tiles", first + n, r->n_tiles);
    }
    res->score_ms = g_get_monotonic_time() * 1e-3 - t0;
done:
    for (int i = 0; imgs && i < B; i++) ds_image_free(imgs[i]);
    for (int i = 0; scratch && i < nt; i++) free(scratch[i]);
    free(imgs);
    free(scratch);
    free(scores);
    free(patch);
    free(vals);
    free(slot_st);
    free(slot_msg);
    return st;
}

/* ---- step 5: heatmap band ------------------------------------------------ */

/* Writes cell row cy (finished) and clears its band slot. */
static ds_status flush_row(run_t *r, int cy) {
    int slot = cy % r->band_rows;
    double *sum = r->band_sum + (size_t)slot * r->HW;
    uint64_t *cnt = r->band_cnt + (size_t)slot * r->HW;
    double yc = ((double)cy + 0.5) * r->g * r->ds;
    for (int cx = 0; cx < r->HW; cx++) {
        int scored = cnt[cx] > 0;
        float v = scored ? (float)(sum[cx] / (double)cnt[cx]) : 0.0f;
        r->row_f[cx] = v;
        if (scored) ds_map_colour(v / r->vmax, r->row_rgb + 3 * (size_t)cx);
        else memset(r->row_rgb + 3 * (size_t)cx, 255, 3);
        /* regions: within tissue only (tiles at the tissue's edge also see
         * background, which a model fitted on tissue finds anomalous) */
        double xc = ((double)cx + 0.5) * r->g * r->ds;
        r->row_anom[cx] = scored && v >= r->thr && tissue_at(&r->tissue, xc, yc);
    }
    if (fwrite(r->row_f, sizeof(float), (size_t)r->HW, r->raw_f) != (size_t)r->HW ||
        fwrite(r->row_rgb, 3, (size_t)r->HW, r->raw_rgb) != (size_t)r->HW)
        return ds_set_error(DS_ERR_IO, "cannot write heatmap rows in '%s': %s", r->dir, strerror(errno));
    ds_status st = ds_regions_add_row(r->regions, cy, r->row_anom, r->row_f);
    if (st != DS_OK) return st;
    while (r->next_trow < r->th && r->tcelly[r->next_trow] == cy) {
        float *t = r->theat + (size_t)r->next_trow * r->tw;
        for (int px = 0; px < r->tw; px++) {
            int cx = r->tcellx[px];
            t[px] = cnt[cx] > 0 ? r->row_f[cx] : NAN; /* NaN: not scored, no colour */
        }
        r->next_trow++;
    }
    memset(sum, 0, sizeof(double) * (size_t)r->HW);
    memset(cnt, 0, sizeof(uint64_t) * (size_t)r->HW);
    return DS_OK;
}

static ds_status flush_until(run_t *r, int row_end) {
    ds_status st = DS_OK;
    while (r->next_row < row_end && st == DS_OK) st = flush_row(r, r->next_row++);
    return st;
}

/* Per-tile contribution: sums and pixel counts per covered cell. */
typedef struct {
    int cx0, cy0, ncx, ncy;
    double *sum;   /* [ncy, ncx] */
    uint64_t *cnt; /* [ncy, ncx] */
} contrib_t;

static ds_status tile_contrib(const run_t *r, const tile_t *t, const float *vals, float *map, contrib_t *c) {
    int64_t x0 = (int64_t)t->tx * r->stride, y0 = (int64_t)t->ty * r->stride;
    int w = (int)DS_MIN((int64_t)r->T, r->Wl - x0), h = (int)DS_MIN((int64_t)r->T, r->Hl - y0);
    c->cx0 = (int)(x0 / r->g);
    c->cy0 = (int)(y0 / r->g);
    c->ncx = (int)((x0 + w - 1) / r->g) - c->cx0 + 1;
    c->ncy = (int)((y0 + h - 1) / r->g) - c->cy0 + 1;
    memset(c->sum, 0, sizeof(double) * (size_t)c->ncx * c->ncy);
    memset(c->cnt, 0, sizeof(uint64_t) * (size_t)c->ncx * c->ncy);
    if (r->has_patch) {
        /* the same map `score --maps` makes for an image, at tile size */
        ds_status st = ds_model_anomaly_map(r->m, vals + r->ns, r->T, r->T, map);
        if (st != DS_OK) return st;
    } else {
        for (size_t i = 0; i < (size_t)r->T * r->T; i++) map[i] = vals[r->primary];
    }
    /* only the part inside the level counts; the padding is not the slide */
    for (int yy = 0; yy < h; yy++) {
        int cy = (int)((y0 + yy) / r->g) - c->cy0;
        double *srow = c->sum + (size_t)cy * c->ncx;
        uint64_t *crow = c->cnt + (size_t)cy * c->ncx;
        const float *mrow = map + (size_t)yy * r->T;
        for (int xx = 0; xx < w; xx++) {
            int cx = (int)((x0 + xx) / r->g) - c->cx0;
            srow[cx] += mrow[xx];
            crow[cx]++;
        }
    }
    return DS_OK;
}

/* Raw rows -> pyramidal tiled TIFF, atomically. */
static ds_status save_tiff(const run_t *r, const char *raw, int bands, VipsBandFormat fmt, const char *name, int jpeg) {
    char *path = g_build_filename(r->dir, name, NULL);
    char *tmp = g_strdup_printf("%s.tmp.%d", path, (int)getpid());
    int slot = ds_temp_register(tmp); /* removed if we are interrupted */
    VipsImage *im = NULL;
    ds_status st = DS_OK;
    char why[512];
    /* resolution in pixels per mm, so that viewers scale the heatmap onto the slide */
    double px_mm_x = r->mpp_x > 0 ? 1000.0 / (r->mpp_x * r->ds * r->g) : 1.0;
    double px_mm_y = r->mpp_y > 0 ? 1000.0 / (r->mpp_y * r->ds * r->g) : 1.0;
    uint64_t bytes = (uint64_t)r->HW * r->HH * bands * (fmt == VIPS_FORMAT_FLOAT ? 4 : 1);
    if (vips_rawload(raw, &im, r->HW, r->HH, bands, "format", fmt, "interpretation",
                     bands == 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W, NULL) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot read back heatmap rows '%s': %s", raw, ds_vips_reason(why, sizeof why));
        goto done;
    }
    int rc = jpeg ? vips_tiffsave(im, tmp, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid", TRUE,
                                  "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG, "Q", 90, "xres", px_mm_x, "yres",
                                  px_mm_y, "resunit", VIPS_FOREIGN_TIFF_RESUNIT_CM, "bigtiff", bytes > (3ull << 30),
                                  "strip", TRUE, NULL)
                  : vips_tiffsave(im, tmp, "tile", TRUE, "tile_width", 256, "tile_height", 256, "pyramid", TRUE,
                                  "compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, "predictor",
                                  VIPS_FOREIGN_TIFF_PREDICTOR_FLOAT, "xres", px_mm_x, "yres", px_mm_y, "resunit",
                                  VIPS_FOREIGN_TIFF_RESUNIT_CM, "bigtiff", bytes > (3ull << 30), "strip", TRUE, NULL);
    if (rc != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot write '%s': %s", path, ds_vips_reason(why, sizeof why));
        remove(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        remove(tmp);
    }
done:
    ds_temp_unregister(slot);
    if (im) g_object_unref(im);
    g_free(path);
    g_free(tmp);
    return st;
}

/* The heatmap band, rows and overview grid kept in r (freed by ds_wsi_run). */
static ds_status alloc_heatmap(run_t *r) {
    const ds_wsi_run_params *p = r->p;
    r->g = p->map_step_px;
    r->HW = (int)ceil_div(r->Wl, r->g);
    r->HH = (int)ceil_div(r->Hl, r->g);
    r->band_rows = (int)ceil_div(r->T, r->g) + 2;
    /* overview size */
    double tds = DS_MAX(1.0, (double)DS_MAX(r->W0, r->H0) / p->overview_px);
    r->tw = (int)DS_MIN(r->W0, DS_MAX((int64_t)1, llround((double)r->W0 / tds)));
    r->th = (int)DS_MIN(r->H0, DS_MAX((int64_t)1, llround((double)r->H0 / tds)));
    r->band_sum = ds_calloc((size_t)r->band_rows * r->HW, sizeof(double), "heatmap band");
    r->band_cnt = ds_calloc((size_t)r->band_rows * r->HW, sizeof(uint64_t), "heatmap band");
    r->row_f = ds_alloc((size_t)r->HW, sizeof(float), "heatmap row");
    r->row_rgb = ds_alloc((size_t)r->HW, 3, "heatmap row");
    r->row_anom = ds_alloc((size_t)r->HW, 1, "heatmap row");
    r->tcellx = malloc(sizeof(int) * (size_t)r->tw);
    r->tcelly = malloc(sizeof(int) * (size_t)r->th);
    r->theat = ds_alloc((size_t)r->tw * r->th, sizeof(float), "overview");
    if (!r->band_sum || !r->band_cnt || !r->row_f || !r->row_rgb || !r->row_anom || !r->tcellx || !r->tcelly || !r->theat)
        return ds_set_error(DS_ERR_NOMEM, "out of memory for the heatmap of '%s'", ds_wsi_path(r->w));
    for (int px = 0; px < r->tw; px++) {
        double x_l0 = (px + 0.5) * (double)r->W0 / r->tw;
        r->tcellx[px] = (int)DS_MIN((int64_t)r->HW - 1, (int64_t)(x_l0 / r->ds / r->g));
    }
    for (int py = 0; py < r->th; py++) {
        double y_l0 = (py + 0.5) * (double)r->H0 / r->th;
        r->tcelly[py] = (int)DS_MIN((int64_t)r->HH - 1, (int64_t)(y_l0 / r->ds / r->g));
    }
    return ds_regions_create(r->HW, r->HH, &r->regions);
}

/* Adds a tile's contribution to the band (cells in its rows). */
static void add_contrib(run_t *r, const contrib_t *c) {
    DS_ASSERT(c->cy0 >= r->next_row && c->cy0 + c->ncy <= r->next_row + r->band_rows);
    for (int yy = 0; yy < c->ncy; yy++) {
        int slot = (c->cy0 + yy) % r->band_rows;
        double *bs = r->band_sum + (size_t)slot * r->HW + c->cx0;
        uint64_t *bc = r->band_cnt + (size_t)slot * r->HW + c->cx0;
        for (int xx = 0; xx < c->ncx; xx++) {
            bs[xx] += c->sum[(size_t)yy * c->ncx + xx];
            bc[xx] += c->cnt[(size_t)yy * c->ncx + xx];
        }
    }
}

static void csv_header(const run_t *r, FILE *fp) {
    fputs("x,y,level,tissue_fraction,score,anomalous", fp);
    for (int k = 0; k < r->ns; k++)
        if (k != r->primary) fprintf(fp, ",%s", ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(r->m, k))));
    fputc('\n', fp);
}

static void csv_row(const run_t *r, FILE *fp, const tile_t *t, const float *v) {
    fprintf(fp, "%lld,%lld,%d,%.4f,%.9g,%d", llround((double)t->tx * r->stride * r->ds),
            llround((double)t->ty * r->stride * r->ds), r->level, t->frac, v[r->primary], v[r->primary] >= r->thr);
    for (int q = 0; q < r->ns; q++)
        if (q != r->primary) fprintf(fp, ",%.9g", v[q]);
    fputc('\n', fp);
}

/* Tile maps from the checkpoint, row of tiles by row, stitched into the
 * heatmap band (rows flushed as they are final) and listed in tiles.csv. */
static ds_status stitch_tiles(run_t *r, ds_ckpt *ck, FILE *csv) {
    size_t per = (size_t)r->ns + (size_t)(r->has_patch ? r->N : 0);
    int nt = r->n_threads, n_con = 4 * nt; /* tile maps in flight */
    int cmax = (int)ceil_div(r->T, r->g) + 1;
    tile_t *row_tiles = malloc(sizeof(tile_t) * (size_t)r->nx);
    float *row_vals = ds_alloc((size_t)r->nx, per * sizeof(float), "tile row");
    contrib_t *con = calloc((size_t)n_con, sizeof(contrib_t));
    ds_status *con_st = calloc((size_t)n_con, sizeof(ds_status));
    char(*con_msg)[256] = calloc((size_t)n_con, 256);
    float **maps = calloc((size_t)nt, sizeof(float *));
    ds_status st = row_tiles && row_vals && con && con_st && con_msg && maps
                       ? DS_OK
                       : ds_set_error(DS_ERR_NOMEM, "out of memory for the heatmap of '%s'", ds_wsi_path(r->w));
    for (int i = 0; i < n_con && st == DS_OK; i++) {
        con[i].sum = ds_alloc((size_t)cmax * cmax, sizeof(double), "tile contribution");
        con[i].cnt = ds_alloc((size_t)cmax * cmax, sizeof(uint64_t), "tile contribution");
        if (!con[i].sum || !con[i].cnt) st = DS_ERR_NOMEM;
    }
    for (int i = 0; i < nt && st == DS_OK; i++)
        if (!(maps[i] = ds_alloc((size_t)r->T * r->T, sizeof(float), "tile map"))) st = DS_ERR_NOMEM;
    if (st == DS_OK) st = ds_ckpt_rewind(ck);
    for (int64_t i = 0; i < r->n_tiles && st == DS_OK;) {
        /* one row of tiles */
        int n = 0;
        int32_t ty = r->tiles[i].ty;
        for (; i < r->n_tiles && r->tiles[i].ty == ty && st == DS_OK; i++, n++) {
            row_tiles[n] = r->tiles[i];
            st = ds_ckpt_next(ck, row_vals + (size_t)n * per);
        }
        if (st != DS_OK) break;
        /* rows above this tile row are final */
        st = flush_until(r, (int)(((int64_t)ty * r->stride) / r->g));
        /* tile maps in parallel, a chunk at a time (bounded memory), summed
         * into the band in tile order (deterministic) */
        for (int k0 = 0; k0 < n && st == DS_OK; k0 += n_con) {
            int kn = DS_MIN(n_con, n - k0);
#pragma omp parallel for num_threads(nt) schedule(dynamic)
            for (int j = 0; j < kn; j++) {
                con_st[j] = tile_contrib(r, &row_tiles[k0 + j], row_vals + (size_t)(k0 + j) * per,
                                         maps[omp_get_thread_num()], &con[j]);
                if (con_st[j] != DS_OK) snprintf(con_msg[j], 256, "%s", ds_last_error());
            }
            for (int j = 0; j < kn && st == DS_OK; j++)
                if (con_st[j] != DS_OK) st = ds_set_error(con_st[j], "%s", con_msg[j]);
            for (int j = 0; j < kn && st == DS_OK; j++) {
                add_contrib(r, &con[j]);
                csv_row(r, csv, &row_tiles[k0 + j], row_vals + (size_t)(k0 + j) * per);
            }
        }
        progress(r, "outputs", i, r->n_tiles);
    }
    if (st == DS_OK) st = flush_until(r, r->HH);
    for (int i = 0; con && i < n_con; i++) {
        free(con[i].sum);
        free(con[i].cnt);
    }
    for (int i = 0; maps && i < nt; i++) free(maps[i]);
    free(maps);
    free(con);
    free(con_st);
    free(con_msg);
    free(row_tiles);
    free(row_vals);
    return st;
}

static ds_status write_geojson(run_t *r, ds_wsi_run_result *res) {
    ds_atomic_file gj = {0};
    char *gj_path = g_build_filename(r->dir, "anomalies.geojson", NULL);
    ds_status st = ds_atomic_open(&gj, gj_path);
    g_free(gj_path);
    if (st != DS_OK) return st;
    ds_regions_geo geo = {.sx = r->g * r->ds, .sy = r->g * r->ds, .max_x = (double)r->W0, .max_y = (double)r->H0,
                          .mpp_x_um = r->mpp_x, .mpp_y_um = r->mpp_y};
    st = ds_regions_write_geojson(r->regions, &geo, gj.fp, &res->n_regions);
    ds_status c = ds_atomic_commit(&gj, st == DS_OK);
    return st != DS_OK ? st : c;
}

/* overview.png: thumbnail, heat where scored, tissue outline, region outlines */
static ds_status write_overview(run_t *r) {
    ds_image *thumb = NULL;
    ds_status st = ds_wsi_read_downsampled(r->w, r->tw, r->th, &thumb);
    if (st != DS_OK) return st;
    uint8_t *tflag = ds_alloc((size_t)r->tw * r->th, 1, "overview");
    if (!tflag) {
        ds_image_free(thumb);
        return DS_ERR_NOMEM;
    }
    for (int py = 0; py < r->th; py++)
        for (int px = 0; px < r->tw; px++) {
            double x_l0 = (px + 0.5) * (double)r->W0 / r->tw, y_l0 = (py + 0.5) * (double)r->H0 / r->th;
            uint8_t f = (uint8_t)(r->tissue.m ? tissue_at(&r->tissue, x_l0, y_l0) : 0);
            f |= (uint8_t)(ds_regions_cell(r->regions, r->tcellx[px], r->tcelly[py]) << 1);
            tflag[(size_t)py * r->tw + px] = f;
            float hv = r->theat[(size_t)py * r->tw + px];
            if (!isnan(hv)) {
                uint8_t c[3], *q = thumb->pixels + ((size_t)py * r->tw + px) * 3;
                ds_map_colour(hv / r->vmax, c);
                for (int k = 0; k < 3; k++) q[k] = (uint8_t)lrintf(0.5f * q[k] + 0.5f * c[k]);
            }
        }
    static const uint8_t tissue_c[3] = {0, 90, 255}, anom_c[3] = {0, 230, 0};
    ds_draw_outline(thumb, tflag, 1, tissue_c);
    ds_draw_outline(thumb, tflag, 2, anom_c);
    char *ov = g_build_filename(r->dir, "overview.png", NULL);
    st = ds_image_save_png(ov, thumb);
    g_free(ov);
    free(tflag);
    ds_image_free(thumb);
    return st;
}

/* Step 5: every output from the checkpoint alone: tiles.csv and the heatmap
 * rows (stitch_tiles), the two pyramidal TIFFs, the GeoJSON, the overview. */
static ds_status write_outputs(run_t *r, ds_ckpt *ck, ds_wsi_run_result *res) {
    ds_atomic_file csv = {0};
    ds_status st = alloc_heatmap(r);
    if (st != DS_OK) return st;
    r->raw_f_path = g_strdup_printf("%s/.heatmap.f32.%d", r->dir, (int)getpid());
    r->raw_rgb_path = g_strdup_printf("%s/.heatmap.rgb.%d", r->dir, (int)getpid());
    r->raw_f_slot = ds_temp_register(r->raw_f_path); /* removed if we are interrupted */
    r->raw_rgb_slot = ds_temp_register(r->raw_rgb_path);
    r->raw_f = fopen(r->raw_f_path, "wb");
    r->raw_rgb = fopen(r->raw_rgb_path, "wb");
    if (!r->raw_f || !r->raw_rgb) {
        st = ds_set_error(DS_ERR_IO, "cannot create '%s': %s", r->raw_f_path, strerror(errno));
        goto done;
    }
    char *csv_path = g_build_filename(r->dir, "tiles.csv", NULL);
    st = ds_atomic_open(&csv, csv_path);
    g_free(csv_path);
    if (st != DS_OK) goto done;
    csv_header(r, csv.fp);
    st = stitch_tiles(r, ck, csv.fp);
    if (st == DS_OK && ferror(csv.fp)) st = ds_set_error(DS_ERR_IO, "cannot write tiles.csv in '%s'", r->dir);
    if (st == DS_OK) st = ds_atomic_commit(&csv, true);
    if (st != DS_OK) goto done;
    bool closed = fclose(r->raw_f) == 0;
    closed = fclose(r->raw_rgb) == 0 && closed;
    r->raw_f = r->raw_rgb = NULL;
    if (!closed) {
        st = ds_set_error(DS_ERR_IO, "cannot write heatmap rows in '%s': %s", r->dir, strerror(errno));
        goto done;
    }
    st = save_tiff(r, r->raw_f_path, 1, VIPS_FORMAT_FLOAT, "heatmap.tif", 0);
    if (st == DS_OK) st = save_tiff(r, r->raw_rgb_path, 3, VIPS_FORMAT_UCHAR, "heatmap_rgb.tif", 1);
    if (st == DS_OK) st = write_geojson(r, res);
    if (st == DS_OK) st = write_overview(r);
done:
    if (csv.fp) ds_atomic_commit(&csv, false);
    if (r->raw_f) fclose(r->raw_f);
    if (r->raw_rgb) fclose(r->raw_rgb);
    r->raw_f = r->raw_rgb = NULL;
    if (r->raw_f_path) remove(r->raw_f_path), ds_temp_unregister(r->raw_f_slot), r->raw_f_slot = -1;
    if (r->raw_rgb_path) remove(r->raw_rgb_path), ds_temp_unregister(r->raw_rgb_slot), r->raw_rgb_slot = -1;
    return st;
}

static ds_status write_summary(const run_t *r, const char *slide_path, const ds_wsi_run_result *res) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "slide", slide_path);
    cJSON_AddStringToObject(o, "vendor", ds_wsi_vendor(r->w));
    cJSON *l0 = cJSON_AddArrayToObject(o, "level0_size_px");
    cJSON_AddItemToArray(l0, cJSON_CreateNumber((double)r->W0));
    cJSON_AddItemToArray(l0, cJSON_CreateNumber((double)r->H0));
    if (r->mpp_x > 0) {
        cJSON *mp = cJSON_AddArrayToObject(o, "mpp_um");
        cJSON_AddItemToArray(mp, cJSON_CreateNumber(r->mpp_x));
        cJSON_AddItemToArray(mp, cJSON_CreateNumber(r->mpp_y));
    } else {
        cJSON_AddNullToObject(o, "mpp_um");
    }
    cJSON_AddNumberToObject(o, "level", r->level);
    cJSON_AddStringToObject(o, "level_choice", r->level_choice);
    if (r->p->mpp_um > 0) cJSON_AddNumberToObject(o, "requested_mpp_um", r->p->mpp_um);
    cJSON_AddNumberToObject(o, "level_downsample", r->ds);
    if (r->mpp_x > 0) cJSON_AddNumberToObject(o, "level_mpp_um", r->mpp_x * r->ds);
    cJSON *ls = cJSON_AddArrayToObject(o, "level_size_px");
    cJSON_AddItemToArray(ls, cJSON_CreateNumber((double)r->Wl));
    cJSON_AddItemToArray(ls, cJSON_CreateNumber((double)r->Hl));
    cJSON_AddNumberToObject(o, "tile_px", r->T);
    cJSON_AddNumberToObject(o, "stride_px", r->stride);
    cJSON_AddNumberToObject(o, "overlap", r->p->overlap);
    cJSON_AddStringToObject(o, "tissue", r->tissue.m ? "otsu" : "all");
    if (r->tissue.m) {
        cJSON_AddNumberToObject(o, "tissue_saturation_threshold", r->tissue.threshold);
        cJSON *ms = cJSON_AddArrayToObject(o, "tissue_mask_size_px");
        cJSON_AddItemToArray(ms, cJSON_CreateNumber(r->tissue.mw));
        cJSON_AddItemToArray(ms, cJSON_CreateNumber(r->tissue.mh));
    }
    cJSON_AddNumberToObject(o, "tiles_grid", (double)res->n_tiles_grid);
    cJSON_AddNumberToObject(o, "tiles_scored", (double)res->n_tiles_tissue);
    cJSON_AddNumberToObject(o, "batch", r->p->batch);
    cJSON_AddStringToObject(o, "scorer", ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(r->m, r->primary))));
    cJSON_AddNumberToObject(o, "threshold", r->thr);
    cJSON_AddStringToObject(o, "threshold_source", r->thr_source);
    cJSON_AddNumberToObject(o, "map_vmax", r->vmax);
    cJSON_AddNumberToObject(o, "heatmap_step_px", r->g);
    cJSON *hs = cJSON_AddArrayToObject(o, "heatmap_size_px");
    cJSON_AddItemToArray(hs, cJSON_CreateNumber(r->HW));
    cJSON_AddItemToArray(hs, cJSON_CreateNumber(r->HH));
    cJSON_AddNumberToObject(o, "anomalous_regions", res->n_regions);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return ds_set_error(DS_ERR_NOMEM, "out of memory");
    char *path = g_build_filename(r->dir, "summary.json", NULL);
    ds_atomic_file af;
    ds_status st = ds_atomic_open(&af, path);
    if (st == DS_OK) {
        bool ok = fputs(text, af.fp) >= 0 && fputc('\n', af.fp) != EOF;
        st = ds_atomic_commit(&af, ok);
        if (!ok && st == DS_OK) st = ds_set_error(DS_ERR_IO, "cannot write '%s'", path);
    }
    g_free(path);
    free(text);
    return st;
}

ds_status ds_wsi_run(const ds_model *m, ds_backbone *bb, const char *slide_path, const char *out_dir,
                     const ds_wsi_run_params *p, ds_wsi_run_result *res) {
    if (!m || !bb || !slide_path || !out_dir || !p || !res) return ds_set_error(DS_ERR_ARG, "ds_wsi_run: NULL argument");
    if (p->tile_px < 32 || p->tile_px > 8192 || !(p->overlap >= 0 && p->overlap < 1) || p->batch < 1 ||
        p->batch > 4096 || p->map_step_px < 1 || p->map_step_px > p->tile_px || p->overview_px < 16 ||
        p->overview_px > 16384 || p->n_threads < 0 || (p->has_threshold && !isfinite(p->threshold)) ||
        !(p->map_vmax >= 0) || p->mpp_um < 0)
        return ds_set_error(DS_ERR_ARG, "ds_wsi_run: bad parameters (tile %d in [32,8192], overlap %g in [0,1), batch %d, "
                                        "map step %d in [1, tile], overview %d)",
                            p->tile_px, p->overlap, p->batch, p->map_step_px, p->overview_px);
    ds_status st = ds_image_init();
    if (st != DS_OK) return st;
    run_t r = {.m = m, .bb = bb, .p = p, .dir = out_dir, .n_threads = ds_resolve_threads(p->n_threads), .raw_f_slot = -1, .raw_rgb_slot = -1};
    ds_wsi_run_result out = {0};
    ds_ckpt *ck = NULL;
    char *header = NULL;
    const ds_model_info *in = ds_model_get_info(m);
    r.ns = ds_model_n_scorers(m);
    /* the heatmap's scorer: --scorer, else the model's map scorer (patch
     * level), else the first (one score per tile) */
    r.primary = p->scorer >= 0 ? -1 : ds_model_map_scorer(m);
    for (int k = 0; k < r.ns && p->scorer >= 0; k++)
        if ((int)ds_scorer_get_kind(ds_model_scorer(m, k)) == p->scorer) r.primary = k;
    if (r.primary < 0 && p->scorer >= 0)
        return ds_set_error(DS_ERR_ARG, "the model has no %s scorer", ds_scorer_kind_name((ds_scorer_kind)p->scorer));
    if (r.primary < 0) r.primary = 0;
    r.has_patch = ds_scorer_has_patch_scores(ds_model_scorer(m, r.primary));
    r.gh = in->grid_h;
    r.gw = in->grid_w;
    r.S = in->prep.size;
    r.N = (int64_t)r.gh * r.gw;
    const ds_scorer_calibration *cal = ds_model_calibration(m, r.primary);
    if (p->has_threshold) {
        r.thr = p->threshold;
        r.thr_source = "--threshold";
    } else if (cal && cal->has_map_threshold) {
        /* patch-level scorers: the threshold on map values (fit's --fpr over
         * held-out normal map pixels), the scale the heatmap is in */
        r.thr = cal->map_threshold;
        r.thr_source = "model (map)";
    } else if (cal && cal->has_threshold) {
        r.thr = cal->threshold;
        r.thr_source = "model";
    } else {
        return ds_set_error(DS_ERR_ARG, "the model holds no threshold for its %s scorer: give one (--threshold)",
                            ds_scorer_kind_name(ds_scorer_get_kind(ds_model_scorer(m, r.primary))));
    }
    r.vmax = p->map_vmax > 0 ? p->map_vmax : cal && cal->map_vmax > 0 ? cal->map_vmax : r.thr > 0 ? 2 * r.thr : 1;
    r.T = p->tile_px;
    r.stride = (int)DS_MAX(1L, lround(p->tile_px * (1.0 - p->overlap)));

    st = ds_wsi_open(slide_path, &r.w);
    if (st == DS_OK) st = choose_level(&r);
    if (st != DS_OK) goto done;
    if (g_mkdir_with_parents(out_dir, 0755) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot create '%s': %s", out_dir, strerror(errno));
        goto done;
    }
    if (!p->tissue_all) {
        progress(&r, "tissue", 0, 1);
        st = make_tissue(r.w, llround(r.T * r.ds), &r.tissue);
        if (st != DS_OK) goto done;
        size_t any = 0, nm = (size_t)r.tissue.mw * r.tissue.mh;
        for (size_t i = 0; i < nm && !any; i++) any = r.tissue.m[i];
        if (!any) {
            st = ds_set_error(DS_ERR_ARG,
                              "no tissue found in '%s' (saturation threshold %d on a %dx%d mask): use --tissue all to score every tile",
                              slide_path, r.tissue.threshold, r.tissue.mw, r.tissue.mh);
            goto done;
        }
        progress(&r, "tissue", 1, 1);
    }
    st = make_tiles(&r);
    if (st != DS_OK) goto done;
    out.n_tiles_grid = r.nx * r.ny;
    out.n_tiles_tissue = r.n_tiles;
    header = checkpoint_header(&r);
    char *ck_path = g_build_filename(out_dir, "checkpoint.bin", NULL);
    int64_t n_done = 0;
    bool truncated = false, soft_differs = false;
    /* the model's float results depend on the thread count (GEMM splits) */
    char soft[64];
    snprintf(soft, sizeof soft, "threads=%d\n", r.n_threads);
    st = ds_ckpt_open(ck_path, header, soft, p->resume, r.ns, r.has_patch ? (int)r.N : 0, p->batch, r.n_tiles, &ck,
                      &n_done, &truncated, &soft_differs);
    g_free(ck_path);
    if (st != DS_OK) goto done;
    out.checkpoint_torn = truncated;
    out.threads_differ = soft_differs && n_done > 0;
    st = score_tiles(&r, ck, n_done, &out);
    if (st == DS_OK) st = write_outputs(&r, ck, &out);
    if (st == DS_OK) {
        out.level = r.level;
        out.downsample = r.ds;
        out.level_w_px = r.Wl;
        out.level_h_px = r.Hl;
        out.mpp_x_um = r.mpp_x;
        out.mpp_y_um = r.mpp_y;
        out.stride_px = r.stride;
        out.threshold = r.thr;
        out.map_vmax = r.vmax;
        out.heatmap_w = r.HW;
        out.heatmap_h = r.HH;
        st = write_summary(&r, slide_path, &out);
    }
    if (st == DS_OK) *res = out;
done:
    ds_ckpt_close(ck);
    g_free(header);
    free(r.tissue.m);
    free(r.tiles);
    free(r.band_sum);
    free(r.band_cnt);
    free(r.row_f);
    free(r.row_rgb);
    free(r.row_anom);
    free(r.tcellx);
    free(r.tcelly);
    free(r.theat);
    g_free(r.raw_f_path);
    g_free(r.raw_rgb_path);
    ds_regions_free(r.regions);
    ds_wsi_free(r.w);
    return st;
}
