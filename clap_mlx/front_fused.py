"""The audio tower's front as host kernels: the "kernels" path of the batch norm, the mel image
and the patch embedding, with the attentional fusion of clips longer than 10 s.

Per op the front is ~25 small MLX ops (a gather, transposes, pads, two small GEMMs per fusion
branch), each a pass over memory into a fresh buffer: at batch 1 ~1.7 ms for a 10-s clip and
~5 ms for a 25-s one on an AVX-512 Xeon, where the whole forward takes ~55. Here one kernel
builds the normalised, resized image plane by plane (`_kernels.mel_image`), NumPy copies cut it
into patch rows, the projections and the fusion's bottleneck run on the dense kernels, the
blend and the patch norm on the row kernels, all in host buffers kept across forwards.

The front runs here or per op (audio_encoder.py) as `op_paths` chooses, like a Swin stage
(swin_fused.py): forced by CLAP_MLX_OPS ("kernels" here; "numpy" and "mlx" per op), or
measured per batch class (auto).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from . import host_ops, op_paths, ops, swin_fused
from .audio_layout import bicubic_taps
from .scratch import shared_pool

_Scratch = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Projection:
    """A strided convolution whose patches tile its input, as a GEMM: weight packed, [out, kh * kw]."""

    panels: mx.array
    bias: mx.array | None
    out_dims: int
    kernel: tuple[int, int]

    @classmethod
    def packed(cls, weight: mx.array, bias: mx.array | None, kernel: tuple[int, int] = (1, 1)) -> Projection:
        """From a [out, kh * kw] weight, packed once into the dense kernels' panels."""
        return cls(swin_fused.pack_panels(weight), bias, weight.shape[0], kernel)

    @functools.cached_property
    def host(self) -> tuple[np.ndarray, np.ndarray | None]:
        return host_ops.rows_view(self.panels), host_ops.float32_vector(self.bias)


@dataclass(frozen=True)
class FrontParams:
    """What the host front needs of the tower: batch norm, image geometry, projections, fusion."""

    norm: mx.array  # [4, mels]: the batch norm's mean, sqrt(var + eps), weight, bias
    ratio: int  # freq_ratio: time chunks stacked along the frequency axis
    width: int  # spec_size: the image's side
    proj: Projection  # the global image's patches
    local: Projection | None  # each local crop's patches (fusion only)
    bottlenecks: tuple[Projection, ...]  # the AFF's local then global branch, BNs folded: 4 GEMMs
    patch_norm: tuple[mx.array, mx.array, float] | None  # weight, bias, eps
    fusable: bool  # float32 parameters, one-channel projections whose patches tile the image

    @functools.cached_property
    def host(self) -> tuple:
        """(batch norm rows, patch norm (weight, bias, eps) or None) as the kernels' host views."""
        if self.patch_norm is None:
            return host_ops.rows_view(self.norm), None
        weight, bias, eps = self.patch_norm
        return host_ops.rows_view(self.norm), (host_ops.float32_vector(weight), host_ops.float32_vector(bias), eps)


@functools.lru_cache(maxsize=8)
def _taps(frames: int, out_frames: int) -> tuple[np.ndarray, np.ndarray]:
    taps, weights = bicubic_taps(frames, out_frames)
    return np.ascontiguousarray(taps), np.ascontiguousarray(weights)


def _dense(x: np.ndarray, projection: Projection, out: np.ndarray) -> np.ndarray:
    """out [rows, out_dims] = x [rows, in] W^T + b on the dense kernels, split across the cores."""
    panels, bias = projection.host
    rows, in_dims = x.shape
    unit = host_ops.split_unit(rows, rows * in_dims * projection.out_dims, swin_fused.SUB_ROWS)
    ops._kernels.dense(x, panels, bias, out, rows, in_dims, projection.out_dims, 0, 0, rows, unit)
    return out


def _patches(planes: np.ndarray, projection: Projection, columns: int, scratch: _Scratch) -> np.ndarray:
    """planes [N, crops, H, W] -> tokens [N * H/kh * columns, out_dims]: each crop's patch
    columns side by side (a map `columns` wide; the columns past the crops' are zero tokens)."""
    count, crops, height, width = planes.shape
    kh, kw = projection.kernel
    out_h, out_w = height // kh, width // kw
    rows = scratch(count, out_h, columns, kh * kw)
    rows[:, :, crops * out_w :] = 0
    cut = planes[:, :, : out_h * kh, : out_w * kw].reshape(count, crops, out_h, kh, out_w, kw)
    np.copyto(rows[:, :, : crops * out_w].reshape(count, out_h, crops, out_w, kh, kw), cut.transpose(0, 2, 1, 4, 3, 5))
    tokens = _dense(rows.reshape(-1, kh * kw), projection, scratch(count * out_h * columns, projection.out_dims))
    tokens.reshape(count, out_h, columns, -1)[:, :, crops * out_w :] = 0
    return tokens


def _bottleneck(x: np.ndarray, first: Projection, second: Projection, scratch: _Scratch) -> np.ndarray:
    hidden = _dense(x, first, scratch(x.shape[0], first.out_dims))
    np.maximum(hidden, 0, out=hidden)
    return _dense(hidden, second, scratch(x.shape[0], second.out_dims))


def _fuse(x: np.ndarray, local: np.ndarray, items: int, front: FrontParams, scratch: _Scratch) -> np.ndarray:
    """AFF of global tokens x and local tokens, both [items * tokens, dims] -> the blend (in
    the buffer of the local branch's output)."""
    both = scratch(*x.shape)
    np.add(x, local, out=both)
    gate = _bottleneck(both, *front.bottlenecks[:2], scratch)
    pooled = both.reshape(items, -1, both.shape[1]).mean(axis=1)
    pooled_gate = _bottleneck(pooled, *front.bottlenecks[2:], scratch)
    rows, cols = x.shape
    item_rows = rows // items
    host_ops.split_rows(
        lambda start, stop: ops._kernels.aff_blend(x, local, gate, pooled_gate, item_rows, cols, gate, start, stop),
        rows,
        gate.size,
    )
    return gate


def run_host(features: mx.array, longer_rows: np.ndarray, front: FrontParams) -> mx.array:
    """features [B, C, T, mels] -> patch tokens [B, tokens, dims] on the host kernels."""
    batch, _, frames, mels = features.shape
    used = features.shape[1] if longer_rows.size else 1  # channel 0 alone without fusion rows
    norm, patch_norm = front.host
    out_frames = front.ratio * front.width
    taps, tap_weights = _taps(frames, out_frames) if frames != out_frames else (None, None)
    with shared_pool.lend() as scratch:
        src = host_ops.rows_view(features[:, :used] if used < features.shape[1] else features)
        image = scratch(batch, used, front.ratio * mels, front.width)
        planes = batch * used
        unit = host_ops.split_unit(planes, planes * out_frames * mels)
        ops._kernels.mel_image(
            src, norm, taps, tap_weights, image, planes, frames, mels, front.ratio, front.width, 0, planes, unit
        )
        columns = front.width // front.proj.kernel[1]
        x = _patches(image[:, :1], front.proj, columns, scratch)
        if longer_rows.size:
            every = longer_rows.size == batch
            crops = image[:, 1:] if every else image[longer_rows, 1:]
            local = _patches(crops, front.local, columns, scratch)
            tokens = x.shape[0] // batch
            if every:
                x = _fuse(x, local, batch, front, scratch)
            else:
                grouped = x.reshape(batch, tokens, -1)
                fused = _fuse(grouped[longer_rows].reshape(-1, x.shape[1]), local, longer_rows.size, front, scratch)
                grouped[longer_rows] = fused.reshape(longer_rows.size, tokens, -1)
        if patch_norm is not None:
            weight, bias, eps = patch_norm
            rows, cols = x.shape
            host_ops.split_rows(
                lambda start, stop: ops._kernels.layer_norm(x, None, None, x, weight, bias, eps, cols, start, stop),
                rows,
                x.size,
            )
        # mx.array copies: the buffers go back to the pool
        return mx.array(x.reshape(batch, -1, x.shape[1]))


def run_front(
    features: mx.array,
    longer_rows: np.ndarray,
    params: Callable[[], FrontParams],
    per_op: Callable[[mx.array, np.ndarray], mx.array],
) -> mx.array:
    """The tower's front (batch norm, mel image, patch embedding with fusion) on features
    [B, C, T, mels]: here, or `per_op(features, longer_rows)`."""
    if not ops.fused_path_allowed() or features.dtype != mx.float32:
        return per_op(features, longer_rows)
    front = params()
    if not front.fusable or features.shape[-1] > ops._kernels.MEL_IMAGE_MAX_MELS:
        return per_op(features, longer_rows)
    batch = features.shape[0]
    op_class = f"audio front b~{1 << (batch.bit_length() - 1)}" + (" fusion" if longer_rows.size else "")
    return op_paths.choose_composite(
        op_class, [features], lambda: run_host(features, longer_rows, front), lambda: per_op(features, longer_rows)
    )
