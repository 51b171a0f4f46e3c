/* bfloat16 GEMM with fp32 accumulation, shared by the ViT, the CNNs and the
 * k-NN search (not installed).
 *
 *   ds_bf16_mat W;                    // weights [N, K] (torch Linear [out, in])
 *   ds_bf16_mat_pack(w_f32, N, K, K, &W);
 *   // C[M, N] = bf16(A[M, K]) x W^T, fp32 accumulation, one thread
 *   ds_gemm_bf16(A, lda, M, &W, C, ldc, 0, N, work);   // work: DS_GEMM_BF16_WORK_BYTES
 *   ds_bf16_mat_free(&W);
 *
 * Numerics: A and W are rounded to bfloat16 (round to nearest even); each
 * product of two bf16 values is exact in fp32 (8-bit x 8-bit significands),
 * the sums are fp32. This is what AVX-512 BF16's vdpbf16ps computes (Intel
 * SDM, VDPBF16PS: two bf16 products added to an fp32 lane per instruction),
 * and what the portable kernel computes when the CPU lacks it, so results
 * agree across machines up to the order of the fp32 additions.
 *
 * Layout of a packed matrix: panels of DS_GEMM_BF16_NR rows of W; inside a
 * panel, for each pair of K columns (k, k+1), NR 32-bit words holding
 * W[n][k] in the low and W[n][k+1] in the high half: the operand layout of
 * vdpbf16ps, where lane n accumulates a[2n]*b[2n] + a[2n+1]*b[2n+1]. K is
 * padded with zeros to even, N to a multiple of NR. */
#ifndef DS_GEMM_BF16_H
#define DS_GEMM_BF16_H

#include <stdint.h>

#include "core/internal.h"

enum {
    DS_GEMM_BF16_MR = 12, /* rows of A per register tile */
    DS_GEMM_BF16_NR = 32, /* rows of W (output columns) per register tile: 2 zmm */
    DS_GEMM_BF16_KC = 192, /* K pairs per cache block: a 32 x 384 panel of W (24 KiB) stays in L1 */
    DS_GEMM_BF16_MC = 192, /* rows of A packed at once (multiple of MR) */
};
/* Bytes of the per-thread workspace ds_gemm_bf16 needs (packed A block). */
#define DS_GEMM_BF16_WORK_BYTES ((size_t)DS_GEMM_BF16_MC * DS_GEMM_BF16_KC * 4)

typedef struct {
    int n, k;        /* logical shape [n, k] */
    int kp;          /* K pairs: (k + 1) / 2 */
    int n_panels;    /* ceil(n / NR) */
    uint32_t *data;  /* [n_panels][kp][NR] bf16 pairs, 64-byte aligned */
} ds_bf16_mat;

/* Round-to-nearest-even f32 -> bf16 (NaN stays a quiet NaN), as torch's
 * c10::BFloat16 round_to_nearest_even. */
static inline uint16_t ds_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}
/* f rounded to the nearest bf16, as a float. */
static inline float ds_round_bf16(float f) { return ds_bf16_to_f32(ds_f32_to_bf16(f)); }

/* Packs W [n, k] f32 (rows ldw apart) into out. Returns DS_OK or
 * DS_ERR_NOMEM (out untouched). */
ds_status ds_bf16_mat_pack(const float *W, int n, int k, int ldw, ds_bf16_mat *out);
/* The same from bf16 bit patterns W [n, k] (rows ldw apart). */
ds_status ds_bf16_mat_pack_bits(const uint16_t *W, int n, int k, int ldw, ds_bf16_mat *out);
/* Frees the packed data; accepts a zeroed matrix. */
void ds_bf16_mat_free(ds_bf16_mat *m);

/* C[m, j - j0] = sum_k bf16(A[m, k]) * W[j, k] for rows 0..M-1 and columns
 * j in [j0, j1) (j0 a multiple of NR), C rows ldc apart, overwritten. One
 * thread; callers split rows or columns over their own threads. work:
 * DS_GEMM_BF16_WORK_BYTES, 64-byte aligned, private to the calling thread. */
void ds_gemm_bf16(const float *A, int lda, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                  void *work);

/* Kernel choice: AUTO picks AVX-512 BF16 when the CPU has it, else AVX2 +
 * FMA, else C (what ds_gemm_bf16 uses); tests run each the CPU has. NATIVE
 * or AVX2 on a CPU without them is an internal error. */
typedef enum {
    DS_GEMM_BF16_AUTO = 0,
    DS_GEMM_BF16_PORTABLE = 1, /* C, any CPU */
    DS_GEMM_BF16_NATIVE = 2,   /* AVX-512 BF16 (vdpbf16ps) */
    DS_GEMM_BF16_AVX2 = 3,     /* AVX2 + FMA emulation of the same pairs */
} ds_gemm_bf16_kernel;
void ds_gemm_bf16_ex(const float *A, int lda, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                     void *work, ds_gemm_bf16_kernel kernel);
/* A packed once for many products (the k-NN queries against every bank
 * block): ap [ceil(M / MR)][kp][MR] pairs, kp = (k + 1) / 2, rows past M
 * zero; ds_bf16_pack_a_words gives its size in 32-bit words. */
size_t ds_bf16_pack_a_words(int M, int k);
void ds_bf16_pack_a(const float *A, int lda, int M, int k, uint32_t *ap);
/* ds_gemm_bf16 on A packed by ds_bf16_pack_a (same k as W). */
void ds_gemm_bf16_pa(const uint32_t *ap, int M, const ds_bf16_mat *W, float *C, int ldc, int j0, int j1,
                     ds_gemm_bf16_kernel kernel);
/* Row j of W as floats (the bf16 values, exactly): out [k]. */
void ds_bf16_mat_row(const ds_bf16_mat *W, int j, float *out);

/* 1 if the CPU runs vdpbf16ps (AVX-512 BF16), else 0. */
int ds_cpu_has_avx512bf16(void);
/* What AUTO uses: "avx512bf16", "avx2 emulation: no AVX-512 BF16 on this
 * CPU" or "portable C: no AVX-512 BF16 on this CPU". */
const char *ds_gemm_bf16_kernel_name(void);

#endif
