/* Feature stores: the features of a fit's images on disk, so that a fit
 * never holds them all in memory, survives being killed, and can be fitted
 * again with other scorers or coreset ratios.
 *
 *   ds_feature_store *w;
 *   int64_t done;
 *   ds_store_create("work/", &info, paths, n, 1, &w, &done); // resume if it matches
 *   for each image from `done` on: ds_store_append(w, feats); ... ds_store_commit(w, inputs_done);
 *   ds_store_finish(w); ds_store_close(w);
 *   ds_store_open("work/", &r);                  // a finished store, mapped
 *   ds_row_source src = ds_store_rows(r);        // n * N rows of D (scorer.h)
 *   ds_model_fit_rows(ds_store_info(r), &fp, &src, ds_store_n_images(r), &m);
 *
 * A store is a directory:
 *   store.txt     what the features are: backbone (SHA-256, architecture),
 *                 input size, layers, preprocessing, grid and channels, and
 *                 the number and CRC-32 of the input paths (key=value lines;
 *                 a resume must match all of them but backbone_file, as the
 *                 slide checkpoint, src/wsi/checkpoint.c)
 *   features.f32  float32 little-endian rows, [n_images, N, D], appended
 *   progress.txt  inputs_done, rows (images), complete: rewritten
 *                 atomically after each commit, once the features written
 *                 so far are on disk (fdatasync), so that a killed run
 *                 loses at most the uncommitted batch; bytes past `rows`
 *                 images are cut off on resume.
 * Reading maps features.f32 read-only and releases the pages behind the
 * reader (MADV_DONTNEED every DS_STORE_WINDOW bytes), so that a pass over a
 * store larger than memory keeps about DS_STORE_WINDOW bytes resident.
 * The same reader maps several .npy files of [n_i, N, D] (ds_store_open_npy). */
#ifndef DINOSCOPE_STORE_H
#define DINOSCOPE_STORE_H

#include "dinoscope.h"
#include "model.h"
#include "scorer.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

#define DS_STORE_WINDOW ((size_t)32 << 20)

typedef struct ds_feature_store ds_feature_store;

/* Creates dir (one level) and a store for the n_inputs paths with info's
 * identity (backbone, preprocessing, grid_h x grid_w patches of dim), or
 * with resume != 0 reopens the store there if its identity matches:
 * *inputs_done (may be NULL) gets the number of inputs already in it (0 for
 * a new store, n_inputs for a finished one), and writing goes on after the
 * last committed image. A store there that does not match is
 * DS_ERR_MISMATCH naming the first differing line (resume == 0 replaces
 * it). Returns DS_OK, DS_ERR_IO, DS_ERR_MISMATCH, DS_ERR_ARG. */
ds_status ds_store_create(const char *dir, const ds_model_info *info, const char *const *paths, int n_inputs,
                          int resume, ds_feature_store **out, int64_t *inputs_done);
/* Appends one image's features [N, D]. DS_ERR_IO (disk full...) names the file. */
ds_status ds_store_append(ds_feature_store *s, const float *feats);
/* Makes the images appended so far durable, then records inputs_done (the
 * inputs consumed, skipped ones included). */
ds_status ds_store_commit(ds_feature_store *s, int64_t inputs_done);
/* ds_store_commit of every input, marked complete. */
ds_status ds_store_finish(ds_feature_store *s);

/* Opens a finished store for reading (mapped). Errors: DS_ERR_IO,
 * DS_ERR_FORMAT (unreadable store.txt, features.f32 shorter than its rows),
 * DS_ERR_ARG (not finished: resume the fit that writes it). */
ds_status ds_store_open(const char *dir, ds_feature_store **out);
/* Maps n .npy files of float32 [n_i, N, D] (ds_npy_map_f32: header and
 * size checked first), read as their concatenation. All must have the same
 * N and D (DS_ERR_SHAPE naming the file). ds_store_info is NULL for them. */
ds_status ds_store_open_npy(const char *const *paths, int n, ds_feature_store **out);
void ds_store_close(ds_feature_store *s);

/* 1 if dir holds a store (a store.txt), else 0. Can't fail. */
int ds_store_exists(const char *dir);
int64_t ds_store_n_images(const ds_feature_store *s);
/* N (patches per image) and D (channels). */
void ds_store_shape(const ds_feature_store *s, int64_t *N, int *D);
/* The identity recorded at creation (n_train 0), or NULL for .npy files. */
const ds_model_info *ds_store_info(const ds_feature_store *s);
/* The rows of an opened store: n_images * N rows of D, valid while s is
 * open; reads copy from the mapping (one reader at a time). */
ds_row_source ds_store_rows(ds_feature_store *s);

/* ds_model_fit with the features going to a store in dir instead of
 * memory: each batch of the pipeline is appended and committed (then
 * pp->progress is called, so a run killed from it keeps that batch), the
 * store is finished, mapped and fitted with ds_model_fit_rows. With resume
 * and a matching store in dir, the images already in it are not run again
 * (*n_resumed, may be NULL, gets their number; a finished store runs none).
 * The store stays in dir (the caller removes it when it wants).
 * Returns DS_OK or the first error (as ds_model_fit, ds_store_create). */
ds_status ds_model_fit_store(struct ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                             const char *const *paths, int n, const char *dir, int resume, ds_model **out,
                             int *n_skipped, int64_t *n_resumed);

/* What a fit of n_images will hold (the CLI prints it before starting,
 * and checks peak_bytes against --mem-limit). */
typedef struct {
    int64_t n_images, n_train, n_val;
    int64_t n_patches;         /* training patches */
    double store_bytes;        /* features of all the images on disk */
    int64_t bank_rows;         /* patchbank: rows kept (0 without patchbank) */
    double bank_bytes;
    ds_coreset_method coreset; /* patchbank: the method auto resolves to */
    double coreset_bytes;      /* its working set */
    double peak_bytes;         /* expected peak of the fitting stage (the backbone pass apart) */
} ds_fit_plan;

/* Fills plan for n_images images of info's grid with p's scorers. Can't fail. */
void ds_fit_plan_of(const ds_model_info *info, const ds_fit_params *p, int64_t n_images, ds_fit_plan *plan);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
