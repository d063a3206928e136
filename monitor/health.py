"""Is the detector keeping up? Watchdog pings while it is, a `DetectorStalled` past `detector.stall_s`.

A window is *waiting* once all its audio is in the ring buffer (the newest window through
the detector ended at sample E: the next one waits once the ring holds E + hop). The
detector is *stalled* for as long as a window has been waiting and none finished. A
source that delivers no audio (a lost microphone being reopened) leaves nothing waiting:
that is the source's trouble, reported by the source, not a stall. Gated (too quiet)
windows count as finished: a silent room is healthy.

One `Health` serves the process: with several sources (monitor/multi.py) every source's
pipeline registers its windows (`watch`) with the shared detector's `Health`, which pings
only while no source has a window stalled, and once one has stalled past `stall_s` every
source's `check()` raises the same `DetectorStalled`: a healthy source cannot feed the
watchdog while another's path through the shared model is stuck.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .sdnotify import Notifier

log = logging.getLogger(__name__)


class DetectorStalled(RuntimeError):
    """The detector finished no window for longer than `detector.stall_s` while one was waiting."""


class Waiting:
    """One source's windows: how long the oldest waiting one has waited with none finished."""

    def __init__(self, length: int, hop: int, progress: Callable[[], tuple[int | None, int]],
                 clock: Callable[[], float]):
        """`progress()` -> (end sample of the newest window through the detector or None, ring end sample)."""
        self.length, self.hop, self.progress, self.clock = length, hop, progress, clock
        self._done: int | None = None
        self._waiting_since: float | None = None

    def stalled_for(self) -> float:
        """Seconds the oldest waiting window has waited with no window finished (0: keeping up)."""
        done, ring_end = self.progress()
        now = self.clock()
        if done != self._done:
            self._done, self._waiting_since = done, None
        waiting = ring_end >= (self.length if done is None else done + self.hop)
        if not waiting:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = now
        return 0.0 if self._waiting_since is None else now - self._waiting_since


class Health:
    def __init__(self, notifier: Notifier, stall_s: float | None, clock: Callable[[], float] = time.monotonic):
        self.notifier, self.stall_s, self.clock = notifier, stall_s, clock
        self._watched: list[Waiting] = []
        self._lock = threading.Lock()  # several sources' threads check one Health
        self._stalled: DetectorStalled | None = None  # once raised, raised to every caller
        self._next_ping = 0.0
        self._warned = False

    def watch(self, length: int, hop: int, progress: Callable[[], tuple[int | None, int]]) -> Waiting:
        """A source's windows (`progress()`: see `Waiting`), watched until `unwatch`."""
        waiting = Waiting(length, hop, progress, self.clock)
        with self._lock:
            self._watched.append(waiting)
        return waiting

    def unwatch(self, waiting: Waiting) -> None:
        with self._lock:
            self._watched.remove(waiting)

    def ready(self, status: str) -> None:
        self.notifier.ready(status)
        self.check()

    def stalled_for(self) -> float:
        """The longest any watched source's window has waited with none of its windows finished."""
        return max((waiting.stalled_for() for waiting in self._watched), default=0.0)

    def check(self) -> None:
        """Called every fraction of a second (by each source's thread): pings the watchdog (at half
        its interval) while the detector keeps up, withholds pings while it is stalled, raises past `stall_s`."""
        with self._lock:
            self._check()

    def _check(self) -> None:
        if self._stalled is not None:
            raise self._stalled
        stalled = self.stalled_for()
        if self.stall_s is not None and stalled > self.stall_s:
            self._stalled = DetectorStalled(f"the detector finished no window for {stalled:.1f} s while audio was "
                                            f"waiting (detector.stall_s: {self.stall_s:g})")
            raise self._stalled
        interval = self.notifier.watchdog_s
        if interval is None:
            return
        if stalled >= interval / 2:
            if not self._warned:
                self._warned = True
                log.warning("detector stalled for %.1f s: watchdog pings withheld", stalled,
                            extra={"kind": "detector_stalled", "stalled_s": stalled})
            return
        self._warned = False
        if self.clock() >= self._next_ping:
            self._next_ping = self.clock() + interval / 2
            self.notifier.watchdog()
