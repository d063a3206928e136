"""Prometheus metrics of one monitor, in a registry of its own.

Counts the pipeline already keeps (windows, source, MQTT, clips) are read from its
status snapshot at scrape time by `StatusCollector`, so nothing is counted twice;
only what the status does not hold is recorded as it happens: the inference latency
histogram (from window reports) and events per label (from event starts).
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events import EventMessage, WindowReport

PREFIX = "sound_monitor"
STATES = ("idle", "hit", "event", "cooldown", "quiet")
# model time per window: the tiny test model takes ~1 ms, the full one ~100 ms on 2 cores
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, labels: Iterable[str], status: Callable[[], dict]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.inference = Histogram(
            f"{PREFIX}_inference_seconds", "Model wall time per scored window (batch time / batch size)",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.events = Counter(f"{PREFIX}_events", "Events started, by label", ["label"], registry=self.registry)
        for label in labels:
            self.events.labels(label)  # every label's series exists from the start, at 0
        self.registry.register(StatusCollector(status))

    def observe_window(self, report: WindowReport) -> None:
        if report.inference_ms is not None:
            self.inference.observe(report.inference_ms / 1000)

    def observe_event(self, event: EventMessage) -> None:
        if event.phase == "start":
            self.events.labels(event.label).inc()


def _counter(name: str, doc: str, value, labels: dict | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels or ()))
    family.add_metric(list((labels or {}).values()), value or 0)
    return family


def _gauge(name: str, doc: str, value) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float("nan") if value is None else value)


class StatusCollector:
    """Turns one `Pipeline.status()` snapshot into metric families."""

    def __init__(self, status: Callable[[], dict]):
        self.status = status

    def describe(self) -> list[Metric]:
        return []  # the families depend on the configured sinks: nothing to pre-register

    def collect(self) -> Iterable[Metric]:
        status = self.status()
        windows, source = status["windows"], status["source"]
        yield _counter("windows_scored", "Windows scored by the model", windows["scored"])
        yield _counter("windows_gated", "Windows below the level gate, not scored", windows["gated"])
        yield _counter("windows_dropped", "Windows dropped because the detector was behind", windows["dropped"])
        yield _counter("windows_skipped", "Windows skipped because the windower fell behind the ring", windows["skipped"])
        yield _counter("source_gaps", "Input gaps of the source (filled with silence)", source["gaps"])
        yield _counter("source_gap_seconds", "Seconds of input lost in gaps", source["gap_s"])
        yield _counter("source_overflows", "Capture overflows reported by the source", source["overflows"])
        yield _counter("stream_seconds", "Seconds of audio received", status["stream_s"])
        yield _gauge("level_dbfs", "Level of the latest window in dBFS", status["level_dbfs"])
        yield _gauge("realtime_factor", "Audio seconds scored per second of model time", status["realtime_factor"])
        yield _gauge("start_time_seconds", "UNIX time the monitor started", status["started_at"])
        running = GaugeMetricFamily(f"{PREFIX}_source_running", "1 while the source delivers audio", labels=["source"])
        running.add_metric([source["name"]], source["state"] == "running")
        yield running
        score = GaugeMetricFamily(f"{PREFIX}_label_score", "Latest score per label (0-1)", labels=["label"])
        threshold = GaugeMetricFamily(f"{PREFIX}_label_threshold", "Start threshold per label", labels=["label"])
        state = GaugeMetricFamily(f"{PREFIX}_label_state", "1 for the label's current state", labels=["label", "state"])
        for name, label in status["labels"].items():
            score.add_metric([name], float("nan") if label["score"] is None else label["score"])
            threshold.add_metric([name], label["threshold"])
            for s in STATES:
                state.add_metric([name, s], label["state"] == s)
        yield from (score, threshold, state)
        yield from _sink_metrics(status["sinks"])


def _sink_metrics(sinks: dict) -> Iterable[Metric]:
    if "mqtt" in sinks:
        mqtt = sinks["mqtt"]
        yield _gauge("mqtt_connected", "1 while connected to the MQTT broker", mqtt["connected"])
        yield _gauge("mqtt_queued_messages", "Messages waiting for the broker", mqtt["queued"])
        yield _counter("mqtt_dropped_messages", "Messages dropped past mqtt.queue_limit", mqtt["dropped"])
    if "clips" in sinks:
        yield _counter("clips_written", "Event clips written", sinks["clips"]["written"])
    if "http" in sinks:
        yield _gauge("http_clients", "Live dashboard streams", sinks["http"]["clients"])
        yield _counter("http_stream_dropped_messages", "Messages dropped for slow dashboard clients",
                       sinks["http"]["dropped"])
