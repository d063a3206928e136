"""The text tower's encoder as host kernels: the "kernels" path for a few labels.

A label is ~8 tokens, so per op the encoder's work is small next to building, evaluating and
copying each op's arrays between MLX and the host: a 1-label forward took 36 ms on the per-op
path, 23 of them in its linear layers (an AVX-512 Xeon). Here the packed rows stay in host
buffers through every layer: the few-rows linear kernel (each core streams its columns of a
weight once), the layer norm, GELU and softmax kernels, and NumPy for the attention products of
a few tokens. The layers compute what `text_encoder.TransformerLayer` does, row for row,
including the last layer's first-token-only rows.

The encoder runs here or per op (text_encoder.py) as `op_paths` chooses, like a Swin stage
(swin_fused.py): forced by CLAP_MLX_OPS ("kernels" here; "numpy" and "mlx" per op), or
measured per shape class (auto). Only inputs of at most LINEAR_KERNEL_MAX_ROWS packed rows come
here: above it BLAS's GEMMs beat the few-rows kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from . import host_ops, op_paths, ops
from .linear_ops import LINEAR_KERNEL_MAX_ROWS, host_linear


@dataclass(frozen=True)
class LayerParams:
    """One post-LN transformer layer's parameters (MLX arrays, in transformers' order)."""

    arrays: tuple[mx.array | None, ...]  # q, k, v, attention output, its norm, fc1, fc2, output norm: w, b each
    heads: int
    eps: float

    @functools.cached_property
    def host(self) -> tuple[np.ndarray | None, ...]:
        return tuple(None if a is None else host_ops.rows_view(a) for a in self.arrays)


@dataclass(frozen=True)
class EncoderParams:
    layers: tuple[LayerParams, ...]

    @functools.cached_property
    def fusable(self) -> bool:
        """float32 parameters (not, e.g., a model cast to float16)."""
        return all(a is None or a.dtype == mx.float32 for layer in self.layers for a in layer.arrays)


@dataclass(frozen=True)
class HostLayout:
    """text_encoder.TokenLayout's index arrays on the host."""

    batch: int
    length: int
    tokens: np.ndarray | None  # flat padded position of each packed row; None: no padding
    first_rows: np.ndarray  # packed row of each sequence's first token
    mask: np.ndarray  # [batch, length] additive attention mask

    @classmethod
    def of(cls, layout) -> HostLayout:
        tokens = None if layout.tokens is None else np.array(layout.tokens)
        mask = np.array(layout.mask, np.float32).reshape(layout.batch, layout.length)
        return cls(layout.batch, layout.length, tokens, np.array(layout.first_rows), mask)

    def heads(self, rows: np.ndarray, heads: int) -> np.ndarray:
        """Packed [N, D] -> [batch, heads, length, D / heads], zeros at padding."""
        dims = rows.shape[1]
        if self.tokens is not None:
            padded = np.zeros((self.batch * self.length, dims), np.float32)
            padded[self.tokens] = rows
            rows = padded
        return rows.reshape(self.batch, self.length, heads, dims // heads).transpose(0, 2, 1, 3)


def _norm(x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
          eps: float) -> np.ndarray:
    """LayerNorm(x + residual) into x's buffer (few rows: the calling thread alone)."""
    ops._kernels.layer_norm(x, residual, None, x, weight, bias, eps, x.shape[1], 0, x.shape[0])
    return x


def _attention(x: np.ndarray, query_rows: np.ndarray, layout: HostLayout, layer: LayerParams,
               first_only: bool) -> np.ndarray:
    """Self-attention of packed rows x [N, D] for every row (query_rows is x), or each sequence's
    first token only (query_rows: those rows, [batch, D]), as text_encoder.SelfAttention: scaled
    queries, the additive mask, softmax."""
    q_w, q_b, k_w, k_b, v_w, v_b = layer.host[:6]
    dims, heads = x.shape[1], layer.heads
    queries = host_linear(query_rows, q_w, q_b)
    queries *= (dims // heads) ** -0.5
    k = layout.heads(host_linear(x, k_w, k_b), heads)
    v = layout.heads(host_linear(x, v_w, v_b), heads)
    if first_only:
        q = queries.reshape(layout.batch, 1, heads, -1).transpose(0, 2, 1, 3)
    else:
        q = layout.heads(queries, heads)
    scores = np.matmul(q, k.transpose(0, 1, 3, 2))  # [batch, heads, queries, length]
    scores += layout.mask[:, None, None, :]
    flat = scores.reshape(-1, layout.length)
    ops._kernels.softmax(flat, flat, 1.0, None, 0, layout.length, 0, flat.shape[0])
    out = np.matmul(scores, v).transpose(0, 2, 1, 3).reshape(layout.batch, -1, dims)  # [batch, queries, D]
    if first_only:
        return np.ascontiguousarray(out.reshape(layout.batch, dims))
    out = out.reshape(-1, dims)
    return np.ascontiguousarray(out if layout.tokens is None else out[layout.tokens])


def _layer(x: np.ndarray, layout: HostLayout, layer: LayerParams, first_only: bool) -> np.ndarray:
    """One post-LN layer: h = LN(attention(x) Wo + x); LN(GELU(h W1) W2 + h)."""
    o_w, o_b, norm1_w, norm1_b, fc1_w, fc1_b, fc2_w, fc2_b, norm2_w, norm2_b = layer.host[6:]
    residual = x[layout.first_rows] if first_only else x  # the queries' rows too
    attended = _attention(x, residual, layout, layer, first_only)
    h = _norm(host_linear(attended, o_w, o_b), residual, norm1_w, norm1_b, layer.eps)
    inner = host_linear(h, fc1_w, None)
    cols = inner.shape[1]
    host_ops.split_rows(lambda start, stop: ops._kernels.gelu(inner, inner, fc1_b, cols, start, stop),
                        inner.shape[0], inner.size)
    return _norm(host_linear(inner, fc2_w, fc2_b), h, norm2_w, norm2_b, layer.eps)


def run_host(x: mx.array, layout, encoder: EncoderParams) -> mx.array:
    """Packed token states x [N, D] -> final states of each sequence's first token [batch, D]."""
    host = HostLayout.of(layout)
    rows = host_ops.rows_view(x)  # read only: every layer writes new buffers (autotune reruns the input)
    for layer in encoder.layers[:-1]:
        rows = _layer(rows, host, layer, first_only=False)
    return mx.array(_layer(rows, host, encoder.layers[-1], first_only=True))


def run_encoder(x: mx.array, layout, params: Callable[[], EncoderParams], per_op: Callable[[], mx.array]) -> mx.array:
    """The encoder on packed rows x [N, D] (`layout`: text_encoder.TokenLayout): here for a few
    rows, or `per_op()`. `params` is called only when this path may run."""
    rows = x.shape[0]
    if not ops.fused_path_allowed() or x.dtype != mx.float32 or not 0 < rows <= LINEAR_KERNEL_MAX_ROWS:
        return per_op()
    encoder = params()
    if not encoder.fusable:
        return per_op()
    op_class = f"text encoder {x.shape[1]} x ~{1 << (rows.bit_length() - 1)} depth {len(encoder.layers)}"
    return op_paths.choose_composite(op_class, [x], lambda: run_host(x, layout, encoder), per_op)
