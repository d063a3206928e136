"""The host side of clap_mlx.ops: zero-copy NumPy views of evaluated MLX arrays, a row split
across the cores, and the NumPy block kernels of the "numpy" path.

An evaluated MLX array is a zero-copy NumPy view, so a host path evaluates its input and
computes float32 results outside MLX, over rows split across the cores. The NumPy kernels
run as multi-pass ufuncs over cache-sized blocks (1.2-5.6x slower than the compiled
kernels, 5-17x faster than MLX's own elementwise ops on the CPU).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import mlx.core as mx
import numpy as np

# A block plus two scratch blocks (3 x 256 KiB) stays in a core's L2 cache, so the
# multi-pass NumPy kernels below run from cache instead of memory.
BLOCK_ELEMENTS = 1 << 16
# Below this many elements the hand-off to a second thread costs more than it saves once
# other processes compete for the cores (measured: a 0.4 M-element layer_norm took 5x
# longer split than on one thread under load; at 1 M+ elements the split never lost).
PARALLEL_MIN_ELEMENTS = 1 << 19
# Chunks per core of a split op: few enough that their hand-offs (~10 us each) stay small
# next to the op, enough that a late or slowed core costs at most about one chunk.
CHUNKS_PER_CORE = 4

# How long the compiled kernels' helper threads spin after a job before they sleep
# (_kernels_team.h): a forward's jobs come back to back, and on a VM that halts idle vCPUs
# waking a sleeping thread costs ~0.1-1 ms each time.
TEAM_SPIN_US = 2000

_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = ThreadPoolExecutor(_WORKERS - 1, thread_name_prefix="clap-ops") if _WORKERS > 1 else None


def workers() -> int:
    """The cores this process may run on (split_rows' parts)."""
    return _WORKERS


def _chunks(items: int, size: int) -> int:
    """How many chunks a split of `items` whose work is `size` elements takes: 1 (the caller
    alone) when small or on one core, else CHUNKS_PER_CORE per core, at most one per item."""
    if _pool is None or size < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(items, _WORKERS * CHUNKS_PER_CORE))


def split_rows(work: Callable[[int, int], None], rows: int, size: int) -> None:
    """work(start, stop) over [0, rows), split across the cores when `size` elements is large.

    The cores take chunks from a shared counter rather than fixed halves: a core that starts
    late (its thread's wake-up) or runs slower (another process, or BLAS's spinning threads,
    on it) takes fewer chunks instead of the caller waiting for its whole half.
    """
    chunks = _chunks(rows, size)
    if chunks == 1:
        work(0, rows)
        return
    parts = min(_WORKERS, chunks)
    bounds = [rows * k // chunks for k in range(chunks + 1)]
    taken = itertools.count()  # next() on it is atomic under the GIL

    def drain() -> None:
        while (k := next(taken)) < chunks:
            work(bounds[k], bounds[k + 1])

    futures = [_pool.submit(drain) for _ in range(parts - 1)]
    drain()
    for future in futures:
        if not future.cancel():  # a helper that never started has nothing left to do
            future.result()


def split_unit(items: int, size: int, multiple: int = 1) -> int:
    """Items per unit when a compiled kernel splits `items` across the cores itself (its `unit`
    argument): as split_rows chooses its chunks, each a multiple of `multiple`; 0 (the caller
    alone) when `size` elements is small."""
    blocks = math.ceil(items / multiple)
    chunks = _chunks(blocks, size)
    return 0 if chunks == 1 else math.ceil(blocks / chunks) * multiple


def pack_panels(weight: np.ndarray, cols: int) -> np.ndarray:
    """A linear layer's [out, in] float32 weight in the dense kernels' layout: [panels, in, cols],
    zero past `out`."""
    out_dims, in_dims = weight.shape
    padded = np.zeros((math.ceil(out_dims / cols) * cols, in_dims), np.float32)
    padded[:out_dims] = weight
    return np.ascontiguousarray(padded.reshape(-1, cols, in_dims).transpose(0, 2, 1))


def rows_view(x: mx.array) -> np.ndarray:
    """Zero-copy [rows, last axis] float32 view of evaluated `x` (a copy if it is strided)."""
    mx.eval(x)
    view = np.asarray(x)
    if not view.flags.c_contiguous:
        view = np.ascontiguousarray(view)
    return view.reshape(-1, view.shape[-1]) if view.ndim else view.reshape(1, 1)


def float32_vector(v: mx.array | None) -> np.ndarray | None:
    if v is None:
        return None
    v = v.astype(mx.float32)
    mx.eval(v)
    return np.asarray(v)


def kernel_output(x: mx.array, rows: np.ndarray, donate: bool) -> tuple[mx.array, np.ndarray]:
    """The MLX array a kernel writes its result to, and its [rows, D] view: `x` itself when
    donated (and its view is its own buffer), else a new array."""
    if donate and np.may_share_memory(rows, np.asarray(x)):
        return x, rows
    out = np.empty_like(rows)
    return out, out


def finish(result: mx.array | np.ndarray, shape: tuple[int, ...]) -> mx.array:
    if isinstance(result, np.ndarray):
        return mx.array(result.reshape(shape))
    return result


# ---- NumPy kernels: Kernel(x, out, scratch_a, scratch_b) on a [rows, D] block ----

Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def run_blocks(kernel: Kernel, x: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    rows = max(1, BLOCK_ELEMENTS // x.shape[1])
    scratch_a = np.empty((min(rows, stop - start), x.shape[1]), np.float32)
    scratch_b = np.empty_like(scratch_a)
    # Overflow to inf and underflow to 0 are the intended float32 results here.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for i in range(start, stop, rows):
            j = min(i + rows, stop)
            kernel(x[i:j], out[i:j], scratch_a[: j - i], scratch_b[: j - i])


def apply_rows(kernel: Kernel, x: mx.array) -> mx.array:
    """Run NumPy `kernel` over the rows (last axis) of float32 `x`, on all cores when large."""
    rows = rows_view(x)
    out = np.empty_like(rows)
    split_rows(lambda start, stop: run_blocks(kernel, rows, out, start, stop), rows.shape[0], rows.size)
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


def gelu_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
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


# Row sums below this mean the block-wide max shift underflowed some row's exps.
_SOFTMAX_MIN_ROW_SUM = 1e-30


def row_sums(x: np.ndarray) -> np.ndarray:
    # einsum's SIMD loop beats NumPy's per-row reduce on short rows, and unlike a BLAS
    # matrix-vector product it starts no BLAS threads next to this module's own.
    return np.einsum("ij->i", x)


def softmax_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    # Shifting a whole block by its max is as exact as a per-row shift while no row sits
    # ~70 below it, and NumPy's per-row max over short rows is slow; check, else redo.
    block_max = x.max()
    np.subtract(x, block_max, out=out)
    np.exp(out, out=out)
    sums = row_sums(out)
    if not (np.isfinite(block_max) and sums.min() > _SOFTMAX_MIN_ROW_SUM):
        np.subtract(x, x.max(axis=1, keepdims=True), out=out)
        np.exp(out, out=out)
        sums = row_sums(out)
    out *= (np.float32(1.0) / sums)[:, None]


def layer_norm_kernel(weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> Kernel:
    def block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        inverse_d = np.float32(1.0 / x.shape[1])
        np.subtract(x, (row_sums(x) * inverse_d)[:, None], out=out)
        variance = np.einsum("ij,ij->i", out, out) * inverse_d
        out *= (np.float32(1.0) / np.sqrt(variance + np.float32(eps)))[:, None]
        if weight is not None:
            out *= weight
        if bias is not None:
            out += bias

    return block


def tanh_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    np.tanh(x, out=out)


def sigmoid_block(x: np.ndarray, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    # 1 / (1 + exp(-x)): exp overflows to inf for x < -88 and gives exactly 0, not NaN.
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += np.float32(1.0)
    np.reciprocal(out, out=out)
