/* Internal to src/wsi (not installed). */
#ifndef DS_WSI_INTERNAL_H
#define DS_WSI_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dinoscope/wsi.h"

/* Reads the w x h region of level at level pixels (x, y) into rgb (rows of
 * rgb_stride bytes), white outside the level. scratch: caller buffer of
 * scratch_px uint32 (>= 1) for OpenSlide's ARGB; the region is read in row
 * chunks of at most scratch_px pixels, so one call per region when it fits.
 * Thread-safe (OpenSlide handles are). Returns DS_OK or DS_ERR_IO. */
ds_status ds_wsi_read_rgb(const ds_wsi *w, int level, int64_t x, int64_t y, int width, int height, uint8_t *rgb,
                          size_t rgb_stride, uint32_t *scratch, size_t scratch_px);
const char *ds_wsi_path(const ds_wsi *w);
int64_t ds_wsi_file_size(const ds_wsi *w);

/* ---- anomalous regions (regions.c) ----------------------------------------
 * Fed one heatmap row at a time (top to bottom), it labels the 4-connected
 * components of the anomalous cells on the fly (union-find over runs,
 * memory ~ number of runs) with their max / sum / count of scores, and keeps
 * a bitmap of the cells; at the end it traces each component's outline
 * (crack following along cell edges) and its holes. */
typedef struct ds_regions ds_regions;

ds_status ds_regions_create(int width, int height, ds_regions **out);
void ds_regions_free(ds_regions *r);
/* row y (rows must come in order 0..height-1): anomalous[x] != 0 marks a
 * cell, values[x] its score. */
ds_status ds_regions_add_row(ds_regions *r, int y, const uint8_t *anomalous, const float *values);
/* 1 if cell (x, y) is anomalous (after its row was added). */
int ds_regions_cell(const ds_regions *r, int x, int y);

/* Vertex coordinates are written as (X * sx, Y * sy) clamped to
 * [0, max_x] x [0, max_y], with X, Y cell-corner indices: level-0 pixels
 * when sx = map_step * downsample. */
typedef struct {
    double sx, sy, max_x, max_y;
    double mpp_x_um, mpp_y_um; /* 0: no area in microns */
} ds_regions_geo;

/* Finishes labelling, traces the outlines and writes a QuPath GeoJSON
 * FeatureCollection to fp. *n_features: regions written.
 * Returns DS_OK, DS_ERR_NOMEM or DS_ERR_IO. */
ds_status ds_regions_write_geojson(ds_regions *r, const ds_regions_geo *geo, FILE *fp, int *n_features);

/* ---- checkpoint (checkpoint.c) --------------------------------------------
 * out_dir/checkpoint.bin:
 *   "DSWSICK1", u32 header length, header text ("key=value\n" lines that
 *   identify the run), then per batch a record:
 *   u32 "DSRB", u32 batch index, u32 first tile, u32 n tiles,
 *   n * (n_scores + n_patch) f32, u32 CRC-32 of all of the record before it.
 * Little-endian (the machines we run on). */
typedef struct ds_ckpt ds_ckpt;

/* Opens path for the run described by header (lines that must match) and
 * soft (lines that may differ: results then agree only to float rounding,
 * e.g. the thread count). resume: an existing file whose header starts with
 * header is continued (complete records kept, a torn tail cut off) and
 * *soft_differs tells whether its soft lines differ; one with another header
 * is DS_ERR_MISMATCH naming the first differing line; !resume or no file: a
 * new file. *n_done_batches: records kept (they are batches 0..n-1). */
ds_status ds_ckpt_open(const char *path, const char *header, const char *soft, int resume, int n_scores, int n_patch,
                       int64_t batch, int64_t n_tiles, ds_ckpt **out, int64_t *n_done_batches, bool *truncated,
                       bool *soft_differs);
/* Appends batch b (tiles [first, first+n)): vals [n, n_scores + n_patch];
 * flushes and fsyncs. */
ds_status ds_ckpt_append(ds_ckpt *c, int64_t b, int64_t first, int n, const float *vals);
/* Rewinds for reading the records in order; ds_ckpt_next reads the next
 * tile's values into vals [n_scores + n_patch]. */
ds_status ds_ckpt_rewind(ds_ckpt *c);
ds_status ds_ckpt_next(ds_ckpt *c, float *vals);
void ds_ckpt_close(ds_ckpt *c);

#endif
