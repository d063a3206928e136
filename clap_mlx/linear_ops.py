"""Linear layers of both towers: `affine` (x W^T + b as MLX's matmul and an add), the few-rows
kernel path of `linear` / `linears` / `Linear` (a text label's ~8-token GEMMs), and
`linear_gelu`. Each op's paths are chosen by op_paths, as in ops.py. `HostMatmul`: a fixed
matrix product on host rows outside any model (the mel projection of the features).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# ops' helpers through the module, so a profiler's or a test's patch of them applies here too
from . import host_ops, op_paths, ops
from .swin_fused import TILE_ROWS


# Above this many rows BLAS's packed GEMM beats the few-rows kernel (measured on AVX2: the
# kernel at 0.7-0.9x its speed at 64 and 128 rows), so larger inputs go straight to MLX.
LINEAR_KERNEL_MAX_ROWS = 64

# A linear layer's (weight [out, in], bias [out] or None).
Params = tuple[mx.array, mx.array | None]


# The few-rows kernel's column units: whole weight blocks of every target (3 or 4 rows).
LINEAR_UNIT_COLS = 12


def host_linear(rows: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """rows [count, in] @ weight.T (+ bias) on the few-rows kernel, weight [out, in] as stored."""
    (count, in_dims), out_dims = rows.shape, weight.shape[0]
    out = np.empty((count, out_dims), np.float32)
    # each core of the helper team streams its own columns' part of the weight
    unit = host_ops.split_unit(out_dims, out_dims * in_dims, LINEAR_UNIT_COLS)
    ops._kernels.linear(rows, weight, bias, out, count, in_dims, out_dims, 0, out_dims, unit)
    return out


def _linears_kernels(x: mx.array, params: list[Params]) -> list[mx.array]:
    rows = host_ops.rows_view(x)
    outs = []
    for w, bias in params:
        out = host_linear(rows, host_ops.rows_view(w), host_ops.float32_vector(bias))
        outs.append(mx.array(out.reshape(*x.shape[:-1], out.shape[1])))
    return outs


def affine(x: mx.array, weight: mx.array, bias: mx.array | None) -> mx.array:
    """x @ weight.T + bias. Not mx.addmm: MLX's CPU addmm first copies the broadcast bias into
    the output element by element, which made a bias GEMM up to 1.5x slower than the GEMM and
    a separate add together (measured on AVX2 at 4096 x 96 -> 288)."""
    return x @ weight.T if bias is None else x @ weight.T + bias


def _linears_mlx(x: mx.array, params: list[Params]) -> list[mx.array]:
    return [affine(x, w, b) for w, b in params]


def _linears(x: mx.array, params: list[Params]) -> list[mx.array]:
    rows = x.size // max(x.shape[-1], 1)
    if not ops._host_path(x) or rows > LINEAR_KERNEL_MAX_ROWS or any(w.dtype != mx.float32 for w, _ in params):
        return _linears_mlx(x, params)
    # No NumPy GEMM: NumPy's would be the same BLAS MLX calls, so "numpy" runs MLX's matmul
    # (the same runner: auto times it once).
    on_mlx = lambda d: _linears_mlx(x, params)  # noqa: E731
    runners = ops._paths(lambda d: _linears_kernels(x, params), on_mlx, on_mlx)
    out_dims = "+".join(str(w.shape[0]) for w, _ in params)
    has_bias = " bias" if any(b is not None for _, b in params) else ""
    op_class = f"linear {x.shape[-1]} -> {out_dims} x ~{1 << (rows.bit_length() - 1)}{has_bias}"
    return op_paths.choose(op_class, [x, *(a for pair in params for a in pair)], runners)


def linears(x: mx.array, layers: list[nn.Linear]) -> list[mx.array]:
    """[layer(x) for layer in layers], e.g. the query, key and value projections: on the kernel
    path their input is read back from MLX once, and one path choice covers them all."""
    return _linears(x, [(layer.weight, layer.get("bias")) for layer in layers])


def linear(x: mx.array, layer: nn.Linear) -> mx.array:
    """layer(x) for an nn.Linear; inputs of a few rows (a text label's ~8 tokens) may run the
    compiled few-rows kernel, which streams the weight in place once."""
    return linears(x, [layer])[0]


class Linear(nn.Linear):
    """nn.Linear (same parameters, so checkpoints load unchanged) computed by `linear`."""

    def __call__(self, x: mx.array) -> mx.array:
        return linear(x, self)


def linear_gelu(layer: nn.Linear, x: mx.array) -> mx.array:
    """gelu(layer(x)) with the bias add folded into the GELU pass."""
    return ops.gelu(_linears(x, [(layer.weight, None)])[0], layer.get("bias"), donate=True)


class HostMatmul:
    """x @ matrix for float32 NumPy rows x and a fixed [in, out] matrix: on the compiled dense
    kernels (the matrix packed once; the cores shared through their helper team) when built
    and CLAP_MLX_OPS allows them (not "numpy" or "mlx"), else NumPy's matmul.

    Not NumPy's matmul when there is a choice: NumPy's bundled OpenBLAS keeps its pool threads
    busy-waiting (~0.1 s, without yielding) after each call it splits, on the cores the model
    forward that follows needs; that forward ran 33 % slower (measured on AVX2 at b1, after a
    1001 x 500 x 64 product: the mel projection of a 10-s clip).
    """

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.ascontiguousarray(matrix, np.float32)
        self._panels = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows, in_dims = x.shape
        out_dims = self.matrix.shape[1]
        if not ops.use_kernels() or op_paths.mode() in ("numpy", "mlx") or x.dtype != np.float32 or rows == 0:
            return x @ self.matrix
        if self._panels is None:
            self._panels = host_ops.pack_panels(self.matrix.T, ops._kernels.DENSE_PANEL_COLS)
        x = np.ascontiguousarray(x)
        out = np.empty((rows, out_dims), np.float32)
        unit = host_ops.split_unit(rows, rows * in_dims * out_dims, TILE_ROWS)
        ops._kernels.dense(x, self._panels, None, out, rows, in_dims, out_dims, 0, 0, rows, unit)
        return out
