/* Fitted models on top of the section container (model_file.c). The "meta"
 * section is a JSON document:
 *   {"format": "dinoscope-model", "dinoscope_version": "...",
 *    "backbone": {"file", "sha256", "arch"},
 *    "preprocess": {"size", "layers", "stain_norm", "clahe_clip", "clahe_tiles"},
 *    "features": {"grid_h", "grid_w", "dim"}, "n_train": n,
 *    "maps": {"sigma"} (absent before it was stored: sigma 4),
 *    "scorers": [{"kind", "scalars": {name: value}, "arrays": [section names],
 *                 "calibration": {...} | null}]}
 * and each scorer array is the section "<kind>/<array name>". */
#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/model.h"
#include "model/model_internal.h"

struct ds_model {
    ds_model_file *file;
    char *meta;
    ds_model_info info;
    int n;
    ds_scorer *scorers[DS_MODEL_MAX_SCORERS];
    ds_scorer_calibration calib[DS_MODEL_MAX_SCORERS];
};

/* A scorer array's dtype in the file, and back (-1: not an array dtype). */
static ds_section_dtype section_dtype(ds_array_dtype d) {
    switch (d) {
    case DS_ARRAY_I8: return DS_SECTION_I8;
    case DS_ARRAY_U8: return DS_SECTION_U8;
    case DS_ARRAY_U16: return DS_SECTION_U16;
    case DS_ARRAY_I64: return DS_SECTION_I64;
    default: return DS_SECTION_F32;
    }
}
static int array_dtype(ds_section_dtype d) {
    switch (d) {
    case DS_SECTION_F32: return DS_ARRAY_F32;
    case DS_SECTION_I8: return DS_ARRAY_I8;
    case DS_SECTION_U8: return DS_ARRAY_U8;
    case DS_SECTION_U16: return DS_ARRAY_U16;
    case DS_SECTION_I64: return DS_ARRAY_I64;
    default: return -1;
    }
}

static const char *stain_name(ds_stain_norm s) { return s == DS_STAIN_CLAHE ? "clahe" : "none"; }

/* The "meta" document of a model; NULL when out of memory. */
static char *meta_json(const ds_model_info *info, const ds_scorer *const *scorers, const ds_scorer_calibration *calib,
                       int n_scorers) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "dinoscope-model");
    cJSON_AddStringToObject(root, "dinoscope_version", ds_version());
    cJSON *bb = cJSON_AddObjectToObject(root, "backbone");
    cJSON_AddStringToObject(bb, "file", info->backbone_file);
    cJSON_AddStringToObject(bb, "sha256", info->backbone_sha256);
    cJSON_AddStringToObject(bb, "arch", info->backbone_arch);
    cJSON *pp = cJSON_AddObjectToObject(root, "preprocess");
    cJSON_AddNumberToObject(pp, "size", info->prep.size);
    cJSON_AddNumberToObject(pp, "layers", info->n_layers);
    cJSON_AddStringToObject(pp, "stain_norm", stain_name(info->prep.stain));
    cJSON_AddNumberToObject(pp, "clahe_clip", info->prep.clahe_clip);
    cJSON_AddNumberToObject(pp, "clahe_tiles", info->prep.clahe_tiles);
    cJSON *fe = cJSON_AddObjectToObject(root, "features");
    cJSON_AddNumberToObject(fe, "grid_h", info->grid_h);
    cJSON_AddNumberToObject(fe, "grid_w", info->grid_w);
    cJSON_AddNumberToObject(fe, "dim", info->dim);
    cJSON_AddNumberToObject(root, "n_train", (double)info->n_train);
    cJSON *mp = cJSON_AddObjectToObject(root, "maps");
    cJSON_AddNumberToObject(mp, "sigma", info->map_sigma);
    cJSON *arr = cJSON_AddArrayToObject(root, "scorers");
    for (int i = 0; i < n_scorers; i++) {
        const ds_scorer *s = scorers[i];
        cJSON *o = cJSON_CreateObject();
        const char *kind = ds_scorer_kind_name(ds_scorer_get_kind(s));
        cJSON_AddStringToObject(o, "kind", kind);
        cJSON *sc = cJSON_AddObjectToObject(o, "scalars");
        for (int j = 0; j < ds_scorer_n_scalars(s); j++) {
            ds_scorer_scalar v;
            ds_scorer_get_scalar(s, j, &v);
            cJSON_AddNumberToObject(sc, v.name, v.value);
        }
        cJSON *an = cJSON_AddArrayToObject(o, "arrays");
        for (int j = 0; j < ds_scorer_n_arrays(s); j++) {
            ds_scorer_array a;
            ds_scorer_get_array(s, j, &a);
            char name[128];
            snprintf(name, sizeof name, "%s/%s", kind, a.name);
            cJSON_AddItemToArray(an, cJSON_CreateString(name));
        }
        if (calib && (calib[i].has_threshold || calib[i].map_vmax > 0)) {
            cJSON *c = cJSON_AddObjectToObject(o, "calibration");
            cJSON_AddBoolToObject(c, "has_threshold", calib[i].has_threshold);
            cJSON_AddNumberToObject(c, "threshold_fpr", calib[i].threshold_fpr);
            cJSON_AddNumberToObject(c, "threshold", calib[i].threshold);
            cJSON_AddNumberToObject(c, "n_val", calib[i].n_val);
            cJSON_AddNumberToObject(c, "map_vmax", calib[i].map_vmax);
            if (calib[i].has_map_threshold) cJSON_AddNumberToObject(c, "map_threshold", calib[i].map_threshold);
        } else {
            cJSON_AddNullToObject(o, "calibration");
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *meta = cJSON_Print(root);
    cJSON_Delete(root);
    return meta;
}

ds_status ds_model_save(const char *path, const ds_model_info *info, const ds_scorer *const *scorers,
                        const ds_scorer_calibration *calib, int n_scorers) {
    return ds_model_save_ex(path, info, scorers, calib, n_scorers, NULL, 0);
}

ds_status ds_model_save_ex(const char *path, const ds_model_info *info, const ds_scorer *const *scorers,
                           const ds_scorer_calibration *calib, int n_scorers, const ds_model_extra *extra,
                           int n_extra) {
    if (!path || !info || !scorers || n_scorers < 1 || n_scorers > DS_MODEL_MAX_SCORERS)
        return ds_set_error(DS_ERR_ARG, "ds_model_save: bad arguments");
    char *meta = meta_json(info, scorers, calib, n_scorers);
    if (!meta) return ds_set_error(DS_ERR_NOMEM, "ds_model_save: out of memory");

    ds_model_writer *w;
    ds_status st = ds_model_writer_open(path, &w);
    if (st != DS_OK) {
        free(meta);
        return st;
    }
    int64_t mlen = (int64_t)strlen(meta);
    st = ds_model_writer_add(w, "meta", DS_SECTION_BYTES, 1, &mlen, meta, (uint64_t)mlen);
    free(meta);
    for (int i = 0; st == DS_OK && i < n_scorers; i++) {
        const ds_scorer *s = scorers[i];
        const char *kind = ds_scorer_kind_name(ds_scorer_get_kind(s));
        for (int j = 0; st == DS_OK && j < ds_scorer_n_arrays(s); j++) {
            ds_scorer_array a;
            ds_scorer_get_array(s, j, &a);
            char name[128];
            snprintf(name, sizeof name, "%s/%s", kind, a.name);
            uint64_t n = (uint64_t)a.shape[0] * (uint64_t)(a.n_dims > 1 ? a.shape[1] : 1);
            st = ds_model_writer_add(w, name, section_dtype(a.dtype), a.n_dims, a.shape, a.data,
                                     n * ds_array_dtype_size(a.dtype));
        }
    }
    for (int i = 0; st == DS_OK && i < n_extra; i++)
        st = ds_model_writer_add(w, extra[i].name, extra[i].dtype, extra[i].n_dims, extra[i].shape, extra[i].data,
                                 extra[i].n_bytes);
    ds_status st2 = ds_model_writer_close(w, st == DS_OK);
    return st != DS_OK ? st : st2;
}

/* JSON accessors that fail with a message naming the model and the field. */
static ds_status jnum(const char *path, const cJSON *o, const char *key, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return ds_set_error(DS_ERR_FORMAT, "model '%s': metadata field '%s' missing or not a number", path, key);
    *out = v->valuedouble;
    return DS_OK;
}
/* Integers and floats are range-checked before the conversion: a double
 * outside the target's range is undefined behaviour (C11 6.3.1.4, 6.3.1.5),
 * and a hostile file may say 1e300. */
static ds_status jint(const char *path, const cJSON *o, const char *key, int *out) {
    double d = 0;
    ds_status st = jnum(path, o, key, &d);
    if (st != DS_OK) return st;
    if (!(d >= INT_MIN && d <= INT_MAX) || d != floor(d))
        return ds_set_error(DS_ERR_FORMAT, "model '%s': metadata field '%s' = %g, expected an integer in %d..%d", path, key,
                            d, INT_MIN, INT_MAX);
    *out = (int)d;
    return DS_OK;
}
static ds_status jfloat(const char *path, const cJSON *o, const char *key, float *out) {
    double d = 0;
    ds_status st = jnum(path, o, key, &d);
    if (st != DS_OK) return st;
    if (!(fabs(d) <= FLT_MAX))
        return ds_set_error(DS_ERR_FORMAT, "model '%s': metadata field '%s' = %g is not a finite float", path, key, d);
    *out = (float)d;
    return DS_OK;
}
static ds_status jstr(const char *path, const cJSON *o, const char *key, char *dst, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
        return ds_set_error(DS_ERR_FORMAT, "model '%s': metadata field '%s' missing or not a string", path, key);
    strcpy(dst, v->valuestring);
    return DS_OK;
}

static ds_status parse_meta(ds_model *m, const char *path) {
    cJSON *root = cJSON_Parse(m->meta);
    ds_status st = DS_OK;
    double d = 0;
    char buf[32];
    if (!root) return ds_set_error(DS_ERR_FORMAT, "model '%s': metadata is not valid JSON", path);
    ds_model_info *in = &m->info;
    const cJSON *bb = cJSON_GetObjectItemCaseSensitive(root, "backbone");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "preprocess");
    const cJSON *fe = cJSON_GetObjectItemCaseSensitive(root, "features");
    const cJSON *scs = cJSON_GetObjectItemCaseSensitive(root, "scorers");
    if (!cJSON_IsObject(bb) || !cJSON_IsObject(pp) || !cJSON_IsObject(fe) || !cJSON_IsArray(scs)) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': metadata lacks backbone/preprocess/features/scorers", path);
        goto done;
    }
    if ((st = jstr(path, bb, "file", in->backbone_file, sizeof in->backbone_file)) ||
        (st = jstr(path, bb, "sha256", in->backbone_sha256, sizeof in->backbone_sha256)) ||
        (st = jstr(path, bb, "arch", in->backbone_arch, sizeof in->backbone_arch)))
        goto done;
    if ((st = jint(path, pp, "size", &in->prep.size)) || (st = jint(path, pp, "layers", &in->n_layers)) ||
        (st = jnum(path, pp, "clahe_clip", &in->prep.clahe_clip)) ||
        (st = jint(path, pp, "clahe_tiles", &in->prep.clahe_tiles)) ||
        (st = jstr(path, pp, "stain_norm", buf, sizeof buf)) || (st = jint(path, fe, "grid_h", &in->grid_h)) ||
        (st = jint(path, fe, "grid_w", &in->grid_w)) || (st = jint(path, fe, "dim", &in->dim)) ||
        (st = jnum(path, root, "n_train", &d)))
        goto done;
    in->prep.stain = !strcmp(buf, "clahe") ? DS_STAIN_CLAHE : DS_STAIN_NONE;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) { /* 2^53: exact in a double */
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': metadata field 'n_train' = %g, expected a count", path, d);
        goto done;
    }
    in->n_train = (int64_t)d;
    in->map_sigma = DS_ANOMALY_MAP_SIGMA; /* models written before "maps" was stored */
    const cJSON *mp = cJSON_GetObjectItemCaseSensitive(root, "maps");
    if (cJSON_IsObject(mp)) {
        if ((st = jnum(path, mp, "sigma", &d))) goto done;
        if (!(d >= 0 && d <= 1000)) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': map sigma %g out of range [0, 1000]", path, d);
            goto done;
        }
        in->map_sigma = (float)d;
    }
    if (in->prep.size < 1 || in->n_layers < 1 || in->grid_h < 1 || in->grid_w < 1 || in->dim < 1) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': metadata has out-of-range sizes", path);
        goto done;
    }
    int n = cJSON_GetArraySize(scs);
    if (n < 1 || n > DS_MODEL_MAX_SCORERS) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s': %d scorers (expected 1..%d)", path, n, DS_MODEL_MAX_SCORERS);
        goto done;
    }
    const cJSON *so;
    cJSON_ArrayForEach(so, scs) {
        char kind_name[32];
        ds_scorer_kind kind;
        if ((st = jstr(path, so, "kind", kind_name, sizeof kind_name))) goto done;
        if (ds_scorer_kind_parse(kind_name, &kind) != DS_OK) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': unknown scorer kind '%s' (written by a newer dinoscope?)", path,
                              kind_name);
            goto done;
        }
        ds_scorer_scalar scal[32];
        ds_scorer_array arrs[16];
        int ns = 0, na = 0;
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(so, "scalars"), *v;
        cJSON_ArrayForEach(v, sc) {
            if (ns == 32 || !cJSON_IsNumber(v)) {
                st = ds_set_error(DS_ERR_FORMAT, "model '%s': bad scalars of scorer '%s'", path, kind_name);
                goto done;
            }
            scal[ns++] = (ds_scorer_scalar){.name = v->string, .value = v->valuedouble};
        }
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(so, "arrays")) {
            const ds_model_section *sec = cJSON_IsString(v) ? ds_model_file_section(m->file, v->valuestring) : NULL;
            if (na == 16 || !sec || array_dtype(sec->dtype) < 0 || sec->n_dims < 1 || sec->n_dims > 2) {
                st = ds_set_error(DS_ERR_FORMAT, "model '%s': scorer '%s' array '%s' is missing or not a 1-2 dim numeric section",
                                  path, kind_name, cJSON_IsString(v) ? v->valuestring : "?");
                goto done;
            }
            const char *slash = strchr(sec->name, '/');
            arrs[na++] = (ds_scorer_array){.name = slash ? slash + 1 : sec->name,
                                           .n_dims = sec->n_dims,
                                           .shape = {sec->shape[0], sec->n_dims > 1 ? sec->shape[1] : 0},
                                           .data = sec->data,
                                           .dtype = (ds_array_dtype)array_dtype(sec->dtype)};
        }
        ds_scorer *s = NULL;
        if (ds_scorer_from_parts(kind, scal, ns, arrs, na, &s) != DS_OK) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': %s", path, ds_last_error());
            goto done;
        }
        if (ds_scorer_get_dim(s) != in->dim) {
            st = ds_set_error(DS_ERR_FORMAT, "model '%s': scorer '%s' has dim %d, features have %d", path, kind_name,
                              ds_scorer_get_dim(s), in->dim);
            ds_scorer_free(s);
            goto done;
        }
        ds_scorer_calibration *c = &m->calib[m->n];
        m->scorers[m->n++] = s;
        const cJSON *cal = cJSON_GetObjectItemCaseSensitive(so, "calibration");
        if (cJSON_IsObject(cal)) {
            const cJSON *ht = cJSON_GetObjectItemCaseSensitive(cal, "has_threshold");
            c->has_threshold = cJSON_IsTrue(ht);
            if ((st = jnum(path, cal, "threshold_fpr", &c->threshold_fpr)) ||
                (st = jfloat(path, cal, "threshold", &c->threshold)) || (st = jint(path, cal, "n_val", &c->n_val)) ||
                (st = jfloat(path, cal, "map_vmax", &c->map_vmax)))
                goto done;
            /* optional: absent in models fitted without held-out normals' maps */
            const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cal, "map_threshold");
            if (cJSON_IsNumber(mt)) {
                if ((st = jfloat(path, cal, "map_threshold", &c->map_threshold))) goto done;
                c->has_map_threshold = 1;
            }
        }
    }
done:
    cJSON_Delete(root);
    return st;
}

void ds_model_free(ds_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) ds_scorer_free(m->scorers[i]);
    ds_model_file_close(m->file);
    free(m->meta);
    free(m);
}

ds_status ds_model_load(const char *path, ds_model **out) {
    ds_model *m = calloc(1, sizeof *m);
    if (!m) return ds_set_error(DS_ERR_NOMEM, "out of memory");
    ds_status st = ds_model_file_open(path, &m->file);
    if (st != DS_OK) goto fail;
    const ds_model_section *meta = ds_model_file_section(m->file, "meta");
    if (!meta || meta->dtype != DS_SECTION_BYTES) {
        st = ds_set_error(DS_ERR_FORMAT, "model '%s' has no metadata section", path);
        goto fail;
    }
    m->meta = malloc(meta->n_bytes + 1);
    if (!m->meta) {
        st = ds_set_error(DS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    memcpy(m->meta, meta->data, meta->n_bytes);
    m->meta[meta->n_bytes] = 0;
    if ((st = parse_meta(m, path)) != DS_OK) goto fail;
    *out = m;
    return DS_OK;
fail:
    ds_model_free(m);
    return st;
}

ds_status ds_model_from_fitted(const ds_model_info *info, ds_scorer **scorers, const ds_scorer_calibration *calib,
                               int n_scorers, ds_model **out) {
    ds_model *m = calloc(1, sizeof *m);
    char *meta = m ? meta_json(info, (const ds_scorer *const *)scorers, calib, n_scorers) : NULL;
    if (!meta) {
        free(m);
        return ds_set_error(DS_ERR_NOMEM, "ds_model_fit: out of memory");
    }
    m->meta = meta;
    m->info = *info;
    m->n = n_scorers;
    for (int i = 0; i < n_scorers; i++) {
        m->scorers[i] = scorers[i];
        scorers[i] = NULL;
        if (calib) m->calib[i] = calib[i];
    }
    *out = m;
    return DS_OK;
}

ds_status ds_model_write(const ds_model *m, const char *path) {
    if (!m) return ds_set_error(DS_ERR_ARG, "ds_model_write: no model");
    return ds_model_save(path, &m->info, (const ds_scorer *const *)m->scorers, m->calib, m->n);
}

const ds_model_info *ds_model_get_info(const ds_model *m) { return &m->info; }
int ds_model_n_scorers(const ds_model *m) { return m->n; }
const ds_scorer *ds_model_scorer(const ds_model *m, int i) { return i >= 0 && i < m->n ? m->scorers[i] : NULL; }

ds_status ds_model_set_nprobe(ds_model *m, int nprobe) {
    if (!m || nprobe < 1) return ds_set_error(DS_ERR_ARG, "ds_model_set_nprobe: nprobe=%d must be >= 1", nprobe);
    int n = 0;
    for (int i = 0; i < m->n; i++)
        if (ds_nn_bank_repr(ds_scorer_bank(m->scorers[i])) == DS_BANK_IVFPQ) {
            ds_status st = ds_scorer_set_nprobe(m->scorers[i], nprobe);
            if (st != DS_OK) return st;
            n++;
        }
    return n ? DS_OK : ds_set_error(DS_ERR_ARG, "ds_model_set_nprobe: the model has no ivfpq bank (fit --bank ivfpq)");
}
const ds_scorer_calibration *ds_model_calibration(const ds_model *m, int i) {
    return i >= 0 && i < m->n ? &m->calib[i] : NULL;
}
const char *ds_model_meta_json(const ds_model *m) { return m->meta; }
const ds_model_file *ds_model_get_file(const ds_model *m) { return m->file; }
