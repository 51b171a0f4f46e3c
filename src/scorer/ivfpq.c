/* IVF-PQ: an inverted file over coarse k-means centroids, each row's residual
 * product-quantised (Jegou, Douze, Schmid, "Product quantization for nearest
 * neighbor search", TPAMI 2011, sec. IV "IVFADC"; faiss IndexIVFPQ with
 * by_residual = true). Training follows faiss' Clustering defaults
 * (ClusteringParameters: niter 25, max_points_per_centroid 256, a random
 * sample of the points as the first centroids, empty clusters split off the
 * largest one with a relative 1/1024 perturbation). The assignments run
 * through ds_nn_search (exact, lowest index on ties), so training does not
 * depend on the thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "scorer/ivfpq.h"

enum { KM_NITER = 25, KM_MAX_PER_CENTROID = 256, PQ_KSUB = 256, ENC_CHUNK = 65536 };

/* The first n_take entries of a seeded Fisher-Yates shuffle of 0..n-1, in
 * idx[n_take]. */
static ds_status sample_rows(int64_t n, int64_t n_take, uint64_t seed, int64_t *idx) {
    int64_t *perm = ds_alloc((size_t)n, sizeof(int64_t), "ds_ivfpq_train: sample");
    if (!perm) return DS_ERR_NOMEM;
    ds_rng_shuffle_prefix(seed, n, n_take, perm);
    memcpy(idx, perm, sizeof(int64_t) * (size_t)DS_MIN(n, n_take));
    free(perm);
    return DS_OK;
}

/* Lloyd's k-means of x [n, d] (n >= k) into cent [k, d]. */
static ds_status kmeans(const float *x, int64_t n, int d, int k, uint64_t seed, int n_threads, float *cent) {
    const int64_t ns = DS_MIN(n, (int64_t)k * KM_MAX_PER_CENTROID);
    /* one block of integers (sample rows, assignments, counts), one of floats
     * (the sample, its distances), the sums in double */
    int64_t *pick = ds_alloc((size_t)(2 * ns + k), sizeof(int64_t), "ds_ivfpq_train: k-means");
    float *xs = ds_alloc((size_t)ns, sizeof(float) * (size_t)(d + 1), "ds_ivfpq_train: k-means sample");
    double *sum = ds_alloc((size_t)k, sizeof(double) * (size_t)d, "ds_ivfpq_train: k-means");
    int64_t *assign = pick ? pick + ns : NULL, *count = pick ? pick + 2 * ns : NULL;
    float *dist = xs ? xs + ns * d : NULL;
    ds_status st = pick && xs && sum ? DS_OK : DS_ERR_NOMEM;
    if (st == DS_OK) st = sample_rows(n, ns, seed, pick);
    if (st != DS_OK) goto done;
    for (int64_t i = 0; i < ns; i++) memcpy(xs + i * d, x + pick[i] * d, sizeof(float) * (size_t)d);
    /* the start: k distinct sample points, drawn from a second shuffle */
    if ((st = sample_rows(ns, k, seed ^ 0x9e3779b97f4a7c15ull, pick)) != DS_OK) goto done;
    for (int c = 0; c < k; c++) memcpy(cent + (size_t)c * d, xs + pick[c] * d, sizeof(float) * (size_t)d);
    for (int it = 0; it < KM_NITER; it++) {
        if ((st = ds_nn_search(cent, k, xs, ns, d, 1, DS_METRIC_L2, n_threads, dist, assign)) != DS_OK) goto done;
        memset(sum, 0, sizeof(double) * (size_t)k * (size_t)d);
        memset(count, 0, sizeof(int64_t) * (size_t)k);
        for (int64_t i = 0; i < ns; i++) {
            double *s = sum + assign[i] * d;
            for (int j = 0; j < d; j++) s[j] += xs[i * d + j];
            count[assign[i]]++;
        }
        for (int c = 0; c < k; c++)
            if (count[c] > 0)
                for (int j = 0; j < d; j++) cent[(size_t)c * d + j] = (float)(sum[(size_t)c * d + j] / (double)count[c]);
        /* faiss split_clusters: an empty centroid takes half of the largest
         * cluster, the two nudged apart by +-1/1024 in alternating dims */
        for (int c = 0; c < k; c++) {
            if (count[c] > 0) continue;
            int big = 0;
            for (int b = 1; b < k; b++)
                if (count[b] > count[big]) big = b;
            float *ci = cent + (size_t)c * d, *cb = cent + (size_t)big * d;
            const float eps = 1.0f / 1024.0f;
            for (int j = 0; j < d; j++) {
                ci[j] = cb[j] * (j % 2 == 0 ? 1 + eps : 1 - eps);
                cb[j] = cb[j] * (j % 2 == 0 ? 1 - eps : 1 + eps);
            }
            count[c] = count[big] / 2;
            count[big] -= count[c];
        }
    }
done:
    free(pick);
    free(xs);
    free(sum);
    return st;
}

/* The divisor of D nearest D / 4 (the larger on a tie), at most 65535. */
static int default_m(int D) {
    int best = 1;
    for (int m = 1; m <= D && m <= 65535; m++)
        if (D % m == 0 && fabs(m - D / 4.0) <= fabs(best - D / 4.0)) best = m;
    return best;
}

/* Residuals of rows [n, D] from their centroids, sub-vector i of each into
 * sub [n, dsub]. */
static void residual_sub(const float *rows, const int64_t *assign, int64_t n, const ds_ivfpq *ix, int i, float *sub) {
    for (int64_t r = 0; r < n; r++) {
        const float *x = rows + r * ix->D + i * ix->dsub;
        const float *c = ix->centroids + assign[r] * ix->D + i * ix->dsub;
        for (int j = 0; j < ix->dsub; j++) sub[r * ix->dsub + j] = x[j] - c[j];
    }
}

ds_status ds_ivfpq_train(const float *rows, int64_t M, int D, const ds_ivfpq_params *pp, ds_ivfpq *out) {
    ds_ivfpq_params p = pp ? *pp : (ds_ivfpq_params){0};
    int nlist = p.nlist;
    if (nlist <= 0) {
        nlist = (int)lround(sqrt((double)M));
        nlist = (int)DS_MIN((int64_t)nlist, DS_MAX((int64_t)1, M / 4));
        nlist = DS_MAX(1, DS_MIN(nlist, 65536));
    }
    const int m = p.pq_m > 0 ? p.pq_m : default_m(D);
    if (nlist > M)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: ivfpq nlist=%d exceeds the bank's %lld rows", nlist,
                            (long long)M);
    if (m > D || D % m != 0 || m > 65535)
        return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: ivfpq pq_m=%d must divide D=%d", m, D);
    for (int64_t i = 0; i < M * D; i++)
        if (!isfinite(rows[i]))
            return ds_set_error(DS_ERR_ARG, "ds_nn_bank_create: ivfpq row %lld has a non-finite value",
                                (long long)(i / D));
    ds_ivfpq ix = {.M = M, .D = D, .nlist = nlist, .m = m, .ksub = (int)DS_MIN((int64_t)PQ_KSUB, M),
                   .dsub = D / m, .nprobe = DS_MIN(p.nprobe > 0 ? p.nprobe : DS_IVFPQ_NPROBE, nlist)};
    float *cent = ds_alloc((size_t)nlist, sizeof(float) * (size_t)D, "ds_ivfpq_train: centroids");
    float *cb = ds_alloc((size_t)m * ix.ksub, sizeof(float) * (size_t)ix.dsub, "ds_ivfpq_train: codebook");
    uint8_t *codes = ds_alloc((size_t)M, (size_t)m, "ds_ivfpq_train: codes");
    int64_t *offs = ds_alloc((size_t)nlist + 1, sizeof(int64_t), "ds_ivfpq_train: offsets");
    int64_t *assign = ds_alloc((size_t)M, sizeof(int64_t), "ds_ivfpq_train: assignment");
    float *dist = ds_alloc((size_t)M, sizeof(float), "ds_ivfpq_train: assignment");
    int64_t *pos = ds_alloc((size_t)nlist, sizeof(int64_t), "ds_ivfpq_train: lists");
    int64_t *slot = ds_alloc((size_t)M, sizeof(int64_t), "ds_ivfpq_train: lists");
    int64_t *src = ds_alloc((size_t)M, sizeof(int64_t), "ds_ivfpq_train: lists");
    const int64_t n_pq = DS_MIN(M, (int64_t)ix.ksub * KM_MAX_PER_CENTROID);
    const int64_t chunk = DS_MAX(n_pq, DS_MIN(M, (int64_t)ENC_CHUNK));
    float *sub = ds_alloc((size_t)chunk, sizeof(float) * (size_t)ix.dsub, "ds_ivfpq_train: residuals");
    float *sub_rows = ds_alloc((size_t)n_pq, sizeof(float) * (size_t)D, "ds_ivfpq_train: residuals");
    int64_t *pick = ds_alloc((size_t)n_pq, sizeof(int64_t), "ds_ivfpq_train: residuals");
    int64_t *sub_assign = ds_alloc((size_t)chunk, sizeof(int64_t), "ds_ivfpq_train: codes");
    ds_status st = cent && cb && codes && offs && assign && dist && pos && slot && src && sub && sub_rows && pick && sub_assign
                       ? DS_OK
                       : DS_ERR_NOMEM;
    ix.centroids = cent, ix.codebook = cb, ix.codes = codes, ix.offsets = offs;
    /* 1. coarse quantiser, and every row's list */
    if (st == DS_OK) st = kmeans(rows, M, D, nlist, p.seed, p.n_threads, cent);
    if (st == DS_OK) st = ds_nn_search(cent, nlist, rows, M, D, 1, DS_METRIC_L2, p.n_threads, dist, assign);
    /* 2. one k-means per sub-space over a sample of the residuals */
    if (st == DS_OK) st = sample_rows(M, n_pq, p.seed + 1, pick);
    if (st == DS_OK) {
        for (int64_t r = 0; r < n_pq; r++) {
            memcpy(sub_rows + r * D, rows + pick[r] * D, sizeof(float) * (size_t)D);
            pick[r] = assign[pick[r]];
        }
    }
    for (int i = 0; st == DS_OK && i < m; i++) {
        residual_sub(sub_rows, pick, n_pq, &ix, i, sub);
        st = kmeans(sub, n_pq, ix.dsub, ix.ksub, p.seed + 2 + (uint64_t)i, p.n_threads,
                    cb + (size_t)i * ix.ksub * ix.dsub);
    }
    /* 3. list offsets, then each row's codes at its place in list order
     * (rows keep their order inside a list) */
    if (st == DS_OK) {
        memset(offs, 0, sizeof(int64_t) * ((size_t)nlist + 1));
        for (int64_t r = 0; r < M; r++) offs[assign[r] + 1]++;
        for (int l = 0; l < nlist; l++) offs[l + 1] += offs[l];
        memcpy(pos, offs, sizeof(int64_t) * (size_t)nlist);
        for (int64_t r = 0; r < M; r++) slot[r] = pos[assign[r]]++;
        for (int64_t r = 0; r < M; r++) src[slot[r]] = r;
    }
    for (int64_t r0 = 0; st == DS_OK && r0 < M; r0 += chunk) {
        const int64_t n = DS_MIN(chunk, M - r0);
        for (int i = 0; st == DS_OK && i < m; i++) {
            residual_sub(rows + r0 * D, assign + r0, n, &ix, i, sub);
            st = ds_nn_search(cb + (size_t)i * ix.ksub * ix.dsub, ix.ksub, sub, n, ix.dsub, 1, DS_METRIC_L2,
                              p.n_threads, dist, sub_assign);
            for (int64_t r = 0; st == DS_OK && r < n; r++) codes[slot[r0 + r] * m + i] = (uint8_t)sub_assign[r];
        }
    }
    free(assign);
    free(dist);
    free(pos);
    free(slot);
    free(sub);
    free(sub_rows);
    free(pick);
    free(sub_assign);
    if (st != DS_OK) {
        free(cent);
        free(cb);
        free(codes);
        free(offs);
        free(src);
        return st;
    }
    ix.src_row = src;
    ix.owned[0] = cent, ix.owned[1] = cb, ix.owned[2] = codes, ix.owned[3] = offs;
    if ((st = ds_ivfpq_prepare(&ix)) != DS_OK) {
        ds_ivfpq_free(&ix);
        return st;
    }
    *out = ix;
    return DS_OK;
}

ds_status ds_ivfpq_check(const ds_ivfpq *ix) {
    if (ix->nlist < 1 || ix->m < 1 || ix->D % ix->m != 0 || ix->ksub < 1 || ix->ksub > PQ_KSUB || ix->M < 1 ||
        ix->dsub != ix->D / ix->m)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq bank has nlist=%d, m=%d, ksub=%d for D=%d",
                            ix->nlist, ix->m, ix->ksub, ix->D);
    if (ix->offsets[0] != 0 || ix->offsets[ix->nlist] != ix->M)
        return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq 'ivf_offsets' must run from 0 to the %lld rows",
                            (long long)ix->M);
    for (int l = 0; l < ix->nlist; l++)
        if (ix->offsets[l + 1] < ix->offsets[l])
            return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq 'ivf_offsets' decreases at list %d", l);
    for (size_t i = 0; i < (size_t)ix->nlist * ix->D; i++)
        if (!isfinite(ix->centroids[i]))
            return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq 'ivf_centroids' has a non-finite value");
    for (size_t i = 0; i < (size_t)ix->m * ix->ksub * ix->dsub; i++)
        if (!isfinite(ix->codebook[i]))
            return ds_set_error(DS_ERR_FORMAT, "ds_scorer_from_parts: ivfpq 'pq_codebook' has a non-finite value");
    /* codes >= ksub are not checked here: the search's tables map them to
     * +inf (never a neighbour) and decode clamps them */
    return DS_OK;
}

void ds_ivfpq_free(ds_ivfpq *ix) {
    if (!ix) return;
    for (int i = 0; i < 4; i++) free(ix->owned[i]);
    free(ix->src_row);
    free(ix->lut_w);
    free(ix->lut_n);
    memset(ix, 0, sizeof *ix);
}

size_t ds_ivfpq_bytes(const ds_ivfpq *ix) {
    return (size_t)ix->nlist * ix->D * 4 + (size_t)ix->m * ix->ksub * ix->dsub * 4 + (size_t)ix->M * ix->m +
           ((size_t)ix->nlist + 1) * 8;
}

static int64_t list_of(const ds_ivfpq *ix, int64_t j) {
    int lo = 0, hi = ix->nlist - 1; /* the last list l with offsets[l] <= j */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (ix->offsets[mid] <= j) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

void ds_ivfpq_decode(const ds_ivfpq *ix, int64_t j, float *out) {
    const float *c = ix->centroids + list_of(ix, j) * ix->D;
    for (int i = 0; i < ix->m; i++) {
        int code = DS_MIN((int)ix->codes[j * ix->m + i], ix->ksub - 1);
        const float *w = ix->codebook + ((size_t)i * ix->ksub + code) * ix->dsub;
        for (int t = 0; t < ix->dsub; t++) out[i * ix->dsub + t] = c[i * ix->dsub + t] + w[t];
    }
}

ds_status ds_ivfpq_prepare(ds_ivfpq *ix) {
    const int m = ix->m, ds = ix->dsub;
    ix->lut_w = ds_calloc((size_t)m * ds, sizeof(float) * PQ_KSUB, "ds_ivfpq: tables");
    ix->lut_n = ds_alloc((size_t)m, sizeof(float) * PQ_KSUB, "ds_ivfpq: tables");
    if (!ix->lut_w || !ix->lut_n) return DS_ERR_NOMEM;
    for (int i = 0; i < m; i++)
        for (int c = 0; c < PQ_KSUB; c++) {
            double n = 0;
            for (int t = 0; t < ds && c < ix->ksub; t++) {
                float w = ix->codebook[((size_t)i * ix->ksub + c) * ds + t];
                ix->lut_w[((size_t)i * ds + t) * PQ_KSUB + c] = w;
                n += (double)w * w;
            }
            ix->lut_n[(size_t)i * PQ_KSUB + c] = c < ix->ksub ? (float)n : INFINITY;
        }
    return DS_OK;
}

/* The look-up table of query sub-vectors against the codebook, 256 entries
 * per sub-space (those past ksub +inf): L2: ||r_i - w||^2 = ||r_i||^2 -
 * 2 r_i.w + ||w||^2 of the residual query r = q - c; cosine: -q_i.w (the
 * list adds 1 - q.c). Loops of 256 over the transposed codebook, so that
 * they vectorise. */
static void make_lut(const ds_ivfpq *ix, const float *r, ds_metric metric, float *lut) {
    const int ds = ix->dsub;
    for (int i = 0; i < ix->m; i++) {
        const float *ri = r + i * ds, *wn = ix->lut_n + (size_t)i * PQ_KSUB;
        float *li = lut + (size_t)i * PQ_KSUB;
        float rn = 0;
        for (int t = 0; t < ds; t++) rn += ri[t] * ri[t];
        if (metric == DS_METRIC_L2)
            for (int c = 0; c < PQ_KSUB; c++) li[c] = rn + wn[c];
        else
            for (int c = 0; c < PQ_KSUB; c++) li[c] = wn[c] == INFINITY ? INFINITY : 0.0f;
        const float scale = metric == DS_METRIC_L2 ? -2.0f : -1.0f;
        for (int t = 0; t < ds; t++) {
            const float a = scale * ri[t], *w = ix->lut_w + ((size_t)i * ds + t) * PQ_KSUB;
            for (int c = 0; c < PQ_KSUB; c++) li[c] += a * w[c];
        }
    }
}

/* Scans list l for query q into the top-k key/id; returns the rows seen. */
static int64_t scan_list(const ds_ivfpq *ix, const float *q, int l, ds_metric metric, float *r, float *lut, int k,
                         float *key, int64_t *id) {
    const float *c = ix->centroids + (size_t)l * ix->D;
    const int64_t a = ix->offsets[l], b = ix->offsets[l + 1];
    if (a == b) return 0;
    float base = 0;
    if (metric == DS_METRIC_L2) {
        for (int t = 0; t < ix->D; t++) r[t] = q[t] - c[t];
        make_lut(ix, r, metric, lut);
    } else {
        double dot = 0;
        for (int t = 0; t < ix->D; t++) dot += (double)q[t] * c[t];
        base = (float)(1.0 - dot); /* the table (q alone) was made once per query */
    }
    float th = key[k - 1];
    const int m = ix->m;
    for (int64_t j = a; j < b; j++) {
        const uint8_t *code = ix->codes + j * m;
        float s = base;
        for (int i = 0; i < m; i++) s += lut[(size_t)i * PQ_KSUB + code[i]];
        if (s <= th) th = ds_topk_push(key, id, k, s, j);
    }
    return b - a;
}

ds_status ds_ivfpq_search(const ds_ivfpq *ix, const float *queries, int64_t Q, int k, ds_metric metric, int n_threads,
                          float *dist, int64_t *idx) {
    if (!queries || !dist) return ds_set_error(DS_ERR_ARG, "ds_nn_search: NULL queries or dist");
    if (metric != DS_METRIC_L2 && metric != DS_METRIC_COSINE)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: unknown metric %d", (int)metric);
    if (k < 1 || (int64_t)k > ix->M)
        return ds_set_error(DS_ERR_ARG, "ds_nn_search: k=%d must be in 1..M (the bank has M=%lld rows)", k,
                            (long long)ix->M);
    if (Q < 0 || Q > INT32_MAX / 2) return ds_set_error(DS_ERR_ARG, "ds_nn_search: bad query count %lld", (long long)Q);
    if (Q == 0) return DS_OK;
    const int np = DS_MAX(1, DS_MIN(ix->nprobe, ix->nlist));
    float *pd = ds_alloc((size_t)Q * np, sizeof(float), "ds_nn_search: probes");
    int64_t *pl = ds_alloc((size_t)Q * np, sizeof(int64_t), "ds_nn_search: probes");
    float *out_d = ds_alloc((size_t)Q * k, sizeof(float), "ds_nn_search: result");
    int64_t *out_i = ds_alloc((size_t)Q * k, sizeof(int64_t), "ds_nn_search: result");
    int T = ds_resolve_threads(n_threads);
    const size_t per_thread = (size_t)ix->m * PQ_KSUB + (size_t)ix->D;
    float *ws = ds_alloc(per_thread, sizeof(float) * (size_t)T, "ds_nn_search: tables");
    unsigned char *seen = ds_alloc((size_t)ix->nlist, (size_t)T, "ds_nn_search: lists");
    ds_status st = pd && pl && out_d && out_i && ws && seen ? DS_OK : DS_ERR_NOMEM;
    /* the probes: the nprobe nearest centroids, exactly */
    if (st == DS_OK) st = ds_nn_search(ix->centroids, ix->nlist, queries, Q, ix->D, np, DS_METRIC_L2, n_threads, pd, pl);
    int64_t bad = -1;
    if (st == DS_OK) {
#pragma omp parallel for num_threads(T) schedule(dynamic, 16)
        for (int64_t q = 0; q < Q; q++) {
            const int t = omp_get_thread_num();
            float *lut = ws + (size_t)t * per_thread, *r = lut + (size_t)ix->m * PQ_KSUB;
            float *key = out_d + q * k;
            int64_t *id = out_i + q * k;
            const float *qv = queries + q * ix->D;
            for (int i = 0; i < k; i++) key[i] = INFINITY, id[i] = INT64_MAX;
            if (metric == DS_METRIC_COSINE) make_lut(ix, qv, metric, lut);
            int64_t seen_rows = 0;
            for (int p = 0; p < np; p++) seen_rows += scan_list(ix, qv, (int)pl[q * np + p], metric, r, lut, k, key, id);
            if (seen_rows < k || id[k - 1] == INT64_MAX) {
                /* too few rows (or finite distances) in the probed lists: visit the rest */
                unsigned char *sn = seen + (size_t)t * ix->nlist;
                memset(sn, 0, (size_t)ix->nlist);
                for (int p = 0; p < np; p++) sn[pl[q * np + p]] = 1;
                for (int l = 0; l < ix->nlist; l++)
                    if (!sn[l]) scan_list(ix, qv, l, metric, r, lut, k, key, id);
            }
            if (id[k - 1] == INT64_MAX) {
#pragma omp critical(ds_ivfpq_bad)
                if (bad < 0 || q < bad) bad = q;
                continue;
            }
            for (int i = 0; i < k; i++)
                key[i] = metric == DS_METRIC_L2 ? sqrtf(DS_MAX(key[i], 0.0f)) : DS_MIN(2.0f, DS_MAX(0.0f, key[i]));
            for (int i = 1; i < k; i++) ds_topk_insert(key, id, i, key[i], id[i]); /* the clip may tie */
        }
        if (bad >= 0)
            st = ds_set_error(DS_ERR_ARG, "ds_nn_search: query %lld has fewer than k=%d finite distances "
                              "(NaN or inf in the features?)", (long long)bad, k);
    }
    if (st == DS_OK) {
        memcpy(dist, out_d, sizeof(float) * (size_t)Q * k);
        if (idx) memcpy(idx, out_i, sizeof(int64_t) * (size_t)Q * k);
    }
    free(pd);
    free(pl);
    free(out_d);
    free(out_i);
    free(ws);
    free(seen);
    return st;
}
