"""Several sources in one process: a pipeline per source, one shared model and detector, one log.

Each entry of `sources:` runs in its own `Pipeline` (resampler, ring buffer, windower,
rules, clips under `<clips.dir>/<name>`), built from `cfg.for_source(src)`; all score
through one `SharedDetector` (scheduler.py: batches across sources, in turn) and
report to one JSON log and the observer sinks given here. A source that cannot be
opened (device missing, file unreadable, ffmpeg absent), or whose reader fails
mid-run (not an end of file; the file is read again from its start), is retried with
capped back-off on its own thread; a source that ends or fails ends alone: the others go on.

`reload` (SIGHUP) hands each source's pipeline its part of the new config and the shared
detector its labels, once. One `Health` (health.py) watches every source's windows
through the shared model: the watchdog is fed only while none has stalled.

With MQTT each source is a node of its own, `<node_id>_<source>` (its topics, client
id, outbox and Home Assistant device), and the process keeps a bridge node `<node_id>`
(availability and a "running" entity) that the sources' devices name as `via_device`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import MonitorConfig, MqttConfig, SourceConfig, slugify
from .detector import Detector, Embedder, taught_by
from .events import EventMessage, LevelReport, WindowReport
from .health import DetectorStalled, Health
from .pipeline import Pipeline, dashboard
from .scheduler import SharedDetector
from .sdnotify import Notifier
from .sinks.base import Sink
from .sinks.jsonlog import JsonLogSink
from .sources import AudioSource, SourceError, open_source
from .state import state_dir

log = logging.getLogger(__name__)


class Borrowed(Sink):
    """A sink several pipelines share: they pass it messages, its owner starts and closes it."""

    def __init__(self, sink: Sink):
        self.sink, self.name = sink, sink.name

    def handle_event(self, event: EventMessage) -> None:
        self.sink.handle_event(event)

    def handle_level(self, report: LevelReport) -> None:
        self.sink.handle_level(report)

    def handle_window(self, report: WindowReport) -> None:
        self.sink.handle_window(report)

    def status(self) -> dict:
        return self.sink.status()


class MultiPipeline:
    def __init__(self, cfg: MonitorConfig, embedder: Embedder, sinks: Sequence[Sink] = (),
                 opener: Callable[[SourceConfig], AudioSource] = open_source,
                 retry_min_s: float = 1.0, retry_max_s: float = 60.0):
        self.cfg, self.opener = cfg, opener
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        # the dashboard first (one for all sources): a port taken fails before anything else is made
        observers = [*dashboard(cfg, self.status, self.clip_path), *sinks]
        detector = Detector.from_config(embedder, cfg)
        self.health = Health(Notifier(), cfg.detector.stall_s)
        self.shared = SharedDetector(detector, cfg.detector.batch_size, self.health)
        self.sinks: list[Sink] = [*observers, JsonLogSink(cfg.log)]  # the log closes last; the pipelines share them
        self.bridge = self._bridge(cfg)
        self.pipelines: dict[str, Pipeline] = {}
        # per source while it has no running pipeline: "retrying" or "failed", failures so far, the last error
        self._trouble = {src.name: {"state": "starting", "failures": 0, "error": None, "retry_at": None}
                         for src in cfg.sources}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # pipelines and cfg, against stop() and reload()
        self._stalled: DetectorStalled | None = None  # the shared model got stuck: every source is
        self._threads = [threading.Thread(target=self._run_source, args=(src,), name=f"source {src.name}", daemon=True)
                         for src in cfg.sources]

    def _bridge(self, cfg: MonitorConfig) -> Sink | None:
        if not cfg.mqtt.enabled:
            return None
        from .sinks.mqtt import MqttSink, default_node_id  # paho only when MQTT is configured

        self.node_id = cfg.mqtt.node_id or default_node_id()
        return MqttSink(dataclasses.replace(cfg.mqtt, node_id=self.node_id), [], "bridge", state_dir(cfg.state_dir))

    def run(self) -> None:
        """Runs until every source has ended or `stop()` is called."""
        # the log first: it records what the others say while starting
        for sink in [*reversed(self.sinks), *([self.bridge] if self.bridge else [])]:
            sink.start()
        log.info("monitoring %d sources: %s", len(self._threads), ", ".join(src.name for src in self.cfg.sources),
                 extra={"kind": "started", "sources": [src.name for src in self.cfg.sources]})
        self.shared.start_once()
        for thread in self._threads:
            thread.start()
        try:
            self.health.ready(f"monitoring {len(self._threads)} sources")
            for thread in self._threads:
                while thread.is_alive():
                    thread.join(0.2)
                    self.health.check()  # here too: pings go on while every source is being opened again
        except DetectorStalled as stall:
            self._stalled = stall  # every source's pipeline raises it too and stops without draining
        finally:
            self.health.notifier.stopping("stopping" if self._stalled is None else "detector stalled")
            self.stop()
            for thread in self._threads:
                thread.join()
            self.shared.stop(abandon=self._stalled is not None)
            self.shared.join(None if self._stalled is None else 1.0)  # a stuck model thread is left behind
            for sink in [*([self.bridge] if self.bridge else []), *self.sinks]:
                try:
                    sink.close()
                except Exception:
                    log.exception("closing %s failed", type(sink).__name__, extra={"kind": "sink_error"})
        if self._stalled is not None:
            raise self._stalled

    def stop(self) -> None:
        """Request shutdown (safe from a signal handler): every pipeline drains and ends."""
        self._stop.set()
        if self._stalled is not None:
            return  # a pipeline told to stop would drain the stuck model; the stall ends each one undrained
        with self._lock:
            pipelines = list(self.pipelines.values())
        for pipeline in pipelines:
            pipeline.stop()

    def reload(self, cfg: MonitorConfig) -> None:
        """`cfg` (monitor/reload.py merged it into the running one) from the next window on: each
        source's pipeline gets its `for_source` part (`Pipeline.reload`), the shared detector the
        labels, embedded again once for all sources; sources opened later start with it."""
        old = self.cfg
        if old.mqtt != cfg.mqtt:  # the bridge node too: the old one closes first (it may have the same client id)
            if self.bridge:
                self.bridge.close()
            self.bridge = self._bridge(cfg)
            if self.bridge:
                self.bridge.start()
        with self._lock:
            self.cfg = cfg
            configs = {name: self._config(name) for name in self.pipelines}
            self.shared.reload(cfg if taught_by(old) != taught_by(cfg) else None,
                               {p.detector: [label.name for label in configs[name].labels]
                                for name, p in self.pipelines.items()})
            for name, pipeline in self.pipelines.items():
                pipeline.reload(configs[name])
        self.health.stall_s = cfg.detector.stall_s

    def status(self) -> dict:
        """Each source's `Pipeline.status()` by name; its "source" part also says how often it failed
        (`failures`, the last `error`) and, while it has no running pipeline, why (`state` "starting",
        "retrying" until `retry_at`, or "failed" for good; then the other parts are missing)."""
        with self._lock:
            pipelines = dict(self.pipelines)
            trouble = {name: dict(t) for name, t in self._trouble.items()}
        sources = {}
        for name, t in trouble.items():
            status = pipelines[name].status() if name in pipelines else {"source": {"name": name}}
            state = t.pop("state") or status["source"]["state"]
            status["source"] = {**status["source"], **t, "state": state}
            sources[name] = status
        return {"sources": sources}

    def _failed(self, name: str, error: BaseException, retry_s: float | None) -> None:
        with self._lock:
            t = self._trouble[name]
            t.update(state="failed" if retry_s is None else "retrying", failures=t["failures"] + 1, error=str(error),
                     retry_at=None if retry_s is None else time.time() + retry_s)

    def clip_path(self, event_id: str, source: str | None = None) -> Path | None:
        """The clip of `event_id` of that source, or of any source."""
        with self._lock:
            pipelines = [p for name, p in self.pipelines.items() if source in (None, name)]
        return next(filter(None, (p.clip_path(event_id) for p in pipelines)), None)

    def _run_source(self, src: SourceConfig) -> None:
        delay = self.retry_min_s
        while (source := self._open(src)) is not None:
            with self._lock:  # built and listed at once: a reload reaches it or it is built from the reloaded cfg
                pipeline = Pipeline(self._config(src.name), source, self.shared,
                                    sinks=[Borrowed(sink) for sink in self.sinks[:-1]],
                                    log_sink=Borrowed(self.sinks[-1]))  # its status shows the one log
                self.pipelines[src.name] = pipeline
                self._trouble[src.name].update(state=None, retry_at=None)
                if self._stop.is_set():
                    pipeline.stop()  # runs, sees the stop and shuts down at once
            try:
                pipeline.run()
            except DetectorStalled as stall:
                self._stalled = stall
                self._stop.set()
                return
            except Exception as error:
                log.exception("source %s stopped by an error; the others go on", src.name,
                              extra={"kind": "source_failed", "source": src.name})
                self._failed(src.name, error, None)
                return
            finally:
                self.health.unwatch(pipeline.waiting)
            error = getattr(source, "error", None)  # a reader that failed (an end of file is None)
            if error is None or self._stop.is_set():
                return
            delay = self._back_off(src, error, delay, "failed (opened again in")
            if delay is None:
                return

    def _config(self, name: str) -> MonitorConfig:
        """Source `name`'s part of the running config (its labels may have changed in a reload)."""
        cfg = self.cfg.for_source(next(src for src in self.cfg.sources if src.name == name))
        return dataclasses.replace(cfg, mqtt=source_mqtt(cfg.mqtt, name, self.node_id)) if self.bridge else cfg

    def _open(self, src: SourceConfig) -> AudioSource | None:
        """The opened source, retried with back-off while it cannot be; None once stopped."""
        delay = self.retry_min_s
        while not self._stop.is_set():
            try:
                return self.opener(src)
            except SourceError as error:
                delay = self._back_off(src, error, delay, "cannot be opened (retry in")
                if delay is None:
                    break
        return None

    def _back_off(self, src: SourceConfig, error: BaseException, delay: float, what: str) -> float | None:
        """Logs and records a failure of `src`, waits `delay`: the next delay (doubled, capped), None once stopped."""
        log.warning("source %s %s %.1f s): %s", src.name, what, delay, error,
                    extra={"kind": "source_failed", "source": src.name, "error": str(error)})
        self._failed(src.name, error, delay)
        return None if self._stop.wait(delay) else min(delay * 2, self.retry_max_s)


def source_mqtt(mqtt: MqttConfig, source: str, bridge: str) -> MqttConfig:
    """The MQTT node of one source: `<bridge>_<source>`, its own client id and outbox, its
    Home Assistant device named after the source and reached via the bridge's."""
    return dataclasses.replace(
        mqtt, node_id=f"{bridge}_{slugify(source)}",
        client_id=mqtt.client_id and f"{mqtt.client_id}-{source}",
        outbox_path=mqtt.outbox_path and f"{mqtt.outbox_path}.{source}",
        discovery=dataclasses.replace(mqtt.discovery, via_device=bridge,
                                      device_name=f"{mqtt.discovery.device_name or f'Sound monitor {bridge}'} {source}"),
    )
