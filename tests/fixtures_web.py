"""Dashboard test fixtures: a fake status provider with real WAV clips, a started DashboardSink,
an HTTP client that sends paths exactly as given, an SSE reader, and headless Chromium
(Debian's `chromium`, driven by Playwright; no browser download)."""

from __future__ import annotations

import http.client
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from monitor.config import HttpConfig, LabelConfig
from monitor.events import EventMessage, WindowReport
from monitor.web import DashboardSink

CHROMIUM = "chromium"
# as root in a container: no sandbox; no GPU; no calls home
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Playwright's sync API on the system browser). Per module: while it
    runs, Playwright's event loop counts as running in this thread, so `asyncio.run` would
    fail in any later test of the session."""
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.fail("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A new page; no script error or console error may happen on it."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # the resource's URL too: a console line "Failed to load resource: ... 500" does not name it
    page.on("console", lambda message: message.type == "error" and errors.append(
        f"{message.text} ({message.location.get('url') or 'no url'})"))
    yield page
    page.close()
    assert not errors, errors


RATE = 48000
LABELS = (LabelConfig(name="beep", threshold=0.5, end_threshold=0.4), LabelConfig(name="alarm", threshold=0.7))
SOURCE = "file:test.wav"
WATCHED = {SOURCE: [label.name for label in LABELS]}  # the dashboard's labels per source
TOKEN = "0123456789abcdef-test-token"
SECRET = "do-not-serve-this"


class FakeMonitor:
    """A status snapshot shaped like Pipeline.status() and a clip directory like ClipSink's."""

    def __init__(self, clip_dir: Path):
        self.clip_dir = clip_dir
        self.snapshot = {
            "started_at": 1000.0, "stream_s": 12.5,
            "source": {"name": SOURCE, "live": True, "state": "running", "gaps": 1, "gap_s": 0.5,
                       "overflows": 2},
            "windows": {"scored": 10, "gated": 3, "dropped": 1, "skipped": 0},
            "inference_ms": 4.0, "realtime_factor": 25.0, "level_dbfs": float("-inf"),
            "labels": {label.name: {"state": "idle", "score": None, "threshold": label.threshold,
                                    "end_threshold": label.stop_threshold} for label in LABELS},
            "sinks": {"mqtt": {"connected": True, "queued": 4, "dropped": 7}, "clips": {"dir": str(clip_dir), "written": 1}},
        }
        self.sink: DashboardSink | None = None

    def status(self) -> dict:
        sinks = {**self.snapshot["sinks"], "http": self.sink.status()} if self.sink else self.snapshot["sinks"]
        return {**self.snapshot, "sinks": sinks}

    def clip_path(self, event_id: str, source: str | None = None) -> Path | None:
        path = self.clip_dir / f"{event_id}.wav"  # naive on purpose: the dashboard must vet the id
        return path if path.exists() and source in (None, SOURCE) else None


def http_config(**overrides) -> HttpConfig:
    return HttpConfig(**{"enabled": True, "host": "127.0.0.1", "port": 0, **overrides})


@pytest.fixture
def monitor(tmp_path) -> FakeMonitor:
    (tmp_path / "config.yaml").write_text(f"secret: {SECRET}\n")
    (tmp_path / "outside.wav").write_text(SECRET)
    clip_dir = tmp_path / "clips"
    clip_dir.mkdir()
    tone = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)
    soundfile.write(str(clip_dir / "beep-100000.wav"), tone.astype(np.float32), RATE)
    return FakeMonitor(clip_dir)


def start(monitor: FakeMonitor, **cfg) -> DashboardSink:
    sink = DashboardSink(http_config(**cfg), WATCHED, monitor.status, monitor.clip_path)
    monitor.sink = sink
    sink.start()
    return sink


@pytest.fixture
def dashboard(monitor):
    sink = start(monitor)
    yield sink
    sink.close()


def request(sink: DashboardSink, path: str, method: str = "GET", headers: dict | None = None):
    """Sends `path` exactly as given (no client-side normalisation); returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def get_json(sink: DashboardSink, path: str):
    status, _, body = request(sink, path)
    assert status == 200, body
    return json.loads(body)


def event(phase: str, label: str, started: float, ended: float | None = None, score: float = 0.8,
          source: str = SOURCE) -> EventMessage:
    return EventMessage(phase=phase, event_id=f"{label}-{round(started * 1000)}", label=label, score=score,
                        peak_score=score, mean_score=score, started_at=started, ended_at=ended,
                        duration_s=(ended or started) - started, level_dbfs=-20.0, source=source)


def window(t: float, scores: dict | None, inference_ms: float | None = 4.0, source: str = SOURCE) -> WindowReport:
    return WindowReport(source=source, start_time=t - 1, end_time=t, level_dbfs=-20.0 if scores else -60.0,
                        scores=scores, inference_ms=inference_ms if scores else None)


class Stream:
    """A reading SSE client: yields (event, data) pairs."""

    def __init__(self, sink: DashboardSink):
        self.conn = http.client.HTTPConnection("127.0.0.1", sink.server.port, timeout=10)
        self.conn.request("GET", "/api/stream")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")

    def next(self) -> tuple[str, dict]:
        kind = None
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            if line.startswith("event: "):
                kind = line[7:].strip()
            elif line.startswith("data: "):
                return kind, json.loads(line[6:])

    def until(self, kind: str) -> dict:
        while True:
            got, data = self.next()
            if got == kind:
                return data

    def close(self) -> None:
        self.conn.close()




def assert_nonblank_png(data: bytes, min_size: tuple[int, int] = (800, 500)) -> None:
    """A real PNG of at least `min_size` with many colours: a page was drawn, not a blank sheet."""
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
    pixels = np.asarray(image).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 100 and pixels.std() > 10
