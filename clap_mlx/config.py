"""Typed model configuration read from a checkpoint's config.json (transformers `ClapConfig` layout)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def known_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of a checkpoint JSON that are fields of dataclass `cls` (lists as tuples); the rest are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in values.items() if k in names}
    for k, v in out.items():
        if isinstance(v, list):
            out[k] = tuple(v)
    return out


@dataclass(frozen=True)
class AudioConfig:
    window_size: int = 8
    num_mel_bins: int = 64
    spec_size: int = 256
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    hidden_size: int = 768
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_attention_heads: tuple[int, ...] = (4, 8, 16, 32)
    enable_fusion: bool = False
    fusion_type: str | None = None
    patch_embed_input_channels: int = 1
    flatten_patch_embeds: bool = True
    patch_embeds_hidden_size: int = 96
    enable_patch_layer_norm: bool = True
    qkv_bias: bool = True
    mlp_ratio: float = 4.0
    aff_block_r: int = 4
    hidden_act: str = "gelu"
    projection_hidden_act: str = "relu"
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AudioConfig":
        values = known_fields(cls, values)
        if isinstance(values.get("patch_stride"), int):
            values["patch_stride"] = (values["patch_stride"],) * 2
        return cls(**values)


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    projection_hidden_act: str = "relu"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TextConfig":
        return cls(**known_fields(cls, values))


@dataclass(frozen=True)
class CLAPConfig:
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection_dim: int = 512
    projection_hidden_act: str = "relu"
    logit_scale_init_value: float = 1 / 0.07

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CLAPConfig":
        top = known_fields(cls, values)
        top.pop("audio", None)
        top.pop("text", None)
        return cls(
            audio=AudioConfig.from_dict(values.get("audio_config") or {}),
            text=TextConfig.from_dict(values.get("text_config") or {}),
            **top,
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "CLAPConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))
