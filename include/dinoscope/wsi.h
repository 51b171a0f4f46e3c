/* Whole-slide images: reading through OpenSlide, tissue masks, and scoring a
 * slide tile by tile into stitched heatmaps, QuPath annotations and a
 * resumable checkpoint.
 *
 *   ds_wsi *w;
 *   ds_wsi_open("slide.svs", &w);                 // every format OpenSlide reads
 *   int level;
 *   ds_wsi_pick_level(w, 0.5, &level);            // level nearest to 0.5 um/px
 *   ds_image *tile = ds_image_create(512, 512, 3);
 *   ds_wsi_read_tile(w, level, x_px, y_px, tile); // white outside the slide
 *   ds_wsi_free(w);
 *
 *   // or the whole pipeline (what `dinoscope slide` runs):
 *   ds_wsi_run_params p = ds_wsi_run_defaults();
 *   ds_wsi_run_result r;
 *   ds_wsi_run(model, backbone, "slide.svs", "out/slide", &p, &r);
 *
 * Coordinates: "level" pixels are pixels of one pyramid level, "l0" pixels
 * are OpenSlide's level-0 frame (x_l0 = x_level * downsample). Pixels handed
 * out are 8-bit RGB [H,W,3]: OpenSlide's premultiplied ARGB composited on
 * white (transparent = no data = white), converted in ds_wsi_argb_to_rgb only.
 * No OpenSlide or libvips types appear here.
 */
#ifndef DINOSCOPE_WSI_H
#define DINOSCOPE_WSI_H

#include "dinoscope.h"
#include "image.h"
#include "scorer.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef struct ds_wsi ds_wsi;

/* Opens path with OpenSlide. Errors name the file: "no such file", "not a
 * slide OpenSlide can read" (unknown format; DS_ERR_FORMAT), or OpenSlide's
 * own reason for a damaged file (DS_ERR_IO). *out is set only on success. */
ds_status ds_wsi_open(const char *path, ds_wsi **out);
void ds_wsi_free(ds_wsi *w);

int ds_wsi_n_levels(const ds_wsi *w);
/* Size and downsample (level-0 pixels per level pixel) of level; any output
 * may be NULL. Returns DS_OK or DS_ERR_ARG for a level out of range. */
ds_status ds_wsi_level_info(const ds_wsi *w, int level, int64_t *width_px, int64_t *height_px, double *downsample);
/* Microns per level-0 pixel, x and y (either may be NULL); 0 when the slide
 * does not say. From openslide.mpp-x/y, else from the TIFF resolution tags
 * (tiff.XResolution + tiff.ResolutionUnit centimeter|inch), which OpenSlide
 * 3.4 reports but does not convert for generic TIFFs. */
void ds_wsi_mpp_um(const ds_wsi *w, double *mpp_x_um, double *mpp_y_um);
/* OpenSlide's vendor ("aperio", "generic-tiff", ...) and quickhash-1 ("" if
 * absent). Valid while w lives. */
const char *ds_wsi_vendor(const ds_wsi *w);
const char *ds_wsi_quickhash(const ds_wsi *w);

/* The level whose microns per pixel (mpp_x * downsample) is nearest to
 * mpp_um (absolute difference; ties go to the finer level).
 * Returns DS_OK, DS_ERR_ARG (mpp_um <= 0) or DS_ERR_UNSUPPORTED when the
 * slide states no resolution. */
ds_status ds_wsi_pick_level(const ds_wsi *w, double mpp_um, int *level);

/* Reads the out->width x out->height region of level whose top-left corner
 * is (x_px, y_px) in level pixels into out (RGB, channels 3). Only the part
 * inside the level is read from the file; the rest is white (border tiles
 * are padded, never read out of bounds). Thread-safe.
 * Returns DS_OK, DS_ERR_ARG (bad level, image not RGB), DS_ERR_IO
 * (OpenSlide failed: corrupt tile data). */
ds_status ds_wsi_read_tile(const ds_wsi *w, int level, int64_t x_px, int64_t y_px, ds_image *out);

/* The whole slide at out_w x out_h (RGB, new image in *out), read from the
 * coarsest level still at least as large as the output (OpenSlide's best
 * level for the downsample) and area-averaged: output pixel i is the mean of
 * the source box [floor(i*W/out_w), floor((i+1)*W/out_w)) (at least one
 * pixel), per axis. Memory is bounded: the level is read in blocks of at
 * most 4096 columns by one output row.
 * Returns DS_OK, DS_ERR_ARG, DS_ERR_IO, DS_ERR_NOMEM. */
ds_status ds_wsi_read_downsampled(const ds_wsi *w, int out_w, int out_h, ds_image **out);

/* Premultiplied ARGB (OpenSlide's uint32 pixels, A in the top byte) ->
 * RGB composited on white: rgb = c + (255 - a) per channel, which is
 * un-premultiplying (C = c * 255 / a) and blending C * a/255 + 255 * (1 -
 * a/255) in one exact integer step; a = 0 gives white. rgb: [n,3]. The only
 * place where OpenSlide pixels are converted. This function can't fail. */
void ds_wsi_argb_to_rgb(const uint32_t *argb, size_t n, uint8_t *rgb);

/* ---------------------------------------------------------------------------
 * Tissue masks, as CLAM (Lu et al., Nat. Biomed. Eng. 2021,
 * wsi_core/WholeSlideImage.py segmentTissue) does on a low-resolution
 * image:
 *   1. saturation of HSV (OpenCV's 8-bit RGB2HSV: S = round(255 (max-min) / max));
 *   2. median blur, ksize x ksize, border replicated (cv2.medianBlur);
 *   3. Otsu's threshold (cv2.THRESH_OTSU), S > t is tissue, with t raised to at
 *      least sat_min (CLAM's fixed threshold, 8) so that the faint noise of an
 *      empty slide is not split into "tissue";
 *   4. tissue objects (8-connected) of fewer than min_object_px pixels removed;
 *   5. holes (4-connected background not touching the border) of at most
 *      max_hole_px pixels filled.
 * CLAM filters contours by polygon area (a_t, a_h in units of 512-px
 * reference patches); we count pixels of the same components. */
typedef struct {
    int median_ksize;      /* odd, >= 1; 7 (CLAM mthresh) */
    int sat_min;           /* 8 */
    int64_t min_object_px; /* 0 keeps every object */
    int64_t max_hole_px;   /* 0 fills no hole */
} ds_tissue_params;

/* ksize 7, sat_min 8, no object or hole filtering. Can't fail. */
ds_tissue_params ds_tissue_defaults(void);

/* rgb: RGB image; mask: [H,W] output, 1 tissue / 0 background (caller
 * buffer of width*height bytes). threshold (may be NULL): the saturation
 * threshold used. Returns DS_OK, DS_ERR_ARG, DS_ERR_NOMEM. */
ds_status ds_tissue_mask(const ds_image *rgb, const ds_tissue_params *p, uint8_t *mask, int *threshold);

/* ---------------------------------------------------------------------------
 * Scoring a slide. Tiles of tile_px at the chosen level, overlapping by
 * overlap, that touch tissue go through the model (its preprocessing, backbone
 * and scorers, ds_model_score_images) in batches. Each tile's anomaly map
 * (ds_model_anomaly_map of the heatmap scorer's patch scores at tile size;
 * a constant tile score for scorers without patch scores: knn, gaussian) is averaged with its
 * neighbours' where they overlap (sum / count), on a grid of one heatmap pixel
 * per map_step_px level pixels. Outputs in out_dir:
 *   heatmap.tif      float32 scores, pyramidal tiled TIFF (deflate), one pixel
 *                    per map_step_px level pixels, resolution tags set so that
 *                    it is aligned with the slide; 0 where no tile was scored
 *   heatmap_rgb.tif  the same in colour (inferno on [0, map_vmax]), white where
 *                    no tile was scored (JPEG)
 *   overview.png     thumbnail, heatmap blended over scored tissue, tissue
 *                    outline (blue), anomalous regions outlined (green)
 *   anomalies.geojson  QuPath FeatureCollection of anomalous regions
 *                    (heatmap >= threshold, within tissue), level-0 pixels
 *   tiles.csv        x,y (level 0),level,tissue_fraction,score,anomalous,
 *                    then one column per other scorer
 *   summary.json     level choice, grid, threshold, counts
 *   checkpoint.bin   per-batch tile results (see ds_wsi_run)
 */
struct ds_model;
struct ds_backbone;

typedef struct {
    int tile_px;            /* 512 */
    double overlap;         /* [0, 1): 0.5; stride = round(tile_px * (1 - overlap)) */
    int level;              /* -1: from mpp_um, or level 0 when mpp_um is 0 */
    double mpp_um;          /* > 0: level nearest to it (ds_wsi_pick_level) */
    int tissue_all;         /* 1: score every tile, no tissue mask */
    int batch;              /* tiles per backbone call: 16 */
    int n_threads;          /* 0 = auto */
    int resume;             /* 1: continue out_dir/checkpoint.bin */
    int has_threshold;      /* 1: use threshold, else the model's calibrated one */
    float threshold;
    float map_vmax;         /* > 0: top of the colour scale; 0 = the model's (or 2 x threshold) */
    int map_step_px;        /* level pixels per heatmap pixel: 16 */
    int scorer;             /* ds_scorer_kind of the heatmap, or -1: the model's map scorer
                               (ds_model_map_scorer) if it has one, else its first */
    int overview_px;        /* longest side of overview.png: 1024 */
    /* Called from the calling thread: stage "tissue" / "tiles" / "outputs";
     * for "tiles" after each batch is checkpointed (done = tiles in the
     * checkpoint). May be NULL. */
    ds_progress_fn progress;
    void *progress_user;
} ds_wsi_run_params;

ds_wsi_run_params ds_wsi_run_defaults(void);

typedef struct {
    int level;
    double downsample;
    int64_t level_w_px, level_h_px;
    double mpp_x_um, mpp_y_um;     /* level 0; 0 unknown */
    int stride_px;
    int64_t n_tiles_grid;          /* tiles covering the level */
    int64_t n_tiles_tissue;        /* of which scored (touch tissue) */
    int64_t n_tiles_resumed;       /* taken from the checkpoint */
    int64_t n_tiles_computed;      /* run through the model in this call */
    double score_ms;               /* reading + model time of those */
    float threshold, map_vmax;
    int n_regions;                 /* features in anomalies.geojson */
    int checkpoint_torn;           /* resume: a torn last record was cut off */
    int threads_differ;            /* resume: the checkpoint's tiles were computed with another
                                      thread count, so the outputs equal an uninterrupted run's
                                      only to float rounding */
    int heatmap_w, heatmap_h;
} ds_wsi_run_result;

/* Runs the whole pipeline for one slide; writes the outputs above into
 * out_dir (created if needed), each atomically.
 *
 * Checkpoint: after each batch of tiles its results (image scores, patch
 * scores) are appended to out_dir/checkpoint.bin with a CRC and fsync'd.
 * With resume, a checkpoint written with the same slide, model, level,
 * tiling, tissue mask and batch size is continued: complete batches are
 * kept, a torn last record is discarded, only missing tiles are computed.
 * The outputs are built from the checkpoint alone, in a fixed tile order, so
 * that an interrupted and resumed run writes the same bytes as an
 * uninterrupted one (with the same n_threads: the backbone's float results
 * depend on how its GEMMs are split; another count is accepted and reported
 * in res->threads_differ). Without resume an existing checkpoint is
 * replaced.
 *
 * Memory: tiles stream through; the heatmap is accumulated in a band of
 * rows (about tile_px / map_step_px + 2 heatmap rows) and written to disk as
 * rows complete; whole-slide arrays are bitmaps or at most 2048 x 2048
 * (tissue mask) and overview_px^2 (overview). See docs/wsi.md.
 *
 * Errors (one line naming the slide): unreadable file, level out of range,
 * no mpp for mpp_um, tile larger than the level, no tissue found, model
 * without threshold (and no has_threshold), checkpoint from other settings
 * with resume. Returns DS_OK or the error; res is filled on success. */
ds_status ds_wsi_run(const struct ds_model *m, struct ds_backbone *bb, const char *slide_path, const char *out_dir,
                     const ds_wsi_run_params *p, ds_wsi_run_result *res);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
