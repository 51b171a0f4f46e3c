/* The fit parameters of a fitted scorer, rebuilt from its stored scalars, so
 * that a model file can be refitted on other images "the same way" (eval's
 * cross-validation), bank representation included. Only the public scalar enumeration is used, so this
 * works on scorers loaded from model files as well as fresh fits. */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/scorer.h"

/* The scalar called name, or false when the scorer does not store it. */
static bool find(const ds_scorer *s, const char *name, double *v) {
    int n = ds_scorer_n_scalars(s);
    for (int i = 0; i < n; i++) {
        ds_scorer_scalar sc;
        if (ds_scorer_get_scalar(s, i, &sc) == DS_OK && sc.name && strcmp(sc.name, name) == 0) {
            *v = sc.value;
            return true;
        }
    }
    return false;
}

/* An integral scalar in [lo, hi], or a format error naming it. */
static ds_status get_int(const ds_scorer *s, const char *name, double lo, double hi, int *out) {
    double v;
    if (!find(s, name, &v)) return DS_OK; /* absent: keep the default */
    if (!(v >= lo && v <= hi) || v != floor(v))
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_params_of: %s scalar '%s' = %g is not an integer in [%g, %g]",
                            ds_scorer_kind_name(ds_scorer_get_kind(s)), name, v, lo, hi);
    *out = (int)v;
    return DS_OK;
}

/* The "metric" and "reduce" scalars (patchbank, flow). */
static ds_status get_metric_reduce(const ds_scorer *s, ds_scorer_params *p) {
    int v = (int)p->metric;
    ds_status st = get_int(s, "metric", 0, 1, &v);
    if (st != DS_OK) return st;
    p->metric = (ds_metric)v;
    v = (int)p->reduce;
    if ((st = get_int(s, "reduce", 0, 1, &v)) != DS_OK) return st;
    p->reduce = (ds_reduce)v;
    return DS_OK;
}

/* The bank's representation and, for IVF-PQ, its sub-quantisers and nprobe
 * (nlist is left to the default, which follows the refitted bank's size). */
static ds_status get_bank(const ds_scorer *s, ds_scorer_params *p) {
    int v = (int)p->bank_repr;
    ds_status st = get_int(s, "bank_repr", 0, DS_BANK_IVFPQ, &v);
    if (st != DS_OK) return st;
    p->bank_repr = (ds_bank_repr)v;
    if ((st = get_int(s, "nprobe", 1, 1 << 24, &p->nprobe)) != DS_OK) return st;
    for (int i = 0; i < ds_scorer_n_arrays(s); i++) {
        ds_scorer_array a;
        if (ds_scorer_get_array(s, i, &a) == DS_OK && strcmp(a.name, "pq_codebook") == 0) p->pq_m = (int)a.shape[0];
    }
    return DS_OK;
}

ds_status ds_scorer_params_of(const ds_scorer *s, ds_scorer_params *out) {
    if (!s || !out) return ds_set_error(DS_ERR_ARG, "ds_scorer_params_of: NULL argument");
    ds_scorer_params p = ds_scorer_defaults();
    ds_status st = DS_OK;
    switch (ds_scorer_get_kind(s)) {
    case DS_SCORER_KNN:
        st = get_int(s, "k", 1, 1e9, &p.k);
        if (st == DS_OK) st = get_bank(s, &p);
        break;
    case DS_SCORER_GAUSSIAN:
        /* The fit kept min(max_components, n_train - 1, D) components; asking
         * for that many again reproduces it on as many images, and a smaller
         * training set lowers it the same way the original fit would have. */
        st = get_int(s, "n_components", 1, 1e9, &p.max_components);
        break;
    case DS_SCORER_PATCHBANK: {
        double r;
        if ((st = get_int(s, "patch_k", 1, 1e9, &p.patch_k)) != DS_OK) break;
        if ((st = get_bank(s, &p)) != DS_OK) break;
        if ((st = get_metric_reduce(s, &p)) != DS_OK) break;
        if (find(s, "coreset_ratio", &r)) {
            if (!(r > 0 && r <= 1)) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_params_of: patchbank scalar 'coreset_ratio' = %g is not in (0, 1]", r);
                break;
            }
            p.coreset_ratio = r;
        }
        break;
    }
    case DS_SCORER_PADIM:
        /* the channel count is the length of the stored subset */
        for (int i = 0; i < ds_scorer_n_arrays(s); i++) {
            ds_scorer_array a;
            if (ds_scorer_get_array(s, i, &a) == DS_OK && strcmp(a.name, "channels") == 0)
                p.padim_dim = (int)a.shape[0];
        }
        break;
    case DS_SCORER_FLOW: {
        /* dimensions from the array shapes, training settings from the scalars */
        for (int i = 0; i < ds_scorer_n_arrays(s); i++) {
            ds_scorer_array a;
            if (ds_scorer_get_array(s, i, &a) != DS_OK) continue;
            if (strcmp(a.name, "proj") == 0) p.flow_dim = (int)a.shape[0];
            if (strcmp(a.name, "b1") == 0) p.flow_blocks = (int)a.shape[0], p.flow_hidden = (int)a.shape[1];
        }
        double r;
        if ((st = get_int(s, "pos_dim", 4, 4096, &p.flow_pos_dim)) != DS_OK) break;
        if ((st = get_int(s, "grid_w", 1, 1e9, &p.grid_w)) != DS_OK) break;
        if ((st = get_metric_reduce(s, &p)) != DS_OK) break;
        if ((st = get_int(s, "max_epochs", 1, 1e9, &p.flow_epochs)) != DS_OK) break;
        if ((st = get_int(s, "patience", 1, 1e9, &p.flow_patience)) != DS_OK) break;
        if ((st = get_int(s, "batch", 1, 1e9, &p.flow_batch)) != DS_OK) break;
        if (find(s, "epoch_patches", &r)) {
            if (!(r >= 0 && r <= 9e15) || r != floor(r)) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_params_of: flow scalar 'epoch_patches' = %g is not a count", r);
                break;
            }
            p.flow_epoch_patches = (int64_t)r;
        }
        if (find(s, "lr", &r)) {
            if (!(r > 0 && r < 1)) {
                st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_params_of: flow scalar 'lr' = %g is not in (0, 1)", r);
                break;
            }
            p.flow_lr = r;
        }
        break;
    }
    default:
        st = ds_set_error(DS_ERR_ARG, "ds_scorer_params_of: unknown scorer kind %d", (int)ds_scorer_get_kind(s));
    }
    if (st == DS_OK) *out = p;
    return st;
}
