/* Python bindings of the audio tower's model kernels: the dense layers, the Swin block halves
 * (swin_fused.py) and the mel image (front_fused.py). Buffers come from NumPy views; sizes are
 * checked before the GIL is released around the loops. */
#include "_kernels_py.h"

static Py_ssize_t panel_floats(Py_ssize_t out_dims, Py_ssize_t in_dims) {
    return (out_dims + DENSE_PANEL_COLS - 1) / DENSE_PANEL_COLS * DENSE_PANEL_COLS * in_dims;
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
    struct dense_job job = {kernels_active, data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]), in_dims, out_dims, flags};
    return run_on_team(ok, dense_unit, &job, row_start, row_stop, unit, b, 4);
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
    struct norm_dense_job job = {kernels_active, data(&b[0]), data(&b[1]), data(&b[2]), data(&b[3]),
                                 data(&b[4]),    data(&b[5]), in_dims,     out_dims,    eps};
    return run_on_team(ok, norm_dense_unit, &job, row_start, row_stop, unit, b, 6);
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
    struct swin_mlp_job job = {kernels_active, &w, data(&b[SWIN_PARAMS]), data(&b[SWIN_PARAMS + 1])};
    return run_on_team(ok, swin_mlp_unit, &job, row_start, row_stop, unit, b, SWIN_PARAMS + 2);
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
    struct mel_image_job job = {kernels_active, data(&b[0]), data(&b[1]), data(&b[3]), frame, data(&b[4]), frames, mels,
                                ratio, width};
    return run_on_team(ok, mel_image_unit, &job, plane_start, plane_stop, unit, b, 5);
}

PyMethodDef kernels_model_methods[] = {
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
    {NULL, NULL, 0, NULL},
};
