"""What a running pipeline reports about itself: the stream's warnings and losses (logged),
the periodic level report (to the sinks) and the `status()` snapshot observers read (the
dashboard, /api/status). A part of `Pipeline` (pipeline.py), which holds the state it reads.
"""

from __future__ import annotations

import logging
import time

from clap_mlx.audio_io import SAMPLE_RATE

from .events import LevelReport
from .windower import SILENCE_DBFS

log = logging.getLogger("monitor.pipeline")


class PipelineTelemetry:
    """Pipeline's reporting methods (a mixin: they read the pipeline's own counters)."""

    def _log_stream_warnings(self) -> None:
        while not self._audio_warnings.empty():
            kind, fields = self._audio_warnings.get()
            log.warning("%s: %s", kind, fields, extra={"kind": kind, "source": self.source.name, **fields})
        skipped = self.windower.skipped - self._reported["skipped"]
        if skipped:
            self._reported["skipped"] = self.windower.skipped
            log.warning("windower fell behind the ring buffer: %d windows skipped", skipped,
                        extra={"kind": "windows_skipped", "count": skipped, "total": self.windower.skipped})

    def _log_losses(self) -> None:
        dropped = self.queue.dropped - self._reported["dropped"]
        if dropped:
            self._reported["dropped"] = self.queue.dropped
            log.warning("detector behind: dropped the %d oldest pending windows", dropped,
                        extra={"kind": "windows_dropped", "count": dropped, "total": self.queue.dropped})
        overflows = self.source.overflows - self._reported["overflows"]
        if overflows:
            self._reported["overflows"] = self.source.overflows
            log.warning("capture overflowed %d times (input lost)", overflows,
                        extra={"kind": "overflow", "count": overflows, "total": self.source.overflows})

    def _report_level(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_level_report:
            return
        self._next_level_report = now + self.cfg.log.level_interval_s
        report = LevelReport(
            timestamp=time.time(),
            source=self.source.name,
            level_dbfs=self._last.window.level_dbfs if self._last else SILENCE_DBFS,
            windows_scored=self.detector.windows_scored,
            windows_dropped=self.queue.dropped + self.windower.skipped,
            overflows=self.source.overflows,
            realtime_factor=self._realtime_factor(),
            scores=dict(self._last_scores),
        )
        self._dispatch("handle_level", report)

    def _realtime_factor(self) -> float:
        """Audio seconds the detector can score per second of its busy time (>1 keeps up)."""
        if self.detector.busy_s <= 0:
            return 0.0
        return self.detector.windows_scored * self.cfg.windows.hop_s / self.detector.busy_s

    def status(self) -> dict:
        """A snapshot of the running monitor (see docs/DESIGN.md, "Pipeline.status()")."""
        with self._status_lock:
            last = self._last
            now = self.clock.time(last.window.end_sample if last else 0)
            states = self.rules.states(now)
            gated = self._windows_gated
        scores = (last.scores if last else None) or {}
        return {
            "started_at": self.started_at,
            "stream_s": self.ring.end / SAMPLE_RATE,
            "source": {
                "name": self.source.name,
                "live": self.source.live,
                "state": self._source_state(),
                "gaps": self._gaps,
                "gap_s": self._gap_s,
                "overflows": self.source.overflows,
            },
            "windows": {
                "scored": self.detector.windows_scored,
                "gated": gated,
                "dropped": self.queue.dropped,
                "skipped": self.windower.skipped,
            },
            "inference_ms": self.detector.inference_ms,
            "realtime_factor": self._realtime_factor(),
            "level_dbfs": last.window.level_dbfs if last else None,
            "labels": {
                label.name: {"state": states[label.name], "score": scores.get(label.name),
                             "threshold": label.threshold, "end_threshold": label.stop_threshold}
                for label in self.cfg.labels
            },
            "sinks": {sink.name: sink.status() for sink in self.sinks},
        }

    def _source_state(self) -> str:
        if self._source_end is not None:
            return self._source_end
        if self._stop.is_set():
            return "stopped"
        if not self._source_started:
            return "starting"
        return "ended" if self.source.wait(0) else "running"
