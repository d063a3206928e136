"""Several sources in one process: a pipeline per source, one shared model and detector, one log.

Each entry of `sources:` runs in its own `Pipeline` (resampler, ring buffer, windower,
rules, clips under `<clips.dir>/<name>`), built from `cfg.for_source(src)`; all score
through one `SharedDetector` (scheduler.py: batches across sources, in turn) and
report to one JSON log and the observer sinks given here. A source that cannot be
opened (device missing, file unreadable, ffmpeg absent) is retried with capped
back-off on its own thread; a source that ends or fails ends alone: the others go on.

With MQTT each source is a node of its own, `<node_id>_<source>` (its topics, client
id, outbox and Home Assistant device), and the process keeps a bridge node `<node_id>`
(availability and a "running" entity) that the sources' devices name as `via_device`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Sequence

from .config import MonitorConfig, MqttConfig, SourceConfig, slugify
from .detector import Detector, Embedder
from .events import EventMessage, LevelReport, WindowReport
from .health import DetectorStalled
from .pipeline import Pipeline
from .scheduler import SharedDetector
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
        detector = Detector.from_config(embedder, cfg)
        self.shared = SharedDetector(detector, cfg.detector.batch_size)
        self.sinks: list[Sink] = [*sinks, JsonLogSink(cfg.log)]  # the log closes last; the pipelines share them
        self.bridge: Sink | None = None
        if cfg.mqtt.enabled:
            from .sinks.mqtt import MqttSink, default_node_id  # paho only when MQTT is configured

            self.node_id = cfg.mqtt.node_id or default_node_id()
            self.bridge = MqttSink(dataclasses.replace(cfg.mqtt, node_id=self.node_id), [], "bridge",
                                   state_dir(cfg.state_dir))
        self.pipelines: dict[str, Pipeline] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # pipelines, against stop()
        self._stalled: DetectorStalled | None = None  # the shared model got stuck: every source is
        self._threads = [threading.Thread(target=self._run_source, args=(src,), name=f"source {src.name}", daemon=True)
                         for src in cfg.sources]

    def run(self) -> None:
        """Runs until every source has ended or `stop()` is called."""
        owned = [*([self.bridge] if self.bridge else []), *self.sinks]
        for sink in reversed(owned):  # the log first: it records what the others say while starting
            sink.start()
        log.info("monitoring %d sources: %s", len(self._threads), ", ".join(src.name for src in self.cfg.sources),
                 extra={"kind": "started", "sources": [src.name for src in self.cfg.sources]})
        self.shared.start_once()
        for thread in self._threads:
            thread.start()
        try:
            for thread in self._threads:
                while thread.is_alive():
                    thread.join(0.2)
        finally:
            self.stop()
            for thread in self._threads:
                thread.join()
            self.shared.stop()
            self.shared.join(None if self._stalled is None else 1.0)  # a stuck model thread is left behind
            for sink in owned:
                try:
                    sink.close()
                except Exception:
                    log.exception("closing %s failed", type(sink).__name__, extra={"kind": "sink_error"})
        if self._stalled is not None:
            raise self._stalled

    def stop(self) -> None:
        """Request shutdown (safe from a signal handler): every pipeline drains and ends."""
        self._stop.set()
        with self._lock:
            pipelines = list(self.pipelines.values())
        for pipeline in pipelines:
            pipeline.stop()

    def status(self) -> dict:
        """Each running source's `Pipeline.status()`, by source name."""
        with self._lock:
            pipelines = dict(self.pipelines)
        return {"sources": {name: pipeline.status() for name, pipeline in pipelines.items()}}

    def _run_source(self, src: SourceConfig) -> None:
        source = self._open(src)
        if source is None:
            return
        pipeline = Pipeline(self._config(src), source, self.shared, sinks=[Borrowed(s) for s in self.sinks])
        with self._lock:
            self.pipelines[src.name] = pipeline
            if self._stop.is_set():
                pipeline.stop()  # runs, sees the stop and shuts down at once
        try:
            pipeline.run()
        except DetectorStalled as stall:
            self._stalled = stall
            self.stop()
        except Exception:
            log.exception("source %s stopped by an error; the others go on", src.name,
                          extra={"kind": "source_failed", "source": src.name})

    def _config(self, src: SourceConfig) -> MonitorConfig:
        cfg = self.cfg.for_source(src)
        return dataclasses.replace(cfg, mqtt=source_mqtt(cfg.mqtt, src.name, self.node_id)) if self.bridge else cfg

    def _open(self, src: SourceConfig) -> AudioSource | None:
        """The opened source, retried with back-off while it cannot be; None once stopped."""
        delay = self.retry_min_s
        while not self._stop.is_set():
            try:
                return self.opener(src)
            except SourceError as error:
                log.warning("source %s cannot be opened (retry in %.1f s): %s", src.name, delay, error,
                            extra={"kind": "source_failed", "source": src.name, "error": str(error)})
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.retry_max_s)
        return None


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
