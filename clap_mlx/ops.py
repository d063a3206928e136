"""Elementwise hot ops used by both towers.

MLX's CPU backend evaluates transcendental functions (exp, erf, tanh) one scalar at a
time on one thread: 20-130x slower than torch. An evaluated MLX array is a zero-copy
NumPy view, so each op here evaluates its input and computes float32 results outside
MLX, over rows split across the cores:

* gelu, softmax, layer_norm and window attention run the fused C kernels of `_kernels.c`
  (one vectorised pass per row, bias / scale / residual adds folded in; attention per
  (window, head) inside L1) when the extension was built; else gelu, softmax and
  layer_norm run as multi-pass NumPy ufuncs over cache-sized blocks and attention as MLX
  matmuls around the NumPy softmax (1.2-5.6x slower than the kernels, 5-17x faster than
  MLX's own elementwise ops);
* tanh and sigmoid (a few hundred values per forward) always use NumPy.

`donate=True` lets an op write its result into its input's buffer (saves an allocation
and a copy): only for a temporary that nothing else holds, e.g. a fresh matmul output.

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

try:
    from . import _kernels
except ImportError:  # built without a C compiler: the NumPy path below still works
    _kernels = None

# A block plus two scratch blocks (3 x 256 KiB) stays in a core's L2 cache, so the
# multi-pass NumPy kernels below run from cache instead of memory.
BLOCK_ELEMENTS = 1 << 16
# Below this many elements the hand-off to a second thread costs more than it saves once
# other processes compete for the cores (measured: a 0.4 M-element layer_norm took 5x
# longer split than on one thread under load; at 1 M+ elements the split never lost).
PARALLEL_MIN_ELEMENTS = 1 << 19

_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = ThreadPoolExecutor(_WORKERS - 1, thread_name_prefix="clap-ops") if _WORKERS > 1 else None


def use_kernels() -> bool:
    """Whether the compiled kernels are in use (tests switch them off to cover both paths)."""
    return _kernels is not None


def _split_rows(work: Callable[[int, int], None], rows: int, size: int) -> None:
    """work(start, stop) over [0, rows), split across the cores when `size` elements is large."""
    parts = _WORKERS if _pool is not None and size >= PARALLEL_MIN_ELEMENTS else 1
    parts = max(1, min(parts, rows))
    bounds = [rows * k // parts for k in range(parts + 1)]
    futures = [_pool.submit(work, bounds[k], bounds[k + 1]) for k in range(1, parts)]
    work(bounds[0], bounds[1])
    for future in futures:
        future.result()


def _rows_view(x: mx.array) -> np.ndarray:
    """Zero-copy [rows, last axis] float32 view of evaluated `x` (a copy if it is strided)."""
    mx.eval(x)
    view = np.asarray(x)
    if not view.flags.c_contiguous:
        view = np.ascontiguousarray(view)
    return view.reshape(-1, view.shape[-1]) if view.ndim else view.reshape(1, 1)


def _float32_vector(v: mx.array | None) -> np.ndarray | None:
    if v is None:
        return None
    v = v.astype(mx.float32)
    mx.eval(v)
    return np.asarray(v)


def _numpy_path(x: mx.array) -> bool:
    return x.dtype == mx.float32 and x.size > 0


def _kernel_output(x: mx.array, rows: np.ndarray, donate: bool) -> tuple[mx.array, np.ndarray]:
    """The MLX array a kernel writes its result to, and its [rows, D] view: `x` itself when
    donated (and its view is its own buffer), else a new array."""
    if donate and np.may_share_memory(rows, np.asarray(x)):
        return x, rows
    out = np.empty_like(rows)
    return out, out


def _finish(result: mx.array | np.ndarray, shape: tuple[int, ...]) -> mx.array:
    if isinstance(result, np.ndarray):
        return mx.array(result.reshape(shape))
    return result


# ---- NumPy fallback kernels: Kernel(x, out, scratch_a, scratch_b) on a [rows, D] block ----

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
    """Run NumPy `kernel` over the rows (last axis) of float32 `x`, on all cores when large."""
    rows = _rows_view(x)
    out = np.empty_like(rows)
    _split_rows(lambda start, stop: _run_blocks(kernel, rows, out, start, stop), rows.shape[0], rows.size)
    return mx.array(out.reshape(x.shape))


# erfc(z) ~= t * (a1 + a2 t + ... + a5 t^4) * exp(-z^2), t = 1 / (1 + p z), z >= 0, with
# absolute error <= 1.5e-7 (Abramowitz & Stegun 7.1.26). Halved, it is Phi(-|x|) for
# z = |x| / sqrt(2), and t = k / (k + |x|) with k = sqrt(2) / p. _kernels.c uses the same.
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


def gelu(x: mx.array, bias: mx.array | None = None, *, donate: bool = False) -> mx.array:
    """Exact (erf) GELU of `x + bias`, as transformers' "gelu"; max abs error 2.5e-7 vs float64."""
    if not _numpy_path(x):
        return nn.gelu(x if bias is None else x + bias)
    if _kernels is None:
        return _apply_rows(_gelu_block, x if bias is None else x + bias)
    rows = _rows_view(x)
    result, out = _kernel_output(x, rows, donate)
    bias_vector = _float32_vector(bias)
    cols = rows.shape[1]
    _split_rows(lambda start, stop: _kernels.gelu(rows, out, bias_vector, cols, start, stop), rows.shape[0], rows.size)
    return _finish(result, x.shape)


def linear_gelu(linear: nn.Linear, x: mx.array) -> mx.array:
    """gelu(linear(x)) with the bias add folded into the GELU pass."""
    return gelu(x @ linear.weight.T, linear.get("bias"), donate=True)


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


def softmax(
    x: mx.array, axis: int = -1, *, scale: float = 1.0, add: mx.array | None = None, donate: bool = False
) -> mx.array:
    """softmax(scale * x + add) along `axis`; -inf entries get 0, an all -inf row gives NaN
    (as mx.softmax). `add` (last axis only) has the shape of x's trailing axes and is
    broadcast over the leading ones, e.g. an attention bias over the batch."""
    last = x.ndim - 1
    if axis not in (-1, last):
        if add is not None:
            raise ValueError("softmax: `add` is only supported along the last axis")
        moved = mx.moveaxis(x * scale if scale != 1.0 else x, axis, -1)
        return mx.moveaxis(softmax(moved), -1, axis)
    if add is not None and tuple(x.shape[x.ndim - add.ndim :]) != tuple(add.shape):
        raise ValueError(f"softmax: add {list(add.shape)} is not the trailing shape of x {list(x.shape)}")
    if not _numpy_path(x) or _kernels is None:
        scores = x * scale if scale != 1.0 else x
        scores = scores + add if add is not None else scores
        if not _numpy_path(x):
            return mx.softmax(scores, axis=-1, precise=True)
        return _apply_rows(_softmax_block, scores)
    rows = _rows_view(x)
    result, out = _kernel_output(x, rows, donate)
    add_rows = None if add is None else _rows_view(add.astype(mx.float32))
    count = 0 if add_rows is None else add_rows.shape[0]
    cols = rows.shape[1]
    _split_rows(
        lambda start, stop: _kernels.softmax(rows, out, scale, add_rows, count, cols, start, stop),
        rows.shape[0],
        rows.size,
    )
    return _finish(result, x.shape)


# (tokens, head width) the compiled attention kernel is specialised for: Swin's 8x8 windows
# (HTSAT's heads are 24 wide); any other shape runs the MLX path.
ATTENTION_KERNEL_SHAPES = {(64, 8), (64, 16), (64, 24), (64, 32)}


def attention(qkv: mx.array, heads: int, scale: float, bias: mx.array | None = None) -> mx.array:
    """Multi-head self-attention from one packed projection.

    qkv: [items, tokens, 3 * dims], the query, key and value projections side by side (as one
    GEMM with concatenated weights gives them); bias: [groups, heads, tokens, tokens] added to
    the scaled scores, item i using group i % groups (e.g. a per-window bias broadcast over the
    batch), or None. Returns [items, tokens, dims], heads concatenated.
    """
    items, tokens, packed = qkv.shape
    dims = packed // 3
    if packed % 3 or dims % heads:
        raise ValueError(f"attention: last axis {packed} is not 3 x a multiple of {heads} heads")
    head_dims = dims // heads
    if bias is not None and (bias.ndim != 4 or tuple(bias.shape[1:]) != (heads, tokens, tokens) or items % bias.shape[0]):
        raise ValueError(
            f"attention: bias {list(bias.shape)} is not [groups dividing {items}, {heads}, {tokens}, {tokens}]"
        )
    if not _numpy_path(qkv) or _kernels is None or (tokens, head_dims) not in ATTENTION_KERNEL_SHAPES:
        # [3, items, heads, tokens, head_dims] in one copy: q, k, v become contiguous slices.
        queries, keys, values = mx.contiguous(qkv.reshape(items, tokens, 3, heads, head_dims).transpose(2, 0, 3, 1, 4))
        scores = queries @ keys.swapaxes(-1, -2)
        if bias is not None:
            scores = scores.reshape(-1, *bias.shape)
        probs = softmax(scores, scale=scale, add=bias, donate=True).reshape(items, heads, tokens, tokens)
        return (probs @ values).transpose(0, 2, 1, 3).reshape(items, tokens, dims)
    packed_rows = _rows_view(qkv)
    bias_rows = None if bias is None else _rows_view(bias.astype(mx.float32))
    bias_count = 0 if bias is None else bias.shape[0] * heads
    out = np.empty((items, tokens, dims), np.float32)
    pairs = items * heads
    _split_rows(
        lambda start, stop: _kernels.attention(
            packed_rows, out, bias_rows, bias_count, scale, items, tokens, heads, head_dims, start, stop
        ),
        pairs,
        pairs * tokens * tokens * head_dims,
    )
    return mx.array(out)


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


def _layer_norm(
    x: mx.array, residual: mx.array | None, weight: mx.array | None, bias: mx.array | None, eps: float, keep_sum: bool
) -> tuple[mx.array | None, mx.array]:
    """(x + residual if keep_sum, LayerNorm(x + residual)); x's buffer may receive the sum."""
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"layer_norm: residual {list(residual.shape)} does not match x {list(x.shape)}")
    if not _numpy_path(x) or _kernels is None:
        total = x + residual if residual is not None else x
        if not _numpy_path(x):
            normed = mx.fast.layer_norm(total, weight, bias, eps)
        else:
            normed = _apply_rows(_layer_norm_kernel(_float32_vector(weight), _float32_vector(bias), eps), total)
        return (total if keep_sum else None), normed
    rows = _rows_view(x)
    residual_rows = None if residual is None else _rows_view(residual)
    total, total_rows = _kernel_output(x, rows, donate=True) if keep_sum else (None, None)
    out = np.empty_like(rows)
    weight_vector, bias_vector = _float32_vector(weight), _float32_vector(bias)
    cols = rows.shape[1]
    _split_rows(
        lambda start, stop: _kernels.layer_norm(
            rows, residual_rows, total_rows, out, weight_vector, bias_vector, eps, cols, start, stop
        ),
        rows.shape[0],
        rows.size,
    )
    return (_finish(total, x.shape) if keep_sum else None), mx.array(out.reshape(x.shape))


def layer_norm(
    x: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float, residual: mx.array | None = None
) -> mx.array:
    """LayerNorm of `x + residual` over the last axis (biased variance, as torch)."""
    return _layer_norm(x, residual, weight, bias, eps, keep_sum=False)[1]


def add_layer_norm(
    x: mx.array, residual: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float
) -> tuple[mx.array, mx.array]:
    """(x + residual, LayerNorm(x + residual)) in one pass: the residual stream of a pre-norm
    block and the next sublayer's input. x's buffer is donated to the sum."""
    return _layer_norm(x, residual, weight, bias, eps, keep_sum=True)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters, so checkpoints load unchanged) computed by `layer_norm`."""

    def __call__(self, x: mx.array, residual: mx.array | None = None) -> mx.array:
        """LayerNorm of `x + residual` (x alone when residual is None)."""
        return layer_norm(x, self.get("weight"), self.get("bias"), self.eps, residual=residual)


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
