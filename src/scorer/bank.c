/* Memory-bank representations (ds_bank_repr): one place that knows how a
 * bank is stored, how it is written to and read from a model file's arrays,
 * and which search runs over it. include/dinoscope/scorer.h documents the
 * numerics; docs/bank.md the measured trade-offs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/ivfpq.h"
#include "scorer/scorer_internal.h"

struct ds_nn_bank {
    ds_bank_repr repr;
    int64_t M;
    int D;
    const float *f32;      /* F32: the caller's rows (or the file's) */
    const uint16_t *u16;   /* BF16, F16: [M, D] bit patterns */
    const int8_t *i8;      /* INT8: [M, D] codes */
    const float *scale;    /* INT8: [M] per-row scales */
    ds_bf16_mat bf16;      /* BF16: the rows packed for ds_gemm_bf16 */
    float *sq_norms;       /* BF16/F16/INT8: ||decoded row||^2 (the bf16 L2 ranking) */
    float *inv_norms;      /* BF16/F16/INT8: 1 / ||decoded row|| (cosine), 0 for a zero row */
    ds_ivfpq ivf;          /* IVFPQ */
    void *owned[2];        /* buffers of create (rows or codes, scales) */
};

const char *ds_bank_repr_name(ds_bank_repr repr) {
    switch (repr) {
    case DS_BANK_F32: return "f32";
    case DS_BANK_BF16: return "bf16";
    case DS_BANK_F16: return "f16";
    case DS_BANK_INT8: return "int8";
    case DS_BANK_IVFPQ: return "ivfpq";
    }
    return "unknown";
}

ds_status ds_bank_repr_parse(const char *name, ds_bank_repr *repr) {
    static const ds_bank_repr all[] = {DS_BANK_F32, DS_BANK_BF16, DS_BANK_F16, DS_BANK_INT8, DS_BANK_IVFPQ};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ds_bank_repr_name(all[i])) == 0) {
            *repr = all[i];
            return DS_OK;
        }
    return ds_set_error(DS_ERR_ARG, "unknown bank representation '%s' (expected f32, bf16, f16, int8 or ivfpq)",
                        name ? name : "");
}

size_t ds_array_dtype_size(ds_array_dtype dtype) {
    switch (dtype) {
    case DS_ARRAY_F32: return 4;
    case DS_ARRAY_I8:
    case DS_ARRAY_U8: return 1;
    case DS_ARRAY_U16: return 2;
    case DS_ARRAY_I64: return 8;
    }
    return 0;
}

/* ---- decoding */

typedef struct {
    const ds_nn_bank *b;
    int unit; /* scale each row to unit norm (cosine) */
} bank_rows;

static void decode_rows(const void *ctx, int64_t j0, int64_t n, float *out) {
    const bank_rows *r = ctx;
    const ds_nn_bank *b = r->b;
    const int D = b->D;
    for (int64_t i = 0; i < n; i++) {
        const int64_t j = j0 + i;
        float *o = out + i * D;
        if (b->repr == DS_BANK_INT8) {
            const int8_t *c = b->i8 + j * D;
            const float s = b->scale[j];
            for (int d = 0; d < D; d++) o[d] = (float)c[d] * s;
        } else if (b->repr == DS_BANK_F16) {
            const uint16_t *h = b->u16 + j * D;
            for (int d = 0; d < D; d++) o[d] = ds_f16_to_f32(h[d]);
        } else if (b->repr == DS_BANK_BF16) {
            const uint16_t *h = b->u16 + j * D;
            for (int d = 0; d < D; d++) o[d] = ds_bf16_to_f32(h[d]);
        } else if (b->repr == DS_BANK_IVFPQ) {
            ds_ivfpq_decode(&b->ivf, j, o);
        } else {
            memcpy(o, b->f32 + j * D, sizeof(float) * (size_t)D);
        }
        if (r->unit && b->inv_norms) {
            const float in = b->inv_norms[j];
            for (int d = 0; d < D; d++) o[d] *= in;
        }
    }
}

/* Norms of the decoded rows, and the packed bf16 copy. */
static ds_status bank_finish(ds_nn_bank *b) {
    if (b->repr == DS_BANK_F32 || b->repr == DS_BANK_IVFPQ) return DS_OK;
    b->sq_norms = ds_alloc((size_t)b->M, sizeof(float), "ds_nn_bank_create: norms");
    b->inv_norms = b->sq_norms ? ds_alloc((size_t)b->M, sizeof(float), "ds_nn_bank_create: norms") : NULL;
    float *row = b->inv_norms ? ds_alloc((size_t)b->D, sizeof(float), "ds_nn_bank_create: row") : NULL;
    if (!row) return DS_ERR_NOMEM;
    bank_rows r = {b, 0};
    for (int64_t j = 0; j < b->M; j++) {
        decode_rows(&r, j, 1, row);
        double s = 0;
        for (int d = 0; d < b->D; d++) s += (double)row[d] * row[d];
        b->sq_norms[j] = (float)s;
        b->inv_norms[j] = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    }
    free(row);
    if (b->repr == DS_BANK_BF16) return ds_bf16_mat_pack_bits(b->u16, (int)b->M, b->D, b->D, &b->bf16);
    return DS_OK;
}

ds_ivfpq_params ds_ivfpq_defaults(void) { return (ds_ivfpq_params){.nprobe = DS_IVFPQ_NPROBE}; }

ds_status ds_nn_bank_create_ex(const float *rows, int64_t M, int D, ds_bank_repr repr, const ds_ivfpq_params *ivf,
                               ds_nn_bank **out) {
    if (!rows || !out) return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: NULL argument");
    if (M < 1 || D < 1 || M > INT32_MAX / 2)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: bad sizes M=%lld D=%d", (long long)M, D);
    if ((unsigned)repr > DS_BANK_IVFPQ)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: unknown representation %d", (int)repr);
    ds_nn_bank *b = calloc(1, sizeof *b);
    if (!b) return ds_set_error(DS_ERR_NOMEM, "ds_nn_bank_create: out of memory");
    *b = (ds_nn_bank){.repr = repr, .M = M, .D = D};
    const size_t n = (size_t)M * (size_t)D;
    ds_status st = DS_OK;
    if (repr == DS_BANK_F32) {
        b->f32 = rows;
    } else if (repr == DS_BANK_BF16 || repr == DS_BANK_F16) {
        uint16_t *h = b->owned[0] = ds_alloc(n, sizeof(uint16_t), "ds_nn_bank_create: rows");
        if (!h) st = DS_ERR_NOMEM;
        for (size_t i = 0; h && i < n; i++) h[i] = repr == DS_BANK_BF16 ? ds_f32_to_bf16(rows[i]) : ds_f32_to_f16(rows[i]);
        for (size_t i = 0; h && repr == DS_BANK_F16 && i < n && st == DS_OK; i++)
            if ((h[i] & 0x7c00u) == 0x7c00u)
                st = ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: f16 row %lld has %g, beyond the half range +-65504 "
                                  "(use bf16 or int8)", (long long)(i / (size_t)D), (double)rows[i]);
        b->u16 = h;
    } else if (repr == DS_BANK_INT8) {
        int8_t *c = b->owned[0] = ds_alloc(n, 1, "ds_nn_bank_create: codes");
        float *sc = b->owned[1] = c ? ds_alloc((size_t)M, sizeof(float), "ds_nn_bank_create: scales") : NULL;
        if (!sc) st = DS_ERR_NOMEM;
        for (int64_t j = 0; sc && j < M && st == DS_OK; j++) {
            /* symmetric per-row scale: max|x| maps to 127 */
            const float *x = rows + j * D;
            float mx = 0;
            int finite = 1;
            for (int d = 0; d < D; d++) {
                finite &= isfinite(x[d]) != 0; /* fmaxf drops a NaN */
                mx = fmaxf(mx, fabsf(x[d]));
            }
            if (!finite)
                st = ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: int8 row %lld has a non-finite value", (long long)j);
            const float s = mx / 127.0f;
            sc[j] = s;
            for (int d = 0; d < D; d++) c[j * D + d] = s > 0 ? (int8_t)DS_MAX(-127.0f, DS_MIN(127.0f, rintf(x[d] / s))) : 0;
        }
        b->i8 = c, b->scale = sc;
    } else {
        st = ds_ivfpq_train(rows, M, D, ivf, &b->ivf);
    }
    if (st == DS_OK) st = bank_finish(b);
    if (st != DS_OK) {
        ds_nn_bank_free(b);
        return st;
    }
    *out = b;
    return DS_OK;
}

ds_status ds_nn_bank_create(const float *rows, int64_t M, int D, ds_bank_repr repr, ds_nn_bank **out) {
    return ds_nn_bank_create_ex(rows, M, D, repr, NULL, out);
}

void ds_nn_bank_free(ds_nn_bank *bank) {
    if (!bank) return;
    ds_bf16_mat_free(&bank->bf16);
    ds_ivfpq_free(&bank->ivf);
    free(bank->sq_norms);
    free(bank->inv_norms);
    free(bank->owned[0]);
    free(bank->owned[1]);
    free(bank);
}

size_t ds_nn_bank_bytes(const ds_nn_bank *bank) {
    if (!bank) return 0;
    const size_t n = (size_t)bank->M * (size_t)bank->D;
    switch (bank->repr) {
    case DS_BANK_F32: return n * 4;
    case DS_BANK_BF16:
    case DS_BANK_F16: return n * 2;
    case DS_BANK_INT8: return n + (size_t)bank->M * 4;
    case DS_BANK_IVFPQ: return ds_ivfpq_bytes(&bank->ivf);
    }
    return 0;
}

ds_bank_repr ds_nn_bank_repr(const ds_nn_bank *bank) { return bank ? bank->repr : DS_BANK_F32; }
int64_t ds_nn_bank_rows(const ds_nn_bank *bank) { return bank ? bank->M : 0; }
int ds_nn_bank_dim(const ds_nn_bank *bank) { return bank ? bank->D : 0; }

ds_status ds_nn_bank_set_nprobe(ds_nn_bank *bank, int nprobe) {
    if (!bank || bank->repr != DS_BANK_IVFPQ || nprobe < 1)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_set_nprobe: nprobe=%d needs an ivfpq bank and nprobe >= 1", nprobe);
    bank->ivf.nprobe = DS_MIN(nprobe, bank->ivf.nlist);
    return DS_OK;
}

void ds_nn_bank_ivf_info(const ds_nn_bank *bank, int *nprobe, int *nlist) {
    int ok = bank && bank->repr == DS_BANK_IVFPQ;
    if (nprobe) *nprobe = ok ? bank->ivf.nprobe : 0;
    if (nlist) *nlist = ok ? bank->ivf.nlist : 0;
}

int64_t ds_nn_bank_source_row(const ds_nn_bank *bank, int64_t j) {
    if (!bank || j < 0 || j >= bank->M) return -1;
    if (bank->repr != DS_BANK_IVFPQ) return j;
    return bank->ivf.src_row ? bank->ivf.src_row[j] : -1;
}

ds_status ds_nn_bank_row(const ds_nn_bank *bank, int64_t j, float *out) {
    if (!bank || !out || j < 0 || j >= bank->M)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_row: row %lld out of range", (long long)j);
    bank_rows r = {bank, 0};
    decode_rows(&r, j, 1, out);
    return DS_OK;
}

ds_status ds_nn_bank_search(const ds_nn_bank *bank, const float *queries, int64_t Q, int k, ds_metric metric,
                            int n_threads, float *dist, int64_t *idx) {
    if (!bank) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank");
    switch (bank->repr) {
    case DS_BANK_F32: return ds_nn_search(bank->f32, bank->M, queries, Q, bank->D, k, metric, n_threads, dist, idx);
    case DS_BANK_BF16:
        return ds_nn_search_bf16(&bank->bf16, bank->sq_norms, bank->inv_norms, queries, Q, k, metric, n_threads,
                                 DS_GEMM_BF16_AUTO, dist, idx);
    case DS_BANK_IVFPQ: return ds_ivfpq_search(&bank->ivf, queries, Q, k, metric, n_threads, dist, idx);
    default: {
        bank_rows r = {bank, metric == DS_METRIC_COSINE};
        ds_nn_rows rows = {decode_rows, &r};
        return ds_nn_search_rows(&rows, bank->M, queries, Q, bank->D, k, metric, n_threads, DS_NN_PATH_AUTO, dist, idx);
    }
    }
}

/* ---- model-file parts */

int ds_nn_bank_arrays(const ds_nn_bank *b, ds_scorer_array *out) {
    const int64_t M = b->M, D = b->D;
    switch (b->repr) {
    case DS_BANK_F32:
        out[0] = (ds_scorer_array){"bank", 2, {M, D}, b->f32, DS_ARRAY_F32};
        return 1;
    case DS_BANK_BF16:
    case DS_BANK_F16:
        out[0] = (ds_scorer_array){"bank", 2, {M, D}, b->u16, DS_ARRAY_U16};
        return 1;
    case DS_BANK_INT8:
        out[0] = (ds_scorer_array){"bank", 2, {M, D}, b->i8, DS_ARRAY_I8};
        out[1] = (ds_scorer_array){"bank_scale", 1, {M, 0}, b->scale, DS_ARRAY_F32};
        return 2;
    case DS_BANK_IVFPQ: {
        const ds_ivfpq *x = &b->ivf;
        out[0] = (ds_scorer_array){"ivf_centroids", 2, {x->nlist, D}, x->centroids, DS_ARRAY_F32};
        out[1] = (ds_scorer_array){"pq_codebook", 2, {x->m, (int64_t)x->ksub * x->dsub}, x->codebook, DS_ARRAY_F32};
        out[2] = (ds_scorer_array){"pq_codes", 2, {M, x->m}, x->codes, DS_ARRAY_U8};
        out[3] = (ds_scorer_array){"ivf_offsets", 1, {(int64_t)x->nlist + 1, 0}, x->offsets, DS_ARRAY_I64};
        return 4;
    }
    }
    return 0;
}

static const ds_scorer_array *bank_array(const ds_scorer_array *arr, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (arr[i].name && !strcmp(arr[i].name, name)) return &arr[i];
    return NULL;
}

/* The array called name: present, with data, n_dims dims, dtype, and shape
 * (e0, e1) where those are >= 0 (each dim in 1..INT32_MAX/2). */
static ds_status bank_need(const ds_scorer_array *arr, int n, const char *kind, const char *name, int n_dims,
                           ds_array_dtype dtype, int64_t e0, int64_t e1, const ds_scorer_array **out) {
    const ds_scorer_array *a = bank_array(arr, n, name);
    if (!a) return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s scorer lacks array '%s'", kind, name);
    int ok = a->data && a->n_dims == n_dims && a->dtype == dtype;
    for (int d = 0; ok && d < n_dims; d++) {
        int64_t want = d == 0 ? e0 : e1;
        ok = a->shape[d] >= 1 && a->shape[d] <= INT32_MAX / 2 && (want < 0 || a->shape[d] == want);
    }
    if (!ok)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s array '%s' has %d dims [%lld,%lld] of dtype %d, "
                            "expected %d dims [%lld,%lld] of dtype %d (-1 = any)", kind, name, a->n_dims,
                            (long long)a->shape[0], (long long)(a->n_dims > 1 ? a->shape[1] : 0), (int)a->dtype, n_dims,
                            (long long)e0, (long long)e1, (int)dtype);
    *out = a;
    return DS_OK;
}

ds_status ds_nn_bank_from_arrays(ds_bank_repr repr, const ds_scorer_array *arr, int n, int nprobe, const char *kind,
                                 ds_nn_bank **out) {
    ds_nn_bank *b = calloc(1, sizeof *b);
    if (!b) return ds_set_error(DS_ERR_NOMEM, "ds_scorer_from_parts: out of memory");
    b->repr = repr;
    const ds_scorer_array *a = NULL, *c = NULL, *cb = NULL, *o = NULL;
    ds_status st = DS_OK;
    if (repr == DS_BANK_IVFPQ) {
        if ((st = bank_need(arr, n, kind, "ivf_centroids", 2, DS_ARRAY_F32, -1, -1, &c)) != DS_OK ||
            (st = bank_need(arr, n, kind, "pq_codebook", 2, DS_ARRAY_F32, -1, -1, &cb)) != DS_OK ||
            (st = bank_need(arr, n, kind, "pq_codes", 2, DS_ARRAY_U8, -1, cb->shape[0], &a)) != DS_OK ||
            (st = bank_need(arr, n, kind, "ivf_offsets", 1, DS_ARRAY_I64, c->shape[0] + 1, -1, &o)) != DS_OK)
            goto fail;
        b->M = a->shape[0], b->D = (int)c->shape[1];
        ds_ivfpq *x = &b->ivf;
        *x = (ds_ivfpq){.M = b->M, .D = b->D, .nlist = (int)c->shape[0], .m = (int)cb->shape[0],
                        .centroids = c->data, .codebook = cb->data, .codes = a->data, .offsets = o->data};
        x->dsub = b->D % x->m == 0 ? b->D / x->m : 0;
        x->ksub = x->dsub > 0 && cb->shape[1] % x->dsub == 0 ? (int)(cb->shape[1] / x->dsub) : 0;
        x->nprobe = DS_MIN(nprobe, x->nlist);
        if (x->dsub == 0 || x->ksub == 0) {
            st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq 'pq_codebook' [%lld,%lld] does not split D=%d",
                              (long long)cb->shape[0], (long long)cb->shape[1], b->D);
            goto fail;
        }
        if ((st = ds_ivfpq_check(x)) != DS_OK || (st = ds_ivfpq_prepare(x)) != DS_OK) goto fail;
    } else {
        /* bf16 files written before the u16 form hold the rounded values as f32 */
        ds_array_dtype want = repr == DS_BANK_F32 ? DS_ARRAY_F32 : repr == DS_BANK_INT8 ? DS_ARRAY_I8 : DS_ARRAY_U16;
        const ds_scorer_array *bank = bank_array(arr, n, "bank");
        if (repr == DS_BANK_BF16 && bank && bank->dtype == DS_ARRAY_F32) want = DS_ARRAY_F32;
        if ((st = bank_need(arr, n, kind, "bank", 2, want, -1, -1, &a)) != DS_OK) goto fail;
        b->M = a->shape[0], b->D = (int)a->shape[1];
        const size_t cnt = (size_t)b->M * (size_t)b->D;
        if (repr == DS_BANK_F32) {
            b->f32 = a->data;
        } else if (repr == DS_BANK_INT8) {
            if ((st = bank_need(arr, n, kind, "bank_scale", 1, DS_ARRAY_F32, b->M, -1, &c)) != DS_OK) goto fail;
            b->i8 = a->data, b->scale = c->data;
            for (int64_t j = 0; j < b->M; j++)
                if (!(b->scale[j] >= 0 && b->scale[j] <= 1e30f)) {
                    st = ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: %s 'bank_scale' row %lld = %g is not a "
                                      "finite scale >= 0", kind, (long long)j, (double)b->scale[j]);
                    goto fail;
                }
        } else if (want == DS_ARRAY_F32) { /* the legacy bf16 form */
            uint16_t *h = b->owned[0] = ds_alloc(cnt, sizeof(uint16_t), "ds_scorer_from_parts: bank");
            if (!h) {
                st = DS_ERR_NOMEM;
                goto fail;
            }
            const float *f = a->data;
            for (size_t i = 0; i < cnt; i++) h[i] = ds_f32_to_bf16(f[i]);
            b->u16 = h;
        } else {
            b->u16 = a->data;
        }
    }
    if ((st = bank_finish(b)) != DS_OK) goto fail;
    *out = b;
    return DS_OK;
fail:
    ds_nn_bank_free(b);
    return st;
}
