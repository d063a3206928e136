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


class ScratchPool:
    """float32 arrays lent for a `with` block and kept for the next one.

    A buffer goes to one borrower at a time, so concurrent forwards each get their own. The pool
    keeps at most as many buffers as were ever lent at once: when none free is large enough, the
    new one replaces the largest free one.
    """

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

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
                self._free.extend(taken)
