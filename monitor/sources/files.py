"""Sources read by a thread of their own: an audio file (libsndfile) and raw PCM from a stream (stdin)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from .base import OnAudio, SourceError

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.1  # file/stdin block length: small enough for live latency, large enough to be cheap
PCM_DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
PCM_SCALE = {"s16le": 1.0 / 32768.0, "f32le": 1.0}


class _ReaderSource:
    """A source whose blocks come from a reader thread iterating `_blocks()`.

    Delivery and `stop()` share a lock so no `on_audio` call starts after
    `stop()` returns, even while the reader is stuck in a blocking read.
    """

    name: str
    sample_rate: int
    live: bool

    def __init__(self):
        self._stopped = threading.Event()
        self._delivery = threading.RLock()  # re-entrant: on_audio may itself call stop()
        self._thread: threading.Thread | None = None
        self.error: Exception | None = None  # why delivery ended early (a read failed); None at an end of file

    @property
    def overflows(self) -> int:
        return 0  # readers take data at their own pace; a producer outrunning them just waits

    def _blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        raise NotImplementedError

    def start(self, on_audio: OnAudio) -> None:
        thread = threading.Thread(target=self._run, args=(on_audio,), name=self.name, daemon=True)
        thread.start()
        self._thread = thread  # only once started: wait() runs on other threads too (status) and joins it

    def stop(self) -> None:
        self._stopped.set()  # first: a reader looping on the lock could otherwise keep it for long
        with self._delivery:  # then wait out a delivery in progress
            pass

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self, on_audio: OnAudio) -> None:
        try:
            for block, start in self._blocks():
                with self._delivery:
                    if self._stopped.is_set():
                        return
                    on_audio(block, start)
        except Exception as error:
            self.error = error
            log.exception("%s stopped by an error", self.name)
        finally:
            self._stopped.set()


def _mix_to_mono(frames: np.ndarray, out: np.ndarray, scale: float) -> np.ndarray:
    """frames [n, channels] (any numeric dtype) -> out[:n] float32, scaled and channel-averaged."""
    mono = out[: len(frames)]
    np.add.reduce(frames, axis=1, dtype=np.float32, out=mono)
    mono *= scale / frames.shape[1]
    return mono


class FileSource(_ReaderSource):
    """Any file libsndfile reads, mixed to mono; paced at real time or as fast as consumed."""

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False, name: str | None = None):
        super().__init__()
        import soundfile

        self.path = Path(path)
        try:
            info = soundfile.info(str(self.path))
        except Exception as error:  # soundfile raises RuntimeError/LibsndfileError/OSError variously
            raise SourceError(f"cannot read audio file {self.path}: {error}") from error
        if info.frames == 0:
            raise SourceError(f"audio file {self.path} holds no audio")
        self.sample_rate = info.samplerate
        self.live = realtime
        self.loop = loop
        self.name = name or f"file:{self.path.name}"

    def _blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        import soundfile

        block_frames = max(1, round(self.sample_rate * BLOCK_SECONDS))
        with soundfile.SoundFile(str(self.path)) as audio:
            frames = np.empty((block_frames, audio.channels), np.float32)
            mono = np.empty(block_frames, np.float32)
            position, started = 0, time.monotonic()
            while True:
                n = audio.read(block_frames, dtype="float32", always_2d=True, out=frames).shape[0]
                if n == 0:
                    if not self.loop:
                        return
                    audio.seek(0)
                    continue
                # Live pace: release each block when a microphone would have finished recording it.
                if self.live and self._stopped.wait(started + (position + n) / self.sample_rate - time.monotonic()):
                    return
                yield _mix_to_mono(frames[:n], mono, 1.0), position
                position += n


class StdinPCMSource(_ReaderSource):
    """Raw interleaved PCM (s16le or f32le) from a binary stream, e.g. `ffmpeg ... -f s16le -`."""

    live = True

    def __init__(self, sample_rate: int, channels: int = 1, sample_format: str = "s16le",
                 stream: BinaryIO | None = None, name: str | None = None):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.channels = channels
        self.format = sample_format
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.name = name or "stdin"
        self.dropped_bytes = 0  # trailing partial frame at end of stream

    def _blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        # readinto1 returns what is available now (low latency on pipes); plain readinto waits to fill.
        reader = PCMReader(getattr(self.stream, "readinto1", self.stream.readinto), self.sample_rate,
                           self.channels, self.format)
        yield from reader.blocks()
        if reader.leftover:
            self.dropped_bytes = reader.leftover
            log.warning("stdin ended inside a frame; dropped %d trailing bytes", reader.leftover,
                        extra={"kind": "partial_frame", "source": self.name, "bytes": reader.leftover})


class PCMReader:
    """Interleaved raw PCM from `readinto(buffer) -> bytes read (0: end)` -> float32 mono blocks.

    Each block is what one read brought, in whole frames (a partial frame waits for the
    next read); `leftover` holds the bytes of a partial frame the stream ended inside.
    """

    def __init__(self, readinto: Callable[[memoryview], int], sample_rate: int, channels: int, sample_format: str):
        self.readinto = readinto
        self.dtype, self.scale = PCM_DTYPES[sample_format], PCM_SCALE[sample_format]
        self.channels = channels
        self.block_frames = max(1, round(sample_rate * BLOCK_SECONDS))
        self.leftover = 0

    def blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        """(mono block, its first frame counted from this reader's start); the block is reused."""
        frame_bytes = self.dtype.itemsize * self.channels
        buffer = bytearray(self.block_frames * frame_bytes)
        view = memoryview(buffer)
        mono = np.empty(self.block_frames, np.float32)
        filled = position = 0
        while n := self.readinto(view[filled:]):
            filled += n
            whole = filled - filled % frame_bytes
            if whole == 0:
                continue
            frames = np.frombuffer(buffer, self.dtype, whole // self.dtype.itemsize).reshape(-1, self.channels)
            yield _mix_to_mono(frames, mono, self.scale), position
            position += len(frames)
            view[: filled - whole] = view[whole:filled]  # keep the partial frame for the next read
            filled -= whole
        self.leftover = filled
