"""Audio sources: a microphone (PortAudio via sounddevice), an audio file, raw PCM on stdin.

Each delivers float32 mono blocks with their absolute start sample to
`on_audio` (see `sources_base.py` for the contract). sounddevice is imported
lazily so file and stdin sources work on machines without PortAudio.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .config import SourceConfig
from .sources_base import AudioSource, OnAudio, SourceError

log = logging.getLogger(__name__)

BLOCK_SECONDS = 0.1  # file/stdin block length: small enough for live latency, large enough to be cheap
MIC_BLOCK_FRAMES = 1024
CLOSE_GRACE_S = 0.5  # for the callback thread to see the stop (blocks arrive every ~20-100 ms)
CLOSE_TIMEOUT_S = 5.0  # a stalled device's callback thread notices a stop within ~2 s (PortAudio's poll)
STUCK_S = 10.0  # no block for this long: the stream is stuck, reopen it (a suspended device may do this too)
PCM_DTYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
PCM_SCALE = {"s16le": 1.0 / 32768.0, "f32le": 1.0}


# ---------------------------------------------------------------- devices


def _sounddevice():
    try:
        import sounddevice
    except OSError as error:  # libportaudio2 missing
        raise SourceError(f"PortAudio is not available ({error}); install libportaudio2") from error
    return sounddevice


_closing: set[threading.Thread] = set()  # stream closes still running (see `InputStream`)


def refresh_devices() -> bool:
    """Re-scan audio devices: PortAudio enumerates them only when it is initialised.

    Terminating PortAudio aborts every open stream, so call it only with none
    running. Skipped (False) while an abandoned stream is still closing: its
    abort would hang just as its close did.
    """
    if _closing:
        log.warning("audio devices not re-scanned: an abandoned stream is still closing",
                    extra={"kind": "rescan_skipped"})
        return False
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()
    return True


class InputStream:
    """A PortAudio input stream and the two flags its shutdown needs.

    Closing an active stream aborts it, and PortAudio's ALSA host API aborts by
    pthread_cancel-ing its callback thread: the close then joins a thread that
    may be stuck for good. With the ALSA `pulse` plugin, a sound server that
    dies mid-read can deadlock that thread inside libpulse (seen: the mainloop
    thread, holding its lock, waits in pa_memimport_free for a memory block to
    be released while the callback thread waits in snd_pcm_status for the
    lock), and a frozen server stalls it for as long as it is frozen. So
    the callback thread ends on its own (the callback sees `retired` and raises
    CallbackAbort; a dead device ends it too), or `stop()` asks it to end at its
    next loop and joins it: never a cancel. The join runs on a daemon thread:
    if it does not return, the stream is abandoned rather than the caller blocked.
    """

    def __init__(self, name: str, callback, on_finished, **options):
        sd = _sounddevice()
        self.name = name
        self.retired = threading.Event()  # the callback must end the thread at its next block
        self.finished = threading.Event()  # the callback thread has ended
        self.stream = sd.InputStream(callback=lambda *args: callback(self, *args),
                                     finished_callback=lambda: on_finished(self), **options)

    def close(self) -> None:
        """Stop and close; never blocks for longer than CLOSE_TIMEOUT_S."""
        self.retired.set()
        closer = threading.Thread(target=self._shut, name=f"{self.name} close", daemon=True)
        _closing.add(closer)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            log.warning("closing %s did not finish in %.1f s; stream abandoned", self.name, CLOSE_TIMEOUT_S,
                        extra={"kind": "stream_abandoned", "source": self.name})
            # registered (again) after sounddevice's exit handler, so it runs before it
            atexit.unregister(_leave_abandoned_streams_to_the_os)
            atexit.register(_leave_abandoned_streams_to_the_os)

    def _shut(self) -> None:
        try:
            if self.stream.active:
                self.finished.wait(CLOSE_GRACE_S)
            self.stream.stop(ignore_errors=True)  # Pa_StopStream: ends the thread cooperatively
            self.stream.close(ignore_errors=True)  # a stopped stream closes without an abort
        finally:
            _closing.discard(threading.current_thread())


def _leave_abandoned_streams_to_the_os() -> None:
    """PortAudio's terminate at exit would join an abandoned stream's stuck thread forever."""
    if _closing:
        _sounddevice()._initialized = 0


def list_devices() -> list[dict]:
    """Input-capable devices as dicts: index, name, hostapi, input_channels, default_samplerate, default."""
    sd = _sounddevice()
    hostapis = sd.query_hostapis()
    default_input = sd.default.device[0]
    return [
        {
            "index": info["index"],
            "name": info["name"],
            "hostapi": hostapis[info["hostapi"]]["name"],
            "input_channels": info["max_input_channels"],
            "default_samplerate": info["default_samplerate"],
            "default": info["index"] == default_input,
        }
        for info in sd.query_devices()
        if info["max_input_channels"] > 0
    ]


def format_devices(devices: list[dict] | None = None) -> str:
    """The table `sound-monitor devices` prints."""
    devices = list_devices() if devices is None else devices
    if not devices:
        return "No audio input devices found (is PulseAudio/PipeWire or an ALSA capture device available?)"
    rows = [("", "index", "name", "host API", "channels", "default rate")]
    rows += [
        ("*" if d["default"] else "", str(d["index"]), d["name"], d["hostapi"],
         str(d["input_channels"]), f"{d['default_samplerate']:g}")
        for d in devices
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["(* = default input; select with source.device: <index or name substring>)"])


def find_input_device(device: str | int | None) -> dict:
    """The input device `device` names: an index, an exact name, or a unique name substring."""
    devices = list_devices()
    if device is None:
        matches = [d for d in devices if d["default"]]
    elif isinstance(device, int):
        matches = [d for d in devices if d["index"] == device]
    else:
        wanted = device.lower()
        matches = [d for d in devices if d["name"].lower() == wanted]
        matches = matches or [d for d in devices if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    what = "default input device" if device is None else f"input device {device!r}"
    problem = "is ambiguous" if matches else "not found"
    raise SourceError(f"{what} {problem}; available inputs:\n{format_devices(devices)}")


# ---------------------------------------------------------------- microphone


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
                raise _sounddevice().CallbackAbort  # the thread ends by itself: nothing has to cancel it
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
        sd = _sounddevice()
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


# ---------------------------------------------------------------- threaded readers


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

    @property
    def overflows(self) -> int:
        return 0  # readers take data at their own pace; a producer outrunning them just waits

    def _blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        raise NotImplementedError

    def start(self, on_audio: OnAudio) -> None:
        self._thread = threading.Thread(target=self._run, args=(on_audio,), name=self.name, daemon=True)
        self._thread.start()

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
        except Exception:
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
        if sample_format not in PCM_DTYPES:
            raise SourceError(f"stdin PCM format {sample_format!r} is not supported; use one of {list(PCM_DTYPES)}")
        if sample_rate is None or sample_rate <= 0:
            raise SourceError("stdin PCM needs source.sample_rate (the rate of the raw stream)")
        if channels < 1:
            raise SourceError(f"source.channels must be >= 1, got {channels}")
        self.sample_rate = int(sample_rate)
        self.channels = channels
        self.format = sample_format
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.name = name or "stdin"
        self.dropped_bytes = 0  # trailing partial frame at end of stream

    def _blocks(self) -> Iterator[tuple[np.ndarray, int]]:
        dtype = PCM_DTYPES[self.format]
        frame_bytes = dtype.itemsize * self.channels
        block_frames = max(1, round(self.sample_rate * BLOCK_SECONDS))
        buffer = bytearray(block_frames * frame_bytes)
        view = memoryview(buffer)
        mono = np.empty(block_frames, np.float32)
        # readinto1 returns what is available now (low latency on pipes); plain readinto waits to fill.
        read = getattr(self.stream, "readinto1", self.stream.readinto)
        filled = position = 0
        while True:
            n = read(view[filled:])
            if not n:
                break
            filled += n
            whole = filled - filled % frame_bytes
            if whole == 0:
                continue
            frames = np.frombuffer(buffer, dtype, whole // dtype.itemsize).reshape(-1, self.channels)
            yield _mix_to_mono(frames, mono, PCM_SCALE[self.format]), position
            position += len(frames)
            view[: filled - whole] = view[whole:filled]  # keep the partial frame for the next read
            filled -= whole
        if filled:
            self.dropped_bytes = filled
            log.warning("stdin ended inside a frame; dropped %d trailing bytes", filled,
                        extra={"kind": "partial_frame", "source": self.name, "bytes": filled})


# ---------------------------------------------------------------- factory


def open_source(cfg: SourceConfig) -> AudioSource:
    """Build the source the config describes; raises SourceError naming what is wrong."""
    if cfg.type == "mic":
        return MicrophoneSource(cfg.device, cfg.sample_rate, cfg.channels, cfg.name)
    if cfg.type == "file":
        if not cfg.path:
            raise SourceError("source.type 'file' needs source.path")
        return FileSource(cfg.path, cfg.realtime, cfg.loop, cfg.name)
    if cfg.type == "stdin":
        return StdinPCMSource(cfg.sample_rate, cfg.channels, cfg.format, name=cfg.name)
    raise SourceError(f"unknown source.type {cfg.type!r}; use mic, file or stdin")
