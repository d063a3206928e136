"""Turns per-window label scores into start/update/end events.

Pure: the caller passes each window's stream time, level and scores; nothing
here reads a clock, so every rule is unit-testable with synthetic sequences.

Per label:
- a window is a *hit* when its score >= threshold, its level >= min_dbfs, all
  `require` labels are present, no `unless` label is present, the label is not
  cooling down and it is not quiet hours;
- an event starts once k of the last n windows were hits;
- it continues while windows score >= end_threshold (hysteresis) and ends after
  `max_not_heard` consecutive windows that do not;
- another label is *present* in a window when it scores >= its threshold there
  or has an event in progress.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Sequence

from .config import DAYS, LabelConfig, ScheduleConfig, parse_hours
from .events import EventMessage


@dataclass
class _Event:
    event_id: str
    started_at: float
    last_heard_end: float
    score: float
    peak: float
    total: float
    count: int
    level: float
    last_sent: float

    def add(self, score: float, level: float, end_s: float) -> None:
        self.score, self.peak = score, max(self.peak, score)
        self.total, self.count = self.total + score, self.count + 1
        self.level, self.last_heard_end = max(self.level, level), end_s


@dataclass
class _Hit:
    start_s: float
    end_s: float
    score: float
    level: float


@dataclass
class _LabelState:
    history: deque  # last n windows: _Hit or None
    event: _Event | None = None
    not_heard: int = 0
    cooldown_until: float = float("-inf")


class RulesEngine:
    def __init__(
        self,
        labels: Sequence[LabelConfig],
        source: str,
        update_interval_s: float = 10.0,
        tz: tzinfo | None = None,
    ):
        self.labels = {label.name: label for label in labels}
        self.source, self.update_interval_s, self.tz = source, update_interval_s, tz
        self.state = {name: _LabelState(deque(maxlen=label.n)) for name, label in self.labels.items()}

    @property
    def active(self) -> list[str]:
        return [name for name, state in self.state.items() if state.event]

    def process(
        self, start_s: float, end_s: float, level_dbfs: float, scores: dict[str, float] | None
    ) -> list[EventMessage]:
        """One window (oldest first). `scores` is None for windows the gate skipped."""
        scores = scores or {}
        present = {
            name for name, label in self.labels.items()
            if scores.get(name, 0.0) >= label.threshold or self.state[name].event
        }
        messages = []
        for name, label in self.labels.items():
            score = scores.get(name)
            allowed = (
                score is not None
                and (label.min_dbfs is None or level_dbfs >= label.min_dbfs)
                and all(other in present for other in label.require)
                and not any(other in present for other in label.unless)
            )
            state = self.state[name]
            if state.event:
                heard = allowed and score >= label.stop_threshold
                messages += self._continue(label, state, heard, score, level_dbfs, end_s)
            else:
                hit = (
                    allowed
                    and score >= label.threshold
                    and start_s >= state.cooldown_until
                    and not (label.schedule and in_quiet_hours(label.schedule, start_s, self.tz))
                )
                state.history.append(_Hit(start_s, end_s, score, level_dbfs) if hit else None)
                messages += self._maybe_start(label, state)
        return messages

    def states(self, now: float) -> dict[str, str]:
        """Each label's state at stream time `now`: "event" (one is open), "quiet" (quiet hours),
        "cooldown" (after an end), "hit" (some of the last n windows hit, no event yet) or "idle"."""
        return {name: self._state(label, self.state[name], now) for name, label in self.labels.items()}

    def _state(self, label: LabelConfig, state: _LabelState, now: float) -> str:
        if state.event:
            return "event"
        if label.schedule and in_quiet_hours(label.schedule, now, self.tz):
            return "quiet"
        if now < state.cooldown_until:
            return "cooldown"
        return "hit" if any(state.history) else "idle"

    def reconfigure(self, labels: Sequence[LabelConfig], update_interval_s: float, tz: tzinfo | None) -> list[EventMessage]:
        """New settings between two windows (a reload): the events of removed labels end now; a kept
        label keeps its open event, cooldown and recent windows (the newest n) under its new rule."""
        new = {label.name: label for label in labels}
        ended = [self._end(label, self.state[name]) for name, label in self.labels.items()
                 if name not in new and self.state[name].event]
        state = {name: self.state.get(name) or _LabelState(deque(maxlen=label.n)) for name, label in new.items()}
        for name, label in new.items():
            state[name].history = deque(state[name].history, maxlen=label.n)
        self.labels, self.state = new, state
        self.update_interval_s, self.tz = update_interval_s, tz
        return ended

    def close(self) -> list[EventMessage]:
        """End every event in progress (shutdown)."""
        return [self._end(label, self.state[name]) for name, label in self.labels.items() if self.state[name].event]

    def _maybe_start(self, label: LabelConfig, state: _LabelState) -> list[EventMessage]:
        hits = [h for h in state.history if h]
        if len(hits) < label.k:
            return []
        first = hits[0]
        state.event = _Event(
            event_id=f"{label.name}-{round(first.start_s * 1000)}",
            started_at=first.start_s, last_heard_end=first.end_s,
            score=first.score, peak=first.score, total=first.score, count=1, level=first.level,
            last_sent=hits[-1].end_s,
        )
        for hit in hits[1:]:
            state.event.add(hit.score, hit.level, hit.end_s)
        state.history.clear()
        state.not_heard = 0
        return [self._message("start", label, state.event)]

    def _continue(self, label, state, heard, score, level, end_s) -> list[EventMessage]:
        event = state.event
        if not heard:
            state.not_heard += 1
            return [self._end(label, state)] if state.not_heard >= label.max_not_heard else []
        state.not_heard = 0
        event.add(score, level, end_s)
        if end_s - event.last_sent < self.update_interval_s:
            return []
        event.last_sent = end_s
        return [self._message("update", label, event)]

    def _end(self, label: LabelConfig, state: _LabelState) -> EventMessage:
        event, state.event = state.event, None
        state.cooldown_until = event.last_heard_end + label.cooldown_s
        state.history.clear()
        return self._message("end", label, event)

    def _message(self, phase: str, label: LabelConfig, event: _Event) -> EventMessage:
        return EventMessage(
            phase=phase,
            event_id=event.event_id,
            label=label.name,
            score=event.score,
            peak_score=event.peak,
            mean_score=event.total / event.count,
            started_at=event.started_at,
            ended_at=event.last_heard_end if phase == "end" else None,
            duration_s=event.last_heard_end - event.started_at,
            level_dbfs=event.level,
            source=self.source,
        )


def in_quiet_hours(schedule: ScheduleConfig, time_s: float, tz: tzinfo | None = None) -> bool:
    """Quiet hours belong to the day they start on: '22:00-07:00' with days [fri]
    covers Friday 22:00 to Saturday 07:00."""
    start, end = parse_hours(schedule.quiet_hours)
    now = datetime.fromtimestamp(time_s, tz)
    minute = now.hour * 60 + now.minute
    today = DAYS[now.weekday()]
    if start < end:
        return today in schedule.days and start <= minute < end
    yesterday = DAYS[(now - timedelta(days=1)).weekday()]
    return (minute >= start and today in schedule.days) or (minute < end and yesterday in schedule.days)
