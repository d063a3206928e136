/* Fused float32 kernels for clap_mlx.ops: GELU (+ bias), softmax (+ scale, + additive
 * bias), layer norm (+ residual add), and 64-token multi-head window attention.
 *
 * Included once per SIMD target by _kernels_<target>.c, which sets SIMD_LANES (the float32
 * lanes of the target's native vector), KERNEL_TABLE and KERNEL_NAME, and compiles this
 * with the target's instructions enabled: every vector here is at most the target's own
 * width (a wider generic vector is split into several registers and, in an AVX2 build of
 * 512-bit code, ran the attention kernel 6.5x slower than MLX's matmuls).
 *
 * MLX's CPU backend runs transcendental elementwise ops one scalar at a time, and NumPy
 * needs ~20 passes over memory for an erf GELU. Each kernel here makes one pass over a row
 * that sits in L1, written so the compiler vectorises it. The kernels work on a row range,
 * so ops.py splits a tensor across the cores with its own threads. `src` and `dst` may be
 * the same buffer (in-place).
 */
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
/* mask ? a : b per lane, for masks from vector comparisons (C has no vector ?:) */
INLINE vf select_vf(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
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

/* exp(x) as in Cephes' expf (about 1 ulp): x = n ln2 + r, |r| <= ln2 / 2, 2^n built in
 * the exponent bits. Exactly 0 below -87.3 (where float32 leaves the normal range, so no
 * denormals reach the next matmul) and inf above 88.7; NaN stays NaN. One definition for
 * scalars (loops the compiler vectorises) and for explicit vectors. */
#define DEFINE_EXP(name, real, SPLAT, SELECT, TO_BITS, FROM_BITS)                                                      \
    INLINE real name(real x) {                                                                                         \
        const real lo = SPLAT(-87.3f), hi = SPLAT(88.7f);                                                              \
        real c = SELECT(x < lo, lo, x);                                                                                \
        c = SELECT(c > hi, hi, c);                                                                                     \
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
        y = SELECT(x < lo, SPLAT(0.0f), y);                                                                            \
        return SELECT(x > hi, SPLAT(__builtin_inff()), y);                                                             \
    }
#define SCALAR_SPLAT(v) (v)
#define SCALAR_SELECT(mask, a, b) ((mask) ? (a) : (b))
#define VECTOR_SPLAT(v) ((vf){0} + (v))
#define VECTOR_TO_BITS(x) ((vi)(x))
#define VECTOR_FROM_BITS(x) ((vf)(x))
DEFINE_EXP(exp_approx, float, SCALAR_SPLAT, SCALAR_SELECT, float_bits, bits_float)
DEFINE_EXP(exp_vf, vf, VECTOR_SPLAT, select_vf, VECTOR_TO_BITS, VECTOR_FROM_BITS)

/* x * Phi(x) = relu(x) - |x| Phi(-|x|), with Phi(-|x|) = erfc(|x| / sqrt 2) / 2 from
 * Abramowitz & Stegun 7.1.26 (max abs error of the GELU 2.5e-7): the same formula as the
 * NumPy fallback in ops.py, so both paths agree to float32 rounding. */
INLINE float gelu_value(float x) {
    const float k = 4.31700850f; /* sqrt(2) / 0.3275911 */
    float a = x < 0.0f ? -x : x;
    a = a > 15.0f ? 15.0f : a; /* the tail term underflows there; keeps inf finite, NaN NaN */
    float t = k / (k + a);
    float p = 0.5307027145f;
    p = p * t - 0.7265760135f;
    p = p * t + 0.7107068705f;
    p = p * t - 0.1422483680f;
    p = p * t + 0.1274147960f;
    float tail = a * t * p * exp_approx(-0.5f * a * a);
    float relu = x < 0.0f ? 0.0f : x;
    return relu - tail;
}

static void gelu_rows(const float *src, float *dst, const float *bias, ptrdiff_t cols, ptrdiff_t row_start,
                      ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (bias) {
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = gelu_value(x[j] + bias[j]);
        } else {
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = gelu_value(x[j]);
        }
    }
}

INLINE float lanes_sum(const float *acc) {
    float total = 0.0f;
    for (int l = 0; l < ACC_LANES; l++) total += acc[l];
    return total;
}

INLINE float row_max(const float *x, ptrdiff_t cols) {
    float acc[ACC_LANES];
    for (int l = 0; l < ACC_LANES; l++) acc[l] = -__builtin_inff();
    ptrdiff_t j = 0;
    for (; j + ACC_LANES <= cols; j += ACC_LANES)
        for (int l = 0; l < ACC_LANES; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float m = -__builtin_inff();
    for (; j < cols; j++) m = x[j] > m ? x[j] : m;
    for (int l = 0; l < ACC_LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

/* y = exp(y - shift) in place; returns the sum of the new values. */
INLINE float exp_shifted_sum(float *y, float shift, ptrdiff_t cols) {
    float acc[ACC_LANES] = {0};
    float tail = 0.0f;
    ptrdiff_t j = 0;
    for (; j + ACC_LANES <= cols; j += ACC_LANES) {
        for (int l = 0; l < ACC_LANES; l++) {
            float e = exp_approx(y[j + l] - shift);
            y[j + l] = e;
            acc[l] += e;
        }
    }
    for (; j < cols; j++) {
        y[j] = exp_approx(y[j] - shift);
        tail += y[j];
    }
    return lanes_sum(acc) + tail;
}

/* Row i gets softmax(scale * src[i] + add[i % add_rows]); -inf scores get exactly 0 and
 * a row of -inf gives NaN, as torch and mx.softmax. */
static void softmax_rows(const float *src, float *dst, float scale, const float *add, ptrdiff_t add_rows,
                         ptrdiff_t cols, ptrdiff_t row_start, ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (add) {
            const float *b = add + (i % add_rows) * cols;
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = scale * x[j] + b[j];
        } else {
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = scale * x[j];
        }
        float inverse = 1.0f / exp_shifted_sum(y, row_max(y, cols), cols);
        for (ptrdiff_t j = 0; j < cols; j++) y[j] *= inverse;
    }
}

/* dst[i] = LayerNorm(src[i] (+ residual[i])) with biased variance, as torch; the sum is
 * also written to sum_dst when given (the residual stream of a pre-norm block). */
static void layer_norm_rows(const float *src, const float *residual, float *sum_dst, float *dst,
                            const float *weight, const float *bias, float eps, ptrdiff_t cols, ptrdiff_t row_start,
                            ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (residual) {
            const float *r = residual + i * cols;
            float *s = sum_dst ? sum_dst + i * cols : y;
            for (ptrdiff_t j = 0; j < cols; j++) s[j] = x[j] + r[j];
            x = s;
        }
        float acc[ACC_LANES] = {0};
        float tail = 0.0f;
        ptrdiff_t j = 0;
        for (; j + ACC_LANES <= cols; j += ACC_LANES)
            for (int l = 0; l < ACC_LANES; l++) acc[l] += x[j + l];
        for (; j < cols; j++) tail += x[j];
        float mean = (lanes_sum(acc) + tail) / (float)cols;
        for (int l = 0; l < ACC_LANES; l++) acc[l] = 0.0f;
        tail = 0.0f;
        for (j = 0; j + ACC_LANES <= cols; j += ACC_LANES) {
            for (int l = 0; l < ACC_LANES; l++) {
                float d = x[j + l] - mean;
                acc[l] += d * d;
            }
        }
        for (; j < cols; j++) tail += (x[j] - mean) * (x[j] - mean);
        float variance = (lanes_sum(acc) + tail) / (float)cols;
        float inverse_std = 1.0f / __builtin_sqrtf(variance + eps);
        for (j = 0; j < cols; j++) {
            float v = (x[j] - mean) * inverse_std;
            if (weight) v *= weight[j];
            if (bias) v += bias[j];
            y[j] = v;
        }
    }
}

/* Head rows use at most 8 lanes: every head width (8, 16, 24, 32) is a multiple of 8, not
 * of 16. */
#define HEAD_LANES (SIMD_LANES < 8 ? SIMD_LANES : 8)
typedef float vh __attribute__((vector_size(4 * HEAD_LANES)));

INLINE vh load_vh(const float *p) {
    vh v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void store_vh(float *p, vh v) { memcpy(p, &v, sizeof v); }

#define TOKENS 64
/* Score columns per pass over q: at most 8 vector accumulators, so they stay in registers
 * (64 columns at 8 or 16 lanes, 32 at 4). */
#define SCORE_COLUMNS (8 * SIMD_LANES < TOKENS ? 8 * SIMD_LANES : TOKENS)
#define MAX_ROW_BLOCK 4

/* Query rows per block in p.v: a block of rows shares each loaded value vector, and its
 * rows x chunks independent accumulators (at most 12: x86 has 16 vector registers) hide
 * the FMA latency that one row's chunks alone would expose. */
INLINE int row_block(int chunks) { return chunks <= 3 ? 4 : chunks <= 6 ? 2 : 1; }

/* y = exp(y - max(y)) in place for a 64-float row, in target-width vectors; returns the
 * sum of the new values. */
INLINE float exp_shifted_sum_64(float *y) {
    vf m = load_vf(y);
    for (int v = 1; v < TOKENS / SIMD_LANES; v++) {
        const vf x = load_vf(y + v * SIMD_LANES);
        m = select_vf(x > m, x, m);
    }
    float shift = m[0];
    for (int l = 1; l < SIMD_LANES; l++) shift = m[l] > shift ? m[l] : shift;
    vf sum = {0};
    for (int v = 0; v < TOKENS / SIMD_LANES; v++) {
        const vf e = exp_vf(load_vf(y + v * SIMD_LANES) - shift);
        store_vf(y + v * SIMD_LANES, e);
        sum += e;
    }
    float total = 0.0f;
    for (int l = 0; l < SIMD_LANES; l++) total += sum[l];
    return total;
}

/* scores[r] = softmax(scale * q_r k^T + bias_r) for `block` query rows from `q`; returns
 * each row's softmax normaliser in inverse[r] (scores[r] holds the unnormalised exps). */
INLINE void score_rows(const float *q, ptrdiff_t stride, const float *keys_t, int head_dims, const float *bias,
                       float scale, int block, float scores[][TOKENS], float *inverse) {
    for (int r = 0; r < block; r++) {
        const float *qr = q + r * stride;
        for (int c0 = 0; c0 < TOKENS; c0 += SCORE_COLUMNS) {
            vf s[SCORE_COLUMNS / SIMD_LANES] = {{0}};
            for (int d = 0; d < head_dims; d++) {
                const float *k = keys_t + d * TOKENS + c0;
                for (int v = 0; v < SCORE_COLUMNS / SIMD_LANES; v++) s[v] += qr[d] * load_vf(k + v * SIMD_LANES);
            }
            for (int v = 0; v < SCORE_COLUMNS / SIMD_LANES; v++) {
                vf x = s[v] * scale;
                if (bias) x += load_vf(bias + r * TOKENS + c0 + v * SIMD_LANES);
                store_vf(scores[r] + c0 + v * SIMD_LANES, x);
            }
        }
        inverse[r] = 1.0f / exp_shifted_sum_64(scores[r]);
    }
}

/* One (item, head) pair with a head width of HEAD_LANES * chunks: scores for a block of
 * query rows, then their p.v with the block's accumulators in registers. Called with a
 * constant `chunks`, so it is specialised and its loops unrolled. */
INLINE void attention_pair(const float *base, ptrdiff_t stride, ptrdiff_t dims, const float *bias, float scale,
                           float *out, const float *keys_t, const int chunks) {
    const int head_dims = HEAD_LANES * chunks, block = row_block(chunks);
    float scores[MAX_ROW_BLOCK][TOKENS];
    float inverse[MAX_ROW_BLOCK];
    for (int i = 0; i < TOKENS; i += block) {
        score_rows(base + i * stride, stride, keys_t, head_dims, bias ? bias + i * TOKENS : NULL, scale, block,
                   scores, inverse);
        vh o[MAX_ROW_BLOCK][32 / HEAD_LANES] = {{{0}}};
        for (int j = 0; j < TOKENS; j++) {
            const float *v = base + j * stride + 2 * dims;
            vh value[32 / HEAD_LANES];
            for (int c = 0; c < chunks; c++) value[c] = load_vh(v + c * HEAD_LANES);
            for (int r = 0; r < block; r++)
                for (int c = 0; c < chunks; c++) o[r][c] += scores[r][j] * value[c];
        }
        for (int r = 0; r < block; r++)
            for (int c = 0; c < chunks; c++) store_vh(out + (i + r) * dims + c * HEAD_LANES, o[r][c] * inverse[r]);
    }
}

/* Multi-head self-attention from a packed q/k/v projection for 64-token windows and head
 * widths of 8, 16, 24 or 32, one (item, head) pair at a time: scores = scale * q k^T + bias,
 * softmax, times v, all inside L1. qkv is [items, 64, 3, heads, head_dims] (the output of
 * one fused projection GEMM), out is [items, 64, heads, head_dims]; bias is [bias_count,
 * 64, 64], pair n using bias n % bias_count. For Swin's windows this replaces thousands of
 * tiny batched BLAS calls; ops.py takes MLX's path for other shapes. */
static void attention_pairs(const float *qkv, float *out, const float *bias, ptrdiff_t bias_count, float scale,
                            ptrdiff_t heads, ptrdiff_t head_dims, ptrdiff_t pair_start, ptrdiff_t pair_stop) {
    const ptrdiff_t dims = heads * head_dims, stride = 3 * dims;
    float keys_t[32 * TOKENS]; /* [head_dims, tokens]: k transposed so score rows are contiguous */
    for (ptrdiff_t n = pair_start; n < pair_stop; n++) {
        const ptrdiff_t item = n / heads, head = n % heads;
        const float *base = qkv + item * TOKENS * stride + head * head_dims;
        for (ptrdiff_t j = 0; j < TOKENS; j++) {
            const float *k = base + j * stride + dims;
            for (ptrdiff_t d = 0; d < head_dims; d++) keys_t[d * TOKENS + j] = k[d];
        }
        const float *pair_bias = bias ? bias + (n % bias_count) * TOKENS * TOKENS : NULL;
        float *pair_out = out + item * TOKENS * dims + head * head_dims;
        /* constant chunk counts: one specialised copy per head width */
        switch (head_dims / HEAD_LANES) {
        case 1: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 1); break;
        case 2: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 2); break;
        case 3: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 3); break;
        case 4: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 4); break;
#if HEAD_LANES < 8
        case 6: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 6); break;
        case 8: attention_pair(base, stride, dims, pair_bias, scale, pair_out, keys_t, 8); break;
#endif
        default: break; /* the bindings accept only 8, 16, 24 and 32 */
        }
    }
}

const struct kernel_table KERNEL_TABLE = {
    KERNEL_NAME, SIMD_LANES, gelu_rows, softmax_rows, layer_norm_rows, attention_pairs,
};
