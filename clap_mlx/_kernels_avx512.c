/* The kernels for AVX-512F (+ FMA for the 256-bit head vectors): 512-bit vectors. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx2,fma")
#endif
#define SIMD_LANES 16
#define KERNEL_TABLE kernels_avx512
#define KERNEL_NAME "avx512"
#include "_kernels_impl.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
