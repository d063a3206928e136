"""Messages the pipeline passes to the sinks: events (from the rules), level reports, window reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

EventPhase = Literal["start", "update", "end"]


@dataclass(frozen=True)
class EventMessage:
    """One phase of a detected sound event. Times are UNIX seconds (float)."""

    phase: EventPhase
    event_id: str
    label: str
    score: float  # latest window score
    peak_score: float
    mean_score: float
    started_at: float
    ended_at: float | None  # set on "end"
    duration_s: float
    level_dbfs: float  # loudest window level seen in the event
    source: str  # source name from the config (e.g. "mic:pulse", "file:x.wav")
    clip: Literal["withheld"] | None = None  # on "end": "withheld" when clips.skip_if keeps its clip unwritten

    def to_dict(self) -> dict:
        """`clip` only when there is something to say (a withheld clip)."""
        fields = asdict(self)
        if self.clip is None:
            del fields["clip"]
        return fields


@dataclass(frozen=True)
class LevelReport:
    """Periodic health/level snapshot of the running monitor."""

    timestamp: float
    source: str
    level_dbfs: float  # level of the latest window
    windows_scored: int
    windows_dropped: int
    overflows: int  # capture overflow flags counted so far
    realtime_factor: float  # audio seconds processed per wall second (>1 keeps up)
    scores: dict[str, float]  # latest per-label scores

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WindowReport:
    """One analysis window as the detector saw it, sent for every window in stream order."""

    source: str
    start_time: float  # UNIX time of the window's first sample
    end_time: float
    level_dbfs: float  # may be -inf (digital silence)
    scores: dict[str, float] | None  # None: gated (too quiet), not scored
    inference_ms: float | None  # model wall time per window of its batch; None when gated

    def to_dict(self) -> dict:
        """JSON-ready: a non-finite level becomes None (JSON has no -inf)."""
        return {**asdict(self), "level_dbfs": self.level_dbfs if math.isfinite(self.level_dbfs) else None}
