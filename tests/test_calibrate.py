"""`sound-monitor calibrate` on a constructed background (real recordings from ../shared/audio
plus synthetic sounds) with the tiny random-weight model, checked against `sound-monitor run`'s
own per-window scores (its debug log) and a brute-force replay of the rules engine."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from clap_mlx import load_audio
from clap_mlx.audio_io import SAMPLE_RATE
from monitor import cli
from monitor.config_loader import load_config
from monitor.rules import RulesEngine
from tests.helpers import tone

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "real-clips"
PER_HOUR = 40.0  # ~2 false alarms allowed over the ~3.5 min of background
CONFIG = """\
# calibration test config: these comments must survive --write
windows:
  length_s: 2.0       # short windows: many per minute
  hop_s: 1.0
  min_dbfs: -60       # the gate
detector:
  batch_size: 1       # one window per model call: scores do not depend on how windows were batched
  background: [silence, background noise]
labels:
  - name: horn        # k-of-n with hysteresis and a cooldown
    prompts: [a car horn honking]
    threshold: 0.5
    end_threshold: 0.45
    k: 2
    n: 3
    max_not_heard: 2
    cooldown_s: 2.5
  - name: bird
    prompts: [birds singing]
    threshold: 0.6    # a plain label
log:
  path: null
"""

pytestmark = pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason=f"test audio {REAL_CLIPS} is absent (see ../shared/audio/README.md)")


def noise(seconds: float, seed: int, rms: float = 0.2) -> np.ndarray:
    return (rms * np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("calibrate")
    (folder / "background").mkdir()
    real = [load_audio(p) for p in sorted(REAL_CLIPS.glob("*.wav"))]
    sf.write(folder / "background" / "real.wav", np.concatenate([np.concatenate([c, silence(0.5)]) for c in real]), SAMPLE_RATE)
    synthetic = [silence(3), noise(6, 1), silence(2), tone(1000, 5, amplitude=0.3), noise(4, 2, 0.05),
                 tone(300, 6, amplitude=0.2), silence(2), noise(8, 3, 0.3), tone(2500, 4, amplitude=0.25)]
    sf.write(folder / "background" / "synthetic.flac", np.concatenate(synthetic), SAMPLE_RATE)
    (folder / "positives").mkdir()
    for i, clip in enumerate([noise(1.5, 10), noise(3, 11, 0.3), tone(800, 2, amplitude=0.3), real[0][: 3 * SAMPLE_RATE]]):
        sf.write(folder / "positives" / f"horn{i}.wav", clip, SAMPLE_RATE)
    (folder / "config.yaml").write_text(CONFIG)
    return {"folder": folder, "config": folder / "config.yaml", "background": folder / "background",
            "positives": sorted((folder / "positives").iterdir())}


def sound_monitor(*argv: str) -> subprocess.CompletedProcess:
    """The CLI in a process of its own, as users run it (it frees its thread's MLX streams at exit)."""
    return subprocess.run([sys.executable, "-m", "monitor", *argv], capture_output=True, text=True, timeout=600)


def calibrate_json(model: Path, config: Path, inputs: dict, *extra: str) -> dict:
    done = sound_monitor("calibrate", "--config", str(config), "--background", str(inputs["background"]),
                         "--positives", f"horn={inputs['folder'] / 'positives'}",
                         "--false-alarms-per-hour", str(PER_HOUR), "--model", str(model), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def calibrated(tiny_checkpoint, inputs) -> dict:
    """One calibrate run with every output."""
    out, plots = inputs["folder"] / "calibrated.yaml", inputs["folder"] / "plots"
    report = calibrate_json(tiny_checkpoint, inputs["config"], inputs, "--write", str(out), "--plots", str(plots))
    return {"report": report, "written": out, "plots": plots}


def run_windows(tiny_checkpoint, inputs: dict, audio: Path, tmp_path: Path) -> list[tuple]:
    """The windows `sound-monitor run` scores on `audio` (replayed as fast as consumed), from its
    debug log: (start_s, end_s, level, scores or None), times relative to the first window."""
    cfg = yaml.safe_load(inputs["config"].read_text())
    log = tmp_path / f"{audio.stem}.jsonl"
    cfg["source"] = {"type": "file", "path": str(audio), "realtime": False}
    cfg["log"] = {"path": str(log), "level": "debug"}
    config = tmp_path / f"{audio.stem}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    done = sound_monitor("run", "--config", str(config), "--model", str(tiny_checkpoint))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    windows = [line for line in lines if line["type"] == "window"]
    t0 = windows[0]["start_time"]
    return [(w["start_time"] - t0, w["end_time"] - t0, w["level_dbfs"] if w["level_dbfs"] is not None else -math.inf,
             w["scores"]) for w in windows]


def events(labels, target: str, recordings: list[list[tuple]]) -> int:
    count = 0
    for windows in recordings:
        engine = RulesEngine(labels, "test")
        for window in windows:
            count += sum(m.phase == "start" and m.label == target for m in engine.process(*window))
    return count


def at(label, threshold: float):
    width = label.threshold - label.stop_threshold
    end = None if label.end_threshold is None else threshold - width
    return dataclasses.replace(label, threshold=threshold, end_threshold=end)


def test_suggested_threshold_is_the_lowest_that_meets_the_budget(calibrated, inputs, tiny_checkpoint, tmp_path):
    report = calibrated["report"]
    cfg = load_config(inputs["config"])
    background = [run_windows(tiny_checkpoint, inputs, f, tmp_path) for f in sorted(inputs["background"].iterdir())]
    hours = sum(sf.info(str(f)).duration for f in inputs["background"].iterdir()) / 3600
    assert report["background_hours"] == pytest.approx(hours)
    allowed = math.floor(PER_HOUR * hours)
    assert allowed >= 1
    for label, result in zip(cfg.labels, report["labels"]):
        scores = np.array([w[3][label.name] for windows in background for w in windows if w[3] is not None])
        assert result["background_windows"] == len(scores) > 100
        assert result["percentiles"]["p50"] == pytest.approx(np.percentile(scores, 50))
        assert result["percentiles"]["max"] == pytest.approx(scores.max())

        def count(threshold: float) -> int:
            return events([at(label, threshold)], label.name, background)

        width = label.threshold - label.stop_threshold
        points = sorted({*scores.tolist(), *(s + width for s in scores.tolist() if s + width <= 1)})
        failing = [p for p in points if count(p) > allowed]
        suggested = result["suggested_threshold"]
        assert failing, f"{label.name}: the budget should bite somewhere for the test to mean something"
        # lowest: just above the highest failing breakpoint, and nothing between the two
        assert max(failing) < suggested
        assert not [p for p in points if max(failing) < p < suggested]
        assert all(count(p) <= allowed for p in points if p >= suggested)
        assert count(suggested) * 1.0 / hours == pytest.approx(result["suggested_false_alarms_per_hour"])
        assert count(label.threshold) / hours == pytest.approx(result["current_false_alarms_per_hour"])
        print(f"\n{label.name}: current {label.threshold} ({count(label.threshold)} events), "
              f"suggested {suggested} ({count(suggested)} events, allowed {allowed}), p50 {np.percentile(scores, 50):.3f}")


def test_recall_on_positives(calibrated, inputs, tiny_checkpoint, tmp_path):
    """Each positive clip, padded with a window of silence on both sides, through `run`."""
    cfg = load_config(inputs["config"])
    horn = cfg.labels[0]
    result = calibrated["report"]["labels"][0]
    clips = []
    for path in inputs["positives"]:
        samples, rate = sf.read(path, dtype="float32")
        pad = np.zeros(round(cfg.windows.length_s * rate), np.float32)
        padded = tmp_path / path.name
        sf.write(padded, np.concatenate([pad, samples, pad]), rate, subtype="FLOAT")
        clips.append(run_windows(tiny_checkpoint, inputs, padded, tmp_path))
    for threshold, recall in [(horn.threshold, result["current_recall"]),
                              (result["suggested_threshold"], result["suggested_recall"])]:
        detected = [events([at(horn, threshold)], "horn", [windows]) > 0 for windows in clips]
        assert recall == pytest.approx(sum(detected) / len(clips))
    assert result["positives"] == 4 and calibrated["report"]["labels"][1]["current_recall"] is None


def test_write_keeps_comments_and_a_second_calibrate_agrees(calibrated, inputs, tiny_checkpoint):
    written = calibrated["written"].read_text()
    original = inputs["config"].read_text()
    assert inputs["config"].read_text() == CONFIG  # the input is never modified
    for comment in [line.partition("#")[2] for line in original.splitlines() if "#" in line]:
        assert comment in written
    report = calibrated["report"]
    cfg = load_config(calibrated["written"])
    for label, result in zip(cfg.labels, report["labels"]):
        assert label.threshold == result["suggested_threshold"]
    assert cfg.labels[0].end_threshold == report["labels"][0]["suggested_end_threshold"]
    # only the thresholds changed
    changed = [(a, b) for a, b in zip(original.splitlines(), written.splitlines()) if a != b]
    assert len(original.splitlines()) == len(written.splitlines())
    assert all(a.split(":")[0] == b.split(":")[0] and "threshold" in a for a, b in changed)

    again = calibrate_json(tiny_checkpoint, calibrated["written"], inputs)
    assert [r["suggested_threshold"] for r in again["labels"]] == [r["suggested_threshold"] for r in report["labels"]]
    assert [r["current_threshold"] for r in again["labels"]] == [r["suggested_threshold"] for r in report["labels"]]


def test_plots_one_png_per_label(calibrated):
    for name in ("horn", "bird"):
        png = calibrated["plots"] / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def run_error(capsys, *argv: str) -> str:
    code = cli.main(["calibrate", *argv])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    return captured.err


def test_bad_input_names_it_and_writes_nothing(capsys, inputs, tiny_checkpoint, tmp_path):
    out = tmp_path / "out.yaml"
    common = ["--config", str(inputs["config"]), "--model", str(tiny_checkpoint), "--write", str(out)]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio")
    err = run_error(capsys, *common, "--background", str(tmp_path / "empty"))
    assert f"--background folder '{tmp_path / 'empty'}': no audio files" in err
    err = run_error(capsys, *common, "--background", str(tmp_path / "missing.wav"))
    assert f"--background '{tmp_path / 'missing.wav'}': no such file or folder" in err
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio")
    err = run_error(capsys, *common, "--background", str(tmp_path / "bad.wav"))
    assert f"--background '{tmp_path / 'bad.wav'}': cannot decode it" in err
    err = run_error(capsys, *common, "--background", str(inputs["background"]), "--positives", f"siren={tmp_path}")
    assert "--positives 'siren=" in err and "no label 'siren' in the config (labels: horn, bird)" in err
    err = run_error(capsys, *common, "--background", str(inputs["background"]), "--positives", "horn")
    assert "--positives 'horn': expected LABEL=PATH" in err
    err = run_error(capsys, "--config", str(inputs["config"]), "--background", str(inputs["background"]),
                    "--write", str(inputs["config"]))
    assert "that is the input config" in err
    assert not out.exists() and inputs["config"].read_text() == CONFIG
