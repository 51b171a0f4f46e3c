/* Memory-bank representations (ds_bank_repr): one place that knows how a
 * bank is stored and which search runs over it, so that a new
 * representation (f16, int8) is one enum value, one case in create and one
 * search here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/scorer_internal.h"

struct ds_nn_bank {
    ds_bank_repr repr;
    int64_t M;
    int D;
    const float *f32;  /* DS_BANK_F32: the caller's rows */
    ds_bf16_mat bf16;  /* DS_BANK_BF16: packed values */
    float *sq_norms;   /* DS_BANK_BF16: ||row||^2 of the bf16 values (L2 ranking) */
    float *inv_norms;  /* DS_BANK_BF16: 1 / ||row|| (cosine), 0 for a zero row */
};

const char *ds_bank_repr_name(ds_bank_repr repr) {
    switch (repr) {
    case DS_BANK_F32: return "f32";
    case DS_BANK_BF16: return "bf16";
    }
    return "unknown";
}

ds_status ds_bank_repr_parse(const char *name, ds_bank_repr *repr) {
    static const ds_bank_repr all[] = {DS_BANK_F32, DS_BANK_BF16};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ds_bank_repr_name(all[i])) == 0) {
            *repr = all[i];
            return DS_OK;
        }
    return ds_set_error(DS_ERR_ARG, "unknown bank representation '%s' (expected f32 or bf16)", name ? name : "");
}

ds_status ds_nn_bank_create(const float *rows, int64_t M, int D, ds_bank_repr repr, ds_nn_bank **out) {
    if (!rows || !out) return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: NULL argument");
    if (M < 1 || D < 1 || M > INT32_MAX / 2)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: bad sizes M=%lld D=%d", (long long)M, D);
    if (repr != DS_BANK_F32 && repr != DS_BANK_BF16)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: unknown representation %d", (int)repr);
    ds_nn_bank *b = calloc(1, sizeof *b);
    if (!b) return ds_set_error(DS_ERR_NOMEM, "ds_nn_bank_create: out of memory");
    *b = (ds_nn_bank){.repr = repr, .M = M, .D = D};
    if (repr == DS_BANK_F32) {
        b->f32 = rows;
    } else {
        ds_status st = ds_bf16_mat_pack(rows, (int)M, D, D, &b->bf16);
        b->sq_norms = st == DS_OK ? ds_alloc((size_t)M, sizeof(float), "ds_nn_bank_create") : NULL;
        b->inv_norms = b->sq_norms ? ds_alloc((size_t)M, sizeof(float), "ds_nn_bank_create") : NULL;
        if (!b->inv_norms) {
            ds_nn_bank_free(b);
            return st == DS_OK ? DS_ERR_NOMEM : st;
        }
        for (int64_t j = 0; j < M; j++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                double v = ds_round_bf16(rows[j * D + d]);
                s += v * v;
            }
            b->sq_norms[j] = (float)s;
            b->inv_norms[j] = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        }
    }
    *out = b;
    return DS_OK;
}

void ds_nn_bank_free(ds_nn_bank *bank) {
    if (!bank) return;
    ds_bf16_mat_free(&bank->bf16);
    free(bank->sq_norms);
    free(bank->inv_norms);
    free(bank);
}

size_t ds_nn_bank_bytes(const ds_nn_bank *bank) {
    if (!bank || bank->repr == DS_BANK_F32) return 0;
    return (size_t)bank->bf16.n_panels * DS_GEMM_BF16_NR * (size_t)bank->bf16.kp * 4 + 2 * (size_t)bank->M * sizeof(float);
}

ds_status ds_nn_bank_search(const ds_nn_bank *bank, const float *queries, int64_t Q, int k, ds_metric metric,
                            int n_threads, float *dist, int64_t *idx) {
    if (!bank) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL bank");
    if (bank->repr == DS_BANK_F32)
        return ds_nn_search(bank->f32, bank->M, queries, Q, bank->D, k, metric, n_threads, dist, idx);
    return ds_nn_search_bf16(&bank->bf16, bank->sq_norms, bank->inv_norms, queries, Q, k, metric, n_threads,
                             DS_GEMM_BF16_AUTO, dist, idx);
}
