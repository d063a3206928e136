"""Labels taught by example audio in the monitor: `examples:` in the YAML, through a real file
replay of the pipeline with the tiny random-weight model, the on-disk example cache across
starts, and config errors.

The random model tells white noise from a tone of the same level (as tests/test_e2e_capture.py
finds), so a label taught only by a few noise recordings must fire on a new noise burst and
not on a tone burst of the same RMS; its threshold is set between the measured scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from clap_mlx.anchors import Anchor, generic_sounds
from monitor import cli
from monitor.config import DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.config_loader import ConfigError, load_config
from monitor.detector import Detector
from monitor.pipeline import Pipeline
from monitor.sources import FileSource
from tests.helpers import tone
from tests.test_e2e_capture import partial_windows  # 1 s windows half to fully filled with a burst

RATE = 48000
WINDOW_S, HOP_S = 1.0, 0.5
RMS = 0.2
GATE_DBFS = 20 * np.log10(RMS) + 10 * np.log10(0.55)  # windows >= 55 % full of a burst pass
BACKGROUND = ("silence", "background noise")


def noise(seconds: float, seed: int) -> np.ndarray:
    return (RMS * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


def beep(seconds: float) -> np.ndarray:
    return tone(1000, seconds, RATE, RMS * np.sqrt(2))  # the same RMS as the noise


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


@pytest.fixture
def examples(tmp_path, monkeypatch) -> Path:
    """Three noise recordings in a folder (one in a subfolder); a fresh example cache."""
    monkeypatch.setenv("CLAP_MLX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hiss"
    (folder / "more").mkdir(parents=True)
    sf.write(folder / "a.wav", noise(2.0, 101), RATE)
    sf.write(folder / "b.flac", noise(1.5, 102), RATE)
    sf.write(folder / "more" / "c.wav", noise(3.0, 103), RATE)
    return folder


def config(tmp_path: Path, clip: Path, label: LabelConfig, log: str = "monitor.jsonl") -> MonitorConfig:
    return MonitorConfig(
        source=SourceConfig(type="file", path=str(clip), realtime=False),
        labels=(label,),
        windows=WindowsConfig(length_s=WINDOW_S, hop_s=HOP_S, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(batch_size=4, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / log), level="debug", level_interval_s=1.0),
    )


def replay(cfg: MonitorConfig, clap) -> list[dict]:
    Pipeline(cfg, FileSource(cfg.source.path, realtime=False), clap).run()
    return [json.loads(line) for line in Path(cfg.log.path).read_text().splitlines()]


def test_a_label_taught_only_by_examples_fires_on_new_instances_not_on_distractors(clap, examples, tmp_path):
    # the model separates a new noise from the tone: threshold halfway between the scores
    detector = Detector(clap, {"hiss": Anchor(examples=(str(examples),))}, BACKGROUND)
    hits = [s["hiss"] for s in detector.score(partial_windows(lambda s: noise(s, 7)))]
    misses = [s["hiss"] for s in detector.score(partial_windows(beep))]
    assert min(hits) - max(misses) > 2e-3, (min(hits), max(misses))
    label = LabelConfig(name="hiss", examples=(str(examples),), threshold=(min(hits) + max(misses)) / 2, max_not_heard=1)

    clip = tmp_path / "clip.wav"
    sf.write(clip, np.concatenate([silence(1.5), noise(2.0, 8), silence(1.5), beep(2.0), silence(1.5),
                                   noise(2.0, 9), silence(1.5)]), RATE)
    lines = replay(config(tmp_path, clip, label), clap)
    events = [line for line in lines if line["type"] == "event"]
    assert [e["phase"] for e in events] == ["start", "end", "start", "end"] and {e["label"] for e in events} == {"hiss"}
    t0 = next(line for line in lines if line["type"] == "window")["start_time"]
    for (start, end), event in zip([(1.5, 3.5), (8.5, 10.5)], events[1::2]):
        # a window >= 55 % full of noise passes the gate: within a window of the burst's edges
        assert start - WINDOW_S <= event["started_at"] - t0 <= start
        assert end <= event["ended_at"] - t0 <= end + WINDOW_S
    windows = [line for line in lines if line["type"] == "window" and line["scores"] is not None]
    during_beep = [w["scores"]["hiss"] for w in windows if 5.0 <= w["start_time"] - t0 and w["end_time"] - t0 <= 7.0]
    assert during_beep and max(during_beep) < label.threshold


def cache_lines(lines: list[dict]) -> list[tuple[int, int]]:
    return [(line["embedded"], line["cached"]) for line in lines if line.get("kind") == "examples"]


def test_example_cache_hit_on_second_start_and_invalidated_when_a_file_changes(clap, examples, tmp_path):
    label = LabelConfig(name="hiss", examples=(str(examples),), threshold=0.5)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.concatenate([silence(0.5), noise(1.5, 5)]), RATE)
    generic = len(generic_sounds())  # the default background audio goes through the same cache
    assert cache_lines(replay(config(tmp_path, clip, label, "first.jsonl"), clap)) == [(3 + generic, 0)]
    assert cache_lines(replay(config(tmp_path, clip, label, "second.jsonl"), clap)) == [(0, 3 + generic)]
    sf.write(examples / "b.flac", noise(1.5, 202), RATE)  # same name, new sound
    assert cache_lines(replay(config(tmp_path, clip, label, "third.jsonl"), clap)) == [(1, 2 + generic)]


def test_prompts_and_examples_together_and_text_only_as_before(clap, examples):
    text_only = Detector(clap, {"hiss": ["static hiss"]}, BACKGROUND)
    as_anchor = Detector(clap, {"hiss": Anchor(text=("static hiss",))}, BACKGROUND)
    windows = partial_windows(lambda s: noise(s, 3))[:4]
    assert [s["hiss"] for s in text_only.score(windows)] == [s["hiss"] for s in as_anchor.score(windows)]
    both = Detector(clap, {"hiss": Anchor(("static hiss",), (str(examples),), 0.5)}, BACKGROUND)
    examples_only = Detector(clap, {"hiss": Anchor(examples=(str(examples),))}, BACKGROUND)
    for t, e, b in zip(*(d.scorer.margins(clap.embed_audio(windows))[:, 0] for d in (text_only, examples_only, both))):
        assert b == pytest.approx(0.5 * t + 0.5 * e, abs=1e-6)  # the margins' weighted sum


def write_config(tmp_path: Path, label: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"labels": [{"name": "hiss", **label}], "log": {"path": None}}, sort_keys=False))
    return path


def test_config_problems_name_the_field_and_line(tmp_path, examples):
    prompts_only_default = load_config(write_config(tmp_path, {}))
    assert prompts_only_default.prompts(prompts_only_default.labels[0]) == ("the sound of hiss",)
    examples_only = load_config(write_config(tmp_path, {"examples": [str(examples)]}))
    assert examples_only.prompts(examples_only.labels[0]) == ()

    cases = [
        ({"prompts": []}, "labels[0].prompts", "is empty and the label has no examples"),
        ({"examples": []}, "labels[0].examples", "is empty: list audio files or folders"),
        ({"examples": [str(examples), str(tmp_path / "nope.wav")]}, "labels[0].examples[1]", "no such file or folder"),
        ({"examples": [str(examples)], "text_weight": 1.5}, "labels[0].text_weight", "must be between 0 and 1"),
    ]
    for label, field, message in cases:
        with pytest.raises(ConfigError) as error:
            load_config(write_config(tmp_path, label))
        assert error.value.path == field and message in error.value.message and error.value.line is not None, error.value
    path = tmp_path / "bg.yaml"
    path.write_text(yaml.safe_dump({"labels": [{"name": "x"}], "detector": {"background_examples": ["missing/"]}}))
    with pytest.raises(ConfigError, match=r"detector.background_examples\[0\]: 'missing/': no such file or folder"):
        load_config(path)


def test_an_example_that_cannot_be_decoded_stops_run_naming_label_and_file(tmp_path, examples, tiny_checkpoint, capsys):
    (examples / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio")
    clip = tmp_path / "clip.wav"
    sf.write(clip, noise(1.0, 1), RATE)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"source": {"type": "file", "path": str(clip), "realtime": False},
                                    "labels": [{"name": "hiss", "examples": [str(examples)]}],
                                    "log": {"path": str(tmp_path / "log.jsonl")}}))
    assert cli.main(["run", "--config", str(path), "--model", str(tiny_checkpoint)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"error: {path}: examples of 'hiss': audio file '{examples / 'broken.wav'}': cannot decode it" in err
