"""Soak: over an hour of audio through the whole pipeline at full speed; memory must stay flat.

A 60 s clip (six 10 s segments: silence, noise, silence, tone, silence,
noise) loops through a non-live FileSource -> ring buffer -> 10 s windows
every 10 s (aligned with the segments) -> tiny CLAP -> rules -> JSON log.
The label's prompt and threshold come from the model's own scores for the
segments (see `separating_label`), so every noise window, and nothing else, must give one event:
the event list checks that no window was lost, skipped or duplicated.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from monitor.config import DetectorConfig, LogConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.pipeline import Pipeline
from monitor.sources import open_source
from tests.helpers import tone
from tests.test_e2e_capture import BACKGROUND, separating_label

RATE = 48000
SEGMENT_S = 10  # = window length = hop
SEGMENTS = ["silence", "noise", "silence", "tone", "silence", "noise"]
STREAM_S = 3600
WARM_UP_S = 360  # stream seconds before the RSS baseline is taken
# A sample taken during a forward holds its batch's transient buffers: a batch of 8 10-s
# windows peaks at ~78 MB of MLX buffers (mx.get_peak_memory over one batch) and ~21 MB of
# NumPy ones (the windows alone are 15 MB), so samples 30-67 MB above the floor come and go
# depending on when they land. Growth is therefore measured on the floor between forwards:
# the lowest RSS of the run's last third against that of its first third. A leak raises the
# floor; the transient working set only has its own bound, above that working set.
MAX_GROWTH_MB = 30
MAX_TRANSIENT_MB = 128


def segment(kind: str, seed: int) -> np.ndarray:
    n = SEGMENT_S * RATE
    if kind == "noise":
        return (0.25 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
    if kind == "tone":
        return tone(1000, SEGMENT_S, RATE, amplitude=0.35)
    return np.zeros(n, np.float32)


def rss_mb() -> float:
    """The process's anonymous resident memory (RssAnon), where a leak lands. Not VmRSS: its
    file-backed part (mapped libraries) moves by ~30 MB either way when the kernel reclaims cold
    pages and they are read back (a VM with DAMON's pageout scheme does so at any time), which
    failed this test on code that leaks nothing."""
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))
    return kb / 1024


class RssSampler(threading.Thread):
    """(stream seconds, RSS MB) every `period` wall seconds."""

    def __init__(self, pipeline: Pipeline, period: float = 0.5):
        super().__init__(daemon=True)
        self.pipeline, self.period = pipeline, period
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            self.samples.append((self.pipeline.ring.end / RATE, rss_mb()))


@pytest.mark.slow
def test_soak_one_hour_at_full_speed(tmp_path, clap, record_property):
    clip = [segment(kind, seed) for seed, kind in enumerate(SEGMENTS)]
    sf.write(tmp_path / "clip.wav", np.concatenate(clip), RATE, subtype="FLOAT")

    label = separating_label(clap, "noise", [s for s, kind in zip(clip, SEGMENTS) if kind == "noise"],
                             [s for s, kind in zip(clip, SEGMENTS) if kind != "noise"])
    cfg = MonitorConfig(
        source=SourceConfig(type="file", path=str(tmp_path / "clip.wav"), realtime=False, loop=True),
        labels=(label,),
        windows=WindowsConfig(length_s=SEGMENT_S, hop_s=SEGMENT_S),
        detector=DetectorConfig(batch_size=8, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / "soak.jsonl"), level_interval_s=5.0),
    )
    pipeline = Pipeline(cfg, open_source(cfg.source), clap)
    sampler = RssSampler(pipeline)
    started = time.monotonic()
    pipeline.start()
    sampler.start()
    try:
        while pipeline.ring.end < STREAM_S * RATE:
            assert pipeline.detector.is_alive(), "the detector died"
            time.sleep(0.2)
    finally:
        pipeline.shutdown()
        sampler.done.set()
        sampler.join()
    wall_s = time.monotonic() - started

    series = [(round(t), round(mb, 1)) for t, mb in sampler.samples]
    record_property("rss_mb_by_stream_s", series)
    measured = [mb for t, mb in series if t >= WARM_UP_S]
    third = max(1, len(measured) // 3)
    baseline, final = min(measured[:third]), min(measured[-third:])
    growth, transient = final - baseline, max(measured) - baseline
    print(f"\nsoak: {pipeline.ring.end / RATE:.0f} s of audio in {wall_s:.0f} s wall; "
          f"RSS {series[0][1]} MB at start, floor {baseline} MB after warm-up and {final} MB at the end "
          f"(growth {growth:.1f} MB), peak {transient:.1f} MB above the floor\n"
          f"RSS series (stream s, MB): {series}")
    assert len(measured) >= 6, "too few RSS samples after the warm-up to tell a floor"
    assert growth < MAX_GROWTH_MB
    assert transient < MAX_TRANSIENT_MB

    # Every window of the stream was scored once, nothing dropped...
    windows = (pipeline.ring.end - SEGMENT_S * RATE) // (SEGMENT_S * RATE) + 1
    assert windows >= STREAM_S // SEGMENT_S
    assert pipeline.detector.windows_scored == windows and pipeline.queue.dropped == 0
    # ...and each noise window gave exactly one event at its own stream time.
    lines = [json.loads(line) for line in (tmp_path / "soak.jsonl").read_text().splitlines()]
    ends = [line for line in lines if line["type"] == "event" and line["phase"] == "end"]
    t0 = pipeline.clock.t0
    got = [(round(e["started_at"] - t0, 3), round(e["ended_at"] - t0, 3)) for e in ends]
    expected = [(float(i * SEGMENT_S), float((i + 1) * SEGMENT_S)) for i in range(windows)
                if SEGMENTS[i % len(SEGMENTS)] == "noise"]
    assert got == expected
    assert not [line for line in lines if line["type"] == "warning"]
