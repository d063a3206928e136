/* Which kernel variant this CPU runs: the x86 ones need the CPU (and the OS, which
 * __builtin_cpu_supports checks through XCR0) to support their instructions. */
#include <string.h>

#include "_kernels_simd.h"

extern const struct kernel_table kernels_baseline;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
extern const struct kernel_table kernels_avx512, kernels_avx2;
const char kernels_all_names[] = "avx512|avx2|baseline";
#else
const char kernels_all_names[] = "baseline";
#endif

int kernels_runnable(const struct kernel_table **out, int capacity) {
    int n = 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    int fma = __builtin_cpu_supports("fma");
    if (n < capacity && fma && __builtin_cpu_supports("avx512f")) out[n++] = &kernels_avx512;
    if (n < capacity && fma && __builtin_cpu_supports("avx2")) out[n++] = &kernels_avx2;
#endif
    if (n < capacity) out[n++] = &kernels_baseline;
    return n;
}

const struct kernel_table *kernels_find(const char *name) {
    const struct kernel_table *runnable[3];
    int n = kernels_runnable(runnable, 3);
    for (int k = 0; k < n; k++)
        if (strcmp(runnable[k]->name, name) == 0) return runnable[k];
    return NULL;
}
