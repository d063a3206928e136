"""Labels taught by text, by example audio, or both, and how such labels are scored.

A label is an `Anchor`: text prompts and/or example audio (files or folders of them).

* text: t = the normalised mean of the prompts' text embeddings;
* examples: a = the normalised mean of the example clips' audio embeddings, each clip embedded
  whole with the library's deterministic crop (`CLAP.embed_audio`).

Each part is contrasted with a background of its own modality, because in CLAP an audio clip
is always closer to other audio than to any text (the modality gap): audio against a text
background would score every sound near 1. The text part is contrasted with the background
prompts (b_text, as `tag()` always did), the audio part with background audio (b_audio: your
recordings of what is normal, or else `generic_sounds()`, synthetic noises and tones). A label's
*margin* on a clip x (unit embedding) is the weighted sum of the two

    margin = w * (cos(x, t) - cos(x, b_text)) + (1 - w) * (cos(x, a) - cos(x, b_audio))
           = x . v,   v = w * (t - b_text) + (1 - w) * (a - b_audio)

with w = 1 for text only, 0 for examples only, `text_weight` (default 0.5) for both. `tag()` and
the sound monitor score sigmoid(logit_scale * margin), `classify()` a softmax over the labels'
logit_scale * margin. For text labels that is exactly what they computed before (the softmax
ignores the background term, which is the same for every label).

Example embeddings are cached on disk (`ExampleCache`), keyed by the file's content hash and
the model, so a changed file is embedded again and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .audio_io import SAMPLE_RATE, AudioInputError, load_audio
from .loading import cache_root
from .scoring import l2_normalize, sigmoid, softmax

PathLike = Union[str, os.PathLike]
# what libsndfile decodes; a folder of examples contributes its files with these suffixes
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
DEFAULT_TEXT_WEIGHT = 0.5


@dataclass(frozen=True)
class Anchor:
    """What a label is taught by: text prompts, example audio files/folders, or both."""

    text: tuple[str, ...] = ()
    examples: tuple[PathLike, ...] = ()
    text_weight: float = DEFAULT_TEXT_WEIGHT  # weight of the text margin when both are given

    def __post_init__(self):
        if not self.text and not self.examples:
            raise ValueError("a label needs text prompts, example audio, or both")
        for i, t in enumerate(self.text):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text[{i}] must be a non-empty string, got {t!r}")
        if not 0.0 <= self.text_weight <= 1.0:
            raise ValueError(f"text_weight must be in [0, 1], got {self.text_weight}")

    @property
    def weight(self) -> float:
        """The text margin's weight as used: 1 without examples, 0 without text."""
        return self.text_weight if self.text and self.examples else float(bool(self.text))


def anchor(
    text: str | Sequence[str] = (),
    examples: PathLike | Sequence[PathLike] = (),
    text_weight: float = DEFAULT_TEXT_WEIGHT,
) -> Anchor:
    """A label taught by `text` prompts and/or `examples` (audio files or folders of them).

    `text_weight` weighs the text margin against the audio margin when both are given
    (0: examples only, 1: text only).
    """
    text = (text,) if isinstance(text, str) else tuple(text)
    examples = (examples,) if isinstance(examples, (str, os.PathLike)) else tuple(examples)
    return Anchor(text, examples, float(text_weight))


def as_anchors(name: str, labels: Mapping[str, object]) -> dict[str, Anchor]:
    """A {label: spec} mapping as given to `classify`/`tag` -> {label: Anchor}.

    Each spec is a text prompt (str), a list of example audio files/folders (or one
    `pathlib.Path`), or an `Anchor` (`anchor(text=..., examples=...)`).
    """
    if not labels:
        raise ValueError(f"{name} is empty: give at least one label")
    anchors = {}
    for label, spec in labels.items():
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{name}: label names must be non-empty strings, got {label!r}")
        try:
            anchors[label] = _as_anchor(spec)
        except ValueError as e:
            raise ValueError(f"{name}[{label!r}]: {e}") from None
    return anchors


def _as_anchor(spec) -> Anchor:
    if isinstance(spec, Anchor):
        return spec
    if isinstance(spec, str):
        return anchor(text=spec)
    if isinstance(spec, os.PathLike):
        return anchor(examples=spec)
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, (str, os.PathLike)) for s in spec):
        return anchor(examples=spec)
    raise ValueError(
        f"expected a text prompt (str), a list of example audio files/folders or cm.anchor(...), got {spec!r}"
    )


def example_files(examples: Sequence[PathLike], what: str = "example") -> list[Path]:
    """Paths -> audio files: a file as is, a folder as its audio files (recursive, sorted).
    Errors name the path as `what` ("example '...': no such file or folder")."""
    files = []
    for example in examples:
        path = Path(example).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise AudioInputError(f"{what} folder '{path}': no audio files ({', '.join(AUDIO_SUFFIXES)}) in it")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise AudioInputError(f"{what} '{path}': no such file or folder")
    return files


def generic_sounds(seconds: float = 2.0) -> list[np.ndarray]:
    """The default background audio: white, pink and brown noise, three tones, a chirp, a click
    train, a noise with a speech-like 4 Hz envelope and a quiet hiss (48 kHz, deterministic)."""
    rng = np.random.default_rng(20240512)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE

    def coloured(power: float) -> np.ndarray:  # 1/f^power spectrum
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum[1:] /= np.fft.rfftfreq(n)[1:] ** (power / 2)
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, n)
        return x / x.std()

    sounds = [coloured(0.0), coloured(1.0), coloured(2.0)]
    sounds += [np.sqrt(2) * np.sin(2 * np.pi * f * t) for f in (250.0, 1000.0, 4000.0)]
    sounds.append(np.sqrt(2) * np.sin(2 * np.pi * (100 * t + (8000 - 100) / (2 * seconds) * t**2)))
    sounds.append(np.where(t * 4 % 1 < 0.002, 9.0, 0.0) + 0.01 * rng.standard_normal(n))
    sounds.append(rng.standard_normal(n) * (1 + np.sin(2 * np.pi * 4 * t)))
    sounds.append(0.03 * rng.standard_normal(n))
    return [(0.1 * s).astype(np.float32) for s in sounds]


class ExampleCache:
    """Audio embeddings of example clips, cached on disk per model and content.

    One `.npy` per clip under `$CLAP_MLX_CACHE/examples/<model>-<fingerprint>/<sha256 of the file
    or samples>.npy`. The fingerprint hashes the model's embedding of a fixed probe, so two
    different checkpoints under one name never share entries. `hits` / `misses` count the clips
    found / embedded since this object was made.
    """

    def __init__(self, clap, root: PathLike | None = None):
        self.clap = clap
        self.folder = Path(root or cache_root() / "examples") / f"{_safe(clap.name)}-{_fingerprint(clap)}"
        self.hits = self.misses = 0

    def embed_files(self, files: Sequence[PathLike]) -> np.ndarray:
        """[N, D] L2-normalised audio embeddings of audio files."""
        files = [Path(f) for f in files]
        return self._embed([_file_hash(f) for f in files], lambda i: load_audio(files[i]))

    def embed_waveforms(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] embeddings of 48 kHz mono float32 waveforms (keyed by their samples)."""
        keys = [hashlib.sha256(np.ascontiguousarray(w, np.float32).tobytes()).hexdigest() for w in waveforms]
        return self._embed(keys, lambda i: waveforms[i])

    def _embed(self, keys: list[str], load: Callable[[int], np.ndarray]) -> np.ndarray:
        entries = [self.folder / f"{key}.npy" for key in keys]
        rows = [_read(entry) for entry in entries]
        todo = [i for i, row in enumerate(rows) if row is None]
        self.hits += len(rows) - len(todo)
        self.misses += len(todo)
        for start in range(0, len(todo), self.clap.batch_size):
            batch = todo[start : start + self.clap.batch_size]
            for i, embedding in zip(batch, self.clap.embed_audio([load(i) for i in batch])):
                rows[i] = embedding
                _write(entries[i], embedding)
        return np.stack(rows) if rows else np.zeros((0, self.clap.config.projection_dim), np.float32)


@dataclass(frozen=True)
class LabelScorer:
    """Scores audio embeddings against labels: one contrast vector per label (module docstring)."""

    labels: list[str]
    vectors: np.ndarray  # [M, D]
    logit_scale: float

    def margins(self, audio_emb: np.ndarray) -> np.ndarray:
        """[N, D] audio embeddings -> [N, M] margins (cosine units, 0 = as close as the background)."""
        return l2_normalize(np.atleast_2d(audio_emb)) @ self.vectors.T

    def probabilities(self, audio_emb: np.ndarray) -> np.ndarray:
        """[N, M] independent per-label probabilities (tagging, detection)."""
        return sigmoid(self.logit_scale * self.margins(audio_emb)).astype(np.float32)

    def class_probabilities(self, audio_emb: np.ndarray) -> np.ndarray:
        """[N, M] softmax over the labels (classification)."""
        return softmax(self.logit_scale * self.margins(audio_emb)).astype(np.float32)


def label_scorer(
    clap,
    anchors: Mapping[str, Anchor],
    background: Sequence[str],
    background_examples: Sequence[PathLike] = (),
    prompt: str | None = None,
    cache: ExampleCache | None = None,
) -> LabelScorer:
    """The `LabelScorer` of `anchors` against the `background` prompts and, for labels with
    examples, the `background_examples` audio (default: `generic_sounds()`).

    `prompt` (a template with one "{}") applies to the labels' text, not to the background. All
    texts are encoded in one batched call; audio goes through `cache` (default: an
    `ExampleCache` under $CLAP_MLX_CACHE). Errors about example audio name the label and file.
    """
    from .api import _apply_prompt  # api imports this module

    texts = [t for a in anchors.values() for t in _apply_prompt(prompt, list(a.text))]
    files = {label: _for_label(label, example_files, a.examples) for label, a in anchors.items()}
    text_embeddings = iter(clap.embed_text(texts))
    b_text = l2_normalize(l2_normalize(clap.embed_text(list(background))).mean(axis=0))
    if any(files.values()):
        cache = cache or ExampleCache(clap)
        b_audio = l2_normalize(_for_label("background", _background_audio, cache, background_examples).mean(axis=0))
    vectors = []
    for label, a in anchors.items():
        vector = np.zeros_like(b_text)
        if a.text:
            t = l2_normalize(np.mean([next(text_embeddings) for _ in a.text], axis=0))
            vector += a.weight * (t - b_text)
        if a.examples:
            audio = l2_normalize(_for_label(label, cache.embed_files, files[label]).mean(axis=0))
            vector += (1.0 - a.weight) * (audio - b_audio)
        vectors.append(vector)
    return LabelScorer(list(anchors), np.stack(vectors), clap.logit_scale_audio)


def _background_audio(cache: ExampleCache, examples: Sequence[PathLike]) -> np.ndarray:
    if examples:
        return cache.embed_files(example_files(examples))
    return cache.embed_waveforms(generic_sounds())


def _for_label(label: str, fn, *args):
    try:
        return fn(*args)
    except AudioInputError as e:
        raise AudioInputError(f"examples of {label!r}: {e}") from None


def _fingerprint(clap) -> str:
    """A short hash of the model's embedding of a fixed probe, rounded to 2 decimals so that
    float rounding differences (BLAS threading) do not change it; computed once per model object."""
    if clap not in _FINGERPRINTS:
        probe = generic_sounds(seconds=1.0)[3]
        embedding = np.round(clap.embed_audio([probe])[0].astype(np.float64), 2) + 0.0  # + 0.0: no -0.0
        _FINGERPRINTS[clap] = hashlib.sha256(embedding.tobytes()).hexdigest()[:12]
    return _FINGERPRINTS[clap]


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise AudioInputError(f"example '{path}': cannot read it: {e.strerror or e}") from None
    return digest.hexdigest()


def _read(entry: Path) -> np.ndarray | None:
    try:
        return np.load(entry)
    except (OSError, ValueError):  # absent, or a torn/foreign file: embed again
        return None


def _write(entry: Path, embedding: np.ndarray) -> None:
    """Atomically (readers never see half a file); a read-only cache only costs recomputing."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=entry.parent, suffix=".tmp", delete=False) as f:
            np.save(f, np.asarray(embedding, np.float32))
        os.replace(f.name, entry)
    except OSError:
        pass
