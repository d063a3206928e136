"""Host scratch buffers kept from one forward to the next.

A fused stage's host buffers grow with the batch (the first stage's q/k/v is 38 MB at batch 8),
and glibc hands allocations past its mmap threshold (at most 32 MB) to the kernel and back on
every call: a fresh buffer is fresh pages, each faulted in on first touch, and NumPy's huge-page
advice adds compaction to those faults. On a VM each fault costs microseconds (measured on an
AVX2 EPYC KVM guest: a batch-8 10-s forward took 1.14x as long with fresh buffers, 7.4 K page
faults each, as with these).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np


# What a pool keeps between borrowers: a batch-8 forward's stage buffers (82 MB) fit, and a
# process running many forwards at once (the monitor: a detector thread per source) holds no
# more than this after them.
KEEP_BYTES = 96 << 20


class ScratchPool:
    """float32 arrays lent for a `with` block and kept for the next one.

    A buffer goes to one borrower at a time, so concurrent forwards each get their own. When none
    free is large enough, a new one replaces the largest free one; of the buffers given back,
    the pool keeps the largest that fit in `keep_bytes` together and lets the others go.
    """

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.keep_bytes = keep_bytes

    def _take(self, size: int) -> np.ndarray:
        with self._lock:
            sizes = [buffer.size for buffer in self._free]
            fitting = [i for i, s in enumerate(sizes) if s >= size]
            if fitting:
                return self._free.pop(min(fitting, key=sizes.__getitem__))
            if self._free:
                self._free.pop(max(range(len(sizes)), key=sizes.__getitem__))
        return np.empty(size, np.float32)

    @contextmanager
    def lend(self) -> Iterator[Callable[..., np.ndarray]]:
        """Yields `array(*shape)`, which returns an uninitialised float32 array of that shape;
        every array it gave is back in the pool when the block ends."""
        taken: list[np.ndarray] = []

        def array(*shape: int) -> np.ndarray:
            size = math.prod(shape)
            buffer = self._take(size)
            taken.append(buffer)
            return buffer[:size].reshape(shape)

        try:
            yield array
        finally:
            with self._lock:
                kept, total = [], 0
                for buffer in sorted(self._free + taken, key=lambda b: b.nbytes, reverse=True):
                    if total + buffer.nbytes <= self.keep_bytes:
                        kept.append(buffer)
                        total += buffer.nbytes
                self._free = kept


# The fused host paths' buffers (the audio front's image and token maps, a Swin stage's residual
# stream, q/k/v, attention output and merge buffers), kept across forwards: fresh ones cost a
# page fault per page at batch sizes past ~4.
shared_pool = ScratchPool()
