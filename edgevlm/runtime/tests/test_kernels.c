/* test_kernels.c - every kernel variant against the scalar reference.
 *
 * Usage: test_kernels [variant ...]   (default: every variant this CPU runs)
 *        test_kernels --dequantize TYPE COLS IN OUT   (rows of ggml type id TYPE
 *            read from IN, written to OUT as f32 by ev_dequantize_row: the
 *            pytest compares them with gguf-py's dequantizers)
 * Exit status 0 when all checks pass.  Checks, per variant:
 *  - quantized activations (int8 values, f32 scales, block sums) bit-exact
 *    against the scalar quantizer;
 *  - integer exactness: Q8_0/Q4_0 matmuls with unit weight scales and
 *    integer activations whose block max is 127 (so x quantizes to itself)
 *    give integer results below 2^24, exact in any float summation order,
 *    so the output must equal an independent int64 reference bit for bit;
 *  - random data: every output y within (m + 3) * 2^-24 * sum|term| of the
 *    exact (double) sum of its m terms, the worst-case error of float
 *    summation in any order (m = blocks for quantized, columns for float);
 *  - thread pools of 1, 2 and 3 threads give bit-identical outputs;
 *  - shapes include rows not a multiple of the interleave, n = 1, odd n;
 *  - Q5_1 (run as Q8_0 quants 0..31 plus a min term) as Q8_0: unit d and
 *    m = 1 exact against int64 (w = q + 1), random data within the bound of
 *    its 2 terms a block (d and m);
 *  - the K-quants (Q4_K, Q5_K, Q6_K) the same way: Q8_K activations
 *    bit-exact, unit d / dmin with small integer activations (sum of |terms|
 *    below 2^24) exact against int64, random data within the float bound
 *    (m = 2 terms a block: scales and mins). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "kernels.h"
#include "threadpool.h"

static int failures;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int rand_int(int lo, int hi) { return lo + (int)(rng() % (uint64_t)(hi - lo + 1)); }
static float rand_unit(void) { return (float)((rng() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } } while (0)

static const char *type_name(ev_type t) { return ev_type_info(t) ? ev_type_info(t)->name : "?"; }

static int is_k(ev_type t) { return t == EV_TYPE_Q4_K || t == EV_TYPE_Q5_K || t == EV_TYPE_Q6_K; }

/* One K-quant element i (0..255) of a ggml block, decoded from the layout
 * in ggml-common.h independently of the runtime: quant q, sub-block scale
 * sc and min m (0 for Q6_K), and the block's d, dmin. */
static void k_element(ev_type t, const uint8_t *blk, int i, int *q, int *sc, int *m, float *d, float *dmin) {
    uint16_t h;
    if (t == EV_TYPE_Q6_K) {
        int n = i / 128, c = (i % 128) / 32, l = i % 32;
        int lo = blk[64 * n + 32 * (c % 2) + l], hi = blk[128 + 32 * n + l];
        lo = c < 2 ? lo & 15 : lo >> 4;
        *q = (lo | ((hi >> (2 * c)) & 3) << 4) - 32;
        *sc = (int8_t)blk[192 + i / 16];
        *m = 0;
        memcpy(&h, blk + 208, 2);
        *d = ev_fp16_to_fp32(h);
        *dmin = 0.0f;
        return;
    }
    const uint8_t *sp = blk + 4, *qs = blk + (t == EV_TYPE_Q5_K ? 48 : 16);
    int j = i / 32, l = i % 32;
    if (j < 4) { *sc = sp[j] & 63; *m = sp[j + 4] & 63; }
    else { *sc = (sp[j + 4] & 15) | (sp[j - 4] >> 6) << 4; *m = (sp[j + 4] >> 4) | (sp[j] >> 6) << 4; }
    *q = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
    if (t == EV_TYPE_Q5_K) *q += ((blk[16 + l] >> j) & 1) << 4;
    memcpy(&h, blk, 2);
    *d = ev_fp16_to_fp32(h);
    memcpy(&h, blk + 2, 2);
    *dmin = ev_fp16_to_fp32(h);
}

/* Random ggml-layout matrix.  unit_scale: all block scales 1.0 (integer test). */
static uint8_t *make_weights(ev_type t, int64_t rows, int64_t cols, int unit_scale) {
    size_t rb = ev_row_bytes(t, cols);
    uint8_t *w = malloc(rb * (size_t)rows);
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = w + (size_t)r * rb;
        if (t == EV_TYPE_F32) {
            for (int64_t i = 0; i < cols; i++) ((float *)row)[i] = rand_unit();
        } else if (t == EV_TYPE_F16) {
            for (int64_t i = 0; i < cols; i++) {
                uint16_t h = ev_fp32_to_fp16(rand_unit());
                memcpy(row + 2 * i, &h, 2);
            }
        } else if (is_k(t)) {
            const int bb = ev_type_info(t)->bytes, doff = t == EV_TYPE_Q6_K ? 208 : 0;
            for (int64_t b = 0; b < cols / 256; b++) {
                uint8_t *blk = row + b * bb;
                for (int i = 0; i < bb; i++) blk[i] = (uint8_t)rng();
                for (int k = 0; k < (t == EV_TYPE_Q6_K ? 1 : 2); k++) {   /* d (and dmin) */
                    uint16_t h = ev_fp32_to_fp16(unit_scale ? 1.0f : 0.0005f + 0.01f * fabsf(rand_unit()));
                    memcpy(blk + doff + 2 * k, &h, 2);
                }
            }
        } else {
            size_t bb = (size_t)ev_type_info(t)->bytes;
            for (int64_t b = 0; b < cols / 32; b++) {
                uint8_t *blk = row + b * bb;
                uint16_t h = ev_fp32_to_fp16(unit_scale ? 1.0f : 0.001f + 0.05f * fabsf(rand_unit()));
                memcpy(blk, &h, 2);
                for (size_t i = 2; i < bb; i++) blk[i] = (uint8_t)rng(); /* full range incl. -128 */
                if (t == EV_TYPE_Q5_1) {   /* min m: 1 (integer test) or either sign */
                    h = ev_fp32_to_fp16(unit_scale ? 1.0f : 0.8f * rand_unit());
                    memcpy(blk + 2, &h, 2);
                }
            }
        }
    }
    return w;
}

/* Element i of row r as (integer quant, scale) or float. */
static double weight_value(ev_type t, const uint8_t *w, int64_t cols, int64_t r, int64_t i, int *q) {
    const uint8_t *row = w + ev_row_bytes(t, cols) * (size_t)r;
    uint16_t h;
    if (t == EV_TYPE_F32) return ((const float *)row)[i];
    if (t == EV_TYPE_F16) { memcpy(&h, row + 2 * i, 2); return ev_fp16_to_fp32(h); }
    if (t == EV_TYPE_Q8_0) {
        const uint8_t *blk = row + (i / 32) * EV_Q8_0_BYTES;
        memcpy(&h, blk, 2);
        *q = (int8_t)blk[2 + i % 32];
    } else if (t == EV_TYPE_Q5_1) {   /* as Q5_0 after the min, no offset: w = d q + m */
        const uint8_t *blk = row + (i / 32) * EV_Q5_1_BYTES;
        int j = (int)(i % 32);
        memcpy(&h, blk, 2);
        *q = (j < 16 ? (blk[8 + j] & 0x0f) : (blk[8 + j - 16] >> 4)) | ((blk[4 + j / 8] >> (j % 8)) & 1) << 4;
    } else if (t == EV_TYPE_Q5_0) {   /* fifth bit j of the 32-bit little-endian qh */
        const uint8_t *blk = row + (i / 32) * EV_Q5_0_BYTES;
        int j = (int)(i % 32);
        memcpy(&h, blk, 2);
        *q = ((j < 16 ? (blk[6 + j] & 0x0f) : (blk[6 + j - 16] >> 4)) | ((blk[2 + j / 8] >> (j % 8)) & 1) << 4) - 16;
    } else {
        const uint8_t *blk = row + (i / 32) * EV_Q4_0_BYTES;
        int j = (int)(i % 32);
        memcpy(&h, blk, 2);
        *q = (j < 16 ? (blk[2 + j] & 0x0f) : (blk[2 + j - 16] >> 4)) - 8;
    }
    return ev_fp16_to_fp32(h);
}

/* The min m of element i's block (Q5_1), 0 for every other type. */
static double weight_min(ev_type t, const uint8_t *w, int64_t cols, int64_t r, int64_t i) {
    uint16_t h;
    if (t != EV_TYPE_Q5_1) return 0.0;
    memcpy(&h, w + ev_row_bytes(t, cols) * (size_t)r + (i / 32) * EV_Q5_1_BYTES + 2, 2);
    return ev_fp16_to_fp32(h);
}

/* Whole matrix decoded once: integer quants + per-element scale (and min), or floats. */
typedef struct { int *q; double *v, *m; } decoded;

static decoded decode(ev_type t, const uint8_t *w, int64_t rows, int64_t cols) {
    decoded dm;
    dm.q = malloc(sizeof(int) * (size_t)(rows * cols));
    dm.v = malloc(sizeof(double) * (size_t)(rows * cols));
    dm.m = malloc(sizeof(double) * (size_t)(rows * cols));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++) {
            dm.q[r * cols + i] = 0;
            dm.v[r * cols + i] = weight_value(t, w, cols, r, i, &dm.q[r * cols + i]);
            dm.m[r * cols + i] = weight_min(t, w, cols, r, i);
        }
    return dm;
}

static ev_weights *prepare(ev_type t, const uint8_t *w, int64_t rows, int64_t cols) {
    ev_weights *W = NULL;
    int rc = ev_weights_prepare(&W, t, w, rows, cols);
    CHECK(rc == EV_KERNEL_OK && W, "prepare %s %lldx%lld: rc %d", type_name(t), (long long)rows, (long long)cols, rc);
    return W;
}

static void check_quantize(const char *variant) {
    const int64_t cols = 256, n = 5;
    float x[5 * 256];
    int8_t q0[5 * 256], q1[5 * 256];
    float d0[40], d1[40];
    int32_t s0[40], s1[40];
    for (int i = 0; i < n * cols; i++) x[i] = rand_unit() * (i % 3 ? 1.0f : 40.0f);
    for (int i = 0; i < 32; i++) x[32 + i] = 0.0f;                      /* all-zero block */
    for (int i = 0; i < 32; i++) x[64 + i] = (float)(i - 16) * 0.5f;     /* many ties at .5 */
    x[96] = 254.0f; for (int i = 1; i < 32; i++) x[96 + i] = (float)i;  /* x/d exactly k + .5 */
    ev_kernels_force_variant("scalar");
    ev_quantize_rows_q8(x, n, cols, q0, d0, s0);
    ev_kernels_force_variant(variant);
    ev_quantize_rows_q8(x, n, cols, q1, d1, s1);
    CHECK(!memcmp(q0, q1, sizeof q0), "%s: quantized activations differ from scalar", variant);
    CHECK(!memcmp(d0, d1, sizeof d0), "%s: activation scales differ from scalar", variant);
    CHECK(!memcmp(s0, s1, sizeof s0), "%s: activation block sums differ from scalar", variant);
    {
        int8_t kq0[5 * 256], kq1[5 * 256];
        float kd0[5], kd1[5];
        int16_t kb0[80], kb1[80];
        ev_kernels_force_variant("scalar");
        ev_quantize_rows_q8k(x, n, cols, kq0, kd0, kb0);
        ev_kernels_force_variant(variant);
        ev_quantize_rows_q8k(x, n, cols, kq1, kd1, kb1);
        CHECK(!memcmp(kq0, kq1, sizeof kq0) && !memcmp(kd0, kd1, sizeof kd0) && !memcmp(kb0, kb1, sizeof kb0),
              "%s: Q8_K activations (quants, scales or 16-sums) differ from scalar", variant);
    }
}

/* Quantized types, unit weight scales, integer activations: exact results. */
static void check_integer_exact(const char *variant, ev_type t, int64_t rows, int64_t cols, int64_t n) {
    uint8_t *w = make_weights(t, rows, cols, 1);
    float *x = malloc(sizeof(float) * (size_t)(n * cols)), *y = malloc(sizeof(float) * (size_t)(n * rows));
    decoded dm = decode(t, w, rows, cols);
    ev_weights *W;
    int bad = 0;
    for (int64_t i = 0; i < n * cols; i++) x[i] = (float)rand_int(-127, 127);
    for (int64_t i = 0; i < n * cols; i += 32) x[i + rand_int(0, 31)] = rng() & 1 ? 127.0f : -127.0f;
    ev_kernels_force_variant(variant);
    W = prepare(t, w, rows, cols);
    if (W && ev_matmul(NULL, W, x, n, y) == EV_KERNEL_OK) {
        for (int64_t tk = 0; tk < n && !bad; tk++)
            for (int64_t r = 0; r < rows && !bad; r++) {
                int64_t ref = 0;
                for (int64_t i = 0; i < cols; i++)   /* unit scales: w = q (+ m = 1 for Q5_1) */
                    ref += ((int64_t)dm.q[r * cols + i] + (int64_t)dm.m[r * cols + i]) * (int64_t)x[tk * cols + i];
                if (y[tk * rows + r] != (float)ref) {
                    bad = 1;
                    CHECK(0, "%s %s %lldx%lld n=%lld: y[%lld,%lld] = %.1f, exact %lld", variant, type_name(t),
                          (long long)rows, (long long)cols, (long long)n, (long long)tk, (long long)r,
                          y[tk * rows + r], (long long)ref);
                }
            }
    } else {
        CHECK(0, "%s: matmul failed", variant);
    }
    ev_weights_free(W);
    free(w); free(x); free(y); free(dm.q); free(dm.v); free(dm.m);
}

/* Random data: each output within the float summation bound of the exact sum. */
static void check_random(const char *variant, ev_type t, int64_t rows, int64_t cols, int64_t n) {
    const int quant = t == EV_TYPE_Q8_0 || t == EV_TYPE_Q4_0 || t == EV_TYPE_Q5_0 || t == EV_TYPE_Q5_1;
    const int64_t nb = cols / 32;
    uint8_t *w = make_weights(t, rows, cols, 0);
    float *x = malloc(sizeof(float) * (size_t)(n * cols)), *y = malloc(sizeof(float) * (size_t)(n * rows));
    float *y2 = malloc(sizeof(float) * (size_t)(n * rows));
    int8_t *qx = malloc((size_t)(n * cols));
    float *dx = malloc(sizeof(float) * (size_t)(n * nb + 1));
    int32_t *sx = malloc(sizeof(int32_t) * (size_t)(n * nb + 1));
    decoded dm = decode(t, w, rows, cols);
    ev_weights *W;
    int bad = 0;
    for (int64_t i = 0; i < n * cols; i++) x[i] = rand_unit() * 3.0f;
    if (quant) { ev_kernels_force_variant("scalar"); ev_quantize_rows_q8(x, n, cols, qx, dx, sx); }
    ev_kernels_force_variant(variant);
    W = prepare(t, w, rows, cols);
    if (!W || ev_matmul(NULL, W, x, n, y) != EV_KERNEL_OK) { CHECK(0, "%s: matmul failed", variant); goto done; }
    for (int64_t tk = 0; tk < n && !bad; tk++)
        for (int64_t r = 0; r < rows && !bad; r++) {
            double exact = 0.0, mag = 0.0, bound;
            int64_t m;
            if (quant) {
                for (int64_t b = 0; b < nb; b++) {
                    int64_t isum = 0;
                    double dw = dm.v[r * cols + b * 32], mw = dm.m[r * cols + b * 32], term, tmin;
                    for (int i = 0; i < 32; i++)
                        isum += (int64_t)dm.q[r * cols + b * 32 + i] * qx[tk * cols + b * 32 + i];
                    term = (double)isum * (double)(float)(dw * dx[tk * nb + b]);
                    tmin = (double)sx[tk * nb + b] * (double)(float)(mw * dx[tk * nb + b]);   /* Q5_1, else 0 */
                    exact += term + tmin;
                    mag += fabs(term) + fabs(tmin);
                }
                m = t == EV_TYPE_Q5_1 ? 2 * nb : nb;
            } else {
                for (int64_t i = 0; i < cols; i++) {
                    double term = dm.v[r * cols + i] * (double)x[tk * cols + i];
                    exact += term;
                    mag += fabs(term);
                }
                m = cols;
            }
            bound = (double)(m + 3) * ldexp(1.0, -24) * mag;
            if (fabs((double)y[tk * rows + r] - exact) > bound) {
                bad = 1;
                CHECK(0, "%s %s %lldx%lld n=%lld: y[%lld,%lld] = %.9g, exact %.9g, bound %.3g", variant,
                      type_name(t), (long long)rows, (long long)cols, (long long)n, (long long)tk,
                      (long long)r, y[tk * rows + r], exact, bound);
            }
        }
    for (int threads = 2; threads <= 3; threads++) { /* thread count must not change results */
        ev_threadpool *tp = ev_threadpool_create(threads);
        CHECK(tp != NULL, "threadpool_create(%d)", threads);
        if (!tp) break;
        ev_matmul(tp, W, x, n, y2);
        CHECK(!memcmp(y, y2, sizeof(float) * (size_t)(n * rows)), "%s %s: %d threads differ from 1 thread",
              variant, type_name(t), threads);
        ev_threadpool_free(tp);
    }
done:
    ev_weights_free(W);
    free(w); free(x); free(y); free(y2); free(qx); free(dx); free(sx); free(dm.q); free(dm.v); free(dm.m);
}

/* K-quants.  Integer test: d = dmin = 1, activations in -1..1 with one
 * +-127 per block of 256 (so they quantize to themselves, d_x = 1): y =
 * sum (sc q - m) x exactly, and the sum of |terms| (checked) stays below
 * 2^24, so every float summation order gives the same integer.  Random
 * test: each output within (m + 3) 2^-24 sum|term| of the exact sum of the
 * m = 2 * blocks terms I (d dx) and -M (dmin dx), computed here in double
 * from the scalar-quantized activations. */
static void check_k(const char *variant, ev_type t, int64_t rows, int64_t cols, int64_t n, int integer) {
    const int64_t nb = cols / 256, bb = ev_type_info(t)->bytes;
    uint8_t *w = make_weights(t, rows, cols, integer);
    float *x = malloc(sizeof(float) * (size_t)(n * cols)), *y = malloc(sizeof(float) * (size_t)(n * rows));
    float *y2 = malloc(sizeof(float) * (size_t)(n * rows));
    int8_t *qx = malloc((size_t)(n * cols));
    float *dx = malloc(sizeof(float) * (size_t)(n * nb));
    int16_t *bsx = malloc(sizeof(int16_t) * (size_t)(n * cols / 16));
    ev_weights *W;
    int bad = 0;
    for (int64_t i = 0; i < n * cols; i++) x[i] = integer ? (float)rand_int(-1, 1) : rand_unit() * 3.0f;
    if (integer)
        for (int64_t i = 0; i < n * cols; i += 256) x[i + rand_int(0, 255)] = rng() & 1 ? 127.0f : -127.0f;
    ev_kernels_force_variant("scalar");
    ev_quantize_rows_q8k(x, n, cols, qx, dx, bsx);
    ev_kernels_force_variant(variant);
    W = prepare(t, w, rows, cols);
    if (!W || ev_matmul(NULL, W, x, n, y) != EV_KERNEL_OK) { CHECK(0, "%s: matmul failed", variant); goto done; }
    for (int64_t tk = 0; tk < n && !bad; tk++)
        for (int64_t r = 0; r < rows && !bad; r++) {
            double exact = 0.0, mag = 0.0;
            int64_t iexact = 0, imag = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = w + (size_t)(r * nb + b) * (size_t)bb;
                int64_t I = 0, M = 0;
                float d = 0, dmin = 0;
                for (int i = 0; i < 256; i++) {
                    int q, sc, m;
                    int64_t xi = qx[tk * cols + b * 256 + i];
                    k_element(t, blk, i, &q, &sc, &m, &d, &dmin);
                    I += (int64_t)sc * q * xi;
                    M += (int64_t)m * xi;
                    imag += llabs((int64_t)sc * q * xi) + llabs((int64_t)m * xi);
                }
                iexact += I - M;
                double ti = (double)I * (double)(float)(d * dx[tk * nb + b]);
                double tm = (double)M * (double)(float)(dmin * dx[tk * nb + b]);
                exact += ti - tm;
                mag += fabs(ti) + fabs(tm);
            }
            if (integer) {
                CHECK(imag < (1 << 24), "%s %s: integer test terms too large (%lld)", variant, type_name(t), (long long)imag);
                if (y[tk * rows + r] != (float)iexact) {
                    bad = 1;
                    CHECK(0, "%s %s %lldx%lld n=%lld: y[%lld,%lld] = %.1f, exact %lld", variant, type_name(t),
                          (long long)rows, (long long)cols, (long long)n, (long long)tk, (long long)r,
                          y[tk * rows + r], (long long)iexact);
                }
            } else {
                double bound = (double)(2 * nb + 3) * ldexp(1.0, -24) * mag;
                if (fabs((double)y[tk * rows + r] - exact) > bound) {
                    bad = 1;
                    CHECK(0, "%s %s %lldx%lld n=%lld: y[%lld,%lld] = %.9g, exact %.9g, bound %.3g", variant,
                          type_name(t), (long long)rows, (long long)cols, (long long)n, (long long)tk,
                          (long long)r, y[tk * rows + r], exact, bound);
                }
            }
        }
    if (!integer) {
        ev_threadpool *tp = ev_threadpool_create(3);
        CHECK(tp != NULL, "threadpool_create(3)");
        if (tp) {
            ev_matmul(tp, W, x, n, y2);
            CHECK(!memcmp(y, y2, sizeof(float) * (size_t)(n * rows)), "%s %s: 3 threads differ from 1 thread",
                  variant, type_name(t));
            ev_threadpool_free(tp);
        }
    }
done:
    ev_weights_free(W);
    free(w); free(x); free(y); free(y2); free(qx); free(dx); free(bsx);
}

static void count_task(void *ctx, int i, int n) {
    int *hits = ctx;
    (void)n;
    __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

static void check_threadpool(void) {
    for (int threads = 1; threads <= 4; threads++) {
        ev_threadpool *tp = ev_threadpool_create(threads);
        int hits[37];
        int ok = 1;
        CHECK(tp != NULL, "threadpool_create(%d)", threads);
        if (!tp) continue;
        for (int op = 0; op < 500 && ok; op++) { /* many back-to-back ops: wake-up races */
            int n = 1 + op % 37;
            memset(hits, 0, sizeof hits);
            ev_threadpool_run(tp, count_task, hits, n);
            for (int i = 0; i < n; i++) ok &= hits[i] == 1;
        }
        CHECK(ok, "threadpool(%d): a task ran zero or several times", threads);
        ev_threadpool_free(tp);
    }
    CHECK(ev_threadpool_create(0) == NULL, "threadpool_create(0) must fail");
}

static void check_errors(void) {
    ev_weights *W = (ev_weights *)1;
    uint8_t buf[64] = {0};
    float x[32] = {0}, y[1];
    CHECK(ev_weights_prepare(&W, EV_TYPE_Q8_0, buf, 1, 33) == EV_KERNEL_EINVAL && W == NULL, "cols not a multiple of 32");
    CHECK(ev_weights_prepare(&W, EV_TYPE_Q8_0, buf, 0, 32) == EV_KERNEL_EINVAL, "rows = 0");
    CHECK(ev_weights_prepare(&W, (ev_type)5, buf, 1, 32) == EV_KERNEL_EINVAL, "unknown type");
    CHECK(ev_weights_prepare(&W, EV_TYPE_F32, NULL, 1, 32) == EV_KERNEL_EINVAL, "NULL data");
    CHECK(ev_weights_prepare(&W, EV_TYPE_Q4_0, buf, (int64_t)1 << 40, 32) == EV_KERNEL_EINVAL, "huge rows");
    CHECK(ev_row_bytes(EV_TYPE_Q4_0, 64) == 36 && ev_row_bytes(EV_TYPE_Q8_0, 64) == 68 &&
          ev_row_bytes(EV_TYPE_Q8_0, 48) == 0 && ev_row_bytes(EV_TYPE_F16, 3) == 6, "ev_row_bytes");
    CHECK(ev_row_bytes(EV_TYPE_Q5_1, 64) == 48 && ev_row_bytes(EV_TYPE_Q5_1, 48) == 0, "ev_row_bytes Q5_1");
    CHECK(ev_row_bytes(EV_TYPE_Q4_K, 512) == 288 && ev_row_bytes(EV_TYPE_Q5_K, 256) == 176 &&
          ev_row_bytes(EV_TYPE_Q6_K, 256) == 210 && ev_row_bytes(EV_TYPE_Q6_K, 128) == 0, "ev_row_bytes K-quants");
    CHECK(ev_weights_prepare(&W, EV_TYPE_Q4_K, buf, 1, 32) == EV_KERNEL_EINVAL, "Q4_K cols not a multiple of 256");
    CHECK(ev_matmul(NULL, NULL, x, 1, y) == EV_KERNEL_EINVAL, "matmul NULL weights");
    CHECK(ev_kernels_force_variant("no_such_variant") == EV_KERNEL_EUNSUPPORTED, "unknown variant");
}

static void check_fp16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) { /* every finite half survives a round trip */
        if ((h & 0x7c00u) == 0x7c00u) continue;
        bad += ev_fp32_to_fp16(ev_fp16_to_fp32((uint16_t)h)) != h;
    }
    CHECK(!bad, "fp16 round trip failed for %d values", bad);
    CHECK(ev_fp32_to_fp16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "tie rounds to even (down)");
    CHECK(ev_fp32_to_fp16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "tie rounds to even (up)");
    CHECK(ev_fp32_to_fp16(65520.0f) == 0x7c00, "overflow to inf");
    CHECK(ev_fp16_to_fp32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal");
}

static void check_dequantize(void) {
    const int64_t cols = 64;
    const ev_type types[] = {EV_TYPE_Q8_0, EV_TYPE_Q4_0, EV_TYPE_Q5_0, EV_TYPE_Q5_1, EV_TYPE_F16, EV_TYPE_F32};
    for (int k = 0; k < 6; k++) {
        uint8_t *w = make_weights(types[k], 1, cols, 0);
        float out[64];
        int ok = 1, q = 0;
        ev_dequantize_row(types[k], w, out, cols);
        for (int64_t i = 0; i < cols; i++) {
            double v = weight_value(types[k], w, cols, 0, i, &q);
            if (types[k] == EV_TYPE_Q8_0 || types[k] == EV_TYPE_Q4_0 || types[k] == EV_TYPE_Q5_0) v = (float)(q * (float)v);
            if (types[k] == EV_TYPE_Q5_1) {   /* d q + m, two roundings as gguf-py */
                volatile float p = (float)v * (float)q;
                v = (float)(p + (float)weight_min(types[k], w, cols, 0, i));
            }
            ok &= out[i] == (float)v;
        }
        CHECK(ok, "dequantize_row %s", type_name(types[k]));
        free(w);
    }
    const ev_type kt[] = {EV_TYPE_Q4_K, EV_TYPE_Q5_K, EV_TYPE_Q6_K};
    for (int k = 0; k < 3; k++) {   /* dl = d sc, ml = dmin m, then dl q - ml: gguf-py's arithmetic */
        uint8_t *w = make_weights(kt[k], 1, 512, 0);
        float out[512];
        int ok = 1;
        ev_dequantize_row(kt[k], w, out, 512);
        for (int i = 0; i < 512; i++) {
            int q, sc, m;
            float d, dmin;
            k_element(kt[k], w + (i / 256) * ev_type_info(kt[k])->bytes, i % 256, &q, &sc, &m, &d, &dmin);
            volatile float dl = d * (float)sc, ml = dmin * (float)m, p = dl * (float)q;
            ok &= out[i] == (kt[k] == EV_TYPE_Q6_K ? (float)p : (float)(p - ml));
        }
        CHECK(ok, "dequantize_row %s", type_name(kt[k]));
        free(w);
    }
}

/* SwiGLU's silu(g) * u against double precision.  Metric: relative error,
 * bound 1e-6 (a few ulp: the SIMD exp is a polynomial), or absolute 1e-30
 * where the true value underflows (g < -87: the exp argument is clamped).
 * Lengths 1..37 cover the vector tails; out aliases g as in the session. */
static void check_silu(const char *variant) {
    enum { N = 20001 + 8 };
    static float g[N], u[N], out[N];
    const float special[8] = {0.0f, -0.0f, 1e-30f, -1e-30f, 87.3f, -87.3f, 88.3f, -100.0f};
    int bad = 0;
    for (int i = 0; i < 20001; i++) g[i] = -100.0f + 0.01f * (float)i;
    for (int i = 0; i < 8; i++) g[20001 + i] = special[i];
    for (int i = 0; i < N; i++) u[i] = 0.5f + (float)(i % 7);
    memcpy(out, g, sizeof g);
    ev_silu_mul(out, u, out, N);
    for (int i = 0; i < N; i++) {
        double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        double err = fabs((double)out[i] - want);
        bad += !(err <= 1e-6 * fabs(want) || err <= 1e-30);
    }
    for (int n = 1; n <= 37; n++) {   /* tails: each length equals the long run's first n */
        float o[37];
        ev_silu_mul(g + 5000, u + 5000, o, n);
        for (int i = 0; i < n; i++) {
            float ref;
            ev_silu_mul(g + 5000 + i, u + 5000 + i, &ref, 1);
            bad += o[i] != ref && fabsf(o[i] - ref) > 1e-6f * fabsf(ref);
        }
    }
    float nan_in = NAN, one = 1.0f, nan_out = 0.0f;
    ev_silu_mul(&nan_in, &one, &nan_out, 1);
    CHECK(!bad && nan_out != nan_out, "%s silu_mul: %d values off (bound rel 1e-6), NaN -> %g", variant, bad, nan_out);
}

static void check_variant(const char *variant) {
    static const int64_t rows_list[] = {1, 3, 15, 16, 17, 33, 70};
    static const int64_t cols_list[] = {32, 96, 256, 1024};
    static const int64_t n_list[] = {1, 2, 3, 7, 8, 9, 17};
    static const ev_type types[] = {EV_TYPE_Q8_0, EV_TYPE_Q4_0, EV_TYPE_Q5_0, EV_TYPE_Q5_1, EV_TYPE_F16, EV_TYPE_F32};
    static const ev_type k_types[] = {EV_TYPE_Q4_K, EV_TYPE_Q5_K, EV_TYPE_Q6_K};
    int before = failures;
    check_quantize(variant);
    check_silu(variant);
    for (int k = 0; k < 4; k++)
        for (int a = 0; a < 7; a++)
            for (int c = 0; c < 4; c++)
                check_integer_exact(variant, types[k], rows_list[a], cols_list[c], n_list[(a + c) % 7]);
    for (int k = 0; k < 6; k++)
        for (int a = 0; a < 7; a++)
            for (int c = 0; c < 4; c++)
                check_random(variant, types[k], rows_list[a], cols_list[c] + (k >= 4 ? a % 3 : 0),
                             n_list[(a + 2 * c) % 7]);
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 7; a++)
            for (int c = 1; c <= 4; c++)
                for (int integer = 0; integer < 2; integer++)
                    check_k(variant, k_types[k], rows_list[a], 256 * c, n_list[(a + c + integer) % 7], integer);
    printf("%s %s\n", failures == before ? "ok" : "FAIL", variant);
}

static int dequantize_file(const char *type, const char *cols_s, const char *in, const char *out) {
    long t = strtol(type, NULL, 10), cols = strtol(cols_s, NULL, 10);
    size_t rb = ev_row_bytes((ev_type)t, cols), got, rows = 0;
    FILE *fi = fopen(in, "rb"), *fo = fopen(out, "wb");
    uint8_t *row = rb ? malloc(rb) : NULL;
    float *f = rb ? malloc(sizeof(float) * (size_t)cols) : NULL;
    int ok = fi && fo && row && f;
    while (ok && (got = fread(row, 1, rb, fi)) == rb) {
        ev_dequantize_row((ev_type)t, row, f, cols);
        ok = fwrite(f, sizeof(float), (size_t)cols, fo) == (size_t)cols;
        rows++;
    }
    if (fi) fclose(fi);
    if (fo && fclose(fo)) ok = 0;
    free(row); free(f);
    printf("%s dequantize type %ld cols %ld: %zu rows\n", ok ? "ok" : "FAIL", t, cols, rows);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    static const char *all[] = {"scalar", "avx2", "avx512_vnni", "neon_dotprod"};
    if (argc == 6 && !strcmp(argv[1], "--dequantize")) return dequantize_file(argv[2], argv[3], argv[4], argv[5]);
    check_fp16();
    check_errors();
    check_dequantize();
    check_threadpool();
    printf("%s basics (fp16, errors, dequantize, threadpool)\n", failures ? "FAIL" : "ok");
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            if (ev_kernels_force_variant(argv[i]) != EV_KERNEL_OK) {
                CHECK(0, "variant %s is not available on this CPU / build", argv[i]);
                continue;
            }
            check_variant(argv[i]);
        }
    } else {
        for (int i = 0; i < 4; i++) {
            if (ev_kernels_force_variant(all[i]) != EV_KERNEL_OK) { printf("skip %s (not supported here)\n", all[i]); continue; }
            check_variant(all[i]);
        }
    }
    ev_kernels_force_variant(NULL);
    printf("%s (%d failures)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
