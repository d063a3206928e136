"""`sound-monitor run` with the dashboard on, watched by a real headless Chromium.

The test replays a generated WAV in real time as raw PCM on the monitor's stdin (so it
decides when audio flows and when it stops), through the tiny random-weight model: the
level gate passes only the noise bursts' windows and every scored window is a hit, so
each of the two bursts is one event. While it plays, the page must show live score points,
the health counters moving, and the events with clips whose <audio> loads and spectrograms.
With the input paused (every counter still), /metrics must agree with /api/status, and
after the monitor exits at end of input, with the JSON log of the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_web import assert_nonblank_png
from tests.helpers import wait_until

RATE = 48000
BLOCK_S = 0.1
SCREENSHOT = Path(__file__).parents[1] / "docs" / "dashboard.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def replay_audio(path: Path) -> np.ndarray:
    """Silence with two noise bursts: 2.5 s at -16 dBFS from 2 s, 1.5 s at -22 dBFS from 6.5 s; 11 s."""
    rng = np.random.default_rng(7)
    audio = np.concatenate([np.zeros(2 * RATE), 0.16 * rng.standard_normal(int(2.5 * RATE)), np.zeros(2 * RATE),
                            0.08 * rng.standard_normal(int(1.5 * RATE)), np.zeros(3 * RATE)])
    soundfile.write(str(path), audio.astype(np.float32), RATE, subtype="FLOAT")
    return audio.astype(np.float32)


def write_config(tmp_path: Path, port: int, **http) -> Path:
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"type": "stdin", "name": "replay", "format": "s16le", "sample_rate": RATE},
        "buffer": {"seconds": 20},
        "windows": {"length_s": 1.0, "hop_s": 0.5, "min_dbfs": -30.0},
        "detector": {"batch_size": 4, "max_pending": 16, "background": ["silence", "background noise"]},
        "labels": [{"name": "noise", "threshold": 0.001, "max_not_heard": 1},  # every scored window is a hit
                   {"name": "doorbell", "threshold": 0.999}],
        "log": {"path": str(tmp_path / "monitor.jsonl"), "level": "debug", "level_interval_s": 1.0,
                "console": True, "console_format": "text"},
        "clips": {"enabled": True, "dir": str(tmp_path / "clips"), "pre_roll_s": 0.5, "post_roll_s": 0.5},
        "http": {"enabled": True, "host": "127.0.0.1", "port": port, **http},
    }))
    return config


def feed(process: subprocess.Popen, audio: np.ndarray) -> None:
    """Real-time paced s16le blocks on the monitor's stdin (left open afterwards)."""
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2")
    block = round(BLOCK_S * RATE)
    started = time.monotonic()
    for i, first in enumerate(range(0, len(pcm), block)):
        process.stdin.write(pcm[first : first + block].tobytes())
        process.stdin.flush()
        time.sleep(max(0.0, started + (i + 1) * BLOCK_S - time.monotonic()))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(fetch(url + "metrics").decode()) for s in family.samples}


def start_monitor(config: Path, checkpoint: Path, url: str) -> subprocess.Popen:
    """`python -m monitor run` (stdin a pipe, stderr kept), once its dashboard at `url` answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config), "--model", str(checkpoint)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1],
    )
    if not wait_until(lambda: process.poll() is not None or _up(url), 120) or process.poll() is not None:
        process.kill()
        pytest.fail(f"the dashboard never came up: {process.communicate()[1].decode()}")
    return process


def test_dashboard_follows_a_live_replay(browser, tiny_checkpoint, tmp_path):
    audio = replay_audio(tmp_path / "replay.wav")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process = start_monitor(write_config(tmp_path, port), tiny_checkpoint, url)
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        page.wait_for_selector(".label[data-label=noise] canvas")
        feeder = threading.Thread(target=feed, args=(process, audio))
        feeder.start()

        canvas = ".label[data-label=noise] canvas"
        page.wait_for_function(f"document.querySelector('{canvas}').dataset.points >= 3", timeout=30_000)
        first = int(page.get_attribute(canvas, "data-points"))
        page.wait_for_function(f"document.querySelector('{canvas}').dataset.points > {first}", timeout=10_000)
        gated = int(page.inner_text("#h-gated"))
        page.wait_for_function(f"Number(document.getElementById('h-gated').textContent) > {gated}", timeout=10_000)

        # both events ended and their clips were written; the older one is the longer burst
        clips = "[...document.querySelectorAll('tr[data-event^=noise-] audio')]"
        page.wait_for_function(f"{clips}.length == 2", timeout=30_000)
        page.wait_for_function(f"{clips}.every(a => a.readyState >= 1)", timeout=10_000)
        assert page.evaluate(f"{clips}.map(a => a.duration > 1.5)") == [True, True]
        assert page.evaluate(f"{clips}[1].duration > {clips}[0].duration")
        images = "[...document.querySelectorAll('tr[data-event^=noise-] img')]"
        page.wait_for_function(f"{images}.length == 2 && {images}.every(i => i.naturalWidth > 0)", timeout=10_000)
        assert int(page.inner_text("#h-scored")) >= 4

        feeder.join()
        # input paused: every counter holds still once the last window is through
        assert wait_until(lambda: _all_windows_through(url, len(audio) / RATE), 20), "windows missing"
        time.sleep(0.5)
        status = json.loads(fetch(url + "api/status"))
        metrics = scrape(url)
        time.sleep(1.2)  # one status push, so the page shows the settled counters
        screenshot = page.screenshot(full_page=True)
        assert not errors, errors
    finally:
        page.close()
        process.stdin.close()  # end of input: the monitor drains and exits
        code = process.wait(60)
        stderr = process.stderr.read().decode()
    assert code == 0, stderr
    assert_nonblank_png(screenshot)
    (tmp_path / "dashboard.png").write_bytes(screenshot)
    if os.environ.get("UPDATE_SCREENSHOT"):  # regenerate the README's picture
        shutil.copy(tmp_path / "dashboard.png", SCREENSHOT)

    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    windows = [line for line in lines if line["type"] == "window"]
    starts = [line for line in lines if line["type"] == "event" and line["phase"] == "start"]
    final = [line for line in lines if line["type"] == "level"][-1]
    assert [e["label"] for e in starts] == ["noise", "noise"]
    src = (("source", "replay"),)  # per-source series carry the source; the model's do not
    expected = {
        ("sound_monitor_windows_scored_total", src): sum(w["scores"] is not None for w in windows),
        ("sound_monitor_windows_gated_total", src): sum(w["scores"] is None for w in windows),
        ("sound_monitor_inference_seconds_count", ()): sum(w["scores"] is not None for w in windows),
    }
    for key, value in expected.items():
        assert metrics[key] == value, key
    assert metrics[("sound_monitor_windows_scored_total", src)] == final["windows_scored"] == status["windows"]["scored"]
    assert (metrics[("sound_monitor_windows_dropped_total", src)] + metrics[("sound_monitor_windows_skipped_total", src)]
            == final["windows_dropped"] == 0)
    assert metrics[("sound_monitor_events_total", (("label", "noise"), *src))] == 2
    assert metrics[("sound_monitor_events_total", (("label", "doorbell"), *src))] == 0
    assert metrics[("sound_monitor_clips_written_total", src)] == 2 == len(list((tmp_path / "clips").glob("*.wav")))
    assert metrics[("sound_monitor_stream_seconds_total", src)] == len(audio) / RATE

    # the console: the start-up summary, then one human line per event phase
    assert f"dashboard: {url}" in stderr and "labels: 2" in stderr
    event_lines = [line for line in stderr.splitlines() if "  replay  noise  " in line]
    assert [line.split()[4] for line in event_lines] == ["start", "end"] * 2, stderr
    assert all(line.endswith(" dBFS") for line in event_lines)


def run_monitor(config: Path, checkpoint: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """`sound-monitor run` on empty input (`env`: the whole environment, default this one's)."""
    return subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model", str(checkpoint)],
                          input=b"", capture_output=True, timeout=300, env=env, cwd=Path(__file__).parents[1])


def test_a_taken_port_stops_the_run_before_it_starts(tiny_checkpoint, tmp_path):
    assert_a_taken_port_stops_the_run(write_config, tiny_checkpoint, tmp_path)


def assert_a_taken_port_stops_the_run(write_config, checkpoint: Path, tmp_path: Path) -> None:
    """`write_config(tmp_path, port)` with a taken port: exit 2 naming http.port, no log file, no clips."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_monitor(write_config(tmp_path, port), checkpoint)
    assert run.returncode == 2
    assert f"error: http.port: 127.0.0.1:{port} is already in use" in run.stderr.decode()
    assert not (tmp_path / "monitor.jsonl").exists() and not (tmp_path / "clips").exists()  # nothing started


@pytest.mark.parametrize("value, words", [(None, "environment variable DASHBOARD_TOKEN is not set"),
                                          ("", "environment variable DASHBOARD_TOKEN is not set or empty"),
                                          ("short", "must be at least 16 characters")])
def test_a_bad_token_variable_stops_the_run(tiny_checkpoint, tmp_path, value, words):
    config = write_config(tmp_path, free_port(), host="0.0.0.0", token_env="DASHBOARD_TOKEN")
    env = os.environ.copy()
    env.pop("DASHBOARD_TOKEN", None)
    if value is not None:
        env["DASHBOARD_TOKEN"] = value
    run = run_monitor(config, tiny_checkpoint, env)
    assert run.returncode == 2 and "error: http.token_env: " in run.stderr.decode() and words in run.stderr.decode()
    assert not (tmp_path / "monitor.jsonl").exists()


def test_a_public_host_without_token_is_a_config_error(tiny_checkpoint, tmp_path):
    run = run_monitor(write_config(tmp_path, free_port(), host="0.0.0.0"), tiny_checkpoint)
    assert run.returncode == 2
    assert "http.token_env: required when host (0.0.0.0) is not a loopback address" in run.stderr.decode()


def _up(url: str) -> bool:
    try:
        fetch(url + "api/status")
        return True
    except OSError:
        return False



def _all_windows_through(url: str, audio_s: float) -> bool:
    """Every window of the fed audio scored, gated or lost (the detector thread then needs a moment
    to hand the last ones to the rules and sinks)."""
    status = json.loads(fetch(url + "api/status"))
    windows = int((audio_s - 1.0) / 0.5) + 1
    return status["stream_s"] == audio_s and sum(status["windows"].values()) == windows
