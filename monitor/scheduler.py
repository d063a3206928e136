"""One model for several sources: the shared detector thread and each source's lane into it.

Every source keeps its own bounded `WindowQueue` (so drops are counted per source).
The `SharedDetector` fills each model call from the queues in turn, one window from
each source that has one, until the batch is full: a source with a backlog gets no
more than its share of a batch, so it cannot starve the others, and a quiet source's
windows wait at most one batch. Detections go back to their own source's pipeline
(`Lane.on_detections`) with only the labels that source watches.

A reload (`SharedDetector.reload`) is taken on the detector thread between two batches:
the label embeddings are rebuilt once for all sources (only when what teaches them
changed) and every lane gets its new labels in the same step, before its pipeline sees
a window scored with them. The process's `Health` (health.py) lives here too: every
source's pipeline reports to it, so a stall of the shared model is one stall for all.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from clap_mlx import release_thread

from .config import MonitorConfig
from .detector import Detection, Detector, ScoringStats, WindowQueue, score_batch
from .health import Health
from .sdnotify import Notifier
from .windower import Window

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0  # nothing queued anywhere: look again after this long even without a wake-up


class Lane(ScoringStats):
    """One source's share of the shared detector; to its pipeline it is what a DetectorThread is."""

    def __init__(self, shared: SharedDetector, queue: WindowQueue, on_detections: Callable[[list[Detection]], None],
                 labels: Sequence[str]):
        super().__init__()
        self.shared, self.queue, self.on_detections, self.labels = shared, queue, on_detections, list(labels)
        self.done = threading.Event()  # the queue is closed and every window of it was handed on

    @property
    def error(self) -> BaseException | None:
        return self.shared.error

    def start(self) -> None:
        self.shared.start_once()

    def is_alive(self) -> bool:
        return not self.done.is_set() and self.shared.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)


class SharedDetector(threading.Thread):
    def __init__(self, detector: Detector, batch_size: int, health: Health | None = None):
        """`health`: the process's (None: no watchdog, no stall limit)."""
        super().__init__(name="detector", daemon=True)
        self.detector, self.batch_size = detector, batch_size
        self.health = health or Health(Notifier({}), None)
        self.error: BaseException | None = None
        self._reload: tuple[MonitorConfig | None, dict[Lane, list[str]]] | None = None
        self._lanes: list[Lane] = []
        self._lock = threading.Lock()
        self._stop_when_idle = threading.Event()
        self._abandon = False
        self._wake = threading.Event()  # a window came or a queue closed
        self._next = 0  # the lane the next batch starts with

    def lane(self, queue: WindowQueue, on_detections: Callable[[list[Detection]], None], labels: Sequence[str]) -> Lane:
        lane = Lane(self, queue, on_detections, labels)
        queue.on_change = self._wake.set
        with self._lock:
            self._lanes.append(lane)
        return lane

    def reload(self, retaught: MonitorConfig | None, labels: dict[Lane, list[str]]) -> None:
        """From the next batch on: each lane gets its `labels`, and the label embeddings are built
        again from `retaught`'s labels (None: what teaches them is unchanged); safe from any thread."""
        self._reload = (retaught, labels)
        self._wake.set()

    def _take_reload(self) -> None:
        (cfg, labels), self._reload = self._reload, None
        if cfg is not None:
            try:
                self.detector = Detector.from_config(self.detector.embedder, cfg)
                self.detector.log_examples()
            except Exception:  # example audio that cannot be decoded: the running labels' embeddings go on
                log.exception("reload: the labels could not be embedded; scoring goes on with the previous ones",
                              extra={"kind": "reload_rejected"})
                return
        for lane, names in labels.items():
            lane.labels = names

    def start_once(self) -> None:
        with self._lock:
            if not self.is_alive() and self.ident is None:
                self.start()

    def stop(self, abandon: bool = False) -> None:
        """Ends the thread once every lane is done (lanes added later are not served); with
        `abandon` (after a stall: nobody drains the lanes any more) as soon as its model call returns."""
        self._abandon = abandon
        self._stop_when_idle.set()
        self._wake.set()

    def run(self) -> None:
        try:
            while True:
                if self._reload is not None:
                    self._take_reload()
                batch = self._take()
                if batch:
                    self._score(batch)
                elif self._stop_when_idle.is_set() and (self._abandon or all(lane.done.is_set() for lane in self._lanes)):
                    return
                else:
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()  # before the next look: a window put after it sets it again
        except BaseException as error:  # surfaced by every pipeline; the thread must not die silently
            log.exception("detector stopped by an error")
            self.error = error
            for lane in self._lanes:
                lane.queue.close()  # a paced windower must not wait for room forever
                lane.done.set()
        finally:
            release_thread()  # this thread ran the model

    def _take(self) -> list[tuple[Lane, Window]]:
        """Round-robin, one window per lane per turn, starting one lane further each batch."""
        with self._lock:
            lanes = self._lanes[self._next:] + self._lanes[: self._next]
            self._next = (self._next + 1) % max(1, len(self._lanes))
        batch: list[tuple[Lane, Window]] = []
        while len(batch) < self.batch_size:
            took = False
            for lane in lanes:
                if len(batch) < self.batch_size and len(lane.queue):
                    batch += [(lane, window) for window in lane.queue.take(1)]
                    took = True
            if not took:
                break
        for lane in lanes:
            if lane.queue.closed and not len(lane.queue) and not any(owner is lane for owner, _ in batch):
                lane.done.set()
        return batch

    def _score(self, batch: list[tuple[Lane, Window]]) -> None:
        detections, elapsed = score_batch(self.detector, [window for _, window in batch])
        scored = sum(not window.gated for _, window in batch)
        for lane in dict.fromkeys(owner for owner, _ in batch):
            # `if name in`: a pipeline opened while a reload's embeddings failed watches labels not scored
            mine = [Detection(d.window, d.scores and {name: d.scores[name] for name in lane.labels if name in d.scores},
                              d.inference_ms)
                    for (owner, _), d in zip(batch, detections) if owner is lane]
            audible = sum(d.scores is not None for d in mine)
            lane.record(elapsed * audible / scored if scored else 0.0, audible)
            lane.on_detections(mine)
