"""Live capture from a PortAudio input device, reopened when the device goes away."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .base import OnAudio, SourceError
from .clock import LiveClock
from .devices import CLOSE_TIMEOUT_S, InputStream, find_input_device, load_sounddevice, refresh_devices

log = logging.getLogger(__name__)

MIC_BLOCK_FRAMES = 1024
STUCK_S = 10.0  # no block for this long: the stream is stuck, reopen it (a suspended device may do this too)


class MicrophoneSource:
    """Live capture from a PortAudio input; reopens the device when it goes away.

    The PortAudio callback mixes into one preallocated mono buffer and hands a
    view of it to `on_audio`: no buffers allocated; its one lock is only ever
    contended by `stop()`. When the stream dies (device unplugged, sound server
    restarted) a supervisor thread reopens it with exponential back-off. A
    `LiveClock` places every block, so time the device missed (outage, stall)
    shows as a jump in `start_sample` (which the pipeline logs as a
    `source_gap` warning). A stream that stops delivering for STUCK_S is
    reopened too, and no PortAudio close can block `stop()` or the supervisor
    for long (see `InputStream`).
    """

    live = True

    def __init__(self, device: str | int | None = None, sample_rate: int | None = None,
                 channels: int = 1, name: str | None = None,
                 reopen_min_s: float = 0.5, reopen_max_s: float = 30.0):
        info = find_input_device(device)
        if not 1 <= channels <= info["input_channels"]:
            raise SourceError(f"input device {info['name']!r} has {info['input_channels']} channels; "
                              f"source.channels={channels} is not possible")
        self.device_name = info["name"]  # indices change after a re-scan; names do not
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.channels = channels
        self.name = name or f"mic:{device if device is not None else 'default'}"
        self.reopen_min_s = reopen_min_s
        self.reopen_max_s = reopen_max_s
        self.clock = LiveClock(self.sample_rate)
        self._mono = np.zeros(MIC_BLOCK_FRAMES, np.float32)
        self._overflows = 0
        self._on_audio: OnAudio | None = None
        self._stream: InputStream | None = None
        self._last_block = 0.0  # monotonic time of the newest block (or of the open)
        self._delivery = threading.Lock()  # held by the callback around on_audio; stop() waits it out
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def overflows(self) -> int:
        return self._overflows

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """(start_sample, missing samples) for every stretch of input the device missed."""
        return self.clock.gaps

    def start(self, on_audio: OnAudio) -> None:
        self._on_audio = on_audio
        self._open_stream()
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.name} supervisor", daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        self._stopping.set()  # the callback ends its thread at the next block
        with self._delivery:  # a delivery in progress finishes; none starts after this
            pass
        self._lost.set()  # wake the supervisor
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(CLOSE_TIMEOUT_S)  # it may be inside a PortAudio call; never wait forever
        self._close_stream()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def _callback(self, stream: InputStream, indata: np.ndarray, frames: int, time_info, status) -> None:
        with self._delivery:
            if self._stopping.is_set() or stream.retired.is_set():
                raise load_sounddevice().CallbackAbort  # the thread ends by itself: nothing has to cancel it
            self._last_block = now = time.monotonic()
            if status.input_overflow:
                self._overflows += 1
            if self.channels == 1:
                block = indata[:, 0]
            else:
                block = self._mono[:frames]
                np.mean(indata, axis=1, out=block)
            self._on_audio(block, self.clock.place(frames, now))

    def _on_finished(self, stream: InputStream) -> None:
        stream.finished.set()
        if stream is self._stream and not self._stopping.is_set():
            self._lost.set()

    def _open_stream(self) -> None:
        sd = load_sounddevice()
        stream = None
        try:
            stream = InputStream(
                self.name, self._callback, self._on_finished,
                device=find_input_device(self.device_name)["index"], samplerate=self.sample_rate,
                channels=self.channels, dtype="float32", blocksize=MIC_BLOCK_FRAMES, latency="high",
            )
            self._last_block = time.monotonic()
            self._stream = stream
            stream.stream.start()
        except sd.PortAudioError as error:
            self._stream = None
            if stream is not None:
                stream.close()
            raise SourceError(f"cannot open input device {self.device_name!r} "
                              f"at {self.sample_rate} Hz: {error}") from error

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _supervise(self) -> None:
        """Reopen a stream that ended (device gone) or stopped delivering for STUCK_S (thread stuck)."""
        while not self._stopping.is_set():
            ended = self._lost.wait(0.5)
            stuck = time.monotonic() - self._last_block > STUCK_S
            if self._stopping.is_set() or not (ended or stuck):
                continue
            self._lost.clear()
            self._close_stream()
            self._reopen("input device lost" if ended else f"no input for {STUCK_S:.0f} s")

    def _reopen(self, reason: str) -> None:
        log.warning("%s: %s; reopening", self.name, reason, extra={"kind": "device_lost", "source": self.name})
        delay = self.reopen_min_s
        while not self._stopping.wait(delay):
            self.clock.resync()
            try:
                refresh_devices()  # when skipped, the old device list may still name the device
                self._open_stream()
            except SourceError as error:
                delay = min(delay * 2, self.reopen_max_s)
                log.info("reopening %s failed (retry in %.1f s): %s", self.name, delay, error)
                continue
            log.info("input device reopened", extra={"kind": "device_reopened", "source": self.name})
            return
