/* The kernels for AVX2 + FMA: 256-bit vectors. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define SIMD_LANES 8
#define KERNEL_TABLE kernels_avx2
#define KERNEL_NAME "avx2"
#include "_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
