"""Several sources in one process (`sources:`): one shared model, per-source labels, isolation."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.config import (ClipsConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig,
                            WindowsConfig)
from monitor.config_loader import ConfigError, load_config
from monitor.multi import MultiPipeline
from tests.helpers import Events, tone, wait_until
from tests.test_ffmpeg_source import FAST_START, SINE, StreamServer

GATE_DBFS = -10.5  # only windows full of tone are scored: a 1 s burst on the hop grid is one 1 s window
TOTAL_S = 11.0


def bursts_wav(path, starts: list[float]) -> str:
    audio = np.zeros(round(TOTAL_S * SAMPLE_RATE), np.float32)
    for start in starts:
        audio[round(start * SAMPLE_RATE): round((start + 1) * SAMPLE_RATE)] = tone(1000.0, 1.0)
    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="FLOAT")
    return str(path)


def config(tmp_path, sources: tuple[SourceConfig, ...]) -> MonitorConfig:
    return MonitorConfig(
        # every scored window is a hit for both labels
        labels=(LabelConfig(name="beep", threshold=0.001, max_not_heard=1),
                LabelConfig(name="hum", threshold=0.001, max_not_heard=1)),
        sources=sources,
        windows=WindowsConfig(length_s=1.0, hop_s=0.5, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(batch_size=4, max_pending=8, background=("silence",)),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl"), level_interval_s=1.0),
        clips=ClipsConfig(enabled=True, dir=str(tmp_path / "clips"), pre_roll_s=0.5, post_roll_s=0.5),
    )


def run_until(multi: MultiPipeline, done) -> None:
    runner = threading.Thread(target=multi.run)
    runner.start()
    try:
        assert wait_until(done, 60), "the sources did not get there"
    finally:
        multi.stop()
        runner.join(60)
    assert not runner.is_alive()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program (apt install ffmpeg)")
def test_three_sources_one_dies_the_others_keep_their_events_and_times(tmp_path, clap):
    server = StreamServer(SINE)
    server.start()
    a, b = [2.0, 5.0, 8.0], [3.0, 6.5, 9.5]
    sources = (
        SourceConfig(type="file", name="kitchen", path=bursts_wav(tmp_path / "a.wav", a), labels=("beep",)),
        SourceConfig(type="file", name="hall", path=bursts_wav(tmp_path / "b.wav", b)),  # beep and hum
        SourceConfig(type="ffmpeg", name="cam", url=server.url, args=FAST_START, labels=("hum",), min_dbfs=-30.0),
    )
    events = Events()
    multi = MultiPipeline(config(tmp_path, sources), clap, sinks=[events])

    def files_done() -> bool:
        status = multi.status()["sources"]
        return all(status.get(name, {}).get("source", {}).get("state") == "ended" for name in ("kitchen", "hall"))

    try:
        runner = threading.Thread(target=multi.run)
        runner.start()
        # the stream's first event, then it dies for good while the files play on
        assert wait_until(lambda: [e for e in events.events if e.source == "cam"], 30), "no event from the stream"
        server.kill()
        died_at = time.time()
        assert wait_until(files_done, 60), "the file sources did not play to the end"
    finally:
        multi.stop()
        runner.join(60)
        server.kill()
    assert not runner.is_alive()

    def timeline(name: str) -> list[tuple[str, str, float, float]]:
        t0 = multi.pipelines[name].clock.t0
        return [(e.label, e.phase, round(e.started_at - t0, 3), round(e.ended_at - t0, 3))
                for e in events.events if e.source == name and e.phase == "end"]

    # each file's events exactly where its bursts are, the labels it watches only
    assert timeline("kitchen") == [("beep", "end", s, s + 1) for s in a]
    assert sorted(timeline("hall"), key=lambda e: (e[2], e[0])) == [(label, "end", s, s + 1)
                                                                    for s in b for label in ("beep", "hum")]
    assert {e.label for e in events.events if e.source == "cam"} == {"hum"}
    # the file events after the stream died are all there (8 s and 9.5 s into 11 s files)
    assert max(e.ended_at for e in events.events if e.source != "cam" and e.phase == "end") > died_at

    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    lost = [line for line in lines if line.get("kind") == "stream_lost"]
    assert lost and all(line["source"] == "cam" for line in lost)
    assert not [line for line in lines if line["type"] == "warning" and line.get("source") != "cam"
                and line.get("kind") != "windows_dropped"]
    logged = [(line["source"], line["event_id"], line["phase"]) for line in lines if line["type"] == "event"]
    assert logged == [(e.source, e.event_id, e.phase) for e in events.events]  # one log for all sources
    levels = {line["source"] for line in lines if line["type"] == "level"}
    assert levels == {"kitchen", "hall", "cam"}
    # clips per source, in a folder of its own
    for name, starts in (("kitchen", a), ("hall", b)):
        assert len(list((tmp_path / "clips" / name).glob("*.wav"))) == len(starts) * (1 if name == "kitchen" else 2)
    status = multi.status()["sources"]
    assert status["kitchen"]["windows"]["scored"] == 3 and set(status["kitchen"]["labels"]) == {"beep"}
    assert status["cam"]["source"]["state"] == "stopped"


def test_a_source_that_cannot_open_is_retried_and_joins_when_it_can(tmp_path, clap):
    late = tmp_path / "late.wav"
    sources = (
        SourceConfig(type="file", name="early", path=bursts_wav(tmp_path / "early.wav", [2.0])),
        SourceConfig(type="file", name="late", path=str(late)),
    )
    events = Events()
    multi = MultiPipeline(config(tmp_path, sources), clap, sinks=[events], retry_min_s=0.2, retry_max_s=0.5)
    timer = threading.Timer(1.5, lambda: bursts_wav(late, [1.0]))  # the file appears while the other plays
    timer.start()
    run_until(multi, lambda: len([e for e in events.events if e.phase == "end"]) == 4)
    timer.join()
    ends = {(e.source, e.label) for e in events.events if e.phase == "end"}
    assert ends == {("early", "beep"), ("early", "hum"), ("late", "beep"), ("late", "hum")}
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    failed = [line for line in lines if line.get("kind") == "source_failed"]
    assert len(failed) >= 2 and all(line["source"] == "late" and "late.wav" in line["error"] for line in failed)


@pytest.mark.parametrize("text, line, field, words", [
    ("sources:\n  - {type: file, name: a, path: x.wav}\n  - {type: file, name: a, path: y.wav}\n", 3,
     "sources[1].name", ["duplicate source name 'a'"]),
    ("sources:\n  - {type: file, path: x.wav}\n", 2, "sources[0].name", ["required in `sources`"]),
    ("sources:\n  - type: file\n    name: a\n    path: x.wav\n    labels: [beep, bepe]\n", 5, "sources[0].labels[1]",
     ["unknown label 'bepe'"]),
    ("sources:\n  - {type: file, name: a, path: x.wav, labels: [hum]}\n", 2, "sources[0].labels",
     ["'hum' depends on 'beep'"]),
    ("source: {type: file, path: z.wav}\nsources:\n  - {type: file, name: a, path: x.wav}\n", 1, "source",
     ["not both"]),
    ("sources:\n  - {type: ffmpeg, name: cam}\n", 2, "sources[0].url", ["required when type is 'ffmpeg'"]),
    ("sources:\n  - {type: file, name: a, path: x.wav, labels: [beep]}\nclips: {enabled: true, skip_if: [hum]}\n", 2,
     "sources[0].labels", ["watch 'hum' too: clips.skip_if"]),
])
def test_bad_sources_name_the_field_and_line(tmp_path, text, line, field, words):
    path = tmp_path / "m.yaml"
    path.write_text(text + "labels:\n  - name: beep\n  - name: hum\n    require: [beep]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.path) == (line, field)
    for word in words:
        assert word in info.value.message


def test_each_source_is_an_mqtt_node_and_ha_device_under_the_bridge(tmp_path, clap, mosquitto_broker, mqtt_recorder):
    from monitor.config import DiscoveryConfig
    from tests.fixtures_broker import sink_config

    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/#", "homeassistant/#"])
    sources = (
        SourceConfig(type="file", name="kitchen", path=bursts_wav(tmp_path / "a.wav", [2.0]), labels=("beep",),
                     realtime=False),
        SourceConfig(type="file", name="hall", path=bursts_wav(tmp_path / "b.wav", [3.0]), realtime=False),
    )
    mqtt = sink_config(broker, node_id="house", discovery=DiscoveryConfig(enabled=True, device_name="House"))
    cfg = dataclasses.replace(config(tmp_path, sources), mqtt=mqtt)
    assert not list(cfg.problems())
    MultiPipeline(cfg, clap).run()  # the files end: run returns

    root = "sound_monitor/house"
    kitchen = [json.loads(p) for p in recorder.payloads(f"{root}_kitchen/event")]
    hall = [json.loads(p) for p in recorder.payloads(f"{root}_hall/event")]
    assert [(e["label"], e["phase"], e["source"]) for e in kitchen] == [("beep", "start", "kitchen"),
                                                                        ("beep", "end", "kitchen")]
    assert sorted((e["label"], e["phase"]) for e in hall) == [("beep", "end"), ("beep", "start"),
                                                              ("hum", "end"), ("hum", "start")]
    assert recorder.payloads(f"{root}_kitchen/beep/state")[-2:] == ["ON", "OFF"]
    assert recorder.payloads(f"{root}_kitchen/hum/state") == []  # kitchen does not watch hum
    for node in ("house", "house_kitchen", "house_hall"):  # each node online while running, offline after
        assert recorder.payloads(f"sound_monitor/{node}/availability")[-1] == "offline"
        assert "online" in recorder.payloads(f"sound_monitor/{node}/availability")

    def discovery(topic: str) -> dict:
        payloads = [p for p in recorder.payloads(topic) if p]
        assert payloads, f"no discovery config on {topic}"
        return json.loads(payloads[-1])

    bridge = discovery("homeassistant/binary_sensor/house/running/config")
    assert bridge["device"]["identifiers"] == ["clap_mlx_house"] and "via_device" not in bridge["device"]
    assert bridge["state_topic"] == f"{root}/availability" and bridge["unique_id"] == "house_running"
    beep = discovery("homeassistant/binary_sensor/house_kitchen/beep/config")
    # ids derive from the configured names only: the same entities after a restart
    assert (beep["unique_id"], beep["device"]["identifiers"], beep["device"]["via_device"], beep["device"]["name"]) == (
        "house_kitchen_beep_sound", ["clap_mlx_house_kitchen"], "clap_mlx_house", "House kitchen")
    assert discovery("homeassistant/event/house_hall/detection/config")["event_types"] == ["beep", "hum"]
    assert not recorder.payloads("homeassistant/binary_sensor/house_kitchen/hum/config")


def test_source_names_must_stay_distinct_as_mqtt_nodes():
    sources = (SourceConfig(type="file", name="Hall-1", path="a.wav"), SourceConfig(type="file", name="hall_1", path="b.wav"))
    cfg = MonitorConfig(labels=(LabelConfig(name="beep"),), sources=sources)
    assert not list(cfg.problems())
    with_mqtt = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, enabled=True))
    assert list(with_mqtt.problems()) == [("sources[1].name", "'Hall-1' and 'hall_1' map to the same MQTT node")]


def test_shared_detector_serves_every_source_in_turn_with_its_own_labels(clap):
    """A source with a backlog gets one window per turn like the others: a source with little
    to score waits at most for the batch it arrives in, never behind another's backlog."""
    from monitor.detector import Detector, WindowQueue
    from monitor.scheduler import SharedDetector
    from monitor.windower import Window

    detector = Detector(clap, {"beep": ["a beep"], "hum": ["a low hum"]}, ("silence",))
    calls: list[int] = []  # windows per model call
    score = detector.score
    detector.score = lambda waveforms: calls.append(len(waveforms)) or score(waveforms)
    shared = SharedDetector(detector, batch_size=4)
    backlog = {"a": 12, "b": 2, "c": 1}
    got: dict[str, list] = {name: [] for name in backlog}
    order: list[str] = []
    labels = {"a": ["beep", "hum"], "b": ["hum"], "c": ["beep"]}
    queues = {}
    for name, count in backlog.items():
        queues[name] = WindowQueue(100)
        shared.lane(queues[name], lambda detections, name=name: (got[name].extend(detections),
                                                                  order.extend([name] * len(detections))), labels[name])
        for i in range(count):
            queues[name].put(Window(i * SAMPLE_RATE, tone(500.0 + 100 * i, 1.0), -9.0, gated=False))
        queues[name].close()
    shared.stop()
    shared.start_once()
    shared.join(60)
    assert not shared.is_alive() and shared.error is None
    assert calls == [4, 4, 4, 3]  # 15 windows, full batches
    assert sorted(order[:4]) == ["a", "a", "b", "c"] and order[4:8].count("b") == 1  # b and c served first
    for name, detections in got.items():
        assert [d.window.start_sample for d in detections] == [i * SAMPLE_RATE for i in range(backlog[name])]
        assert all(set(d.scores) == set(labels[name]) and d.inference_ms > 0 for d in detections)


def test_cli_runs_a_sources_config_to_the_end(tmp_path, tiny_checkpoint):
    import subprocess
    import sys
    from pathlib import Path

    a, b = bursts_wav(tmp_path / "a.wav", [2.0]), bursts_wav(tmp_path / "b.wav", [4.0, 7.0])
    (tmp_path / "run.yaml").write_text(
        "sources:\n"
        f"  - {{name: a, type: file, path: {a}, realtime: false, labels: [beep]}}\n"
        f"  - {{name: b, type: file, path: {b}, realtime: false}}\n"
        "windows: {length_s: 1, hop_s: 0.5, min_dbfs: -10.5}\n"
        "labels: [{name: beep, threshold: 0.001, max_not_heard: 1}, {name: hum, threshold: 0.001, max_not_heard: 1}]\n"
        f"log: {{path: {tmp_path / 'run.jsonl'}}}\n"
    )
    run = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(tmp_path / "run.yaml"),
                          "--model", str(tiny_checkpoint)], cwd=Path(__file__).parents[1], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    ends = sorted((line["source"], line["label"]) for line in lines if line["type"] == "event" and line["phase"] == "end")
    assert ends == [("a", "beep"), ("b", "beep"), ("b", "beep"), ("b", "hum"), ("b", "hum")]
