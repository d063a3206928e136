"""Turning CLAP embeddings into probabilities (numpy, shared by the API and the monitor).

Two questions need two different scores:

* Classification ("which one of these labels?"): a softmax over the logit-scaled cosine
  similarities of one audio clip to all labels. This is exactly transformers'
  `logits_per_audio.softmax(-1)`; the probabilities sum to 1 over the labels, so adding a
  label changes every other label's probability.

* Tagging / detection ("is this label present?"): each label needs a probability of its own.
  A CLAP similarity is only meaningful relative to another text, so every label is
  contrasted with a *background* embedding (the normalised mean of generic prompts such as
  "a sound."): a two-way softmax between the label and the background,
  p = sigmoid(logit_scale * (cos(audio, label) - cos(audio, background))).
  It is 0.5 when the clip matches the label exactly as well as it matches the generic
  background, and it does not depend on which other labels are being scored.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

DEFAULT_BACKGROUND_PROMPTS: tuple[str, ...] = (
    "a sound.",
    "This is a sound.",
    "an audio recording.",
    "background noise.",
)


def l2_normalize(x: np.ndarray | mx.array, axis: int = -1) -> np.ndarray | mx.array:
    """x / max(||x||, 1e-12) along `axis`, as torch's F.normalize. An mx.array stays one (the model
    normalises its embeddings inside its graph); anything else becomes a float64 numpy array."""
    xp = mx if isinstance(x, mx.array) else np
    if xp is np:
        x = np.asarray(x, dtype=np.float64)
    return x / xp.maximum(xp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def cosine_similarity(audio_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """[N, D] x [M, D] -> [N, M] cosine similarities (inputs need not be normalised)."""
    return l2_normalize(np.atleast_2d(audio_emb)) @ l2_normalize(np.atleast_2d(text_emb)).T


def background_embedding(prompt_embs: np.ndarray) -> np.ndarray:
    """One background direction [D] from one or several prompt embeddings ([D] or [K, D])."""
    return l2_normalize(l2_normalize(np.atleast_2d(prompt_embs)).mean(axis=0))


def softmax_probabilities(
    audio_emb: np.ndarray, text_emb: np.ndarray, logit_scale: float
) -> np.ndarray:
    """Zero-shot classification: [N, D] audio x [M, D] labels -> [N, M], rows sum to 1.

    A single audio embedding [D] gives a single row [M].
    """
    probs = softmax(logit_scale * cosine_similarity(audio_emb, text_emb))
    return _match_rank(probs, audio_emb).astype(np.float32)


def contrast_probabilities(
    audio_emb: np.ndarray,
    label_emb: np.ndarray,
    background_emb: np.ndarray,
    logit_scale: float,
) -> np.ndarray:
    """Independent per-label probabilities: [N, D] audio x [M, D] labels -> [N, M] in (0, 1).

    `background_emb` is [D] or [K, D] (several prompts are averaged, see
    `background_embedding`). A single audio embedding [D] gives a single row [M].
    """
    background = background_embedding(background_emb)
    margin = cosine_similarity(audio_emb, label_emb) - cosine_similarity(audio_emb, background)
    return _match_rank(sigmoid(logit_scale * margin), audio_emb).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    logits = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """exp(-log(1 + exp(-x))): stable for large |x|."""
    return np.exp(-np.logaddexp(0.0, -x))


def _match_rank(probs: np.ndarray, audio_emb: np.ndarray) -> np.ndarray:
    return probs[0] if np.ndim(audio_emb) == 1 else probs
