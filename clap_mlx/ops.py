"""Elementwise hot ops used by both towers.

MLX's CPU backend evaluates transcendental functions (exp, erf, tanh) one scalar at a
time on one thread: 20-130x slower than torch. NumPy's ufuncs are SIMD-vectorised and
release the GIL, and an evaluated MLX array is a zero-copy NumPy view, so each op here
evaluates its input, computes float32 results in NumPy over cache-sized blocks of rows
split across the cores, and copies the result back into one new MLX array.

These ops are for inference: they force evaluation and cannot be traced by `mx.grad`
or `mx.compile`. Other dtypes than float32 take MLX's own (slow) path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# A block plus two scratch blocks (3 x 256 KiB) stays in a core's L2 cache, so the
# multi-pass kernels below run from cache instead of memory.
BLOCK_ELEMENTS = 1 << 16
# Below this many elements the hand-off to a second thread costs more than it saves once
# other processes compete for the cores (measured: a 0.4 M-element layer_norm took 5x
# longer split than on one thread under load; at 1 M+ elements the split never lost).
PARALLEL_MIN_ELEMENTS = 1 << 19

_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = ThreadPoolExecutor(_WORKERS - 1, thread_name_prefix="clap-ops") if _WORKERS > 1 else None

# Kernel(x, out, scratch_a, scratch_b) on a contiguous float32 [rows, D] block.
Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def _run_blocks(kernel: Kernel, x: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    rows = max(1, BLOCK_ELEMENTS // x.shape[1])
    scratch_a = np.empty((min(rows, stop - start), x.shape[1]), np.float32)
    scratch_b = np.empty_like(scratch_a)
    # Overflow to inf and underflow to 0 are the intended float32 results here.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for i in range(start, stop, rows):
            j = min(i + rows, stop)
            kernel(x[i:j], out[i:j], scratch_a[: j - i], scratch_b[: j - i])


def _apply_rows(kernel: Kernel, x: mx.array) -> mx.array:
    """Run `kernel` over the rows (last axis) of float32 `x`, on all cores when large."""
    mx.eval(x)
    view = np.asarray(x)  # zero-copy
    if not view.flags.c_contiguous:
        view = np.ascontiguousarray(view)
    rows = view.reshape(-1, view.shape[-1]) if view.ndim else view.reshape(1, 1)
    out = np.empty_like(rows)
    parts = _WORKERS if _pool is not None and view.size >= PARALLEL_MIN_ELEMENTS else 1
    parts = min(parts, rows.shape[0])
    bounds = [rows.shape[0] * k // parts for k in range(parts + 1)]
    futures = [
        _pool.submit(_run_blocks, kernel, rows, out, bounds[k], bounds[k + 1])
        for k in range(1, parts)
    ]
    _run_blocks(kernel, rows, out, bounds[0], bounds[1])
    for future in futures:
        future.result()
    return mx.array(out.reshape(view.shape))


def _numpy_path(x: mx.array) -> bool:
    return x.dtype == mx.float32 and x.size > 0


# erfc(z) ~= t * (a1 + a2 t + ... + a5 t^4) * exp(-z^2), t = 1 / (1 + p z), z >= 0, with
# absolute error <= 1.5e-7 (Abramowitz & Stegun 7.1.26). Halved, it is Phi(-|x|) for
# z = |x| / sqrt(2), and t = k / (k + |x|) with k = sqrt(2) / p.
_ERFC_K = np.float32(math.sqrt(2.0) / 0.3275911)
_HALF_ERFC_POLY = tuple(
    np.float32(0.5 * a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)
# Phi(-15) * 15 underflows float32, so clamping |x| there keeps inf inputs finite in the
# tail term without changing any result.
_GELU_TAIL_CLAMP = np.float32(15.0)


def _gelu_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    np.abs(x, out=a)
    np.minimum(a, _GELU_TAIL_CLAMP, out=a)
    np.add(a, _ERFC_K, out=b)
    np.divide(_ERFC_K, b, out=b)
    np.multiply(b, _HALF_ERFC_POLY[-1], out=out)
    for coefficient in _HALF_ERFC_POLY[-2::-1]:
        out += coefficient
        out *= b
    np.square(a, out=b)
    b *= np.float32(-0.5)
    np.exp(b, out=b)
    out *= b
    out *= a  # |x| Phi(-|x|)
    # x Phi(x) = relu(x) - |x| Phi(-|x|) for either sign of x: no cancellation in the tail.
    np.maximum(x, np.float32(0.0), out=b)
    np.subtract(b, out, out=out)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as transformers' "gelu"; max abs error 2.5e-7 vs float64."""
    if not _numpy_path(x):
        return nn.gelu(x)
    return _apply_rows(_gelu_block, x)


# Row sums below this mean the block-wide max shift underflowed some row's exps.
_SOFTMAX_MIN_ROW_SUM = 1e-30


def _row_sums(x: np.ndarray) -> np.ndarray:
    # einsum's SIMD loop beats NumPy's per-row reduce on short rows, and unlike a BLAS
    # matrix-vector product it starts no BLAS threads next to this module's own.
    return np.einsum("ij->i", x)


def _softmax_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    # Shifting a whole block by its max is as exact as a per-row shift while no row sits
    # ~70 below it, and NumPy's per-row max over short rows is slow; check, else redo.
    block_max = x.max()
    np.subtract(x, block_max, out=out)
    np.exp(out, out=out)
    sums = _row_sums(out)
    if not (np.isfinite(block_max) and sums.min() > _SOFTMAX_MIN_ROW_SUM):
        np.subtract(x, x.max(axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        sums = _row_sums(out)
    out *= (np.float32(1.0) / sums)[:, None]


def softmax(x: mx.array, axis: int = -1) -> mx.array:
    """Softmax along `axis`; -inf entries get 0, an all -inf row gives NaN (as mx.softmax)."""
    if not _numpy_path(x):
        return mx.softmax(x, axis=axis, precise=True)
    last = x.ndim - 1
    if axis in (-1, last):
        return _apply_rows(_softmax_block, x)
    return mx.moveaxis(_apply_rows(_softmax_block, mx.moveaxis(x, axis, -1)), -1, axis)


def _layer_norm_kernel(weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> Kernel:
    def block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        inverse_d = np.float32(1.0 / x.shape[1])
        np.subtract(x, (_row_sums(x) * inverse_d)[:, None], out=out)
        variance = np.einsum("ij,ij->i", out, out) * inverse_d
        out *= (np.float32(1.0) / np.sqrt(variance + np.float32(eps)))[:, None]
        if weight is not None:
            out *= weight
        if bias is not None:
            out += bias

    return block


def _float32_vector(v: mx.array | None) -> np.ndarray | None:
    if v is None:
        return None
    v = v.astype(mx.float32)
    mx.eval(v)
    return np.asarray(v)


def layer_norm(x: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float) -> mx.array:
    """LayerNorm over the last axis (biased variance, as torch)."""
    if not _numpy_path(x):
        return mx.fast.layer_norm(x, weight, bias, eps)
    kernel = _layer_norm_kernel(_float32_vector(weight), _float32_vector(bias), eps)
    return _apply_rows(kernel, x)


def _tanh_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    np.tanh(x, out=out)


def tanh(x: mx.array) -> mx.array:
    if not _numpy_path(x):
        return mx.tanh(x)
    return _apply_rows(_tanh_block, x)


def _sigmoid_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    # 1 / (1 + exp(-x)): exp overflows to inf for x < -88 and gives exactly 0, not NaN.
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += np.float32(1.0)
    np.reciprocal(out, out=out)


def sigmoid(x: mx.array) -> mx.array:
    if not _numpy_path(x):
        return mx.sigmoid(x)
    return _apply_rows(_sigmoid_block, x)
