"""The audio tower's patch embedding: the 4x4 patch projection of the global mel image and,
for clips longer than 10 s, the fusion with their three local crops (transformers'
`ClapAudioPatchEmbed` with `ClapAudioAFFBlock`). Parameter names mirror the PyTorch state dict.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
import numpy as np

from . import front_fused, linear_ops, ops
from .config import AudioConfig
from .derived import DerivedArrays


class FrozenBatchNorm(nn.Module):
    """BatchNorm over the last axis with running statistics only (inference port: no mode)."""

    def __init__(self, dims: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))
        self.running_mean = mx.zeros((dims,))
        self.running_var = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return (x - self.running_mean) / mx.sqrt(self.running_var + self.eps) * self.weight + self.bias


class GlobalAveragePool(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return mx.mean(x, axis=(1, 2), keepdims=True)


def bottleneck(channels: int, inner: int) -> list:
    """1x1 conv, BN, ReLU, 1x1 conv, BN: a plain list, so parameter names keep the PyTorch
    nn.Sequential indices."""
    return [
        nn.Conv2d(channels, inner, 1),
        FrozenBatchNorm(inner),
        nn.ReLU(),
        nn.Conv2d(inner, channels, 1),
        FrozenBatchNorm(channels),
    ]


def folded_conv(conv: nn.Conv2d, norm: FrozenBatchNorm) -> tuple[mx.array, mx.array]:
    """A 1x1 conv followed by a frozen BatchNorm as one affine map (weight [out, in], bias)."""
    scale = norm.weight / mx.sqrt(norm.running_var + norm.eps)
    weight = conv.weight.reshape(conv.weight.shape[0], -1) * scale[:, None]
    bias = conv.get("bias") if "bias" in conv else mx.zeros((weight.shape[0],))
    return weight, (bias - norm.running_mean) * scale + norm.bias


class AttentionalFeatureFusion(nn.Module):
    """transformers' `ClapAudioAFFBlock`: sigmoid-gated blend of global and local patch maps."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.local_att = bottleneck(channels, channels // reduction)
        self.global_att = [GlobalAveragePool(), *bottleneck(channels, channels // reduction)]
        self._derived = DerivedArrays()

    def folded(self, name: str, layers: list) -> tuple[mx.array, ...]:
        """A bottleneck's two (1x1 conv, BN) pairs folded into (w1, b1, w2, b2), derived once."""
        conv1, norm1, _, conv2, norm2 = layers
        sources = tuple(a for m in (conv1, norm1, conv2, norm2) for _, a in tree_flatten(m.parameters()))
        return self._derived.get(name, sources, lambda *_: (*folded_conv(conv1, norm1), *folded_conv(conv2, norm2)))

    def branch(self, name: str, layers: list, x: mx.array) -> mx.array:
        """conv 1x1, BN, ReLU, conv 1x1, BN as two GEMMs over the channels, the BNs folded in:
        no conv2d and no elementwise BN passes over the [B, 64, 64, 96] map."""
        w1, b1, w2, b2 = self.folded(name, layers)
        return linear_ops.affine(mx.maximum(linear_ops.affine(x, w1, b1), 0.0), w2, b2)

    def projections(self) -> tuple[front_fused.Projection, ...]:
        """The local then the global branch's two GEMMs (BNs folded) for the host front."""

        folded = (*self.folded("local", self.local_att), *self.folded("global", self.global_att[1:]))
        return tuple(front_fused.Projection.packed(folded[k], folded[k + 1]) for k in range(0, 8, 2))

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        """x, residual: [B, H, W, C]."""
        both = x + residual
        local, pooled = self.branch("local", self.local_att, both), self.global_att[0](both)
        # 2 x gate + 2 residual (1 - gate), gate = sigmoid(local + global)
        return ops.aff_blend(x, residual, local, self.branch("global", self.global_att[1:], pooled), donate=True)


def tiles(conv: nn.Conv2d) -> bool:
    """Whether conv's patches tile its input (stride = kernel, no padding), as in every CLAP
    config: then it is a gather and one GEMM, the same float32 result as MLX's convolution
    with less copying (the fusion's local crops: b8 ~8 ms instead of ~13 on an AVX-512 Xeon)."""
    return tuple(conv.stride) == tuple(conv.weight.shape[1:3]) and not any(conv.padding)


def conv_projection(conv: nn.Conv2d) -> front_fused.Projection:
    """A one-channel conv whose patches tile its input as the host front's GEMM."""
    return front_fused.Projection.packed(
        conv.weight.reshape(conv.weight.shape[0], -1), conv.get("bias"), tuple(conv.weight.shape[1:3])
    )


def patch_grid(x: mx.array, conv: nn.Conv2d) -> mx.array:
    """x [N, H, W, C] cut into conv's kernel-sized patches: [N, H', kh, W', kw, C] (an edge
    narrower than a patch dropped, as the strided convolution does)."""
    kh, kw = conv.weight.shape[1:3]
    n, h, w, c = x.shape
    return x[:, : h // kh * kh, : w // kw * kw].reshape(n, h // kh, kh, w // kw, kw, c)


def project(patches: mx.array, conv: nn.Conv2d) -> mx.array:
    """Flattened patches [..., kh * kw * C] (conv's OHWI weight order) through conv's weights."""
    return linear_ops.affine(patches, conv.weight.reshape(conv.weight.shape[0], -1), conv.get("bias"))


class PatchEmbed(nn.Module):
    """4x4 patch projection of channel 0 (the global mel image); with fusion, rows flagged
    `is_longer` are blended with the three local crops through `mel_conv2d` and AFF."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        kernel = (cfg.patch_size, cfg.patch_size)
        padding = tuple((cfg.patch_size - stride) // 2 for stride in cfg.patch_stride)
        dims = cfg.patch_embeds_hidden_size
        self.enable_fusion = cfg.enable_fusion
        self.proj = nn.Conv2d(cfg.patch_embed_input_channels, dims, kernel, cfg.patch_stride, padding)
        self.norm = ops.LayerNorm(dims) if cfg.enable_patch_layer_norm else None
        if cfg.enable_fusion:
            self.fusion_model = AttentionalFeatureFusion(dims, cfg.aff_block_r)
            self.mel_conv2d = nn.Conv2d(
                cfg.patch_embed_input_channels,
                dims,
                (kernel[0], kernel[1] * 3),
                (cfg.patch_stride[0], cfg.patch_stride[1] * 3),
                padding,
            )

    def host_fusable(self) -> bool:
        """Whether the host front runs these layers: float32, one input channel, tiling patches."""
        convs = [self.proj] + ([self.mel_conv2d] if self.enable_fusion else [])
        return all(tiles(c) and c.weight.shape[3] == 1 for c in convs) and all(
            a.dtype == mx.float32 for _, a in tree_flatten(self.parameters())
        )

    def front_layers(self) -> tuple:
        """(proj, local, bottlenecks, patch norm) for the host front (front_fused.py)."""
        fusion = self.enable_fusion
        norm = None if self.norm is None else (self.norm.get("weight"), self.norm.get("bias"), self.norm.eps)
        return (
            conv_projection(self.proj),
            conv_projection(self.mel_conv2d) if fusion else None,
            self.fusion_model.projections() if fusion else (),
            norm,
        )

    def global_patches(self, image: mx.array) -> mx.array:
        """[N, H, W, C_in] -> [N, H', W', C]: `proj`, the 4 x 4 patch projection."""
        if not tiles(self.proj):
            return self.proj(image)
        grid = patch_grid(image, self.proj)
        n, out_h, _, out_w = grid.shape[:4]
        return project(grid.transpose(0, 1, 3, 2, 4, 5).reshape(n, out_h, out_w, -1), self.proj)

    def local_patches(self, crops: mx.array) -> mx.array:
        """[N, H, W, 3] local crops -> [N, H', W', C]: the 3 crops' patch columns side by side."""
        conv, (n, h, w, k) = self.mel_conv2d, crops.shape
        if not tiles(conv):
            x = conv(crops.transpose(0, 3, 1, 2).reshape(n * k, h, w, 1))
            _, out_h, out_w, c = x.shape
            return x.reshape(n, k, out_h, out_w, c).transpose(0, 2, 1, 3, 4).reshape(n, out_h, k * out_w, c)
        # each crop is one input channel: [N, H', crop, W', patch] order straight from the gather,
        # not a copy per crop and a transpose of the convolution's output
        grid = patch_grid(crops, conv)
        out_h, out_w = grid.shape[1], grid.shape[3]
        return project(grid.transpose(0, 1, 5, 3, 2, 4).reshape(n, out_h, k * out_w, -1), conv)

    def __call__(self, image: mx.array, longer_rows: np.ndarray) -> mx.array:
        """image: [B, H, W, C_in]; returns patch tokens [B, H/4 * W/4, dims]."""
        x = self.global_patches(image[..., :1] if self.enable_fusion else image)
        if self.enable_fusion and longer_rows.size:
            every = longer_rows.size == x.shape[0]
            rows = mx.array(longer_rows)
            local = self.local_patches(image[..., 1:] if every else image[rows, :, :, 1:])
            local = mx.pad(local, [(0, 0), (0, 0), (0, x.shape[2] - local.shape[2]), (0, 0)])
            fused = self.fusion_model(x if every else x[rows], local)
            # whole clips restacked: MLX's CPU scatter (x[rows] = ...) writes element by element
            position = {row: k for k, row in enumerate(longer_rows.tolist())}
            x = fused if every else mx.stack([fused[position[i]] if i in position else x[i] for i in range(x.shape[0])])
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return self.norm(x) if self.norm is not None else x
