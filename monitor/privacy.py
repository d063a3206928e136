"""Clip privacy: which events' clips are withheld because their audio was scored as a `clips.skip_if` label."""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from typing import Iterable, Mapping

from .events import EventMessage

log = logging.getLogger(__name__)

EPSILON_S = 1e-6  # window times are sums of float seconds
UNCHECKED = "unchecked audio"  # a reason no label can be (label names have no spaces)


class ClipGuard:
    """Remembers, for the audio the ring can still hold, which windows scored a skip_if label.

    `verdict(event)` looks at the windows overlapping the event's clip (pre-roll
    to post-roll, up to the newest window: the clip sink writes no audio past
    it): the skip_if labels that reached their threshold in any of them, and
    UNCHECKED when part of that audio was in no scored window (windows
    dropped while the detector was behind). Gated windows count as checked:
    too quiet to be scored is too quiet to hold the speech the labels catch.
    """

    def __init__(self, thresholds: Mapping[str, float], pre_roll_s: float, post_roll_s: float, memory_s: float):
        self.thresholds = dict(thresholds)  # skip_if label -> its threshold
        self.pre_roll_s, self.post_roll_s, self.memory_s = pre_roll_s, post_roll_s, memory_s
        self._windows: deque[tuple[float, float, tuple[str, ...]]] = deque()  # (start, end, labels hit)

    def observe(self, start_s: float, end_s: float, scores: Mapping[str, float] | None) -> None:
        """One window through the detector, in stream order; `scores` None: gated."""
        if not self.thresholds:
            return
        hits = tuple(label for label, threshold in self.thresholds.items()
                     if scores is not None and scores.get(label, 0.0) >= threshold)
        self._windows.append((start_s, end_s, hits))
        # the ring holds at most memory_s behind the newest audio: a clip holds nothing older
        while self._windows[0][1] < end_s - self.memory_s:
            self._windows.popleft()

    def verdict(self, event: EventMessage) -> tuple[str, ...]:
        """Why the clip of this (ending) event is withheld: skip_if labels heard, UNCHECKED; () keeps it."""
        if not self.thresholds or not self._windows:
            return ()
        newest = self._windows[-1][1]
        start = max(event.started_at - self.pre_roll_s, newest - self.memory_s)
        stop = min((event.ended_at or event.started_at) + self.post_roll_s, newest)
        heard: dict[str, None] = {}
        covered = start
        for w_start, w_end, hits in self._windows:
            if w_end <= start or w_start >= stop:
                continue
            heard.update(dict.fromkeys(hits))
            if w_start > covered + EPSILON_S:
                heard[UNCHECKED] = None
            covered = max(covered, w_end)
        if covered < stop - EPSILON_S:
            heard[UNCHECKED] = None
        return tuple(heard)

    def mark(self, messages: Iterable[EventMessage]) -> list[EventMessage]:
        """The messages, each end whose clip is withheld marked `clip="withheld"` (and logged with why)."""
        marked = []
        for message in messages:
            reasons = self.verdict(message) if message.phase == "end" else ()
            if reasons:
                message = dataclasses.replace(message, clip="withheld")
                log.info("clip of %s withheld: %s", message.event_id, ", ".join(reasons),
                         extra={"kind": "clip_withheld", "event_id": message.event_id, "because": list(reasons)})
            marked.append(message)
        return marked
