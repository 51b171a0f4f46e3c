/* 8-bit sRGB <-> CIE L*a*b*, bit-exact with OpenCV 4.6's integer paths
 * (modules/imgproc/src/color_lab.cpp: RGB2Lab_b and Lab2RGBinteger, which
 * cvtColor uses for CV_8U since enableBitExactness = true).
 *
 * Why not a float conversion: the seed pipeline's CLAHE runs on OpenCV's
 * 8-bit L, and a textbook float Lab rounds differently on a few percent of
 * pixels; we reproduce OpenCV's lookup tables and fixed-point matrices so
 * that L (and the way back) agree exactly. Every table below is built with
 * the same formula and the same float/double rounding steps as initLabTabs().
 * OpenCV evaluates them with its software float (softfloat): its + - * / are
 * IEEE correctly rounded like the hardware float/double used here, its pow
 * is not, but libm's pow gives the same tables; its cbrt truncates, which
 * we reproduce (opencv_cbrt). Checked exhaustively: both directions equal
 * cv2 4.6 on all 2^24 inputs (tests/fixtures/make_image_fixtures.py keeps a
 * sample of them as a fixture).
 *
 * Constants: sRGB D65 matrices and white point as in OpenCV (sRGB2XYZ_D65,
 * XYZ2sRGB_D65, D65); sRGB gamma from IEC 61966-2-1; L*a*b* from CIE 15:2004
 * with the (6/29)^3 threshold and the linear segment 841/108 x + 16/116. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/internal.h"
#include "preprocess/preprocess_internal.h"

enum {
    XYZ_SHIFT = 12,                        /* lab_shift in OpenCV */
    GAMMA_SHIFT = 3,                       /* gamma table has 3 extra bits */
    LAB_SHIFT2 = XYZ_SHIFT + GAMMA_SHIFT,  /* 15 */
    CBRT_TAB_SIZE = 256 * 3 / 2 * (1 << GAMMA_SHIFT), /* LAB_CBRT_TAB_SIZE_B = 3072 */
    INV_GAMMA_SHIFT = 12,
    INV_GAMMA_TAB_SIZE = 1 << INV_GAMMA_SHIFT,
    LAB_BASE_SHIFT = 14,                   /* Lab2RGBinteger::base_shift */
    LAB_BASE = 1 << LAB_BASE_SHIFT,
    MIN_AB_VALUE = -8145,                  /* smallest ify + adiv / ify - bdiv */
    AB_TAB_SIZE = LAB_BASE * 9 / 4,
    LAB2RGB_SHIFT = XYZ_SHIFT + (LAB_BASE_SHIFT - INV_GAMMA_SHIFT), /* 14 */
};

/* CV_DESCALE: round-half-up right shift (arithmetic on negatives, as OpenCV). */
#define DESCALE(x, n) (((x) + (1 << ((n)-1))) >> (n))

static const double SRGB2XYZ_D65[9] = {0.412453, 0.357580, 0.180423, 0.212671, 0.715160,
                                       0.072169, 0.019334, 0.119193, 0.950227};
static const double XYZ2SRGB_D65[9] = {3.240479, -1.53715, -0.498535, -0.969256, 1.875991,
                                       0.041556, 0.055648, -0.204043, 1.057311};
static const double D65_WHITE[3] = {0.950456, 1.0, 1.088754};

static struct {
    uint16_t gamma[256];                 /* sRGBGammaTab_b: 2040 * linear(i/255) */
    uint16_t cbrt[CBRT_TAB_SIZE];        /* LabCbrtTab_b: 2^15 * f(i/2040) */
    uint16_t inv_gamma[INV_GAMMA_TAB_SIZE]; /* sRGBInvGammaTab_b: 255 * sRGB(i/4096) */
    uint16_t l_to_y[256], l_to_fy[256];  /* LabToYF_b */
    int32_t ab_to_xz[AB_TAB_SIZE];       /* abToXZ_b, index v - MIN_AB_VALUE */
    int32_t rgb2xyz[9];                  /* RGB2Lab_b::coeffs for RGB order */
    int32_t xyz2rgb[9];                  /* Lab2RGBinteger::coeffs, rows R, G, B */
} T;

static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* sRGB decoding (IEC 61966-2-1), OpenCV's applyGamma: float in, double math,
 * float out. */
static float apply_gamma(float x) {
    double xd = x;
    return (float)(xd <= 809.0 / 20000.0 ? xd / (323.0 / 25.0)
                                          : pow((xd + 11.0 / 200.0) / (1.0 + 11.0 / 200.0), 12.0 / 5.0));
}

/* sRGB encoding, OpenCV's applyInvGamma. */
static float apply_inv_gamma(float x) {
    double xd = x;
    return (float)(xd <= 7827.0 / 2500000.0 ? xd * (323.0 / 25.0)
                                             : pow(xd, 1.0 / (12.0 / 5.0)) * (1.0 + 11.0 / 200.0) - 11.0 / 200.0);
}

/* cvRound of a float/double: round half to even (the FPU default mode). */
static int round_even_f(float v) { return (int)lrintf(v); }
static int round_even_d(double v) { return (int)lrint(v); }

/* Cube root as OpenCV's softfloat cbrt (core/src/softfloat.cpp, f32_cbrt):
 * Turkowski's quartic rational approximation on the mantissa reduced to
 * [1/8, 1), evaluated in double, whose mantissa is then TRUNCATED to float.
 * The truncation matters: a correctly rounded cbrt makes table entry 324 of
 * LabCbrtTab_b round up (17745.5 -> 17746) where OpenCV has 17745, which
 * moves L by one level for ~17k of the 2^24 colours. Only for 0 < x < inf. */
static float opencv_cbrt(float x) {
    uint32_t xv;
    memcpy(&xv, &x, sizeof xv);
    int ex = (int)((xv >> 23) & 0xff) - 127;
    int shx = ex % 3;
    shx -= shx >= 0 ? 3 : 0;
    ex = (ex - shx) / 3 - 1; /* exponent of the cube root, result mantissa in [0.5, 1) */
    uint64_t frv = ((uint64_t)(shx + 1023) << 52) | ((uint64_t)(xv & 0x7fffffu) << 29);
    double fr;
    memcpy(&fr, &frv, sizeof fr);
    fr = ((((45.2548339756803022511987494 * fr + 192.2798368355061050458134625) * fr + 119.1654824285581628956914143) * fr +
           13.43250139086239872172837314) * fr + 0.1636161226585754240958355063) /
         ((((14.80884093219134573786480845 * fr + 151.9714051044435648658557668) * fr + 168.5254414101568283957668343) * fr +
           33.9905941350215598754191872) * fr + 1.0);
    memcpy(&frv, &fr, sizeof frv);
    uint32_t yv = ((uint32_t)(ex + 127) << 23) + (uint32_t)((frv & ((UINT64_C(1) << 52) - 1)) >> 29);
    float y;
    memcpy(&y, &yv, sizeof y);
    return y;
}

static void build_tables(void) {
    const float f255 = 255.0f;
    /* CIE f(t): cube root above (6/29)^3, else 841/108 t + 16/116 (one fused
     * rounding, as softfloat's mulAdd). */
    const float lthresh = 216.0f / 24389.0f, lscale = 841.0f / 108.0f, lbias = 16.0f / 116.0f;

    for (int i = 0; i < 256; i++) {
        float x = (float)i / f255;
        T.gamma[i] = (uint16_t)round_even_f((float)(255 * (1 << GAMMA_SHIFT)) * apply_gamma(x));
    }
    const float cb_scale = 1.0f / (f255 * (float)(1 << GAMMA_SHIFT));
    for (int i = 0; i < CBRT_TAB_SIZE; i++) {
        float x = cb_scale * (float)i;
        float f = x < lthresh ? fmaf(x, lscale, lbias) : opencv_cbrt(x);
        T.cbrt[i] = (uint16_t)round_even_f((float)(1 << LAB_SHIFT2) * f);
    }
    const float inv_scale = 1.0f / (float)INV_GAMMA_TAB_SIZE;
    for (int i = 0; i < INV_GAMMA_TAB_SIZE; i++)
        T.inv_gamma[i] = (uint16_t)round_even_f(f255 * apply_inv_gamma(inv_scale * (float)i));

    /* L (0..255) -> Y and f(Y) in units of 1/LAB_BASE (OpenCV LabToYF_b). */
    for (int i = 0; i < 256; i++) {
        int y, ify;
        if (i <= 20) { /* below L = 8: Y = L / 903.3, with 255 = 17*3*5 */
            y = round_even_f((float)(i * LAB_BASE * 20 * 9) / (float)(17 * 29 * 29 * 29));
            ify = round_even_f((float)LAB_BASE * (16.0f / 116.0f + (float)(i * 5) / (float)(3 * 17 * 29)));
        } else {
            float fy = (float)(i * 100 * LAB_BASE) / (float)(255 * 116) + (float)(16 * LAB_BASE) / 116.0f;
            ify = round_even_f(fy);
            y = round_even_f(fy * fy * fy / (float)(LAB_BASE * LAB_BASE));
        }
        T.l_to_y[i] = (uint16_t)y;
        T.l_to_fy[i] = (uint16_t)ify;
    }
    /* f^-1 in fixed point (OpenCV initLUTforABXZ): 3390 = 6/29 * LAB_BASE. */
    for (int i = MIN_AB_VALUE; i < AB_TAB_SIZE + MIN_AB_VALUE; i++) {
        int v;
        if (i <= 3390) v = i * 108 / 841 - LAB_BASE * 16 / 116 * 108 / 841;
        else v = i * i / LAB_BASE * i / LAB_BASE;
        T.ab_to_xz[i - MIN_AB_VALUE] = v;
    }
    /* Fixed-point matrices with the white point folded in. */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            T.rgb2xyz[i * 3 + j] = round_even_d((double)(1 << XYZ_SHIFT) * SRGB2XYZ_D65[i * 3 + j] / D65_WHITE[i]);
            T.xyz2rgb[i * 3 + j] = round_even_d((double)(1 << XYZ_SHIFT) * XYZ2SRGB_D65[i * 3 + j] * D65_WHITE[j]);
        }
}

static inline uint8_t sat_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

void ds_lab_from_rgb_u8(const uint8_t *rgb, uint8_t *lab, size_t n_px) {
    pthread_once(&tables_once, build_tables);
    const int32_t *C = T.rgb2xyz;
    /* L = 116 f(Y) - 16 scaled by 255/100: Lscale = 296, Lshift as in OpenCV. */
    const int l_scale = (116 * 255 + 50) / 100;
    const int l_shift = -((16 * 255 * (1 << LAB_SHIFT2) + 50) / 100);
    for (size_t i = 0; i < n_px; i++) {
        int R = T.gamma[rgb[3 * i]], G = T.gamma[rgb[3 * i + 1]], B = T.gamma[rgb[3 * i + 2]];
        int fX = T.cbrt[DESCALE(R * C[0] + G * C[1] + B * C[2], XYZ_SHIFT)];
        int fY = T.cbrt[DESCALE(R * C[3] + G * C[4] + B * C[5], XYZ_SHIFT)];
        int fZ = T.cbrt[DESCALE(R * C[6] + G * C[7] + B * C[8], XYZ_SHIFT)];
        int L = DESCALE(l_scale * fY + l_shift, LAB_SHIFT2);
        int a = DESCALE(500 * (fX - fY) + 128 * (1 << LAB_SHIFT2), LAB_SHIFT2);
        int b = DESCALE(200 * (fY - fZ) + 128 * (1 << LAB_SHIFT2), LAB_SHIFT2);
        lab[3 * i] = sat_u8(L);
        lab[3 * i + 1] = sat_u8(a);
        lab[3 * i + 2] = sat_u8(b);
    }
}

void ds_lab_to_rgb_u8(const uint8_t *lab, uint8_t *rgb, size_t n_px) {
    pthread_once(&tables_once, build_tables);
    const int32_t *C = T.xyz2rgb;
    for (size_t i = 0; i < n_px; i++) {
        int L = lab[3 * i], aa = lab[3 * i + 1], bb = lab[3 * i + 2];
        int y = T.l_to_y[L], ify = T.l_to_fy[L];
        /* a/500 and b/200 in units of 1/LAB_BASE, OpenCV's multiply-shift
         * approximations of aa*BASE/500 and bb*BASE/200. */
        int adiv = ((5 * aa * 53687 + (1 << 7)) >> 13) - 128 * LAB_BASE / 500;
        int bdiv = ((bb * 41943 + (1 << 4)) >> 9) - 128 * LAB_BASE / 200 + 1;
        int x = T.ab_to_xz[ify + adiv - MIN_AB_VALUE];
        int z = T.ab_to_xz[ify - bdiv - MIN_AB_VALUE];
        for (int c = 0; c < 3; c++) {
            int v = DESCALE(C[c * 3] * x + C[c * 3 + 1] * y + C[c * 3 + 2] * z, LAB2RGB_SHIFT);
            v = v < 0 ? 0 : v > INV_GAMMA_TAB_SIZE - 1 ? INV_GAMMA_TAB_SIZE - 1 : v;
            rgb[3 * i + c] = sat_u8(T.inv_gamma[v]);
        }
    }
}
