/* types.h - the ggml tensor types the runtime reads: one table of block
 * sizes and byte sizes, used by the GGUF reader (tensor sizes) and by the
 * kernels (row sizes), so the two can never disagree.
 *
 * Block layouts (ggml-common.h; fp16 = IEEE half, little-endian):
 *   Q4_0  32 values, 18 B: fp16 d | 16 B nibbles (low: 0..15, high: 16..31), w = d (q - 8)
 *   Q5_0  32 values, 22 B: fp16 d | 4 B fifth bits (bit j: value j) | 16 B nibbles
 *         as Q4_0, w = d (q - 16)
 *   Q5_1  32 values, 24 B: fp16 d | fp16 m | 4 B fifth bits | 16 B nibbles as Q5_0,
 *         w = d q + m
 *   Q8_0  32 values, 34 B: fp16 d | 32 int8, w = d q
 *   Q4_K 256 values, 144 B: fp16 d | fp16 dmin | 12 B packed 6-bit scales and mins
 *         of 8 sub-blocks of 32 | 128 B nibbles, w = d sc_j q - dmin m_j
 *   Q5_K 256 values, 176 B: as Q4_K plus 32 B of fifth bits (qh) before the nibbles
 *   Q6_K 256 values, 210 B: 128 B low nibbles | 64 B 2-bit highs | 16 int8 scales
 *         of sub-blocks of 16 | fp16 d, w = d sc_j (q - 32) */
#ifndef EV_TYPES_H
#define EV_TYPES_H

#include <stddef.h>
#include <stdint.h>

/* ggml tensor type ids */
typedef enum {
    EV_TYPE_F32 = 0, EV_TYPE_F16 = 1, EV_TYPE_Q4_0 = 2, EV_TYPE_Q5_0 = 6, EV_TYPE_Q5_1 = 7,
    EV_TYPE_Q8_0 = 8,
    EV_TYPE_Q4_K = 12, EV_TYPE_Q5_K = 13, EV_TYPE_Q6_K = 14
} ev_type;

#define EV_QK 32            /* values per block of Q8_0, Q5_1, Q5_0, Q4_0 */
#define EV_QK_K 256         /* values per block of the K-quants */
#define EV_Q8_0_BYTES 34
#define EV_Q4_0_BYTES 18
#define EV_Q5_0_BYTES 22
#define EV_Q5_1_BYTES 24
#define EV_Q4_K_BYTES 144
#define EV_Q5_K_BYTES 176
#define EV_Q6_K_BYTES 210

typedef struct {
    const char *name;   /* ggml's name, e.g. "Q4_K" */
    int block;          /* values per block (1 for F32, F16) */
    int bytes;          /* bytes per block */
} ev_type_traits;

/* The traits of ggml type t, NULL if the runtime does not read it. */
const ev_type_traits *ev_type_info(uint32_t t);

/* Bytes of one row of cols values of type t; 0 if t is not read, cols is
 * negative, or cols is not a multiple of the block size. */
uint64_t ev_type_row_bytes(uint32_t t, int64_t cols);

/* "F32 (0), F16 (1), ..." from the table, for error messages: written to
 * buf (n bytes, truncated if short); returns buf. */
const char *ev_type_list(char *buf, size_t n);

#endif /* EV_TYPES_H */
