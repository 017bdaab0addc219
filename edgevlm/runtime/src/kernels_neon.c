/* kernels_neon.c - AArch64 NEON dotprod kernels (compiled with
 * -march=armv8.2-a+dotprod, used only when ev_cpu_features() reports
 * neon_dotprod).
 *
 * Quantized weights are interleaved 4 rows deep (kernels_internal.h): one
 * q register holds 4 quants of 4 rows, and sdot-by-lane against the
 * activation register adds them into 4 per-row int32 lanes (signed x signed,
 * so Q8_0 needs no offset; Q4_0 nibbles are used as 0..15 and 8*sum(x)
 * removes the offset).  Tiles of up to 4 tokens reuse each weight register. */
#include "kernels_internal.h"

/* The small fixed loops over tokens (j) and rows/chunks (k) of a tile are
 * unrolled with pragmas: -O2 alone keeps the accumulator arrays on the stack. */

#if defined(EV_KERNELS_NEON)
#include <arm_neon.h>
#include <string.h>

#define R 4
#define TILE 4

static void quantize_neon(const float *x, int64_t cols, int8_t *q, float *d, int32_t *s) {
    const int32x4_t lim = vdupq_n_s32(127), nlim = vdupq_n_s32(-127);
    for (int64_t b = 0; b < cols / EV_QK; b++) {
        float32x4_t v[8], m = vdupq_n_f32(0.0f);
        int32x4_t iv[8], sum = vdupq_n_s32(0);
        float id;
        #pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            v[k] = vld1q_f32(x + b * 32 + 4 * k);
            m = vmaxq_f32(m, vabsq_f32(v[k]));
        }
        ev_q8_scale(vmaxvq_f32(m), &d[b], &id);
        #pragma GCC unroll 8
        for (int k = 0; k < 8; k++) { /* vcvtn rounds half to even, like the scalar nearbyintf */
            iv[k] = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(v[k], id)), lim), nlim);
            sum = vaddq_s32(sum, iv[k]);
        }
        #pragma GCC unroll 8
        for (int k = 0; k < 8; k += 2) {
            int16x8_t h = vcombine_s16(vqmovn_s32(iv[k]), vqmovn_s32(iv[k + 1]));
            vst1_s8(q + b * 32 + 4 * k, vqmovn_s16(h));
        }
        s[b] = vaddvq_s32(sum);
    }
}

static inline void store_rows(float *y, float32x4_t v, int nrows) {
    float tmp[4];
    if (nrows == R) { vst1q_f32(y, v); return; }
    vst1q_f32(tmp, v);
    for (int r = 0; r < nrows; r++) y[r] = tmp[r];
}

/* Dot of one block of 4 rows (8 weight registers, chunk k = elements
 * 4k..4k+3) with one token's 32 activations; two chains hide latency. */
static inline int32x4_t dot_block(const int8x16_t w[8], const int8_t *xq) {
    int8x16_t xl = vld1q_s8(xq), xh = vld1q_s8(xq + 16);
    int32x4_t a0 = vdupq_n_s32(0), a1 = vdupq_n_s32(0);
    a0 = vdotq_laneq_s32(a0, w[0], xl, 0);
    a1 = vdotq_laneq_s32(a1, w[1], xl, 1);
    a0 = vdotq_laneq_s32(a0, w[2], xl, 2);
    a1 = vdotq_laneq_s32(a1, w[3], xl, 3);
    a0 = vdotq_laneq_s32(a0, w[4], xh, 0);
    a1 = vdotq_laneq_s32(a1, w[5], xh, 1);
    a0 = vdotq_laneq_s32(a0, w[6], xh, 2);
    a1 = vdotq_laneq_s32(a1, w[7], xh, 3);
    return vaddq_s32(a0, a1);
}

static inline __attribute__((always_inline)) void
tile_q(const ev_weights *W, const ev_qacts *A, int64_t g, int64_t t, int T, int q4, float *Y, int64_t ldy) {
    const int64_t nb = W->nb, qb = q4 ? 16 : 32;
    float32x4_t acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wq = W->qs + (g * nb + b) * qb * R;
        ev_prefetch_ahead(wq, qb * R);
        float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(W->d + (g * nb + b) * R)));
        int8x16_t w[8];
        if (q4) {
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {
                uint8x16_t v = vld1q_u8(wq + 16 * k);
                w[k] = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f)));
                w[k + 4] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
            }
        } else {
            #pragma GCC unroll 8
            for (int k = 0; k < 8; k++) w[k] = vld1q_s8((const int8_t *)wq + 16 * k);
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            const int64_t tb = (t + j) * nb + b;
            int32x4_t isum = dot_block(w, A->q + tb * 32);
            if (q4) isum = vsubq_s32(isum, vdupq_n_s32(8 * A->s[tb]));
            acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(isum), vmulq_n_f32(dw, A->d[tb]));
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
gemm_q(const ev_weights *W, const ev_qacts *A, int64_t t0, int64_t t1, int64_t g0, int64_t g1,
       float *Y, int64_t ldy, int q4) {
    for (int64_t g = g0; g < g1; g++) {
        int64_t t = t0;
        for (; t + TILE <= t1; t += TILE) tile_q(W, A, g, t, TILE, q4, Y, ldy);
        switch (t1 - t) { /* constant T per call so the tile stays in registers */
        case 3: tile_q(W, A, g, t, 3, q4, Y, ldy); break;
        case 2: tile_q(W, A, g, t, 2, q4, Y, ldy); break;
        case 1: tile_q(W, A, g, t, 1, q4, Y, ldy); break;
        default: break;
        }
    }
}

static void gemm_q8_0_neon(const ev_weights *W, const ev_qacts *A, int64_t t0, int64_t t1,
                           int64_t g0, int64_t g1, float *Y, int64_t ldy) {
    gemm_q(W, A, t0, t1, g0, g1, Y, ldy, 0);
}

static void gemm_q4_0_neon(const ev_weights *W, const ev_qacts *A, int64_t t0, int64_t t1,
                           int64_t g0, int64_t g1, float *Y, int64_t ldy) {
    gemm_q(W, A, t0, t1, g0, g1, Y, ldy, 1);
}

/* Float weights: 4 rows x 1 token per inner loop, scalar column tail. */
static inline float32x4_t load_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)base + i)));
    return vld1q_f32((const float *)base + i);
}

static inline float scalar_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) {
        __fp16 h;
        memcpy(&h, base + 2 * i, 2);
        return (float)h;
    }
    return ((const float *)base)[i];
}

static inline __attribute__((always_inline)) void
gemm_f(const ev_weights *W, const float *X, int64_t t0, int64_t t1, int64_t r0, int64_t r1,
       float *Y, int64_t ldy, int f16) {
    const int64_t cols = W->cols, esz = f16 ? 2 : 4;
    for (int64_t r = r0; r < r1; r += 4) {
        int nr = (int)(r1 - r < 4 ? r1 - r : 4);
        const uint8_t *w[4];
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) w[k] = W->qs + (r + (k < nr ? k : 0)) * cols * esz;
        for (int64_t t = t0; t < t1; t++) {
            const float *x = X + t * cols;
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            float out[4];
            int64_t i = 0;
            for (; i + 4 <= cols; i += 4) {
                float32x4_t xv = vld1q_f32(x + i);
                if (f16 && t == t0 && ((i * esz) & 63) == 0)
                    for (int k = 0; k < 4; k++) ev_prefetch_at(w[k] + i * esz, 4 * cols * esz);
                a0 = vfmaq_f32(a0, load_w(w[0], i, f16), xv);
                a1 = vfmaq_f32(a1, load_w(w[1], i, f16), xv);
                a2 = vfmaq_f32(a2, load_w(w[2], i, f16), xv);
                a3 = vfmaq_f32(a3, load_w(w[3], i, f16), xv);
            }
            out[0] = vaddvq_f32(a0);
            out[1] = vaddvq_f32(a1);
            out[2] = vaddvq_f32(a2);
            out[3] = vaddvq_f32(a3);
            for (; i < cols; i++)
                #pragma GCC unroll 8
                for (int k = 0; k < 4; k++) out[k] += scalar_w(w[k], i, f16) * x[i];
            for (int k = 0; k < nr; k++) Y[t * ldy + r + k] = out[k];
        }
    }
}

static void gemm_f32_neon(const ev_weights *W, const float *X, int64_t t0, int64_t t1,
                          int64_t g0, int64_t g1, float *Y, int64_t ldy) {
    gemm_f(W, X, t0, t1, g0, g1, Y, ldy, 0);
}

static void gemm_f16_neon(const ev_weights *W, const float *X, int64_t t0, int64_t t1,
                          int64_t g0, int64_t g1, float *Y, int64_t ldy) {
    gemm_f(W, X, t0, t1, g0, g1, Y, ldy, 1);
}

/* exp(x), see kernels_internal.h */
static inline float32x4_t exp_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(EV_EXP_LO)), vdupq_n_f32(EV_EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(EV_LOG2E)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(EV_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(EV_LN2_LO));
    float32x4_t p = vdupq_n_f32(EV_EXP_P0);
    p = vfmaq_f32(vdupq_n_f32(EV_EXP_P1), p, r);
    p = vfmaq_f32(vdupq_n_f32(EV_EXP_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(EV_EXP_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(EV_EXP_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(EV_EXP_P5), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static void silu_mul_neon(const float *g, const float *u, float *out, int64_t n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t gv = vld1q_f32(g + i);
        float32x4_t s = vdivq_f32(gv, vaddq_f32(one, exp_neon(vnegq_f32(gv))));
        vst1q_f32(out + i, vmulq_f32(s, vld1q_f32(u + i)));
    }
    if (i < n) ev_silu_mul_tail(silu_mul_neon, 4, g + i, u + i, out + i, n - i);
}

const ev_kernel_variant ev_variant_neon_dotprod = {
    "neon_dotprod", R, 0, quantize_neon, gemm_q8_0_neon, gemm_q4_0_neon, gemm_f32_neon, gemm_f16_neon,
    silu_mul_neon,
};
#endif /* EV_KERNELS_NEON */
