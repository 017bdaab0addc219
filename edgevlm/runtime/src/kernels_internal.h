/* kernels_internal.h - what kernels.c shares with the per-ISA kernel files.
 *
 * Packed layout of quantized weights (Q8_0, Q4_0) for a variant with R
 * interleaved rows: rows are grouped by R (the last group zero-padded); for
 * group g and block b the quant bytes of the R rows are interleaved in
 * 4-byte pieces:
 *     qs[((g*nb + b)*QB/4 + k)*R*4 + r*4 + i] = block b of row g*R+r, byte 4k+i
 * (QB = 32 bytes for Q8_0, 16 for Q4_0), and the fp16 scales are
 *     d[(g*nb + b)*R + r].
 * One SIMD register then holds 4 consecutive quants of R rows, so a single
 * dot-product instruction against 4 broadcast activation bytes advances R
 * rows at once with no horizontal reduction.  For Q4_0 the byte at k (0..3)
 * holds element 4k+i in its low nibble and 16+4k+i in its high nibble, which
 * is exactly ggml's qs byte 4k+i.  R = 1 is ggml's own order (scalar).
 * Variants that set xor_q8 store Q8_0 quants as unsigned w+128 (for the
 * u8 x s8 VNNI instruction) and subtract 128 * sum(x) per block.
 * Q5_1 is packed as Q8_0 (its quants 0..31 as int8) with its fp16 mins in
 * m, laid out as d.
 *
 * K-quants (Q4_K, Q5_K, Q6_K) are packed as one record per (group g, block
 * b of 256), at qs + (g*nb + b) * rec * R (ev_klayout, byte offsets times R):
 *     quants   [0, 128R)    4-byte pieces interleaved as above: Q4_K/Q5_K
 *                           nibbles (ggml qs), Q6_K low nibbles (ggml ql)
 *     high bits [qh*R, ..)  Q5_K: 32 B a row (ggml qh), Q6_K: 64 B (ggml qh),
 *                           interleaved in 4-byte pieces the same way
 *     scales   [sc*R, +16R) 16 bytes a row as pairs: byte (p*R + r)*2 + e is
 *                           value 2p+e of row r; Q4_K/Q5_K values 0..7 are the
 *                           6-bit scales, 8..15 the mins (unpacked from ggml's
 *                           12 bytes); Q6_K the 16 int8 scales
 *     d        [d*R, +2R)   fp16 d of each row; Q4_K/Q5_K then fp16 dmin [+2R)
 * Pairs put two scales of one row in one 32-bit lane, so a single int16
 * multiply-add applies them to a lane of per-row sums. */
#ifndef EV_KERNELS_INTERNAL_H
#define EV_KERNELS_INTERNAL_H

#include "kernels.h"

#include <stdint.h>
#include <string.h>

/* Activations of a matmul: the f32 rows x[t*cols + i] (float weights), or
 * int8 blocks: token t, block b at q[(t*nb + b)*32], d[t*nb + b], s[t*nb + b];
 * for the K-quants blocks of 256 at q[(t*nb + b)*256], d[t*nb + b] and the
 * sums of each 16 at bs[(t*nb + b)*16 + k] (s unused). */
typedef struct {
    const float *x;
    const int8_t *q;
    const float *d;
    const int32_t *s;
    const int16_t *bs;
} ev_acts;

/* Byte offsets (per interleaved row) inside a K-quant record: see above. */
typedef struct { int rec, qh, sc, d; } ev_klayout;

static inline int ev_is_kquant(ev_type t) { return t == EV_TYPE_Q4_K || t == EV_TYPE_Q5_K || t == EV_TYPE_Q6_K; }

static inline ev_klayout ev_klayout_of(ev_type t) {
    ev_klayout q4 = {148, 0, 128, 144}, q5 = {180, 128, 160, 176}, q6 = {210, 128, 192, 208};
    return t == EV_TYPE_Q4_K ? q4 : t == EV_TYPE_Q5_K ? q5 : q6;
}

/* Sums of activation sub-blocks of 32 (two 16-sums), two to a 32-bit lane
 * as int16: lane p of a K block's mins multiply-add, p = 0..3. */
static inline int32_t ev_bs_pair32(const int16_t *bs, int p) {
    int32_t lo = bs[4 * p] + bs[4 * p + 1], hi = bs[4 * p + 2] + bs[4 * p + 3];
    return (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16));
}

/* Two 16-sums bs[2p], bs[2p+1] in one 32-bit lane (Q6_K's offset term). */
static inline int32_t ev_bs_pair16(const int16_t *bs, int p) {
    return (int32_t)(((uint32_t)(uint16_t)bs[2 * p]) | ((uint32_t)(uint16_t)bs[2 * p + 1] << 16));
}

/* Microkernel kinds: the variant table has one row of microkernels each.
 * Q5_0 runs as Q8_0; Q5_1 as Q8_0 blocks of quants 0..31 plus sum(x) * (m dx)
 * a block. */
typedef enum {
    EV_KIND_F32, EV_KIND_F16, EV_KIND_Q8_0, EV_KIND_Q4_0, EV_KIND_Q5_1, EV_KIND_Q4_K, EV_KIND_Q5_K, EV_KIND_Q6_K,
    EV_N_KINDS
} ev_kind;

/* Rows per group of float weights in every variant (4 row streams per microkernel call). */
#define EV_FLOAT_ROWS 4

struct ev_weights {
    ev_type type;       /* the type the kernels run (Q5_0 files run as Q8_0) */
    ev_type file_type;  /* the type the matrix had in the file */
    ev_kind kind;       /* the microkernels that run it */
    int64_t rows, cols;
    int64_t nb;         /* blocks per row (quantized types) */
    int64_t n_groups;   /* ceil(rows / R) */
    int R;              /* rows per group: interleaved rows (quantized), EV_FLOAT_ROWS (float) */
    const struct ev_kernel_variant *v;
    int in_arena;       /* qs and d belong to an ev_arena (freed with it) */
    uint8_t *qs;        /* packed quants, or the raw f32 / f16 matrix */
    uint16_t *d;        /* packed fp16 scales (quantized types) */
    uint16_t *m;        /* packed fp16 mins as d (Q5_1, run as Q8_0 quants 0..31 plus m), else NULL */
};

/* A microkernel computes Y[(t + j)*ldy + row] for the rows of group g and
 * the T tokens t .. t+T-1, T fixed per function (so its tile of
 * accumulators stays in registers).  The one tile driver (kernels.c) calls
 * them: T = 1 per group for decode (GEMV), tiles of the largest T for
 * prefill (GEMM) and the rest of the tokens with the T that fits (tail). */
typedef void (*ev_tile_fn)(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy);

#define EV_MAX_TILE 8
/* The microkernels of one kind: fn[T] for T = 1 .. max_t. */
typedef struct {
    int max_t;
    ev_tile_fn fn[EV_MAX_TILE + 1];
} ev_microkernels;

/* Instantiate microkernels name_1 .. name_N of an always-inline body
 * body(W, A, g, t, T, Y, ldy) and list them for the variant table. */
#define EV_TILE_FN(body, T) \
    static void body##_##T(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) { \
        body(W, A, g, t, T, Y, ldy); \
    }
#define EV_TILE_FNS1(body) EV_TILE_FN(body, 1)
#define EV_TILE_FNS4(body) EV_TILE_FNS1(body) EV_TILE_FN(body, 2) EV_TILE_FN(body, 3) EV_TILE_FN(body, 4)
#define EV_TILE_FNS8(body) EV_TILE_FNS4(body) EV_TILE_FN(body, 5) EV_TILE_FN(body, 6) EV_TILE_FN(body, 7) \
    EV_TILE_FN(body, 8)
#define EV_TILES1(body) {1, {NULL, body##_1}}
#define EV_TILES4(body) {4, {NULL, body##_1, body##_2, body##_3, body##_4}}
#define EV_TILES8(body) {8, {NULL, body##_1, body##_2, body##_3, body##_4, body##_5, body##_6, body##_7, body##_8}}

/* Quantize one row of cols (multiple of 32) floats: see ev_quantize_rows_q8. */
typedef void (*ev_quantize_fn)(const float *x, int64_t cols, int8_t *q, float *d, int32_t *s);
/* Quantize one row of cols (multiple of 256) floats: see ev_quantize_rows_q8k. */
typedef void (*ev_quantize_k_fn)(const float *x, int64_t cols, int8_t *q, float *d, int16_t *bs);
/* out[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u for i < n (out may alias g or u). */
typedef void (*ev_silu_mul_fn)(const float *g, const float *u, float *out, int64_t n);

typedef struct ev_kernel_variant {
    const char *name;
    int interleave;                   /* interleaved rows R of quantized weights */
    int xor_q8;                       /* Q8_0 quants stored as w + 128 */
    ev_quantize_fn quantize;          /* activations for Q8_0, Q4_0, Q5_1 */
    ev_quantize_k_fn quantize_k;      /* activations for the K-quants */
    ev_silu_mul_fn silu_mul;
    ev_microkernels mk[EV_N_KINDS];   /* by kind, every kind filled (designated initializers) */
} ev_kernel_variant;

/* Which SIMD kernel files this build has: chosen by target architecture
 * (each file is compiled with its own instruction-set flags). */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#define EV_KERNELS_X86 1
#endif
#if defined(__aarch64__) && defined(__GNUC__)
#define EV_KERNELS_NEON 1
#endif

extern const ev_kernel_variant ev_variant_scalar;
#if defined(EV_KERNELS_X86)
extern const ev_kernel_variant ev_variant_avx2;
extern const ev_kernel_variant ev_variant_avx512_vnni;
#endif
#if defined(EV_KERNELS_NEON)
extern const ev_kernel_variant ev_variant_neon_dotprod;
#endif

/* Scale of a block from its max |x|, shared by every variant so that the
 * quantized activations are bit-identical: d = amax / 127, id = 1 / d. */
/* Software prefetch of the repacked weights EV_PF_BYTES ahead of the block
 * being read: decode streams each weight once, and the hardware prefetcher
 * alone left bandwidth unused.  4 KiB measured best (AVX-512 VNNI, 2
 * threads, LFM2-350M shape, tg64 t/s, 2-3 runs each): Q8_0 none ~121,
 * 2 KiB ~164, 4 KiB ~175, 8 KiB ~146; Q4_0 none ~190, 1 KiB ~224,
 * 2 KiB ~240, 4 KiB ~249.  A prefetch never faults, so running past the
 * end of the weights is harmless; the address is formed as an integer so
 * no out-of-bounds pointer exists. */
#ifndef EV_PF_BYTES
#define EV_PF_BYTES 4096
#endif
static inline void ev_prefetch_ahead(const uint8_t *block, int64_t bytes) {
    for (int64_t c = 0; c < bytes; c += 64)
        __builtin_prefetch((const void *)((uintptr_t)block + EV_PF_BYTES + (uintptr_t)c), 0, 3);
}

/* The F16 kernels read a tile of 4 rows as 4 short streams (one row each,
 * 2 KiB at 1024 columns), too short for the hardware prefetcher to pick
 * up; each row pointer prefetches the same column of the next tile, `ahead`
 * bytes further.  Measured (bench_memory gemv, 2 threads, 131072 x 1024,
 * AVX-512): F16 47 -> 66 GB/s; F32 rows lost ~13 % with it, so they do
 * without. */
static inline void ev_prefetch_at(const uint8_t *p, int64_t ahead) {
    __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)ahead), 0, 3);
}

/* exp(x) in the SIMD variants (SwiGLU): glibc's expf, one call per element,
 * was 10-20 % of a Q8_0 prefill.  Cephes' single-precision scheme: clamp to
 * [EV_EXP_LO, EV_EXP_HI] (so 2^n stays a normal float), n = round(x log2 e),
 * r = x - n ln 2 in two parts, exp(r) by a degree-7 polynomial, times 2^n
 * built in the exponent bits.  Relative error ~2 ulp (checked in
 * test_kernels against double exp). */
#define EV_EXP_LO (-87.3f)
#define EV_EXP_HI 88.3f
#define EV_LOG2E 1.44269504088896341f
#define EV_LN2_HI 0.693359375f
#define EV_LN2_LO (-2.12194440e-4f)
#define EV_EXP_P0 1.9875691500e-4f
#define EV_EXP_P1 1.3981999507e-3f
#define EV_EXP_P2 8.3334519073e-3f
#define EV_EXP_P3 4.1665795894e-2f
#define EV_EXP_P4 1.6666665459e-1f
#define EV_EXP_P5 5.0000001201e-1f

/* The last n (< width <= 16) elements of a silu_mul, run through
 * zero-padded buffers by the variant's own full-vector path, so the tail
 * gets the same arithmetic as the rest. */
static inline void ev_silu_mul_tail(ev_silu_mul_fn full, int width, const float *g, const float *u, float *out,
                                    int64_t n) {
    float gb[16] = {0}, ub[16] = {0}, ob[16];
    memcpy(gb, g, (size_t)n * sizeof(float));
    memcpy(ub, u, (size_t)n * sizeof(float));
    full(gb, ub, ob, width);
    memcpy(out, ob, (size_t)n * sizeof(float));
}

static inline void ev_q8_scale(float amax, float *d, float *id) {
    *d = amax / 127.0f;
    *id = *d != 0.0f ? 1.0f / *d : 0.0f;
}

#endif /* EV_KERNELS_INTERNAL_H */
