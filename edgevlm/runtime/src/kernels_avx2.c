/* kernels_avx2.c - AVX2 + FMA + F16C kernels (compiled with those flags,
 * used only when ev_cpu_features() reports all three).
 *
 * Quantized weights are interleaved 8 rows deep (kernels_internal.h): one
 * ymm holds 4 quants of 8 rows.  AVX2 has only vpmaddubsw (u8 x s8 -> s16,
 * saturating), so exactness needs care:
 *  - Q8_0: |w| x sign(x, w) keeps each pair sum <= 128*127*2 < 32768; it is
 *    widened to int32 with vpmaddwd after every chunk.
 *  - Q4_0: nibbles 0..15 x x: a pair is <= 2*15*127 and the 8 chunks of a
 *    block sum to <= 30480 < 32768 in int16, widened once per block; 8*sum(x)
 *    then removes the nibble offset. */
#include "kernels_internal.h"

/* The small fixed loops over tokens (j) and rows/chunks (k) of a tile are
 * unrolled with pragmas: -O2 alone keeps the accumulator arrays on the stack. */

#if defined(EV_KERNELS_X86)
#include <immintrin.h>
#include <string.h>

#define R 8
#define TILE 4

static inline __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline int32_t hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float hsum8_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static void quantize_avx2(const float *x, int64_t cols, int8_t *q, float *d, int32_t *s) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    for (int64_t b = 0; b < cols / EV_QK; b++) {
        __m256 v[4], m;
        __m256i iv[4], p;
        float id;
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + b * 32 + k * 8);
        m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                          _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        ev_q8_scale(hmax8(m), &d[b], &id);
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) /* cvtps rounds half to even, like the scalar nearbyintf */
            iv[k] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[k], _mm256_set1_ps(id))), lim), nlim);
        s[b] = hsum8_epi32(_mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3])));
        /* packs interleave 128-bit lanes; the permute restores element order */
        p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + b * 32), p);
    }
}

static inline void store_rows(float *y, __m256 v, int nrows) {
    float tmp[8];
    if (nrows == R) { _mm256_storeu_ps(y, v); return; }
    _mm256_storeu_ps(tmp, v);
    for (int r = 0; r < nrows; r++) y[r] = tmp[r];
}

static inline __attribute__((always_inline)) void
tile_q8(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int q51, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wq = W->qs + (g * nb + b) * 32 * R;
        ev_prefetch_ahead(wq, 32 * R);
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(W->d + (g * nb + b) * R)));
        __m256i isum[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(wq + k * 32)), aw = _mm256_abs_epi8(w);
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++) {
                __m256i sx = _mm256_sign_epi8(bcast4(A->q + ((t + j) * nb + b) * 32 + 4 * k), w);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones));
            }
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            const int64_t tb = (t + j) * nb + b;
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dw, _mm256_set1_ps(A->d[tb])), acc[j]);
            if (q51) {   /* Q5_1: + sum(x) * (m dx) */
                __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(W->m + (g * nb + b) * R)));
                acc[j] = _mm256_fmadd_ps(_mm256_set1_ps((float)A->s[tb]), _mm256_mul_ps(mw, _mm256_set1_ps(A->d[tb])), acc[j]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
tile_q4(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const __m256i ones = _mm256_set1_epi16(1), lo = _mm256_set1_epi8(0x0f);
    __m256 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wq = W->qs + (g * nb + b) * 16 * R;
        ev_prefetch_ahead(wq, 16 * R);
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(W->d + (g * nb + b) * R)));
        __m256i s16[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) s16[j] = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(wq + k * 32));
            __m256i wl = _mm256_and_si256(v, lo), wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo);
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++) {
                const int8_t *xq = A->q + ((t + j) * nb + b) * 32;
                s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(wl, bcast4(xq + 4 * k)));
                s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(wh, bcast4(xq + 16 + 4 * k)));
            }
        }
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            const int64_t tb = (t + j) * nb + b;
            __m256i isum = _mm256_sub_epi32(_mm256_madd_epi16(s16[j], ones), _mm256_set1_epi32(8 * A->s[tb]));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(A->d[tb])), acc[j]);
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q8_0_avx2(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q8(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_1_avx2(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_q8(W, A, g, t, T, 1, Y, ldy);
}

EV_TILE_FNS4(q8_0_avx2)
EV_TILE_FNS4(q5_1_avx2)
EV_TILE_FNS4(tile_q4)

/* Float weights: 4 rows x 1 token per call, scalar column tail. */
static inline __m256 load_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    return _mm256_loadu_ps((const float *)base + i);
}

static inline float scalar_w(const uint8_t *base, int64_t i, int f16) {
    if (f16) {
        uint16_t h;
        memcpy(&h, base + 2 * i, 2);
        return _cvtsh_ss(h);
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
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    float out[4];
    int64_t i = 0;
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) w[k] = W->qs + (r + (k < nr ? k : 0)) * cols * esz;
    for (; i + 8 <= cols; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        if (f16 && t == 0 && ((i * esz) & 63) == 0)
            for (int k = 0; k < 4; k++) ev_prefetch_at(w[k] + i * esz, 4 * cols * esz);
        a0 = _mm256_fmadd_ps(load_w(w[0], i, f16), xv, a0);
        a1 = _mm256_fmadd_ps(load_w(w[1], i, f16), xv, a1);
        a2 = _mm256_fmadd_ps(load_w(w[2], i, f16), xv, a2);
        a3 = _mm256_fmadd_ps(load_w(w[3], i, f16), xv, a3);
    }
    out[0] = hsum8_ps(a0);
    out[1] = hsum8_ps(a1);
    out[2] = hsum8_ps(a2);
    out[3] = hsum8_ps(a3);
    for (; i < cols; i++)
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) out[k] += scalar_w(w[k], i, f16) * x[i];
    for (int k = 0; k < nr; k++) Y[t * ldy + r + k] = out[k];
}

static void f32_avx2_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, 0, Y, ldy);
}

static void f16_avx2_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    tile_f(W, A, g, t, 1, Y, ldy);
}

/* exp(x), see kernels_internal.h */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EV_EXP_LO)), _mm256_set1_ps(EV_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EV_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EV_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EV_LN2_LO), r);
    __m256 p = _mm256_set1_ps(EV_EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EV_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EV_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EV_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EV_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EV_EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static void silu_mul_avx2(const float *g, const float *u, float *out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    if (i < n) ev_silu_mul_tail(silu_mul_avx2, 8, g + i, u + i, out + i, n - i);
}

/* ---- K-quants (record layout: kernels_internal.h) ------------------------
 * vpmaddubsw (u8 weights x s8 activations) pairs are summed in int16 while
 * they cannot overflow (Q4_K 8 pieces: 8 * 2 * 15 * 127 = 30480; Q5_K 4:
 * 4 * 2 * 31 * 127 = 31496; Q6_K 2: 2 * 2 * 63 * 127 = 32004), then
 * vpmaddwd with the sub-block's scale duplicated in both int16 halves of
 * each row lane gives scale x dot in int32. */

static void quantize_k_avx2(const float *x, int64_t cols, int8_t *q, float *d, int16_t *bs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    for (int64_t b = 0; b < cols / EV_QK_K; b++) {
        const float *xb = x + b * EV_QK_K;
        __m256 m = _mm256_setzero_ps();
        float id;
        #pragma GCC unroll 8
        for (int k = 0; k < 32; k++) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * k)));
        ev_q8_scale(hmax8(m), &d[b], &id);
        for (int k = 0; k < 16; k++) { /* rounding as in quantize_avx2 */
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * k), _mm256_set1_ps(id)));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 16 * k + 8), _mm256_set1_ps(id)));
            i0 = _mm256_max_epi32(_mm256_min_epi32(i0, lim), nlim);
            i1 = _mm256_max_epi32(_mm256_min_epi32(i1, lim), nlim);
            bs[b * 16 + k] = (int16_t)hsum8_epi32(_mm256_add_epi32(i0, i1));
            __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(i0, i1), 0xd8);   /* 16 int16 in order */
            __m128i p8 = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            _mm_storeu_si128((__m128i *)(q + b * EV_QK_K + 16 * k), p8);
        }
    }
}

/* Scale pair p of the 8 rows: lane r = (value 2p, value 2p+1) as int16. */
static inline __m256i scale_pairs(const uint8_t *scp, int p, int is_signed) {
    __m128i raw = _mm_loadu_si128((const __m128i *)(scp + p * 2 * R));
    return is_signed ? _mm256_cvtepi8_epi16(raw) : _mm256_cvtepu8_epi16(raw);
}

/* Value v of each row in both int16 halves of its lane. */
static inline __m256i scale_dup(const uint8_t *scp, int v, int is_signed) {
    __m256i pr = scale_pairs(scp, v >> 1, is_signed), m = _mm256_set1_epi32(0xffff);
    if (v & 1) {
        __m256i hi = _mm256_andnot_si256(m, pr);
        return _mm256_or_si256(hi, _mm256_srli_epi32(hi, 16));
    }
    __m256i lo = _mm256_and_si256(pr, m);
    return _mm256_or_si256(lo, _mm256_slli_epi32(lo, 16));
}

static inline __attribute__((always_inline)) void
tile_k45(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, int q5, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(q5 ? EV_TYPE_Q5_K : EV_TYPE_Q4_K);
    const int64_t rb = (int64_t)L.rec * R;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (g * nb + b) * rb, *scp = rec + L.sc * R;
        ev_prefetch_ahead(rec, rb);
        __m256i isum[TILE], msum[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = msum[j] = _mm256_setzero_si256();
        #pragma GCC unroll 1
        for (int s = 0; s < 8; s++) {
            const __m128i sh = _mm_cvtsi32_si128(s);
            __m256i scv = scale_dup(scp, s, 0), p16[TILE];
            #pragma GCC unroll 8
            for (int half = 0; half < 2; half++) {
                #pragma GCC unroll 8
                for (int j = 0; j < T; j++) p16[j] = _mm256_setzero_si256();
                #pragma GCC unroll 4
                for (int k = 4 * half; k < 4 * half + 4; k++) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(rec + ((s >> 1) * 8 + k) * 32));
                    __m256i w = _mm256_and_si256((s & 1) ? _mm256_srli_epi16(v, 4) : v, lo4);
                    if (q5) {
                        __m256i hb = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(rec + L.qh * R + k * 32)), sh);
                        w = _mm256_or_si256(w, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                    }
                    #pragma GCC unroll 8
                    for (int j = 0; j < T; j++)
                        p16[j] = _mm256_add_epi16(p16[j], _mm256_maddubs_epi16(w, bcast4(A->q + ((t + j) * nb + b) * EV_QK_K + 32 * s + 4 * k)));
                }
                #pragma GCC unroll 8
                for (int j = 0; j < T; j++) isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], scv));
            }
        }
        #pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m256i mp = scale_pairs(scp, 4 + p, 0);
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++)
                msum[j] = _mm256_add_epi32(msum[j], _mm256_madd_epi16(mp, _mm256_set1_epi32(ev_bs_pair32(A->bs + ((t + j) * nb + b) * 16, p))));
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rec + L.d * R)));
        __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rec + L.d * R + 2 * R)));
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) {
            __m256 dx = _mm256_set1_ps(A->d[(t + j) * nb + b]);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dw, dx), acc[j]);
            acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[j]), _mm256_mul_ps(dm, dx), acc[j]);
        }
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

/* Q6_K decode (T = 1), one block: each ql/qh piece loaded once and split
 * into its 4 quarter sub-blocks (as in kernels_avx512.c), int16 sums of 2
 * pieces each widened with the scale. */
static inline __attribute__((always_inline)) __m256i
k6_gemv_block(const uint8_t *rec, const uint8_t *scp, const int8_t *xb) {
    const ev_klayout L = ev_klayout_of(EV_TYPE_Q6_K);
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256i isum = _mm256_setzero_si256();
    const __m256i hi2 = _mm256_set1_epi8(0x30);
    #pragma GCC unroll 1
    for (int h8 = 0; h8 < 4; h8++) {
        const int n = h8 >> 1, kk = h8 & 1;
        #pragma GCC unroll 1
        for (int half = 0; half < 2; half++) {
            __m256i p16[4];
            #pragma GCC unroll 4
            for (int c = 0; c < 4; c++) p16[c] = _mm256_setzero_si256();
            #pragma GCC unroll 2
            for (int i = 2 * half; i < 2 * half + 2; i++) {
                const int k = 4 * kk + i;
                __m256i a = _mm256_loadu_si256((const __m256i *)(rec + (16 * n + k) * 32));
                __m256i bq = _mm256_loadu_si256((const __m256i *)(rec + (16 * n + 8 + k) * 32));
                __m256i h = _mm256_loadu_si256((const __m256i *)(rec + L.qh * R + (8 * n + k) * 32));
                const int8_t *xq = xb + 128 * n + 4 * k;
                __m256i w0 = _mm256_or_si256(_mm256_and_si256(a, lo4), _mm256_and_si256(_mm256_slli_epi16(h, 4), hi2));
                p16[0] = _mm256_add_epi16(p16[0], _mm256_maddubs_epi16(w0, bcast4(xq)));
                __m256i w1 = _mm256_or_si256(_mm256_and_si256(bq, lo4), _mm256_and_si256(_mm256_slli_epi16(h, 2), hi2));
                p16[1] = _mm256_add_epi16(p16[1], _mm256_maddubs_epi16(w1, bcast4(xq + 32)));
                __m256i w2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), lo4), _mm256_and_si256(h, hi2));
                p16[2] = _mm256_add_epi16(p16[2], _mm256_maddubs_epi16(w2, bcast4(xq + 64)));
                __m256i w3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bq, 4), lo4),
                                             _mm256_and_si256(_mm256_srli_epi16(h, 2), hi2));
                p16[3] = _mm256_add_epi16(p16[3], _mm256_maddubs_epi16(w3, bcast4(xq + 96)));
            }
            #pragma GCC unroll 4
            for (int c = 0; c < 4; c++)
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16[c], scale_dup(scp, 8 * n + 2 * c + kk, 1)));
        }
    }
    return isum;
}

/* Q6_K: sub-block s of 16 = 4 pieces; weights unsigned 0..63, offset 32
 * removed with 32 * sum(scale * 16-sum) (see kernels_avx512.c). */
static inline __attribute__((always_inline)) void
tile_k6(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(EV_TYPE_Q6_K);
    const int64_t rb = (int64_t)L.rec * R;
    const __m256i lo4 = _mm256_set1_epi8(0x0f), lo2 = _mm256_set1_epi8(0x03);
    __m256 acc[TILE];
    int nrows = (int)(W->rows - g * R < R ? W->rows - g * R : R);
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (g * nb + b) * rb, *scp = rec + L.sc * R;
        ev_prefetch_ahead(rec, rb);
        __m256i isum[TILE];
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++) isum[j] = _mm256_setzero_si256();
        if (T == 1)
            isum[0] = k6_gemv_block(rec, scp, A->q + (t * nb + b) * EV_QK_K);
        else
        #pragma GCC unroll 1
        for (int s = 0; s < 16; s++) {
            const int n = s >> 3, c = (s & 7) >> 1, kk = s & 1;
            const __m128i sh = _mm_cvtsi32_si128(2 * c);
            __m256i scv = scale_dup(scp, s, 1), p16[TILE];
            #pragma GCC unroll 2
            for (int half = 0; half < 2; half++) {
                #pragma GCC unroll 8
                for (int j = 0; j < T; j++) p16[j] = _mm256_setzero_si256();
                #pragma GCC unroll 2
                for (int i = 2 * half; i < 2 * half + 2; i++) {
                    const int k = 4 * kk + i;
                    __m256i a = _mm256_loadu_si256((const __m256i *)(rec + (16 * n + 8 * (c & 1) + k) * 32));
                    __m256i h = _mm256_loadu_si256((const __m256i *)(rec + L.qh * R + (8 * n + k) * 32));
                    __m256i lo = _mm256_and_si256((c >> 1) ? _mm256_srli_epi16(a, 4) : a, lo4);
                    __m256i hi = _mm256_and_si256(_mm256_srl_epi16(h, sh), lo2);
                    __m256i w = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                    #pragma GCC unroll 8
                    for (int j = 0; j < T; j++) {
                        const int8_t *xq = A->q + ((t + j) * nb + b) * EV_QK_K + 128 * n + 32 * c + 16 * kk + 4 * i;
                        p16[j] = _mm256_add_epi16(p16[j], _mm256_maddubs_epi16(w, bcast4(xq)));
                    }
                }
                #pragma GCC unroll 8
                for (int j = 0; j < T; j++) isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(p16[j], scv));
            }
        }
        #pragma GCC unroll 8
        for (int p = 0; p < 8; p++) {
            __m256i sp = _mm256_slli_epi16(scale_pairs(scp, p, 1), 5);   /* 32 * scale: |.| <= 4096 */
            #pragma GCC unroll 8
            for (int j = 0; j < T; j++)
                isum[j] = _mm256_sub_epi32(isum[j], _mm256_madd_epi16(sp, _mm256_set1_epi32(ev_bs_pair16(A->bs + ((t + j) * nb + b) * 16, p))));
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rec + L.d * R)));
        #pragma GCC unroll 8
        for (int j = 0; j < T; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(dw, _mm256_set1_ps(A->d[(t + j) * nb + b])), acc[j]);
    }
    #pragma GCC unroll 8
    for (int j = 0; j < T; j++) store_rows(Y + (t + j) * ldy + g * R, acc[j], nrows);
}

static inline __attribute__((always_inline)) void
q4_k_avx2(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k45(W, A, g, t, T, 0, Y, ldy);
}

static inline __attribute__((always_inline)) void
q5_k_avx2(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, int T, float *Y, int64_t ldy) {
    tile_k45(W, A, g, t, T, 1, Y, ldy);
}

EV_TILE_FNS4(q4_k_avx2)
EV_TILE_FNS4(q5_k_avx2)
EV_TILE_FNS4(tile_k6)

const ev_kernel_variant ev_variant_avx2 = {
    .name = "avx2",
    .interleave = R,
    .xor_q8 = 0,
    .quantize = quantize_avx2,
    .quantize_k = quantize_k_avx2,
    .silu_mul = silu_mul_avx2,
    .mk = {
        [EV_KIND_F32] = EV_TILES1(f32_avx2),
        [EV_KIND_F16] = EV_TILES1(f16_avx2),
        [EV_KIND_Q8_0] = EV_TILES4(q8_0_avx2),
        [EV_KIND_Q4_0] = EV_TILES4(tile_q4),
        [EV_KIND_Q5_1] = EV_TILES4(q5_1_avx2),
        [EV_KIND_Q4_K] = EV_TILES4(q4_k_avx2),
        [EV_KIND_Q5_K] = EV_TILES4(q5_k_avx2),
        [EV_KIND_Q6_K] = EV_TILES4(tile_k6),
    },
};
#endif /* EV_KERNELS_X86 */
