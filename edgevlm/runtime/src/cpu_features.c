/* Run-time CPU feature detection.  Kernels are chosen from these flags, never
 * from compile-time -march, so one binary runs on any CPU of its family. */
#include "edgevlm.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__clang__)
#include <cpuid.h>
#endif

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

unsigned ev_cpu_features(void) {
    unsigned f = 0;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    /* __builtin_cpu_supports also checks that the OS saves the wider
     * register state (XGETBV), so a reported level is usable. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= EV_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= EV_CPU_FMA;
#if defined(__clang__)
    /* clang (14, Debian 12's) rejects "f16c" in __builtin_cpu_supports: read
     * CPUID.1:ECX bit 29; F16C uses the YMM state that "avx" checks. */
    {
        unsigned a, b, c, d;
        if (__builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1)) f |= EV_CPU_F16C;
    }
#else
    if (__builtin_cpu_supports("f16c")) f |= EV_CPU_F16C;
#endif
    if (__builtin_cpu_supports("avx512f")) f |= EV_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512vnni")) f |= EV_CPU_AVX512_VNNI;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    if (__builtin_cpu_supports("avxvnni")) f |= EV_CPU_AVX_VNNI;
#endif
#elif defined(__aarch64__)
    f |= EV_CPU_NEON; /* mandatory on AArch64 */
#if defined(__linux__)
    {
        unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
        if (hw & HWCAP_ASIMDDP) f |= EV_CPU_NEON_DOTPROD;
        if (hw2 & HWCAP2_I8MM) f |= EV_CPU_NEON_I8MM;
    }
#endif
#endif
    return f;
}

const char *ev_cpu_feature_name(unsigned flag) {
    switch (flag) {
    case EV_CPU_AVX2: return "avx2";
    case EV_CPU_AVX512F: return "avx512f";
    case EV_CPU_AVX512_VNNI: return "avx512_vnni";
    case EV_CPU_AVX_VNNI: return "avx_vnni";
    case EV_CPU_NEON: return "neon";
    case EV_CPU_NEON_DOTPROD: return "neon_dotprod";
    case EV_CPU_NEON_I8MM: return "neon_i8mm";
    case EV_CPU_FMA: return "fma";
    case EV_CPU_F16C: return "f16c";
    default: return 0;
    }
}
