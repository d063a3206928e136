"""Stream time for live input: where each block of a live source belongs on the timeline."""

from __future__ import annotations

import sys


class LiveClock:
    """Start samples for the blocks of a live input, held in step with the wall clock.

    Input that never arrives moves the clock forward by the time it covered, so
    later audio keeps its true position (the pipeline fills the jump with
    silence). After a reopen (`resync()`) everything missing since the last
    block is lost. Otherwise a shortfall counts only when it stays above
    `stall_s` for a whole `window_s` after delivery resumes: audio that was
    merely late (scheduling, buffering) catches up within that time, audio that
    is gone (a suspended or stalled device) does not.
    """

    def __init__(self, sample_rate: int, stall_s: float = 2.0, window_s: float = 3.0):
        self.sample_rate = sample_rate
        self.stall_s, self.window_s = stall_s, window_s
        self.next_sample = 0
        self.gaps: list[tuple[int, int]] = []  # (start_sample of the jump, missing samples), in order
        self._origin: float | None = None  # wall time of sample 0
        self._resync = False
        self._last_arrival = 0.0
        self._min_lag = 0
        self._window_end = 0.0

    def resync(self) -> None:
        self._resync = True

    def place(self, frames: int, now: float) -> int:
        """Start sample of a block of `frames` that arrived at wall time `now` (monotonic seconds)."""
        if self._origin is None:
            self._origin = now - frames / self.sample_rate
            self._restart_window(now)
        lag = round((now - self._origin) * self.sample_rate) - self.next_sample - frames
        if lag < 0:  # audio cannot arrive before it was recorded: sample 0 was earlier than thought
            self._origin += lag / self.sample_rate
            lag = 0
        if self._resync:
            self._resync = False
            self._skip(lag)
            self._restart_window(now)
        else:
            if now - self._last_arrival >= self.stall_s:  # delivery resumes: judge the shortfall from here
                self._restart_window(now)
            self._min_lag = min(self._min_lag, lag)
            if now >= self._window_end:
                if self._min_lag > self.stall_s * self.sample_rate:
                    self._skip(self._min_lag)
                self._restart_window(now)
        self._last_arrival = now
        start = self.next_sample
        self.next_sample += frames
        return start

    def _skip(self, n: int) -> None:
        if n > 0:
            self.gaps.append((self.next_sample, n))
            self.next_sample += n

    def _restart_window(self, now: float) -> None:
        self._min_lag = sys.maxsize
        self._window_end = now + self.window_s
