"""What every sink offers the pipeline. Sinks subclass `Sink` and override the hooks they use.

The pipeline calls the hooks from its detector thread (events, levels, windows, in
stream order) and `start`/`close` from the thread that runs it; `status` may be
called from any thread (the dashboard's). No hook may block the audio path: slow
work (network, disk) goes to the sink's own thread or queue. A sink knows
nothing of the pipeline: audio it needs later it holds in the ring buffer
(`RingBuffer.hold`), so the pipeline needs no knowledge of a sink's type.
"""

from __future__ import annotations

from pathlib import Path

from ..events import EventMessage, LevelReport, WindowReport


class SinkError(RuntimeError):
    """A sink cannot start: a runtime fact its settings rely on is missing (a password
    variable unset, a file unreadable, a port taken). The message names the setting."""


class Sink:
    name: str = "sink"  # key of this sink in Pipeline.status()["sinks"]

    def start(self) -> None:
        """Called once before the first message."""

    def handle_event(self, event: EventMessage) -> None:
        """An event started, continued or ended."""

    def handle_level(self, report: LevelReport) -> None:
        """The periodic level and health report."""

    def handle_window(self, report: WindowReport) -> None:
        """Every window, scored or gated, once and in order."""

    def clip_path(self, event_id: str) -> Path | None:
        """The audio file this sink wrote for `event_id`, if it writes any (the dashboard serves it)."""
        return None

    def status(self) -> dict:
        """A cheap, thread-safe snapshot of this sink's state (JSON-serialisable)."""
        return {}

    def close(self) -> None:
        """Called once after the last message: flush and stop."""
