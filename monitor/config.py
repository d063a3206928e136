"""Monitor configuration: the YAML schema as typed, validated objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class SourceConfig:
    type: Literal["mic", "file", "stdin"] = "mic"
    name: str | None = None  # shown in messages; default derived by the source ("mic:<device>", "file:<name>", "stdin")
    device: str | int | None = None  # mic: PortAudio index or name substring; None = default input
    sample_rate: int | None = None  # mic: capture rate (None = device default); stdin: rate of the raw PCM (required)
    channels: int = 1  # mic/stdin: channels captured or in the stream; mixed to mono
    path: str | None = None  # file: audio file to replay (required)
    realtime: bool = True  # file: pace at real time (live) or read as fast as the pipeline consumes
    format: Literal["s16le", "f32le"] = "s16le"  # stdin: raw PCM sample format


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
