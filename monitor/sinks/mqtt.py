"""MQTT sink: event alerts, per-label state, level status and availability (paho-mqtt 2.x).

Delivery model. Every outgoing alert goes into our own bounded queue; a sender thread hands
messages from it to paho only while the session is *ready* (connected and our `online` was
acknowledged), at most `INFLIGHT_WINDOW` unacknowledged at a time. A message leaves our books
only when paho reports it published (PUBACK for QoS 1). Messages paho already held when the
connection dropped are re-sent by paho right after the next CONNACK, before the session
turns ready, so order is kept and nothing is lost (QoS 1 may duplicate). Past `queue_limit`
the oldest queued message is dropped and counted in `dropped_messages`.

Event messages are also written to the persistent `Outbox` before they are queued and
deleted from it on acknowledgement (or drop): a restarted monitor queues what an earlier
run left undelivered ahead of anything new. States and status are rebuilt by the running
monitor, so they stay in memory.

Session messages (availability, current states, discovery configs) are retained and rebuilt
on every (re)connect, so they bypass the queue.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..config import MqttConfig, TlsConfig
from ..events import EventMessage, LevelReport
from . import homeassistant as ha
from .base import Sink, SinkError
from .homeassistant import PAYLOAD_OFF, PAYLOAD_OFFLINE, PAYLOAD_ON, PAYLOAD_ONLINE, Topics
from .outbox import Outbox

log = logging.getLogger(__name__)

INFLIGHT_WINDOW = 20
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: str
    retain: bool = False
    supersedes: bool = False  # a newer queued message on the same topic replaces this one
    key: int | None = None  # its row in the outbox (None: held in memory only)


def default_node_id() -> str:
    return re.sub(r"[^a-z0-9_]+", "_", socket.gethostname().lower()).strip("_") or "monitor"


def read_password(cfg: MqttConfig) -> str | None:
    """The password from the environment variable or file the config names (checked here: they are runtime facts)."""
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if password is None:
            raise SinkError(f"mqtt.password_env: environment variable {cfg.password_env} is not set")
        return password
    if cfg.password_file:
        try:
            return Path(cfg.password_file).read_text().rstrip("\r\n")
        except OSError as err:
            raise SinkError(f"mqtt.password_file: cannot read {cfg.password_file}: {err.strerror}") from None
    return None


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Verifies the broker against `ca_certs` (system CAs if unset); `insecure` skips the host name."""
    context = ssl.create_default_context(cafile=tls.ca_certs)
    if tls.certfile:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    context.check_hostname = not tls.insecure
    return context


def connection_error(host: str, port: int, context: ssl.SSLContext | None) -> str:
    """Why a TCP (+TLS) connection to the broker fails: paho's callback does not say."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
            if context is not None:
                context.wrap_socket(sock, server_hostname=host).close()
    except OSError as err:  # includes ssl.SSLError
        return str(err)
    return "the connection was closed"


def iso_time(unix: float | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, timezone.utc).isoformat()


def event_payload(event: EventMessage) -> dict:
    return {
        "id": event.event_id,
        "label": event.label,
        "phase": event.phase,
        "score": event.score,
        "peak_score": event.peak_score,
        "mean_score": event.mean_score,
        "started_at": iso_time(event.started_at),
        "started_ts": event.started_at,
        "ended_at": iso_time(event.ended_at),
        "ended_ts": event.ended_at,
        "duration_s": event.duration_s,
        "level_dbfs": event.level_dbfs,
        "source": event.source,
        "clip": event.clip,
    }


def status_payload(report: LevelReport, dropped_messages: int, queued_messages: int) -> dict:
    return {
        **report.to_dict(),
        "time": iso_time(report.timestamp),
        "mqtt_dropped_messages": dropped_messages,
        "mqtt_queued_messages": queued_messages,
    }


class MqttSink(Sink):
    """Publishes to the broker `cfg` names; `cfg` and `labels` are as `MonitorConfig.problems()` accepts them.
    The outbox is `cfg.outbox_path`, else `mqtt-outbox-<node_id>.sqlite` in `state_dir`; neither: memory only."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, labels: list[str], source: str, state_dir: Path | None = None):
        self.cfg = cfg
        self.labels = list(labels)
        self.source = source
        self.node_id = cfg.node_id or default_node_id()
        default_outbox = state_dir / f"mqtt-outbox-{self.node_id}.sqlite" if state_dir is not None else None
        self.outbox = Outbox(cfg.outbox_path or default_outbox)
        self.topics = Topics(f"{cfg.base_topic}/{self.node_id}")
        self.dropped_messages = 0
        # In-flight messages cannot be recalled: leave queue room so the newest always fits.
        self._window = max(1, min(INFLIGHT_WINDOW, cfg.queue_limit - 1))
        self._active_labels: set[str] = set()
        self._last_status_ts: float | None = None
        self._discovery = (
            ha.discovery_configs(cfg.discovery, self.node_id, self.labels, self.topics, cfg.qos)
            if cfg.discovery.enabled
            else {}
        )
        # Everything below is guarded by _cond; paho is never called while holding it
        # (paho calls on_publish under its own locks: the other order would deadlock).
        self._cond = threading.Condition()
        self._queue: deque[Outgoing] = deque()
        self._inflight: dict[int, Outgoing | None] = {}  # mid -> queued message (None: session)
        self._early_acks: set[int] = set()  # acked before publish() returned its mid
        self._online_mid: int | None = None
        self._ready = False
        self._stopping = False
        self._failing_since: float | None = None
        self._client_id = cfg.client_id or f"sound-monitor-{self.node_id}"
        self._tls_context = tls_context(cfg.tls) if cfg.tls is not None else None
        self._client = self._build_client(read_password(cfg))
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    # ---- public API -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._ready

    @property
    def queued_messages(self) -> int:
        """Messages not yet acknowledged by the broker (queued + in flight)."""
        with self._cond:
            return self._unacknowledged()

    def status(self) -> dict:
        """One consistent snapshot: session ready, messages not yet acknowledged, messages dropped."""
        with self._cond:
            return {"connected": self._ready, "queued": self._unacknowledged(), "dropped": self.dropped_messages}

    def start(self) -> None:
        stored = self.outbox.open()
        for message in stored:  # before anything new, in the order they were written
            self._enqueue(Outgoing(message.topic, message.payload, message.retain, key=message.key), durable=False)
        self._sender.start()
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client.loop_start()
        log.info("MQTT: connecting to %s:%d as %s, publishing %s events under %s",
                 self.cfg.host, self.cfg.port, self._client_id, self.source, self.topics.root)

    def handle_event(self, event: EventMessage) -> None:
        if event.phase == "update":
            return
        on = event.phase == "start"
        with self._cond:
            (self._active_labels.add if on else self._active_labels.discard)(event.label)
        self._enqueue(Outgoing(self.topics.state(event.label), PAYLOAD_ON if on else PAYLOAD_OFF, retain=True))
        self._enqueue(Outgoing(self.topics.event, json.dumps(event_payload(event))), durable=True)

    def handle_level(self, report: LevelReport) -> None:
        """Publishes at most one status per `level_interval_s` (by report time)."""
        if self._last_status_ts is not None and report.timestamp - self._last_status_ts < self.cfg.level_interval_s:
            return
        self._last_status_ts = report.timestamp
        payload = status_payload(report, self.dropped_messages, self.queued_messages)
        self._enqueue(Outgoing(self.topics.status, json.dumps(payload), supersedes=True))

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, publish `offline`, disconnect; gives up after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(lambda: not self._ready or not self._unacknowledged(),
                                timeout=max(0.0, deadline - time.monotonic()))
            ready, left = self._ready, self._unacknowledged()
            self._stopping = True
            self._cond.notify_all()
        if left:
            kept = f"events kept in {self.outbox.path} for the next run" if self.outbox.persistent else "lost"
            log.warning("MQTT: closing with %d undelivered messages (%s)", left, kept)
        if ready:
            info = self._publish(Outgoing(self.topics.availability, PAYLOAD_OFFLINE, retain=True), None)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as err:
                log.warning("MQTT: could not publish offline: %s", err)
            if not info.is_published():
                log.warning("MQTT: broker did not acknowledge offline within %g s", timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self._sender.is_alive():
            self._sender.join(timeout=1.0)
        self.outbox.close()

    # ---- queue -------------------------------------------------------------------------

    def _inflight_queued(self) -> int:
        return sum(message is not None for message in self._inflight.values())

    def _unacknowledged(self) -> int:
        return len(self._queue) + self._inflight_queued()

    def _enqueue(self, message: Outgoing, durable: bool = False) -> None:
        """`durable`: written to the outbox first (an outbox that failed leaves it in memory only)."""
        if durable:
            message = replace(message, key=self.outbox.add(message.topic, message.payload, message.retain))
        with self._cond:
            if self._stopping:
                return
            if message.supersedes:
                self._queue = deque(m for m in self._queue if m.topic != message.topic)
            self._queue.append(message)
            dropped = []
            while self._queue and self._unacknowledged() > self.cfg.queue_limit:
                dropped.append(self._queue.popleft())
            self.dropped_messages += len(dropped)
            self._cond.notify_all()
        self.outbox.remove([message.key for message in dropped if message.key is not None])
        for message in dropped:
            log.warning("MQTT: queue full (%d), dropped oldest message on %s (%d dropped so far)",
                        self.cfg.queue_limit, message.topic, self.dropped_messages)

    def _can_send(self) -> bool:
        return self._stopping or (self._ready and bool(self._queue) and self._inflight_queued() < self._window)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._can_send)
                if self._stopping:
                    return
                message = self._queue.popleft()
            info = self._publish(message, message)
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.cfg.qos == 0:
                with self._cond:  # paho keeps only QoS>0 messages for the next connection
                    self._queue.appendleft(message)
                    self._inflight.pop(info.mid, None)

    # ---- paho --------------------------------------------------------------------------

    def _build_client(self, password: str | None) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._client_id)
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)
        client.will_set(self.topics.availability, PAYLOAD_OFFLINE, qos=cfg.qos, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        client.max_inflight_messages_set(self._window)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _publish(self, message: Outgoing, tracked: Outgoing | None) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(message.topic, message.payload, qos=self.cfg.qos, retain=message.retain)
        with self._cond:
            early = info.mid in self._early_acks
            if early:
                self._early_acks.discard(info.mid)
                self._acknowledge(info.mid)
            else:
                self._inflight[info.mid] = tracked
        if early:
            self._forget(tracked)
        return info

    def _acknowledge(self, mid: int) -> None:
        if mid == self._online_mid:
            self._ready = True
            log.info("MQTT: online at %s:%d (%d messages queued)", self.cfg.host, self.cfg.port, len(self._queue))
        self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if mid not in self._inflight:
                self._early_acks.add(mid)
                return
            message = self._inflight.pop(mid)
            self._acknowledge(mid)
        self._forget(message)

    def _forget(self, message: Outgoing | None) -> None:
        """An acknowledged message leaves the outbox (outside _cond: a write may wait for the disk)."""
        if message is not None and message.key is not None:
            self.outbox.remove([message.key])

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._log_failure(f"broker refused the connection: {reason_code} (reason code {reason_code.value})")
            return
        self._failing_since = None
        # Its ack cannot overtake us: paho handles acks on this (network) thread after we return.
        online = self._publish(Outgoing(self.topics.availability, PAYLOAD_ONLINE, retain=True), None)
        with self._cond:
            self._online_mid = online.mid
            active = set(self._active_labels)
        for label in self.labels:
            state = PAYLOAD_ON if label in active else PAYLOAD_OFF
            self._publish(Outgoing(self.topics.state(label), state, retain=True), None)
        if self.cfg.discovery.enabled:
            client.subscribe([(ha.birth_topic(self.cfg.discovery), self.cfg.qos),
                              (ha.config_topic_filter(self.cfg.discovery, self.node_id), self.cfg.qos)])
            self._publish_discovery()

    def _on_connect_fail(self, client, userdata) -> None:
        # Diagnosing costs a connection attempt of its own: once per failure streak.
        why = connection_error(self.cfg.host, self.cfg.port, self._tls_context) if self._failing_since is None \
            else "still failing"
        self._log_failure(f"cannot connect to broker {self.cfg.host}:{self.cfg.port}: {why}")

    def _log_failure(self, why: str) -> None:
        """First failure of a streak at ERROR, repeats at DEBUG: retries never stop."""
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
        log.log(logging.ERROR if first else logging.DEBUG,
                "MQTT: %s; retrying every %g-%g s", why, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            was_ready, self._ready = self._ready, False
            self._online_mid = None
            stopping = self._stopping
            if self.cfg.qos == 0:  # unwritten QoS 0 messages are gone from paho: queue them again
                unsent = [message for message in self._inflight.values() if message is not None]
                self._queue.extendleft(reversed(unsent))
                self._inflight.clear()
        if was_ready and not stopping:
            log.warning("MQTT: connection lost (%s); queueing until reconnected", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        payload = message.payload.decode(errors="replace")
        if message.topic == ha.birth_topic(self.cfg.discovery):
            if payload == PAYLOAD_ONLINE:
                log.info("MQTT: Home Assistant came online, re-sending discovery")
                self._publish_discovery()
        elif payload and message.topic not in self._discovery:
            log.info("MQTT: removing stale discovery config %s", message.topic)
            self._publish(Outgoing(message.topic, "", retain=True), None)

    def _publish_discovery(self) -> None:
        for topic, config in self._discovery.items():
            self._publish(Outgoing(topic, json.dumps(config), retain=True), None)
