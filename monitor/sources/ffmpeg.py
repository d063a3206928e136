"""A network stream (or anything else ffmpeg reads) decoded by the ffmpeg CLI into raw PCM on a pipe."""

from __future__ import annotations

import collections
import logging
import select
import shutil
import subprocess
import threading
import time
from typing import Sequence

from .base import OnAudio, SourceError
from .clock import LiveClock
from .files import PCMReader

log = logging.getLogger(__name__)

STALL_S = 10.0  # no audio for this long: the stream is stalled, restart ffmpeg
STOP_TIMEOUT_S = 5.0


class FfmpegSource:
    """Runs `ffmpeg [args] -i <url>` writing mono float32 PCM at `sample_rate` to a pipe.

    ffmpeg decodes, mixes to mono and resamples; this class only frames its
    output. When ffmpeg exits (stream ended, server gone, connection refused)
    or writes no audio for `stall_s`, it is killed and started again after a
    back-off that doubles from `restart_min_s` up to `restart_max_s` while
    attempts bring no audio. A `LiveClock` places the blocks, so the time the
    stream was down shows as a jump in `start_sample` (the pipeline's
    `source_gap` warning). `args` go before `-i`: input options such as
    `-rtsp_transport tcp`.
    """

    live = True

    def __init__(self, url: str, sample_rate: int, args: Sequence[str] = (), name: str | None = None,
                 restart_min_s: float = 0.5, restart_max_s: float = 30.0, stall_s: float = STALL_S):
        program = shutil.which("ffmpeg")
        if program is None:
            raise SourceError("source type 'ffmpeg' runs the ffmpeg program, which is not installed "
                              "(no 'ffmpeg' on PATH); install it, e.g. apt install ffmpeg")
        self.url = url
        self.sample_rate = int(sample_rate)
        self.name = name or f"ffmpeg:{url}"
        self.command = [program, "-nostdin", "-hide_banner", "-loglevel", "error", *args, "-i", url,
                        "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(self.sample_rate), "-f", "f32le", "pipe:1"]
        self.restart_min_s, self.restart_max_s, self.stall_s = restart_min_s, restart_max_s, stall_s
        self.clock = LiveClock(self.sample_rate)
        self.restarts = 0  # ffmpeg processes started after the first
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._delivery = threading.Lock()  # held around on_audio; stop() waits a delivery out
        self._thread: threading.Thread | None = None

    @property
    def overflows(self) -> int:
        return 0  # the pipe holds what is not read yet; lost stream time shows as gaps

    @property
    def gaps(self) -> list[tuple[int, int]]:
        """(start_sample, missing samples) for every stretch the stream was down."""
        return self.clock.gaps

    def start(self, on_audio: OnAudio) -> None:
        self._thread = threading.Thread(target=self._supervise, args=(on_audio,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._delivery:
            pass
        process = self._process
        if process is not None:
            process.kill()  # ends a read blocked on its pipe
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT_S)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)  # a stream is restarted, never over: it ends when stopped

    def _supervise(self, on_audio: OnAudio) -> None:
        delay, lost = self.restart_min_s, False  # lost: the loss is logged and no audio came since
        while True:
            delivered, reason = self._run_once(on_audio, restarted=self.restarts > 0)
            if self._stopping.is_set():
                return
            if delivered or not lost:
                lost, delay = True, self.restart_min_s
                log.warning("%s: %s; restarting ffmpeg", self.name, reason,
                            extra={"kind": "stream_lost", "source": self.name, "reason": reason})
            else:
                delay = min(delay * 2, self.restart_max_s)
                log.info("%s: restart failed (%s); retry in %.1f s", self.name, reason, delay)
            if self._stopping.wait(delay):
                return
            self.clock.resync()  # everything since the last block is lost
            self.restarts += 1

    def _run_once(self, on_audio: OnAudio, restarted: bool) -> tuple[bool, str]:
        """Runs one ffmpeg until it ends or stalls; (any audio delivered, why it ended)."""
        try:
            process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, bufsize=0)
        except OSError as error:
            return False, f"cannot start ffmpeg: {error}"
        self._process = process
        if self._stopping.is_set():  # stop() came while it started: it may have missed this process
            _end(process)
            return False, "stopped"
        errors: collections.deque[str] = collections.deque(maxlen=3)
        drain = threading.Thread(target=_drain, args=(process.stderr, errors), name=f"{self.name} stderr", daemon=True)
        drain.start()
        stalled = []
        delivered = False
        try:
            reader = PCMReader(lambda view: self._read(process, view, stalled), self.sample_rate, 1, "f32le")
            for block, _ in reader.blocks():
                with self._delivery:
                    if self._stopping.is_set():
                        break
                    on_audio(block, self.clock.place(len(block), time.monotonic()))
                if not delivered and restarted:
                    log.info("%s: stream restarted", self.name, extra={"kind": "stream_restarted", "source": self.name})
                delivered = True
        finally:
            _end(process)
            drain.join(1.0)
        if stalled:
            return delivered, f"no audio for {self.stall_s:g} s"
        detail = f": {' | '.join(errors)}" if errors else ""
        return delivered, f"ffmpeg exited with code {process.returncode}{detail}"

    def _read(self, process: subprocess.Popen, view: memoryview, stalled: list) -> int:
        """One read of what ffmpeg wrote; 0 at its end, or when it wrote nothing for stall_s."""
        ready, _, _ = select.select([process.stdout], [], [], self.stall_s)
        if not ready:
            stalled.append(True)
            return 0
        return process.stdout.readinto(view) or 0


def _drain(stream, errors: collections.deque) -> None:
    """Keeps ffmpeg's last error lines (and never lets its stderr pipe fill up)."""
    for line in stream:
        if text := line.decode(errors="replace").strip():
            errors.append(text)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    process.stdout.close()
