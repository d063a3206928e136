/* What the Python bindings of the kernels share (_kernels.c, _kernels_model.c): buffers from
 * NumPy arrays, argument checks, and the active SIMD variant. */
#ifndef CLAP_KERNELS_PY_H
#define CLAP_KERNELS_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_kernels_simd.h"
#include "_kernels_team.h"

/* The variant the bindings call (_kernels.c sets it). A pointer swap: a kernel call already
 * running finishes on the variant it started with. */
extern const struct kernel_table *kernels_active;

typedef struct {
    Py_buffer view;
    int held;
} Buffer;

/* A C-contiguous buffer of `count` 4-byte values of `kind` ('f': float32, 'i': int32), or
 * none for None. */
static inline int get_typed_buffer(PyObject *obj, Buffer *buffer, int writable, Py_ssize_t count, char kind,
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

static inline int get_buffer(PyObject *obj, Buffer *buffer, int writable, Py_ssize_t floats, const char *name) {
    return get_typed_buffer(obj, buffer, writable, floats, 'f', name);
}

static inline void release(Buffer *buffers, int count) {
    for (int k = 0; k < count; k++)
        if (buffers[k].held) PyBuffer_Release(&buffers[k].view);
}

static inline float *data(Buffer *buffer) { return buffer->held ? (float *)buffer->view.buf : NULL; }

static inline int check_rows(Py_ssize_t cols, Py_ssize_t row_start, Py_ssize_t row_stop) {
    if (cols <= 0 || row_start < 0 || row_stop < row_start) {
        PyErr_SetString(PyExc_ValueError, "bad row range or column count");
        return 0;
    }
    return 1;
}

/* The split bindings' optional last argument `unit`: 0 runs the range on the calling
 * thread; more splits it into units of that many rows (pairs) shared with the helper team. */
static inline int check_unit(Py_ssize_t unit) {
    if (unit < 0) {
        PyErr_Format(PyExc_ValueError, "unit must be >= 0, got %zd", unit);
        return 0;
    }
    return 1;
}

static inline int check_row_range(Py_ssize_t rows, Py_ssize_t row_start, Py_ssize_t row_stop) {
    if (row_start < 0 || row_stop < row_start || row_stop > rows) {
        PyErr_Format(PyExc_ValueError, "bad row range [%zd, %zd) of %zd rows", row_start, row_stop, rows);
        return 0;
    }
    return 1;
}

/* The end of a binding whose job the helper team splits: runs `work` over [start, stop) in
 * units of `unit` if every check passed (`ok`; a unit out of memory raises MemoryError),
 * releases the buffers, and returns None, or NULL with the error set. */
static inline PyObject *run_on_team(int ok, team_work work, void *job, ptrdiff_t start, ptrdiff_t stop, ptrdiff_t unit,
                                    Buffer *buffers, int count) {
    if (ok) {
        Py_BEGIN_ALLOW_THREADS ok = team_run(work, job, start, stop, unit);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_NoMemory();
    }
    release(buffers, count);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The model kernels' bindings (_kernels_model.c), added to the module by _kernels.c. */
extern PyMethodDef kernels_model_methods[];

#endif
