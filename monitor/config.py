"""Monitor configuration: the YAML schema as typed, validated objects."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TlsConfig:
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class DiscoveryConfig:
    enabled: bool = False
    prefix: str = "homeassistant"
    device_name: str | None = None


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
