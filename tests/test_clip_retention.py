"""Clip retention (clips.max_age_days / max_total_mb / max_per_label) and a clip disk that fills up."""

import json
import logging
import threading
import time

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.config import ClipsConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig, WindowsConfig
from monitor.events import EventMessage
from monitor.pipeline import Pipeline
from monitor.ringbuffer import RingBuffer, StreamClock
from monitor.sinks.clips import ClipSink
from monitor.sources import FileSource
from tests.helpers import tone, wait_until
from tests.mounts import fill, tmpfs

DAY = 86400
CLIP_S = 1.0  # 1 s of 16-bit mono at 48 kHz: 96044 bytes with the header


def write_clip(folder, label: str, started_at: float) -> str:
    name = f"{label}-{round(started_at * 1000)}.wav"
    silence = np.zeros(round(CLIP_S * SAMPLE_RATE), np.float32)
    soundfile.write(str(folder / name), silence, SAMPLE_RATE, subtype="PCM_16")
    return name


# (label, age in days): a label with '-' in it, and files the sink did not write
EXISTING = [("dog", 10), ("glass-break", 9), ("dog", 5), ("dog", 3), ("dog", 1), ("dog", 0.5), ("glass-break", 0.2)]
FOREIGN = ["notes.txt", "dog.wav", "dog-17.wav.part", "dog-x.wav"]


@pytest.mark.parametrize("limits, kept", [
    ({"max_age_days": 7}, [("dog", 5), ("dog", 3), ("dog", 1), ("dog", 0.5), ("glass-break", 0.2)]),
    ({"max_per_label": 2}, [("glass-break", 9), ("dog", 1), ("dog", 0.5), ("glass-break", 0.2)]),
    ({"max_total_mb": 0.3}, [("dog", 1), ("dog", 0.5), ("glass-break", 0.2)]),  # 3 x 96044 bytes fit
    ({"max_age_days": 4, "max_per_label": 1}, [("dog", 0.5), ("glass-break", 0.2)]),
    ({}, EXISTING),
])
def test_retention_at_start_deletes_the_oldest_past_each_limit(tmp_path, limits, kept):
    folder = tmp_path / "clips"
    folder.mkdir()
    now = time.time()
    names = {(label, age): write_clip(folder, label, now - age * DAY) for label, age in EXISTING}
    for name in FOREIGN:
        (folder / name).write_bytes(b"not a clip of the sink" * 10000)
    sink = ClipSink(ClipsConfig(enabled=True, dir=str(folder), **limits), RingBuffer(SAMPLE_RATE),
                    StreamClock(now, SAMPLE_RATE))
    sink.start()
    sink.close()
    assert sorted(p.name for p in folder.iterdir()) == sorted([names[k] for k in kept] + FOREIGN)


def event(phase: str, label: str, started_at: float, ended_at: float | None = None) -> EventMessage:
    return EventMessage(phase=phase, event_id=f"{label}-{round(started_at * 1000)}", label=label, score=0.8,
                        peak_score=0.9, mean_score=0.85, started_at=started_at, ended_at=ended_at,
                        duration_s=(ended_at or started_at) - started_at, level_dbfs=-20.0, source="test")


def test_retention_after_each_write_keeps_the_newest(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    folder = tmp_path / "clips"
    folder.mkdir()
    t0 = time.time() - 60
    old = [write_clip(folder, "dog", t0 - 3600 * h) for h in (3, 2, 1)]
    ring, clock = RingBuffer(20 * SAMPLE_RATE), StreamClock(t0, SAMPLE_RATE)
    sink = ClipSink(ClipsConfig(enabled=True, dir=str(folder), pre_roll_s=0.5, post_roll_s=0.5, max_per_label=2),
                    ring, clock)
    sink.start()
    assert sorted(p.name for p in folder.iterdir()) == sorted(old[1:])  # at start: 2 per label
    ring.write(tone(1000, 10.0))
    for start in (2.0, 6.0):
        sink.handle_event(event("start", "dog", t0 + start))
        sink.handle_event(event("end", "dog", t0 + start, t0 + start + 1))
    sink.close()
    new = [f"dog-{round((t0 + s) * 1000)}.wav" for s in (2.0, 6.0)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(new)
    assert [sink.clip_path(n[:-4]) for n in new] == [folder / n for n in new]
    deleted = [r.files for r in caplog.records if getattr(r, "kind", None) == "clips_deleted"]
    assert deleted == [[old[0]], [old[1]], [old[2]]]  # at start, then one after each write, oldest first


def replay_config(tmp_path, clip_dir, **clips) -> MonitorConfig:
    return MonitorConfig(
        labels=(LabelConfig(name="beep", threshold=0.001, max_not_heard=1),),  # every scored window is a hit
        windows=WindowsConfig(length_s=1.0, hop_s=0.5, min_dbfs=-10.5),  # only windows full of tone are scored
        detector=DetectorConfig(batch_size=4, max_pending=2, background=("silence",)),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl")),  # on the roomy disk
        clips=ClipsConfig(enabled=True, dir=str(clip_dir), pre_roll_s=0.5, post_roll_s=0.5, **clips),
    )


BURSTS = [2.0, 5.0, 8.0, 11.0, 14.0]  # 1 s tones: 5 events, each a 2 s clip (192044 bytes)


def replay(tmp_path, clap, cfg: MonitorConfig) -> tuple[list[dict], Pipeline]:
    audio = np.zeros(17 * SAMPLE_RATE, np.float32)
    for start in BURSTS:
        audio[round(start * SAMPLE_RATE): round((start + 1) * SAMPLE_RATE)] = tone(1000, 1.0)
    soundfile.write(str(tmp_path / "bursts.wav"), audio, SAMPLE_RATE, subtype="FLOAT")
    pipeline = Pipeline(cfg, FileSource(tmp_path / "bursts.wav", realtime=False), clap)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    runner.join(120)
    assert not runner.is_alive(), "the replay did not finish"
    return [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()], pipeline


def test_a_clip_disk_that_fills_up_is_a_warning_and_monitoring_goes_on(tmp_path, clap):
    with tmpfs(tmp_path / "small", size="500k") as small:  # room for two 2 s clips, not three
        lines, pipeline = replay(tmp_path, clap, replay_config(tmp_path, small / "clips"))
        files = sorted(p.name for p in (small / "clips").iterdir())
    ends = [line for line in lines if line["type"] == "event" and line["phase"] == "end"]
    assert [round(e["started_at"] - pipeline.clock.t0, 3) for e in ends] == BURSTS  # every event reported
    assert files == sorted(f"{e['event_id']}.wav" for e in ends[:2])  # no partial .part left behind
    warnings = [line for line in lines if line["type"] == "warning"]
    assert [(w["kind"], w["event_id"]) for w in warnings] == [("clip_not_written", e["event_id"]) for e in ends[2:]]
    assert all("No space left on device" in w["error"] for w in warnings)
    assert pipeline.status()["sinks"]["clips"]["written"] == 2
    assert [line for line in lines if line.get("kind") == "stopped"]  # it ran to the end of the file


def test_retention_keeps_a_small_clip_disk_from_filling(tmp_path, clap):
    with tmpfs(tmp_path / "small", size="500k") as small:
        # one clip kept: the disk has room for it and the next (retention runs after each write)
        cfg = replay_config(tmp_path, small / "clips", max_total_mb=0.2)
        lines, _ = replay(tmp_path, clap, cfg)
        files = sorted(p.name for p in (small / "clips").iterdir())
    ends = [line for line in lines if line["type"] == "event" and line["phase"] == "end"]
    assert len(ends) == len(BURSTS) and files == [f"{ends[-1]['event_id']}.wav"]
    assert not [line for line in lines if line["type"] == "warning"]
    deleted = [f for line in lines if line.get("kind") == "clips_deleted" for f in line["files"]]
    assert deleted == [f"{e['event_id']}.wav" for e in ends[:-1]]


def test_a_disk_filled_by_others_loses_one_clip_not_the_sink(tmp_path, caplog):
    """The clip folder's disk filled by something else: that clip is lost with a warning (and
    retention, which runs next, copes too); the next one is written once there is room again."""
    with tmpfs(tmp_path / "small", size="300k") as small:
        folder = small / "clips"
        folder.mkdir()
        filler = fill(small)
        t0 = time.time()
        ring, clock = RingBuffer(20 * SAMPLE_RATE), StreamClock(t0, SAMPLE_RATE)
        sink = ClipSink(ClipsConfig(enabled=True, dir=str(folder), pre_roll_s=0, post_roll_s=0, max_per_label=5),
                        ring, clock)
        sink.start()
        ring.write(tone(1000, 10.0))
        sink.handle_event(event("end", "dog", t0 + 1, t0 + 2))
        assert wait_until(lambda: [r for r in caplog.records if getattr(r, "kind", None) == "clip_not_written"], 10)
        filler.unlink()
        sink.handle_event(event("end", "dog", t0 + 4, t0 + 5))
        sink.close()
        assert sorted(p.name for p in folder.iterdir()) == [f"dog-{round((t0 + 4) * 1000)}.wav"]
    assert sink.clip_path(f"dog-{round((t0 + 1) * 1000)}") is None
    [lost] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert lost.kind == "clip_not_written" and "No space left on device" in lost.error


@pytest.mark.parametrize("name, value", [("max_age_days", 0), ("max_total_mb", -1), ("max_per_label", 0)])
def test_limits_must_be_positive(name, value):
    problems = list(ClipsConfig(**{name: value}).problems())
    assert problems == [(name, f"must be > 0 (omit it for no limit), got {value}")]
