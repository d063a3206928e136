"""The audio tower's Swin blocks as fused host kernels: the "kernels" path of a stage.

Per block, three passes over the tokens, each split across the cores: LayerNorm and the
q/k/v GEMM (`_kernels.norm_dense`), window attention (`_kernels.attention`), then the output
projection, residual, LayerNorm, MLP and residual in place (`_kernels.swin_mlp`), 48 rows
at a time so the MLP's hidden layer stays in L2; then the stage's patch merging (a gather,
then `_kernels.norm_dense`). The residual stream is one host buffer for
the whole stage: between ops there is no MLX evaluation, no copy into a new MLX array and no
hand-off between BLAS's threads and ours (on the per-op path these cost as much as the
GEMMs' own shortfall). The GEMMs run on the dense kernels (`_kernels_dense.h`), so each
linear weight is packed once into their panels: a second copy of the stage's weights
(~110 MB for the full-size audio tower) while the model is loaded.

A stage runs here or per op (ops.py, each op on its own path) as `op_paths` chooses: forced
by CLAP_MLX_OPS ("kernels" here; "numpy" and "mlx" per op, so "mlx" stays one lazy graph),
or measured per stage shape (auto).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from . import host_ops, op_paths, ops
from .scratch import shared_pool

try:
    from . import _kernels
except ImportError:  # built without a C compiler: stages run per op
    _kernels = None

# Rows the kernels process per pass (_kernels_dense.h DENSE_SUB_ROWS); a row range of a
# core is a multiple of it, or of 12 (a multiple of every variant's tile height) when a
# stage has too few rows to give each core several.
SUB_ROWS = 48
TILE_ROWS = 12


@dataclass(frozen=True)
class BlockParams:
    """What the fused kernels need of one pre-norm Swin block."""

    weights: tuple[mx.array | None, ...]  # struct swin_weights' 12 parameters, linear weights packed
    eps: float
    dims: int
    hidden: int
    heads: int
    scale: float
    windows: np.ndarray  # [windows, 64] int32 token indices, -1: padding
    attention_bias: mx.array  # [groups, heads, 64, 64]
    pad: mx.array  # the q/k/v projection of a padding token

    @functools.cached_property
    def host(self) -> tuple:
        """(weights, attention bias rows, pad) as the kernels' host views, taken once."""
        return tuple(_host(w) for w in self.weights), _host(self.attention_bias), host_ops.float32_vector(self.pad)


@dataclass(frozen=True)
class MergeParams:
    """A patch merging: 2x2 tokens of a height x width map -> LayerNorm -> reduction (no bias)."""

    resolution: tuple[int, int]
    norm_weight: mx.array | None
    norm_bias: mx.array | None
    eps: float
    reduction: mx.array  # packed
    out_dims: int

    @functools.cached_property
    def host(self) -> tuple:
        return _host(self.norm_weight), _host(self.norm_bias), _host(self.reduction)


@dataclass(frozen=True)
class StageParams:
    blocks: tuple[BlockParams, ...]
    merge: MergeParams | None

    @functools.cached_property
    def fusable(self) -> bool:
        """Whether the kernels run this stage's parameters: float32 (e.g. not a model cast to
        float16), 64-token windows, a head width the attention kernel is specialised for, and
        a map of even sides to merge. Checked once per set of weights."""
        merge = self.merge
        params = [w for b in self.blocks for w in (*b.weights, b.attention_bias, b.pad)]
        if merge is not None:
            params += [merge.norm_weight, merge.norm_bias, merge.reduction]
        return (
            all(p is None or p.dtype == mx.float32 for p in params)
            and all(
                b.dims % b.heads == 0 and (b.windows.shape[1], b.dims // b.heads) in ops.ATTENTION_KERNEL_SHAPES
                for b in self.blocks
            )
            and (merge is None or (merge.resolution[0] % 2 == 0 and merge.resolution[1] % 2 == 0))
        )


def pack_panels(weight: mx.array) -> mx.array:
    """nn.Linear's [out, in] weight in the dense kernels' layout: [panels, in, 16] (zero past out)."""
    return mx.array(host_ops.pack_panels(host_ops.rows_view(weight.astype(mx.float32)), _kernels.DENSE_PANEL_COLS))


def supported(x: mx.array, stage: StageParams) -> bool:
    """Whether the fused kernels run this stage on x: float32 input and fusable parameters."""
    return x.dtype == mx.float32 and x.size > 0 and stage.fusable


def _unit(rows: int, dims: int) -> int:
    """The kernels' split of `rows` (their `unit`): whole passes, so few weight re-reads per core."""
    passes = SUB_ROWS
    if rows < SUB_ROWS * 2 * host_ops.CHUNKS_PER_CORE:
        # a small stage (e.g. 64 tokens of 768): one range per core, as each range streams
        # every weight of the block once per pass
        passes = max(TILE_ROWS, math.ceil(rows / host_ops.workers() / TILE_ROWS) * TILE_ROWS)
    # the work's size in multiply-adds (the threshold is in elements of a row op)
    return host_ops.split_unit(rows, rows * dims * dims, passes)


def _host(array: mx.array | None) -> np.ndarray | None:
    return None if array is None else host_ops.rows_view(array)


def _run_block(stream: np.ndarray, qkv: np.ndarray, attended: np.ndarray, batch: int, block: BlockParams) -> None:
    """One Swin block in place on the residual stream [batch * tokens, dims]; qkv and
    attended are its scratch buffers."""
    rows, dims = stream.shape
    weights, bias_rows, pad = block.host
    norm_w, norm_b, qkv_w, qkv_b = weights[:4]
    unit = _unit(rows, dims)
    _kernels.norm_dense(stream, norm_w, norm_b, block.eps, qkv_w, qkv_b, qkv, rows, dims, 3 * dims, 0, rows, unit)
    ops.attention_host(qkv, attended, batch, block.heads, block.scale, bias_rows, block.windows, pad)
    _kernels.swin_mlp(weights, block.eps, dims, block.hidden, stream, attended, rows, 0, rows, unit)


def _run_merge(stream: np.ndarray, batch: int, merge: MergeParams, scratch: Callable[..., np.ndarray]) -> np.ndarray:
    """[batch * height * width, dims] -> [batch * height/2 * width/2, out_dims], in buffers
    from `scratch`."""
    (height, width), dims = merge.resolution, stream.shape[1]
    rows = batch * (height // 2) * (width // 2)
    grouped = scratch(rows, 4 * dims)
    # 2x2 neighbourhoods column-major, as transformers (and PatchMerging) concatenate them
    neighbourhoods = stream.reshape(batch, height // 2, 2, width // 2, 2, dims).transpose(0, 1, 3, 4, 2, 5)
    np.copyto(grouped.reshape(neighbourhoods.shape), neighbourhoods)
    out = scratch(rows, merge.out_dims)
    norm_w, norm_b, panels = merge.host
    _kernels.norm_dense(grouped, norm_w, norm_b, merge.eps, panels, None, out, rows, 4 * dims, merge.out_dims, 0, rows,
                        _unit(rows, 4 * dims))
    return out


def _run_fused(x: mx.array, stage: StageParams) -> mx.array:
    batch = x.shape[0]
    with shared_pool.lend() as scratch:
        rows = host_ops.rows_view(x)
        # a copy: the input stays as it was (autotune runs the paths on the same input)
        stream = scratch(*rows.shape)
        np.copyto(stream, rows)
        qkv, attended = scratch(rows.shape[0], 3 * rows.shape[1]), scratch(*rows.shape)
        for block in stage.blocks:
            _run_block(stream, qkv, attended, batch, block)
        if stage.merge is not None:
            stream = _run_merge(stream, batch, stage.merge, scratch)
        # mx.array copies: the buffers go back to the pool
        return mx.array(stream.reshape(batch, -1, stream.shape[1]))


def run_stage(x: mx.array, params: Callable[[], StageParams], per_op: Callable[[mx.array], mx.array]) -> mx.array:
    """A Swin stage (its blocks, then its patch merging if any) on x [batch, tokens, dims]:
    fused here, or `per_op(x)`. `params` is called only when the fused path may run (it
    packs the weights on first use)."""
    if not ops.fused_path_allowed():
        return per_op(x)
    stage = params()
    if not supported(x, stage):
        return per_op(x)
    rows = x.size // x.shape[-1]
    op_class = f"swin stage {x.shape[-1]} x ~{1 << (rows.bit_length() - 1)} depth {len(stage.blocks)}"
    op_class += " merge" if stage.merge is not None else ""
    return op_paths.choose_composite(op_class, [x], lambda: _run_fused(x, stage), lambda: per_op(x))
