"""Thresholds from recorded window scores: the rules engine replayed at candidate thresholds.

A label's false alarms at threshold t are the events `RulesEngine` starts for it over the
background recordings, with the label's own k-of-n, hysteresis, max_not_heard, cooldown,
min_dbfs and require/unless (the other labels at their configured thresholds). Quiet hours
do not apply: a recording has no time of day. Moving the threshold keeps the hysteresis
width: end_threshold = t - (threshold - end_threshold) when the label sets one.

The event count only changes where t crosses a window score s (a hit needs s >= t) or, with
hysteresis, s + width (heard needs s >= t - width), so it is constant on the intervals
between those breakpoints. Raising a threshold can split one long event into two, so the
count is not monotone in t; the suggested threshold is the lowest t at which the budget
holds for t and every higher threshold (a very low threshold that merges the whole
background into one endless event does not count as meeting it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..config import LabelConfig
from ..rules import RulesEngine

# one window: (start_s, end_s, level_dbfs, {label: score} or None when gated)
Window = tuple[float, float, float, "dict[str, float] | None"]
Recording = Iterable[Window]


@dataclass(frozen=True)
class Suggestion:
    threshold: float | None  # None: no threshold meets the budget (the label scores 1.0 on background)
    events: int  # false-alarm events at the suggested threshold
    per_hour: float


def with_threshold(label: LabelConfig, threshold: float) -> LabelConfig:
    """The label at another threshold, its hysteresis width kept, without quiet hours."""
    end = None
    if label.end_threshold is not None:
        end = max(threshold - (label.threshold - label.end_threshold), min(threshold, 1e-6))
    return dataclasses.replace(label, threshold=threshold, end_threshold=end, schedule=None)


def engine_labels(labels: Iterable[LabelConfig], target: str, threshold: float) -> list[LabelConfig]:
    """The labels the target's events depend on (require/unless, transitively), the target at
    `threshold`, without quiet hours."""
    by_name = {label.name: label for label in labels}
    needed, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [*by_name[name].require, *by_name[name].unless]
    return [with_threshold(label, threshold) if label.name == target else dataclasses.replace(label, schedule=None)
            for label in by_name.values() if label.name in needed]


def count_events(labels: list[LabelConfig], target: str, recordings: Iterable[Recording], limit: int | None = None) -> int:
    """Events the rules start for `target` over the recordings (each replayed by a fresh engine,
    as `run` meets each file anew). Stops counting past `limit`."""
    events = 0
    for recording in recordings:
        engine = RulesEngine(labels, "calibrate")
        for start_s, end_s, level, scores in recording:
            events += sum(m.phase == "start" and m.label == target for m in engine.process(start_s, end_s, level, scores))
            if limit is not None and events > limit:
                return events
    return events


def detected(labels: list[LabelConfig], target: str, recording: Recording) -> bool:
    """Whether the rules start an event for `target` in this recording (a positive clip)."""
    return count_events(labels, target, [recording], limit=0) > 0


def breakpoints(label: LabelConfig, scores: np.ndarray) -> list[float]:
    """Thresholds at which the label's event count can change, highest first (<= 1)."""
    scores = np.unique(scores[np.isfinite(scores)])
    width = label.threshold - label.stop_threshold
    points = set(scores.tolist())
    if width > 0:
        points |= {s + width for s in scores.tolist() if s + width <= 1.0}
    return sorted((p for p in points if 0.0 < p <= 1.0), reverse=True)


def suggest(labels: list[LabelConfig], target: LabelConfig, scores: np.ndarray,
            background: Callable[[], Iterator[Recording]], hours: float, per_hour: float) -> Suggestion:
    """The lowest threshold (the shortest decimal in its interval) from which on the target's
    false alarms over `hours` of background stay <= `per_hour` (module docstring).

    `scores`: the target's background window scores (NaN: gated); `background()` yields the
    recordings afresh for each replay.
    """
    allowed = math.floor(per_hour * hours + 1e-9)
    upper, events_above = 1.0, 0
    for point in breakpoints(target, scores):
        events = count_events(engine_labels(labels, target.name, point), target.name, background(), limit=allowed)
        if events > allowed:
            return _suggestion(shortest_decimal(point, upper), events_above, hours)
        upper, events_above = point, events
    return _suggestion(shortest_decimal(0.0, upper), events_above, hours)


def _suggestion(threshold: float | None, events: int, hours: float) -> Suggestion:
    return Suggestion(threshold, events if threshold is not None else 0, events / hours if hours else 0.0)


def shortest_decimal(low: float, high: float) -> float | None:
    """The decimal with the fewest digits in (low, high], the lowest of them; None if empty."""
    if not low < high:
        return None
    for digits in range(1, 10):
        scale = 10**digits
        value = round((math.floor(low * scale) + 1) / scale, digits)
        if low < value <= high:
            return value
    return high
