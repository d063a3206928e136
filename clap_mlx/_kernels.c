/* Fused float32 kernels for clap_mlx.ops: GELU (+ bias), softmax (+ scale, + additive
 * bias), layer norm (+ residual add), and small-window multi-head attention.
 *
 * MLX's CPU backend runs transcendental elementwise ops one scalar at a time, and NumPy
 * needs ~20 passes over memory for an erf GELU. Each kernel here makes one pass over a
 * row that sits in L1, written so GCC vectorises it (AVX-512 / AVX2 clones picked at load
 * time). The kernels release the GIL and work on a row range, so ops.py splits a tensor
 * across the cores with its own threads. Buffers come from NumPy views of evaluated MLX
 * arrays; `src` and `dst` may be the same buffer (in-place).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

/* Helpers must be inlined into each target clone to be compiled for its instruction set
 * (a default-target call from an AVX-512 clone ran the attention kernel 10x slower). */
#define INLINE static inline __attribute__((always_inline))

#define LANES 16 /* accumulator width for row reductions: one AVX-512 register */

/* exp(x) as in Cephes' expf (about 1 ulp): x = n ln2 + r, |r| <= ln2 / 2, 2^n built in
 * the exponent bits. Exactly 0 below -87.3 (where float32 leaves the normal range, so no
 * denormals reach the next matmul) and inf above 88.7; NaN stays NaN. */
INLINE float exp_approx(float x) {
    const float lo = -87.3f, hi = 88.7f;
    float c = x < lo ? lo : x;
    c = c > hi ? hi : c;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = c * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = c - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t bits = (ti - 0x4B400000 + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < lo ? 0.0f : y;
    y = x > hi ? __builtin_inff() : y;
    return y;
}

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

SIMD_CLONES
static void gelu_rows(const float *src, float *dst, const float *bias, Py_ssize_t cols, Py_ssize_t row_start,
                      Py_ssize_t row_stop) {
    for (Py_ssize_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (bias) {
            for (Py_ssize_t j = 0; j < cols; j++) y[j] = gelu_value(x[j] + bias[j]);
        } else {
            for (Py_ssize_t j = 0; j < cols; j++) y[j] = gelu_value(x[j]);
        }
    }
}

INLINE float lanes_sum(const float *acc) {
    float total = 0.0f;
    for (int l = 0; l < LANES; l++) total += acc[l];
    return total;
}

INLINE float row_max(const float *x, Py_ssize_t cols) {
    float acc[LANES];
    for (int l = 0; l < LANES; l++) acc[l] = -__builtin_inff();
    Py_ssize_t j = 0;
    for (; j + LANES <= cols; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float m = -__builtin_inff();
    for (; j < cols; j++) m = x[j] > m ? x[j] : m;
    for (int l = 0; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
    return m;
}

/* y = exp(y - shift) in place; returns the sum of the new values. */
INLINE float exp_shifted_sum(float *y, float shift, Py_ssize_t cols) {
    float acc[LANES] = {0};
    float tail = 0.0f;
    Py_ssize_t j = 0;
    for (; j + LANES <= cols; j += LANES) {
        for (int l = 0; l < LANES; l++) {
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
SIMD_CLONES
static void softmax_rows(const float *src, float *dst, float scale, const float *add, Py_ssize_t add_rows,
                         Py_ssize_t cols, Py_ssize_t row_start, Py_ssize_t row_stop) {
    for (Py_ssize_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (add) {
            const float *b = add + (i % add_rows) * cols;
            for (Py_ssize_t j = 0; j < cols; j++) y[j] = scale * x[j] + b[j];
        } else {
            for (Py_ssize_t j = 0; j < cols; j++) y[j] = scale * x[j];
        }
        float inverse = 1.0f / exp_shifted_sum(y, row_max(y, cols), cols);
        for (Py_ssize_t j = 0; j < cols; j++) y[j] *= inverse;
    }
}

/* dst[i] = LayerNorm(src[i] (+ residual[i])) with biased variance, as torch; the sum is
 * also written to sum_dst when given (the residual stream of a pre-norm block). */
SIMD_CLONES
static void layer_norm_rows(const float *src, const float *residual, float *sum_dst, float *dst,
                            const float *weight, const float *bias, float eps, Py_ssize_t cols, Py_ssize_t row_start,
                            Py_ssize_t row_stop) {
    for (Py_ssize_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (residual) {
            const float *r = residual + i * cols;
            float *s = sum_dst ? sum_dst + i * cols : y;
            for (Py_ssize_t j = 0; j < cols; j++) s[j] = x[j] + r[j];
            x = s;
        }
        float acc[LANES] = {0};
        float tail = 0.0f;
        Py_ssize_t j = 0;
        for (; j + LANES <= cols; j += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += x[j + l];
        for (; j < cols; j++) tail += x[j];
        float mean = (lanes_sum(acc) + tail) / (float)cols;
        for (int l = 0; l < LANES; l++) acc[l] = 0.0f;
        tail = 0.0f;
        for (j = 0; j + LANES <= cols; j += LANES) {
            for (int l = 0; l < LANES; l++) {
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

/* GCC vector types (compiled per target clone) with unaligned loads/stores: memcpy
 * becomes one vmovups. */
#define VECTOR_TYPE(name, lanes)                                                                                       \
    typedef float name __attribute__((vector_size(4 * (lanes))));                                                      \
    INLINE name load_##name(const float *p) {                                                                          \
        name v;                                                                                                        \
        memcpy(&v, p, sizeof v);                                                                                       \
        return v;                                                                                                      \
    }                                                                                                                  \
    INLINE void store_##name(float *p, name v) { memcpy(p, &v, sizeof v); }

VECTOR_TYPE(v16, 16)
VECTOR_TYPE(v8, 8)

/* One (item, head) pair for Swin's 8x8 windows (64 tokens) and a head width of 8 * chunks
 * (24 in every HTSAT stage): the score row (4 x 16 lanes) and the output row (chunks x 8
 * lanes) stay in registers while q.k and p.v accumulate, which loops over runtime sizes
 * would not do. Called with a constant `chunks`, so it is specialised. */
INLINE void attention_pair_64(const float *base, Py_ssize_t stride, Py_ssize_t dims, const float *bias, float scale,
                              float *out, const float *keys_t, float *row, const int chunks) {
    const int head_dims = 8 * chunks;
    for (int i = 0; i < 64; i++) {
        const float *q = base + i * stride;
        v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (int d = 0; d < head_dims; d++) {
            const float *k = keys_t + d * 64;
            s0 += q[d] * load_v16(k);
            s1 += q[d] * load_v16(k + 16);
            s2 += q[d] * load_v16(k + 32);
            s3 += q[d] * load_v16(k + 48);
        }
        s0 *= scale, s1 *= scale, s2 *= scale, s3 *= scale;
        if (bias) {
            const float *b = bias + i * 64;
            s0 += load_v16(b), s1 += load_v16(b + 16), s2 += load_v16(b + 32), s3 += load_v16(b + 48);
        }
        store_v16(row, s0), store_v16(row + 16, s1), store_v16(row + 32, s2), store_v16(row + 48, s3);
        const float inverse = 1.0f / exp_shifted_sum(row, row_max(row, 64), 64);
        v8 o[4] = {{0}, {0}, {0}, {0}};
        for (int j = 0; j < 64; j++) {
            const float *v = base + j * stride + 2 * dims;
            for (int c = 0; c < chunks; c++) o[c] += row[j] * load_v8(v + 8 * c);
        }
        float *o_row = out + i * dims;
        for (int c = 0; c < chunks; c++) store_v8(o_row + 8 * c, o[c] * inverse);
    }
}

/* Multi-head self-attention from a packed q/k/v projection for 64-token windows and head
 * widths of 8, 16, 24 or 32, one (item, head) pair at a time: scores = scale * q k^T + bias,
 * softmax, times v, all inside L1. qkv is [items, 64, 3, heads, head_dims] (the output of
 * one fused projection GEMM), out is [items, 64, heads, head_dims]; bias is [bias_count,
 * 64, 64], pair n using bias n % bias_count. For Swin's windows this replaces thousands of
 * tiny batched BLAS calls; ops.py takes MLX's path for other shapes. */
SIMD_CLONES
static void attention_pairs(const float *qkv, float *out, const float *bias, Py_ssize_t bias_count, float scale,
                            Py_ssize_t heads, Py_ssize_t head_dims, Py_ssize_t pair_start, Py_ssize_t pair_stop) {
    const Py_ssize_t tokens = 64, dims = heads * head_dims, stride = 3 * dims;
    float keys_t[32 * 64]; /* [head_dims, tokens]: k transposed so score rows are contiguous */
    float row[64];
    for (Py_ssize_t n = pair_start; n < pair_stop; n++) {
        const Py_ssize_t item = n / heads, head = n % heads;
        const float *base = qkv + item * tokens * stride + head * head_dims;
        for (Py_ssize_t j = 0; j < tokens; j++) {
            const float *k = base + j * stride + dims;
            for (Py_ssize_t d = 0; d < head_dims; d++) keys_t[d * tokens + j] = k[d];
        }
        const float *pair_bias = bias ? bias + (n % bias_count) * tokens * tokens : NULL;
        float *pair_out = out + item * tokens * dims + head * head_dims;
        switch (head_dims) {
        case 8: attention_pair_64(base, stride, dims, pair_bias, scale, pair_out, keys_t, row, 1); break;
        case 16: attention_pair_64(base, stride, dims, pair_bias, scale, pair_out, keys_t, row, 2); break;
        case 24: attention_pair_64(base, stride, dims, pair_bias, scale, pair_out, keys_t, row, 3); break;
        default: attention_pair_64(base, stride, dims, pair_bias, scale, pair_out, keys_t, row, 4); break;
        }
    }
}

/* ---- Python bindings: buffers in, sizes checked, GIL released around the loops. ---- */

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

static int get_buffer(PyObject *obj, Buffer *buffer, int writable, Py_ssize_t floats, const char *name) {
    buffer->held = 0;
    if (obj == Py_None) return 1;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buffer->view, flags) < 0) return 0;
    buffer->held = 1;
    const char *format = buffer->view.format ? buffer->view.format : "B";
    if (buffer->view.itemsize != 4 || format[strlen(format) - 1] != 'f') {
        PyErr_Format(PyExc_TypeError, "%s: expected float32 values, got buffer format '%s'", name, format);
        return 0;
    }
    if (buffer->view.len < floats * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd float32 values", name, buffer->view.len,
                     floats);
        return 0;
    }
    return 1;
}

static void release(Buffer *buffers, int count) {
    for (int k = 0; k < count; k++)
        if (buffers[k].held) PyBuffer_Release(&buffers[k].view);
}

static float *data(Buffer *buffer) { return buffer->held ? (float *)buffer->view.buf : NULL; }

static int check_rows(Py_ssize_t cols, Py_ssize_t row_start, Py_ssize_t row_stop) {
    if (cols <= 0 || row_start < 0 || row_stop < row_start) {
        PyErr_SetString(PyExc_ValueError, "bad row range or column count");
        return 0;
    }
    return 1;
}

static PyObject *py_gelu(PyObject *self, PyObject *args) {
    PyObject *src, *dst, *bias;
    Py_ssize_t cols, row_start, row_stop;
    if (!PyArg_ParseTuple(args, "OOOnnn", &src, &dst, &bias, &cols, &row_start, &row_stop)) return NULL;
    if (!check_rows(cols, row_start, row_stop)) return NULL;
    Buffer b[3] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(src, &b[0], 0, row_stop * cols, "src") && get_buffer(dst, &b[1], 1, row_stop * cols, "dst") &&
             get_buffer(bias, &b[2], 0, cols, "bias");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS gelu_rows(data(&b[0]), data(&b[1]), data(&b[2]), cols, row_start, row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_softmax(PyObject *self, PyObject *args) {
    PyObject *src, *dst, *add;
    float scale;
    Py_ssize_t add_rows, cols, row_start, row_stop;
    if (!PyArg_ParseTuple(args, "OOfOnnnn", &src, &dst, &scale, &add, &add_rows, &cols, &row_start, &row_stop))
        return NULL;
    if (!check_rows(cols, row_start, row_stop)) return NULL;
    if (add != Py_None && add_rows <= 0) {
        PyErr_SetString(PyExc_ValueError, "add_rows must be positive");
        return NULL;
    }
    Buffer b[3] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(src, &b[0], 0, row_stop * cols, "src") && get_buffer(dst, &b[1], 1, row_stop * cols, "dst") &&
             get_buffer(add, &b[2], 0, add_rows * cols, "add");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS softmax_rows(data(&b[0]), data(&b[1]), scale, data(&b[2]), add_rows, cols, row_start,
                                            row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_layer_norm(PyObject *self, PyObject *args) {
    PyObject *src, *residual, *sum_dst, *dst, *weight, *bias;
    float eps;
    Py_ssize_t cols, row_start, row_stop;
    if (!PyArg_ParseTuple(args, "OOOOOOfnnn", &src, &residual, &sum_dst, &dst, &weight, &bias, &eps, &cols, &row_start,
                          &row_stop))
        return NULL;
    if (!check_rows(cols, row_start, row_stop)) return NULL;
    Py_ssize_t floats = row_stop * cols;
    Buffer b[6] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(src, &b[0], 0, floats, "src") && get_buffer(residual, &b[1], 0, floats, "residual") &&
             get_buffer(sum_dst, &b[2], 1, floats, "sum_dst") && get_buffer(dst, &b[3], 1, floats, "dst") &&
             get_buffer(weight, &b[4], 0, cols, "weight") && get_buffer(bias, &b[5], 0, cols, "bias");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS layer_norm_rows(data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), data(&b[4]),
                                               data(&b[5]), eps, cols, row_start, row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 6);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_attention(PyObject *self, PyObject *args) {
    PyObject *qkv, *out, *bias;
    Py_ssize_t bias_count, tokens, heads, head_dims, items, pair_start, pair_stop;
    float scale;
    if (!PyArg_ParseTuple(args, "OOOnfnnnnnn", &qkv, &out, &bias, &bias_count, &scale, &items, &tokens, &heads,
                          &head_dims, &pair_start, &pair_stop))
        return NULL;
    if (tokens != 64 || head_dims <= 0 || head_dims > 32 || head_dims % 8) {
        PyErr_Format(PyExc_ValueError, "attention kernel: needs 64 tokens and a head width of 8, 16, 24 or 32, got %zd and %zd",
                     tokens, head_dims);
        return NULL;
    }
    if (items < 0 || heads <= 0 || pair_start < 0 || pair_stop < pair_start || pair_stop > items * heads ||
        (bias != Py_None && bias_count <= 0)) {
        PyErr_SetString(PyExc_ValueError, "bad attention shape or pair range");
        return NULL;
    }
    const Py_ssize_t per_item = tokens * heads * head_dims;
    Buffer b[3] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(qkv, &b[0], 0, 3 * items * per_item, "qkv") &&
             get_buffer(out, &b[1], 1, items * per_item, "out") &&
             get_buffer(bias, &b[2], 0, bias_count * tokens * tokens, "bias");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS attention_pairs(data(&b[0]), data(&b[1]), data(&b[2]), bias_count, scale, heads,
                                               head_dims, pair_start, pair_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu", py_gelu, METH_VARARGS, "gelu(src, dst, bias|None, cols, row_start, row_stop)"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(src, dst, scale, add|None, add_rows, cols, row_start, row_stop)"},
    {"layer_norm", py_layer_norm, METH_VARARGS,
     "layer_norm(src, residual|None, sum_dst|None, dst, weight|None, bias|None, eps, cols, row_start, row_stop)"},
    {"attention", py_attention, METH_VARARGS,
     "attention(qkv, out, bias|None, bias_count, scale, items, tokens, heads, head_dims, pair_start, pair_stop)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Fused float32 row kernels (see ops.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
