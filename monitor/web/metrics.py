"""Prometheus metrics of one monitor process, in a registry of its own.

Counts the pipelines already keep (windows, source, MQTT, clips) are read from the
status snapshot at scrape time by `StatusCollector`, so nothing is counted twice;
only what the status does not hold is recorded as it happens: the inference latency
histogram (from window reports) and events per source and label (from event starts).
Every per-source series has a `source` label (one series per source with `sources:`);
the model and the dashboard are the process's, so their series have none. A source
opened again after a failure starts its counters from 0 (a counter reset to Prometheus).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events import EventMessage, WindowReport
from .state import per_source

PREFIX = "sound_monitor"
STATES = ("idle", "hit", "event", "cooldown", "quiet")
SOURCE_STATES = ("starting", "running", "retrying", "failed", "ended", "stopped")
# model time per window: the tiny test model takes ~1 ms, the full one ~100 ms on 2 cores
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, labels: Mapping[str, Iterable[str]], status: Callable[[], dict],
                 http: Callable[[], dict]):
        """`labels`: each source's label names; `status`: the pipeline's or `MultiPipeline`'s;
        `http`: the dashboard's own status (its clients)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds", "Model wall time per scored window (batch time / batch size)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.events = Counter(f"{PREFIX}_events", "Events started, by source and label", ["source", "label"],
                              registry=self.registry)
        for source, names in labels.items():
            for label in names:
                self.events.labels(source, label)  # every watched label's series exists from the start, at 0
        self.registry.register(StatusCollector(status, http))

    def observe_window(self, report: WindowReport) -> None:
        if report.inference_ms is not None:
            self.inference.observe(report.inference_ms / 1000)

    def observe_event(self, event: EventMessage) -> None:
        if event.phase == "start":
            self.events.labels(event.source, event.label).inc()


class Families:
    """Metric families by name, made on their first sample, yielded in that order."""

    def __init__(self):
        self._families: dict[str, Metric] = {}

    def add(self, kind: type, name: str, doc: str, value, **labels) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(f"{PREFIX}_{name}", doc, labels=list(labels))
        family.add_metric(list(labels.values()), float("nan") if value is None else value)

    def counter(self, name: str, doc: str, value, **labels) -> None:
        self.add(CounterMetricFamily, name, doc, value or 0, **labels)

    def gauge(self, name: str, doc: str, value, **labels) -> None:
        self.add(GaugeMetricFamily, name, doc, value, **labels)

    def __iter__(self):
        return iter(self._families.values())


class StatusCollector:
    """Turns one status snapshot (one source's or several) into metric families."""

    def __init__(self, status: Callable[[], dict], http: Callable[[], dict]):
        self.status, self.http = status, http

    def describe(self) -> list[Metric]:
        return []  # the families depend on the configured sinks: nothing to pre-register

    def collect(self) -> Iterable[Metric]:
        out = Families()
        sources = per_source(self.status())
        started = [s["started_at"] for s in sources.values() if s.get("started_at") is not None]
        out.gauge("start_time_seconds", "UNIX time the monitor started", min(started, default=None))
        for name, status in sources.items():
            _source_metrics(out, name, status)
        http = self.http()
        out.gauge("http_clients", "Live dashboard streams", http["clients"])
        out.counter("http_stream_dropped_messages", "Messages dropped for slow dashboard clients", http["dropped"])
        return out


def _source_metrics(out: Families, name: str, status: dict) -> None:
    source = status["source"]
    out.gauge("source_running", "1 while the source delivers audio", source["state"] == "running", source=name)
    for state in SOURCE_STATES:
        out.gauge("source_state", "1 for the source's current state", source["state"] == state, source=name,
                  state=state)
    if "failures" in source:  # several sources: failed opens and reads, each retried
        out.counter("source_failures", "Times the source could not be opened or its reader failed",
                    source["failures"], source=name)
    if "windows" not in status:
        return  # not opened yet: nothing counted
    windows = status["windows"]
    out.counter("windows_scored", "Windows scored by the model", windows["scored"], source=name)
    out.counter("windows_gated", "Windows below the level gate, not scored", windows["gated"], source=name)
    out.counter("windows_dropped", "Windows dropped because the detector was behind", windows["dropped"], source=name)
    out.counter("windows_skipped", "Windows skipped because the windower fell behind the ring", windows["skipped"],
                source=name)
    out.counter("source_gaps", "Input gaps of the source (filled with silence)", source["gaps"], source=name)
    out.counter("source_gap_seconds", "Seconds of input lost in gaps", source["gap_s"], source=name)
    out.counter("source_overflows", "Capture overflows reported by the source", source["overflows"], source=name)
    out.counter("stream_seconds", "Seconds of audio received", status["stream_s"], source=name)
    out.gauge("level_dbfs", "Level of the latest window in dBFS", status["level_dbfs"], source=name)
    out.gauge("realtime_factor", "Audio seconds scored per second of model time", status["realtime_factor"],
              source=name)
    for label, info in status["labels"].items():
        out.gauge("label_score", "Latest score per label (0-1)", info["score"], source=name, label=label)
        out.gauge("label_threshold", "Start threshold per label", info["threshold"], source=name, label=label)
        for state in STATES:
            out.gauge("label_state", "1 for the label's current state", info["state"] == state, source=name,
                      label=label, state=state)
    sinks = status["sinks"]
    if "mqtt" in sinks:
        mqtt = sinks["mqtt"]
        out.gauge("mqtt_connected", "1 while connected to the MQTT broker", mqtt["connected"], source=name)
        out.gauge("mqtt_queued_messages", "Messages waiting for the broker", mqtt["queued"], source=name)
        out.counter("mqtt_dropped_messages", "Messages dropped past mqtt.queue_limit", mqtt["dropped"], source=name)
    if "clips" in sinks:
        out.counter("clips_written", "Event clips written", sinks["clips"]["written"], source=name)
