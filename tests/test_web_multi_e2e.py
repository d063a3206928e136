"""`sound-monitor run` on a `sources:` config with the dashboard on: one server for every source.

Two sources play through the tiny random-weight model: `replay` (raw PCM the test writes to
the monitor's stdin in real time: two noise bursts) and `tape` (a WAV file played in real
time, one noise burst, watching only the `noise` label); a third, `attic`, names a file
that does not exist and is retried all along. The page must list all three (attic as
retrying) and show each running source's timeline; /api/status lists them; once every
window is through, /metrics per source must match the JSON log of the same run (SIGTERM
then ends it: a source being retried keeps the monitor running).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import soundfile
import yaml

from tests.helpers import wait_until
from tests.test_web_e2e import (RATE, assert_a_taken_port_stops_the_run, feed, fetch, free_port, replay_audio, scrape,
                                start_monitor)

TAPE_S = 6.0


def tape_audio(path: Path) -> None:
    """Silence with one 2-s noise burst at -16 dBFS from 2 s; 6 s."""
    rng = np.random.default_rng(11)
    audio = np.zeros(int(TAPE_S * RATE), np.float32)
    audio[2 * RATE: 4 * RATE] = 0.16 * rng.standard_normal(2 * RATE)
    soundfile.write(str(path), audio, RATE, subtype="FLOAT")


def write_config(tmp_path: Path, port: int) -> Path:
    tape_audio(tmp_path / "tape.wav")
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [
            {"name": "replay", "type": "stdin", "format": "s16le", "sample_rate": RATE},
            {"name": "tape", "type": "file", "path": str(tmp_path / "tape.wav"), "realtime": True,
             "labels": ["noise"]},
            {"name": "attic", "type": "file", "path": str(tmp_path / "missing.wav")},
        ],
        "buffer": {"seconds": 20},
        "windows": {"length_s": 1.0, "hop_s": 0.5, "min_dbfs": -30.0},
        "detector": {"batch_size": 4, "max_pending": 16, "background": ["silence", "background noise"]},
        "labels": [{"name": "noise", "threshold": 0.001, "max_not_heard": 1},  # every scored window is a hit
                   {"name": "doorbell", "threshold": 0.999}],
        "log": {"path": str(tmp_path / "monitor.jsonl"), "level": "debug", "level_interval_s": 1.0},
        "clips": {"enabled": True, "dir": str(tmp_path / "clips"), "pre_roll_s": 0.5, "post_roll_s": 0.5},
        "http": {"enabled": True, "host": "127.0.0.1", "port": port},
    }))
    return config


def windows_through(url: str, name: str, audio_s: float) -> bool:
    """Every window of that source's audio scored, gated or lost."""
    status = json.loads(fetch(url + "api/status"))["sources"][name]
    return status.get("stream_s") == audio_s and sum(status["windows"].values()) == int((audio_s - 1.0) / 0.5) + 1


def test_one_dashboard_for_every_source(page, tiny_checkpoint, tmp_path):
    audio = replay_audio(tmp_path / "replay.wav")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process = start_monitor(write_config(tmp_path, port), tiny_checkpoint, url)
    try:
        feeder = threading.Thread(target=feed, args=(process, audio))
        feeder.start()
        page.goto(url)
        page.wait_for_function("document.querySelectorAll('#source-rows tr').length == 3", timeout=30_000)
        assert page.eval_on_selector_all("#source-rows tr", "rows => rows.map(r => r.dataset.source)") == [
            "replay", "tape", "attic"]
        page.wait_for_function("document.querySelector('#source-rows tr[data-source=attic] .state')"
                               ".textContent === 'retrying'", timeout=10_000)
        assert "missing.wav" in page.inner_text("#source-rows tr[data-source=attic]")
        for name in ("replay", "tape"):  # each source's own timeline gets live points
            page.select_option("#source-select", name)
            canvas = f".label[data-source={name}][data-label=noise] canvas"
            page.wait_for_function(f"document.querySelector('{canvas}')?.dataset.points >= 3", timeout=30_000)
        assert not page.query_selector(".label[data-source=tape][data-label=doorbell]")  # tape watches noise only

        feeder.join()
        assert wait_until(lambda: windows_through(url, "replay", len(audio) / RATE)
                          and windows_through(url, "tape", TAPE_S), 30), "windows missing"
        assert wait_until(lambda: json.loads(fetch(url + "api/status"))["sources"]["tape"]["source"]["state"]
                          == "ended", 10)
        page.wait_for_function("document.querySelectorAll('tr[data-source=tape] audio').length == 1", timeout=20_000)
        status = json.loads(fetch(url + "api/status"))["sources"]
        metrics = scrape(url)
        events = {name: json.loads(fetch(url + f"api/events?source={name}")) for name in ("replay", "tape")}
    finally:
        page.goto("about:blank")  # off the page before its server goes
        process.stdin.close()
        process.terminate()  # attic would be retried for ever: SIGTERM stops every source, drained
        try:
            code = process.wait(60)
        finally:
            process.kill()
        stderr = process.stderr.read().decode()
    assert code == 0, stderr

    assert list(status) == ["replay", "tape", "attic"]
    assert status["attic"]["source"]["state"] == "retrying" and "windows" not in status["attic"]
    assert status["attic"]["source"]["failures"] >= 1 and "missing.wav" in status["attic"]["source"]["error"]
    assert set(status["tape"]["labels"]) == {"noise"} and set(status["replay"]["labels"]) == {"noise", "doorbell"}
    assert status["tape"]["sinks"]["log"]["path"] == str(tmp_path / "monitor.jsonl")  # the one log, not an empty one

    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    for name, audio_s, bursts in (("replay", len(audio) / RATE, 2), ("tape", TAPE_S, 1)):
        src = (("source", name),)
        windows = [line for line in lines if line["type"] == "window" and line["source"] == name]
        starts = [line for line in lines if line["type"] == "event" and line["phase"] == "start"
                  and line["source"] == name]
        assert [e["label"] for e in starts] == ["noise"] * bursts
        assert [e["event_id"] for e in events[name] if e["phase"] == "end"] == [e["event_id"] for e in starts]
        assert metrics[("sound_monitor_windows_scored_total", src)] == sum(w["scores"] is not None for w in windows)
        assert metrics[("sound_monitor_windows_gated_total", src)] == sum(w["scores"] is None for w in windows)
        assert metrics[("sound_monitor_windows_scored_total", src)] == status[name]["windows"]["scored"] > 0
        assert metrics[("sound_monitor_windows_dropped_total", src)] == 0
        assert metrics[("sound_monitor_events_total", (("label", "noise"), *src))] == bursts
        assert metrics[("sound_monitor_clips_written_total", src)] == bursts
        assert len(list((tmp_path / "clips" / name).glob("*.wav"))) == bursts
        assert metrics[("sound_monitor_stream_seconds_total", src)] == audio_s
        assert metrics[("sound_monitor_source_state", (*src, ("state", "ended" if name == "tape" else "running")))] == 1
    assert metrics[("sound_monitor_events_total", (("label", "doorbell"), ("source", "replay")))] == 0
    assert ("sound_monitor_events_total", (("label", "doorbell"), ("source", "tape"))) not in metrics
    attic = (("source", "attic"),)
    assert metrics[("sound_monitor_source_state", (*attic, ("state", "retrying")))] == 1
    # scraped after the status was read: a retry may have failed in between
    assert metrics[("sound_monitor_source_failures_total", attic)] >= status["attic"]["source"]["failures"]
    scored = [line for line in lines if line["type"] == "window" and line["scores"] is not None]
    assert metrics[("sound_monitor_inference_seconds_count", ())] == len(scored)  # one histogram: one model


def test_a_taken_port_stops_a_sources_run_before_it_starts(tiny_checkpoint, tmp_path):
    assert_a_taken_port_stops_the_run(write_config, tiny_checkpoint, tmp_path)
