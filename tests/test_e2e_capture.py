"""The real capture path end to end.

paplay -> PulseAudio null sink -> its monitor source -> ALSA `pulse` PCM ->
PortAudio (sounddevice) -> MicrophoneSource -> ring buffer -> windower ->
detector (tiny random-weight CLAP) -> rules -> JSON log.

The played clip holds silence, a white-noise burst (the target) and a 1 kHz
tone burst at the same level (the distractor). The level gate passes windows
at least about half full of either burst; among those, the random model tells
noise from tone for some prompts. The test measures the model's scores on
synthetic windows (every burst fill from half to full), picks the prompt that
separates them best and puts the threshold in between: the model, not the
level, decides which burst is an event.

The same clip also goes through `sound-monitor run` as raw PCM on stdin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import yaml

from monitor.config import DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.detector import Detector
from monitor.pipeline import Pipeline
from monitor.sources import open_source
from tests.helpers import tone, wait_until

RATE = 48000
WINDOW_S, HOP_S = 1.0, 0.5
LATENCY_S = 0.3  # capture latency allowance (measured ~10-50 ms) plus paplay start-up
BURST_RMS = 0.25
GATE_DBFS = 20 * np.log10(BURST_RMS) + 10 * np.log10(0.55)  # windows >= 55 % full of a burst pass
BACKGROUND = ("silence", "background noise")
CANDIDATE_PROMPTS = ("a car engine", "music", "static hiss", "white noise", "rain", "wind", "speech",
                     "a beep", "a dog barking", "an alarm", "a crowd", "a smoke detector")


def noise(seconds: float, seed: int) -> np.ndarray:
    return (BURST_RMS * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


def tone_burst(seconds: float) -> np.ndarray:
    # same RMS as the noise: the level alone cannot tell them apart
    return tone(1000, seconds, RATE, BURST_RMS * np.sqrt(2))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def partial_windows(burst) -> list[np.ndarray]:
    """1 s windows holding a burst for half to all of their length, at either edge."""
    windows = []
    for fill in np.linspace(0.5, 1.0, 6):
        n = round(fill * WINDOW_S * RATE)
        windows += [np.concatenate([silence(WINDOW_S - n / RATE), burst(n / RATE)]),
                    np.concatenate([burst(n / RATE), silence(WINDOW_S - n / RATE)])]
    return windows


def separating_label(clap, name: str, targets: list[np.ndarray], others: list[np.ndarray]) -> LabelConfig:
    """A label with the prompt (of CANDIDATE_PROMPTS) that scores every target window above every
    other window by the widest margin, and its threshold halfway across that margin."""
    # Label scores are independent of each other: one pass scores every candidate.
    scores = Detector(clap, {p: [p] for p in CANDIDATE_PROMPTS}, BACKGROUND).score(targets + others)
    ranges = {p: (min(s[p] for s in scores[: len(targets)]), max(s[p] for s in scores[len(targets):]))
              for p in CANDIDATE_PROMPTS}
    prompt, (low_hit, high_miss) = max(ranges.items(), key=lambda item: item[1][0] - item[1][1])
    assert low_hit - high_miss > 2e-3, f"no prompt separates the windows (lowest hit, highest miss): {ranges}"
    return LabelConfig(name=name, prompts=(prompt,), threshold=(low_hit + high_miss) / 2, max_not_heard=1)


@pytest.fixture(scope="module")
def noise_label(clap) -> LabelConfig:
    return separating_label(clap, "noise", partial_windows(lambda s: noise(s, seed=1)), partial_windows(tone_burst))


def monitor_config(tmp_path, label: LabelConfig) -> MonitorConfig:
    return MonitorConfig(
        source=SourceConfig(type="mic", device="pulse", sample_rate=RATE, channels=2),
        labels=(label,),
        windows=WindowsConfig(length_s=WINDOW_S, hop_s=HOP_S, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(batch_size=4, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl"), level_interval_s=1.0),
    )


def start_capturing(cfg: MonitorConfig, clap) -> Pipeline:
    pipeline = Pipeline(cfg, open_source(cfg.source), clap)
    pipeline.start()
    assert wait_until(lambda: pipeline.ring.end > RATE // 5, 10), "timed out waiting for capture to start"
    return pipeline


def play(pulse_server, path, pieces: list[np.ndarray]) -> float:
    """Play the clip; returns the wall time its first sample started, give or take paplay's start-up."""
    sf.write(path, np.concatenate(pieces), RATE)
    player = pulse_server.play(path)
    started = time.time()
    time.sleep(sum(map(len, pieces)) / RATE + 0.2)
    player.terminate()  # skip paplay's ~2 s drain of the null sink
    player.wait()
    return started


def logged(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]


def assert_event_matches_burst(events: list[dict], burst_start: float, burst_end: float) -> None:
    """Start/end of the event line up with the burst within window + hop + capture latency."""
    assert [e["phase"] for e in events] == ["start", "end"], events
    end = events[1]
    # Detected from the first window past the gate (>= 55 % noise) to the last one.
    assert burst_start - WINDOW_S - LATENCY_S <= end["started_at"] <= burst_start + LATENCY_S
    assert burst_end - LATENCY_S <= end["ended_at"] <= burst_end + WINDOW_S + LATENCY_S


def test_capture_to_event_log(pulse_server, clap, noise_label, tmp_path):
    pipeline = start_capturing(monitor_config(tmp_path, noise_label), clap)
    try:
        played_at = play(pulse_server, tmp_path / "clip.wav",
                         [silence(1.5), noise(2.0, seed=2), silence(1.5), tone_burst(2.0), silence(1.5)])
    finally:
        pipeline.shutdown()

    lines = logged(tmp_path)
    events = [line for line in lines if line["type"] == "event"]
    assert all(e["label"] == "noise" and e["source"] == "mic:pulse" for e in events)
    # Only the noise burst (1.5-3.5 s into the clip); the tone (5-7 s) never crosses the threshold.
    assert_event_matches_burst(events, played_at + 1.5, played_at + 3.5)
    print(f"\nevent vs burst: start {events[1]['started_at'] - played_at - 1.5:+.2f} s, "
          f"end {events[1]['ended_at'] - played_at - 3.5:+.2f} s")
    levels = [line for line in lines if line["type"] == "level"]
    # Scored: the 3-4 windows over each burst that pass the gate; silence is gated.
    assert 6 <= levels[-1]["windows_scored"] <= 8 and levels[-1]["overflows"] == 0
    assert not [line for line in lines if line["type"] == "warning"]


def test_capture_survives_sound_server_restart(pulse_server, clap, noise_label, tmp_path):
    cfg = monitor_config(tmp_path, noise_label)
    pipeline = start_capturing(cfg, clap)
    source = pipeline.source
    source.reopen_min_s, source.reopen_max_s = 0.1, 0.4
    try:
        pulse_server.stop()
        down_at = time.time()
        time.sleep(1.5)
        pulse_server.start()
        # libpulse now and then deadlocks a stream whose server dies: then the stuck-stream
        # watchdog (sources.STUCK_S) abandons it (sources.CLOSE_TIMEOUT_S) and reopens
        assert wait_until(lambda: source.gaps, 30), "timed out waiting for the source to reopen"
        played_at = play(pulse_server, tmp_path / "clip.wav", [silence(1.0), noise(2.0, seed=3), silence(1.5)])
    finally:
        pipeline.shutdown()

    lines = logged(tmp_path)
    [gap] = [line for line in lines if line.get("kind") == "source_gap"]
    # the gap starts at the last sample delivered before the server went down, which may
    # precede `down_at` by up to a capture block plus the server's shutdown time
    assert 1.5 <= gap["gap_s"] <= played_at - down_at + 0.25
    warnings = sorted(line["kind"] for line in lines if line["type"] == "warning")
    assert warnings.count("device_lost") == warnings.count("source_gap") == 1
    if "stream_abandoned" in warnings:  # the stuck path: re-scans skipped, the long gap's windows flood the queue
        assert set(warnings) <= {"device_lost", "source_gap", "stream_abandoned", "rescan_skipped", "windows_dropped"}
    else:
        assert warnings == ["device_lost", "source_gap"]
    # The timeline skipped the outage, so the event after it still has true wall-clock times.
    assert_event_matches_burst([line for line in lines if line["type"] == "event"], played_at + 1.0, played_at + 3.0)


def test_stdin_pcm_through_the_cli(noise_label, tiny_checkpoint, tmp_path):
    """`<decoder> | sound-monitor run` with a stdin source: raw stereo s16le in, events out, exit at EOF."""
    clip = np.concatenate([silence(1.5), noise(2.0, seed=4), silence(1.5), tone_burst(2.0), silence(1.5)])
    pcm = (np.clip(np.repeat(clip[:, None], 2, axis=1), -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
    config = tmp_path / "stdin.yaml"
    config.write_text(yaml.safe_dump({
        "source": {"type": "stdin", "format": "s16le", "sample_rate": RATE, "channels": 2},
        "windows": {"length_s": WINDOW_S, "hop_s": HOP_S, "min_dbfs": float(GATE_DBFS)},
        # the whole clip arrives at once: queue every window instead of dropping the oldest
        "detector": {"batch_size": 4, "max_pending": 64, "background": list(BACKGROUND)},
        "labels": [{"name": "noise", "prompts": list(noise_label.prompts),
                    "threshold": noise_label.threshold, "max_not_heard": 1}],
        "log": {"path": str(tmp_path / "monitor.jsonl")},
        "mqtt": {"enabled": False},
    }))
    run = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config),
                          "--model", str(tiny_checkpoint)], input=pcm, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()

    lines = logged(tmp_path)
    [started] = [line for line in lines if line.get("kind") == "started"]
    [stopped] = [line for line in lines if line.get("kind") == "stopped"]
    assert stopped["stream_s"] == len(clip) / RATE  # every frame, nothing lost or invented
    events = [line for line in lines if line["type"] == "event"]
    assert all(e["source"] == "stdin" for e in events)
    # Stream time starts with the first block, a moment after the "started" line.
    assert_event_matches_burst(events, started["time"] + 1.5, started["time"] + 3.5)
