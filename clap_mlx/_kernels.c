/* Python bindings of the fused float32 kernels (_kernels_impl.h) for clap_mlx.ops: buffers
 * in, sizes checked, GIL released around the loops. The kernels come in one variant per
 * SIMD target (_kernels_simd.h); the fastest the CPU runs is active unless set_simd()
 * picks another (ops.py does for CLAP_MLX_SIMD; tests run every variant). Buffers come from
 * NumPy views of evaluated MLX arrays.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_kernels_simd.h"
#include "_kernels_team.h"

/* A pointer swap: a kernel call already running finishes on the variant it started with. */
static const struct kernel_table *active;

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

/* A C-contiguous buffer of `count` 4-byte values of `kind` ('f': float32, 'i': int32), or
 * none for None. */
static int get_typed_buffer(PyObject *obj, Buffer *buffer, int writable, Py_ssize_t count, char kind,
                            const char *name) {
    buffer->held = 0;
    if (obj == Py_None) return 1;
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &buffer->view, flags) < 0) return 0;
    buffer->held = 1;
    const char *format = buffer->view.format ? buffer->view.format : "B";
    const char last = format[strlen(format) - 1], *type = kind == 'f' ? "float32" : "int32";
    if (buffer->view.itemsize != 4 || (last != kind && !(kind == 'i' && last == 'l'))) { /* 'l': Windows' int32 */
        PyErr_Format(PyExc_TypeError, "%s: expected %s values, got buffer format '%s'", name, type, format);
        return 0;
    }
    if (buffer->view.len < count * 4) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd %s values", name, buffer->view.len, count,
                     type);
        return 0;
    }
    return 1;
}

static int get_buffer(PyObject *obj, Buffer *buffer, int writable, Py_ssize_t floats, const char *name) {
    return get_typed_buffer(obj, buffer, writable, floats, 'f', name);
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
        Py_BEGIN_ALLOW_THREADS active->gelu_rows(data(&b[0]), data(&b[1]), data(&b[2]), cols, row_start, row_stop);
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
        Py_BEGIN_ALLOW_THREADS active->softmax_rows(data(&b[0]), data(&b[1]), scale, data(&b[2]), add_rows, cols, row_start,
                                            row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 3);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_aff_blend(PyObject *self, PyObject *args) {
    PyObject *x, *residual, *local, *global, *out;
    Py_ssize_t item_rows, cols, row_start, row_stop;
    if (!PyArg_ParseTuple(args, "OOOOnnOnn", &x, &residual, &local, &global, &item_rows, &cols, &out, &row_start,
                          &row_stop))
        return NULL;
    if (!check_rows(cols, row_start, row_stop)) return NULL;
    if (item_rows <= 0) {
        PyErr_SetString(PyExc_ValueError, "item_rows must be positive");
        return NULL;
    }
    const Py_ssize_t size = row_stop * cols, items = (row_stop + item_rows - 1) / item_rows;
    Buffer b[5] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(x, &b[0], 0, size, "x") && get_buffer(residual, &b[1], 0, size, "residual") &&
             get_buffer(local, &b[2], 0, size, "local") && get_buffer(global, &b[3], 0, items * cols, "global") &&
             get_buffer(out, &b[4], 1, size, "out");
    if (ok && !(data(&b[0]) && data(&b[1]) && data(&b[2]) && data(&b[3]) && data(&b[4]))) {
        PyErr_SetString(PyExc_TypeError, "aff_blend: every buffer is required, not None");
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS active->aff_blend_rows(data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), item_rows, cols,
                                                      data(&b[4]), row_start, row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 5);
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
        Py_BEGIN_ALLOW_THREADS active->layer_norm_rows(data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), data(&b[4]),
                                               data(&b[5]), eps, cols, row_start, row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 6);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The split bindings' optional last argument `unit`: 0 runs the range on the calling
 * thread; more splits it into units of that many rows (pairs) shared with the helper team. */
static int check_unit(Py_ssize_t unit) {
    if (unit < 0) {
        PyErr_Format(PyExc_ValueError, "unit must be >= 0, got %zd", unit);
        return 0;
    }
    return 1;
}

struct attention_job {
    const struct kernel_table *table;
    const float *qkv, *pad, *bias;
    float *out;
    const int32_t *windows;
    ptrdiff_t window_count, tokens, bias_count, heads, head_dims;
    float scale;
};

static int attention_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct attention_job *j = ctx;
    j->table->attention_pairs(j->qkv, j->out, j->windows, j->window_count, j->tokens, j->pad, j->bias, j->bias_count,
                              j->scale, j->heads, j->head_dims, start, stop);
    return 1;
}

static PyObject *py_attention(PyObject *self, PyObject *args) {
    PyObject *qkv, *out, *windows, *pad, *bias;
    Py_ssize_t window_count, tokens, bias_count, items, heads, head_dims, pair_start, pair_stop, unit = 0;
    float scale;
    if (!PyArg_ParseTuple(args, "OOOnnOOnfnnnnn|n", &qkv, &out, &windows, &window_count, &tokens, &pad, &bias,
                          &bias_count, &scale, &items, &heads, &head_dims, &pair_start, &pair_stop, &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (head_dims <= 0 || head_dims > 32 || head_dims % 8) {
        PyErr_Format(PyExc_ValueError, "attention kernel: needs a head width of 8, 16, 24 or 32, got %zd", head_dims);
        return NULL;
    }
    if (window_count <= 0 || tokens <= 0 || items < 0 || items % window_count || heads <= 0 || pair_start < 0 ||
        pair_stop < pair_start || pair_stop > items * heads || (bias != Py_None && bias_count <= 0)) {
        PyErr_SetString(PyExc_ValueError, "bad attention shape or pair range");
        return NULL;
    }
    const Py_ssize_t dims = heads * head_dims, batch_tokens = items / window_count * tokens;
    Buffer b[5] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(qkv, &b[0], 0, 3 * batch_tokens * dims, "qkv") &&
             get_buffer(out, &b[1], 1, batch_tokens * dims, "out") &&
             get_typed_buffer(windows, &b[2], 0, window_count * 64, 'i', "windows") &&
             get_buffer(pad, &b[3], 0, 3 * dims, "pad") && get_buffer(bias, &b[4], 0, bias_count * 64 * 64, "bias");
    if (ok && !b[2].held) {
        PyErr_SetString(PyExc_TypeError, "windows: expected int32 token indices, got None");
        ok = 0;
    }
    const int32_t *rows = ok ? (const int32_t *)b[2].view.buf : NULL;
    for (Py_ssize_t k = 0; ok && k < window_count * 64; k++) { /* the kernel indexes memory with them */
        if (rows[k] < -1 || rows[k] >= tokens || (rows[k] < 0 && !b[3].held)) {
            PyErr_Format(PyExc_ValueError, "windows: token %d is not in [0, %zd) (or -1 with a pad row)", rows[k],
                         tokens);
            ok = 0;
        }
    }
    if (ok) {
        struct attention_job job = {active, data(&b[0]), data(&b[3]), data(&b[4]), data(&b[1]), rows, window_count,
                                    tokens, bias_count, heads, head_dims, scale};
        Py_BEGIN_ALLOW_THREADS team_run(attention_unit, &job, pair_start, pair_stop, unit);
        Py_END_ALLOW_THREADS
    }
    release(b, 5);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

struct linear_job {
    const struct kernel_table *table;
    const float *x, *w, *bias;
    float *y;
    ptrdiff_t rows, in_dims, out_dims;
};

static int linear_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct linear_job *j = ctx;
    j->table->linear_cols(j->x, j->w, j->bias, j->y, j->rows, j->in_dims, j->out_dims, start, stop);
    return 1;
}

static PyObject *py_linear(PyObject *self, PyObject *args) {
    PyObject *x, *w, *bias, *y;
    Py_ssize_t rows, in_dims, out_dims, col_start, col_stop, unit = 0;
    if (!PyArg_ParseTuple(args, "OOOOnnnnn|n", &x, &w, &bias, &y, &rows, &in_dims, &out_dims, &col_start, &col_stop,
                          &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (rows < 0 || in_dims <= 0 || out_dims <= 0 || col_start < 0 || col_stop < col_start || col_stop > out_dims) {
        PyErr_SetString(PyExc_ValueError, "bad linear shape or column range");
        return NULL;
    }
    Buffer b[4] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(x, &b[0], 0, rows * in_dims, "x") && get_buffer(w, &b[1], 0, out_dims * in_dims, "w") &&
             get_buffer(bias, &b[2], 0, out_dims, "bias") && get_buffer(y, &b[3], 1, rows * out_dims, "y");
    if (ok) {
        struct linear_job job = {active, data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), rows, in_dims, out_dims};
        Py_BEGIN_ALLOW_THREADS team_run(linear_unit, &job, col_start, col_stop, unit);
        Py_END_ALLOW_THREADS
    }
    release(b, 4);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t panel_floats(Py_ssize_t out_dims, Py_ssize_t in_dims) {
    return (out_dims + DENSE_PANEL_COLS - 1) / DENSE_PANEL_COLS * DENSE_PANEL_COLS * in_dims;
}

static int check_row_range(Py_ssize_t rows, Py_ssize_t row_start, Py_ssize_t row_stop) {
    if (row_start < 0 || row_stop < row_start || row_stop > rows) {
        PyErr_Format(PyExc_ValueError, "bad row range [%zd, %zd) of %zd rows", row_start, row_stop, rows);
        return 0;
    }
    return 1;
}

struct dense_job {
    const struct kernel_table *table;
    const float *x, *panels, *bias;
    float *y;
    ptrdiff_t in_dims, out_dims;
    int flags;
};

static int dense_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct dense_job *j = ctx;
    j->table->dense_rows(j->x, j->in_dims, j->panels, j->bias, j->y, j->out_dims, j->in_dims, j->out_dims, j->flags,
                         start, stop);
    return 1;
}

static PyObject *py_dense(PyObject *self, PyObject *args) {
    PyObject *x, *panels, *bias, *y;
    Py_ssize_t rows, in_dims, out_dims, row_start, row_stop, unit = 0;
    int flags;
    if (!PyArg_ParseTuple(args, "OOOOnnninn|n", &x, &panels, &bias, &y, &rows, &in_dims, &out_dims, &flags, &row_start,
                          &row_stop, &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (in_dims <= 0 || out_dims <= 0 || flags < 0 || flags > 3) {
        PyErr_SetString(PyExc_ValueError, "bad dense shape or flags");
        return NULL;
    }
    if (!check_row_range(rows, row_start, row_stop)) return NULL;
    Buffer b[4] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(x, &b[0], 0, rows * in_dims, "x") &&
             get_buffer(panels, &b[1], 0, panel_floats(out_dims, in_dims), "panels") &&
             get_buffer(bias, &b[2], 0, out_dims, "bias") && get_buffer(y, &b[3], 1, rows * out_dims, "y");
    if (ok && !b[1].held) {
        PyErr_SetString(PyExc_TypeError, "panels: expected float32 packed weights, got None");
        ok = 0;
    }
    if (ok) {
        struct dense_job job = {active, data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), in_dims, out_dims, flags};
        Py_BEGIN_ALLOW_THREADS team_run(dense_unit, &job, row_start, row_stop, unit);
        Py_END_ALLOW_THREADS
    }
    release(b, 4);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* A Swin block's 12 parameters (see struct swin_weights; the 4 packed weights required). */
#define SWIN_PARAMS 12
static const char *const swin_names[SWIN_PARAMS] = {
    "norm_before_w", "norm_before_b", "qkv_w", "qkv_b", "proj_w", "proj_b",
    "norm_after_w",  "norm_after_b",  "fc1_w", "fc1_b", "fc2_w",  "fc2_b",
};

static int get_swin_weights(PyObject *params, float eps, Py_ssize_t dims, Py_ssize_t hidden, Buffer *b,
                            struct swin_weights *w) {
    if (!PyTuple_Check(params) || PyTuple_GET_SIZE(params) != SWIN_PARAMS) {
        PyErr_SetString(PyExc_TypeError, "swin weights: expected a tuple of 12 buffers");
        return 0;
    }
    if (dims <= 0 || hidden <= 0) {
        PyErr_SetString(PyExc_ValueError, "swin weights: bad dims or hidden width");
        return 0;
    }
    const Py_ssize_t sizes[SWIN_PARAMS] = {
        dims, dims, panel_floats(3 * dims, dims), 3 * dims, panel_floats(dims, dims), dims,
        dims, dims, panel_floats(hidden, dims),   hidden,   panel_floats(dims, hidden), dims,
    };
    const float *p[SWIN_PARAMS];
    for (int i = 0; i < SWIN_PARAMS; i++) {
        if (!get_buffer(PyTuple_GET_ITEM(params, i), &b[i], 0, sizes[i], swin_names[i])) return 0;
        if (!b[i].held && (i == 2 || i == 4 || i == 8 || i == 10)) {
            PyErr_Format(PyExc_TypeError, "%s: expected float32 packed weights, got None", swin_names[i]);
            return 0;
        }
        p[i] = data(&b[i]);
    }
    *w = (struct swin_weights){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                               eps, dims, hidden};
    return 1;
}

struct norm_dense_job {
    const struct kernel_table *table;
    const float *x, *norm_w, *norm_b, *panels, *bias;
    float *y;
    ptrdiff_t in_dims, out_dims;
    float eps;
};

static int norm_dense_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct norm_dense_job *j = ctx;
    return j->table->norm_dense_rows(j->x, j->in_dims, j->norm_w, j->norm_b, j->eps, j->panels, j->bias, j->y,
                                     j->out_dims, start, stop);
}

static PyObject *py_norm_dense(PyObject *self, PyObject *args) {
    PyObject *x, *norm_w, *norm_b, *panels, *bias, *y;
    float eps;
    Py_ssize_t rows, in_dims, out_dims, row_start, row_stop, unit = 0;
    if (!PyArg_ParseTuple(args, "OOOfOOOnnnnn|n", &x, &norm_w, &norm_b, &eps, &panels, &bias, &y, &rows, &in_dims,
                          &out_dims, &row_start, &row_stop, &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (in_dims <= 0 || out_dims <= 0) {
        PyErr_SetString(PyExc_ValueError, "bad norm_dense shape");
        return NULL;
    }
    if (!check_row_range(rows, row_start, row_stop)) return NULL;
    Buffer b[6] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(x, &b[0], 0, rows * in_dims, "x") && get_buffer(norm_w, &b[1], 0, in_dims, "norm_w") &&
             get_buffer(norm_b, &b[2], 0, in_dims, "norm_b") &&
             get_buffer(panels, &b[3], 0, panel_floats(out_dims, in_dims), "panels") &&
             get_buffer(bias, &b[4], 0, out_dims, "bias") && get_buffer(y, &b[5], 1, rows * out_dims, "y");
    if (ok && (!b[0].held || !b[3].held || !b[5].held)) {
        PyErr_SetString(PyExc_TypeError, "norm_dense: x, panels and y must be float32 buffers, not None");
        ok = 0;
    }
    if (ok) {
        struct norm_dense_job job = {active,      data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]),
                                     data(&b[4]), data(&b[5]), in_dims,     out_dims,    eps};
        Py_BEGIN_ALLOW_THREADS ok = team_run(norm_dense_unit, &job, row_start, row_stop, unit);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_NoMemory();
    }
    release(b, 6);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

struct swin_mlp_job {
    const struct kernel_table *table;
    const struct swin_weights *w;
    float *x;
    const float *attn;
};

static int swin_mlp_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct swin_mlp_job *j = ctx;
    return j->table->swin_mlp_rows(j->w, j->x, j->attn, start, stop);
}

static PyObject *py_swin_mlp(PyObject *self, PyObject *args) {
    PyObject *params, *x, *attn;
    float eps;
    Py_ssize_t dims, hidden, rows, row_start, row_stop, unit = 0;
    if (!PyArg_ParseTuple(args, "OfnnOOnnn|n", &params, &eps, &dims, &hidden, &x, &attn, &rows, &row_start, &row_stop,
                          &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (!check_row_range(rows, row_start, row_stop)) return NULL;
    Buffer b[SWIN_PARAMS + 2] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    struct swin_weights w;
    int ok = get_swin_weights(params, eps, dims, hidden, b, &w) &&
             get_buffer(x, &b[SWIN_PARAMS], 1, rows * dims, "x") &&
             get_buffer(attn, &b[SWIN_PARAMS + 1], 0, rows * dims, "attn");
    if (ok && (!b[SWIN_PARAMS].held || !b[SWIN_PARAMS + 1].held)) {
        PyErr_SetString(PyExc_TypeError, "swin_mlp: x and attn must be float32 buffers, not None");
        ok = 0;
    }
    if (ok) {
        struct swin_mlp_job job = {active, &w, data(&b[SWIN_PARAMS]), data(&b[SWIN_PARAMS + 1])};
        Py_BEGIN_ALLOW_THREADS ok = team_run(swin_mlp_unit, &job, row_start, row_stop, unit);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_NoMemory();
    }
    release(b, SWIN_PARAMS + 2);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

struct mel_image_job {
    const struct kernel_table *table;
    const float *src, *norm, *tap_weights;
    const int32_t *taps;
    float *dst;
    ptrdiff_t frames, mels, ratio, width;
};

static int mel_image_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    const struct mel_image_job *j = ctx;
    return j->table->mel_image_planes(j->src, j->frames, j->mels, j->norm, j->taps, j->tap_weights, j->ratio, j->width,
                                      j->dst, start, stop);
}

static PyObject *py_mel_image(PyObject *self, PyObject *args) {
    PyObject *src, *norm, *taps, *tap_weights, *dst;
    Py_ssize_t planes, frames, mels, ratio, width, plane_start, plane_stop, unit = 0;
    if (!PyArg_ParseTuple(args, "OOOOOnnnnnnn|n", &src, &norm, &taps, &tap_weights, &dst, &planes, &frames, &mels,
                          &ratio, &width, &plane_start, &plane_stop, &unit))
        return NULL;
    if (!check_unit(unit)) return NULL;
    if (frames <= 0 || mels <= 0 || mels > MEL_IMAGE_MAX_MELS || ratio <= 0 || width <= 0) {
        PyErr_Format(PyExc_ValueError, "mel_image: bad shape (frames %zd, mels %zd of at most %d, ratio %zd, width %zd)",
                     frames, mels, MEL_IMAGE_MAX_MELS, ratio, width);
        return NULL;
    }
    if ((taps == Py_None) != (tap_weights == Py_None) || (taps == Py_None && frames != ratio * width)) {
        PyErr_SetString(PyExc_ValueError, "mel_image: taps and tap_weights go together, and without them the planes "
                                          "need ratio * width frames");
        return NULL;
    }
    if (!check_row_range(planes, plane_start, plane_stop)) return NULL;
    const Py_ssize_t taps_count = 4 * ratio * width;
    Buffer b[5] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(src, &b[0], 0, planes * frames * mels, "src") && get_buffer(norm, &b[1], 0, 4 * mels, "norm") &&
             get_typed_buffer(taps, &b[2], 0, taps_count, 'i', "taps") &&
             get_buffer(tap_weights, &b[3], 0, taps_count, "tap_weights") &&
             get_buffer(dst, &b[4], 1, planes * ratio * mels * width, "dst");
    if (ok && !(b[0].held && b[1].held && b[4].held)) {
        PyErr_SetString(PyExc_TypeError, "mel_image: src, norm and dst are required, not None");
        ok = 0;
    }
    const int32_t *frame = ok && b[2].held ? (const int32_t *)b[2].view.buf : NULL;
    for (Py_ssize_t k = 0; frame && k < taps_count; k++) { /* the kernel indexes memory with them */
        if (frame[k] < 0 || frame[k] >= frames) {
            PyErr_Format(PyExc_ValueError, "taps: frame %d is not in [0, %zd)", frame[k], frames);
            ok = 0;
            break;
        }
    }
    if (ok) {
        struct mel_image_job job = {active, data(&b[0]), data(&b[1]), data(&b[3]), frame, data(&b[4]), frames, mels,
                                    ratio, width};
        Py_BEGIN_ALLOW_THREADS ok = team_run(mel_image_unit, &job, plane_start, plane_stop, unit);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_NoMemory();
    }
    release(b, 5);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_team(PyObject *self, PyObject *args) {
    int helpers;
    long spin_us;
    if (!PyArg_ParseTuple(args, "il", &helpers, &spin_us)) return NULL;
    if (helpers < 0 || spin_us < 0) {
        PyErr_SetString(PyExc_ValueError, "team: helpers and spin_us must be >= 0");
        return NULL;
    }
    team_set_spin_us(spin_us);
    int in_use;
    Py_BEGIN_ALLOW_THREADS in_use = team_set_helpers(helpers); /* waits out a job in progress */
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(in_use);
}

static PyObject *py_simd_variants(PyObject *self, PyObject *args) {
    const struct kernel_table *runnable[3];
    int n = kernels_runnable(runnable, 3);
    PyObject *names = PyTuple_New(n);
    if (!names) return NULL;
    for (int k = 0; k < n; k++) {
        PyObject *name = PyUnicode_FromString(runnable[k]->name);
        if (!name) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, k, name);
    }
    return names;
}

static PyObject *py_simd(PyObject *self, PyObject *args) { return PyUnicode_FromString(active->name); }

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    const struct kernel_table *found = kernels_find(name);
    if (!found) {
        PyErr_Format(PyExc_ValueError, "SIMD variant '%s' is unknown or not supported by this CPU (this build: %s)",
                     name, kernels_all_names);
        return NULL;
    }
    active = found;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu", py_gelu, METH_VARARGS, "gelu(src, dst, bias|None, cols, row_start, row_stop)"},
    {"aff_blend", py_aff_blend, METH_VARARGS,
     "aff_blend(x, residual, local, global, item_rows, cols, out, row_start, row_stop): out = 2 (residual + "
     "sigmoid(local + global[row / item_rows]) (x - residual))"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(src, dst, scale, add|None, add_rows, cols, row_start, row_stop)"},
    {"layer_norm", py_layer_norm, METH_VARARGS,
     "layer_norm(src, residual|None, sum_dst|None, dst, weight|None, bias|None, eps, cols, row_start, row_stop)"},
    {"attention", py_attention, METH_VARARGS,
     "attention(qkv, out, windows, window_count, tokens, pad|None, bias|None, bias_count, scale, items, heads, "
     "head_dims, pair_start, pair_stop, unit=0)"},
    {"linear", py_linear, METH_VARARGS,
     "linear(x, w, bias|None, y, rows, in_dims, out_dims, col_start, col_stop, unit=0): y = x w^T + bias, columns of a "
     "range, split in units of `unit` columns across the helper team (0: the caller alone)"},
    {"dense", py_dense, METH_VARARGS,
     "dense(x, panels, bias|None, y, rows, in_dims, out_dims, flags, row_start, row_stop, unit=0): y (+)= x W^T + bias "
     "(flags: 1 GELU, 2 accumulate), W packed in panels of 16 columns"},
    {"norm_dense", py_norm_dense, METH_VARARGS,
     "norm_dense(x, norm_w|None, norm_b|None, eps, panels, bias|None, y, rows, in_dims, out_dims, row_start, "
     "row_stop, unit=0): y = LayerNorm(x) W^T + bias, W packed as for dense"},
    {"swin_mlp", py_swin_mlp, METH_VARARGS,
     "swin_mlp(weights, eps, dims, hidden, x, attn, rows, row_start, row_stop, unit=0): in place x += attn Wo^T "
     "+ bo, x += MLP(LN_after(x))"},
    {"mel_image", py_mel_image, METH_VARARGS,
     "mel_image(src, norm, taps|None, tap_weights|None, dst, planes, frames, mels, ratio, width, plane_start, "
     "plane_stop, unit=0): the audio tower's batch norm (norm: [4, mels] mean, sqrt(var + eps), weight, bias) and "
     "mel image, src [planes, frames, mels] -> dst [planes, ratio * mels, width]"},
    {"team", py_team, METH_VARARGS,
     "team(helpers, spin_us) -> helpers in use: the threads that share a split kernel's units (`unit` > 0) with "
     "its caller, and how long they spin between jobs before sleeping"},
    {"simd_variants", py_simd_variants, METH_NOARGS, "simd_variants() -> the variants this CPU runs, fastest first"},
    {"simd", py_simd, METH_NOARGS, "simd() -> the active variant's name"},
    {"set_simd", py_set_simd, METH_VARARGS, "set_simd(name): make a variant from simd_variants() the active one"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Fused float32 row kernels (see ops.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    kernels_runnable(&active, 1);
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "DENSE_PANEL_COLS", DENSE_PANEL_COLS) < 0 ||
              PyModule_AddIntConstant(m, "MEL_IMAGE_MAX_MELS", MEL_IMAGE_MAX_MELS) < 0))
        Py_CLEAR(m);
    return m;
}
