/* The feature loop every command shares: images (files or in memory) ->
 * decode -> preprocessing (stain normalisation, resize to SxS) -> backbone
 * in batches -> a caller's sink, one call per image in input order.
 *
 *   ds_pipeline_params p = ds_pipeline_defaults();
 *   p.size = 518; p.n_layers = 4; p.batch = 8;
 *   ds_pipeline_run(bb, &p, paths, NULL, n, my_sink, &state, &n_skipped);
 *
 * extract, fit, score and eval feed their sinks from it, and
 * ds_model_score_images (slides) runs it over images in memory. */
#ifndef DINOSCOPE_PIPELINE_H
#define DINOSCOPE_PIPELINE_H

#include "backbone.h"
#include "dinoscope.h"
#include "image.h"
#include "preprocess.h"
#include "scorer.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

/* One image's features, valid during the sink call only. */
typedef struct {
    int index;                /* position in the input list */
    const char *path;         /* the file, or NULL for images in memory */
    const ds_image *original; /* decoded image before preprocessing (keep_original or images in memory), else NULL */
    const float *feats;       /* [N, D] patch tokens (N = gh*gw of ds_backbone_grid at size x size) */
    const float *cls;         /* [D] CLS token (want_cls), else NULL */
    double prep_ms;           /* decode + preprocessing + normalisation of this image */
    double backbone_ms;       /* this image's share of its batch's forward pass */
} ds_pipeline_item;

/* Returns 0 to go on; anything else stops the run (ds_pipeline_run then
 * returns DS_ERR_STOPPED and leaves the error message to the sink). */
typedef int (*ds_pipeline_sink)(void *user, const ds_pipeline_item *item);
/* A bad input skipped under skip_bad: reason is ds_last_error()'s text. */
typedef void (*ds_pipeline_skip_fn)(void *user, int index, const char *path, const char *reason);

typedef struct {
    int size;                  /* S: SxS network input (> 0) */
    int n_layers;              /* last blocks averaged (>= 1) */
    int batch;                 /* images per backbone call (>= 1) */
    int want_cls;              /* also hand over the CLS tokens */
    int keep_original;         /* hand the decoded original image to the sink (for maps and overlays) */
    int skip_bad;              /* a file that cannot be decoded is reported to on_skip and skipped; else it ends the run */
    ds_preprocess_params prep; /* stain normalisation; .size is replaced by size */
    ds_image_load_params load; /* decoding of files (ignored for images in memory) */
    ds_progress_fn progress;   /* stage "images", done/total after each batch; may be NULL */
    void *progress_user;
    ds_pipeline_skip_fn on_skip; /* may be NULL */
    void *skip_user;
} ds_pipeline_params;

/* size 0 (set it), 4 layers, batch 1, the default preprocessing and
 * loading (window 0.5/99.5 percentiles for more than 8 bits). Can't fail. */
ds_pipeline_params ds_pipeline_defaults(void);

/* Runs n images through bb: paths[n] (files) or images[n] (in memory; give
 * exactly one of the two). Buffers are allocated once for the run.
 * n_skipped (may be NULL): inputs skipped under skip_bad.
 * Returns DS_OK; DS_ERR_STOPPED when the sink stopped it; or the first
 * decoding, preprocessing or backbone error (a bad file without skip_bad),
 * its message naming the file. */
ds_status ds_pipeline_run(ds_backbone *bb, const ds_pipeline_params *p, const char *const *paths,
                          const ds_image *const *images, int n, ds_pipeline_sink sink, void *user, int *n_skipped);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
