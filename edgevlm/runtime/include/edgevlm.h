/* edgevlm.h - the one public header of the edgevlm C runtime. */
#ifndef EDGEVLM_H
#define EDGEVLM_H

#ifdef __cplusplus
extern "C" {
#endif

/* SIMD levels detected at run time (bit flags). */
enum {
    EV_CPU_AVX2         = 1u << 0,
    EV_CPU_AVX512F      = 1u << 1,
    EV_CPU_AVX512_VNNI  = 1u << 2,
    EV_CPU_AVX_VNNI     = 1u << 3,
    EV_CPU_NEON         = 1u << 4,
    EV_CPU_NEON_DOTPROD = 1u << 5,
    EV_CPU_NEON_I8MM    = 1u << 6,
    EV_CPU_FMA          = 1u << 7,
    EV_CPU_F16C         = 1u << 8
};

/* Bit set of EV_CPU_* flags for the CPU this process runs on. */
unsigned ev_cpu_features(void);

/* Name of one EV_CPU_* flag ("avx2", "avx512_vnni", ...), or NULL. */
const char *ev_cpu_feature_name(unsigned flag);

#ifdef __cplusplus
}
#endif
#endif /* EDGEVLM_H */
