/* fp16.h - IEEE half <-> single conversion (portable, bit-exact).
 * SIMD kernels use F16C / NEON instructions, which give identical results. */
#ifndef EV_FP16_H
#define EV_FP16_H

#include <stdint.h>
#include <string.h>

static inline float ev_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    float f;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13);            /* inf / nan */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);   /* normal */
    } else if (man == 0) {
        bits = sign;                                        /* +-0 */
    } else {                                                /* subnormal: normalize */
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest even, overflow to inf, like F16C's vcvtps2ph. */
static inline uint16_t ev_fp32_to_fp16(float f) {
    uint32_t x, sign, mag;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    mag = x & 0x7fffffffu;
    if (mag > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((mag >> 13) & 0x3ffu)); /* nan */
    if (mag >= 0x47800000u) return (uint16_t)(sign | 0x7c00u);                     /* >= 65536: inf */
    if (mag >= 0x38800000u) {                                                      /* normal half */
        uint32_t r = mag - 0x38000000u;                  /* rebias exponent 127 -> 15 */
        r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;      /* round half to even */
        return (uint16_t)(sign | r);                     /* may round up to inf: correct */
    }
    if (mag < 0x33000000u) return (uint16_t)sign;        /* < half of smallest subnormal */
    {                                                    /* subnormal half */
        uint32_t e = mag >> 23, m = (mag & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;                       /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
}

#endif /* EV_FP16_H */
