"""The dashboard of a monitor with several sources (`sources:`): one server fed by every source,
a status shaped like `MultiPipeline.status()` (a running source, one being retried), events
filtered by source, clips of two sources with the same event id kept apart, /metrics with a
`source` label, and the page in a real headless Chromium showing every source."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import LabelConfig
from monitor.web import DashboardSink
from tests.fixtures_web import RATE, assert_nonblank_png, event, get_json, http_config, request, window

KITCHEN = (LabelConfig(name="beep", threshold=0.5, end_threshold=0.4), LabelConfig(name="alarm", threshold=0.7))
GARAGE = (LabelConfig(name="beep", threshold=0.6), LabelConfig(name="engine", threshold=0.8))
WATCHED = {"kitchen": ["beep", "alarm"], "garage": ["beep", "engine"], "attic": ["beep"]}


def source_status(name: str, labels, scored: int, level: float, clip_dir: Path) -> dict:
    """Shaped like one source's Pipeline.status() inside MultiPipeline.status()."""
    return {
        "started_at": 1000.0 + scored, "stream_s": scored / 2,
        "source": {"name": name, "live": True, "state": "running", "gaps": scored // 10, "gap_s": 0.0,
                   "overflows": 0, "failures": 0, "error": None, "retry_at": None},
        "windows": {"scored": scored, "gated": 2, "dropped": 1, "skipped": 0},
        "inference_ms": 4.0, "realtime_factor": 20.0, "level_dbfs": level,
        "labels": {label.name: {"state": "idle", "score": None, "threshold": label.threshold,
                                "end_threshold": label.stop_threshold} for label in labels},
        "sinks": {"clips": {"dir": str(clip_dir), "written": scored // 10}},
    }


class FakeSources:
    """A status like MultiPipeline.status(): kitchen and garage running, attic not opened yet
    (its file is missing: retried); clip folders per source, like <clips.dir>/<name>."""

    def __init__(self, root: Path):
        self.root = root
        self.snapshot = {"sources": {
            "kitchen": source_status("kitchen", KITCHEN, 30, -20.0, root / "kitchen"),
            "garage": source_status("garage", GARAGE, 50, -35.0, root / "garage"),
            "attic": {"source": {"name": "attic", "state": "retrying", "failures": 3,
                                 "error": "attic.wav: no such file", "retry_at": 2000.0}},
        }}

    def status(self) -> dict:
        return self.snapshot

    def clip_path(self, event_id: str, source: str | None = None) -> Path | None:
        for name in ("kitchen", "garage"):
            path = self.root / name / f"{event_id}.wav"
            if source in (None, name) and path.exists():
                return path
        return None


@pytest.fixture
def sources(tmp_path) -> FakeSources:
    for name, hz in (("kitchen", 1000), ("garage", 200)):  # the same event id in both folders, different audio
        (tmp_path / name).mkdir()
        seconds = 1.0 if name == "kitchen" else 2.0
        tone = 0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)
        soundfile.write(str(tmp_path / name / "beep-100000.wav"), tone.astype(np.float32), RATE)
    return FakeSources(tmp_path)


@pytest.fixture
def dashboard(sources):
    sink = DashboardSink(http_config(), WATCHED, sources.status, sources.clip_path)
    sink.start()
    yield sink
    sink.close()


def test_status_lists_every_source_with_its_state(dashboard):
    status = get_json(dashboard, "/api/status")["sources"]
    assert list(status) == ["kitchen", "garage", "attic"]
    assert status["kitchen"]["windows"]["scored"] == 30 and status["garage"]["labels"]["engine"]["threshold"] == 0.8
    assert status["attic"] == {"source": {"name": "attic", "state": "retrying", "failures": 3,
                                          "error": "attic.wav: no such file", "retry_at": 2000.0}}


def test_events_filter_by_source(dashboard):
    for message in [event("start", "beep", 100.0, source="kitchen"), event("end", "beep", 100.0, 102.0, source="kitchen"),
                    event("start", "beep", 100.0, source="garage"),  # the same id, another source: its own record
                    event("start", "engine", 150.0, source="garage")]:
        dashboard.handle_event(message)
    ids = lambda path: [(e["source"], e["event_id"], e["phase"]) for e in get_json(dashboard, path)]
    assert ids("/api/events") == [("kitchen", "beep-100000", "end"), ("garage", "beep-100000", "start"),
                                  ("garage", "engine-150000", "start")]
    assert ids("/api/events?source=kitchen") == [("kitchen", "beep-100000", "end")]
    assert ids("/api/events?source=garage&label=beep") == [("garage", "beep-100000", "start")]
    assert ids("/api/events?label=engine") == [("garage", "engine-150000", "start")]  # any source's labels
    assert ids("/api/events?source=garage&since=151") == [("garage", "beep-100000", "start"),
                                                          ("garage", "engine-150000", "start")]
    for bad, words in [("/api/events?source=cellar", b"unknown source 'cellar'; sources: kitchen, garage, attic"),
                       ("/api/events?source=kitchen&label=engine", b"unknown label 'engine'; labels: beep, alarm")]:
        status, _, body = request(dashboard, bad)
        assert status == 400 and words in body


def test_clips_of_two_sources_with_the_same_event_id(dashboard):
    durations = {}
    for name in ("kitchen", "garage"):
        status, headers, body = request(dashboard, f"/clips/beep-100000.wav?source={name}")
        assert status == 200 and headers["content-type"] == "audio/wav"
        durations[name] = soundfile.info(io.BytesIO(body)).duration
        assert request(dashboard, f"/clips/beep-100000.png?source={name}")[0] == 200
    assert durations == {"kitchen": 1.0, "garage": 2.0}
    png = {name: request(dashboard, f"/clips/beep-100000.png?source={name}")[2] for name in ("kitchen", "garage")}
    assert png["kitchen"] != png["garage"]  # one spectrogram each, not one cached for both
    for path in ["/clips/beep-100000.wav?source=attic", "/clips/beep-100000.wav?source=../kitchen",
                 "/clips/beep-100000.png?source=..%2fgarage", "/clips/beep-100000.wav?source="]:
        assert request(dashboard, path)[0] == 404, path


def test_each_source_keeps_its_last_five_minutes(dashboard):
    """A source whose times run ahead (a file replayed fast) does not push the others out."""
    for t in range(0, 1000, 2):
        dashboard.handle_window(window(float(t), {"beep": 0.5}, source="garage"))
    dashboard.handle_window(window(100.0, {"beep": 0.5}, source="kitchen"))
    dashboard.handle_window(window(101.0, {"beep": 0.5}, source="kitchen"))
    times = {}
    for w in dashboard.dash.timeline.snapshot():
        times.setdefault(w["source"], []).append(w["end_time"])
    assert times["kitchen"] == [100.0, 101.0] and times["garage"] == list(range(998 - 300, 1000, 2))


def test_a_clip_is_offered_once_its_sources_file_exists(dashboard, sources):
    dashboard.handle_event(event("start", "engine", 300.0, source="garage"))
    dashboard.handle_event(event("end", "engine", 300.0, 302.0, source="garage"))
    dashboard.dash.push_status()
    assert get_json(dashboard, "/api/events?source=garage&label=engine")[0]["clip"] is False
    soundfile.write(str(sources.root / "garage" / "engine-300000.wav"), np.zeros(RATE, np.float32), RATE)
    dashboard.dash.push_status()
    assert get_json(dashboard, "/api/events?source=garage&label=engine")[0]["clip"] is True


def metrics(sink: DashboardSink) -> dict[tuple[str, tuple], float]:
    body = request(sink, "/metrics")[2].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_carry_the_source(dashboard):
    dashboard.handle_window(window(1.0, {"beep": 0.6, "alarm": 0.1}, 3.0, source="kitchen"))
    dashboard.handle_window(window(1.0, {"beep": 0.2, "engine": 0.9}, 5.0, source="garage"))
    dashboard.handle_event(event("start", "engine", 1.0, source="garage"))
    m = metrics(dashboard)
    for name, scored in (("kitchen", 30), ("garage", 50)):
        src = (("source", name),)
        assert m[("sound_monitor_windows_scored_total", src)] == scored
        assert m[("sound_monitor_windows_dropped_total", src)] == 1
        assert m[("sound_monitor_source_gaps_total", src)] == scored // 10
        assert m[("sound_monitor_clips_written_total", src)] == scored // 10
        assert m[("sound_monitor_source_state", (*src, ("state", "running")))] == 1
    assert m[("sound_monitor_level_dbfs", (("source", "garage"),))] == -35.0
    assert m[("sound_monitor_label_threshold", (("label", "engine"), ("source", "garage")))] == 0.8
    assert ("sound_monitor_label_threshold", (("label", "engine"), ("source", "kitchen"))) not in m
    assert m[("sound_monitor_events_total", (("label", "engine"), ("source", "garage")))] == 1
    assert m[("sound_monitor_events_total", (("label", "beep"), ("source", "garage")))] == 0
    assert m[("sound_monitor_events_total", (("label", "beep"), ("source", "attic")))] == 0  # there before it opens
    # the source being retried: its state and failures, no window series until it runs
    attic = (("source", "attic"),)
    assert m[("sound_monitor_source_state", (*attic, ("state", "retrying")))] == 1
    assert m[("sound_monitor_source_running", attic)] == 0 and m[("sound_monitor_source_failures_total", attic)] == 3
    assert ("sound_monitor_windows_scored_total", attic) not in m
    # the model and the server are the process's: one series each
    assert m[("sound_monitor_inference_seconds_count", ())] == 2 and m[("sound_monitor_http_clients", ())] == 0
    assert m[("sound_monitor_start_time_seconds", ())] == 1030.0  # the earliest source's start


# ------------------------------------------------------------------ the page


def test_page_shows_every_source(page, dashboard, sources):
    now = time.time()
    dashboard.handle_window(window(now - 5, {"beep": 0.2, "alarm": 0.1}, source="kitchen"))
    dashboard.handle_window(window(now - 5, {"beep": 0.3, "engine": 0.9}, source="garage"))  # the same time
    page.goto(dashboard.url)
    rows = "#source-rows tr"
    page.wait_for_function(f"document.querySelectorAll('{rows}').length == 3")
    assert page.eval_on_selector_all(rows, "rows => rows.map(r => r.dataset.source)") == ["kitchen", "garage", "attic"]
    assert page.is_visible("#sources") and page.is_visible("#source-select")
    assert page.inner_text('#source-rows tr[data-source="attic"] .state') == "retrying"
    assert "attic.wav: no such file" in page.inner_text('#source-rows tr[data-source="attic"]')
    assert page.inner_text('#source-rows tr[data-source="garage"]').split("\t")[2] == "-35.0 dBFS"

    # the first source is shown; each source's timeline got its own window
    kitchen = '.label[data-source="kitchen"][data-label="beep"] canvas'
    page.wait_for_selector(f'{kitchen}[data-points="1"]')
    assert page.inner_text("#h-scored") == "30"
    dashboard.handle_window(window(now - 4, {"beep": 0.7, "engine": 0.95}, source="garage"))
    page.select_option("#source-select", "garage")
    garage = '.label[data-source="garage"][data-label="engine"] canvas'
    page.wait_for_selector(f'{garage}[data-points="2"]')
    assert page.inner_text('.label[data-source="garage"][data-label="engine"] .score') == "0.950"
    assert not page.query_selector('.label[data-source="kitchen"]')  # one source's labels at a time
    assert page.inner_text("#h-scored") == "50" and page.inner_text("#level-value") == "-20.0 dBFS"

    # a source back from retrying: its state and counters follow the status pushes
    sources.snapshot["sources"]["attic"] = source_status("attic", GARAGE[:1], 4, -50.0, sources.root / "attic")
    page.wait_for_function("document.querySelector('#source-rows tr[data-source=\"attic\"] .state')"
                           ".textContent === 'running'")
    page.click('#source-rows tr[data-source="attic"]')
    page.wait_for_function("document.getElementById('h-scored')?.textContent === '4'")
    assert page.input_value("#source-select") == "attic"

    # events of every source in one table, with their source; clips by source
    dashboard.handle_event(event("start", "beep", 100.0, source="kitchen"))
    dashboard.handle_event(event("end", "beep", 100.0, 102.0, source="kitchen"))
    dashboard.handle_event(event("end", "beep", 100.0, 101.0, source="garage"))
    for name, seconds in (("kitchen", 1.0), ("garage", 2.0)):
        audio = f'tr[data-event="beep-100000"][data-source="{name}"] audio'
        page.wait_for_function(f"document.querySelector('{audio}')?.readyState >= 1")
        assert page.evaluate(f"document.querySelector('{audio}').duration") == pytest.approx(seconds)
        assert page.inner_text(f'tr[data-event="beep-100000"][data-source="{name}"] td') == name
    assert_nonblank_png(page.screenshot(full_page=True))
