"""Fixed-size float32 ring keeping the newest audio, addressed by absolute sample index.

One writer (the source thread) and any number of readers. Readers copy a range
by absolute index without taking a lock; the writer announces the range it is
about to overwrite before touching the array, so a reader can tell afterwards
whether its copy raced with an overwrite. The condition that wakes readers
waiting for new audio is the only lock on the audio path.

Readers that still need older audio say so with `hold(owner, sample)` and
`release(owner)`; a paced writer waits while writing would overwrite `held`.
The ring itself never refuses a write: pacing is the writer's choice.
"""

from __future__ import annotations

import threading
from typing import Hashable

import numpy as np


class Overwritten(LookupError):
    """The requested audio is older than what the ring still holds."""


class RingBuffer:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"ring buffer capacity must be >= 1 sample, got {capacity}")
        self.capacity = capacity
        self._data = np.zeros(capacity, np.float32)
        self._end = 0  # one past the newest complete sample
        self._reserved = 0  # one past the newest sample being written (>= _end)
        self._closed = False
        self._changed = threading.Condition()
        self._holds: dict[Hashable, int] = {}
        self._holds_lock = threading.Lock()  # readers hold and release on their own threads

    @property
    def end(self) -> int:
        return self._end

    @property
    def oldest(self) -> int:
        """Oldest absolute index that is safe to read right now."""
        return max(0, self._reserved - self.capacity)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def held(self) -> int | None:
        """Oldest sample some reader still holds (None: no holds)."""
        with self._holds_lock:
            return min(self._holds.values(), default=None)

    def hold(self, owner: Hashable, sample: int) -> None:
        """`owner` still needs the audio from `sample` on (replaces its previous hold)."""
        with self._holds_lock:
            self._holds[owner] = sample

    def release(self, owner: Hashable) -> None:
        """`owner` needs no audio any more; releasing twice is harmless."""
        with self._holds_lock:
            self._holds.pop(owner, None)

    def write(self, block: np.ndarray) -> None:
        n = len(block)
        if n == 0:
            return
        tail = block[-self.capacity :]  # only the newest samples can be kept
        start = self._end + n - len(tail)
        self._reserved = self._end + n
        first = start % self.capacity
        split = min(len(tail), self.capacity - first)
        self._data[first : first + split] = tail[:split]
        self._data[: len(tail) - split] = tail[split:]
        self._publish(self._end + n)

    def write_silence(self, n: int) -> None:
        """Advance by n zero samples (lost input) without allocating n samples."""
        if n <= 0:
            return
        kept = min(n, self.capacity)
        self._reserved = self._end + n
        first = (self._end + n - kept) % self.capacity
        split = min(kept, self.capacity - first)
        self._data[first : first + split] = 0
        self._data[: kept - split] = 0
        self._publish(self._end + n)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Copy of samples [start, stop); raises Overwritten if any of it is gone."""
        if not 0 <= start <= stop <= self._end:
            raise ValueError(f"range [{start}, {stop}) is not within the written audio [0, {self._end})")
        if stop - start > self.capacity:
            raise Overwritten(f"range of {stop - start} samples exceeds the ring capacity {self.capacity}")
        first = start % self.capacity
        split = min(stop - start, self.capacity - first)
        out = np.concatenate([self._data[first : first + split], self._data[: stop - start - split]])
        if start < self._reserved - self.capacity:  # checked after copying: catches a racing write
            raise Overwritten(f"samples from {start} were overwritten (oldest kept: {self.oldest})")
        return out

    def wait_until(self, index: int, timeout: float | None = None) -> bool:
        """Wait until audio up to `index` is written or the ring is closed; True if written."""
        with self._changed:
            self._changed.wait_for(lambda: self._end >= index or self._closed, timeout)
            return self._end >= index

    def close(self) -> None:
        """No more writes: wakes every waiting reader."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _publish(self, end: int) -> None:
        with self._changed:
            self._end = end
            self._changed.notify_all()


class StreamClock:
    """Maps absolute sample indices to UNIX time: sample 0 was captured at `t0`."""

    def __init__(self, t0: float, sample_rate: int):
        self.t0, self.sample_rate = t0, sample_rate

    def time(self, sample: int) -> float:
        return self.t0 + sample / self.sample_rate

    def sample(self, time_s: float) -> int:
        return max(0, round((time_s - self.t0) * self.sample_rate))
