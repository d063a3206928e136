"""Home Assistant MQTT discovery, checked on a real Mosquitto broker.

HA itself is not run; its templates are rendered with jinja2 (the engine HA uses) against the
payloads the sink really published, with HA's `value_json` variable and `to_json` filter."""

from __future__ import annotations

import json
import subprocess
import time

import jinja2

from monitor.config import DiscoveryConfig
from tests.fixtures_broker import sink_config
from tests.helpers import wait_until
from tests.test_mqtt import ROOT, level_report, make_event

LABELS = ["dog bark", "siren"]
PREFIX = "homeassistant"
CONFIG_TOPICS = {
    f"{PREFIX}/binary_sensor/test_node/dog_bark/config",
    f"{PREFIX}/binary_sensor/test_node/siren/config",
    f"{PREFIX}/sensor/test_node/level/config",
    f"{PREFIX}/event/test_node/detection/config",
}


def discovery_cfg(broker, **discovery):
    return sink_config(broker, discovery=DiscoveryConfig(enabled=True, device_name="Kitchen", **discovery))


def render_ha_template(template: str, payload: str) -> str:
    env = jinja2.Environment()
    env.filters["to_json"] = json.dumps
    return env.from_string(template).render(value_json=json.loads(payload), value=payload)


def latest_configs(recorder) -> dict[str, dict]:
    configs = {}
    for topic, payload, _ in list(recorder.messages):
        if topic.endswith("/config") and payload:
            configs[topic] = json.loads(payload)
    return configs


def retained_configs(mqtt_recorder, broker) -> dict[str, str]:
    """Config topics a newly subscribing Home Assistant would receive (retained, non-empty)."""
    fresh = mqtt_recorder(broker, [f"{PREFIX}/+/test_node/+/config"])
    time.sleep(0.3)  # retained messages arrive right after SUBACK
    return {topic: payload for topic, payload, retained in fresh.messages if retained}


def test_discovery_configs_describe_the_published_topics(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{PREFIX}/#", f"{ROOT}/#"])
    sink = mqtt_sink(discovery_cfg(broker), LABELS)
    assert wait_until(lambda: set(latest_configs(recorder)) == CONFIG_TOPICS)
    configs = latest_configs(recorder)

    assert len({c["unique_id"] for c in configs.values()}) == len(CONFIG_TOPICS)
    for config in configs.values():
        assert config["device"]["identifiers"] == ["clap_mlx_test_node"]
        assert (config["device"]["name"], config["device"]["model"]) == ("Kitchen", "clap-mlx sound monitor")
        assert config["device"]["sw_version"] and config["origin"]["name"] == "clap-mlx"
        assert config["availability_topic"] == f"{ROOT}/availability"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert recorder.payloads(f"{ROOT}/availability")[-1] == "online"

    siren = configs[f"{PREFIX}/binary_sensor/test_node/siren/config"]
    assert (siren["device_class"], siren["payload_on"], siren["payload_off"]) == ("sound", "ON", "OFF")
    sink.handle_event(make_event(3, "start", label="siren"))
    sink.handle_event(make_event(3, "end", label="siren"))
    assert wait_until(lambda: recorder.payloads(siren["state_topic"])[-2:] == ["ON", "OFF"])

    event_entity = configs[f"{PREFIX}/event/test_node/detection/config"]
    assert event_entity["event_types"] == LABELS
    assert wait_until(lambda: len(recorder.payloads(event_entity["state_topic"])) == 2)
    start, end = recorder.payloads(event_entity["state_topic"])
    fired = json.loads(render_ha_template(event_entity["value_template"], start))
    assert (fired["event_type"], fired["event_id"]) == ("siren", "ev0003")
    assert render_ha_template(event_entity["value_template"], end).strip() == ""  # HA ignores empty

    level = configs[f"{PREFIX}/sensor/test_node/level/config"]
    assert (level["unit_of_measurement"], level["state_class"]) == ("dBFS", "measurement")
    sink.handle_level(level_report(-27.25))
    assert wait_until(lambda: recorder.payloads(level["state_topic"]))
    assert float(render_ha_template(level["value_template"], recorder.payloads(level["state_topic"])[0])) == -27.25

    assert set(retained_configs(mqtt_recorder, broker)) == CONFIG_TOPICS


def test_discovery_resent_when_home_assistant_comes_online(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{PREFIX}/+/test_node/+/config"])
    mqtt_sink(discovery_cfg(broker), LABELS)
    assert wait_until(lambda: set(latest_configs(recorder)) == CONFIG_TOPICS)
    recorder.clear()
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", f"{PREFIX}/status", "-m", "offline"], check=True)
    time.sleep(0.3)
    assert recorder.messages == []  # only `online` triggers a re-send
    subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-t", f"{PREFIX}/status", "-m", "online"], check=True)
    assert wait_until(lambda: set(latest_configs(recorder)) == CONFIG_TOPICS)


def test_dropped_label_config_is_removed(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{PREFIX}/+/test_node/+/config"])
    first = mqtt_sink(discovery_cfg(broker), LABELS)
    assert wait_until(lambda: set(latest_configs(recorder)) == CONFIG_TOPICS)
    first.close()
    assert set(retained_configs(mqtt_recorder, broker)) == CONFIG_TOPICS

    mqtt_sink(discovery_cfg(broker), ["dog bark"])
    assert wait_until(lambda: recorder.payloads(f"{PREFIX}/binary_sensor/test_node/siren/config")[-1:] == [""])
    assert set(retained_configs(mqtt_recorder, broker)) == CONFIG_TOPICS - {
        f"{PREFIX}/binary_sensor/test_node/siren/config"}
