"""MqttSink against real Mosquitto brokers: topics and payloads, outages, queue bound, LWT,
authentication and TLS. Every check goes through a real subscriber."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from monitor.config import MqttConfig, TlsConfig
from monitor.events import EventMessage, LevelReport
from monitor.sinks.base import Sink, SinkError
from monitor.sinks.mqtt import MqttSink, read_password
from tests.fixtures_broker import BrokerTls, add_broker_user, sink_config
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
ROOT = "sound_monitor/test_node"
LABELS = ["dog bark", "Glass breaking!"]


def make_event(n: int, phase: str = "start", label: str = "dog bark") -> EventMessage:
    started = 1_700_000_000.0 + n
    ended = started + 1.5 if phase == "end" else None
    return EventMessage(phase=phase, event_id=f"ev{n:04d}", label=label, score=0.8, peak_score=0.9,
                        mean_score=0.7, started_at=started, ended_at=ended,
                        duration_s=1.5 if ended else 0.5, level_dbfs=-20.0, source="test")


def level_report(level: float = -31.5) -> LevelReport:
    return LevelReport(timestamp=time.time(), source="test", level_dbfs=level, windows_scored=7,
                       windows_dropped=0, overflows=0, realtime_factor=3.0, scores={"dog bark": 0.1})


def received_events(recorder) -> list[tuple[str, str]]:
    """(id, phase) of every event message in arrival order, QoS-1 redeliveries removed."""
    keys = [(event["id"], event["phase"]) for event in map(json.loads, recorder.payloads(f"{ROOT}/event"))]
    return list(dict.fromkeys(keys))


def wait_online(recorder, sink: MqttSink, timeout: float = 5.0) -> None:
    assert wait_until(lambda: sink.connected, timeout), "sink never came online"
    assert wait_until(lambda: recorder.payloads(f"{ROOT}/availability")[-1:] == ["online"], timeout)


# ---- runtime facts (no broker) ----------------------------------------------------------


def test_password_sources_and_their_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MQTT_TEST_PW", "s3cret")
    assert read_password(MqttConfig(password_env="MQTT_TEST_PW")) == "s3cret"
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(MqttConfig(password_file=str(tmp_path / "pw"))) == "from-file"
    with pytest.raises(SinkError, match="MQTT_UNSET_PW is not set"):
        read_password(MqttConfig(password_env="MQTT_UNSET_PW"))
    with pytest.raises(SinkError, match="cannot read .*missing"):
        read_password(MqttConfig(password_file=str(tmp_path / "missing")))


def test_run_with_an_unset_password_variable_is_a_clear_error(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    """`sound-monitor run` names the setting and exits 2 instead of a traceback."""
    from monitor.cli import main

    monkeypatch.delenv("MQTT_UNSET_PW", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""\
        source: {{type: stdin, sample_rate: 16000}}
        labels: [{{name: dog_bark}}]
        log: {{path: {tmp_path / "log.jsonl"}}}
        mqtt: {{enabled: true, password_env: MQTT_UNSET_PW}}
    """))
    assert main(["run", "--config", str(config), "--model", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.password_env" in err and "MQTT_UNSET_PW is not set" in err and "Traceback" not in err


# ---- against a broker ----------------------------------------------------------------------


def test_documented_topics_and_payloads(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/#"])
    sink = mqtt_sink(sink_config(broker), LABELS)
    wait_online(recorder, sink)
    assert wait_until(lambda: recorder.payloads(f"{ROOT}/glass_breaking/state") == ["OFF"])

    sink.handle_event(make_event(1, "start"))
    sink.handle_event(make_event(1, "update"))  # updates are not published
    sink.handle_event(make_event(1, "end"))
    sink.handle_level(level_report(-31.5))
    assert wait_until(lambda: len(recorder.payloads(f"{ROOT}/status")) == 1)
    assert wait_until(lambda: len(received_events(recorder)) == 2)

    assert recorder.payloads(f"{ROOT}/dog_bark/state") == ["OFF", "ON", "OFF"]
    start, end = (json.loads(p) for p in recorder.payloads(f"{ROOT}/event"))
    assert (start["id"], start["label"], start["phase"], end["phase"]) == ("ev0001", "dog bark", "start", "end")
    assert end["ended_ts"] == pytest.approx(end["started_ts"] + 1.5)
    assert datetime.fromisoformat(end["ended_at"]).timestamp() == pytest.approx(end["ended_ts"])
    assert datetime.fromisoformat(start["started_at"]).timestamp() == pytest.approx(start["started_ts"])
    assert start["ended_at"] is None
    assert {k: end[k] for k in ("score", "peak_score", "duration_s", "level_dbfs", "source")} == {
        "score": 0.8, "peak_score": 0.9, "duration_s": 1.5, "level_dbfs": -20.0, "source": "test"}
    status = json.loads(recorder.payloads(f"{ROOT}/status")[0])
    assert (status["level_dbfs"], status["windows_scored"], status["mqtt_dropped_messages"]) == (-31.5, 7, 0)


def test_status_rate_limited_by_level_interval(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/status"])
    sink = mqtt_sink(sink_config(broker, level_interval_s=10.0), LABELS)
    first = level_report(-40.0)
    sink.handle_level(first)
    assert wait_until(lambda: len(recorder.payloads(f"{ROOT}/status")) == 1)
    for dt, level in [(4, -41.0), (10, -42.0)]:
        sink.handle_level(LevelReport(**{**first.to_dict(), "timestamp": first.timestamp + dt, "level_dbfs": level}))
    assert wait_until(lambda: len(recorder.payloads(f"{ROOT}/status")) == 2)
    time.sleep(0.2)
    assert [json.loads(p)["level_dbfs"] for p in recorder.payloads(f"{ROOT}/status")] == [-40.0, -42.0]


def test_clean_close_publishes_retained_offline(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/availability"])
    sink = mqtt_sink(sink_config(broker), LABELS)
    wait_online(recorder, sink)
    sink.close()
    late = mqtt_recorder(broker, [f"{ROOT}/availability"])  # close() waited for the broker to take it
    assert wait_until(lambda: late.messages)
    assert late.messages == [(f"{ROOT}/availability", "offline", True)]
    assert wait_until(lambda: recorder.payloads(f"{ROOT}/availability") == ["online", "offline"])


def test_broker_down_at_startup_then_started(mosquitto_broker, mqtt_recorder, mqtt_sink):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/#"])  # persistent session, saved by the broker
    broker.stop()
    sink = mqtt_sink(sink_config(broker), LABELS)
    for n in range(5):
        sink.handle_event(make_event(n))
        sink.handle_level(level_report(-50.0 + n))  # a newer queued status replaces the older one
    time.sleep(0.5)  # several failed connection attempts
    assert not sink.connected and sink.queued_messages == 11
    broker.start()
    assert wait_until(lambda: len(received_events(recorder)) == 5, timeout=10)
    assert received_events(recorder) == [(f"ev{n:04d}", "start") for n in range(5)]
    assert [json.loads(p)["level_dbfs"] for p in recorder.payloads(f"{ROOT}/status")] == [-46.0]
    assert sink.dropped_messages == 0


def test_status_reports_connection_queue_and_drops(mosquitto_broker, mqtt_recorder, mqtt_sink):
    """The snapshot Pipeline.status() shows under sinks.mqtt, through an outage and a full queue."""
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    broker.stop()
    sink = mqtt_sink(sink_config(broker, queue_limit=5), LABELS)
    assert sink.status() == {"connected": False, "queued": 0, "dropped": 0}
    for n in range(3):  # 6 messages into 5 slots
        sink.handle_event(make_event(n))
    assert sink.status() == {"connected": False, "queued": 5, "dropped": 1}
    broker.start()
    assert wait_until(lambda: len(received_events(recorder)) == 3, timeout=10)
    assert wait_until(lambda: sink.status() == {"connected": True, "queued": 0, "dropped": 1}, 2.0), sink.status()
    assert isinstance(sink, Sink) and sink.name == "mqtt"  # its key in Pipeline.status()["sinks"]


def test_broker_killed_mid_run_loses_nothing(mosquitto_broker, mqtt_recorder, mqtt_sink, capsys):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/#"])
    sink = mqtt_sink(sink_config(broker), LABELS)
    wait_online(recorder, sink)
    expected = []

    def raise_events(numbers, pause_s: float = 0.0) -> None:
        for n in numbers:
            for phase in ("start", "end"):
                sink.handle_event(make_event(n, phase))
                expected.append((f"ev{n:04d}", phase))
            time.sleep(pause_s)

    raise_events(range(10))
    assert wait_until(lambda: len(received_events(recorder)) == 20)
    broker.freeze()  # these 20 go out on a live socket but are never acknowledged
    raise_events(range(10, 20))
    assert wait_until(lambda: sink.queued_messages == 40 and sink.connected, 2.0)
    broker.kill()
    raise_events(range(20, 40), pause_s=0.02)  # the first ones race the sink noticing the outage
    assert wait_until(lambda: not sink.connected, 2.0)
    restarted = time.monotonic()
    broker.start()
    assert wait_until(lambda: sink.connected, 5.0)
    reconnect_s = time.monotonic() - restarted
    assert wait_until(lambda: len(received_events(recorder)) == len(expected), timeout=10)
    delivered_s = time.monotonic() - restarted
    assert received_events(recorder) == expected
    assert wait_until(lambda: sink.queued_messages == 0, 2.0) and sink.dropped_messages == 0
    duplicates = len(recorder.payloads(f"{ROOT}/event")) - len(expected)
    with capsys.disabled():
        print(f"\n[mqtt outage] {len(expected)} event messages delivered in order, {duplicates} duplicates; "
              f"reconnect {reconnect_s:.2f} s, all delivered {delivered_s:.2f} s after broker restart")


def test_queue_bound_drops_oldest_and_counts(mosquitto_broker, mqtt_recorder, mqtt_sink, caplog):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    broker.stop()
    sink = mqtt_sink(sink_config(broker, queue_limit=5), LABELS)
    for n in range(6):  # each start queues 2 messages: state ON, then the event
        sink.handle_event(make_event(n))
    # 12 queued into 5 slots: the 7 oldest go, leaving ev0003's event, then state+event of 4 and 5.
    assert sink.dropped_messages == 7
    assert sum("dropped oldest" in r.getMessage() for r in caplog.records) == 7
    broker.start()
    assert wait_until(lambda: len(received_events(recorder)) == 3, timeout=10)
    time.sleep(0.2)
    assert received_events(recorder) == [("ev0003", "start"), ("ev0004", "start"), ("ev0005", "start")]


def test_last_will_offline_when_monitor_process_killed(mosquitto_broker, mqtt_recorder):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/availability"])
    script = textwrap.dedent(f"""
        import time
        from monitor.config import MqttConfig
        from monitor.sinks.mqtt import MqttSink
        sink = MqttSink(MqttConfig(host="127.0.0.1", port={broker.port}, node_id="test_node",
                                   keepalive=5), ["dog bark"], source="test")
        sink.start()
        time.sleep(60)
    """)
    monitor = subprocess.Popen([sys.executable, "-c", script], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert wait_until(lambda: recorder.payloads(f"{ROOT}/availability") == ["online"], timeout=10)
    finally:
        monitor.kill()  # SIGKILL: no close(), only the broker's last will can say offline
        monitor.wait()
    assert wait_until(lambda: recorder.payloads(f"{ROOT}/availability") == ["online", "offline"])
    late = mqtt_recorder(broker, [f"{ROOT}/availability"])
    assert wait_until(lambda: late.messages == [(f"{ROOT}/availability", "offline", True)])


def test_wrong_password_retries_then_connects(mosquitto_broker, mqtt_recorder, mqtt_sink, caplog, monkeypatch,
                                              tmp_path):
    caplog.set_level(logging.DEBUG, logger="monitor.sinks.mqtt")
    passwd = tmp_path / "passwd"
    add_broker_user(passwd, "recorder", "rec-pw")
    add_broker_user(passwd, "monitor", "right-pw")
    broker = mosquitto_broker(passwd_file=passwd)
    monkeypatch.setenv("MQTT_TEST_PW", "wrong-pw")
    sink = mqtt_sink(sink_config(broker, username="monitor", password_env="MQTT_TEST_PW"), LABELS)

    def refusals():
        return [r for r in caplog.records if "refused" in r.getMessage()]

    assert wait_until(lambda: len(refusals()) >= 3, 5.0), "sink should keep retrying"
    assert refusals()[0].levelno == logging.ERROR
    assert "Not authorized" in refusals()[0].getMessage() and "reason code 135" in refusals()[0].getMessage()
    assert not sink.connected
    assert all("wrong-pw" not in r.getMessage() for r in caplog.records)

    add_broker_user(passwd, "monitor", "wrong-pw")  # the broker now expects the sink's password
    broker.kill()
    broker.start()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"], username="recorder", password="rec-pw")
    assert wait_until(lambda: sink.connected, 5.0)
    sink.handle_event(make_event(1))
    assert wait_until(lambda: received_events(recorder) == [("ev0001", "start")])


def make_certificates(folder: Path, server_name: str = "IP:127.0.0.1") -> dict[str, Path]:
    """Self-signed CA, a server certificate for `server_name` and a client certificate (EC keys)."""
    paths = {name: folder / f"{name}.pem" for name in
             ("ca", "ca_key", "server", "server_key", "client", "client_key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(paths["ca_key"]), "-out", str(paths["ca"]),
            "-days", "2", "-subj", "/CN=test-ca")
    for name, extension in [("server", f"subjectAltName={server_name}"), ("client", "extendedKeyUsage=clientAuth")]:
        csr = folder / f"{name}.csr"
        openssl("req", *ec, "-keyout", str(paths[f"{name}_key"]), "-out", str(csr), "-subj", f"/CN=test-{name}")
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]), "-CAkey", str(paths["ca_key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(folder / f"{name}.ext"), "-out", str(paths[name]))
    return paths


def test_tls_with_client_certificate_and_password_file(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path):
    certs = make_certificates(tmp_path)
    passwd = tmp_path / "passwd"
    add_broker_user(passwd, "monitor", "tls-pw")
    add_broker_user(passwd, "recorder", "rec-pw")
    (tmp_path / "monitor-pw").write_text("tls-pw\n")
    broker = mosquitto_broker(passwd_file=passwd, tls=BrokerTls(certs["ca"], certs["server"], certs["server_key"],
                                                                require_certificate=True))
    client_tls = dict(ca_certs=str(certs["ca"]), certfile=str(certs["client"]), keyfile=str(certs["client_key"]))
    recorder = mqtt_recorder(broker, [f"{ROOT}/#"], username="recorder", password="rec-pw", tls=client_tls)
    cfg = sink_config(broker, username="monitor", password_file=str(tmp_path / "monitor-pw"), tls=TlsConfig(**client_tls))
    sink = mqtt_sink(cfg, LABELS)
    wait_online(recorder, sink)
    sink.handle_event(make_event(7))
    assert wait_until(lambda: received_events(recorder) == [("ev0007", "start")])


def test_tls_host_name_mismatch_needs_insecure(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path, caplog):
    certs = make_certificates(tmp_path, server_name="DNS:not-this-host.example")
    broker = mosquitto_broker(tls=BrokerTls(certs["ca"], certs["server"], certs["server_key"]))
    strict = mqtt_sink(sink_config(broker, tls=TlsConfig(ca_certs=str(certs["ca"]))), LABELS)
    assert wait_until(lambda: any("cannot connect" in r.getMessage() for r in caplog.records), 5.0)
    failure = next(r for r in caplog.records if "cannot connect" in r.getMessage())
    assert failure.levelno == logging.ERROR and "certificate verify failed" in failure.getMessage()
    assert not strict.connected
    strict.close()

    recorder = mqtt_recorder(broker, [f"{ROOT}/event"], tls=dict(ca_certs=str(certs["ca"])), tls_insecure=True)
    lenient = mqtt_sink(sink_config(broker, tls=TlsConfig(ca_certs=str(certs["ca"]), insecure=True)), LABELS)
    assert wait_until(lambda: lenient.connected, 5.0)
    lenient.handle_event(make_event(9))
    assert wait_until(lambda: received_events(recorder) == [("ev0009", "start")])
