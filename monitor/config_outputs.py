"""The config sections of what the monitor puts out: the JSON log and console, event clips,
MQTT (with TLS and Home Assistant discovery) and the web dashboard. Part of the schema in
`monitor.config`, which re-exports them; the same rules hold (checks only in `problems()`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterator, Literal

Problems = Iterator[tuple[str, str]]
NAME_PATTERN = r"[A-Za-z0-9_\-]+"  # label names and the MQTT node id: safe in topics, entity ids and file names


@dataclass(frozen=True)
class LogConfig:
    path: str | None = "sound-monitor.jsonl"  # JSON lines; None = no file
    max_bytes: int = 10_000_000  # rotate past this size
    backups: int = 3
    console: bool = False  # also print to stderr
    console_format: Literal["text", "json"] | None = None  # console lines; None: text on a terminal, else json
    level: Literal["debug", "info", "warning", "error"] = "info"  # debug adds per-window scores
    level_interval_s: float = 10.0  # period of level reports

    def problems(self) -> Problems:
        if self.max_bytes < 0:
            yield "max_bytes", f"must be >= 0 (0 = never rotate), got {self.max_bytes}"
        if self.backups < 0:
            yield "backups", f"must be >= 0, got {self.backups}"
        if self.level_interval_s <= 0:
            yield "level_interval_s", f"must be > 0, got {self.level_interval_s}"


@dataclass(frozen=True)
class ClipsConfig:
    enabled: bool = False
    dir: str = "clips"
    pre_roll_s: float = 2.0
    post_roll_s: float = 2.0
    skip_if: tuple[str, ...] = ()  # labels whose hit in a clip's windows keeps the clip unwritten (privacy: speech)
    # retention, checked at start and after each clip; oldest (by event start) deleted first
    max_age_days: float | None = None
    max_total_mb: float | None = None  # 1 MB = 10^6 bytes
    max_per_label: int | None = None

    def problems(self) -> Problems:
        if self.pre_roll_s < 0:
            yield "pre_roll_s", f"must be >= 0, got {self.pre_roll_s}"
        if self.post_roll_s < 0:
            yield "post_roll_s", f"must be >= 0, got {self.post_roll_s}"
        for name in ("max_age_days", "max_total_mb", "max_per_label"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                yield name, f"must be > 0 (omit it for no limit), got {value}"


@dataclass(frozen=True)
class TlsConfig:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False

    def problems(self) -> Problems:
        if self.keyfile and not self.certfile:
            yield "keyfile", "needs certfile (the client certificate the key belongs to)"


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = False
    prefix: str = "homeassistant"
    device_name: str | None = None
    via_device: str | None = None  # node id of the bridge device this one is reached through (set per source by `sources:`)

    def problems(self) -> Problems:
        yield from _topic_problems("prefix", self.prefix)


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = True
    host: str = "localhost"
    port: int = 1883
    client_id: str | None = None
    keepalive: int = 30
    base_topic: str = "sound_monitor"
    node_id: str | None = None
    qos: int = 1
    queue_limit: int = 1000
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    tls: TlsConfig | None = None
    level_interval_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    outbox_path: str | None = None  # SQLite outbox; default <state_dir>/mqtt-outbox-<node_id>.sqlite

    def problems(self) -> Problems:
        if self.outbox_path is not None and not self.outbox_path.strip():
            yield "outbox_path", "must be a file path (omit it for the default under state_dir)"
        if not 1 <= self.port <= 65535:
            yield "port", f"must be between 1 and 65535, got {self.port}"
        if not 0 <= self.keepalive <= 65535:
            yield "keepalive", f"must be between 0 and 65535 seconds (0 = no keepalive), got {self.keepalive}"
        yield from _topic_problems("base_topic", self.base_topic)
        if self.node_id is not None and not re.fullmatch(NAME_PATTERN, self.node_id):
            yield "node_id", f"{self.node_id!r}: use letters, digits, '_' or '-' (it becomes a topic level and entity id)"
        if self.qos not in (0, 1, 2):
            yield "qos", f"must be 0, 1 or 2, got {self.qos}"
        if self.queue_limit < 1:
            yield "queue_limit", f"must be >= 1, got {self.queue_limit}"
        if self.password_env and self.password_file:
            yield "password_file", "set password_env or password_file, not both"
        if self.level_interval_s < 0:
            yield "level_interval_s", f"must be >= 0, got {self.level_interval_s}"
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            yield "reconnect_min_s", "must be > 0 and <= reconnect_max_s"


@dataclass(frozen=True)
class HttpConfig:
    """The web dashboard and /metrics (monitor/web)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback only unless token_env is set
    port: int = 8765
    token_env: str | None = None  # name of the environment variable holding the access token

    def problems(self) -> Problems:
        if not 1 <= self.port <= 65535:
            yield "port", f"must be between 1 and 65535, got {self.port}"
        if not self.host.strip():
            yield "host", "must be an address or host name (127.0.0.1 for this machine only)"
        if self.token_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.token_env):
            yield "token_env", f"{self.token_env!r} is not an environment variable name"
        if self.enabled and self.token_env is None and not is_loopback(self.host):
            yield "token_env", (f"required when host ({self.host}) is not a loopback address: name the environment "
                                "variable holding the dashboard's access token")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other host name may resolve to anything
        return False


def slugify(label: str) -> str:
    """Topic- and id-safe form of a label: lower case, runs of other characters -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _topic_problems(name: str, topic: str) -> Problems:
    if not topic or "+" in topic or "#" in topic:
        yield name, f"{topic!r}: must be a non-empty MQTT topic without wildcards (+, #)"
