/* The kernels for any CPU: 128-bit vectors (SSE2 on x86-64, NEON on aarch64; GCC lowers
 * them to what another target has), compiled with the build's default flags. */
#define SIMD_LANES 4
#define KERNEL_TABLE kernels_baseline
#define KERNEL_NAME "baseline"
#include "_kernels_impl.h"
