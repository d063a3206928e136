"""Past one machine: two `sound-monitor run` processes (one a group of two sources, one a single
source) with distinct node ids on one real Mosquitto broker. Each node's availability, Home
Assistant discovery and events arrive under its own topics and devices, nothing of one is
cleared or overwritten by the other; killing one (SIGKILL) leaves its last will `offline` while
the other stays online and goes on reporting."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import soundfile
import yaml

from tests.helpers import tone, wait_until

REPO = Path(__file__).resolve().parents[1]


def monitor(tmp_path: Path, name: str, port: int, sources: dict, checkpoint: Path) -> subprocess.Popen:
    """`python -m monitor run` as node `name`, every scored window a beep (events open at once)."""
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        **sources,
        "windows": {"length_s": 0.5, "hop_s": 0.25},
        "detector": {"background": ["silence"]},
        "labels": [{"name": "beep", "threshold": 0.001}],
        "log": {"path": str(tmp_path / f"{name}.jsonl"), "level_interval_s": 0.5},  # status over MQTT too
        "state_dir": str(tmp_path / f"{name}-state"),
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "node_id": name, "keepalive": 5,
                 "level_interval_s": 0.5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
                 "discovery": {"enabled": True}},
    }, sort_keys=False))
    return subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                             str(checkpoint)], cwd=REPO, stderr=subprocess.PIPE, text=True)


def test_two_monitors_on_one_broker(tmp_path, tiny_checkpoint, mosquitto_broker, mqtt_recorder):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/#", "homeassistant/#"])
    soundfile.write(str(tmp_path / "tone.wav"), tone(1000.0, 120.0, 16000), 16000)
    file = {"type": "file", "path": str(tmp_path / "tone.wav"), "realtime": True}
    upstairs = monitor(tmp_path, "upstairs", broker.port,
                       {"sources": [{"name": "bedroom", **file}, {"name": "study", **file}]}, tiny_checkpoint)
    garage = monitor(tmp_path, "garage", broker.port, {"source": {**file, "name": "garage"}}, tiny_checkpoint)
    nodes = ("upstairs", "upstairs_bedroom", "upstairs_study", "garage")

    def availability(node: str) -> list[str]:
        return recorder.payloads(f"sound_monitor/{node}/availability")

    def events(node: str) -> list[tuple[str, str, str]]:
        payloads = recorder.payloads(f"sound_monitor/{node}/event")
        return [(e["source"], e["label"], e["phase"]) for e in map(json.loads, payloads)]

    try:
        assert wait_until(lambda: all(availability(node)[-1:] == ["online"] for node in nodes), 90)
        assert wait_until(lambda: events("upstairs_bedroom") and events("upstairs_study") and events("garage"), 60)
        assert events("upstairs_bedroom")[0] == ("bedroom", "beep", "start")
        assert events("upstairs_study")[0] == ("study", "beep", "start")
        assert events("garage")[0] == ("garage", "beep", "start")

        # discovery: each node's configs under its own node id, one device per node, no id shared
        configs = {topic: json.loads(payload) for topic, payload, _ in list(recorder.messages)
                   if topic.startswith("homeassistant/") and topic.endswith("/config") and payload}
        by_node: dict[str, set[str]] = {}
        for topic, entity in configs.items():
            node = topic.split("/")[2]
            assert node in nodes, topic
            by_node.setdefault(node, set()).add(entity["device"]["identifiers"][0])
            assert entity["availability_topic"] == f"sound_monitor/{node}/availability"  # its own last will
        assert by_node == {"upstairs": {"clap_mlx_upstairs"}, "upstairs_bedroom": {"clap_mlx_upstairs_bedroom"},
                           "upstairs_study": {"clap_mlx_upstairs_study"}, "garage": {"clap_mlx_garage"}}
        unique_ids = [entity["unique_id"] for entity in configs.values()]
        assert len(unique_ids) == len(set(unique_ids))
        assert configs["homeassistant/binary_sensor/upstairs_bedroom/beep/config"]["device"]["via_device"] == \
            "clap_mlx_upstairs"
        assert "via_device" not in configs["homeassistant/binary_sensor/garage/beep/config"]["device"]
        cleared = [topic for topic, payload, _ in list(recorder.messages) if topic.startswith("homeassistant/")
                   and topic.endswith("/config") and not payload]
        assert cleared == []  # neither monitor removed an entity of the other

        garage.send_signal(signal.SIGKILL)
        garage.wait(10)
        assert wait_until(lambda: availability("garage")[-1:] == ["offline"], 15)  # the broker sent its last will
        status_before = len(recorder.payloads("sound_monitor/upstairs_bedroom/status"))
        assert wait_until(lambda: len(recorder.payloads("sound_monitor/upstairs_bedroom/status")) >= status_before + 3,
                          15)
        assert all(availability(node)[-1] == "online" for node in nodes[:3]) and upstairs.poll() is None
    finally:
        for process in (upstairs, garage):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        _, stderr = upstairs.communicate(timeout=60)
        garage.communicate(timeout=60)
    assert upstairs.returncode == 0, stderr
    assert all(availability(node)[-1] == "offline" for node in nodes)
    assert events("upstairs_bedroom")[-1] == ("bedroom", "beep", "end")  # closed at its shutdown
    assert ("garage", "beep", "end") not in events("garage")  # killed: no end, its outbox keeps what was queued
