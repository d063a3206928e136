/* Python bindings of the fused float32 kernels (_kernels_impl.h) for clap_mlx.ops, the module
 * itself and its row, attention and few-rows linear kernels (the model kernels' bindings:
 * _kernels_model.c): buffers in, sizes checked, GIL released around the loops. The kernels come in one variant per
 * SIMD target (_kernels_simd.h); the fastest the CPU runs is active unless set_simd()
 * picks another (ops.py does for CLAP_MLX_SIMD; tests run every variant). Buffers come from
 * NumPy views of evaluated MLX arrays.
 */
#include "_kernels_py.h"

const struct kernel_table *kernels_active;

static PyObject *py_gelu(PyObject *self, PyObject *args) {
    PyObject *src, *dst, *bias;
    Py_ssize_t cols, row_start, row_stop;
    if (!PyArg_ParseTuple(args, "OOOnnn", &src, &dst, &bias, &cols, &row_start, &row_stop)) return NULL;
    if (!check_rows(cols, row_start, row_stop)) return NULL;
    Buffer b[3] = {0}; /* zeroed: release() runs even when an earlier buffer failed */
    int ok = get_buffer(src, &b[0], 0, row_stop * cols, "src") && get_buffer(dst, &b[1], 1, row_stop * cols, "dst") &&
             get_buffer(bias, &b[2], 0, cols, "bias");
    if (ok) {
        Py_BEGIN_ALLOW_THREADS kernels_active->gelu_rows(data(&b[0]), data(&b[1]), data(&b[2]), cols, row_start, row_stop);
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
        Py_BEGIN_ALLOW_THREADS kernels_active->softmax_rows(data(&b[0]), data(&b[1]), scale, data(&b[2]), add_rows, cols, row_start,
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
        Py_BEGIN_ALLOW_THREADS kernels_active->aff_blend_rows(data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), item_rows, cols,
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
        Py_BEGIN_ALLOW_THREADS kernels_active->layer_norm_rows(data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), data(&b[4]),
                                               data(&b[5]), eps, cols, row_start, row_stop);
        Py_END_ALLOW_THREADS
    }
    release(b, 6);
    if (!ok) return NULL;
    Py_RETURN_NONE;
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
    struct attention_job job = {kernels_active, data(&b[0]), data(&b[3]), data(&b[4]), data(&b[1]), rows, window_count,
                                tokens, bias_count, heads, head_dims, scale};
    return run_on_team(ok, attention_unit, &job, pair_start, pair_stop, unit, b, 5);
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
    struct linear_job job = {kernels_active, data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), rows, in_dims, out_dims};
    return run_on_team(ok, linear_unit, &job, col_start, col_stop, unit, b, 4);
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

static PyObject *py_simd(PyObject *self, PyObject *args) { return PyUnicode_FromString(kernels_active->name); }

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    const struct kernel_table *found = kernels_find(name);
    if (!found) {
        PyErr_Format(PyExc_ValueError, "SIMD variant '%s' is unknown or not supported by this CPU (this build: %s)",
                     name, kernels_all_names);
        return NULL;
    }
    kernels_active = found;
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
    {"team", py_team, METH_VARARGS,
     "team(helpers, spin_us) -> helpers in use: the threads that share a split kernel's units (`unit` > 0) with "
     "its caller, and how long they spin between jobs before sleeping"},
    {"simd_variants", py_simd_variants, METH_NOARGS, "simd_variants() -> the variants this CPU runs, fastest first"},
    {"simd", py_simd, METH_NOARGS, "simd() -> the active variant's name"},
    {"set_simd", py_set_simd, METH_VARARGS, "set_simd(name): make a variant from simd_variants() the active one"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Fused float32 kernels (see ops.py, swin_fused.py, front_fused.py).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    kernels_runnable(&kernels_active, 1);
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddFunctions(m, kernels_model_methods) < 0 ||
              PyModule_AddIntConstant(m, "DENSE_PANEL_COLS", DENSE_PANEL_COLS) < 0 ||
              PyModule_AddIntConstant(m, "MEL_IMAGE_MAX_MELS", MEL_IMAGE_MAX_MELS) < 0))
        Py_CLEAR(m);
    return m;
}
