"""Reload on SIGHUP (monitor/reload.py): a real `python -m monitor run` with events open takes a
valid new config (a removed label's event ends, a kept one continues, a new label works,
restart-only changes are reported) and rejects an invalid one, keeping the running config; and
the configured sinks are rebuilt (new MQTT topics) between events without losing one."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import soundfile
import yaml

from monitor.config import LabelConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.config_loader import load_config
from monitor.pipeline import Pipeline
from monitor.reload import merged, restart_needed
from monitor.rules import RulesEngine
from monitor.sources import FileSource
from tests.helpers import Events, tone, wait_until
from tests.test_outbox import BURSTS, burst_config, write_bursts

REPO = Path(__file__).resolve().parents[1]


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(path: Path) -> list[tuple[str, str]]:
    return [(line["label"], line["phase"]) for line in log_lines(path) if line["type"] == "event"]


def test_restart_only_settings_are_named_and_kept():
    old = MonitorConfig(labels=(LabelConfig(name="a"),))
    new = dataclasses.replace(old, labels=(LabelConfig(name="b", threshold=0.3),), windows=WindowsConfig(hop_s=0.5),
                              detector=dataclasses.replace(old.detector, model="other", background=("quiet",)))
    assert restart_needed(old, new) == ["windows", "detector.model"]
    running = merged(old, new)
    assert running.labels == new.labels and running.detector.background == ("quiet",)
    assert running.windows == old.windows and running.detector.model == old.detector.model


def test_of_a_source_entry_only_its_labels_reload():
    old = MonitorConfig(labels=(LabelConfig(name="a"), LabelConfig(name="b")),
                        sources=(SourceConfig(type="file", name="x", path="x.wav"), SourceConfig(name="y")))
    new = dataclasses.replace(old, sources=(SourceConfig(type="file", name="x", path="z.wav", labels=("a",)),
                                            SourceConfig(name="y", labels=("b",))))
    assert restart_needed(old, new) == ["sources[0].path"]
    assert merged(old, new).sources == (dataclasses.replace(old.sources[0], labels=("a",)), new.sources[1])
    renamed = dataclasses.replace(new, sources=(new.sources[0], SourceConfig(name="w")))
    assert restart_needed(old, renamed) == ["sources"]
    assert merged(old, renamed).sources == (dataclasses.replace(old.sources[0], labels=("a",)), old.sources[1])


def test_rules_reconfigure_ends_removed_labels_and_keeps_open_events():
    rules = RulesEngine([LabelConfig(name="a", threshold=0.5), LabelConfig(name="b", threshold=0.5)], "test")
    started = rules.process(0.0, 1.0, -10.0, {"a": 0.9, "b": 0.9})
    assert [(m.label, m.phase) for m in started] == [("a", "start"), ("b", "start")]
    ended = rules.reconfigure([LabelConfig(name="a", threshold=0.95, end_threshold=0.8), LabelConfig(name="c")],
                              10.0, None)
    assert [(m.label, m.phase, m.ended_at) for m in ended] == [("b", "end", 1.0)]
    assert rules.states(1.0) == {"a": "event", "c": "idle"}
    assert rules.process(1.0, 2.0, -10.0, {"a": 0.85, "c": 0.1}) == []  # a goes on above its new end threshold
    assert rules.process(2.0, 3.0, -10.0, {"a": 0.5, "c": 0.1}) == []  # below it: not heard once
    (end,) = rules.process(3.0, 4.0, -10.0, {"a": 0.5, "c": 0.1})  # twice (max_not_heard 2): the same event ends
    assert (end.label, end.phase, end.event_id) == ("a", "end", started[0].event_id) and end.started_at == 0.0


def write_config(path: Path, settings: dict) -> None:
    path.write_text(yaml.safe_dump(settings, sort_keys=False))


def open_events_settings(tmp_path: Path, port: int, node_id: str) -> dict:
    """A config whose every scored window is a hit for beep and tone: their events open at once
    and stay open on a 2-minute real-time tone; MQTT to the broker at `port` as `node_id`."""
    soundfile.write(str(tmp_path / "tone.wav"), tone(1000.0, 120.0, 16000), 16000)
    return {
        "source": {"type": "file", "path": str(tmp_path / "tone.wav"), "realtime": True},
        "windows": {"length_s": 0.5, "hop_s": 0.25},
        "detector": {"background": ["silence"]},
        "labels": [{"name": "beep", "threshold": 0.001}, {"name": "tone", "threshold": 0.001}],
        "log": {"path": str(tmp_path / "monitor.jsonl")},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "node_id": node_id,
                 "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
    }


def test_sighup_with_events_open_valid_and_invalid_configs(tmp_path, tiny_checkpoint, mosquitto_broker, mqtt_recorder):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/reload/#"])
    log_path = tmp_path / "monitor.jsonl"
    settings = open_events_settings(tmp_path, broker.port, "reload")
    config = tmp_path / "monitor.yaml"
    write_config(config, settings)
    monitor = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                                str(tiny_checkpoint)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: set(events(log_path)) == {("beep", "start"), ("tone", "start")}, timeout=90)

        # invalid: rejected with file, field and line; the running config goes on, events stay open
        broken = json.loads(json.dumps(settings))
        broken["labels"][1]["threshold"] = 2
        write_config(config, broken)
        monitor.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any(line.get("kind") == "reload_rejected" for line in log_lines(log_path)), 10)
        (rejected,) = [line for line in log_lines(log_path) if line.get("kind") == "reload_rejected"]
        assert f"{config}:" in rejected["message"] and "labels[1].threshold: must be in (0, 1], got 2" in rejected["message"]
        assert monitor.poll() is None and set(events(log_path)) == {("beep", "start"), ("tone", "start")}

        # valid: tone removed (its event ends), beep kept (its event goes on), whistle added, windows changed
        valid = json.loads(json.dumps(settings))
        valid["labels"] = [{"name": "beep", "threshold": 0.002}, {"name": "whistle", "threshold": 0.001}]
        valid["windows"]["hop_s"] = 0.5
        write_config(config, valid)
        monitor.send_signal(signal.SIGHUP)
        assert wait_until(lambda: ("whistle", "start") in events(log_path), timeout=20)
        lines = log_lines(log_path)
        kinds = [line.get("kind") for line in lines]
        assert kinds.count("reloaded") == 1
        (later,) = [line for line in lines if line.get("kind") == "reload_needs_restart"]
        assert later["fields"] == ["windows"] and "restart" in later["message"]
        assert events(log_path) == [("beep", "start"), ("tone", "start"), ("tone", "end"), ("whistle", "start")]
        assert wait_until(lambda: any(json.loads(p)["label"] == "tone" and json.loads(p)["phase"] == "end"
                                      for p in recorder.payloads("sound_monitor/reload/event")), 10)
    finally:
        monitor.send_signal(signal.SIGTERM)
        _, stderr = monitor.communicate(timeout=60)
    assert monitor.returncode == 0, stderr
    final = events(log_path)
    assert final.count(("beep", "end")) == 1 and final.count(("whistle", "end")) == 1  # closed at shutdown
    assert final.count(("beep", "start")) == 1  # beep's event ran through the reload
    assert load_config(config).labels[1].name == "whistle"


def test_reload_rebuilds_the_mqtt_sink_between_events(tmp_path, clap, mosquitto_broker, mqtt_recorder):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/#"])
    write_bursts(tmp_path / "bursts.wav", tail_s=1)
    cfg = load_config(burst_config(tmp_path, clap, broker.port, tmp_path / "state"))
    seen = Events()  # an application's sink next to the configured ones: it stays through reloads
    pipeline = Pipeline(cfg, FileSource(tmp_path / "bursts.wav", realtime=True), clap, sinks=[seen])
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    try:
        assert wait_until(lambda: [e.phase for e in seen.events][:4] == ["start", "end", "start", "end"], 30)
        pipeline.reload(dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, node_id="renamed")))
    finally:
        runner.join(timeout=60)
    assert not runner.is_alive()
    messages = [e for e in seen.events if e.phase != "update"]
    assert len(messages) == 2 * BURSTS

    def keys(node: str) -> list[tuple[str, str]]:
        payloads = recorder.payloads(f"sound_monitor/{node}/event")
        return list(dict.fromkeys((p["id"], p["phase"]) for p in map(json.loads, payloads)))

    assert wait_until(lambda: len(keys("crash")) + len(keys("renamed")) == 2 * BURSTS, 10)
    before, after = keys("crash"), keys("renamed")
    assert before + after == [(e.event_id, e.phase) for e in messages]  # all, in order, each under one node
    assert len(before) >= 4 and len(after) >= 2  # the switch came between two events
    assert recorder.payloads("sound_monitor/crash/availability")[-1] == "offline"  # the old sink said goodbye
    assert "online" in recorder.payloads("sound_monitor/renamed/availability")


def source_events(path: Path) -> list[tuple[str, str, str]]:
    return [(line["source"], line["label"], line["phase"]) for line in log_lines(path) if line["type"] == "event"]


def test_sighup_with_several_sources(tmp_path, tiny_checkpoint, mosquitto_broker, mqtt_recorder):
    """Two sources (kitchen: beep and tone, hall: beep) with events open: an invalid config is
    rejected; a valid one reaches each source with its own labels (kitchen's tone and hall's beep
    end, also over their MQTT nodes; kitchen's beep goes on; whistle fires on both), an added
    source and a changed hop are reported as needing a restart."""
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/#"])
    log_path = tmp_path / "monitor.jsonl"
    settings = open_events_settings(tmp_path, broker.port, "house")
    source = settings.pop("source")
    settings["sources"] = [{"name": "kitchen", **source, "labels": ["beep", "tone"]},
                           {"name": "hall", **source, "labels": ["beep"]}]
    config = tmp_path / "monitor.yaml"
    write_config(config, settings)
    monitor = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                                str(tiny_checkpoint)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    opened = {("kitchen", "beep", "start"), ("kitchen", "tone", "start"), ("hall", "beep", "start")}
    try:
        assert wait_until(lambda: set(source_events(log_path)) == opened, timeout=90)

        broken = json.loads(json.dumps(settings))
        broken["sources"][1]["labels"] = ["bep"]
        write_config(config, broken)
        monitor.send_signal(signal.SIGHUP)
        assert wait_until(lambda: any(line.get("kind") == "reload_rejected" for line in log_lines(log_path)), 10)
        (rejected,) = [line for line in log_lines(log_path) if line.get("kind") == "reload_rejected"]
        assert f"{config}:" in rejected["message"] and "sources[1].labels[0]: unknown label 'bep'" in rejected["message"]
        assert monitor.poll() is None and set(source_events(log_path)) == opened

        valid = json.loads(json.dumps(settings))
        valid["labels"] = [{"name": "beep", "threshold": 0.002}, {"name": "whistle", "threshold": 0.001}]
        valid["sources"][0]["labels"] = ["beep", "whistle"]
        valid["sources"][1]["labels"] = ["whistle"]
        valid["sources"].append({"name": "garage", **source})
        valid["windows"]["hop_s"] = 0.5
        write_config(config, valid)
        monitor.send_signal(signal.SIGHUP)
        assert wait_until(lambda: {("kitchen", "whistle", "start"), ("hall", "whistle", "start")}
                          <= set(source_events(log_path)), timeout=20)
        lines = log_lines(log_path)
        reloaded = {line["source"]: line["labels"] for line in lines if line.get("kind") == "reloaded"}
        assert reloaded == {"kitchen": ["beep", "whistle"], "hall": ["whistle"]}  # each source its own labels
        (later,) = [line for line in lines if line.get("kind") == "reload_needs_restart"]
        assert later["fields"] == ["windows", "sources"]
        after = source_events(log_path)[3:]
        for src, removed in (("kitchen", "tone"), ("hall", "beep")):  # each source applies it at its next window
            mine = [event for event in after if event[0] == src]
            assert mine.index((src, removed, "end")) < mine.index((src, "whistle", "start")), mine
        assert not any(line.get("source") == "garage" for line in lines)

        def ended_over_mqtt(node: str, label: str) -> bool:
            return any((p["label"], p["phase"]) == (label, "end")
                       for p in map(json.loads, recorder.payloads(f"sound_monitor/{node}/event")))

        assert wait_until(lambda: ended_over_mqtt("house_kitchen", "tone") and ended_over_mqtt("house_hall", "beep"), 10)
    finally:
        monitor.send_signal(signal.SIGTERM)
        _, stderr = monitor.communicate(timeout=60)
    assert monitor.returncode == 0, stderr
    final = source_events(log_path)
    assert final.count(("kitchen", "beep", "start")) == 1 and final.count(("kitchen", "beep", "end")) == 1
    assert final.count(("hall", "beep", "start")) == 1  # hall's beep ended at the reload, never again
    assert {("kitchen", "whistle", "end"), ("hall", "whistle", "end")} <= set(final)  # closed at shutdown


def test_reload_moves_every_source_and_the_bridge_to_a_new_mqtt_node(tmp_path, clap, mosquitto_broker, mqtt_recorder):
    """Several sources, mqtt.node_id changed between events: the bridge and each source's node
    move (old ones say offline, new ones online), every event once, in order, old nodes then new."""
    from monitor.multi import MultiPipeline
    from tests.fixtures_broker import sink_config
    from tests.test_multi_source import bursts_wav, config

    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/#"])
    sources = (SourceConfig(type="file", name="kitchen", path=bursts_wav(tmp_path / "a.wav", [1.0, 6.0, 9.0])),
               SourceConfig(type="file", name="hall", path=bursts_wav(tmp_path / "b.wav", [1.5, 6.5, 9.5])))
    cfg = dataclasses.replace(config(tmp_path, sources), mqtt=sink_config(broker, node_id="house"))
    seen = Events()
    multi = MultiPipeline(cfg, clap, sinks=[seen])
    runner = threading.Thread(target=multi.run)
    runner.start()
    try:
        # both sources' first beep and hum events over: then the new node
        assert wait_until(lambda: sum(e.phase == "end" for e in seen.events) == 4, 30)
        multi.reload(dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, node_id="home")))
    finally:
        runner.join(timeout=60)
    assert not runner.is_alive()
    for source in ("kitchen", "hall"):
        messages = [(e.event_id, e.phase) for e in seen.events if e.source == source and e.phase != "update"]
        assert len(messages) == 12  # 3 bursts x beep and hum, start and end

        def keys(node: str) -> list[tuple[str, str]]:
            payloads = map(json.loads, recorder.payloads(f"sound_monitor/{node}_{source}/event"))
            return list(dict.fromkeys((p["id"], p["phase"]) for p in payloads))

        assert wait_until(lambda: len(keys("house")) + len(keys("home")) == 12, 10)
        assert keys("house") + keys("home") == messages and len(keys("house")) == 4 and len(keys("home")) == 8
    for node in ("house", "house_kitchen", "house_hall"):  # the old nodes said goodbye when they closed
        assert "online" in recorder.payloads(f"sound_monitor/{node}/availability")
        assert recorder.payloads(f"sound_monitor/{node}/availability")[-1] == "offline"
    for node in ("home", "home_kitchen", "home_hall"):
        assert recorder.payloads(f"sound_monitor/{node}/availability")[:1] == ["online"]
