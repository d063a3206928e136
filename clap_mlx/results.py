"""Result objects returned by `embed`, `classify` and `tag`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np


class ResultArray(mx.array):
    """An `mx.array` that also offers `.numpy()`, as the CLAP documentation promises.

    Operations on it (`@`, `.T`, `mx.concatenate`, ...) return plain `mx.array`s.
    """

    def numpy(self) -> np.ndarray:
        """A NumPy copy with the same shape and dtype."""
        return np.array(self)


def _wrap_arrays(result: Any, names: tuple[str, ...]) -> None:
    """Turns the named fields of `result` (array-likes or None) into `ResultArray`s."""
    for name in names:
        value = getattr(result, name)
        if value is not None and not isinstance(value, ResultArray):
            setattr(result, name, ResultArray(value))


@dataclass
class CLAPEmbeddingResult:
    """Embeddings in CLAP's shared 512-d space (rows are L2-normalised).

    `similarity[i, j]` is the cosine similarity of audio i and text j (only when
    `return_similarity=True`). The three arrays are `ResultArray`s: `mx.array`s with `.numpy()`;
    `np.asarray(...)` works too, and `numpy()` returns all of them at once.
    """

    audio_embedding: mx.array | None = None
    text_embedding: mx.array | None = None
    similarity: mx.array | None = None
    texts: list[str] = field(default_factory=list)
    batched_audio: bool = False

    def __post_init__(self) -> None:
        _wrap_arrays(self, ("audio_embedding", "text_embedding", "similarity"))

    def best_match(self) -> str | list[str]:
        """The text closest to the audio; a list (one per clip) when a list of audio was given."""
        if self.audio_embedding is None or self.text_embedding is None:
            raise ValueError("best_match() needs both audio and text: call embed(audio=..., text=...)")
        similarity = np.asarray(self.audio_embedding) @ np.asarray(self.text_embedding).T
        best = [self.texts[j] for j in similarity.argmax(axis=1)]
        return best if self.batched_audio else best[0]

    def numpy(self) -> dict[str, np.ndarray]:
        """The arrays that are present, as numpy arrays keyed by field name."""
        arrays = {
            "audio_embedding": self.audio_embedding,
            "text_embedding": self.text_embedding,
            "similarity": self.similarity,
        }
        return {name: np.asarray(a) for name, a in arrays.items() if a is not None}


@dataclass
class ClassificationResult:
    """Zero-shot classification of one clip: a softmax over `class_names` (sums to 1)."""

    predicted_class: str
    confidence: float
    probabilities: mx.array  # [num_labels], in the order of class_names
    class_names: list[str]
    top_k_classes: list[str]
    top_k_probs: list[float]

    def __post_init__(self) -> None:
        _wrap_arrays(self, ("probabilities",))

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_class": self.predicted_class,
            "confidence": self.confidence,
            "probabilities": dict(zip(self.class_names, np.asarray(self.probabilities).tolist())),
            "top_k": [{"label": c, "probability": p} for c, p in zip(self.top_k_classes, self.top_k_probs)],
        }


@dataclass
class TaggingResult:
    """Independent per-tag probabilities of one clip (each tag vs. a background prompt)."""

    active_tags: list[str]  # tags with probability >= threshold, most probable first
    tags: list[str]
    probabilities: list[float]  # in the order of tags
    threshold: float

    def scores(self) -> dict[str, float]:
        return dict(zip(self.tags, self.probabilities))

    def to_dict(self) -> dict[str, Any]:
        return {"active_tags": self.active_tags, "threshold": self.threshold, "probabilities": self.scores()}
