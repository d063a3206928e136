"""Writes each finished event's audio, with pre- and post-roll, as a WAV file.

The audio comes from the ring buffer by absolute index; from an event's start
until its clip is written the sink holds that audio in the ring (paced sources
then wait instead of overwriting it). A worker thread waits for the post-roll to
be captured and writes the file, so neither the audio callback nor the detector
ever waits on the disk.

Retention (`max_age_days`, `max_total_mb`, `max_per_label`, see `retention.py`) runs at
start and after each clip. A clip that cannot be written (disk full, folder gone) is a
warning; it leaves no partial file and monitoring goes on.

Privacy (`skip_if`): an end marked `clip="withheld"` (see `monitor/privacy.py`) gets
no file, and with skip_if set a clip ends at the newest window scored when its event
ended: audio no window has checked yet is never written.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from pathlib import Path

import soundfile

from ..config import ClipsConfig
from ..events import EventMessage, WindowReport
from ..ringbuffer import Overwritten, RingBuffer, StreamClock
from .base import Sink
from .retention import enforce_retention

log = logging.getLogger(__name__)


class ClipSink(Sink):
    name = "clips"

    def __init__(self, cfg: ClipsConfig, ring: RingBuffer, clock: StreamClock):
        self.cfg, self.ring, self.clock = cfg, ring, clock
        self.dir = Path(cfg.dir)
        self.written: dict[str, Path] = {}  # event id -> its WAV
        self._checked_until: float | None = None  # end of the newest window (time), with skip_if
        self._jobs: queue.SimpleQueue[tuple[EventMessage, float] | None] = queue.SimpleQueue()  # (end, clip stop time)
        self._worker = threading.Thread(target=self._run, name="clips", daemon=True)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        enforce_retention(self.dir, self.cfg)
        self._worker.start()

    def handle_window(self, report: WindowReport) -> None:
        if self.cfg.skip_if:
            self._checked_until = report.end_time

    def handle_event(self, event: EventMessage) -> None:
        if event.clip == "withheld":
            self.ring.release(self._owner(event))
            return
        self.ring.hold(self._owner(event), self.clock.sample(event.started_at - self.cfg.pre_roll_s))
        if event.phase == "end":
            stop = event.ended_at + self.cfg.post_roll_s
            if self._checked_until is not None:
                stop = min(stop, max(self._checked_until, event.ended_at))
            self._jobs.put((event, stop))

    def status(self) -> dict:
        return {"dir": str(self.dir), "written": len(self.written)}

    def clip_path(self, event_id: str) -> Path | None:
        """The WAV written for `event_id`; None if there is none (yet, or it was deleted)."""
        path = self.written.get(event_id)
        return path if path is not None and path.exists() else None

    def close(self) -> None:
        """Writes the clips still pending (with whatever post-roll the ring got) and stops."""
        self._jobs.put(None)
        if self._worker.is_alive():
            self._worker.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            event, stop = job
            try:
                self._write(event, stop)
            except OSError as error:  # disk full, folder gone or read-only: this clip is lost, nothing else
                log.warning("clip of %s not written: %s", event.event_id, error,
                            extra={"kind": "clip_not_written", "event_id": event.event_id, "source": event.source,
                                   "error": str(error)})
            except Exception:
                log.exception("writing the clip of %s failed", event.event_id, extra={"kind": "clip_failed"})
            finally:
                self.ring.release(self._owner(event))
            enforce_retention(self.dir, self.cfg)

    def _owner(self, event: EventMessage) -> tuple:
        return (self, event.event_id)  # one hold per pending clip

    def _write(self, event: EventMessage, stop_time: float) -> None:
        want_start = self.clock.sample(event.started_at - self.cfg.pre_roll_s)
        want_stop = self.clock.sample(stop_time)
        self.ring.wait_until(want_stop)  # returns early once the ring is closed (shutdown)
        stop = min(want_stop, self.ring.end)
        start = min(max(want_start, self.ring.oldest), stop)
        while True:
            try:
                audio = self.ring.read(start, stop)
                break
            except Overwritten:  # the writer overtook us: start later
                start = min(stop, self.ring.oldest + self.clock.sample_rate // 10)
        path = self.dir / f"{event.event_id}.wav"
        _save(path, audio, self.clock.sample_rate)
        self.written[event.event_id] = path
        truncated_s = ((start - want_start) + (want_stop - stop)) / self.clock.sample_rate
        extra = {"kind": "clip", "event_id": event.event_id, "source": event.source, "path": str(path),
                 "seconds": len(audio) / self.clock.sample_rate}
        if truncated_s > 0:
            log.warning("clip of %s is %.2f s short (older audio no longer buffered or stream ended)",
                        event.event_id, truncated_s, extra={**extra, "kind": "clip_truncated", "missing_s": truncated_s})
        else:
            log.info("clip written: %s", path, extra=extra)


def _save(path: Path, audio, sample_rate: int) -> None:
    """Encodes in memory, writes `<name>.part` and renames it: a failed write leaves no partial clip
    (libsndfile reports a full disk only as "System error"; Python's write names ENOSPC)."""
    encoded = io.BytesIO()
    soundfile.write(encoded, audio, sample_rate, format="WAV", subtype="PCM_16")
    part = path.with_name(path.name + ".part")
    try:
        part.write_bytes(encoded.getbuffer())
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)
        raise
