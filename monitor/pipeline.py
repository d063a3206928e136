"""The one place that wires the monitor together:

    source -> resampler -> ring buffer -> windower -> WindowQueue -> detector -> rules -> sinks

Threads: the source's own thread runs `_on_audio` (resample + ring write, nothing
else); the windower thread cuts windows and computes levels; the detector thread
scores, runs the rules and feeds the sinks. Shutdown drains in that order, so
every captured window is scored and every open event gets its end message.

Audio a reader still needs is held in the ring (`RingBuffer.hold`): the windower
holds its next window, the pipeline holds the look-back an event start may reach
(`audio_history`), a clip sink holds its pending clips; a paced source waits for
them. `status()` is a snapshot for observers on other threads (the dashboard).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clap_mlx.audio_io import SAMPLE_RATE

from .config import MonitorConfig
from .detector import Detection, Detector, DetectorThread, Embedder, WindowQueue, taught_by
from .events import WindowReport
from .health import DetectorStalled, Health
from .history import audio_history
from .privacy import ClipGuard
from .reload import sinks_changed
from .resample import Resampler
from .ringbuffer import RingBuffer, StreamClock
from .rules import RulesEngine
from .scheduler import SharedDetector
from .sdnotify import Notifier
from .sinks.base import Sink
from .sinks.clips import ClipSink
from .sinks.jsonlog import JsonLogSink
from .sources import AudioSource
from .state import state_dir
from .telemetry import PipelineTelemetry
from .windower import Windower

log = logging.getLogger(__name__)


class Pipeline(PipelineTelemetry):
    def __init__(self, cfg: MonitorConfig, source: AudioSource, embedder: Embedder | SharedDetector,
                 sinks: Sequence[Sink] = (), log_sink: Sink | None = None):
        """`embedder`: the model, or the `SharedDetector` several sources' pipelines score through (monitor/multi.py);
        `sinks`: more sinks next to the configured ones (applications and tests observing the monitor);
        `log_sink`: the JSON log several pipelines share (default: one of its own from `cfg.log`)."""
        self.cfg, self.source = cfg, source
        # the dashboard first: a port taken fails before anything else (the log file) is made
        self._observers = [*dashboard(cfg, self.status, self.clip_path, source.name), *sinks]
        self.ring = RingBuffer(round(cfg.buffer.seconds * SAMPLE_RATE))
        self.clock = StreamClock(time.time(), SAMPLE_RATE)
        self.resampler = Resampler(source.sample_rate)
        self.windower = Windower(
            self.ring, round(cfg.windows.length_s * SAMPLE_RATE), round(cfg.windows.hop_s * SAMPLE_RATE),
            cfg.windows.min_dbfs,
        )
        self.queue = WindowQueue(cfg.detector.max_pending)
        if isinstance(embedder, SharedDetector):
            self.detector = embedder.lane(self.queue, self._on_detections, [label.name for label in cfg.labels])
        else:
            detector = Detector.from_config(embedder, cfg)
            self.detector = DetectorThread(detector, self.queue, self._on_detections, cfg.detector.batch_size)
        self.rules = RulesEngine(cfg.labels, source.name, cfg.rules.update_interval_s, _timezone(cfg.rules.timezone))
        skip_if = {label.name: label.threshold for label in cfg.labels if label.name in cfg.clips.skip_if}
        self.guard = ClipGuard(skip_if if cfg.clips.enabled else {}, cfg.clips.pre_roll_s, cfg.clips.post_roll_s,
                               cfg.buffer.seconds)
        self.jsonlog = log_sink or JsonLogSink(cfg.log)
        self._configured = self._optional_sinks()
        self.sinks: list[Sink] = [*self._configured, *self._observers, self.jsonlog]  # the log closes last
        self._reload: MonitorConfig | None = None  # handed over by reload(), taken by the detector thread
        self._sinks_stale = False  # a reload changed what the configured sinks are built from
        self._windower_thread = threading.Thread(target=self._cut_windows, name="windower", daemon=True)
        self._stop = threading.Event()
        self._room = threading.Condition()  # non-live sources wait here for the windower
        self._audio_warnings: queue.SimpleQueue[tuple[str, dict]] = queue.SimpleQueue()
        self._next_source_sample = 0
        # held behind the newest window through the rules: where an event it starts may begin
        self._lookback = round(audio_history(cfg).lookback_s * SAMPLE_RATE)
        self.ring.hold(self.rules, -self._lookback)
        self._reported = {"dropped": 0, "skipped": 0, "overflows": 0}
        self._status_lock = threading.Lock()  # the rules and what status() reads next to them
        self._last: Detection | None = None
        self._last_scores: dict[str, float] = {}
        self._windows_gated = 0
        self._gaps, self._gap_s = 0, 0.0
        self._source_end: str | None = None  # "ended" or "stopped", decided at shutdown
        self._source_started = False  # a source not started yet has delivered nothing: its wait() says ended
        self.started_at: float | None = None
        self._next_level_report = 0.0
        if isinstance(embedder, SharedDetector):  # the process's one health watches every source; multi.py notifies
            self.health, self.notifier = embedder.health, Notifier({})
        else:
            self.health = Health(Notifier(), cfg.detector.stall_s)
            self.notifier = self.health.notifier
        self.waiting = self.health.watch(self.windower.length, self.windower.hop,
                                         lambda: (self._last.window.end_sample if self._last else None, self.ring.end))

    def _optional_sinks(self) -> list[Sink]:
        """The sinks the config asks for; built again (the old ones closed) when a reload changes
        the labels, `mqtt` or `clips`: a sink that must outlive reloads is passed in as an observer."""
        sinks: list[Sink] = []
        if self.cfg.mqtt.enabled:
            from .sinks.mqtt import MqttSink  # paho only when MQTT is configured

            sinks.append(MqttSink(self.cfg.mqtt, [label.name for label in self.cfg.labels], self.source.name,
                                  state_dir(self.cfg.state_dir)))
        if self.cfg.clips.enabled:
            sinks.append(ClipSink(self.cfg.clips, self.ring, self.clock))
        return sinks

    def clip_path(self, event_id: str, source: str | None = None) -> Path | None:
        """The clip of `event_id` (of `source`, if given) the current clip sink wrote."""
        if source not in (None, self.source.name):
            return None
        return next((path for sink in self._configured if (path := sink.clip_path(event_id))), None)

    # ------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Runs until the source ends or `stop()` is called, then shuts down cleanly."""
        self.start()
        stalled = False
        try:
            self.notifier.ready(f"monitoring {self.source.name}")
            while True:  # checked before the stop flag: a stall found by another source ends this one undrained
                self.health.check()  # watchdog pings; DetectorStalled past detector.stall_s
                if self.source.wait(0.2) or self._stop.is_set() or not self.detector.is_alive():
                    break
        except DetectorStalled as stall:
            stalled = True
            log.error("%s: stopping without draining", stall, extra={"kind": "detector_stalled"})
            raise
        finally:
            if stalled:
                self._abandon()
            else:
                self.shutdown()

    def _abandon(self) -> None:
        """A stalled detector cannot be drained: stop the source and close the sinks (events
        already queued for MQTT stay in its outbox), leaving the stuck threads (daemons) behind."""
        self._stop.set()
        self.notifier.stopping("detector stalled")
        self.source.stop()
        self._close_sinks()

    def start(self) -> None:
        self.started_at = time.time()
        # the log first: it records what the other sinks say while starting
        for sink in [self.jsonlog, *(sink for sink in self.sinks if sink is not self.jsonlog)]:
            sink.start()
        log.info("monitoring %s for %s", self.source.name, ", ".join(self.rules.labels),
                 extra={"kind": "started", "source": self.source.name})
        self.clock.t0 = time.time()
        self._next_level_report = time.monotonic() + self.cfg.log.level_interval_s
        self._windower_thread.start()
        self.detector.start()
        self.source.start(self._on_audio)
        self._source_started = True

    def stop(self) -> None:
        """Request shutdown (safe from a signal handler); `run()` then drains and returns."""
        self._stop.set()

    def shutdown(self) -> None:
        """Stop at any moment without losing audio already delivered: the source first (a
        delivery in progress still waits for room, so it cannot overwrite uncut windows),
        then the windower and detector drain the ring, then events close and sinks flush."""
        self._stop.set()
        self.notifier.stopping("stopping")
        if self._source_end is None:
            self._source_end = "ended" if self.source.wait(0) else "stopped"
        self.source.stop()
        self.source.wait(5.0)
        self._write(self.resampler(np.zeros(0, np.float32), last=True))  # the source thread is done
        self.ring.close()
        self._windower_thread.join()
        self.detector.join()
        end_time = self.clock.time(self.ring.end)
        with self._status_lock:
            messages = self.rules.close()
        for message in self.guard.mark(messages):
            self._dispatch("handle_event", message)
        self._report_level(force=True)
        log.info("stopped", extra={"kind": "stopped", "stream_s": self.ring.end / SAMPLE_RATE, "end_time": end_time})
        self._close_sinks()
        if self.detector.error:
            raise RuntimeError("the detector stopped by an error (see the log)") from self.detector.error

    def _close_sinks(self, sinks: Sequence[Sink] | None = None) -> None:
        for sink in self.sinks if sinks is None else sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing %s failed", type(sink).__name__, extra={"kind": "sink_error"})

    def reload(self, cfg: MonitorConfig) -> None:
        """Switch to `cfg`'s labels, rules, MQTT and clip settings (monitor/reload.py merges them
        into the running config) at the next window; safe from any thread."""
        self._reload = cfg

    def _take_reload(self) -> None:
        """Detector thread, between windows: new label teaching (prompts, examples) and rules now
        (events of removed labels end), the configured sinks rebuilt once no event is open, so no
        event is split between two."""
        cfg, self._reload = self._reload, None
        if cfg is not None:
            old, self.cfg = self.cfg, cfg
            labels = [label.name for label in cfg.labels]
            # a Lane's labels come from the shared detector, retaught once for all sources (multi.py)
            if isinstance(self.detector, DetectorThread) and taught_by(old) != taught_by(cfg):
                self.detector.detector = Detector.from_config(self.detector.detector.embedder, cfg)
                self.detector.detector.log_examples()
            self.health.stall_s = cfg.detector.stall_s
            self._lookback = round(audio_history(cfg).lookback_s * SAMPLE_RATE)
            with self._status_lock:
                ended = self.rules.reconfigure(cfg.labels, cfg.rules.update_interval_s, _timezone(cfg.rules.timezone))
            for message in self.guard.mark(ended):
                self._dispatch("handle_event", message)
            self._sinks_stale = self._sinks_stale or sinks_changed(old, cfg)
            log.info("reloaded: labels %s", ", ".join(labels), extra={
                "kind": "reloaded", "source": self.source.name, "labels": labels, "ended": [m.event_id for m in ended]})
        if self._sinks_stale and not self.rules.active:
            self._sinks_stale = False
            # the old ones close first (the MQTT outbox passes its undelivered events to the new sink),
            # on a thread of their own: a clip waiting for its post-roll must not hold up the windows
            closing = threading.Thread(target=self._close_sinks, args=(self._configured,), name="reload-close")
            closing.start()
            closing.join(timeout=6.0)
            self._configured = self._optional_sinks()
            for sink in self._configured:
                sink.start()
            self.sinks = [*self._configured, *self._observers, self.jsonlog]

    # ------------------------------------------------------------ source thread

    def _on_audio(self, block: np.ndarray, start_sample: int) -> None:
        # a fast source (a file read at full speed) delivers, and windows get scored, before start() returns
        self._source_started = True
        if start_sample == 0:  # sample 0 was captured just now: a device may take a while to start delivering
            self.clock.t0 = time.time() - len(block) / self.source.sample_rate
        gap = start_sample - self._next_source_sample
        if gap > 0:  # lost input: keep sample indices equal to stream time
            self.ring.write_silence(self.resampler.output_samples(gap))
            self._gaps, self._gap_s = self._gaps + 1, self._gap_s + gap / self.source.sample_rate
            self._audio_warnings.put(("source_gap", {"gap_s": gap / self.source.sample_rate}))
        self._next_source_sample = start_sample + len(block)
        self._write(self.resampler(block))

    def _write(self, audio: np.ndarray) -> None:
        if not self.source.live:
            self._wait_for_room(len(audio))
        self.ring.write(audio)

    def _wait_for_room(self, n: int) -> None:
        # Not on the stop flag: shutdown drains through the windower, so room always comes
        # unless the windower thread died.
        with self._room:
            while (self.ring.end + n - self._oldest_needed(n) > self.ring.capacity
                   and self._windower_thread.is_alive()):
                self._room.wait(0.05)  # also polls: readers release their holds on their own threads

    def _oldest_needed(self, n: int) -> int:
        """The oldest sample a reader holds (the windower always holds one), but never so old
        that the windower's next window (plus the incoming n samples) could not fit: no deadlock."""
        progress = self.windower.next_start + self.windower.length + n - self.ring.capacity
        return max(progress, self.ring.held)

    # ------------------------------------------------------------ windower thread

    def _cut_windows(self) -> None:
        block = not self.source.live
        # paced: cut one window at a time so windower.next_start never runs ahead of the queue
        limit = 1 if block else None
        try:
            while True:
                closed = self.ring.closed  # read first: the final poll then sees all audio
                while windows := self.windower.poll(limit):
                    for window in windows:
                        self.queue.put(window, block=block)
                    with self._room:
                        self._room.notify_all()
                self._log_stream_warnings()
                if closed:
                    break
                self.ring.wait_until(self.windower.next_start + self.windower.length, timeout=0.5)
        finally:
            self.queue.close()

    # ------------------------------------------------------------ detector thread

    def _on_detections(self, detections: list[Detection]) -> None:
        if self._reload is not None or self._sinks_stale:
            self._take_reload()
        for detection in detections:
            window = detection.window
            start_s, end_s = self.clock.time(window.start_sample), self.clock.time(window.end_sample)
            self.guard.observe(start_s, end_s, detection.scores)
            with self._status_lock:
                messages = self.rules.process(start_s, end_s, window.level_dbfs, detection.scores)
                self._last = detection
                if detection.scores is None:
                    self._windows_gated += 1
                else:
                    self._last_scores = detection.scores
            self._dispatch("handle_window", WindowReport(self.source.name, start_s, end_s, window.level_dbfs,
                                                         detection.scores, detection.inference_ms))
            for message in self.guard.mark(messages):
                self._dispatch("handle_event", message)
            # after the events: a sink holds the audio of an event it was just told of
            self.ring.hold(self.rules, window.start_sample - self._lookback)
        with self._room:
            self._room.notify_all()
        self._log_losses()
        self._report_level()

    # ------------------------------------------------------------ sinks

    def _dispatch(self, method: str, message) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(message)
            except Exception:
                log.exception("%s.%s failed", type(sink).__name__, method, extra={"kind": "sink_error"})


def dashboard(cfg: MonitorConfig, status: Callable[[], dict], clip_path: Callable[[str, str | None], Path | None],
              source: str | None = None) -> list[Sink]:
    """The web dashboard (`http`) of the process, bound now and kept through reloads: it reads
    `status` (one pipeline's, or a `MultiPipeline`'s) and the clips of whichever sinks are current.
    `source`: the one source's name (`cfg.sources` names them otherwise)."""
    if not cfg.http.enabled:
        return []
    from .web import DashboardSink  # starlette/uvicorn only when the dashboard is on

    labels = {src.name: [label.name for label in cfg.for_source(src).labels] for src in cfg.sources}
    return [DashboardSink(cfg.http, labels or {source: [label.name for label in cfg.labels]}, status, clip_path)]


def _timezone(name: str | None):
    if name is None:
        return None
    import zoneinfo

    return zoneinfo.ZoneInfo(name)
