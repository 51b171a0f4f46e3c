/* Small helpers of the scorers: row normalisation and a seeded RNG. */
#include <math.h>

#include "scorer/scorer_internal.h"

void ds_l2_normalize_rows(const float *src, float *dst, int64_t n, int D) {
    for (int64_t i = 0; i < n; i++) {
        const float *s = src + i * D;
        float *o = dst + i * D;
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)s[d] * (double)s[d];
        /* as sklearn.preprocessing.normalize: a zero row stays zero */
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int d = 0; d < D; d++) o[d] = s[d] * inv;
    }
}

/* splitmix64 (Steele, Lea & Flood 2014; Vigna's reference constants). */
void ds_rng_seed(ds_rng *r, uint64_t seed) {
    r->state = seed;
    r->have_spare = 0;
    r->spare = 0;
}

uint64_t ds_rng_u64(ds_rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Box-Muller on two uniforms in (0,1]: one draw yields two normals. */
double ds_rng_normal(ds_rng *r) {
    if (r->have_spare) {
        r->have_spare = 0;
        return r->spare;
    }
    double u1 = ((double)(ds_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53; /* (0,1] */
    double u2 = (double)(ds_rng_u64(r) >> 11) * 0x1.0p-53;         /* [0,1) */
    double rad = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->have_spare = 1;
    return rad * cos(th);
}

void ds_rng_shuffle_prefix(uint64_t seed, int64_t n, int64_t n_take, int64_t *perm) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < n_take && i < n; i++) {
        int64_t j = i + (int64_t)(ds_rng_u64(&r) % (uint64_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
