"""Overlapping analysis windows cut from the ring buffer by absolute sample index."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ringbuffer import Overwritten, RingBuffer

SILENCE_DBFS = -120.0  # level reported for digital silence instead of -inf


@dataclass(frozen=True)
class Window:
    start_sample: int  # absolute index of the first sample (48 kHz stream clock)
    samples: np.ndarray  # float32 mono, 48 kHz
    level_dbfs: float  # RMS level, 0 dBFS = full-scale square wave
    gated: bool  # below the gate: not scored, level still reported

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.samples)


def level_dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return max(SILENCE_DBFS, 20.0 * np.log10(max(rms, 1e-12)))


class Windower:
    """Cuts every `hop` samples a window of `length` samples; skips ahead if it fell behind the ring.
    Holds the ring's audio from its next window on."""

    def __init__(self, ring: RingBuffer, length: int, hop: int, min_dbfs: float | None = None):
        if not 0 < hop <= length <= ring.capacity:
            raise ValueError(f"need 0 < hop ({hop}) <= length ({length}) <= ring capacity ({ring.capacity})")
        self.ring, self.length, self.hop, self.min_dbfs = ring, length, hop, min_dbfs
        self.next_start = 0
        self.skipped = 0  # windows lost because the ring overwrote them before they were cut
        ring.hold(self, 0)

    def poll(self, limit: int | None = None) -> list[Window]:
        """The complete windows not yet emitted (at most `limit`), oldest first."""
        windows = []
        while self.next_start + self.length <= self.ring.end and len(windows) != limit:
            start = self.next_start
            try:
                samples = self.ring.read(start, start + self.length)
            except Overwritten:
                self._skip_to(self.ring.oldest)
                continue
            level = level_dbfs(samples)
            gated = self.min_dbfs is not None and level < self.min_dbfs
            windows.append(Window(start, samples, level, gated))
            self.next_start += self.hop
        self.ring.hold(self, self.next_start)
        return windows

    def _skip_to(self, oldest: int) -> None:
        hops = -(-(oldest - self.next_start) // self.hop)  # ceil: first hop-aligned start still held
        self.skipped += max(hops, 1)
        self.next_start += max(hops, 1) * self.hop
