"""Home Assistant MQTT discovery: the retained config messages that describe one monitor.

One device per monitor (node), with
- a `binary_sensor` (device_class `sound`) per watched label, fed by `<root>/<label>/state`,
- a `sensor` for the sound level in dBFS, read from the status JSON,
- an `event` entity whose event types are the labels, fired on each event start.
With `sources:` each source is such a node and device, reached `via_device` the process's
own node: a bridge device without labels whose one entity says whether the monitor runs.
Every entity is tied to the availability (last-will) topic. Pure functions only: the MQTT sink
publishes what these return.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from ..config import DiscoveryConfig, slugify

MODEL = "clap-mlx sound monitor"
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"
PAYLOAD_ONLINE = "online"
PAYLOAD_OFFLINE = "offline"

# The `event` entity fires only on event starts: HA ignores a template that renders empty.
EVENT_VALUE_TEMPLATE = (
    "{% if value_json.phase == 'start' %}"
    "{{ {'event_type': value_json.label, 'event_id': value_json.id, 'score': value_json.score,"
    " 'level_dbfs': value_json.level_dbfs, 'started_at': value_json.started_at} | to_json }}"
    "{% endif %}"
)
LEVEL_VALUE_TEMPLATE = "{{ value_json.level_dbfs }}"


def software_version() -> str:
    try:
        return metadata.version("clap-mlx")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "dev"


@dataclass(frozen=True)
class Topics:
    """The sink's own topics, all under `<base_topic>/<node_id>/`."""

    root: str

    @property
    def event(self) -> str:
        return f"{self.root}/event"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def availability(self) -> str:
        return f"{self.root}/availability"

    def state(self, label: str) -> str:
        return f"{self.root}/{slugify(label)}/state"


def birth_topic(cfg: DiscoveryConfig) -> str:
    """Home Assistant publishes `online` here when it (re)starts."""
    return f"{cfg.prefix}/status"


def config_topic_filter(cfg: DiscoveryConfig, node_id: str) -> str:
    """Matches every discovery config this node may have announced, for any component."""
    return f"{cfg.prefix}/+/{node_id}/+/config"


def _config_topic(cfg: DiscoveryConfig, component: str, node_id: str, object_id: str) -> str:
    return f"{cfg.prefix}/{component}/{node_id}/{object_id}/config"


def _common(cfg: DiscoveryConfig, node_id: str, topics: Topics, qos: int) -> dict:
    version = software_version()
    return {
        "device": {
            "identifiers": [f"clap_mlx_{node_id}"],
            "name": cfg.device_name or f"Sound monitor {node_id}",
            "model": MODEL,
            "manufacturer": "clap-mlx",
            "sw_version": version,
            **({"via_device": f"clap_mlx_{cfg.via_device}"} if cfg.via_device else {}),
        },
        "origin": {"name": "clap-mlx", "sw_version": version},
        "availability_topic": topics.availability,
        "payload_available": PAYLOAD_ONLINE,
        "payload_not_available": PAYLOAD_OFFLINE,
        "qos": qos,
    }


def discovery_configs(
    cfg: DiscoveryConfig, node_id: str, labels: list[str], topics: Topics, qos: int
) -> dict[str, dict]:
    """Discovery topic -> config payload for every entity of this monitor (no labels: the bridge)."""
    common = _common(cfg, node_id, topics, qos)
    if not labels:
        return {_config_topic(cfg, "binary_sensor", node_id, "running"): {
            **common, "name": "Running", "unique_id": f"{node_id}_running", "device_class": "running",
            "state_topic": topics.availability, "payload_on": PAYLOAD_ONLINE, "payload_off": PAYLOAD_OFFLINE,
        }}
    configs = {
        _config_topic(cfg, "binary_sensor", node_id, slugify(label)): {
            **common,
            "name": label,
            "unique_id": f"{node_id}_{slugify(label)}_sound",
            "device_class": "sound",
            "state_topic": topics.state(label),
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
        }
        for label in labels
    }
    configs[_config_topic(cfg, "sensor", node_id, "level")] = {
        **common,
        "name": "Sound level",
        "unique_id": f"{node_id}_level",
        "state_topic": topics.status,
        "value_template": LEVEL_VALUE_TEMPLATE,
        "unit_of_measurement": "dBFS",
        "state_class": "measurement",
        "suggested_display_precision": 1,
    }
    configs[_config_topic(cfg, "event", node_id, "detection")] = {
        **common,
        "name": "Sound detected",
        "unique_id": f"{node_id}_detection",
        "state_topic": topics.event,
        "value_template": EVENT_VALUE_TEMPLATE,
        "event_types": list(labels),
    }
    return configs
