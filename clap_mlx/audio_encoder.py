"""HTSAT-Swin audio tower of CLAP, numerically matching transformers' `ClapAudioEncoder`.

Activations are channels-last (NHWC / [B, tokens, C]); parameter names mirror the PyTorch
state dict with the `audio_model.audio_encoder.` prefix removed.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
import numpy as np

from . import front_fused, linear_ops, ops, swin_fused
from .audio_embed import FrozenBatchNorm, PatchEmbed
from .audio_layout import bicubic_resize, relative_position_index, round_up, shifted_window_mask, window_table
from .config import AudioConfig
from .derived import DerivedArrays


class Dense(nn.Module):
    """A linear layer named `<owner>.dense`, as in transformers' parameter names."""

    def __init__(self, in_dims: int, out_dims: int):
        super().__init__()
        self.dense = nn.Linear(in_dims, out_dims)

    def __call__(self, x: mx.array) -> mx.array:
        return linear_ops.affine(x, self.dense.weight, self.dense.get("bias"))


class WindowSelfAttention(nn.Module):
    """Multi-head attention inside each window, with Swin's relative position bias."""

    def __init__(self, dims: int, num_heads: int, window: int, qkv_bias: bool):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f"AudioConfig: stage width {dims} is not a multiple of its {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dims // num_heads) ** -0.5
        self.query = nn.Linear(dims, dims, bias=qkv_bias)
        self.key = nn.Linear(dims, dims, bias=qkv_bias)
        self.value = nn.Linear(dims, dims, bias=qkv_bias)
        self.window_tokens = window * window
        self.relative_position_bias_table = mx.zeros(((2 * window - 1) ** 2, num_heads))
        self._bias_index = mx.array(relative_position_index(window).reshape(-1))
        self._derived = DerivedArrays()

    def position_bias(self) -> mx.array:
        """[heads, window², window²] bias added to the attention scores."""
        bias = self.relative_position_bias_table[self._bias_index]
        return bias.reshape(self.window_tokens, self.window_tokens, self.num_heads).transpose(2, 0, 1)

    def attention_bias(self, mask: mx.array | None) -> mx.array:
        """[1 or windows, heads, window², window²]: position bias (+ shifted-window mask)."""

        def build(*_sources: mx.array) -> mx.array:
            bias = self.position_bias()[None]
            return bias if mask is None else bias + mask[:, None]

        sources = (self.relative_position_bias_table,) + ((mask,) if mask is not None else ())
        return self._derived.get("bias", sources, build)

    def pad_row(self) -> mx.array:
        """The q/k/v projection of a padding token: zero after the layer norm, so the bias."""
        weight, bias = self.fused_qkv()
        return bias if bias is not None else mx.zeros((weight.shape[0],))

    def fused_qkv(self) -> tuple[mx.array, mx.array | None]:
        """Query, key and value projections as one [3 * dims, dims] weight (one GEMM)."""
        layers = (self.query, self.key, self.value)
        weight = self._derived.get("qkv_weight", tuple(l.weight for l in layers), lambda *w: mx.concatenate(w))
        if "bias" not in self.query:
            return weight, None
        bias = self._derived.get("qkv_bias", tuple(l.bias for l in layers), lambda *b: mx.concatenate(b))
        return weight, bias

    def __call__(self, x: mx.array, windows: np.ndarray, mask: mx.array | None) -> mx.array:
        """x: [B, tokens, C]; windows: [windows, window²] token indices (-1: padding);
        mask: [windows, window², window²] or None. The q/k/v GEMM runs over the tokens in
        place and ops.attention reads each window through `windows`: no gather, no scatter."""
        weight, bias = self.fused_qkv()
        qkv = linear_ops.affine(x, weight, bias)
        return ops.attention(qkv, self.num_heads, self.scale, self.attention_bias(mask), windows, self.pad_row())


class WindowAttention(nn.Module):
    def __init__(self, dims: int, num_heads: int, window: int, qkv_bias: bool):
        super().__init__()
        self.self = WindowSelfAttention(dims, num_heads, window, qkv_bias)
        self.output = Dense(dims, dims)

    def __call__(self, x: mx.array, windows: np.ndarray, mask: mx.array | None) -> mx.array:
        return self.output(self.self(x, windows, mask))


class SwinLayer(nn.Module):
    """Pre-norm Swin block: (shifted) window attention, then the GELU MLP."""

    def __init__(self, cfg: AudioConfig, dims: int, resolution: tuple[int, int], num_heads: int, shift: int):
        super().__init__()
        window = cfg.window_size
        if min(resolution) <= window:
            # transformers' set_shift_and_window_size: one window covers the map, no shift.
            shift, window = 0, min(resolution)
        if window != cfg.window_size:
            raise ValueError(
                f"AudioConfig: a {resolution[0]}x{resolution[1]} stage is smaller than window_size "
                f"{cfg.window_size} (transformers cannot run this configuration either)"
            )
        self.resolution = resolution
        self.window = window
        self.shift = shift
        self.layernorm_before = ops.LayerNorm(dims, eps=cfg.layer_norm_eps)
        self.attention = WindowAttention(dims, num_heads, window, cfg.qkv_bias)
        self.layernorm_after = ops.LayerNorm(dims, eps=cfg.layer_norm_eps)
        hidden = int(cfg.mlp_ratio * dims)
        self.intermediate = Dense(dims, hidden)
        self.output = Dense(hidden, dims)
        # Padding, cyclic shift and window partition as one token index table.
        self._windows = window_table(*resolution, window, shift)
        if shift:
            padded = (round_up(resolution[0], window), round_up(resolution[1], window))
            self._mask = mx.array(shifted_window_mask(*padded, window, shift))
        else:
            self._mask = None

    def fused_sources(self) -> tuple[mx.array, ...]:
        """The parameters fused_params reads: its leaf modules' arrays and the position bias table."""
        attention = self.attention.self
        leaves = (
            self.layernorm_before, attention.query, attention.key, attention.value, self.attention.output.dense,
            self.layernorm_after, self.intermediate.dense, self.output.dense,
        )
        return (*(a for leaf in leaves for a in leaf.values()), attention.relative_position_bias_table)

    def fused_params(self) -> swin_fused.BlockParams:
        """This block for the fused kernels (swin_fused.py), its linear weights packed once."""
        attention = self.attention.self
        qkv_weight, qkv_bias = attention.fused_qkv()
        layers = {"qkv": qkv_weight, "proj": self.attention.output.dense.weight}
        layers |= {"fc1": self.intermediate.dense.weight, "fc2": self.output.dense.weight}
        packed = {n: attention._derived.get(f"{n}_panels", (w,), swin_fused.pack_panels) for n, w in layers.items()}
        norms = (self.layernorm_before, self.layernorm_after)
        weights = (
            norms[0].get("weight"), norms[0].get("bias"), packed["qkv"], qkv_bias,
            packed["proj"], self.attention.output.dense.get("bias"),
            norms[1].get("weight"), norms[1].get("bias"), packed["fc1"], self.intermediate.dense.get("bias"),
            packed["fc2"], self.output.dense.get("bias"),
        )  # fmt: skip
        return swin_fused.BlockParams(
            weights, self.layernorm_before.eps, qkv_weight.shape[1], self.intermediate.dense.weight.shape[0],
            attention.num_heads, attention.scale, np.ascontiguousarray(self._windows, np.int32),
            attention.attention_bias(self._mask), attention.pad_row(),
        )  # fmt: skip

    def attend(self, x: mx.array) -> mx.array:
        """[B, H*W, C] -> [B, H*W, C] through the (shifted) windows."""
        return self.attention(x, self._windows, self._mask)

    def __call__(self, x: mx.array, pending: mx.array | None = None) -> tuple[mx.array, mx.array]:
        """x: [B, H*W, C], plus `pending` to add to it (the previous block's MLP output; its
        buffer is donated) -> (the residual stream, this block's MLP output to add to it).
        Leaving the add to the next block folds it into that block's first layer norm."""
        norm = self.layernorm_before
        if pending is None:
            normed = norm(x)
        else:
            x, normed = ops.add_layer_norm(pending, x, norm.weight, norm.bias, norm.eps)
        attended = self.attend(normed)
        norm = self.layernorm_after
        x, normed = ops.add_layer_norm(attended, x, norm.weight, norm.bias, norm.eps)
        return x, self.output(linear_ops.linear_gelu(self.intermediate.dense, normed))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods -> one token of twice the width."""

    def __init__(self, dims: int, resolution: tuple[int, int]):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dims, 2 * dims, bias=False)
        self.norm = ops.LayerNorm(4 * dims)
        self._derived = DerivedArrays()

    def fused_params(self) -> swin_fused.MergeParams:
        """This merging for the fused kernels (swin_fused.py), its reduction packed once."""
        reduction = self._derived.get("panels", (self.reduction.weight,), swin_fused.pack_panels)
        norm = self.norm
        return swin_fused.MergeParams(
            self.resolution, norm.get("weight"), norm.get("bias"), norm.eps, reduction, self.reduction.weight.shape[0]
        )

    def __call__(self, x: mx.array) -> mx.array:
        batch, _, dims = x.shape
        height, width = self.resolution
        x = x.reshape(batch, height, width, dims)
        if height % 2 or width % 2:
            x = mx.pad(x, [(0, 0), (0, height % 2), (0, width % 2), (0, 0)])
        x = x.reshape(batch, x.shape[1] // 2, 2, x.shape[2] // 2, 2, dims)
        # transformers concatenates (row, col) = (0,0), (1,0), (0,1), (1,1): column-major.
        x = x.transpose(0, 1, 3, 4, 2, 5).reshape(batch, -1, 4 * dims)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self,
        cfg: AudioConfig,
        dims: int,
        resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        downsample: bool,
    ):
        super().__init__()
        self.blocks = [
            SwinLayer(cfg, dims, resolution, num_heads, shift=cfg.window_size // 2 if i % 2 else 0)
            for i in range(depth)
        ]
        self.downsample = PatchMerging(dims, resolution) if downsample else None
        self._derived = DerivedArrays()

    def fused_params(self) -> swin_fused.StageParams:
        """The stage for the fused kernels, built once (with its host views) per set of weights."""

        def build(*_params: mx.array) -> swin_fused.StageParams:
            merge = self.downsample.fused_params() if self.downsample is not None else None
            return swin_fused.StageParams(tuple(block.fused_params() for block in self.blocks), merge)

        # named arrays, not tree_flatten(self.parameters()): a cheaper identity check per forward
        sources = tuple(a for block in self.blocks for a in block.fused_sources())
        if self.downsample is not None:
            sources += (*self.downsample.norm.values(), *self.downsample.reduction.values())
        return self._derived.get("stage", sources, build, evaluate=False)

    def per_op(self, x: mx.array) -> mx.array:
        """The stage op by op (ops.py), each op on its own path: the path of a GPU."""
        pending = None
        for block in self.blocks:
            x, pending = block(x, pending)
        x = x + pending
        return self.downsample(x) if self.downsample is not None else x

    def __call__(self, x: mx.array) -> mx.array:
        return swin_fused.run_stage(x, self.fused_params, self.per_op)


class HTSATAudioEncoder(nn.Module):
    """transformers' `ClapAudioEncoder`: log-mel [B, C, T, mels] -> pooled features [B, hidden]."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        if cfg.enable_fusion and cfg.fusion_type == "channel_map":
            raise ValueError('AudioConfig: fusion_type "channel_map" is not supported (nor runnable in transformers)')
        if cfg.hidden_act != "gelu":
            raise ValueError(f'AudioConfig: hidden_act {cfg.hidden_act!r} is not supported (only "gelu")')
        self.cfg = cfg
        self.freq_ratio = cfg.spec_size // cfg.num_mel_bins
        self.input_channels = 4 if cfg.enable_fusion else 1
        self.batch_norm = FrozenBatchNorm(cfg.num_mel_bins)
        self.patch_embed = PatchEmbed(cfg)
        grid = (cfg.spec_size // cfg.patch_stride[0], cfg.spec_size // cfg.patch_stride[1])
        stages = len(cfg.depths)
        self.layers = [
            SwinStage(
                cfg,
                dims=cfg.patch_embeds_hidden_size * 2**i,
                resolution=(grid[0] // 2**i, grid[1] // 2**i),
                depth=depth,
                num_heads=num_heads,
                downsample=i < stages - 1,
            )
            for i, (depth, num_heads) in enumerate(zip(cfg.depths, cfg.num_attention_heads))
        ]
        self.num_features = cfg.patch_embeds_hidden_size * 2 ** (stages - 1)
        self.norm = ops.LayerNorm(self.num_features)
        self._derived = DerivedArrays()

    def mel_image(self, features: mx.array) -> mx.array:
        """[B, C, T, mels] -> [B, spec_size, spec_size, C]: time resized to spec_size * freq_ratio
        (bicubic), then cut into freq_ratio chunks stacked along the frequency axis."""
        batch, channels, frames, mels = features.shape
        chunk = self.cfg.spec_size
        # Time first, so the resize is one gather over every (clip, channel, mel) column.
        features = features.transpose(2, 0, 1, 3).reshape(frames, -1)
        if frames < chunk * self.freq_ratio:
            features = bicubic_resize(features, chunk * self.freq_ratio)
        features = features.reshape(self.freq_ratio, chunk, batch, channels, mels)
        return features.transpose(2, 0, 4, 1, 3).reshape(batch, self.freq_ratio * mels, chunk, channels)

    def front_per_op(self, features: mx.array, longer_rows: np.ndarray) -> mx.array:
        """Batch norm, mel image and patch embedding op by op: [B, C, T, mels] -> patch tokens."""
        if not longer_rows.size:
            # without fusion only channel 0 (the global mel) is read: the local crops' image
            # would be three quarters of the resize's work for nothing
            features = features[:, :1]
        return self.patch_embed(self.mel_image(self.batch_norm(features)), longer_rows)

    def front_params(self) -> front_fused.FrontParams:
        """The front for the host kernels (front_fused.py), its weights packed once."""

        def build(*_sources: mx.array) -> front_fused.FrontParams:
            bn = self.batch_norm
            norm = mx.stack([bn.running_mean, mx.sqrt(bn.running_var + bn.eps), bn.weight, bn.bias])
            fusable = self.patch_embed.host_fusable() and norm.dtype == mx.float32
            mx.eval(norm)
            return front_fused.FrontParams(
                norm, self.freq_ratio, self.cfg.spec_size, *self.patch_embed.front_layers(), fusable
            )

        sources = tuple(a for _, a in tree_flatten([self.batch_norm.parameters(), self.patch_embed.parameters()]))
        return self._derived.get("front", sources, build, evaluate=False)

    def check_inputs(self, input_features: mx.array, is_longer: mx.array) -> None:
        max_frames = self.cfg.spec_size * self.freq_ratio
        shape = tuple(input_features.shape)
        if (
            len(shape) != 4
            or shape[1] != self.input_channels
            or shape[3] != self.cfg.num_mel_bins
            or shape[3] * self.freq_ratio != self.cfg.spec_size
            or shape[2] > max_frames
        ):
            expected = f"[batch, {self.input_channels}, frames <= {max_frames}, {self.cfg.num_mel_bins}]"
            raise ValueError(f"input_features: expected shape {expected}, got {list(shape)}")
        if is_longer.size != shape[0]:
            raise ValueError(f"is_longer: expected {shape[0]} flags (one per clip), got {list(is_longer.shape)}")

    def __call__(self, input_features: mx.array, is_longer: mx.array) -> mx.array:
        """input_features: [B, C, T, mels] float32; is_longer: [B] bool -> [B, num_features]."""
        self.check_inputs(input_features, is_longer)
        # Only clips flagged longer go through fusion, so the row selection is host-side.
        longer_rows = np.flatnonzero(np.array(is_longer).reshape(-1) if self.cfg.enable_fusion else [])
        x = front_fused.run_front(input_features, longer_rows, self.front_params, self.front_per_op)
        for stage in self.layers:
            x = stage(x)
        # transformers' pooler regroups the tokens before averaging them all: a plain mean.
        return self.norm(x).mean(axis=1)


def sanitize_audio_encoder(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """PyTorch `audio_model.audio_encoder.*` entries (prefix stripped) -> this module's params."""
    sanitized = {}
    for key, value in weights.items():
        if key.endswith(("num_batches_tracked", "relative_position_index")):
            continue  # counters and buffers this port recomputes
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)  # Conv2d OIHW -> OHWI
        sanitized[key] = value
    return sanitized
