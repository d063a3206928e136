"""clips.skip_if: a clip whose windows score a privacy label (speech) is not written; its event says so.

The replay (16 kHz, so the resampler runs) holds a 1 kHz tone alone (event A), then a
2.5 kHz tone directly followed by the 1 kHz tone (event B, whose pre-roll reaches into
the 2.5 kHz part). With the tiny random-weight model the labels are made controllable
by their inputs, as in test_pipeline_replay: `beep` gets the prompt that best tells the
1 kHz tone from the 2.5 kHz one, `speech` the prompt that best tells them the other way
round, each threshold halfway between the model's own scores. So the 2.5 kHz tone is
"speech" and B's clip must be withheld, A's written.
"""

import dataclasses
import json

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.config import BufferConfig, ClipsConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig
from monitor.config import WindowsConfig
from monitor.config_loader import ConfigError, load_config
from monitor.detector import Detector
from monitor.events import EventMessage
from monitor.pipeline import Pipeline
from monitor.privacy import UNCHECKED, ClipGuard
from monitor.sinks.mqtt import event_payload
from monitor.sources import FileSource
from tests.helpers import Events, tone

FILE_RATE = 16000
AMPLITUDE = 0.5
GATE_DBFS = -10.5  # between a window full of tone (-9 dBFS) and half of one (-12 dBFS)
BEEP_HZ, SPEECH_HZ = 1000.0, 2500.0
PARTS = [(2.0, BEEP_HZ), (6.0, SPEECH_HZ), (8.0, BEEP_HZ)]  # (start s, Hz), 2 s each
TOTAL_S = 12.0
BEEP_PROMPTS = ["a beep", "a high pitched whistle", "an alarm tone", "a smoke detector"]
SPEECH_PROMPTS = ["people talking", "a person speaking", "a man talking", "speech"]
BACKGROUND = ("silence", "background noise")
PRE_ROLL_S, POST_ROLL_S = 1.5, 1.0


def separating_label(clap, name: str, prompts: list[str], hit_hz: float, miss_hz: float) -> LabelConfig:
    hit_audio, miss_audio = tone(hit_hz, 1.0, SAMPLE_RATE, AMPLITUDE), tone(miss_hz, 1.0, SAMPLE_RATE, AMPLITUDE)
    gaps = {}
    for prompt in prompts:
        hit, miss = Detector(clap, {name: [prompt]}, BACKGROUND).score([hit_audio, miss_audio])
        gaps[prompt] = (hit[name], miss[name])
    prompt, (hit, miss) = max(gaps.items(), key=lambda item: item[1][0] - item[1][1])
    assert hit - miss > 1e-4, f"the random model separates neither tone for {name}: {gaps}"
    return LabelConfig(name=name, prompts=(prompt,), threshold=(hit + miss) / 2, max_not_heard=1)


@pytest.fixture(scope="module")
def labels(clap) -> tuple[LabelConfig, LabelConfig]:
    return (separating_label(clap, "beep", BEEP_PROMPTS, BEEP_HZ, SPEECH_HZ),
            separating_label(clap, "speech", SPEECH_PROMPTS, SPEECH_HZ, BEEP_HZ))


def replay(tmp_path, clap, labels, skip_if: tuple[str, ...]) -> tuple[list[EventMessage], list[dict], Pipeline]:
    wav = tmp_path / "replay.wav"
    audio = np.zeros(round(TOTAL_S * FILE_RATE), np.float32)
    for start, hz in PARTS:
        audio[round(start * FILE_RATE): round((start + 2) * FILE_RATE)] = tone(hz, 2.0, FILE_RATE, AMPLITUDE)
    soundfile.write(str(wav), audio, FILE_RATE, subtype="FLOAT")
    cfg = MonitorConfig(
        labels=labels,
        buffer=BufferConfig(seconds=10),
        windows=WindowsConfig(length_s=1.0, hop_s=0.5, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(batch_size=4, max_pending=2, background=BACKGROUND),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl")),
        clips=ClipsConfig(enabled=True, dir=str(tmp_path / "clips"), pre_roll_s=PRE_ROLL_S, post_roll_s=POST_ROLL_S,
                          skip_if=skip_if),
    )
    assert not list(cfg.problems())
    sink = Events()
    pipeline = Pipeline(cfg, FileSource(wav, realtime=False), clap, sinks=[sink])
    pipeline.run()
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    return sink.events, lines, pipeline


def test_a_clip_whose_windows_score_speech_is_withheld_and_its_event_says_so(tmp_path, clap, labels):
    events, lines, pipeline = replay(tmp_path, clap, labels, skip_if=("speech",))
    t0 = pipeline.clock.t0
    ends = [e for e in events if e.phase == "end"]
    beeps = [e for e in ends if e.label == "beep"]
    speech = [e for e in ends if e.label == "speech"]
    # A: the lone 1 kHz tone at 2-4 s; B: the 1 kHz tone at 8-10 s (a window straddling the switch may join it)
    assert [round(e.started_at - t0, 3) for e in beeps][0] == 2.0 and len(beeps) == 2
    assert 7.5 <= beeps[1].started_at - t0 <= 8.0 and speech and 5.5 <= speech[0].started_at - t0 <= 6.5
    assert beeps[0].clip is None  # nothing but the beep and silence in its windows
    assert beeps[1].clip == "withheld"  # its pre-roll reaches the 2.5 kHz "speech"
    assert all(e.clip == "withheld" for e in speech)  # speech's own clips, of course
    assert all(e.clip is None for e in events if e.phase != "end")

    clips = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert clips == [f"{beeps[0].event_id}.wav"]
    sink = next(s for s in pipeline.sinks if s.name == "clips")
    assert sink.clip_path(beeps[1].event_id) is None and sink.clip_path(speech[0].event_id) is None
    # with skip_if a clip ends at the newest window checked when its event ended: A ended at 4 s,
    # decided by the window 3.5-4.5 s, so 0.5 s of the 1 s post-roll are written
    audio, rate = soundfile.read(str(tmp_path / "clips" / clips[0]))
    assert rate == SAMPLE_RATE and len(audio) == pytest.approx((4.5 - (2.0 - PRE_ROLL_S)) * SAMPLE_RATE, abs=2)

    # the JSON log and the MQTT payload carry the mark on the end of the withheld events only
    logged = {(line["event_id"], line["phase"]): line for line in lines if line["type"] == "event"}
    assert "clip" not in logged[beeps[0].event_id, "end"] and "clip" not in logged[beeps[1].event_id, "start"]
    assert logged[beeps[1].event_id, "end"]["clip"] == "withheld"
    assert event_payload(beeps[1])["clip"] == "withheld" and event_payload(beeps[0])["clip"] is None
    why = {line["event_id"]: line["because"] for line in lines if line.get("kind") == "clip_withheld"}
    assert why == {e.event_id: ["speech"] for e in [beeps[1], *speech]}
    assert not [line for line in lines if line["type"] == "warning"]


def test_without_skip_if_the_same_replay_keeps_every_clip(tmp_path, clap, labels):
    events, _, _ = replay(tmp_path, clap, labels, skip_if=())
    ends = [e for e in events if e.phase == "end"]
    assert {e.label for e in ends} == {"beep", "speech"} and all(e.clip is None for e in ends)
    assert sorted(p.stem for p in (tmp_path / "clips").iterdir()) == sorted(e.event_id for e in ends)
    first = min(ends, key=lambda e: e.started_at)
    audio, _ = soundfile.read(str(tmp_path / "clips" / f"{first.event_id}.wav"))
    assert len(audio) == pytest.approx((2.0 + PRE_ROLL_S + POST_ROLL_S) * SAMPLE_RATE, abs=2)  # the whole post-roll


def end_event(started_at: float, ended_at: float) -> EventMessage:
    return EventMessage("end", "x-1", "x", 0.9, 0.9, 0.9, started_at, ended_at, ended_at - started_at, -10.0, "test")


def test_guard_withholds_audio_no_window_checked_and_forgets_what_the_ring_cannot_hold():
    guard = ClipGuard({"speech": 0.5}, pre_roll_s=1.0, post_roll_s=1.0, memory_s=10.0)
    for i in range(20):  # 1 s windows every 0.5 s from 100 s; those at 104-106 s were dropped (detector behind)
        start = 100 + i * 0.5
        if not 104 <= start < 106:
            guard.observe(start, start + 1, {"speech": 0.1} if i % 3 else None)  # gated windows count as checked
    assert guard.verdict(end_event(101.0, 102.0)) == ()
    assert guard.verdict(end_event(103.0, 105.0)) == (UNCHECKED,)
    guard.observe(110.0, 111.0, {"speech": 0.7})
    assert guard.verdict(end_event(108.0, 109.5)) == ("speech",)  # the post-roll reaches 110.5
    assert guard.verdict(end_event(107.0, 108.0)) == ()
    [marked] = guard.mark([end_event(109.0, 112.0)])
    assert marked.clip == "withheld"
    assert guard.mark([dataclasses.replace(end_event(109.0, 112.0), phase="start")])[0].clip is None
    # 20 s on, the hole at 104-106 s and the speech at 110 s have left a 10 s ring: a clip cannot
    # hold them, however early its event started
    for i in range(20):
        guard.observe(111.0 + i, 112.0 + i, {"speech": 0.0})
    assert guard.verdict(end_event(103.0, 129.0)) == ()
    assert guard.verdict(end_event(120.0, 129.0)) == ()


def test_skip_if_names_configured_labels(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("labels:\n  - name: speech\n  - name: dog\nclips:\n  enabled: true\n  skip_if: [dog, speach]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.path) == (6, "clips.skip_if[1]")
    assert "unknown label 'speach' (did you mean 'speech'?)" in info.value.message
