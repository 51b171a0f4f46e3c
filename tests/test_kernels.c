/* Compute kernels against PyTorch: the bfloat16 rounding and GEMM
 * (src/core/gemm_bf16.c): C = bf16(A) bf16(W)^T with fp32 accumulation
 * against torch's float64 product of the bf16-rounded operands; the fused
 * attention (src/vit/attention.c) against torch's softmax(q k^T / 8) v (tests/fixtures/kernels, made by
 * tests/fixtures/make_kernel_fixtures.py). Both kernels are checked where the
 * CPU runs them: the portable one always, AVX-512 BF16 where present. */
#include "core/gemm_bf16.h"
#include "dinoscope/npy.h"
#include "test.h"
#include "vit/vit_internal.h"

/* n floats uniform in [-1, 1) from splitmix64 (Steele et al. 2014), as
 * splitmix64_uniform() in tests/fixtures/make_kernel_fixtures.py. */
static void splitmix_uniform(uint64_t seed, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) {
        uint64_t z = seed + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        out[i] = (float)((double)(z >> 40) / (double)(1 << 24) * 2.0 - 1.0);
    }
}

static float *load(const char *name, int64_t *rows, int64_t *cols) {
    float *d = NULL;
    int nd;
    int64_t shape[DS_NPY_MAX_DIMS];
    if (ds_npy_read_f32(fixture(name), &d, &nd, shape) != DS_OK) {
        printf("  %s: %s\n", name, ds_last_error());
        return NULL;
    }
    *rows = shape[0];
    *cols = nd > 1 ? shape[1] : 1;
    return d;
}

static void rounding(void) {
    /* ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 */
    test_cond("1 + 2^-8 rounds to 1 (tie to even)", ds_round_bf16(1.0f + 0x1p-8f) == 1.0f);
    test_cond("1 + 3*2^-8 rounds up to 1 + 2^-6 (tie to even)", ds_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);
    test_cond("1 + 2^-8 + 2^-20 rounds up (past the tie)", ds_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
    test_cond("the largest float rounds to +inf as torch does", isinf(ds_round_bf16(3.4028235e38f)));
    test_cond("NaN stays NaN", isnan(ds_round_bf16(NAN)));
    test_cond("-0 stays -0", signbit(ds_round_bf16(-0.0f)) && ds_round_bf16(-0.0f) == 0.0f);
}

/* max |C - ref| / max |ref| over the columns [j0, j1), or +inf when a
 * column outside them was touched (they hold a canary). */
static double gemm_err(const float *A, int M, int K, const ds_bf16_mat *W, const float *ref, int j0, int j1,
                       ds_gemm_bf16_kernel kernel) {
    int N = W->n;
    float *C = malloc(sizeof(float) * (size_t)M * N);
    void *work = ds_alloc(DS_GEMM_BF16_WORK_BYTES, 1, "test");
    for (int i = 0; i < M * N; i++) C[i] = 12345.0f;
    ds_gemm_bf16_ex(A, K, M, W, C, N, j0, j1, work, kernel);
    double e = 0, r = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = C[(size_t)i * N + j], rf = ref[(size_t)i * N + j];
            if (j < j0 || j >= j1) {
                if (c != 12345.0f) e = INFINITY;
                continue;
            }
            double d = fabs((double)c - rf);
            if (!(d <= e)) e = d;
            if (fabs(rf) > r) r = fabs(rf);
        }
    free(C);
    free(work);
    return e / r;
}

static void gemm(void) {
    int64_t M, K, N, K2, M2, N2;
    float *A = load("kernels/gemm_a.npy", &M, &K), *Wf = load("kernels/gemm_w.npy", &N, &K2),
          *ref = load("kernels/gemm_c.npy", &M2, &N2);
    test_cond("the GEMM fixtures load", A && Wf && ref && K == K2 && M == M2 && N == N2);
    if (!A || !Wf || !ref) return;
    ds_bf16_mat W = {0};
    test_cond("the weights pack", ds_bf16_mat_pack(Wf, (int)N, (int)K, (int)K, &W) == DS_OK);
    double e = gemm_err(A, (int)M, (int)K, &W, ref, 0, (int)N, DS_GEMM_BF16_PORTABLE);
    printf("  portable kernel: max|C - torch| / max|torch| = %.3g (M=%lld K=%lld N=%lld)\n", e, (long long)M,
           (long long)K, (long long)N);
    test_cond("the portable kernel matches torch's bf16 product to 1e-5 (fp32 sums)", e < 1e-5);
    e = gemm_err(A, (int)M, (int)K, &W, ref, 32, (int)N, DS_GEMM_BF16_PORTABLE);
    test_cond("a column range [32, N) fills only those columns", e < 1e-5);
    if (ds_cpu_has_avx512bf16()) {
        e = gemm_err(A, (int)M, (int)K, &W, ref, 0, (int)N, DS_GEMM_BF16_NATIVE);
        printf("  AVX-512 BF16 kernel: %.3g\n", e);
        test_cond("the AVX-512 BF16 kernel matches torch's bf16 product to 1e-5", e < 1e-5);
        e = gemm_err(A, (int)M, (int)K, &W, ref, 32, (int)N, DS_GEMM_BF16_NATIVE);
        test_cond("the AVX-512 BF16 kernel fills only the asked columns", e < 1e-5);
    } else {
        printf("  (this CPU has no AVX-512 BF16: native kernel not checked here)\n");
    }
    ds_bf16_mat_free(&W);
    ds_bf16_mat_free(&W); /* twice is harmless */
    free(A);
    free(Wf);
    free(ref);
}

static void attention(void) {
    enum { T = 300, D = 128, H = 2 };
    int64_t r, c;
    float *ref = load("kernels/attn_out.npy", &r, &c);
    test_cond("the attention fixture loads", ref && r == T && c == D);
    if (!ref) return;
    float *qkv = malloc(sizeof(float) * T * 3 * D), *o = malloc(sizeof(float) * T * D);
    splitmix_uniform(4, (size_t)T * 3 * D, qkv);
    for (int i = 0; i < T * 3 * D; i++) qkv[i] *= 4.0f;
    for (int nt = 1; nt <= 2; nt++) {
        float *work = malloc(sizeof(float) * ds_vit_attention_work_floats(T, D, nt));
        ds_vit_attention(qkv, o, T, D, H, work, nt);
        double mr, e = max_abs_diff(o, ref, (size_t)T * D, &mr);
        printf("  fused attention, T=%d, %d thread(s): max|o - torch| = %.3g (max|torch| %.3g)\n", T, nt, e, mr);
        test_cond("fused attention over several key and query blocks matches torch to 1e-5 of max |o|",
                  e <= 1e-5 * mr);
        free(work);
    }
    free(qkv);
    free(o);
    free(ref);
}

int main(void) {
    rounding();
    gemm();
    attention();
    test_report();
}
