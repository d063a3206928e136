"""Replaying recordings through the monitor's own pipeline and keeping every window's scores.

Each file runs through a real `Pipeline` (resampler, ring buffer, windower and level gate,
detector, rules) with a non-live `FileSource`: the replay goes as fast as the model and
nothing is dropped. All outputs are off (log file, MQTT, clips, any other sink section);
a recording sink keeps each window's times, level and scores. Those go to a temporary file,
not to memory, so any length of audio fits (4 + 4 * labels bytes and two doubles per window).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from clap_mlx.anchors import example_files
from clap_mlx.audio_io import SAMPLE_RATE, AudioInputError

from ..config import MonitorConfig
from ..events import WindowReport
from ..pipeline import Pipeline
from ..sinks.base import Sink
from ..sources import FileSource

FLUSH_ROWS = 256


class CalibrationInputError(ValueError):
    """Audio that calibration cannot use; the message names the option and the file."""


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float  # the audio's own length (without the silence a positive clip is padded with)
    first: int = 0  # rows of the ScoreStore
    stop: int = 0


class ScoreStore:
    """Windows of replayed recordings in a temporary file: start/end stream seconds, level, scores."""

    def __init__(self, labels: list[str]):
        self.labels = labels
        self.dtype = np.dtype([("start", "f8"), ("end", "f8"), ("level", "f4"), ("scores", "f4", (len(labels),))])
        self._file = tempfile.TemporaryFile()
        self._pending: list[tuple] = []
        self.rows = 0
        self._lock = threading.Lock()

    def append(self, start_s: float, end_s: float, level: float, scores: dict[str, float] | None) -> None:
        row = [np.nan] * len(self.labels) if scores is None else [scores[name] for name in self.labels]
        with self._lock:
            self._pending.append((start_s, end_s, level, row))
            if len(self._pending) >= FLUSH_ROWS:
                self._flush()

    def _flush(self) -> None:
        self._file.write(np.array(self._pending, dtype=self.dtype).tobytes())
        self.rows += len(self._pending)
        self._pending.clear()

    def finish(self) -> int:
        """Write what is pending; the number of rows so far."""
        with self._lock:
            if self._pending:
                self._flush()
            self._file.flush()
            return self.rows

    def _view(self, first: int, stop: int) -> np.ndarray:
        if stop <= first:
            return np.zeros(0, self.dtype)
        return np.memmap(self._file, dtype=self.dtype, mode="r", offset=first * self.dtype.itemsize, shape=(stop - first,))

    def scores(self, label: str, recordings: list[Recording]) -> np.ndarray:
        """The label's window scores over the recordings (NaN for gated windows)."""
        column = self.labels.index(label)
        parts = [np.array(self._view(r.first, r.stop)["scores"][:, column]) for r in recordings]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def windows(self, recording: Recording) -> Iterator[tuple[float, float, float, dict[str, float] | None]]:
        """The recording's windows as the rules engine takes them, read from disk in chunks."""
        for first in range(recording.first, recording.stop, 4096):
            chunk = self._view(first, min(first + 4096, recording.stop))
            for start, end, level, row in zip(chunk["start"].tolist(), chunk["end"].tolist(),
                                             chunk["level"].tolist(), chunk["scores"].tolist()):
                gated = row and row[0] != row[0]  # NaN
                yield start, end, level, None if gated else dict(zip(self.labels, row))

    def close(self) -> None:
        self._file.close()


class _Recorder(Sink):
    """Keeps every window the pipeline reports, in stream seconds."""

    name = "calibrate"

    def __init__(self, store: ScoreStore, t0: Callable[[], float], progress: Callable[[float], None]):
        self.store, self.t0, self.progress = store, t0, progress

    def handle_window(self, report: WindowReport) -> None:
        t0 = self.t0()
        self.store.append(report.start_time - t0, report.end_time - t0, report.level_dbfs, report.scores)
        self.progress(report.end_time - t0)


def audio_files(paths: list[str], option: str) -> list[Path]:
    """Files and folders given to `option` -> audio files, each checked to be decodable."""
    try:
        files = example_files(paths, what=f"{option}")
    except AudioInputError as e:
        raise CalibrationInputError(str(e)) from None
    for file in files:
        try:
            info = soundfile.info(str(file))
        except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/OSError
            raise CalibrationInputError(f"{option} '{file}': cannot decode it: {e}") from None
        if info.frames == 0:
            raise CalibrationInputError(f"{option} '{file}': holds no audio")
    return files


def duration(path: Path) -> float:
    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def quiet_config(cfg: MonitorConfig, path: Path) -> MonitorConfig:
    """The config replaying `path` as fast as consumed, with every output off."""
    sections = {
        f.name: dataclasses.replace(getattr(cfg, f.name), enabled=False)
        for f in dataclasses.fields(cfg) if hasattr(getattr(cfg, f.name), "enabled")
    }
    return dataclasses.replace(
        cfg, **sections,
        source=dataclasses.replace(cfg.source, type="file", path=str(path), realtime=False, loop=False),
        log=dataclasses.replace(cfg.log, path=None, console=False),
    )


class Replayer:
    """Replays files through `Pipeline` with one model, into one `ScoreStore`."""

    def __init__(self, cfg: MonitorConfig, embedder, store: ScoreStore, progress: Callable[[float], None] = lambda s: None):
        self.cfg, self.embedder, self.store, self.progress = cfg, embedder, store, progress
        self.done_s = 0.0  # audio replayed by earlier files

    def replay(self, path: Path, pad_s: float = 0.0) -> Recording:
        """One file; `pad_s` of digital silence before and after it (a positive clip then passes
        through windows as it would in a stream, also when it is shorter than a window)."""
        seconds = duration(path)
        with tempfile.TemporaryDirectory() as tmp:
            source_path = _padded(path, pad_s, Path(tmp)) if pad_s > 0 else path
            first = self.store.finish()
            pipeline = Pipeline(quiet_config(self.cfg, source_path), FileSource(source_path, realtime=False),
                                self.embedder, sinks=[_Recorder(self.store, lambda: pipeline.clock.t0, self._advance)])
            pipeline.run()
        delivered = pipeline.ring.end / SAMPLE_RATE
        if delivered < seconds + 2 * pad_s - 0.5:
            raise CalibrationInputError(f"'{path}': decoding stopped at {delivered - pad_s:.1f} s of {seconds:.1f} s")
        self.done_s += seconds + 2 * pad_s
        return Recording(path, seconds, first, self.store.finish())

    def _advance(self, stream_s: float) -> None:
        self.progress(self.done_s + stream_s)


def _padded(path: Path, pad_s: float, folder: Path) -> Path:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    silence = np.zeros((round(pad_s * rate), samples.shape[1]), np.float32)
    padded = folder / f"{path.stem}.wav"
    soundfile.write(str(padded), np.concatenate([silence, samples, silence]), rate, subtype="FLOAT")
    return padded


class Progress:
    """`[#####.....] 12:00 / 1:00:00 audio  8.1x real time  ETA 6:00` on stderr, redrawn in place
    at most 5 times a second; silent unless stderr is a terminal (or `force`)."""

    def __init__(self, total_s: float, force: bool = False, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.total_s, self.width = max(total_s, 1e-9), width
        self.started = time.monotonic()
        self._drawn = 0.0

    def __call__(self, done_s: float, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < 0.2 and not final):
            return
        self._drawn = now
        elapsed = now - self.started
        speed = done_s / elapsed if elapsed > 0 else 0.0
        eta = (self.total_s - done_s) / speed if speed > 0 else float("inf")
        filled = min(self.width, int(self.width * done_s / self.total_s))
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {_clock(done_s)} / {_clock(self.total_s)} audio"
                          f"  {speed:.1f}x real time  ETA {_clock(eta)} ")
        self.stream.flush()

    def close(self, done_s: float | None = None) -> None:
        if self.enabled:
            if done_s is not None:
                self(done_s, final=True)
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "--:--"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
