/* Sharded fits (shard.h): partial models and their merge.
 *
 * A partial model keeps what refitting every scorer on the union needs:
 * the pooled features (knn, gaussian), padim's per-position moments, the
 * patch bank (a coreset of keep_ratio of the part's patches) and the
 * held-out features for the thresholds. Merging is then a refit on pooled
 * data, not an average of fitted models, so that one part merges to
 * exactly a plain fit. */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/shard.h"
#include "model/model_internal.h"
#include "scorer/gaussian.h"
#include "scorer/padim.h"
#include "scorer/scorer_internal.h"

ds_shard_params ds_shard_defaults(void) { return (ds_shard_params){.index = 0, .count = 1, .keep_ratio = 1.0}; }

ds_status ds_shard_parse(const char *text, int *index, int *count) {
    long i = -1, n = -1;
    int used = 0;
    if (!text || sscanf(text, "%ld/%ld%n", &i, &n, &used) != 2 || text[used] || n < 1 || n > 100000 || i < 0 || i >= n)
        return ds_set_error(DS_ERR_ARG, "shard '%s' is not I/N with 0 <= I < N <= 100000", text ? text : "");
    *index = (int)i;
    *count = (int)n;
    return DS_OK;
}

int ds_shard_has(int64_t i, int index, int count) { return count <= 1 || i % count == index; }

/* ---- the partial model -------------------------------------------------- */

static int has_kind(const ds_fit_params *p, ds_scorer_kind k) {
    for (int i = 0; i < p->n_kinds; i++)
        if (p->kinds[i] == k) return 1;
    return 0;
}

/* pooled [n, D]: each image's mean over its N patches, in double (the
 * knn/gaussian scorers' pooling, src/scorer/scorer.c), read image by image. */
static ds_status pool_images(const ds_row_source *src, int64_t n, int64_t N, double *pooled) {
    const int D = src->dim;
    float *x = ds_alloc((size_t)N * (size_t)D, sizeof(float), "ds_model_fit_partial: an image");
    if (!x) return DS_ERR_NOMEM;
    ds_status st = DS_OK;
    for (int64_t i = 0; i < n && st == DS_OK; i++) {
        if ((st = src->read(src->user, i * N, N, x)) != DS_OK) break;
        double *o = pooled + (size_t)i * (size_t)D;
        for (int d = 0; d < D; d++) o[d] = 0;
        for (int64_t j = 0; j < N; j++)
            for (int d = 0; d < D; d++) o[d] += x[j * D + d];
        for (int d = 0; d < D; d++) o[d] /= (double)N;
    }
    free(x);
    return st;
}

static char *shard_meta(const ds_fit_params *p, const ds_shard_params *sp, int64_t n_train, int64_t n_val) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "format", "dinoscope-shard");
    const struct {
        const char *key;
        double v;
    } nums[] = {{"index", sp->index},
                {"count", sp->count},
                {"keep_ratio", sp->keep_ratio},
                {"coreset_ratio", p->scorer.coreset_ratio},
                {"coreset_proj_dim", p->scorer.coreset_proj_dim},
                {"seed", (double)p->scorer.seed},
                {"bank_repr", p->scorer.bank_repr},
                {"ivf_nlist", p->scorer.ivf_nlist},
                {"pq_m", p->scorer.pq_m},
                {"nprobe", p->scorer.nprobe},
                {"coreset_method", p->scorer.coreset_method},
                {"coreset_block", (double)p->scorer.coreset_block},
                {"max_components", p->scorer.max_components},
                {"knn_k", p->scorer.k},
                {"padim_dim", p->scorer.padim_dim},
                {"val_split", p->val_split},
                {"fpr", p->fpr},
                {"n_train", (double)n_train},
                {"n_val", (double)n_val}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) cJSON_AddNumberToObject(o, nums[i].key, nums[i].v);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

ds_status ds_model_fit_partial_rows(const ds_model_info *info, const ds_fit_params *p, const ds_shard_params *sp,
                                    const ds_row_source *images, int64_t n, int select, const char *path) {
    if (!info || !p || !sp || !images || !images->read || !path || n < 1 || info->grid_h < 1 || info->grid_w < 1 ||
        info->dim < 1 || images->dim != info->dim || images->n_rows != n * info->grid_h * info->grid_w)
        return ds_set_error(DS_ERR_ARG, "ds_model_fit_partial: bad arguments");
    if (!(sp->keep_ratio > 0 && sp->keep_ratio <= 1) || sp->count < 0 || (sp->count > 0 && (sp->index < 0 || sp->index >= sp->count)))
        return ds_set_error(DS_ERR_ARG, "ds_model_fit_partial: bad shard %d/%d or keep ratio %g", sp->index, sp->count,
                            sp->keep_ratio);
    if (has_kind(p, DS_SCORER_FLOW))
        return ds_set_error(DS_ERR_ARG, "ds_model_fit_partial: flow cannot be fitted in shards (its training is not "
                                        "a pooled statistic); fit it in one run");
    const int D = info->dim;
    const int64_t N = (int64_t)info->grid_h * info->grid_w;
    const size_t row = (size_t)N * (size_t)D;
    /* the part's images (select: every count-th from index), then fit.c's
     * hold-out rule over them, so that one part holds out what a plain fit does */
    int64_t *img = ds_alloc((size_t)n, 2 * sizeof(int64_t), "ds_model_fit_partial: image split");
    if (!img) return DS_ERR_NOMEM;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (!select || ds_shard_has(i, sp->index, sp->count)) img[m++] = i;
    int64_t nv = ds_fit_n_held_out(p, m), nt = m - nv, *idx = img + n;
    if (m == 0) {
        free(img);
        return ds_set_error(DS_ERR_ARG, "ds_model_fit_partial: shard %d/%d holds none of the %lld images", sp->index,
                            sp->count, (long long)n);
    }
    ds_fit_split_images(m, nv, idx, idx + nt);
    for (int64_t j = 0; j < m; j++) idx[j] = img[idx[j]];
    ds_subset_src trs, vas;
    ds_row_source train = ds_row_source_subset(&trs, images, idx, nt, N);
    ds_row_source vsrc = ds_row_source_subset(&vas, images, idx + nt, nv, N);
    ds_fit_params q = *p;
    q.val_split = 0;
    q.scorer.coreset_ratio = sp->keep_ratio;
    q.scorer.bank_repr = DS_BANK_F32; /* the merge encodes the merged bank */
    if (q.scorer.k > nt && nt > 0) q.scorer.k = (int)nt; /* a small part's own knn; the merge uses knn_k */
    ds_model *mod = NULL;
    double *pooled = NULL, *pd_mean = NULL, *pd_m2 = NULL;
    int *ch = NULL;
    int64_t *perm = NULL;
    float *val = NULL;
    char *meta = NULL;
    ds_status st = ds_model_fit_rows(info, &q, &train, nt, &mod);
    if (st != DS_OK) goto done;
    ds_model_extra ex[5];
    int n_ex = 0;
    meta = shard_meta(p, sp, nt, nv);
    if (!meta) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_model_fit_partial: out of memory");
        goto done;
    }
    ex[n_ex++] = (ds_model_extra){"shard/meta", DS_SECTION_BYTES, 1, {(int64_t)strlen(meta)}, meta, strlen(meta)};
    if (has_kind(p, DS_SCORER_KNN) || has_kind(p, DS_SCORER_GAUSSIAN)) {
        if (!(pooled = ds_alloc((size_t)nt * (size_t)D, sizeof(double), "ds_model_fit_partial: pooled features"))) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        if ((st = pool_images(&train, nt, N, pooled)) != DS_OK) goto done;
        ex[n_ex++] = (ds_model_extra){"shard/pooled", DS_SECTION_BYTES, 2, {nt, D}, pooled,
                                      sizeof(double) * (uint64_t)nt * (uint64_t)D};
    }
    if (has_kind(p, DS_SCORER_PADIM)) {
        int d = DS_MIN(p->scorer.padim_dim, D);
        ch = ds_alloc((size_t)d, sizeof(int), "ds_model_fit_partial: padim channels");
        perm = ds_alloc((size_t)D, sizeof(int64_t), "ds_model_fit_partial: padim channels");
        pd_mean = ds_alloc((size_t)N * (size_t)d, sizeof(double), "ds_model_fit_partial: padim means");
        pd_m2 = ds_alloc((size_t)N * (size_t)d * (size_t)d, sizeof(double), "ds_model_fit_partial: padim moments");
        if (!ch || !perm || !pd_mean || !pd_m2) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        ds_padim_channels(D, d, p->scorer.seed, perm, ch);
        /* the one-pass moments padim's own fit uses (padim.c) */
        if ((st = ds_padim_moments(&train, nt, N, ch, d, p->scorer.n_threads, pd_mean, pd_m2)) != DS_OK) goto done;
        ex[n_ex++] = (ds_model_extra){"shard/padim_mean", DS_SECTION_BYTES, 2, {N, d}, pd_mean,
                                      sizeof(double) * (uint64_t)N * (uint64_t)d};
        ex[n_ex++] = (ds_model_extra){"shard/padim_m2", DS_SECTION_BYTES, 2, {N, (int64_t)d * d}, pd_m2,
                                      sizeof(double) * (uint64_t)N * (uint64_t)d * (uint64_t)d};
    }
    if (nv) {
        if (!(val = ds_alloc(row * (size_t)nv, sizeof(float), "ds_model_fit_partial: held-out features"))) {
            st = DS_ERR_NOMEM;
            goto done;
        }
        if ((st = vsrc.read(vsrc.user, 0, nv * N, val)) != DS_OK) goto done;
        ex[n_ex++] = (ds_model_extra){"shard/val", DS_SECTION_F32, 3, {nv, N, D}, val, sizeof(float) * row * (uint64_t)nv};
    }
    const ds_scorer *sc[DS_MODEL_MAX_SCORERS];
    for (int k = 0; k < ds_model_n_scorers(mod); k++) sc[k] = ds_model_scorer(mod, k);
    st = ds_model_save_ex(path, ds_model_get_info(mod), sc, NULL, ds_model_n_scorers(mod), ex, n_ex);
done:
    ds_model_free(mod);
    free(img);
    free(val);
    free(pooled);
    free(pd_mean);
    free(pd_m2);
    free(ch);
    free(perm);
    free(meta);
    return st;
}

ds_status ds_model_fit_partial(const ds_model_info *info, const ds_fit_params *p, const ds_shard_params *sp,
                               const float *feats, int64_t n, const char *path) {
    if (!info || !feats) return ds_set_error(DS_ERR_ARG, "ds_model_fit_partial: bad arguments");
    const float *rows[1] = {feats};
    int64_t nr[1] = {n * info->grid_h * info->grid_w};
    ds_row_segments sg = {rows, nr, 1, info->dim};
    ds_row_source src = ds_row_source_of_segments(&sg);
    return ds_model_fit_partial_rows(info, p, sp, &src, n, 0, path);
}

typedef struct {
    const ds_fit_params *p;
    const ds_shard_params *sp;
    const char *path;
} partial_fit;

static ds_status fit_part(void *user, const ds_model_info *info, const ds_row_source *images, int64_t n) {
    const partial_fit *f = user;
    return ds_model_fit_partial_rows(info, f->p, f->sp, images, n, 0, f->path);
}

ds_status ds_model_fit_partial_store(struct ds_backbone *bb, const ds_pipeline_params *pp, const ds_fit_params *p,
                                     const ds_shard_params *sp, const char *const *paths, int n, const char *dir,
                                     int resume, const char *path, int *n_skipped, int64_t *n_resumed) {
    partial_fit f = {p, sp, path};
    return ds_fit_via_store(bb, pp, p, paths, n, dir, resume, fit_part, &f, n_skipped, n_resumed);
}

/* ---- the merge ------------------------------------------------------------ */

typedef struct {
    const char *path;
    ds_model *m;
    cJSON *meta;
    int index, count;
    int64_t n_train, n_val;
} part;

static double meta_num(const part *p, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(p->meta, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* A section of part p, checked: dtype and byte count. NULL with an error set. */
static const void *part_section(const part *p, const char *name, ds_section_dtype dtype, uint64_t n_bytes) {
    const ds_model_section *s = ds_model_file_section(ds_model_get_file(p->m), name);
    if (!s || s->dtype != dtype || s->n_bytes != n_bytes) {
        ds_set_error(DS_ERR_FORMAT, "ds_model_merge: partial model '%s': section '%s' is missing or has %llu bytes, "
                                    "expected %llu", p->path, name, s ? (unsigned long long)s->n_bytes : 0ULL,
                     (unsigned long long)n_bytes);
        return NULL;
    }
    return s->data;
}

static ds_status open_part(const char *path, part *p) {
    memset(p, 0, sizeof *p);
    p->path = path;
    ds_status st = ds_model_load(path, &p->m);
    if (st != DS_OK) return st;
    const ds_model_section *s = ds_model_file_section(ds_model_get_file(p->m), "shard/meta");
    char *txt = s && s->dtype == DS_SECTION_BYTES ? malloc(s->n_bytes + 1) : NULL;
    if (txt) {
        memcpy(txt, s->data, s->n_bytes);
        txt[s->n_bytes] = 0;
        p->meta = cJSON_Parse(txt);
        free(txt);
    }
    if (!p->meta)
        return ds_set_error(DS_ERR_FORMAT, "ds_model_merge: '%s' is not a partial model (fit it with --shard or "
                                           "--shard-list)", path);
    double idx = meta_num(p, "index"), cnt = meta_num(p, "count"), nt = meta_num(p, "n_train"), nv = meta_num(p, "n_val");
    if (!(cnt >= 0 && cnt <= 100000 && idx >= -1 && idx < 100000 && nt >= 1 && nt < 9e15 && nv >= 0 && nv < 9e15))
        return ds_set_error(DS_ERR_FORMAT, "ds_model_merge: partial model '%s' has bad shard metadata", path);
    p->index = (int)idx, p->count = (int)cnt, p->n_train = (int64_t)nt, p->n_val = (int64_t)nv;
    return DS_OK;
}

static ds_status mismatch(const part *a, const part *b, const char *what) {
    return ds_set_error(DS_ERR_MISMATCH, "ds_model_merge: '%s' and '%s' differ in %s", a->path, b->path, what);
}

/* The scalars that are counts of the part's own data, not parameters. */
static int is_count_scalar(const char *name) {
    return !strcmp(name, "n_train") || !strcmp(name, "k") /* knn: meta knn_k */ || !strcmp(name, "n_train_patches") || !strcmp(name, "coreset_ratio") ||
           !strcmp(name, "n_components") || !strcmp(name, "shrinkage");
}

static ds_status check_compatible(const part *a, const part *b) {
    const ds_model_info *x = ds_model_get_info(a->m), *y = ds_model_get_info(b->m);
    char what[256];
    if (strcmp(x->backbone_sha256, y->backbone_sha256)) return mismatch(a, b, "the backbone weights (SHA-256)");
    if (strcmp(x->backbone_arch, y->backbone_arch)) return mismatch(a, b, "the backbone (architecture)");
    if (x->prep.size != y->prep.size || x->prep.stain != y->prep.stain || x->prep.clahe_clip != y->prep.clahe_clip ||
        x->prep.clahe_tiles != y->prep.clahe_tiles || x->n_layers != y->n_layers || x->map_sigma != y->map_sigma)
        return mismatch(a, b, "the preprocessing (size, stain normalisation, layers or map sigma)");
    if (x->grid_h != y->grid_h || x->grid_w != y->grid_w || x->dim != y->dim) return mismatch(a, b, "the feature grid");
    int n = ds_model_n_scorers(a->m);
    if (n != ds_model_n_scorers(b->m)) return mismatch(a, b, "the scorers");
    for (int k = 0; k < n; k++) {
        const ds_scorer *sa = ds_model_scorer(a->m, k), *sb = ds_model_scorer(b->m, k);
        if (ds_scorer_get_kind(sa) != ds_scorer_get_kind(sb)) return mismatch(a, b, "the scorers");
        for (int i = 0; i < ds_scorer_n_scalars(sa); i++) {
            ds_scorer_scalar va, vb;
            ds_scorer_get_scalar(sa, i, &va);
            if (is_count_scalar(va.name)) continue;
            int found = 0;
            for (int j = 0; j < ds_scorer_n_scalars(sb); j++) {
                ds_scorer_get_scalar(sb, j, &vb);
                if (!strcmp(va.name, vb.name)) found = va.value == vb.value;
            }
            if (!found) {
                snprintf(what, sizeof what, "%s's parameter '%s'", ds_scorer_kind_name(ds_scorer_get_kind(sa)), va.name);
                return mismatch(a, b, what);
            }
        }
    }
    static const char *keys[] = {"coreset_ratio", "coreset_proj_dim", "seed", "bank_repr", "ivf_nlist", "pq_m",
                                 "nprobe", "coreset_method", "coreset_block", "max_components", "knn_k",
                                 "padim_dim", "fpr", "val_split", "count"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!(meta_num(a, keys[i]) == meta_num(b, keys[i]))) {
            snprintf(what, sizeof what, "the fit parameter '%s'", keys[i]);
            return mismatch(a, b, what);
        }
    return DS_OK;
}

static int cmp_part(const void *x, const void *y) {
    const part *a = x, *b = y;
    return (a->index > b->index) - (a->index < b->index);
}

/* Everything built by the merge that the merged scorers point into. */
typedef struct {
    float *bufs[16];
    int n;
} owned_bufs;

static float *keep(owned_bufs *o, float *p) {
    if (p) o->bufs[o->n++] = p;
    return p;
}

static ds_status merge_knn(const part *ps, int np, int64_t n_tot, int D, const ds_scorer *first, int n_threads,
                           ds_scorer **out) {
    float *x = ds_alloc((size_t)n_tot * (size_t)D, sizeof(float), "ds_model_merge: knn pooled features");
    if (!x) return DS_ERR_NOMEM;
    int64_t r = 0;
    for (int i = 0; i < np; i++) {
        const double *pl = part_section(&ps[i], "shard/pooled", DS_SECTION_BYTES,
                                        sizeof(double) * (uint64_t)ps[i].n_train * (uint64_t)D);
        if (!pl) {
            free(x);
            return DS_ERR_FORMAT;
        }
        for (size_t j = 0; j < (size_t)ps[i].n_train * (size_t)D; j++) x[(size_t)r * D + j] = (float)pl[j];
        r += ps[i].n_train;
    }
    ds_scorer_params sp = ds_scorer_defaults();
    ds_scorer_params_of(first, &sp);
    sp.k = (int)meta_num(&ps[0], "knn_k");
    sp.bank_repr = (ds_bank_repr)meta_num(&ps[0], "bank_repr");
    if (sp.bank_repr == DS_BANK_IVFPQ) sp.bank_repr = DS_BANK_F32; /* as ds_model_fit_rows: too few rows to train */
    sp.n_threads = n_threads;
    /* each image one "patch": its pooled feature pools to itself */
    ds_status st = ds_scorer_fit(DS_SCORER_KNN, &sp, x, n_tot, 1, D, out);
    free(x);
    return st;
}

static ds_status merge_gaussian(const part *ps, int np, int64_t n_tot, int D, int n_threads, owned_bufs *ob,
                                ds_scorer **out) {
    double *X = ds_alloc((size_t)n_tot * (size_t)D, sizeof(double), "ds_model_merge: gaussian pooled features");
    if (!X) return DS_ERR_NOMEM;
    size_t r = 0;
    for (int i = 0; i < np; i++) {
        size_t nb = sizeof(double) * (size_t)ps[i].n_train * (size_t)D;
        const void *pl = part_section(&ps[i], "shard/pooled", DS_SECTION_BYTES, nb);
        if (!pl) {
            free(X);
            return DS_ERR_FORMAT;
        }
        memcpy(X + r, pl, nb);
        r += (size_t)ps[i].n_train * (size_t)D;
    }
    ds_gaussian_fit_out g = {0};
    ds_status st = ds_gaussian_fit(X, n_tot, D, (int)meta_num(&ps[0], "max_components"), n_threads, &g);
    free(X);
    if (st != DS_OK) return st;
    keep(ob, g.mean), keep(ob, g.components), keep(ob, g.location), keep(ob, g.precision);
    int c = g.n_components;
    ds_scorer_scalar sc[] = {{"n_components", c}, {"shrinkage", g.shrinkage}, {"n_train", (double)n_tot}};
    ds_scorer_array ar[] = {{"mean", 1, {D, 0}, g.mean, DS_ARRAY_F32},
                            {"components", 2, {c, D}, g.components, DS_ARRAY_F32},
                            {"location", 1, {c, 0}, g.location, DS_ARRAY_F32},
                            {"precision", 2, {c, c}, g.precision, DS_ARRAY_F32}};
    return ds_scorer_from_parts(DS_SCORER_GAUSSIAN, sc, 3, ar, 4, out);
}

/* The rows of the part banks, decoded from any representation
 * (ds_nn_bank_row), as one source. */
typedef struct {
    const ds_nn_bank *const *banks;
    const int64_t *first; /* [np + 1]: the union's row of each bank's row 0 */
    int np;
} union_src;

static int union_read(void *user, int64_t first, int64_t n, float *out) {
    const union_src *u = user;
    const int D = ds_nn_bank_dim(u->banks[0]);
    for (int b = 0; n > 0 && b < u->np; b++)
        for (; n > 0 && first < u->first[b + 1]; first++, n--, out += D) {
            ds_status st = ds_nn_bank_row(u->banks[b], first - u->first[b], out);
            if (st != DS_OK) return st;
        }
    return DS_OK;
}

/* The merged bank: the target ratio of all n_patches training patches,
 * selected from the union of the part banks by patchbank's own fit over
 * them (exact or blocked coreset as coreset_method resolves for the union,
 * the bank then encoded in the target representation). */
static ds_status merge_patchbank(const part *ps, int np, int k, int64_t n_patches, const ds_merge_params *mp,
                                 ds_scorer **out) {
    const ds_nn_bank *banks[np];
    int64_t first[np + 1];
    first[0] = 0;
    for (int i = 0; i < np; i++) {
        banks[i] = ds_scorer_bank(ds_model_scorer(ps[i].m, k));
        first[i + 1] = first[i] + ds_nn_bank_rows(banks[i]);
    }
    const int64_t M = first[np];
    ds_scorer_params sp = ds_scorer_defaults();
    ds_scorer_params_of(ds_model_scorer(ps[0].m, k), &sp);
    double ratio = meta_num(&ps[0], "coreset_ratio");
    sp.coreset_proj_dim = (int)meta_num(&ps[0], "coreset_proj_dim");
    sp.seed = (uint64_t)meta_num(&ps[0], "seed");
    sp.bank_repr = (ds_bank_repr)meta_num(&ps[0], "bank_repr");
    sp.ivf_nlist = (int)meta_num(&ps[0], "ivf_nlist");
    sp.pq_m = (int)meta_num(&ps[0], "pq_m");
    sp.nprobe = (int)meta_num(&ps[0], "nprobe");
    sp.coreset_method = (ds_coreset_method)meta_num(&ps[0], "coreset_method");
    sp.coreset_block = (int64_t)meta_num(&ps[0], "coreset_block");
    sp.n_threads = mp->n_threads;
    sp.progress = mp->progress;
    sp.progress_user = mp->progress_user;
    sp.coreset_ratio = ratio;
    int64_t n_keep = ds_patchbank_n_keep(&sp, n_patches); /* as fit_patchbank over all the patches */
    if (n_keep > M)
        return ds_set_error(DS_ERR_ARG, "ds_model_merge: the parts keep %lld bank patches, the merged bank needs %lld "
                                        "(refit the parts with a larger --shard-keep)", (long long)M, (long long)n_keep);
    /* the same n_keep of the M rows of the union (+0.5: int() of the product is n_keep exactly) */
    sp.coreset_ratio = n_keep == M ? 1.0 : ((double)n_keep + 0.5) / (double)M;
    union_src us = {banks, first, np};
    ds_row_source src = {.n_rows = M, .dim = ds_nn_bank_dim(banks[0]), .read = union_read, .user = &us};
    return ds_scorer_fit_rows(DS_SCORER_PATCHBANK, &sp, &src, M, 1, out);
}

static ds_status merge_padim(const part *ps, int np, int k, int64_t n_tot, int64_t N, int D, int n_threads,
                             owned_bufs *ob, ds_scorer **out) {
    ds_scorer_array ch;
    ds_scorer_get_array(ds_model_scorer(ps[0].m, k), 0, &ch);
    const int d = (int)ch.shape[0];
    const size_t dd = (size_t)d * d;
    for (int i = 1; i < np; i++) {
        ds_scorer_array c2;
        ds_scorer_get_array(ds_model_scorer(ps[i].m, k), 0, &c2);
        if (c2.shape[0] != d || memcmp(c2.data, ch.data, sizeof(float) * (size_t)d))
            return mismatch(&ps[0], &ps[i], "padim's channels");
    }
    const double *mean[np], *m2[np];
    for (int i = 0; i < np; i++) {
        mean[i] = part_section(&ps[i], "shard/padim_mean", DS_SECTION_BYTES, sizeof(double) * (uint64_t)N * d);
        m2[i] = part_section(&ps[i], "shard/padim_m2", DS_SECTION_BYTES, sizeof(double) * (uint64_t)N * dd);
        if (!mean[i] || !m2[i]) return DS_ERR_FORMAT;
    }
    float *f_mean = keep(ob, ds_alloc((size_t)N * d, sizeof(float), "ds_model_merge: padim means"));
    float *f_prec = keep(ob, ds_alloc((size_t)N * dd, sizeof(float), "ds_model_merge: padim precisions"));
    int T = ds_resolve_threads(n_threads);
    double *ws = ds_alloc((size_t)T, sizeof(double) * (dd + 2 * (size_t)d), "ds_model_merge: padim workspace");
    if (!f_mean || !f_prec || !ws) {
        free(ws);
        return DS_ERR_NOMEM;
    }
    int64_t bad_pos = -1;
    int blas_prev = ds_blas_set_threads(1);
#pragma omp parallel num_threads(T)
    {
        double *M = ws + (size_t)omp_get_thread_num() * (dd + 2 * (size_t)d), *mu = M + dd, *delta = mu + d;
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < N; i++) {
            /* Chan, Golub and LeVeque's pairwise update of (n, mean, M2) */
            double n_acc = 0;
            for (int p = 0; p < np; p++) {
                const double *pm = mean[p] + (size_t)i * d, *pM = m2[p] + (size_t)i * dd;
                double nb = (double)ps[p].n_train;
                if (p == 0) {
                    memcpy(mu, pm, sizeof(double) * (size_t)d);
                    memcpy(M, pM, sizeof(double) * dd);
                    n_acc = nb;
                    continue;
                }
                double nn = n_acc + nb, f = n_acc * nb / nn;
                for (int c = 0; c < d; c++) delta[c] = pm[c] - mu[c];
                for (int a = 0; a < d; a++)
                    for (int b = 0; b < d; b++) M[(size_t)a * d + b] += pM[(size_t)a * d + b] + f * delta[a] * delta[b];
                for (int c = 0; c < d; c++) mu[c] += delta[c] * nb / nn;
                n_acc = nn;
            }
            for (size_t j = 0; j < dd; j++) M[j] /= (double)(n_tot - 1); /* np.cov: n - 1 */
            for (int c = 0; c < d; c++) f_mean[(size_t)i * d + c] = (float)mu[c];
            if (ds_padim_inverse(M, d, f_prec + (size_t)i * dd) != 0) {
#pragma omp critical(ds_merge_padim_err)
                if (bad_pos < 0 || i < bad_pos) bad_pos = i;
            }
        }
    }
    ds_blas_set_threads(blas_prev);
    free(ws);
    if (bad_pos >= 0)
        return ds_set_error(DS_ERR_ARG, "ds_model_merge: padim covariance at patch position %lld is not invertible",
                            (long long)bad_pos);
    ds_scorer_scalar sc[] = {{"dim", D}, {"n_train", (double)n_tot}};
    ds_scorer_array ar[] = {{"channels", 1, {d, 0}, ch.data, DS_ARRAY_F32},
                            {"mean", 2, {N, d}, f_mean, DS_ARRAY_F32},
                            {"precision", 2, {N, (int64_t)dd}, f_prec, DS_ARRAY_F32}};
    return ds_scorer_from_parts(DS_SCORER_PADIM, sc, 2, ar, 3, out);
}

/* The union of the parts' held-out features [n_val, N, D]; NULL if none. */
static ds_status union_val(const part *ps, int np, size_t row, int64_t *n_val, float **out) {
    int64_t nv = 0;
    for (int i = 0; i < np; i++) nv += ps[i].n_val;
    *n_val = nv;
    *out = NULL;
    if (nv == 0) return DS_OK;
    float *v = ds_alloc((size_t)nv * row, sizeof(float), "ds_model_merge: held-out features");
    if (!v) return DS_ERR_NOMEM;
    size_t r = 0;
    for (int i = 0; i < np; i++) {
        if (!ps[i].n_val) continue;
        const void *s = part_section(&ps[i], "shard/val", DS_SECTION_F32, sizeof(float) * row * (uint64_t)ps[i].n_val);
        if (!s) {
            free(v);
            return DS_ERR_FORMAT;
        }
        memcpy(v + r, s, sizeof(float) * row * (size_t)ps[i].n_val);
        r += row * (size_t)ps[i].n_val;
    }
    *out = v;
    return DS_OK;
}

static ds_status check_parts(part *ps, int n) {
    for (int i = 1; i < n; i++) {
        ds_status st = check_compatible(&ps[0], &ps[i]);
        if (st != DS_OK) return st;
    }
    int count = ps[0].count;
    if (count == 0) return DS_OK; /* explicit lists: the caller vouches for them */
    qsort(ps, (size_t)n, sizeof *ps, cmp_part);
    for (int i = 0; i < n; i++) {
        if (i > 0 && ps[i].index == ps[i - 1].index)
            return ds_set_error(DS_ERR_ARG, "ds_model_merge: '%s' and '%s' are both shard %d/%d", ps[i - 1].path,
                                ps[i].path, ps[i].index, count);
        if (ps[i].index != i || i >= count)
            return ds_set_error(DS_ERR_ARG, "ds_model_merge: shard %d/%d is missing", i, count);
    }
    if (n != count) return ds_set_error(DS_ERR_ARG, "ds_model_merge: shard %d/%d is missing", n, count);
    return DS_OK;
}

ds_status ds_model_merge(const char *const *paths, int n, const ds_merge_params *mp, const char *out_path) {
    if (!paths || n < 1 || !out_path) return ds_set_error(DS_ERR_ARG, "ds_model_merge: give partial models and an output");
    ds_merge_params dflt = {0};
    if (!mp) mp = &dflt;
    part *ps = calloc((size_t)n, sizeof *ps);
    if (!ps) return ds_set_error(DS_ERR_NOMEM, "ds_model_merge: out of memory");
    ds_status st = DS_OK;
    ds_scorer *sc[DS_MODEL_MAX_SCORERS] = {0};
    ds_scorer_calibration cal[DS_MODEL_MAX_SCORERS] = {0};
    owned_bufs ob = {0};
    float *val = NULL;
    int opened = 0;
    for (; opened < n && st == DS_OK; opened++) st = open_part(paths[opened], &ps[opened]);
    if (st == DS_OK) st = check_parts(ps, n);
    if (st != DS_OK) goto done;
    ds_model_info info = *ds_model_get_info(ps[0].m);
    const int D = info.dim;
    const int64_t N = (int64_t)info.grid_h * info.grid_w;
    int64_t n_tot = 0, n_val = 0;
    for (int i = 0; i < n; i++) n_tot += ps[i].n_train;
    info.n_train = n_tot;
    int n_sc = ds_model_n_scorers(ps[0].m);
    for (int k = 0; k < n_sc && st == DS_OK; k++) {
        const ds_scorer *first = ds_model_scorer(ps[0].m, k);
        ds_scorer_kind kind = ds_scorer_get_kind(first);
        if (kind == DS_SCORER_KNN) st = merge_knn(ps, n, n_tot, D, first, mp->n_threads, &sc[k]);
        else if (kind == DS_SCORER_GAUSSIAN) st = merge_gaussian(ps, n, n_tot, D, mp->n_threads, &ob, &sc[k]);
        else if (kind == DS_SCORER_PATCHBANK) st = merge_patchbank(ps, n, k, n_tot * N, mp, &sc[k]);
        else if (kind == DS_SCORER_PADIM) st = merge_padim(ps, n, k, n_tot, N, D, mp->n_threads, &ob, &sc[k]);
        else st = ds_set_error(DS_ERR_UNSUPPORTED, "ds_model_merge: %s cannot be merged", ds_scorer_kind_name(kind));
        if (st != DS_OK) ds_set_error(st, "%s: %s", ds_scorer_kind_name(kind), ds_last_error());
    }
    if (st == DS_OK) st = union_val(ps, n, (size_t)N * (size_t)D, &n_val, &val);
    double fpr = meta_num(&ps[0], "fpr");
    const float *vrows[1] = {val};
    int64_t vn[1] = {n_val * N};
    ds_row_segments vs = {vrows, vn, 1, D};
    ds_row_source vsrc = ds_row_source_of_segments(&vs);
    for (int k = 0; k < n_sc && st == DS_OK; k++)
        st = ds_fit_calibrate(&info, &vsrc, n_val, mp->n_threads, fpr, sc[k], &cal[k]);
    if (st == DS_OK) st = ds_model_save(out_path, &info, (const ds_scorer *const *)sc, cal, n_sc);
done:
    for (int k = 0; k < DS_MODEL_MAX_SCORERS; k++) ds_scorer_free(sc[k]);
    for (int i = 0; i < ob.n; i++) free(ob.bufs[i]);
    free(val);
    for (int i = 0; i < n; i++) {
        ds_model_free(ps[i].m);
        cJSON_Delete(ps[i].meta);
    }
    free(ps);
    return st;
}
