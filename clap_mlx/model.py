"""The assembled CLAP model: both towers, their projections into the shared space, logit scales.

Parameter names match transformers' `ClapModel` state dict (`audio_model.audio_encoder.*`,
`text_model.*`, `audio_projection.linear1`, ...), so `sanitize` only drops buffers and
transposes conv kernels.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .audio_encoder import HTSATAudioEncoder, sanitize_audio_encoder
from .config import CLAPConfig
from .scoring import l2_normalize
from .text_encoder import RobertaTextEncoder

AUDIO_ENCODER_PREFIX = "audio_model.audio_encoder."
# Buffers transformers saves that this port derives from input_ids instead.
TEXT_BUFFERS = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


class ProjectionLayer(nn.Module):
    """linear1 -> relu -> linear2 into the shared embedding space."""

    def __init__(self, in_dims: int, projection_dim: int, activation: str):
        super().__init__()
        if activation != "relu":
            raise ValueError(f'CLAPConfig: projection_hidden_act {activation!r} is not supported (only "relu")')
        self.linear1 = nn.Linear(in_dims, projection_dim)
        self.linear2 = nn.Linear(projection_dim, projection_dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear2(nn.relu(self.linear1(x)))


class AudioModel(nn.Module):
    """transformers' `ClapAudioModel`: only a holder for `audio_encoder`, kept for parameter names."""

    def __init__(self, cfg: CLAPConfig):
        super().__init__()
        self.audio_encoder = HTSATAudioEncoder(cfg.audio)


class CLAPModel(nn.Module):
    def __init__(self, cfg: CLAPConfig):
        super().__init__()
        self.config = cfg
        self.audio_model = AudioModel(cfg)
        self.text_model = RobertaTextEncoder(cfg.text)
        self.audio_projection = ProjectionLayer(cfg.audio.hidden_size, cfg.projection_dim, cfg.projection_hidden_act)
        self.text_projection = ProjectionLayer(cfg.text.hidden_size, cfg.projection_dim, cfg.projection_hidden_act)
        self.logit_scale_a = mx.array(math.log(cfg.logit_scale_init_value))
        self.logit_scale_t = mx.array(math.log(cfg.logit_scale_init_value))

    def get_audio_features(self, input_features: mx.array, is_longer: mx.array) -> mx.array:
        """Log-mel features [B, C, T, mels] and is_longer [B] -> L2-normalised embeddings [B, projection_dim]."""
        pooled = self.audio_model.audio_encoder(input_features, is_longer)
        return l2_normalize(self.audio_projection(pooled))

    def get_text_features(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
        """Token ids and mask [B, L] -> L2-normalised embeddings [B, projection_dim]."""
        return l2_normalize(self.text_projection(self.text_model(input_ids, attention_mask)))

    @staticmethod
    def sanitize(weights: dict[str, np.ndarray | mx.array]) -> dict[str, mx.array]:
        """A transformers `ClapModel` state dict -> this model's parameters (MLX layouts)."""
        audio, other = {}, {}
        for key, value in weights.items():
            if key in TEXT_BUFFERS or key.endswith("num_batches_tracked"):
                continue
            value = mx.array(value)
            if key.startswith(AUDIO_ENCODER_PREFIX):
                audio[key.removeprefix(AUDIO_ENCODER_PREFIX)] = value
            else:
                other[key] = value
        audio = {AUDIO_ENCODER_PREFIX + k: v for k, v in sanitize_audio_encoder(audio).items()}
        return {**other, **audio}
