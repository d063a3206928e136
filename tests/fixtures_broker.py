"""Real Mosquitto brokers for the MQTT tests, and a recording subscriber.

`mosquitto_broker(...)` starts `mosquitto` on 127.0.0.1 and a free port with a config generated
in tmp (anonymous or password file, optional TLS listener, persistence so that subscriber
sessions survive a SIGKILL). The broker can be killed and started again on the same port.
`mqtt_recorder(broker, topics)` is a paho subscriber that records every message it receives.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers import wait_until

START_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def add_broker_user(passwd_file: Path, user: str, password: str) -> None:
    """Adds (or replaces) a user in a mosquitto password file via `mosquitto_passwd`."""
    create = [] if passwd_file.exists() else ["-c"]
    subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd_file), user, password],
                   check=True, capture_output=True)


@dataclass(frozen=True)
class BrokerTls:
    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


@dataclass
class Broker:
    workdir: Path
    port: int = field(default_factory=free_port)
    passwd_file: Path | None = None
    tls: BrokerTls | None = None
    process: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            # Started as root, mosquitto would switch to user 'mosquitto' and lose access to tmp.
            f"user {getpass.getuser()}",
            f"allow_anonymous {'false' if self.passwd_file else 'true'}",
            # Persist sessions and queued messages after every change: they survive SIGKILL.
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_on_changes true",
            "autosave_interval 1",
            "max_queued_messages 0",  # never drop what a slow recorder has not fetched yet
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type all",
        ]
        if self.passwd_file:
            lines.append(f"password_file {self.passwd_file}")
        if self.tls:
            lines += [
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "broker already running"
        self.write_conf()
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_until(self.accepting, START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {self.log()}")

    def accepting(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: a clean shutdown that saves sessions and retained messages."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, clients see their socket die."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        stderr = self.process.stderr.read().decode() if self.process and self.process.poll() is not None else ""
        return stderr + (path.read_text() if path.exists() else "")


@pytest.fixture(autouse=True)
def isolated_state_dir(tmp_path, monkeypatch):
    """Every test gets its own default state_dir (monitor/state.py): no MQTT outbox left by one
    test (or by a monitor of the user's) is delivered in another."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def mosquitto_broker(tmp_path):
    """Factory: `mosquitto_broker(start=True, passwd_file=None, tls=None) -> Broker`."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    brokers: list[Broker] = []

    def make(start: bool = True, **options) -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        broker = Broker(workdir, **options)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


class Recorder:
    """Subscriber recording (topic, payload, retain) in arrival order.

    Uses a persistent session (clean_session=False, QoS 1), so with the broker's persistence
    it also receives what was published while it was reconnecting after a broker restart.
    """

    def __init__(self, broker: Broker, topics: list[str], username: str | None = None,
                 password: str | None = None, tls: dict | None = None, tls_insecure: bool = False):
        self.topics = topics
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"recorder-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(**tls)
            self.client.tls_insecure_set(tls_insecure)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError("recorder could not subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def payloads(self, topic: str) -> list[str]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_recorder():
    """Factory: `mqtt_recorder(broker, topics, **auth) -> Recorder`, closed at teardown."""
    recorders: list[Recorder] = []

    def make(broker: Broker, topics: list[str], **options) -> Recorder:
        recorder = Recorder(broker, topics, **options)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.close()


def sink_config(broker: Broker, **overrides):
    """An MqttConfig for `broker` with test-sized keepalive and back-off."""
    from monitor.config import MqttConfig

    options = dict(host="127.0.0.1", port=broker.port, node_id="test_node", keepalive=5,
                   reconnect_min_s=0.1, reconnect_max_s=0.5, level_interval_s=0.0)
    return MqttConfig(**{**options, **overrides})


@pytest.fixture
def mqtt_sink():
    """Factory: `mqtt_sink(cfg, labels, start=True, **options) -> MqttSink`, closed at teardown."""
    from monitor.sinks.mqtt import MqttSink

    sinks: list[MqttSink] = []

    def make(cfg, labels: list[str], start: bool = True, **options) -> MqttSink:
        sink = MqttSink(cfg, labels, source="test", **options)
        sinks.append(sink)
        if start:
            sink.start()
        return sink

    yield make
    for sink in sinks:
        sink.close(timeout=1.0)
