"""File replay through the whole pipeline with the real (tiny, random-weight) model.

The WAV (16 kHz, so the resampler runs) holds silence with 2 s bursts of a 1 kHz
tone (the target, twice) and a 2.5 kHz tone (a distractor). Bursts start on
multiples of the 0.5 s hop, so every 1 s window is either all burst, half burst
or silence; the gate sits between the levels of "all burst" and "half burst",
so only windows fully inside a burst are scored. The threshold is set between
the model's own scores for the two tones, computed here.
"""

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.config import ClipsConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig
from monitor.config import BufferConfig, MqttConfig, WindowsConfig
from monitor.detector import Detector
from monitor.events import EventMessage, WindowReport
from monitor.pipeline import Pipeline
from monitor.sinks.base import Sink
from monitor.sinks.homeassistant import PAYLOAD_OFF, PAYLOAD_ON
from monitor.sources import FileSource
from monitor.windower import level_dbfs
from tests.helpers import tone, wait_until

FILE_RATE = 16000
AMPLITUDE = 0.5  # tone RMS -9 dBFS; a half-burst window -12 dBFS
GATE_DBFS = -10.5
TARGET_HZ, DISTRACTOR_HZ = 1000.0, 2500.0
BURSTS = [(3.0, TARGET_HZ), (8.0, DISTRACTOR_HZ), (13.0, TARGET_HZ)]  # (start s, Hz), 2 s each
TOTAL_S = 17.0
CANDIDATE_PROMPTS = ["a beep", "a high pitched whistle", "an alarm tone", "a smoke detector"]
BACKGROUND = ("silence", "background noise")


def write_replay(path) -> None:
    audio = np.zeros(round(TOTAL_S * FILE_RATE), np.float32)
    for start, hz in BURSTS:
        audio[round(start * FILE_RATE) : round((start + 2) * FILE_RATE)] = tone(hz, 2.0, FILE_RATE, AMPLITUDE)
    soundfile.write(str(path), audio, FILE_RATE, subtype="FLOAT")


def config(tmp_path, beep: LabelConfig, mqtt: MqttConfig = MqttConfig(enabled=False)) -> MonitorConfig:
    return MonitorConfig(
        labels=(beep,),
        source=SourceConfig(type="file", path=str(tmp_path / "replay.wav"), realtime=False),
        # 10 s ring < 17 s file: the paced replay must keep the clips' audio; it fits with
        # 2 pending + 4 in a batch windows between the windower and the rules
        buffer=BufferConfig(seconds=10),
        windows=WindowsConfig(length_s=1.0, hop_s=0.5, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(batch_size=4, max_pending=2, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl"), level_interval_s=0.5),
        clips=ClipsConfig(enabled=True, dir=str(tmp_path / "clips"), pre_roll_s=0.5, post_roll_s=0.5),
        mqtt=mqtt,
    )


@pytest.fixture(scope="module")
def beep(clap) -> LabelConfig:
    """The target label: the candidate prompt that best separates the tones (in the model's
    scores for a window full of each), its threshold halfway between them."""
    target, distractor = tone(TARGET_HZ, 1.0, SAMPLE_RATE, AMPLITUDE), tone(DISTRACTOR_HZ, 1.0, SAMPLE_RATE, AMPLITUDE)
    gaps = {}
    for prompt in CANDIDATE_PROMPTS:
        hit, miss = Detector(clap, {"beep": [prompt]}, BACKGROUND).score([target, distractor])
        gaps[prompt] = (hit["beep"], miss["beep"])
    prompt, (hit, miss) = max(gaps.items(), key=lambda item: item[1][0] - item[1][1])
    assert hit - miss > 1e-4, f"the random model separates neither tone: {gaps}"
    return LabelConfig(name="beep", prompts=(prompt,), threshold=(hit + miss) / 2, max_not_heard=1)


def test_gate_levels_separate_full_and_half_burst_windows():
    full = tone(TARGET_HZ, 1.0, SAMPLE_RATE, AMPLITUDE)
    half = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), full[: SAMPLE_RATE // 2]])
    assert level_dbfs(full) > GATE_DBFS + 1 > GATE_DBFS - 1 > level_dbfs(half)


def test_file_replay_logs_events_with_correct_timing(tmp_path, clap, beep, mosquitto_broker, mqtt_recorder):
    write_replay(tmp_path / "replay.wav")
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/replay/#"])
    mqtt = MqttConfig(host="127.0.0.1", port=broker.port, node_id="replay")
    pipeline = Pipeline(config(tmp_path, beep, mqtt), FileSource(tmp_path / "replay.wav", realtime=False), clap)
    pipeline.run()

    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    events = [line for line in lines if line["type"] == "event"]
    t0 = pipeline.clock.t0
    got = [(e["phase"], round(e["started_at"] - t0, 3), e["ended_at"] and round(e["ended_at"] - t0, 3)) for e in events]
    # target bursts 3-5 s and 13-15 s; the distractor at 8-10 s never crosses the threshold
    assert got == [("start", 3.0, None), ("end", 3.0, 5.0), ("start", 13.0, None), ("end", 13.0, 15.0)]
    assert all(e["label"] == "beep" and e["source"] == "file:replay.wav" for e in events)
    assert events[1]["peak_score"] >= beep.threshold and events[1]["duration_s"] == pytest.approx(2.0)
    assert events[1]["level_dbfs"] == pytest.approx(-9.03, abs=0.1)

    # only fully-in-burst windows were scored: 3 per burst; nothing dropped in a non-live replay
    levels = [line for line in lines if line["type"] == "level"]
    assert levels and levels[-1]["windows_scored"] == 9 and levels[-1]["windows_dropped"] == 0
    assert not [line for line in lines if line["type"] == "warning"], "unexpected warnings"

    # the same events over MQTT (the sink delivered its queue before closing)
    assert wait_until(lambda: len(recorder.payloads("sound_monitor/replay/event")) == 4)
    published = [json.loads(p) for p in recorder.payloads("sound_monitor/replay/event")]
    assert [(p["phase"], p["id"]) for p in published] == [(e["phase"], e["event_id"]) for e in events]
    states = recorder.payloads("sound_monitor/replay/beep/state")
    assert states[-4:] == [PAYLOAD_ON, PAYLOAD_OFF] * 2 and set(states[:-4]) <= {PAYLOAD_OFF}  # initial state

    clips = sorted((tmp_path / "clips").glob("*.wav"))
    assert [c.stem for c in clips] == sorted(e["event_id"] for e in events if e["phase"] == "end")
    for clip in clips:
        audio, rate = soundfile.read(str(clip))
        assert rate == SAMPLE_RATE and len(audio) == pytest.approx(3.0 * SAMPLE_RATE, abs=2)
        # pre/post-roll silence around the 2 s burst
        assert np.abs(audio[: SAMPLE_RATE // 2 - 200]).max() < 0.01 and np.abs(audio[SAMPLE_RATE : 2 * SAMPLE_RATE]).min() >= 0
        assert level_dbfs(audio[SAMPLE_RATE // 2 + 200 : -SAMPLE_RATE // 2 - 200].astype(np.float32)) == pytest.approx(-9.03, abs=0.1)


class Observer(Sink):
    """Records what an observer (the dashboard) sees: each window report with the label
    state and source state in `status()` at that moment, and the events."""

    name = "observer"

    def __init__(self):
        self.pipeline: Pipeline | None = None
        self.windows: list[WindowReport] = []
        self.states: list[str] = []
        self.source_states: set[str] = set()
        self.events: list[EventMessage] = []

    def handle_window(self, report: WindowReport) -> None:
        status = self.pipeline.status()
        self.windows.append(report)
        self.states.append(status["labels"]["beep"]["state"])
        self.source_states.add(status["source"]["state"])

    def handle_event(self, event: EventMessage) -> None:
        self.events.append(event)

    def status(self) -> dict:
        return {"windows": len(self.windows)}


def test_observers_get_every_window_in_order_and_status_agrees_with_the_log(tmp_path, clap, beep):
    write_replay(tmp_path / "replay.wav")
    cfg = config(tmp_path, dataclasses.replace(beep, cooldown_s=2.0))
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, level="debug"))  # window lines too
    observer = Observer()
    pipeline = Pipeline(cfg, FileSource(tmp_path / "replay.wav", realtime=False), clap, sinks=[observer])
    observer.pipeline = pipeline
    assert pipeline.status()["source"]["state"] == "starting"  # built, its source not started yet
    pipeline.run()

    # every 1 s window of the 17 s file, hop 0.5 s, in order; only the 9 fully-in-burst ones scored
    t0 = pipeline.clock.t0
    assert [round(w.start_time - t0, 3) for w in observer.windows] == [i * 0.5 for i in range(33)]
    assert all(round(w.end_time - w.start_time, 3) == 1.0 and w.source == "file:replay.wav" for w in observer.windows)
    scored = [w for w in observer.windows if w.scores is not None]
    assert len(scored) == 9 and all(w.inference_ms > 0 and set(w.scores) == {"beep"} for w in scored)
    assert all(w.inference_ms is None and w.level_dbfs < GATE_DBFS for w in observer.windows if w.scores is None)
    hits = [round(w.start_time - t0, 3) for w in scored if w.scores["beep"] >= beep.threshold]
    assert hits == [3.0, 3.5, 4.0, 13.0, 13.5, 14.0]  # the target bursts' windows

    # the label's state as status() showed it after each window: idle, event (3-5 s), cooldown (2 s), ...
    changes = [state for i, state in enumerate(observer.states) if i == 0 or state != observer.states[i - 1]]
    assert changes == ["idle", "event", "cooldown", "idle", "event", "cooldown", "idle"]
    assert observer.states.index("event") == 6  # window 3-4 s starts it
    assert observer.states.index("cooldown") == 9  # window 4.5-5.5 s ends the event heard until 5 s
    assert observer.states.index("idle", 9) == 12  # window 6-7 s: the cooldown ended at 7 s

    # the counters match the JSON log written next to them
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    logged = [line for line in lines if line["type"] == "window"]
    assert [(line["start_time"], line["scores"]) for line in logged] == [(w.start_time, w.scores) for w in observer.windows]
    level = [line for line in lines if line["type"] == "level"][-1]
    status = pipeline.status()
    gated = sum(line["scores"] is None for line in logged)
    assert status["windows"] == {"scored": level["windows_scored"], "gated": gated, "dropped": 0, "skipped": 0}
    assert level["windows_dropped"] == 0 and status["windows"]["scored"] + gated == len(logged) == 33
    assert status["source"] == {"name": "file:replay.wav", "live": False, "state": "ended", "gaps": 0, "gap_s": 0.0,
                                "overflows": level["overflows"]}
    # while windows came the source was running (the file may end before the last window)
    assert "running" in observer.source_states and observer.source_states <= {"running", "ended"}
    assert status["stream_s"] == pytest.approx(TOTAL_S, abs=1e-3) and status["started_at"] == pytest.approx(t0, abs=5)
    assert status["realtime_factor"] == pytest.approx(level["realtime_factor"]) and status["inference_ms"] > 0
    assert status["level_dbfs"] == pytest.approx(observer.windows[-1].level_dbfs)
    assert status["labels"] == {"beep": {"state": "idle", "score": None, "threshold": beep.threshold,
                                         "end_threshold": beep.threshold}}
    ends = [e.event_id for e in observer.events if e.phase == "end"]
    assert status["sinks"] == {"clips": {"dir": str(tmp_path / "clips"), "written": 2}, "observer": {"windows": 33},
                               "log": {"path": str(tmp_path / "monitor.jsonl")}}
    clips = next(sink for sink in pipeline.sinks if sink.name == "clips")
    assert [clips.clip_path(event_id) for event_id in ends] == [tmp_path / "clips" / f"{e}.wav" for e in ends]
    assert clips.clip_path("beep-0") is None


class ArraySource:
    """Minimal in-test source through the public protocol: pushes given blocks at once."""

    def __init__(self, blocks: list[tuple[np.ndarray, int]], sample_rate: int, live: bool):
        self.blocks, self.sample_rate, self.live = blocks, sample_rate, live
        self.name, self.overflows = "array", 0
        self._done = threading.Event()

    def start(self, on_audio) -> None:
        threading.Thread(target=self._run, args=(on_audio,), daemon=True).start()

    def _run(self, on_audio) -> None:
        for block, start in self.blocks:
            if self._done.is_set():
                break
            on_audio(block, start)
        self._done.set()

    def stop(self) -> None:
        self._done.set()

    def wait(self, timeout=None) -> bool:
        return self._done.wait(timeout)


def plain_config(tmp_path, **windows) -> MonitorConfig:
    return MonitorConfig(
        labels=(LabelConfig(name="beep", threshold=0.999),),
        buffer=BufferConfig(seconds=5),
        windows=WindowsConfig(**windows),
        detector=DetectorConfig(batch_size=4, max_pending=2, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl")),
    )


def test_source_gap_is_filled_so_sample_indices_stay_stream_time(tmp_path, clap):
    burst = tone(TARGET_HZ, 1.0, SAMPLE_RATE)
    source = ArraySource([(burst, 0), (burst, 3 * SAMPLE_RATE)], SAMPLE_RATE, live=False)
    pipeline = Pipeline(plain_config(tmp_path, length_s=1.0, hop_s=1.0, min_dbfs=GATE_DBFS), source, clap)
    pipeline.run()
    assert pipeline.ring.end == 4 * SAMPLE_RATE
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    (gap,) = [line for line in lines if line["type"] == "warning"]
    assert gap["kind"] == "source_gap" and gap["gap_s"] == 2.0
    assert lines[-2]["type"] == "level" and lines[-2]["windows_scored"] == 2  # the gap's windows are gated
    status = pipeline.status()
    assert status["source"]["gaps"] == 1 and status["source"]["gap_s"] == 2.0
    assert status["windows"] == {"scored": 2, "gated": 2, "dropped": 0, "skipped": 0}


class DeliversBeforeReturning(ArraySource):
    """A source whose start() returns only after its thread has delivered every block, as
    a fast file read may: status() seen from those windows must not say "starting"."""

    def start(self, on_audio) -> None:
        super().start(on_audio)
        self._done.wait(30)


def test_source_reads_running_once_it_delivers_even_before_start_returns(tmp_path, clap):
    burst = tone(TARGET_HZ, 12.0, SAMPLE_RATE)  # longer than the 5-s ring: delivery waits for windows scored
    source = DeliversBeforeReturning([(burst[i : i + 4800], i) for i in range(0, len(burst), 4800)],
                                     SAMPLE_RATE, live=False)
    pipeline = Pipeline(plain_config(tmp_path, length_s=1.0, hop_s=1.0), source, clap, sinks=[observer := Observer()])
    observer.pipeline = pipeline
    pipeline.run()
    assert len(observer.windows) == 12 and "running" in observer.source_states
    assert observer.source_states <= {"running", "ended"}


def test_live_overload_drops_oldest_windows_and_accounts_for_all(tmp_path, clap):
    seconds, hop = 30, 0.25
    noise = (0.1 * np.random.default_rng(0).standard_normal(seconds * SAMPLE_RATE)).astype(np.float32)
    blocks = [(noise[i : i + 4800], i) for i in range(0, len(noise), 4800)]
    pipeline = Pipeline(plain_config(tmp_path, length_s=1.0, hop_s=hop), ArraySource(blocks, SAMPLE_RATE, live=True), clap)
    pipeline.run()
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    report = [line for line in lines if line["type"] == "level"][-1]
    windows = int((seconds - 1.0) / hop) + 1
    assert report["windows_dropped"] > 0 and report["windows_scored"] + report["windows_dropped"] == windows
    losses = [line for line in lines if line["type"] == "warning"]
    assert {line["kind"] for line in losses} <= {"windows_dropped", "windows_skipped"}
    assert sum(line["count"] for line in losses) == report["windows_dropped"]
    counted = pipeline.status()["windows"]
    assert counted["scored"] == report["windows_scored"] and counted["dropped"] + counted["skipped"] == report["windows_dropped"]


def test_cli_run_stops_on_sigterm_and_closes_open_events(tmp_path, tiny_checkpoint):
    audio = tone(TARGET_HZ, 60.0, FILE_RATE)
    soundfile.write(str(tmp_path / "long.wav"), audio, FILE_RATE)
    log_path = tmp_path / "run.jsonl"
    (tmp_path / "run.yaml").write_text(
        f"source: {{type: file, path: {tmp_path / 'long.wav'}, realtime: true}}\n"
        "buffer: {seconds: 5}\n"
        "windows: {length_s: 1, hop_s: 0.5}\n"
        "detector: {max_pending: 4}\n"
        # every scored window is a hit: an event is open when the signal arrives
        "labels: [{name: beep, threshold: 0.001}]\n"
        f"log: {{path: {log_path}}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(tmp_path / "run.yaml"), "--model", str(tiny_checkpoint)],
        cwd=Path(__file__).parents[1], stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while '"phase": "start"' not in (log_path.read_text() if log_path.exists() else ""):
            assert process.poll() is None and time.monotonic() < deadline, "no event started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        process.kill()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    events = [line for line in lines if line["type"] == "event"]
    assert [e["phase"] for e in events][0] == "start" and events[-1]["phase"] == "end"
    assert events[-1]["event_id"] == events[0]["event_id"] and events[-1]["duration_s"] > 0
    assert any(line.get("kind") == "stopped" for line in lines)
    assert lines[-1].get("kind") == "stopped" or lines[-1]["type"] in ("level", "log")


@pytest.mark.parametrize("stop_after_s", [1.5, 4.7])
def test_stopping_a_paced_replay_midway_scores_every_delivered_window(tmp_path, clap, stop_after_s):
    """Stopping while the file reader waits for room must not let its block overwrite uncut windows."""
    noise = (0.1 * np.random.default_rng(0).standard_normal(40 * FILE_RATE)).astype(np.float32)
    soundfile.write(str(tmp_path / "noise.wav"), noise, FILE_RATE, subtype="FLOAT")
    # a 2 s ring and many small windows: the reader is nearly always waiting for room
    cfg = plain_config(tmp_path, length_s=1.0, hop_s=0.1)
    cfg = dataclasses.replace(cfg, buffer=BufferConfig(seconds=2))
    pipeline = Pipeline(cfg, FileSource(tmp_path / "noise.wav", realtime=False), clap)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    while pipeline.ring.end < stop_after_s * SAMPLE_RATE:
        assert runner.is_alive(), "the replay ended before the stop"
        time.sleep(0.01)
    pipeline.stop()
    runner.join(60)
    assert not runner.is_alive()

    length, hop = SAMPLE_RATE, SAMPLE_RATE // 10
    windows = (pipeline.ring.end - length) // hop + 1  # every window within the delivered audio
    assert pipeline.windower.skipped == 0 and pipeline.queue.dropped == 0
    assert pipeline.detector.windows_scored == windows
    assert pipeline.ring.end < len(noise) * SAMPLE_RATE // FILE_RATE  # stopped mid-replay
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert [line for line in lines if line["type"] == "level"][-1]["windows_scored"] == windows
    assert not [line for line in lines if line["type"] == "warning"]
