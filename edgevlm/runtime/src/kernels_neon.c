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
tile_q(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int kind, float *Y, int64_t ldy) {
    const int q4 = kind == 1, q51 = kind == 2;   /* kind 0: Q8_0, 1: Q4_0, 2: Q5_1 (Q8_0 + mins) */
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
            if (q51) {   /* Q5_1: + sum(x) * (m dx) */
                float32x4_t mw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(W->m + (g * nb + b) * R)));
                acc[j] = vfmaq_f32(acc[j], vdupq_n_f32((float)A->s[tb]), vmulq_n_f32(mw, A->d[tb]));
            }
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q8_0_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
q4_0_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 1, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_1_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 2, Y, ldy);
}

EV_TILE_FNS4(q8_0_neon)
EV_TILE_FNS4(q4_0_neon)
EV_TILE_FNS4(q5_1_neon)

/* Float weights: 4 rows x 1 token per call, scalar column tail. */
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

/* Rows g*4 .. g*4+3 (fewer in the last group) x 1 token; the F16 rows are
 * prefetched a group ahead while the first token runs. */
static inline __attribute__((always_inline)) void
tile_f(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int f16, float *Y, int64_t ldy) {
    const int64_t cols = W->cols, esz = f16 ? 2 : 4, r = g * EV_FLOAT_ROWS;
    const int nr = (int)(W->rows - r < 4 ? W->rows - r : 4);
    const float *x = A->x + t * cols;
    const uint8_t *w[4];
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    float out[4];
    int64_t i = 0;
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) w[k] = W->qs + (r + (k < nr ? k : 0)) * cols * esz;
    for (; i + 4 <= cols; i += 4) {
        float32x4_t xv = vld1q_f32(x + i);
        if (f16 && t == 0 && ((i * esz) & 63) == 0)
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

static void f32_neon_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, 0, Y, ldy);
}

static void f16_neon_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, 1, Y, ldy);
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

/* ---- K-quants (record layout: kernels_internal.h) ------------------------
 * sdot is signed x signed: Q6_K quants get their offset of 32 removed in
 * the weights, so no activation-sum correction is needed. */

static void quantize_k_neon(const float *x, int64_t cols, int8_t *q, float *d, int16_t *bs) {
    const int32x4_t lim = vdupq_n_s32(127), nlim = vdupq_n_s32(-127);
    for (int64_t b = 0; b < cols / EV_QK_K; b++) {
        const float *xb = x + b * EV_QK_K;
        float32x4_t m = vdupq_n_f32(0.0f);
        float id;
        for (int k = 0; k < 64; k++) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xb + 4 * k)));
        ev_q8_scale(vmaxvq_f32(m), &d[b], &id);
        for (int k = 0; k < 16; k++) { /* rounding as in quantize_neon */
            int32x4_t iv[4], sum = vdupq_n_s32(0);
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                iv[i] = vmaxq_s32(vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(xb + 16 * k + 4 * i), id)), lim), nlim);
                sum = vaddq_s32(sum, iv[i]);
            }
            int16x8_t h0 = vcombine_s16(vqmovn_s32(iv[0]), vqmovn_s32(iv[1]));
            int16x8_t h1 = vcombine_s16(vqmovn_s32(iv[2]), vqmovn_s32(iv[3]));
            vst1q_s8(q + b * EV_QK_K + 16 * k, vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1)));
            bs[b * 16 + k] = (int16_t)vaddvq_s32(sum);
        }
    }
}

/* Value v (0..15) of the record's scale pairs for the 4 rows as int32 lanes. */
static inline int32x4_t scale_lanes(const uint8_t *scp, int v, int is_signed) {
    int32x4_t pr = is_signed ? vreinterpretq_s32_s16(vmovl_s8(vld1_s8((const int8_t *)scp + (v >> 1) * 2 * R)))
                             : vreinterpretq_s32_u16(vmovl_u8(vld1_u8(scp + (v >> 1) * 2 * R)));
    return (v & 1) ? vshrq_n_s32(pr, 16) : vshrq_n_s32(vshlq_n_s32(pr, 16), 16);
}

static inline int32x4_t dot_lane(int32x4_t acc, int8x16_t w, int8x16_t x, int lane) {
    switch (lane) {   /* the lane must be a constant */
    case 0: return vdotq_laneq_s32(acc, w, x, 0);
    case 1: return vdotq_laneq_s32(acc, w, x, 1);
    case 2: return vdotq_laneq_s32(acc, w, x, 2);
    default: return vdotq_laneq_s32(acc, w, x, 3);
    }
}

/* Q6_K, one block: isum[j] += sum over sub-blocks of 16 of scale x dot for
 * token j (activations xb + j * nb * 256). */
static inline __attribute__((always_inline)) void
k6_block(const uint8_t *rec, const uint8_t *scp, const int8_t *xb, int64_t nb, int T, int32x4_t *isum) {
    const ev_klayout L = ev_klayout_of(EV_TYPE_Q6_K);
    for (int s = 0; s < 16; s++) {   /* sub-block of 16: see kernels_avx512.c */
        const int n = s >> 3, c = (s & 7) >> 1, kk = s & 1;
        int8x16_t w[4];
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const int k = 4 * kk + i;
            uint8x16_t a = vld1q_u8(rec + (16 * n + 8 * (c & 1) + k) * 16);
            uint8x16_t h = vld1q_u8(rec + L.qh * R + (8 * n + k) * 16);
            uint8x16_t lo = (c >> 1) ? vshrq_n_u8(a, 4) : vandq_u8(a, vdupq_n_u8(0x0f));
            uint8x16_t hi = vandq_u8(vshlq_u8(h, vdupq_n_s8((int8_t)(-2 * c))), vdupq_n_u8(3));
            w[i] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8(hi, 4))), vdupq_n_s8(32));
        }
        int32x4_t scv = scale_lanes(scp, s, 1);
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            int8x16_t xv = vld1q_s8(xb + j * nb * EV_QK_K + 128 * n + 32 * c + 16 * kk);
            int32x4_t dsum = vdupq_n_s32(0);
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) dsum = dot_lane(dsum, w[i], xv, i);
            isum[j] = vmlaq_s32(isum[j], dsum, scv);
        }
    }
}

static inline __attribute__((always_inline)) void
tile_k(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int kind, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(kind == 4 ? EV_TYPE_Q4_K : kind == 5 ? EV_TYPE_Q5_K : EV_TYPE_Q6_K);
    const int64_t rb = (int64_t)L.rec * R;
    float32x4_t acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = vdupq_n_f32(0.0f);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (g * nb + b) * rb, *scp = rec + L.sc * R;
        ev_prefetch_ahead(rec, rb);
        int32x4_t isum[TILE], msum[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = msum[j] = vdupq_n_s32(0);
        if (kind == 6) {
            k6_block(rec, scp, A->q + (t * nb + b) * EV_QK_K, nb, T, isum);
        } else {
            for (int s = 0; s < 8; s++) {
                int8x16_t w[8];
                #pragma GCC unroll 8
                for (int k = 0; k < 8; k++) {
                    uint8x16_t v = vld1q_u8(rec + ((s >> 1) * 8 + k) * 16);
                    uint8x16_t q = (s & 1) ? vshrq_n_u8(v, 4) : vandq_u8(v, vdupq_n_u8(0x0f));
                    if (kind == 5) {
                        uint8x16_t hb = vshlq_u8(vld1q_u8(rec + L.qh * R + k * 16), vdupq_n_s8((int8_t)-s));
                        q = vorrq_u8(q, vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(1)), 4));
                    }
                    w[k] = vreinterpretq_s8_u8(q);
                }
                int32x4_t scv = scale_lanes(scp, s, 0), mv = scale_lanes(scp, 8 + s, 0);
                #pragma GCC unroll 8
                for (int j = 0; j < T; j++) {
                    const int64_t tb = (t + j) * nb + b;
                    const int8_t *xq = A->q + tb * EV_QK_K + 32 * s;
                    int8x16_t x0 = vld1q_s8(xq), x1 = vld1q_s8(xq + 16);
                    int32x4_t d0 = vdupq_n_s32(0), d1 = vdupq_n_s32(0);
                    #pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) {
                        d0 = dot_lane(d0, w[k], x0, k);
                        d1 = dot_lane(d1, w[k + 4], x1, k);
                    }
                    isum[j] = vmlaq_s32(isum[j], vaddq_s32(d0, d1), scv);
                    msum[j] = vmlaq_n_s32(msum[j], mv, A->bs[tb * 16 + 2 * s] + A->bs[tb * 16 + 2 * s + 1]);
                }
            }
        }
        float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(rec + L.d * R)));
        float32x4_t dm = kind == 6 ? vdupq_n_f32(0.0f) : vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(rec + L.d * R + 2 * R)));
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            const float dx = A->d[(t + j) * nb + b];
            acc[j] = vfmaq_f32(acc[j], vcvtq_f32_s32(isum[j]), vmulq_n_f32(dw, dx));
            if (kind != 6) acc[j] = vfmsq_f32(acc[j], vcvtq_f32_s32(msum[j]), vmulq_n_f32(dm, dx));
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q4_k_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k(W, A, g, t, T, 4, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_k_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k(W, A, g, t, T, 5, Y, ldy);
}

static inline __attribute__((always_inline)) void
q6_k_neon(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k(W, A, g, t, T, 6, Y, ldy);
}

EV_TILE_FNS4(q4_k_neon)
EV_TILE_FNS4(q5_k_neon)
EV_TILE_FNS4(q6_k_neon)

const ev_kernel_variant ev_variant_neon_dotprod = {
    .name = "neon_dotprod",
    .interleave = R,
    .xor_q8 = 0,
    .quantize = quantize_neon,
    .quantize_k = quantize_k_neon,
    .silu_mul = silu_mul_neon,
    .mk = {
        [EV_KIND_F32] = EV_TILES1(f32_neon),
        [EV_KIND_F16] = EV_TILES1(f16_neon),
        [EV_KIND_Q8_0] = EV_TILES4(q8_0_neon),
        [EV_KIND_Q4_0] = EV_TILES4(q4_0_neon),
        [EV_KIND_Q5_1] = EV_TILES4(q5_1_neon),
        [EV_KIND_Q4_K] = EV_TILES4(q4_k_neon),
        [EV_KIND_Q5_K] = EV_TILES4(q5_k_neon),
        [EV_KIND_Q6_K] = EV_TILES4(q6_k_neon),
    },
};
#endif /* EV_KERNELS_NEON */
