"""The dashboard page in a real headless Chromium, fed by a real DashboardSink and a fake
status provider: labels and their live score timelines, states, level, health counters,
events with a playable clip and a spectrogram; and the page behind a token."""

from __future__ import annotations

import time

import pytest

from tests.fixtures_web import TOKEN, assert_nonblank_png, event, start, window

BEEP_CANVAS = '.label[data-label="beep"] canvas'


def points(page) -> int:
    return int(page.get_attribute(BEEP_CANVAS, "data-points"))


def test_page_shows_scores_states_events_and_health(page, dashboard, monitor):
    now = time.time()
    dashboard.handle_window(window(now - 10, {"beep": 0.2, "alarm": 0.1}))
    page.goto(dashboard.url)
    page.wait_for_selector(f'{BEEP_CANVAS}[data-points="1"]')  # the snapshot's window
    assert page.inner_text("#conn") == "live"
    for i in range(8):
        dashboard.handle_window(window(now - 9 + i, {"beep": 0.3 + 0.08 * i, "alarm": 0.1} if i != 3 else None))
    page.wait_for_function(f"document.querySelector('{BEEP_CANVAS}').dataset.points == '9'")
    assert page.inner_text('.label[data-label="beep"] .score') == "0.860"
    assert page.inner_text("#level-value") == "-20.0 dBFS"

    monitor.snapshot["windows"] = {**monitor.snapshot["windows"], "scored": 42}
    monitor.snapshot["labels"]["beep"]["state"] = "event"
    page.wait_for_function("document.getElementById('h-scored')?.textContent === '42'")  # pushed every second
    assert page.inner_text('.label[data-label="beep"] .state') == "event open"
    assert page.inner_text("#h-mqtt") == "connected" and page.inner_text("#h-mqtt-queue") == "4 / 7"
    assert page.inner_text("#h-gaps") == "1 (0.5 s)" and page.inner_text("#h-clients") == "1"

    dashboard.handle_event(event("start", "beep", 100.0))
    page.wait_for_selector('tr[data-event="beep-100000"]')
    assert "open" in page.inner_text('tr[data-event="beep-100000"]')
    dashboard.handle_event(event("end", "beep", 100.0, 102.5))  # its clip exists: shown with the next push
    page.wait_for_selector('tr[data-event="beep-100000"] audio')
    page.wait_for_function("document.querySelector('tr[data-event=\"beep-100000\"] audio').readyState >= 1")
    assert page.evaluate("document.querySelector('tr[data-event=\"beep-100000\"] audio').duration") == pytest.approx(1.0)
    page.wait_for_function("document.querySelector('tr[data-event=\"beep-100000\"] img').naturalWidth > 0")
    assert page.evaluate("document.querySelector('tr[data-event=\"beep-100000\"] img').naturalHeight") == 128
    audio = page.query_selector('tr[data-event="beep-100000"] audio')
    dashboard.handle_event(event("start", "alarm", 200.0))  # a newer event goes on top ...
    page.wait_for_selector('tr[data-event="alarm-200000"]:first-child')
    assert audio.evaluate("a => a.isConnected")  # ... and the clip (maybe playing) stays where it is
    assert_nonblank_png(page.screenshot(full_page=True))


def test_page_behind_a_token(page, monitor, monkeypatch):
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    sink = start(monitor, token_env="DASHBOARD_TOKEN")
    try:
        assert page.request.get(sink.url).status == 401
        page.goto(f"{sink.url}?token={TOKEN}")
        page.wait_for_selector(".label[data-label=alarm]")  # the live stream got in with the cookie
        assert page.url == sink.url  # the token left the address bar
        sink.handle_window(window(time.time(), {"beep": 0.5, "alarm": 0.5}))
        page.wait_for_selector(f'{BEEP_CANVAS}[data-points="1"]')
    finally:
        sink.close()
