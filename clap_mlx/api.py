"""High-level offline API: `embed`, `classify`, `tag`, and the `CLAP` runtime object they share."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import mlx.core as mx
import numpy as np

from . import anchors, scoring
from .audio_io import AudioInput, AudioInputError, load_audio
from .loading import DEFAULT_MODEL, load
from .results import CLAPEmbeddingResult, ClassificationResult, TaggingResult

AUDIO_BATCH_SIZE = 8
TEXT_BATCH_SIZE = 64
TEXT_CACHE_SIZE = 4096


class CLAP:
    """A loaded CLAP model that embeds 48 kHz mono waveforms and texts into the shared space.

    Text embeddings are kept in an LRU cache (per model, keyed by the exact text), so
    scoring many clips against the same labels encodes the labels once.
    """

    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = AUDIO_BATCH_SIZE):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        bundle = load(model)
        self.name = bundle.name
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.feature_extractor = bundle.feature_extractor
        self.config = bundle.config
        self.batch_size = batch_size
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CLAP({self.name!r})"

    @property
    def logit_scale_audio(self) -> float:
        """exp(logit_scale_a): the temperature transformers applies to logits_per_audio."""
        return float(np.exp(np.asarray(self.model.logit_scale_a, dtype=np.float64).reshape(())))

    def embed_audio(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """48 kHz mono float32 waveforms -> [N, 512] L2-normalised embeddings."""
        chunks = [
            self._embed_audio_batch(waveforms[i : i + self.batch_size])
            for i in range(0, len(waveforms), self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.config.projection_dim), np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> [M, 512] L2-normalised embeddings (cached)."""
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
            for i in range(0, len(missing), TEXT_BATCH_SIZE):
                batch = missing[i : i + TEXT_BATCH_SIZE]
                self._text_cache.update(zip(batch, self._embed_text_batch(batch)))
            rows = []
            for t in texts:
                self._text_cache.move_to_end(t)
                rows.append(self._text_cache[t])
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.config.projection_dim), np.float32)

    def _embed_audio_batch(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        features, is_longer = self.feature_extractor(list(waveforms))
        emb = self.model.get_audio_features(mx.array(features), mx.array(is_longer))
        return np.array(emb, dtype=np.float32)

    def _embed_text_batch(self, texts: list[str]) -> np.ndarray:
        ids, mask = self.tokenizer(texts)
        emb = self.model.get_text_features(mx.array(ids), mx.array(mask))
        return np.array(emb, dtype=np.float32)


_MODELS: dict[str, CLAP] = {}
_MODELS_LOCK = threading.Lock()


def get_model(name: str = DEFAULT_MODEL) -> CLAP:
    """The process-wide `CLAP` for `name` (a registry name or a local folder), loaded once."""
    with _MODELS_LOCK:
        if name not in _MODELS:
            _MODELS[name] = CLAP(name)
        return _MODELS[name]


def release_thread() -> None:
    """Frees the MLX streams of the calling thread; call it last in any thread that ran a model.

    MLX wants each thread's streams destroyed by that thread; left to process teardown
    they abort the interpreter at exit now and then (ml-explore/mlx#4327).
    """
    mx.clear_streams()


def clear_model_cache() -> None:
    """Forget the models loaded by `get_model` (e.g. after changing CLAP_MLX_MODEL_DIR)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def embed(
    audio: AudioInput | Sequence[AudioInput] | None = None,
    text: str | Sequence[str] | None = None,
    return_similarity: bool = False,
    model: str | CLAP = DEFAULT_MODEL,
    sample_rate: int | None = None,
    prompt: str | None = None,
) -> CLAPEmbeddingResult:
    """Embed audio and/or text; optionally their [N, M] cosine similarity."""
    if audio is None and text is None:
        raise ValueError("embed() needs audio=..., text=... or both")
    if return_similarity and (audio is None or text is None):
        raise ValueError("return_similarity=True needs both audio and text")
    texts = _text_list("text", text) if text is not None else []
    prompted = _apply_prompt(prompt, texts)
    waveforms, batched = _load_clips(audio, sample_rate) if audio is not None else ([], False)
    clap = _resolve_model(model)
    audio_embedding = mx.array(clap.embed_audio(waveforms)) if audio is not None else None
    text_embedding = mx.array(clap.embed_text(prompted)) if text is not None else None
    similarity = audio_embedding @ text_embedding.T if return_similarity else None
    return CLAPEmbeddingResult(audio_embedding, text_embedding, similarity, texts=texts, batched_audio=batched)


def classify(
    audio: AudioInput | Sequence[AudioInput],
    labels: Sequence[str] | Mapping[str, str | Sequence[str] | anchors.Anchor],
    top_k: int | None = None,
    sample_rate: int | None = None,
    model: str | CLAP = DEFAULT_MODEL,
    prompt: str | None = None,
) -> ClassificationResult | list[ClassificationResult]:
    """Zero-shot classification: softmax over the labels (transformers' logits_per_audio).

    `labels`: label texts, or {label: text | example audio files/folders | cm.anchor(...)}.
    """
    label_anchors = _anchors("labels", labels)
    labels = list(label_anchors)
    k = len(labels) if top_k is None else _check_top_k(top_k, len(labels))
    waveforms, batched = _load_clips(audio, sample_rate)
    clap = _resolve_model(model)
    scorer = anchors.label_scorer(clap, label_anchors, scoring.DEFAULT_BACKGROUND_PROMPTS, prompt=prompt)
    probs = scorer.class_probabilities(clap.embed_audio(waveforms))
    results = [_classification(row, labels, k) for row in probs]
    return results if batched else results[0]


def tag(
    audio: AudioInput | Sequence[AudioInput],
    tags: str | Sequence[str] | Mapping[str, str | Sequence[str] | anchors.Anchor],
    threshold: float = 0.5,
    sample_rate: int | None = None,
    model: str | CLAP = DEFAULT_MODEL,
    prompt: str | None = None,
    background: str | Sequence[str] | None = None,
) -> TaggingResult | list[TaggingResult]:
    """Multi-label tagging: an independent probability per tag (see `clap_mlx.anchors`).

    `background` are the generic prompts each tag is contrasted with (averaged);
    they are used verbatim (the `prompt` template is not applied to them). `tags`: tag texts,
    or {tag: text | example audio files/folders | cm.anchor(...)}.
    """
    tag_anchors = _anchors("tags", tags)
    tags = list(tag_anchors)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    background_prompts = (
        list(scoring.DEFAULT_BACKGROUND_PROMPTS) if background is None else _text_list("background", background)
    )
    waveforms, batched = _load_clips(audio, sample_rate)
    clap = _resolve_model(model)
    scorer = anchors.label_scorer(clap, tag_anchors, background_prompts, prompt=prompt)
    probs = scorer.probabilities(clap.embed_audio(waveforms))
    results = [_tagging(row, tags, threshold) for row in probs]
    return results if batched else results[0]


def _classification(probs: np.ndarray, labels: list[str], k: int) -> ClassificationResult:
    order = np.argsort(-probs, kind="stable")[:k]
    return ClassificationResult(
        predicted_class=labels[order[0]],
        confidence=float(probs[order[0]]),
        probabilities=mx.array(probs),
        class_names=labels,
        top_k_classes=[labels[i] for i in order],
        top_k_probs=[float(probs[i]) for i in order],
    )


def _tagging(probs: np.ndarray, tags: list[str], threshold: float) -> TaggingResult:
    order = np.argsort(-probs, kind="stable")
    return TaggingResult(
        active_tags=[tags[i] for i in order if probs[i] >= threshold],
        tags=tags,
        probabilities=[float(p) for p in probs],
        threshold=float(threshold),
    )


def _resolve_model(model: str | CLAP) -> CLAP:
    return model if isinstance(model, CLAP) else get_model(model)


def _load_clips(audio, sample_rate: int | None) -> tuple[list[np.ndarray], bool]:
    """One input or a list/tuple of inputs -> (48 kHz mono waveforms, whether it was a list)."""
    if not isinstance(audio, (list, tuple)):
        return [load_audio(audio, sample_rate)], False
    if not audio:
        raise ValueError("audio is an empty list")
    waveforms = []
    for i, item in enumerate(audio):
        try:
            waveforms.append(load_audio(item, sample_rate))
        except AudioInputError as e:
            raise AudioInputError(f"audio[{i}]: {e}") from None
    return waveforms, True


def _text_list(name: str, value: str | Sequence[str]) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise ValueError(f"{name} is empty: give at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{name}[{i}] must be a non-empty string, got {t!r}")
    return texts


def _label_list(name: str, value: str | Sequence[str]) -> list[str]:
    labels = _text_list(name, value)
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"{name} contains duplicates: {', '.join(map(repr, duplicates))}")
    return labels


def _anchors(name: str, labels) -> dict[str, anchors.Anchor]:
    if isinstance(labels, Mapping):
        return anchors.as_anchors(name, labels)
    return {label: anchors.anchor(text=label) for label in _label_list(name, labels)}


def _check_top_k(top_k: int, num_labels: int) -> int:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return min(top_k, num_labels)


def _apply_prompt(prompt: str | None, texts: list[str]) -> list[str]:
    if prompt is None:
        return texts
    if prompt.count("{}") != 1:
        raise ValueError(f"prompt must contain exactly one '{{}}' placeholder, got {prompt!r}")
    return [prompt.replace("{}", t) for t in texts]
