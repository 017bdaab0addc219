/* kernels.h - matrix kernels of the edgevlm runtime (internal API).
 *
 * Weights are prepared once at load (copied, and repacked into an
 * interleaved SIMD-friendly layout for the SIMD variants); every matmul
 * then computes Y[n, rows] = X[n, cols] @ W^T with X, Y f32 row-major.
 *
 * Quantized weights (Q8_0, Q4_0, Q5_0, Q5_1) use integer arithmetic: each row of X is
 * quantized to int8 per block of 32 (scale d = max|x| / 127, q =
 * round-half-even(x / d), like ggml's Q8_0 activations but with an f32
 * scale), each block dot product is accumulated exactly in int32, and the
 * float result is sum over blocks of isum * (d_w * d_x) (Q5_1: plus
 * sum(q_x) * (m_w * d_x), its min times the block sum).  The integer part
 * is bit-exact across variants; only the float summation (FMA vs mul+add)
 * may differ.
 *
 * K-quant weights (Q4_K, Q5_K, Q6_K) take X quantized per block of 256 the
 * same way (ggml's Q8_K: one f32 scale per 256, int16 sums per 16), and per
 * block b of 256 the exact integers
 *     I = sum_j sc_j * sum_{i in j} q_i x_i,   M = sum_j m_j * sum_{i in j} x_i
 * (j the sub-blocks, sc_j / m_j their 6-bit scales / mins, q_i the weight
 * quants: 0..15, 0..31, or -32..31 for Q6_K, which has no mins), giving
 *     y = sum_b  I * (d_b * d_x) - M * (dmin_b * d_x). 
 *
 * Variants (chosen at run time from ev_cpu_features(), never from -march):
 * "scalar" (the reference), "avx2", "avx512_vnni", "neon_dotprod".  Each
 * per-ISA file holds only microkernels (a group of rows x a fixed number of
 * tokens) and its variant table; the loops over rows, token tiles and
 * tails, the threading and the activation quantization are kernels.c's,
 * once for every variant. */
#ifndef EV_KERNELS_H
#define EV_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "threadpool.h"

#include "types.h"

/* Error codes of ev_weights_prepare / ev_matmul / ev_kernels_force_variant. */
enum {
    EV_KERNEL_OK = 0,
    EV_KERNEL_EINVAL = 1,      /* bad argument: type, shape, NULL pointer */
    EV_KERNEL_ENOMEM = 2,      /* allocation failed */
    EV_KERNEL_EUNSUPPORTED = 3 /* variant unknown or not supported by this CPU / build */
};

/* Bytes of one row in ggml block layout; 0 if cols is not a multiple of the
 * block size, not positive, or the type is unknown. */
size_t ev_row_bytes(ev_type t, int64_t cols);

typedef struct ev_weights ev_weights;

/* Prepare a rows x cols weight matrix given in ggml layout (rows of
 * ev_row_bytes(t, cols) bytes).  The data is copied (and repacked): the
 * caller may free it afterwards.  Uses the variant active at call time.
 * Returns EV_KERNEL_OK or an error code; *out is NULL on error. */
int ev_weights_prepare(ev_weights **out, ev_type t, const void *data, int64_t rows, int64_t cols);
/* The same, with the packed data taken from arena (may be NULL: own
 * allocation).  Arena memory is released by ev_arena_free, after every
 * ev_weights_free of the matrices in it. */
typedef struct ev_arena ev_arena;
int ev_weights_prepare_in(ev_arena *arena, ev_weights **out, ev_type t, const void *data, int64_t rows, int64_t cols);
void ev_weights_free(ev_weights *w);
/* A growing arena of 2 MiB aligned chunks advised for transparent huge
 * pages where the OS has them; NULL if out of memory. Not thread-safe. */
ev_arena *ev_arena_new(void);
/* 64-byte aligned memory from the arena (NULL if out of memory). */
void *ev_arena_alloc(ev_arena *a, size_t bytes);
void ev_arena_free(ev_arena *a);
int64_t ev_weights_rows(const ev_weights *w);
int64_t ev_weights_cols(const ev_weights *w);
ev_type ev_weights_type(const ev_weights *w);

/* Y[n, rows] = X[n, cols] @ W^T.  tp may be NULL (runs on the calling
 * thread).  Returns EV_KERNEL_OK or EV_KERNEL_EINVAL (NULL pointer, n < 0). */
int ev_matmul(ev_threadpool *tp, const ev_weights *W, const float *X, int64_t n, float *Y);

/* out[i] = silu(g[i]) * u[i] (SwiGLU) for i < n with the active variant
 * (out may alias g or u).  SIMD variants use a polynomial exp (~2 ulp),
 * scalar expf. */
void ev_silu_mul(const float *g, const float *u, float *out, int64_t n);

/* Dequantize one ggml-layout row (e.g. an embedding lookup) to f32. */
void ev_dequantize_row(ev_type t, const void *row, float *out, int64_t cols);

/* Select the kernel variant used by later ev_weights_prepare calls:
 * "scalar", "avx2", "avx512_vnni", "neon_dotprod", or NULL / "auto" for the
 * best one this CPU supports.  Returns EV_KERNEL_EUNSUPPORTED (and keeps the
 * current choice) if the name is unknown or this CPU cannot run it. */
int ev_kernels_force_variant(const char *name);
/* Name of the variant later ev_weights_prepare calls will use. */
const char *ev_kernels_variant_name(void);
/* Variant a prepared weight matrix was packed for. */
const char *ev_weights_variant_name(const ev_weights *w);

/* Quantize n rows of x (cols a multiple of 32) to int8 blocks with the
 * active variant: q[n*cols], d[n*cols/32] (f32 scales), s[n*cols/32]
 * (sum of each block's q).  Exposed so tests can check the quantized
 * activations bit-exactly across variants. */
void ev_quantize_rows_q8(const float *x, int64_t n, int64_t cols, int8_t *q, float *d, int32_t *s);
/* The same per block of 256 (cols a multiple of 256), the K-quants'
 * activations: q[n*cols], d[n*cols/256], bs[n*cols/16] (sums of each 16 q). */
void ev_quantize_rows_q8k(const float *x, int64_t n, int64_t cols, int8_t *q, float *d, int16_t *bs);

#endif /* EV_KERNELS_H */
