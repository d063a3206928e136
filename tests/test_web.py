"""The dashboard's HTTP side: a real DashboardSink and its server on 127.0.0.1 (a free port),
fed by a fake status provider and real WAV clips. Every endpoint, the token paths, clip ids
that must not resolve, event filtering, a client that never reads its stream, and /metrics
read back with prometheus_client's own parser."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from prometheus_client.parser import text_string_to_metric_families

import monitor.web.clips as web_clips
from monitor.config_loader import ConfigError, load_config
from monitor.sinks.base import SinkError
from monitor.web import DashboardSink
from monitor.web.state import CLIENT_QUEUE, MAX_CLIENTS
from tests.fixtures_web import (RATE, SECRET, SOURCE, TOKEN, WATCHED, Stream, event, get_json, http_config, request,
                                start, window)
from tests.helpers import wait_until

# ------------------------------------------------------------------ pages and JSON


def test_page_is_self_contained(dashboard):
    status, headers, body = request(dashboard, "/")
    page = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert 'new EventSource("api/stream")' in page and "<canvas" not in page.split("<script>")[0]
    assert "http://" not in page and "https://" not in page and "src=\"//" not in page  # no CDN: works offline


def test_status_is_the_providers_snapshot_as_json(dashboard, monitor):
    status = get_json(dashboard, "/api/status")
    assert status["level_dbfs"] is None  # -inf (digital silence) has no JSON form
    assert status["windows"] == monitor.snapshot["windows"] and status["labels"]["beep"]["end_threshold"] == 0.4
    assert status["sinks"]["http"] == {"url": dashboard.url, "clients": 0, "dropped": 0}


def test_events_filter_by_since_and_label(dashboard):
    for message in [event("start", "beep", 100.0), event("end", "beep", 100.0, 105.0), event("start", "alarm", 200.0),
                    event("start", "beep", 300.0), event("update", "beep", 300.0), event("end", "beep", 300.0, 310.0)]:
        dashboard.handle_event(message)
    ids = lambda path: [(e["event_id"], e["phase"]) for e in get_json(dashboard, path)]
    assert ids("/api/events") == [("beep-100000", "end"), ("alarm-200000", "start"), ("beep-300000", "end")]
    # since: events still in progress at or after that time (ended later, or open)
    assert ids("/api/events?since=105") == ids("/api/events")
    assert ids("/api/events?since=105.5") == [("alarm-200000", "start"), ("beep-300000", "end")]
    assert ids("/api/events?since=311") == [("alarm-200000", "start")]
    assert ids("/api/events?label=beep") == [("beep-100000", "end"), ("beep-300000", "end")]
    assert ids("/api/events?label=beep&since=106") == [("beep-300000", "end")]
    record = get_json(dashboard, "/api/events?label=beep")[0]
    assert record["started_at"] == 100.0 and record["ended_at"] == 105.0 and record["clip"] is False
    for bad in ["/api/events?since=yesterday", "/api/events?since=nan", "/api/events?label=dog"]:
        status, _, body = request(dashboard, bad)
        assert status == 400 and json.loads(body)["error"]
    assert b"beep, alarm" in request(dashboard, "/api/events?label=dog")[2]  # names the labels there are


@pytest.mark.parametrize("host, status", [("localhost", 200), ("127.0.0.1", 200), ("[::1]", 200), ("LOCALHOST", 200),
                                          ("evil.example", 400), ("127.0.0.1.evil.example", 400), ("", 400),
                                          ("[::1].evil.example", 400), ("192.168.1.5", 400)])
def test_without_a_token_only_loopback_host_names_are_answered(dashboard, host, status):
    """A page elsewhere cannot read the dashboard through a DNS name rebound to 127.0.0.1."""
    port = f":{dashboard.server.port}" if host else ""
    assert request(dashboard, "/api/status", headers={"Host": host + port})[0] == status


def test_a_failing_request_is_a_500_logged_in_the_monitors_log(dashboard, monitor, caplog):
    monitor.snapshot = {}  # status() now fails
    with caplog.at_level(logging.ERROR, logger="monitor.web.server"):
        assert request(dashboard, "/api/status")[0] == 500
        assert wait_until(lambda: [r for r in caplog.records if getattr(r, "kind", None) == "http_error"])
    assert request(dashboard, "/")[0] == 200  # the server goes on


def test_nothing_can_be_changed(dashboard):
    for path in ["/", "/api/status", "/api/events", "/api/stream", "/clips/beep-100000.wav", "/metrics"]:
        for method in ["POST", "PUT", "DELETE", "PATCH"]:
            assert request(dashboard, path, method)[0] == 405, (method, path)
    assert request(dashboard, "/api/status", "HEAD")[0] == 200


# ------------------------------------------------------------------ clips


def test_clip_and_its_spectrogram_rendered_once(dashboard, monkeypatch):
    renders = []
    real = web_clips.render_png
    monkeypatch.setattr(web_clips, "render_png", lambda path: renders.append(path) or real(path))
    status, headers, body = request(dashboard, "/clips/beep-100000.wav")
    assert status == 200 and headers["content-type"] == "audio/wav" and body[:4] == b"RIFF"
    assert soundfile.info(str(dashboard.dash.clips.wav("beep-100000"))).frames == RATE
    images = []
    threads = [threading.Thread(target=lambda: images.append(request(dashboard, "/clips/beep-100000.png")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    images.append(request(dashboard, "/clips/beep-100000.png"))
    assert {(status, headers["content-type"]) for status, headers, _ in images} == {(200, "image/png")}
    assert len({body for _, _, body in images}) == 1 and images[0][2][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(renders) == 1


def test_clip_becomes_visible_in_events_once_written(dashboard, monitor):
    dashboard.handle_event(event("start", "alarm", 500.0))
    dashboard.handle_event(event("end", "alarm", 500.0, 502.0))
    stream = Stream(dashboard)
    try:
        stream.until("snapshot")
        assert get_json(dashboard, "/api/events?label=alarm")[0]["clip"] is False
        soundfile.write(str(monitor.clip_dir / "alarm-500000.wav"), np.zeros(RATE, np.float32), RATE)
        assert stream.until("event") == {**get_json(dashboard, "/api/events?label=alarm")[0], "clip": True}
    finally:
        stream.close()


def test_a_withheld_clip_stays_withheld(dashboard, monitor):
    dashboard.handle_event(event("start", "beep", 100.0))
    dashboard.handle_event(dataclasses.replace(event("end", "beep", 100.0, 102.0), clip="withheld"))
    dashboard.dash.push_status()  # a clip file of that id exists (written before): still not offered
    assert get_json(dashboard, "/api/events")[0]["clip"] == "withheld"


TRAVERSALS = [
    "/clips/../config.yaml", "/clips/..%2fconfig.yaml", "/clips/%2e%2e/config.yaml", "/clips/%2e%2e%2fconfig.yaml",
    "/clips/%2E%2E%2Foutside.wav", "/clips/..%2foutside.wav", "/clips/..%252foutside.wav", "/clips/....//outside.wav",
    "/clips/..\\outside.wav", "/clips/..%5coutside.wav", "/clips/%2e%2e%5coutside.wav", "/clips/../outside.wav",
    "/clips//outside.wav", "/clips/beep-100000.wav/../../config.yaml", "/clips/beep-100000.wav%00.png",
    "/clips/beep-100000%00.wav", "/clips/beep-100000.WAV", "/clips/beep-100000.wav.wav", "/clips/.wav",
    "/clips/%2e%2e.wav", "/clips/~.wav", "/clips/beep-999.wav", "/clips/beep-999.png", "/clips/", "/clips",
    "/clips/../../../../etc/passwd", "/clips/%2fetc%2fpasswd", "/%2e%2e/config.yaml", "/api/../config.yaml",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_clips_serve_only_existing_clip_ids(dashboard, path):
    status, _, body = request(dashboard, path)
    assert status == 404 and SECRET.encode() not in body and b"root:" not in body


# ------------------------------------------------------------------ live stream


def test_stream_starts_with_a_snapshot_then_goes_live(dashboard, monitor):
    dashboard.handle_window(window(10.0, {"beep": 0.2, "alarm": 0.1}))
    dashboard.handle_event(event("start", "beep", 9.0))
    stream = Stream(dashboard)
    try:
        snapshot = stream.until("snapshot")
        assert [w["end_time"] for w in snapshot["windows"]] == [10.0]
        assert [e["event_id"] for e in snapshot["events"]] == ["beep-9000"]
        assert snapshot["status"]["sinks"]["http"]["clients"] == 1 and snapshot["history_s"] == 300
        dashboard.handle_window(window(11.0, None))
        assert stream.until("window") == {"source": "file:test.wav", "start_time": 10.0, "end_time": 11.0,
                                          "level_dbfs": -60.0, "scores": None, "inference_ms": None}
        dashboard.handle_event(event("end", "beep", 9.0, 11.0))
        assert stream.until("event")["phase"] == "end"
        monitor.snapshot["windows"] = {**monitor.snapshot["windows"], "scored": 11}
        assert stream.until("status")["windows"]["scored"] == 11  # pushed every second
    finally:
        stream.close()


def test_live_clients_are_limited(dashboard):
    streams = [Stream(dashboard) for _ in range(MAX_CLIENTS)]
    try:
        status, headers, _ = request(dashboard, "/api/stream")
        assert status == 503 and headers["retry-after"] == "10"
        streams.pop().close()
        assert wait_until(lambda: dashboard.status()["clients"] < MAX_CLIENTS)
        streams.append(Stream(dashboard))  # a place came free
    finally:
        for stream in streams:
            stream.close()


def test_timeline_keeps_the_last_five_minutes(dashboard):
    for t in range(0, 1000, 2):
        dashboard.handle_window(window(float(t), {"beep": 0.5, "alarm": 0.5}))
    times = [w["end_time"] for w in dashboard.dash.timeline.snapshot()]
    assert times[0] == 998 - 300 and times[-1] == 998 and len(times) == 151


def max_send_buffer() -> int:
    """Bytes the kernel may buffer for a TCP sender, plus uvicorn's 64 kB write buffer."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]) + 65536


def test_a_client_that_never_reads_bounds_memory_and_never_slows_the_sink(dashboard):
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    stalled.connect(("127.0.0.1", dashboard.server.port))
    stalled.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    deadline = time.monotonic() + 10
    while dashboard.status()["clients"] < 1:
        assert time.monotonic() < deadline, "the stream never opened"
        time.sleep(0.01)
    scores = {name: 0.123456789 for name in ("beep", "alarm")} | {f"pad{i}": 0.5 for i in range(60)}  # ~2 kB each
    longest, pushed = 0.0, 20_000
    for i in range(pushed):
        started = time.perf_counter()
        dashboard.handle_window(window(float(i), scores))
        longest = max(longest, time.perf_counter() - started)
    time.sleep(0.5)  # let the server write what the socket buffers take
    (client,) = dashboard.dash.broadcaster._clients
    # ~15 MB were published; what is held for the client is its bounded queue, the rest is
    # dropped, except what the kernel's socket buffers (at most their configured maximum) took
    buffered = (max_send_buffer() + stalled.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // len(client.queue[-1])
    print(f"\nstalled client: {client.dropped} of {pushed} dropped, {len(client.queue)} queued, "
          f"at most {buffered} in socket buffers")
    assert len(client.queue) == CLIENT_QUEUE and client.dropped >= pushed - CLIENT_QUEUE - buffered
    assert dashboard.status()["dropped"] == client.dropped
    assert longest < 0.25, f"handle_window waited {longest:.3f} s"  # never for the client (it would wait forever)
    reader = Stream(dashboard)  # the server still serves everyone else
    try:
        reader.until("snapshot")
        dashboard.handle_window(window(pushed + 1.0, {"beep": 0.9}))
        assert reader.until("window")["end_time"] == pushed + 1.0
    finally:
        reader.close()
        stalled.close()
    started = time.monotonic()
    dashboard.close()
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------ metrics


def metrics(sink: DashboardSink) -> dict[tuple[str, tuple], float]:
    status, headers, body = request(sink, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def test_metrics_follow_the_status_and_reports(dashboard, monitor):
    for t, ms in [(1.0, 3.0), (2.0, 30.0), (3.0, None)]:
        dashboard.handle_window(window(t, {"beep": 0.6, "alarm": 0.1} if ms else None, ms))
    dashboard.handle_event(event("start", "beep", 1.0))
    dashboard.handle_event(event("update", "beep", 1.0))
    dashboard.handle_event(event("end", "beep", 1.0, 3.0))
    monitor.snapshot["labels"]["beep"].update(state="cooldown", score=0.6)
    m = metrics(dashboard)
    src = (("source", SOURCE),)  # per-source series carry the source, the model's and the server's do not
    assert m[("sound_monitor_windows_scored_total", src)] == 10 and m[("sound_monitor_windows_gated_total", src)] == 3
    assert m[("sound_monitor_windows_dropped_total", src)] == 1 and m[("sound_monitor_windows_skipped_total", src)] == 0
    assert m[("sound_monitor_events_total", (("label", "beep"), *src))] == 1  # one event: start, update, end
    assert m[("sound_monitor_events_total", (("label", "alarm"), *src))] == 0
    assert m[("sound_monitor_inference_seconds_count", ())] == 2
    assert m[("sound_monitor_inference_seconds_sum", ())] == pytest.approx(0.033)
    assert m[("sound_monitor_inference_seconds_bucket", (("le", "0.005"),))] == 1
    assert m[("sound_monitor_label_score", (("label", "beep"), *src))] == 0.6
    assert np.isnan(m[("sound_monitor_label_score", (("label", "alarm"), *src))])  # not scored yet
    assert m[("sound_monitor_label_state", (("label", "beep"), *src, ("state", "cooldown")))] == 1
    assert m[("sound_monitor_label_state", (("label", "beep"), *src, ("state", "idle")))] == 0
    assert m[("sound_monitor_level_dbfs", src)] == float("-inf")
    assert m[("sound_monitor_source_gaps_total", src)] == 1 and m[("sound_monitor_source_overflows_total", src)] == 2
    assert m[("sound_monitor_source_gap_seconds_total", src)] == 0.5
    assert m[("sound_monitor_source_running", src)] == 1
    assert m[("sound_monitor_source_state", (*src, ("state", "running")))] == 1
    assert m[("sound_monitor_mqtt_connected", src)] == 1 and m[("sound_monitor_mqtt_queued_messages", src)] == 4
    assert m[("sound_monitor_mqtt_dropped_messages_total", src)] == 7
    assert m[("sound_monitor_clips_written_total", src)] == 1 and m[("sound_monitor_http_clients", ())] == 0
    assert m[("sound_monitor_start_time_seconds", ())] == 1000.0
    assert not [name for name, _ in m if "failures" in name]  # one source: never retried
    monitor.snapshot["sinks"] = {}  # no MQTT configured: no MQTT series
    assert not [name for name, _ in metrics(dashboard) if "mqtt" in name]


# ------------------------------------------------------------------ token


@pytest.fixture
def guarded(monitor, monkeypatch):
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    sink = start(monitor, token_env="DASHBOARD_TOKEN")
    yield sink
    sink.close()


PATHS = ["/", "/api/status", "/api/events", "/api/stream", "/clips/beep-100000.wav", "/clips/beep-100000.png",
         "/metrics", "/clips/../config.yaml", "/nothing"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Cookie": "sound_monitor_token=nope"}])
def test_requests_without_the_token_get_401(guarded, headers):
    for path in PATHS + ["/api/status?token=wrong"]:
        status, response_headers, body = request(guarded, path, headers=headers)
        assert status == 401 and response_headers["www-authenticate"].startswith("Bearer"), path
        assert SECRET.encode() not in body


def test_the_token_as_header_query_or_cookie(guarded):
    assert request(guarded, "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert request(guarded, "/metrics", headers={"Authorization": f"bearer {TOKEN}"})[0] == 200
    status, headers, _ = request(guarded, f"/?token={TOKEN}")
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith(f"sound_monitor_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for path in ["/api/events", "/clips/beep-100000.wav", "/clips/beep-100000.png"]:
        assert request(guarded, path, headers={"Cookie": cookie.split(";")[0]})[0] == 200, path
    # the token never opens a path that is not there
    assert request(guarded, f"/clips/../config.yaml?token={TOKEN}")[0] == 404


# ------------------------------------------------------------------ bad setup


def test_missing_or_weak_token_variable_names_the_setting(monitor, monkeypatch):
    monkeypatch.delenv("DASHBOARD_TOKEN", raising=False)
    with pytest.raises(SinkError, match="http.token_env: environment variable DASHBOARD_TOKEN is not set"):
        DashboardSink(http_config(token_env="DASHBOARD_TOKEN"), WATCHED, monitor.status, monitor.clip_path)
    monkeypatch.setenv("DASHBOARD_TOKEN", "short")
    with pytest.raises(SinkError, match="http.token_env: the token in DASHBOARD_TOKEN must be at least 16"):
        DashboardSink(http_config(token_env="DASHBOARD_TOKEN"), WATCHED, monitor.status, monitor.clip_path)


def test_port_in_use_names_the_setting_and_starts_nothing(dashboard, monitor):
    threads = set(threading.enumerate())
    with pytest.raises(SinkError, match=rf"http.port: 127.0.0.1:{dashboard.server.port} is already in use"):
        DashboardSink(http_config(port=dashboard.server.port), WATCHED, monitor.status, monitor.clip_path)
    assert set(threading.enumerate()) == threads
    assert request(dashboard, "/api/status")[0] == 200  # the first server is untouched


def test_unbindable_host_names_the_setting(monitor):
    with pytest.raises(SinkError, match="http.host: cannot listen on 192.0.2.1"):
        DashboardSink(http_config(host="192.0.2.1"), WATCHED, monitor.status, monitor.clip_path)


@pytest.mark.parametrize("text, field, words", [
    ("http: {enabled: true, host: 0.0.0.0}", "http.token_env", "required when host (0.0.0.0) is not a loopback"),
    ("http: {enabled: true, host: monitor.local}", "http.token_env", "required when host (monitor.local)"),
    ("http: {port: 70000}", "http.port", "must be between 1 and 65535, got 70000"),
    ("http: {token_env: 'MY TOKEN'}", "http.token_env", "'MY TOKEN' is not an environment variable name"),
    ("http: {host: ''}", "http.host", "must be an address"),
])
def test_http_settings_are_checked_with_their_line(tmp_path, text, field, words):
    path = tmp_path / "monitor.yaml"
    path.write_text(f"labels: [{{name: beep}}]\n{text}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert (error.value.path, error.value.line) == (field, 2) and words in error.value.message


@pytest.mark.parametrize("http", ["{enabled: true, host: localhost}", "{enabled: true, host: '::1'}",
                                  "{enabled: true, host: 127.0.0.2}", "{enabled: true, host: 0.0.0.0, token_env: TOK}",
                                  "{host: 0.0.0.0}"])
def test_loopback_or_a_token_variable_is_enough(tmp_path, http):
    path = tmp_path / "monitor.yaml"
    path.write_text(f"labels: [{{name: beep}}]\nhttp: {http}\n")
    assert load_config(path).http.port == 8765
