#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* The only global mutable state of the library (faiss/stb style, not vips'
 * shared buffer): each thread sees its own last error. */
static _Thread_local char ds_error_buf[1024];

ds_status ds_set_error(ds_status status, const char *fmt, ...) {
    /* formatted apart first: callers prefix the previous message with
     * ds_set_error(st, "'%s': %s", path, ds_last_error()), whose source is
     * this very buffer */
    char tmp[sizeof ds_error_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(ds_error_buf, tmp, sizeof tmp);
    return status;
}

const char *ds_last_error(void) { return ds_error_buf; }

/* the project version of CMakeLists.txt, one place */
const char *ds_version(void) { return DS_VERSION; }

void *ds_alloc(size_t n, size_t sz, const char *what) {
    size_t bytes;
    if (!ds_mul_size(n, sz, &bytes) || !ds_add_size(bytes, 63, &bytes)) {
        ds_set_error(DS_ERR_NOMEM, "%s: size overflow (%zu x %zu)", what, n, sz);
        return NULL;
    }
    bytes &= ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) ds_set_error(DS_ERR_NOMEM, "%s: out of memory (%zu bytes)", what, bytes);
    return p;
}

void *ds_calloc(size_t n, size_t sz, const char *what) {
    void *p = ds_alloc(n, sz, what);
    if (p) __builtin_memset(p, 0, ((n * sz) + 63) & ~(size_t)63);
    return p;
}

float ds_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 */
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    } else if (exp == 31) {
        v.u = sign | 0x7f800000u | (mant << 13);
    } else {
        v.u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    return v.f;
}

/* float -> IEEE half, round to nearest even (numpy's float16 conversion). */
uint16_t ds_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    const uint32_t sign = (v.u >> 16) & 0x8000u, a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504: inf */
    if (a < 0x38800000u) {                                    /* below 2^-14: subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;           /* below half the smallest subnormal */
        const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        const int shift = 126 - (int)(a >> 23); /* 14..24: value = mant * 2^(e-150), unit 2^-24 */
        uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((a >> 13) - (112u << 10)); /* rebias 127 -> 15 */
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}
