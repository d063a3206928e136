"""Elementwise hot ops used by both towers.

MLX's CPU backend evaluates transcendental functions (exp, erf, tanh) 20-130x slower
than torch, so the towers call these functions instead of `nn.gelu`/`mx.softmax`
directly: this module is the one place where they are engineered for speed.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as transformers' "gelu"."""
    return nn.gelu(x)


def softmax(x: mx.array, axis: int = -1) -> mx.array:
    return mx.softmax(x, axis=axis, precise=True)


def layer_norm(x: mx.array, weight: mx.array, bias: mx.array, eps: float) -> mx.array:
    return mx.fast.layer_norm(x, weight, bias, eps)


def tanh(x: mx.array) -> mx.array:
    return mx.tanh(x)


def sigmoid(x: mx.array) -> mx.array:
    return mx.sigmoid(x)
