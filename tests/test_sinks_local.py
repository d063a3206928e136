"""JSON-lines log sink (rotation, console, log bridge) and clip sink (pre/post roll from the ring)."""

import json
import logging
import threading

import numpy as np
import pytest
import soundfile

from monitor.config import ClipsConfig, LogConfig
from monitor.events import EventMessage, LevelReport, WindowReport
from monitor.ringbuffer import RingBuffer, StreamClock
from monitor.sinks.clips import ClipSink
from monitor.sinks.jsonlog import JsonLogSink

RATE = 48000


def event(phase="start", started_at=2.0, ended_at=None, event_id="dog-2000") -> EventMessage:
    return EventMessage(phase=phase, event_id=event_id, label="dog", score=0.8, peak_score=0.9, mean_score=0.85,
                        started_at=started_at, ended_at=ended_at, duration_s=(ended_at or 3.0) - started_at,
                        level_dbfs=-20.0, source="test")


def level(level_dbfs=-30.0) -> LevelReport:
    return LevelReport(timestamp=1.0, source="test", level_dbfs=level_dbfs, windows_scored=3, windows_dropped=0,
                       overflows=0, realtime_factor=2.5, scores={"dog": 0.1})


def window(scores=None, level_dbfs=float("-inf")) -> WindowReport:
    return WindowReport(source="test", start_time=10.0, end_time=11.0, level_dbfs=level_dbfs, scores=scores,
                        inference_ms=None if scores is None else 12.5)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonlog_writes_events_levels_and_module_warnings(tmp_path):
    sink = JsonLogSink(LogConfig(path=str(tmp_path / "log" / "m.jsonl")))
    sink.start()
    sink.handle_event(event())
    sink.handle_level(level(float("-inf")))
    logging.getLogger("monitor.sources").warning("lost %d", 5, extra={"kind": "overflow", "count": 5})
    logging.getLogger("monitor.pipeline").debug("window", extra={"kind": "window"})  # below "info"
    sink.handle_window(window())  # debug level too
    logging.getLogger("elsewhere").warning("not ours")
    sink.close()
    logging.getLogger("monitor.sources").warning("after close")
    got = lines(tmp_path / "log" / "m.jsonl")
    assert [g["type"] for g in got] == ["event", "level", "warning"]
    assert got[0]["phase"] == "start" and got[0]["event_id"] == "dog-2000" and got[0]["peak_score"] == 0.9
    assert got[1]["level_dbfs"] is None and got[1]["scores"] == {"dog": 0.1}  # -inf is not JSON
    assert got[2]["kind"] == "overflow" and got[2]["count"] == 5 and got[2]["message"] == "lost 5"
    assert got[2]["logger"] == "monitor.sources"


def test_jsonlog_debug_level_and_console(tmp_path, capsys):
    sink = JsonLogSink(LogConfig(path=None, console=True, level="debug"))
    sink.start()
    logging.getLogger("monitor.pipeline").debug("window", extra={"kind": "window", "scores": {"dog": 0.2}})
    sink.handle_event(event("end", ended_at=4.0))
    sink.handle_window(window())
    sink.handle_window(window({"dog": 0.7}, -20.0))
    sink.close()
    printed = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [p["type"] for p in printed] == ["log", "event", "window", "window"]
    assert printed[0]["scores"] == {"dog": 0.2} and printed[1]["ended_at"] == 4.0
    assert printed[2] == {"type": "window", "source": "test", "start_time": 10.0, "end_time": 11.0,
                          "level_dbfs": None, "scores": None, "inference_ms": None}  # gated digital silence
    assert printed[3]["scores"] == {"dog": 0.7} and printed[3]["level_dbfs"] == -20.0 and printed[3]["inference_ms"] == 12.5


def test_jsonlog_rotates(tmp_path):
    sink = JsonLogSink(LogConfig(path=str(tmp_path / "m.jsonl"), max_bytes=2000, backups=2))
    sink.start()
    for _ in range(60):
        sink.handle_level(level())
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["m.jsonl", "m.jsonl.1", "m.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2000
        assert all(line["type"] == "level" for line in lines(tmp_path / name))


def marked_audio(seconds: float) -> np.ndarray:
    """Each sample's value encodes its index, so a clip's position can be checked exactly."""
    return (np.arange(round(seconds * RATE)) / RATE / 100).astype(np.float32)


def test_clip_has_pre_and_post_roll_and_waits_for_the_post_roll(tmp_path):
    ring, clock = RingBuffer(10 * RATE), StreamClock(100.0, RATE)
    sink = ClipSink(ClipsConfig(enabled=True, dir=str(tmp_path / "clips"), pre_roll_s=1.0, post_roll_s=0.5), ring, clock)
    sink.start()
    audio = marked_audio(6.0)
    ring.write(audio[: round(4.2 * RATE)])  # the post-roll (until 4.5 s) is not captured yet
    sink.handle_event(event("start", started_at=102.0))
    assert ring.held == RATE  # the clip holds its audio from the pre-roll on (101 s = sample 1 s)
    sink.handle_event(event("end", started_at=102.0, ended_at=104.0))
    threading.Timer(0.2, ring.write, [audio[round(4.2 * RATE) :]]).start()
    sink.close()
    path = sink.clip_path("dog-2000")
    assert path == tmp_path / "clips" / "dog-2000.wav" and sink.clip_path("dog-1000") is None
    assert sink.status() == {"dir": str(tmp_path / "clips"), "written": 1}
    clip, rate = soundfile.read(str(path), dtype="float32")
    assert rate == RATE and len(clip) == round(3.5 * RATE)
    np.testing.assert_allclose(clip, audio[RATE : round(4.5 * RATE)], atol=1 / 32768)
    assert ring.held is None  # released once written
    path.unlink()
    assert sink.clip_path("dog-2000") is None


def test_clip_is_truncated_when_audio_is_gone_or_stream_ended(tmp_path, caplog):
    ring, clock = RingBuffer(3 * RATE), StreamClock(0.0, RATE)
    sink = ClipSink(ClipsConfig(enabled=True, dir=str(tmp_path), pre_roll_s=2.0, post_roll_s=2.0), ring, clock)
    sink.start()
    ring.write(marked_audio(5.0))
    ring.close()  # nothing more will come: no waiting for the post-roll
    sink.handle_event(event("end", started_at=1.5, ended_at=4.5))
    with caplog.at_level(logging.WARNING, logger="monitor.sinks.clips"):
        sink.close()
    clip, _ = soundfile.read(str(sink.clip_path("dog-2000")), dtype="float32")
    assert len(clip) == 3 * RATE  # 2..5 s: what the ring still held
    assert clip[0] == pytest.approx(2.0 / 100, abs=1e-4)
    (record,) = caplog.records
    assert record.kind == "clip_truncated" and record.missing_s == pytest.approx(2.0 + 1.5)  # 0-2 s overwritten, 5-6.5 s never came
