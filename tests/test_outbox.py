"""The persistent MQTT outbox (monitor/sinks/outbox.py) against real Mosquitto brokers: messages
left undelivered by one monitor are delivered, in order, by the next one, also after SIGKILL of a
real `python -m monitor run`; the queue bound holds across restarts; a corrupt, locked or
unwritable outbox (or a state_dir that is a file) costs a warning, never the monitoring."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.detector import Detector
from monitor.sinks.mqtt import MqttSink
from monitor.state import state_dir
from tests.fixtures_broker import sink_config
from tests.helpers import tone, wait_until
from tests.mounts import fill, tmpfs
from tests.test_mqtt import LABELS, ROOT, make_event, received_events

REPO = Path(__file__).resolve().parents[1]


def stored_ids(path: Path) -> list[str]:
    """Event ids in an outbox file, oldest first (read by a second connection, as an operator would)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [json.loads(payload)["id"] for (payload,) in db.execute("SELECT payload FROM outbox ORDER BY id")]


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def queue_events(sink: MqttSink, numbers, phases=("start", "end")) -> list[tuple[str, str]]:
    sent = []
    for n in numbers:
        for phase in phases:
            sink.handle_event(make_event(n, phase))
            sent.append((f"ev{n:04d}", phase))
    return sent


# ---- in-process sinks ---------------------------------------------------------------------


def test_default_state_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(None) == tmp_path / "xdg" / "sound-monitor"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/unit:{tmp_path}/other")  # systemd StateDirectory=
    assert state_dir(None) == tmp_path / "unit"
    assert state_dir("~/mine") == Path.home() / "mine"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir(None) == Path.home() / ".local" / "state" / "sound-monitor"


def test_undelivered_events_wait_in_the_outbox_for_the_next_run(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/#"])
    broker.stop()
    first = mqtt_sink(sink_config(broker), LABELS, state_dir=tmp_path / "state")
    outbox = tmp_path / "state" / "mqtt-outbox-test_node.sqlite"  # the default name under state_dir
    sent = queue_events(first, range(3))
    first.close(timeout=0.5)
    assert stored_ids(outbox) == [event_id for event_id, _ in sent]  # only events: states are rebuilt

    second = mqtt_sink(sink_config(broker), LABELS, state_dir=tmp_path / "state", start=False)
    second.start()
    assert second.queued_messages == 6
    sent += queue_events(second, [3])
    broker.start()
    assert wait_until(lambda: len(received_events(recorder)) == len(sent), timeout=10)
    assert received_events(recorder) == sent  # the earlier run's first, in order
    second.close()
    assert stored_ids(outbox) == []  # acknowledged messages left the outbox
    # states are the running monitor's: OFF on connect, then ev0003's; none of the first run's is replayed
    assert recorder.payloads(f"{ROOT}/dog_bark/state") == ["OFF", "ON", "OFF"]


def test_outbox_at_its_limit_drops_oldest_also_on_restore(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path,
                                                           caplog):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    broker.stop()
    outbox = tmp_path / "outbox.sqlite"
    first = mqtt_sink(sink_config(broker, queue_limit=4, outbox_path=str(outbox)), LABELS)
    queue_events(first, range(5), phases=["start"])  # state + event each: 10 into 4 slots
    assert first.dropped_messages == 6
    first.close(timeout=0.5)
    assert stored_ids(outbox) == ["ev0003", "ev0004"]  # dropped events left the outbox too

    caplog.clear()
    second = mqtt_sink(sink_config(broker, queue_limit=1, outbox_path=str(outbox)), LABELS)  # a smaller limit
    assert second.dropped_messages == 1 and second.queued_messages == 1
    assert sum("dropped oldest" in message for message in warnings(caplog)) == 1
    broker.start()
    assert wait_until(lambda: received_events(recorder) == [("ev0004", "start")], timeout=10)
    time.sleep(0.3)
    assert received_events(recorder) == [("ev0004", "start")]
    second.close()
    assert stored_ids(outbox) == []


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 100)


def corrupt_pages(path: Path) -> None:
    """A real outbox whose table pages were overwritten (a torn write on a bad card)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload TEXT NOT NULL, "
                   "retain INTEGER NOT NULL, created REAL NOT NULL)")
        db.executemany("INSERT INTO outbox (topic, payload, retain, created) VALUES ('t', ?, 0, 0)",
                       [("x" * 500,)] * 40)
    with open(path, "r+b") as f:
        f.seek(4096 + 100)
        f.write(os.urandom(8000))


@pytest.mark.parametrize("corrupt", [corrupt_garbage, corrupt_pages], ids=["not-a-database", "damaged-pages"])
def test_corrupt_outbox_is_moved_aside_and_monitoring_continues(mosquitto_broker, mqtt_recorder, mqtt_sink,
                                                                tmp_path, caplog, corrupt):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    outbox = tmp_path / "outbox.sqlite"
    corrupt(outbox)
    damaged = outbox.read_bytes()
    sink = mqtt_sink(sink_config(broker, outbox_path=str(outbox)), LABELS)
    (warning,) = warnings(caplog)
    assert "is corrupt" in warning and str(outbox) in warning
    aside = list(tmp_path.glob("outbox.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept for inspection, not deleted
    assert sink.outbox.persistent  # a new outbox took its place
    sent = queue_events(sink, range(3))
    assert wait_until(lambda: received_events(recorder) == sent, timeout=10)


def test_outbox_in_a_read_only_directory_falls_back_to_memory(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path,
                                                              caplog):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        sink = mqtt_sink(sink_config(broker, outbox_path=str(read_only / "state" / "outbox.sqlite")), LABELS)
        assert not sink.outbox.persistent
        (warning,) = warnings(caplog)
        assert "cannot be created (Read-only file system" in warning and "memory only" in warning
        sent = queue_events(sink, range(3))
        assert wait_until(lambda: received_events(recorder) == sent, timeout=10)


def test_outbox_on_a_full_disk_falls_back_to_memory_mid_run(mosquitto_broker, mqtt_recorder, mqtt_sink, tmp_path,
                                                            caplog):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, [f"{ROOT}/event"])
    broker.stop()
    with tmpfs(tmp_path / "small", size="256k") as small:
        sink = mqtt_sink(sink_config(broker, outbox_path=str(small / "outbox.sqlite")), LABELS)
        sent = queue_events(sink, [0])
        assert sink.outbox.persistent
        fill(small)
        sent += queue_events(sink, range(1, 40))  # a page of inserts no longer fits
        assert not sink.outbox.persistent
        (warning,) = warnings(caplog)
        assert "cannot be written (database or disk is full)" in warning
        broker.start()
        assert wait_until(lambda: received_events(recorder) == sent, timeout=10)  # nothing lost while running


def test_outbox_in_a_missing_directory_creates_it(mqtt_sink, tmp_path, mosquitto_broker):
    broker = mosquitto_broker(start=False)
    path = tmp_path / "not" / "yet" / "there" / "outbox.sqlite"
    sink = mqtt_sink(sink_config(broker, outbox_path=str(path)), LABELS)
    assert sink.outbox.persistent and path.exists()
    queue_events(sink, [1])
    sink.close(timeout=0.2)
    assert stored_ids(path) == ["ev0001", "ev0001"]


def test_an_outbox_in_use_by_another_monitor_is_not_shared(mqtt_sink, tmp_path, mosquitto_broker, caplog):
    """Two monitors on one outbox would both deliver (and delete) the same messages."""
    broker = mosquitto_broker(start=False)
    path = tmp_path / "outbox.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", f"""if True:
        import sys, time
        from monitor.sinks.outbox import Outbox
        Outbox({str(path)!r}).open()
        print("open", flush=True)
        time.sleep(30)"""], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        sink = mqtt_sink(sink_config(broker, outbox_path=str(path)), LABELS)
        assert not sink.outbox.persistent
        assert any("in use by another process" in r.getMessage() for r in caplog.records)
    finally:
        holder.kill()
        holder.wait()


# ---- a real monitor process, SIGKILLed --------------------------------------------------

BURSTS = 5  # 1 s tone bursts at 1, 3, 5, 7, 9 s: one event each
FILE_RATE = 16000
GATE_DBFS = -10.5  # between a window full of tone (-9 dBFS) and half of one (-12)
BACKGROUND = ["silence", "background noise"]


def write_bursts(path: Path, tail_s: float) -> None:
    audio = np.zeros(round((2 * BURSTS + tail_s) * FILE_RATE), np.float32)
    for k in range(BURSTS):
        start = round((1 + 2 * k) * FILE_RATE)
        audio[start : start + FILE_RATE] = tone(1000.0, 1.0, FILE_RATE, 0.5)
    soundfile.write(str(path), audio, FILE_RATE, subtype="FLOAT")


def burst_config(tmp_path: Path, clap, port: int, state: Path, realtime: bool = True) -> Path:
    """Every window inside a burst is a hit (threshold below the model's score for the tone),
    every gap ends the event: one event per burst whatever the random weights say."""
    (score,) = Detector(clap, {"beep": ["a beep"]}, BACKGROUND).score([tone(1000.0, 0.5, SAMPLE_RATE, 0.5)])
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "source": {"type": "file", "path": str(tmp_path / "bursts.wav"), "realtime": realtime},
        "windows": {"length_s": 0.5, "hop_s": 0.25, "min_dbfs": GATE_DBFS},
        "detector": {"background": BACKGROUND},
        "labels": [{"name": "beep", "prompts": ["a beep"], "threshold": score["beep"] / 10, "max_not_heard": 1}],
        "log": {"path": str(tmp_path / "monitor.jsonl"), "level_interval_s": 0.5},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "node_id": "crash", "keepalive": 5,
                 "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "state_dir": str(state),
    }))
    return config


def logged_events(log_path: Path, since_line: int = 0) -> list[tuple[str, str]]:
    if not log_path.exists():
        return []
    lines = log_path.read_text().splitlines()[since_line:]
    return [(e["event_id"], e["phase"]) for e in map(json.loads, lines) if e["type"] == "event"]


def crash_events(recorder) -> list[tuple[str, str]]:
    """(id, phase) of the monitor process's event messages, duplicates dropped as a consumer would."""
    payloads = recorder.payloads("sound_monitor/crash/event")
    return list(dict.fromkeys((event["id"], event["phase"]) for event in map(json.loads, payloads)))


def start_monitor(config: Path, model: Path, stderr: Path) -> subprocess.Popen:
    with open(stderr, "a") as err:
        return subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                                 str(model)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)


def test_sigkilled_monitor_delivers_its_queued_events_after_restart(tmp_path, clap, tiny_checkpoint,
                                                                   mosquitto_broker, mqtt_recorder, capsys):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/crash/event"])  # a persistent session
    broker.stop()
    write_bursts(tmp_path / "bursts.wav", tail_s=60)
    config = burst_config(tmp_path, clap, broker.port, tmp_path / "state")
    log_path = tmp_path / "monitor.jsonl"

    stderr = tmp_path / "stderr.txt"
    first = start_monitor(config, tiny_checkpoint, stderr)
    try:
        assert wait_until(lambda: len(logged_events(log_path)) == 2 * BURSTS, timeout=90), stderr.read_text()
    finally:
        first.kill()  # SIGKILL with every event queued: no close(), no goodbye
        first.wait()
    before = logged_events(log_path)
    assert first.returncode == -9 and len({event_id for event_id, _ in before}) == BURSTS
    outbox = tmp_path / "state" / "mqtt-outbox-crash.sqlite"
    assert stored_ids(outbox) == [event_id for event_id, _ in before]

    lines_before = len(log_path.read_text().splitlines())
    second = start_monitor(config, tiny_checkpoint, stderr)
    try:
        assert wait_until(lambda: log_path.read_text().count('"kind": "started"') == 2, timeout=60)
        restarted = time.monotonic()
        broker.start()
        assert wait_until(lambda: crash_events(recorder)[: len(before)] == before, timeout=20), crash_events(recorder)
        delivered_s = time.monotonic() - restarted
        assert wait_until(lambda: len(logged_events(log_path, lines_before)) == 2 * BURSTS, timeout=60)
        after = logged_events(log_path, lines_before)
        assert wait_until(lambda: crash_events(recorder) == before + after, timeout=10), crash_events(recorder)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert second.returncode == 0, stderr.read_text()
    assert stored_ids(outbox) == []
    duplicates = len(recorder.payloads("sound_monitor/crash/event")) - len(before + after)
    with capsys.disabled():
        print(f"\n[outbox] SIGKILL with {len(before)} event messages queued: all delivered in order "
              f"{delivered_s:.2f} s after the broker started, then the new run's {len(after)}; {duplicates} duplicates")


def test_state_dir_that_is_a_file_warns_and_monitors(tmp_path, clap, tiny_checkpoint, mosquitto_broker,
                                                      mqtt_recorder):
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/crash/event"])
    write_bursts(tmp_path / "bursts.wav", tail_s=1)
    (tmp_path / "state").write_text("a file, not a directory\n")
    config = burst_config(tmp_path, clap, broker.port, tmp_path / "state", realtime=False)
    run = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                          str(tiny_checkpoint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    warnings = [line for line in lines if line["type"] == "warning"]
    assert [w["kind"] for w in warnings] == ["outbox_unavailable"]
    assert f"{tmp_path / 'state'}" in warnings[0]["message"] and "not a directory" in warnings[0]["message"]
    events = [(line["event_id"], line["phase"]) for line in lines if line["type"] == "event"]
    assert len(events) == 2 * BURSTS
    assert wait_until(lambda: crash_events(recorder) == events, timeout=10)
