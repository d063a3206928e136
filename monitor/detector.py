"""Scores windows against the configured labels with CLAP, on its own thread.

The windower feeds a bounded `WindowQueue`; the `DetectorThread` takes whatever
is pending (up to `batch_size`) per model call, so a backlog is worked off in
batches. For live sources the queue drops its OLDEST windows when full: the
monitor stays current instead of accumulating latency. The model is anything
with the `Embedder` methods (in the service: `clap_mlx.api.CLAP`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from clap_mlx import release_thread
from clap_mlx.anchors import Anchor, ExampleCache, label_scorer

from .config import MonitorConfig
from .windower import Window

log = logging.getLogger(__name__)


RECENT_BATCHES = 20  # batches the mean inference time is taken over


class Embedder(Protocol):
    """What the detector needs of a model: L2-normalised embeddings in one shared space; labels
    taught by examples also use `name` and `batch_size` (the example cache's key and batches)."""

    name: str
    batch_size: int

    def embed_audio(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """48 kHz mono float32 waveforms -> [N, D]."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> [M, D]."""

    @property
    def logit_scale_audio(self) -> float:
        """The temperature of audio-to-text logits."""


@dataclass(frozen=True)
class Detection:
    window: Window
    scores: dict[str, float] | None  # None: the window was gated (too quiet to score)
    inference_ms: float | None = None  # model wall time per window of its batch; None when gated


class Detector:
    """Holds the model and scores windows against the labels (`clap_mlx.anchors.LabelScorer`):
    labels taught by prompts, by example audio, or both, each against the background."""

    def __init__(self, embedder: Embedder, labels: dict[str, Anchor | Sequence[str]], background_prompts: Sequence[str],
                 background_examples: Sequence[str] = ()):
        """`labels`: {name: Anchor, or the label's prompts}; `background_examples`: audio files or
        folders the example parts of labels are contrasted with (default: generic sounds)."""
        anchors = {name: a if isinstance(a, Anchor) else Anchor(tuple(a)) for name, a in labels.items()}
        self.embedder = embedder
        self.labels = list(anchors)
        self.cache = ExampleCache(embedder) if any(a.examples for a in anchors.values()) else None
        self.scorer = label_scorer(embedder, anchors, background_prompts, background_examples, cache=self.cache)

    def log_examples(self) -> None:
        """Log how the example audio was embedded (called once the log sink runs)."""
        if self.cache is not None:
            log.info("example audio (labels' and background): %d embedded, %d from the cache in %s",
                     self.cache.misses, self.cache.hits, self.cache.folder,
                     extra={"kind": "examples", "embedded": self.cache.misses, "cached": self.cache.hits,
                            "cache": str(self.cache.folder)})

    @classmethod
    def from_config(cls, embedder: Embedder, cfg: MonitorConfig) -> "Detector":
        return cls(embedder, *taught_by(cfg))

    def score(self, waveforms: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """48 kHz mono windows -> one {label: probability} per window."""
        if not waveforms:
            return []
        probs = self.scorer.probabilities(self.embedder.embed_audio(list(waveforms)))
        return [dict(zip(self.labels, map(float, row))) for row in probs]


def taught_by(cfg: MonitorConfig) -> tuple[dict[str, Anchor], tuple[str, ...], tuple[str, ...]]:
    """What a detector for `cfg` is built from: {label: Anchor}, background prompts and audio
    (equal for two configs: the same detector)."""
    anchors = {label.name: Anchor(cfg.prompts(label), label.examples or (), label.text_weight) for label in cfg.labels}
    return anchors, cfg.detector.background, cfg.detector.background_examples


class WindowQueue:
    """Bounded FIFO between windower and detector.

    `put(block=False)` (live sources) evicts the oldest window when full and counts
    it; `put(block=True)` waits for room instead (non-live sources: nothing lost).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.dropped = 0
        self._items: deque[Window] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self.on_change: Callable[[], None] | None = None  # called after each put and the close (a shared reader's wake-up)

    def put(self, window: Window, block: bool = False) -> None:
        with self._cond:
            if block:
                self._cond.wait_for(lambda: len(self._items) < self.limit or self._closed)
            elif len(self._items) >= self.limit:
                self._items.popleft()
                self.dropped += 1
            self._items.append(window)
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def take(self, limit: int) -> list[Window]:
        """Up to `limit` oldest windows; waits for at least one. [] once closed and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed)
            batch = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            self._cond.notify_all()
            return batch

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """No more windows; `take` drains what is left, then returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change()

    def __len__(self) -> int:
        return len(self._items)


class ScoringStats:
    """Windows scored and model time: what the pipeline reports of whoever scores its windows."""

    def __init__(self):
        self.windows_scored = 0
        self.busy_s = 0.0  # wall time spent in the model
        self._recent: deque[tuple[float, int]] = deque(maxlen=RECENT_BATCHES)  # (model s, windows) per batch
        self._recent_lock = threading.Lock()  # read by status() on other threads

    @property
    def inference_ms(self) -> float | None:
        """Mean model wall time per scored window over the recent batches (None: none scored yet)."""
        with self._recent_lock:
            seconds, windows = sum(s for s, _ in self._recent), sum(n for _, n in self._recent)
        return 1000 * seconds / windows if windows else None

    def record(self, elapsed: float, windows: int) -> None:
        self.busy_s += elapsed
        self.windows_scored += windows
        if windows:
            with self._recent_lock:
                self._recent.append((elapsed, windows))


class DetectorThread(threading.Thread, ScoringStats):
    """Takes batches from the queue, scores the ungated windows, hands detections on in order."""

    def __init__(
        self,
        detector: Detector,
        queue: WindowQueue,
        on_detections: Callable[[list[Detection]], None],
        batch_size: int,
    ):
        threading.Thread.__init__(self, name="detector", daemon=True)
        ScoringStats.__init__(self)
        self.detector, self.queue, self.on_detections, self.batch_size = detector, queue, on_detections, batch_size
        self.error: BaseException | None = None

    def run(self) -> None:
        self.detector.log_examples()
        try:
            while batch := self.queue.take(self.batch_size):
                self.on_detections(self._score(batch))
        except BaseException as error:  # surfaced by the pipeline; the thread must not die silently
            log.exception("detector stopped by an error")
            self.error = error
            self.queue.close()  # a paced windower must not wait for room forever
        finally:
            release_thread()  # this thread ran the model

    def _score(self, batch: list[Window]) -> list[Detection]:
        detections, elapsed = score_batch(self.detector, batch)
        self.record(elapsed, sum(not w.gated for w in batch))
        return detections


def score_batch(detector: Detector, batch: list[Window]) -> tuple[list[Detection], float]:
    """One model call for the ungated windows; (a detection per window in order, model seconds)."""
    audible = [w for w in batch if not w.gated]
    started = time.perf_counter()
    scores = iter(detector.score([w.samples for w in audible]))
    elapsed = time.perf_counter() - started
    per_window_ms = 1000 * elapsed / len(audible) if audible else None
    return [Detection(w, None, None) if w.gated else Detection(w, next(scores), per_window_ms) for w in batch], elapsed
