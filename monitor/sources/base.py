"""The contract between audio sources (the modules of `monitor/sources/`) and the pipeline.

A source pushes blocks: `start(on_audio)` begins delivery on the source's own
thread (PortAudio callback thread, file reader thread, stdin reader thread) and
returns at once. Push keeps the microphone path simple: the PortAudio callback
mixes into a preallocated mono buffer and hands a view of it straight to
`on_audio`, which copies it into the pipeline's ring buffer; nothing queues in
between and nothing is allocated per block by the source.

Blocks carry their absolute position in the source's own sample clock
(`start_sample`, counted from 0 at the first delivered sample, at
`sample_rate`). Consecutive blocks satisfy `start = previous start + previous
length`; a larger `start_sample` means input was lost (a capture overflow, a
stalled pipe) and the pipeline fills the gap with silence so that sample
indices keep matching stream time.

Pacing: a `live` source (microphone, stdin, a file replayed at real-time pace)
never waits for the consumer; `on_audio` returns quickly and the pipeline drops
the oldest pending windows if inference falls behind. A non-live source (a file
read as fast as possible) is paced by the consumer instead: its `on_audio` may
block until the pipeline has room, so nothing is dropped and replays are exact.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

# on_audio(block, start_sample): block is float32 mono [n], valid only during the
# call (sources may reuse the buffer); start_sample is in source samples.
OnAudio = Callable[[np.ndarray, int], None]


class AudioSource(Protocol):
    name: str  # shown in logs and messages, e.g. "mic:default", "file:dog.wav", "stdin"
    sample_rate: int  # rate of the delivered blocks (the pipeline resamples to 48 kHz)
    live: bool  # False: on_audio may block to pace the source (no drops)

    @property
    def overflows(self) -> int:
        """Capture overflows (input lost) counted since start."""

    def start(self, on_audio: OnAudio) -> None:
        """Begin delivering blocks on the source's own thread; returns at once."""

    def stop(self) -> None:
        """Stop delivery; idempotent. No `on_audio` call starts after it returns."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source has delivered its last block (end of file/stream,
        or stopped); True if it has. A microphone only ends when stopped."""


class SourceError(RuntimeError):
    """A source cannot be opened or read (missing device, unreadable file, bad format)."""
