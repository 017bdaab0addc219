/* kernels_avx512.c - AVX-512 VNNI kernels (compiled with AVX-512 flags, used
 * only when ev_cpu_features() reports avx512f + avx512_vnni).
 *
 * Quantized weights are interleaved 16 rows deep (kernels_internal.h): one
 * zmm holds 4 quants of 16 rows, and vpdpbusd against 4 broadcast activation
 * bytes adds them into 16 per-row int32 lanes.  vpdpbusd multiplies unsigned
 * by signed bytes, so Q8_0 quants are stored as w+128 and Q4_0 nibbles are
 * used as 0..15; the block sum of the activations removes the offset
 * (128*sum(x), 8*sum(x)) exactly in int32.  A tile of up to 8 tokens reuses
 * each loaded weight register 8 times for prefill. */
#include "kernels_internal.h"

/* The small fixed loops over tokens (j) and rows/chunks (k) of a tile are
 * unrolled with pragmas: -O2 alone keeps the accumulator arrays on the stack. */

#if defined(EV_KERNELS_X86)
#include <immintrin.h>
#include <string.h>

#define R 16
#define TILE 8

static inline __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

static void quantize_avx512(const float *x, int64_t cols, int8_t *q, float *d, int32_t *s) {
    for (int64_t b = 0; b < cols / EV_QK; b++) {
        __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        __m512 m = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1));
        float amax = _mm512_reduce_max_ps(m), id;
        __m512i i0, i1;
        ev_q8_scale(amax, &d[b], &id);
        /* cvtps rounds half to even (default MXCSR), like the scalar nearbyintf */
        i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
        i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
        i0 = _mm512_max_epi32(_mm512_min_epi32(i0, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        i1 = _mm512_max_epi32(_mm512_min_epi32(i1, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
        _mm_storeu_si128((__m128i *)(q + b * 32), _mm512_cvtepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + b * 32 + 16), _mm512_cvtepi32_epi8(i1));
        s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

/* Block dot of 8 unpacked weight registers (u8, register k = elements
 * 4k..4k+3 of 16 rows) with one token's 32 activations, in two chains that
 * hide latency: elements 0..15 and 16..31.  For Q4_0 the second half holds
 * the high nibbles left in place, 16 x their value: that chain's sum is an
 * exact multiple of 16 (|sum| < 2^21) and hi_shift = 4 shifts it back
 * exactly, one shift per block instead of one per register. */
static inline __m512i dot_block(const __m512i w[8], const int8_t *xq, int hi_shift) {
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
    lo = _mm512_dpbusd_epi32(lo, w[0], bcast4(xq + 0));
    hi = _mm512_dpbusd_epi32(hi, w[4], bcast4(xq + 16));
    lo = _mm512_dpbusd_epi32(lo, w[1], bcast4(xq + 4));
    hi = _mm512_dpbusd_epi32(hi, w[5], bcast4(xq + 20));
    lo = _mm512_dpbusd_epi32(lo, w[2], bcast4(xq + 8));
    hi = _mm512_dpbusd_epi32(hi, w[6], bcast4(xq + 24));
    lo = _mm512_dpbusd_epi32(lo, w[3], bcast4(xq + 12));
    hi = _mm512_dpbusd_epi32(hi, w[7], bcast4(xq + 28));
    if (hi_shift) hi = _mm512_srai_epi32(hi, 4);
    return _mm512_add_epi32(lo, hi);
}

static inline void store_rows(float *y, __m512 v, int nrows) {
    if (nrows == R) _mm512_storeu_ps(y, v);
    else _mm512_mask_storeu_ps(y, (__mmask16)((1u << nrows) - 1u), v);
}

/* One group of 16 rows times T (<= TILE) tokens starting at t. */
static inline __attribute__((always_inline)) void
tile_q(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int kind,
       float *Y, int64_t ldy) {
    const int q4 = kind == 1, q51 = kind == 2;   /* kind 0: Q8_0, 1: Q4_0, 2: Q5_1 (Q8_0 + mins) */
    const int64_t nb = W->nb, qb = q4 ? 16 : 32;
    const int32_t offset = q4 ? 8 : 128;
    __m512 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wq = W->qs + (g * nb + b) * qb * R;
        ev_prefetch_ahead(wq, qb * R);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(W->d + (g * nb + b) * R)));
        __m512i w[8];
        if (q4) {
            /* high nibbles stay in place (16 x their value): see dot_block */
            const __m512i lo = _mm512_set1_epi32(0x0f0f0f0f);
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {
                __m512i v = _mm512_loadu_si512(wq + k * 64);
                w[k] = _mm512_and_si512(v, lo);
                w[k + 4] = _mm512_andnot_si512(lo, v);
            }
        } else {
            #pragma GCC unroll 8
            for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512(wq + k * 64);
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            const int64_t tb = (t + j) * nb + b;
            __m512i isum = _mm512_sub_epi32(dot_block(w, A->q + tb * 32, q4), _mm512_set1_epi32(offset * A->s[tb]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(A->d[tb])), acc[j]);
            if (q51) {   /* Q5_1: + sum(x) * (m dx) */
                __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(W->m + (g * nb + b) * R)));
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps((float)A->s[tb]), _mm512_mul_ps(mw, _mm512_set1_ps(A->d[tb])), acc[j]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q8_0_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
q4_0_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 1, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_1_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q(W, A, g, t, T, 2, Y, ldy);
}

EV_TILE_FNS8(q8_0_avx512)
EV_TILE_FNS8(q4_0_avx512)
EV_TILE_FNS8(q5_1_avx512)

/* Float weights: f16 rows converted with vcvtph2ps (exact); columns past
 * the last multiple of 16 done in scalar. */
static inline __m512 load_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + i)));
    return _mm512_loadu_ps((const float *)base + i);
}

static inline float scalar_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) {
        uint16_t h;
        memcpy(&h, base + 2 * i, 2);
        return _cvtsh_ss(h);
    }
    return ((const float *)base)[i];
}

/* 4 rows x T (<= 4) tokens: 16 accumulators; each weight vector loaded (and
 * converted from f16) once per 16 columns and used for T tokens. */
static inline __attribute__((always_inline)) void
tile_f(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int f16, float *Y, int64_t ldy) {
    const int64_t cols = W->cols, esz = f16 ? 2 : 4, r = g * EV_FLOAT_ROWS;
    const int nr = (int)(W->rows - r < 4 ? W->rows - r : 4);
    const float *X = A->x;
    const uint8_t *w[4];
    __m512 acc[4][4];
    int64_t i = 0;
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) w[k] = W->qs + (r + (k < nr ? k : 0)) * cols * esz;
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++)
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) acc[j][k] = _mm512_setzero_ps();
    for (; i + 16 <= cols; i += 16) {
        __m512 wv[4];
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) {
            if (f16 && ((i * esz) & 63) == 0) ev_prefetch_at(w[k] + i * esz, 4 * cols * esz);
            wv[k] = load_w(w[k], i, f16);
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            __m512 xv = _mm512_loadu_ps(X + (t + j) * cols + i);
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) acc[j][k] = _mm512_fmadd_ps(wv[k], xv, acc[j][k]);
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) {
        const float *x = X + (t + j) * cols;
        float out[4];
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) out[k] = _mm512_reduce_add_ps(acc[j][k]);
        for (int64_t c = i; c < cols; c++)
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) out[k] += scalar_w(w[k], c, f16) * x[c];
        for (int k = 0; k < nr; k++) Y[(t + j) * ldy + r + k] = out[k];
    }
}

static inline __attribute__((always_inline)) void
f32_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
f16_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, T, 1, Y, ldy);
}

EV_TILE_FNS4(f32_avx512)
EV_TILE_FNS4(f16_avx512)

/* exp(x), see kernels_internal.h */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EV_EXP_LO)), _mm512_set1_ps(EV_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EV_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EV_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EV_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EV_EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EV_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EV_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EV_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EV_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EV_EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

static void silu_mul_avx512(const float *g, const float *u, float *out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
    }
    if (i < n) ev_silu_mul_tail(silu_mul_avx512, 16, g + i, u + i, out + i, n - i);
}

/* ---- K-quants (record layout: kernels_internal.h) ------------------------ */

static void quantize_k_avx512(const float *x, int64_t cols, int8_t *q, float *d, int16_t *bs) {
    for (int64_t b = 0; b < cols / EV_QK_K; b++) {
        const float *xb = x + b * EV_QK_K;
        __m512 m = _mm512_setzero_ps();
        float id;
        #pragma GCC unroll 16
        for (int k = 0; k < 16; k++) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + 16 * k)));
        ev_q8_scale(_mm512_reduce_max_ps(m), &d[b], &id);
        for (int k = 0; k < 16; k++) { /* rounding as in quantize_avx512 */
            __m512i iv = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * k), _mm512_set1_ps(id)));
            iv = _mm512_max_epi32(_mm512_min_epi32(iv, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
            _mm_storeu_si128((__m128i *)(q + b * EV_QK_K + 16 * k), _mm512_cvtepi32_epi8(iv));
            bs[b * 16 + k] = (int16_t)_mm512_reduce_add_epi32(iv);
        }
    }
}

/* Value v (0..15) of the record's scale pairs for the 16 rows, as int32
 * lanes (sign-extended for Q6_K's int8 scales). */
static inline __m512i scale_lanes(const uint8_t *scp, int v, int is_signed) {
    __m256i raw = _mm256_loadu_si256((const __m256i *)(scp + (v >> 1) * 2 * R));
    __m512i pr = is_signed ? _mm512_cvtepi8_epi16(raw) : _mm512_cvtepu8_epi16(raw);
    return (v & 1) ? _mm512_srai_epi32(pr, 16) : _mm512_srai_epi32(_mm512_slli_epi32(pr, 16), 16);
}

/* sum over pairs p of pair p of the scales (int16, two per row lane) times
 * the token's activation pair p: mins x sub-block sums (Q4_K/Q5_K), or
 * Q6_K scales x 16-sums. */
static inline __m512i pair_madd(const uint8_t *scp, int p, int is_signed, int32_t xpair) {
    __m256i raw = _mm256_loadu_si256((const __m256i *)(scp + p * 2 * R));
    __m512i pr = is_signed ? _mm512_cvtepi8_epi16(raw) : _mm512_cvtepu8_epi16(raw);
    return _mm512_madd_epi16(pr, _mm512_set1_epi32(xpair));
}

/* The 8 sums of 32 activations of a block (from its 16-sums), as int16
 * pairs (xs 2q, xs 2q+1) in int32 lanes 0, 1, 4, 5 for q = 0..3. */
static inline __m512i xsum_pairs(const int16_t *bs) {
    __m256i x32 = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bs), _mm256_set1_epi16(1));
    return _mm512_castsi256_si512(_mm256_packs_epi32(x32, x32));   /* |sum| <= 32 * 127: no saturation */
}

static inline __m512i pair_madd_v(const uint8_t *scp, int p, __m512i xpair) {
    return _mm512_madd_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(scp + p * 2 * R))), xpair);
}

/* Q4_K / Q5_K decode (T = 1), one block: each piece loaded once for both
 * of its sub-blocks (low nibbles: s = 2j, high: 2j + 1), two dot chains each. */
static inline __attribute__((always_inline)) __m512i
k45_gemv_block(const uint8_t *rec, const uint8_t *scp, const int8_t *xb, int q5) {
    const ev_klayout L = ev_klayout_of(q5 ? EV_TYPE_Q5_K : EV_TYPE_Q4_K);
    const __m512i lo4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    __m512i isum = _mm512_setzero_si512();
    #pragma GCC unroll 1
    for (int j = 0; j < 4; j++) {
        const __m128i sh = _mm_cvtsi32_si128(2 * j);
        __m512i dl[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, dh[2] = {dl[0], dl[0]};
        #pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m512i v = _mm512_loadu_si512(rec + (8 * j + k) * 64);
            __m512i wl = _mm512_and_si512(v, lo4), wh = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
            if (q5) {   /* fifth bits 2j (low) and 2j + 1 (high) of qh piece k moved to bit 4 */
                __m512i hb = _mm512_srl_epi16(_mm512_loadu_si512(rec + L.qh * R + k * 64), sh);
                wl = _mm512_or_si512(wl, _mm512_slli_epi16(_mm512_and_si512(hb, one), 4));
                wh = _mm512_or_si512(wh, _mm512_and_si512(_mm512_slli_epi16(hb, 3), _mm512_set1_epi8(0x10)));
            }
            dl[k & 1] = _mm512_dpbusd_epi32(dl[k & 1], wl, bcast4(xb + 64 * j + 4 * k));
            dh[k & 1] = _mm512_dpbusd_epi32(dh[k & 1], wh, bcast4(xb + 64 * j + 32 + 4 * k));
        }
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(_mm512_add_epi32(dl[0], dl[1]), scale_lanes(scp, 2 * j, 0)));
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(_mm512_add_epi32(dh[0], dh[1]), scale_lanes(scp, 2 * j + 1, 0)));
    }
    return isum;
}

/* Q4_K / Q5_K: per sub-block s of 32, 8 unsigned weight registers (nibble s%2
 * of chunk s/2, plus the fifth bit s of qh for Q5_K) dotted with the token's
 * 32 activations, times the sub-block's scale. */
static inline __attribute__((always_inline)) void
tile_k45(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int q5, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(q5 ? EV_TYPE_Q5_K : EV_TYPE_Q4_K);
    const int64_t rb = (int64_t)L.rec * R;
    const __m512i lo4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    __m512 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (g * nb + b) * rb, *scp = rec + L.sc * R;
        ev_prefetch_ahead(rec, rb);
        __m512i isum[TILE], msum[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = msum[j] = _mm512_setzero_si512();
        if (T == 1)
            isum[0] = k45_gemv_block(rec, scp, A->q + (t * nb + b) * EV_QK_K, q5);
        else
        #pragma GCC unroll 1
        for (int s = 0; s < 8; s++) {
            __m512i w[8];
            #pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m512i v = _mm512_loadu_si512(rec + ((s >> 1) * 8 + k) * 64);
                w[k] = _mm512_and_si512((s & 1) ? _mm512_srli_epi16(v, 4) : v, lo4);
                if (q5) {
                    __m512i hb = _mm512_srl_epi16(_mm512_loadu_si512(rec + L.qh * R + k * 64), _mm_cvtsi32_si128(s));
                    w[k] = _mm512_or_si512(w[k], _mm512_slli_epi16(_mm512_and_si512(hb, one), 4));
                }
            }
            __m512i scv = scale_lanes(scp, s, 0);
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++) {
                const int8_t *xq = A->q + ((t + j) * nb + b) * EV_QK_K + 32 * s;
                __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
                #pragma GCC unroll 8
                for (int k = 0; k < 8; k += 2) {
                    d0 = _mm512_dpbusd_epi32(d0, w[k], bcast4(xq + 4 * k));
                    d1 = _mm512_dpbusd_epi32(d1, w[k + 1], bcast4(xq + 4 * k + 4));
                }
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(_mm512_add_epi32(d0, d1), scv));
            }
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            __m512i xs = xsum_pairs(A->bs + ((t + j) * nb + b) * 16);
            #pragma GCC unroll 4
            for (int p = 0; p < 4; p++)
                msum[j] = _mm512_add_epi32(msum[j], pair_madd_v(scp, 4 + p, _mm512_permutexvar_epi32(_mm512_set1_epi32(p < 2 ? p : p + 2), xs)));
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + L.d * R)));
        __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + L.d * R + 2 * R)));
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            __m512 dx = _mm512_set1_ps(A->d[(t + j) * nb + b]);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(dw, dx), acc[j]);
            acc[j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum[j]), _mm512_mul_ps(dm, dx), acc[j]);
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

/* Q6_K decode (T = 1), one block: each ql/qh piece loaded once and split
 * into its 4 sub-blocks (quarters c), the high bits moved into place with
 * one shift and mask each; 4 dot chains, one per quarter. */
static inline __attribute__((always_inline)) __m512i
k6_gemv_block(const uint8_t *rec, const uint8_t *scp, const int8_t *xb) {
    const ev_klayout L = ev_klayout_of(EV_TYPE_Q6_K);
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    __m512i isum = _mm512_setzero_si512();
    const __m512i hi2 = _mm512_set1_epi8(0x30);
    #pragma GCC unroll 1
    for (int h8 = 0; h8 < 4; h8++) {
        const int n = h8 >> 1, kk = h8 & 1;
        __m512i d4[4];
        #pragma GCC unroll 4
        for (int c = 0; c < 4; c++) d4[c] = _mm512_setzero_si512();
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const int k = 4 * kk + i;
            __m512i a = _mm512_loadu_si512(rec + (16 * n + k) * 64);
            __m512i bq = _mm512_loadu_si512(rec + (16 * n + 8 + k) * 64);
            __m512i h = _mm512_loadu_si512(rec + L.qh * R + (8 * n + k) * 64);
            __m512i w0 = _mm512_or_si512(_mm512_and_si512(a, lo4), _mm512_and_si512(_mm512_slli_epi16(h, 4), hi2));
            __m512i w1 = _mm512_or_si512(_mm512_and_si512(bq, lo4), _mm512_and_si512(_mm512_slli_epi16(h, 2), hi2));
            __m512i w2 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), lo4), _mm512_and_si512(h, hi2));
            __m512i w3 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(bq, 4), lo4),
                                         _mm512_and_si512(_mm512_srli_epi16(h, 2), hi2));
            const int8_t *xq = xb + 128 * n + 4 * k;
            d4[0] = _mm512_dpbusd_epi32(d4[0], w0, bcast4(xq));
            d4[1] = _mm512_dpbusd_epi32(d4[1], w1, bcast4(xq + 32));
            d4[2] = _mm512_dpbusd_epi32(d4[2], w2, bcast4(xq + 64));
            d4[3] = _mm512_dpbusd_epi32(d4[3], w3, bcast4(xq + 96));
        }
        #pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(d4[c], scale_lanes(scp, 8 * n + 2 * c + kk, 1)));
    }
    return isum;
}

/* Q6_K: per sub-block s of 16 (half n, quarter c, part kk), 4 weight
 * registers (4-bit ql | 2-bit qh << 4, unsigned 0..63) dotted with 16
 * activations times the int8 scale; 32 * sum(scale * 16-sum) removes the
 * offset of 32 in int32. */
static inline __attribute__((always_inline)) void
tile_k6(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(EV_TYPE_Q6_K);
    const int64_t rb = (int64_t)L.rec * R;
    const __m512i lo4 = _mm512_set1_epi8(0x0f), lo2 = _mm512_set1_epi8(0x03);
    __m512 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (g * nb + b) * rb, *scp = rec + L.sc * R;
        ev_prefetch_ahead(rec, rb);
        __m512i isum[TILE], corr[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = corr[j] = _mm512_setzero_si512();
        if (T == 1)
            isum[0] = k6_gemv_block(rec, scp, A->q + (t * nb + b) * EV_QK_K);
        else
        #pragma GCC unroll 1
        for (int s = 0; s < 16; s++) {
            const int n = s >> 3, c = (s & 7) >> 1, kk = s & 1;
            __m512i w[4];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                const int k = 4 * kk + i;
                __m512i a = _mm512_loadu_si512(rec + (16 * n + 8 * (c & 1) + k) * 64);
                __m512i h = _mm512_loadu_si512(rec + L.qh * R + (8 * n + k) * 64);
                __m512i lo = _mm512_and_si512((c >> 1) ? _mm512_srli_epi16(a, 4) : a, lo4);
                __m512i hi = _mm512_and_si512(_mm512_srl_epi16(h, _mm_cvtsi32_si128(2 * c)), lo2);
                w[i] = _mm512_or_si512(lo, _mm512_slli_epi16(hi, 4));
            }
            __m512i scv = scale_lanes(scp, s, 1);
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++) {
                const int8_t *xq = A->q + ((t + j) * nb + b) * EV_QK_K + 128 * n + 32 * c + 16 * kk;
                __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], bcast4(xq));
                __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[1], bcast4(xq + 4));
                d0 = _mm512_dpbusd_epi32(d0, w[2], bcast4(xq + 8));
                d1 = _mm512_dpbusd_epi32(d1, w[3], bcast4(xq + 12));
                isum[j] = _mm512_add_epi32(isum[j], _mm512_mullo_epi32(_mm512_add_epi32(d0, d1), scv));
            }
        }
        #pragma GCC unroll 8
        for (int p = 0; p < 8; p++)
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++)
                corr[j] = _mm512_add_epi32(corr[j], pair_madd(scp, p, 1, ev_bs_pair16(A->bs + ((t + j) * nb + b) * 16, p)));
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(rec + L.d * R)));
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            __m512i I = _mm512_sub_epi32(isum[j], _mm512_slli_epi32(corr[j], 5));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I), _mm512_mul_ps(dw, _mm512_set1_ps(A->d[(t + j) * nb + b])), acc[j]);
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q4_k_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k45(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_k_avx512(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k45(W, A, g, t, T, 1, Y, ldy);
}

EV_TILE_FNS8(q4_k_avx512)
EV_TILE_FNS8(q5_k_avx512)
EV_TILE_FNS8(tile_k6)

const ev_kernel_variant ev_variant_avx512_vnni = {
    .name = "avx512_vnni",
    .interleave = R,
    .xor_q8 = 1,
    .quantize = quantize_avx512,
    .quantize_k = quantize_k_avx512,
    .silu_mul = silu_mul_avx512,
    .mk = {
        [EV_KIND_F32] = EV_TILES4(f32_avx512),
        [EV_KIND_F16] = EV_TILES4(f16_avx512),
        [EV_KIND_Q8_0] = EV_TILES8(q8_0_avx512),
        [EV_KIND_Q4_0] = EV_TILES8(q4_0_avx512),
        [EV_KIND_Q5_1] = EV_TILES8(q5_1_avx512),
        [EV_KIND_Q4_K] = EV_TILES8(q4_k_avx512),
        [EV_KIND_Q5_K] = EV_TILES8(q5_k_avx512),
        [EV_KIND_Q6_K] = EV_TILES8(tile_k6),
    },
};
#endif /* EV_KERNELS_X86 */
