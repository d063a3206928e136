/* Vector types, loads/stores and exp for the kernels: included by _kernels_impl.h once per
 * SIMD target, after the target file set SIMD_LANES. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_kernels_simd.h"

/* Helpers are inlined into their caller, so they are compiled for this file's target. */
#define INLINE static inline __attribute__((always_inline))

/* Two vectors of accumulators for row reductions: hides the add latency. */
#define ACC_LANES (2 * SIMD_LANES)

/* Vector types of the target's native width. */
typedef float vf __attribute__((vector_size(4 * SIMD_LANES)));
typedef int32_t vi __attribute__((vector_size(4 * SIMD_LANES)));

INLINE vf load_vf(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v); /* unaligned: one vector move */
    return v;
}
INLINE void store_vf(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* The first `n` floats of p (n <= SIMD_LANES) in a zero-padded vector. */
INLINE vf load_part(const float *p, ptrdiff_t n) {
    if (n >= SIMD_LANES) return load_vf(p);
    float part[SIMD_LANES] = {0};
    if (n > 0) memcpy(part, p, (size_t)n * sizeof(float));
    return load_vf(part);
}

INLINE void store_part(float *p, vf v, ptrdiff_t n) {
    if (n >= SIMD_LANES)
        store_vf(p, v);
    else if (n > 0)
        memcpy(p, &v, (size_t)n * sizeof(float));
}

/* mask ? a : b per lane, for masks from vector comparisons (C has no vector ?:) */
INLINE vf select_vf(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

/* A vector's lanes summed, or their maximum, as a tree: log2(lanes) dependent steps (a
 * lane-by-lane loop is a chain of lanes - 1). */
INLINE float vf_sum(vf v) {
    float lanes[SIMD_LANES];
    memcpy(lanes, &v, sizeof lanes);
    for (int width = SIMD_LANES / 2; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] += lanes[l + width];
    return lanes[0];
}
INLINE float vf_max(vf v) {
    float lanes[SIMD_LANES];
    memcpy(lanes, &v, sizeof lanes);
    for (int width = SIMD_LANES / 2; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] = lanes[l + width] > lanes[l] ? lanes[l + width] : lanes[l];
    return lanes[0];
}

INLINE int32_t float_bits(float x) {
    int32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}
INLINE float bits_float(int32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* exp(x) as in Cephes' expf (about 1 ulp) for x <= 0, which is all its callers pass (a
 * softmax after its max shift, the GELU's tail), so it has no overflow guard: x = n ln2 + r,
 * |r| <= ln2 / 2, 2^n built in the exponent bits. Exactly 0 below -87.3 (where float32
 * leaves the normal range, so no denormals reach the next matmul); NaN stays NaN. One
 * definition for scalars (loops the compiler vectorises) and for explicit vectors. */
#define DEFINE_EXP(name, real, SPLAT, SELECT, TO_BITS, FROM_BITS)                                                      \
    INLINE real name(real x) {                                                                                         \
        const real lo = SPLAT(-87.3f);                                                                                 \
        real c = SELECT(x < lo, lo, x);                                                                                \
        const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */                           \
        real t = c * 1.44269504088896341f + shifter;                                                                   \
        real n = t - shifter;                                                                                          \
        real r = c - n * 0.693359375f;                                                                                 \
        r = r + n * 2.12194440e-4f;                                                                                    \
        real r2 = r * r;                                                                                               \
        real p = SPLAT(1.9875691500e-4f);                                                                              \
        p = p * r + 1.3981999507e-3f;                                                                                  \
        p = p * r + 8.3334519073e-3f;                                                                                  \
        p = p * r + 4.1665795894e-2f;                                                                                  \
        p = p * r + 1.6666665459e-1f;                                                                                  \
        p = p * r + 5.0000001201e-1f;                                                                                  \
        p = p * r2 + r + 1.0f;                                                                                         \
        real y = p * FROM_BITS((TO_BITS(t) - 0x4B400000 + 127) << 23);                                                 \
        return SELECT(x < lo, SPLAT(0.0f), y);                                                                         \
    }
#define SCALAR_SPLAT(v) (v)
#define SCALAR_SELECT(mask, a, b) ((mask) ? (a) : (b))
#define VECTOR_SPLAT(v) ((vf){0} + (v))
#define VECTOR_TO_BITS(x) ((vi)(x))
#define VECTOR_FROM_BITS(x) ((vf)(x))
DEFINE_EXP(exp_approx, float, SCALAR_SPLAT, SCALAR_SELECT, float_bits, bits_float)
DEFINE_EXP(exp_vf, vf, VECTOR_SPLAT, select_vf, VECTOR_TO_BITS, VECTOR_FROM_BITS)

