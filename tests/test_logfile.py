"""The JSON log's file (monitor/sinks/logfile.py): every line kept whole through rotation, and a
full disk (a real size-limited tmpfs) that costs a warning on stderr, no monitoring and, once
space returns, no line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor.config import LogConfig
from monitor.sinks import logfile
from monitor.sinks.jsonlog import JsonLogSink
from monitor.sinks.logfile import LineFile
from tests.helpers import wait_until
from tests.mounts import fill, tmpfs
from tests.test_outbox import BURSTS, burst_config, crash_events, write_bursts

REPO = Path(__file__).resolve().parents[1]


def file_lines(path: Path, backups: int) -> list[dict]:
    """Every line of the log and its backups, oldest first; each must be a whole JSON object."""
    files = [Path(f"{path}.{n}") for n in range(backups, 0, -1)] + [path]
    return [json.loads(line) for f in files if f.exists() for line in f.read_text().splitlines()]


def record(message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.INFO})


@pytest.fixture
def quick_retry(monkeypatch):
    monkeypatch.setattr(logfile, "RETRY_S", 0.05)


def test_rotation_keeps_every_line_whole_and_in_order(tmp_path):
    """Two threads write at once (the detector thread's events, another module's warnings);
    with enough backups the files hold exactly what was written, in each thread's order."""
    path = tmp_path / "m.jsonl"
    sink = JsonLogSink(LogConfig(path=str(path), max_bytes=3000, backups=100))
    sink.start()
    warner = logging.getLogger("monitor.test_writer")

    def warnings():
        for n in range(300):
            warner.warning("warning %d %s", n, "w" * (n % 50), extra={"kind": "test", "n": n})

    thread = threading.Thread(target=warnings)
    thread.start()
    for n in range(300):
        sink.write(logging.INFO, {"type": "test", "n": n, "pad": "x" * (n % 70)})
    thread.join()
    sink.close()

    files = sorted(tmp_path.iterdir())
    assert len(files) > 20 and all(f.stat().st_size <= 3000 for f in files)
    lines = file_lines(path, 100)
    assert [line["n"] for line in lines if line["type"] == "test"] == list(range(300))
    assert [line["n"] for line in lines if line["type"] == "warning"] == list(range(300))


def test_rotation_with_few_backups_keeps_the_newest_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    handler = LineFile(path, max_bytes=500, backups=2)
    for n in range(200):
        handler.handle(record(json.dumps({"n": n})))
    handler.close()
    kept = [line["n"] for line in file_lines(path, 2)]
    assert kept == list(range(200 - len(kept), 200)) and len(kept) > 40  # the newest, contiguous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "m.jsonl.1", "m.jsonl.2"]


def test_full_disk_warns_once_holds_lines_and_resumes(tmp_path, capsys, quick_retry):
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        sink = JsonLogSink(LogConfig(path=str(disk / "m.jsonl")))
        sink.start()
        sink.write(logging.INFO, {"type": "test", "n": 0})
        filler = fill(disk)
        for n in range(1, 50):  # 10 kB: past the file's last page (tmpfs allocates by page)
            sink.write(logging.INFO, {"type": "test", "n": n, "pad": "x" * 200})  # no exception
        err = capsys.readouterr().err
        assert err.count("cannot write the log") == 1 and "No space left on device" in err
        written = [line["n"] for line in file_lines(disk / "m.jsonl", 0)]
        assert written == list(range(len(written))) and len(written) < 40  # what fit the file's last page

        filler.unlink()
        time.sleep(0.1)
        sink.write(logging.INFO, {"type": "test", "n": 50})
        assert [line["n"] for line in file_lines(disk / "m.jsonl", 0)] == list(range(51))
        assert f"writable again: {51 - len(written)} held lines written, 0 lost" in capsys.readouterr().err
        sink.write(logging.INFO, {"type": "test", "n": 51})  # and then straight to the file
        sink.close()
        assert [line["n"] for line in file_lines(disk / "m.jsonl", 0)] == list(range(52))


def test_a_line_cut_by_a_full_disk_is_not_left_half_written(tmp_path, capsys, quick_retry):
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        handler = LineFile(disk / "m.jsonl", max_bytes=0, backups=0)
        handler.handle(record(json.dumps({"n": 0})))
        filler = fill(disk)
        with open(filler, "r+b") as f:  # one free page: the next line fits only in part
            f.truncate(filler.stat().st_size - 4096)
        handler.handle(record(json.dumps({"n": 1, "pad": "x" * 10000})))  # > the file's free page + that one
        assert "cannot write the log" in capsys.readouterr().err
        assert [line["n"] for line in file_lines(disk / "m.jsonl", 0)] == [0]  # no partial line 1
        filler.unlink()
        time.sleep(0.1)
        handler.handle(record(json.dumps({"n": 2})))
        handler.close()
        assert [line["n"] for line in file_lines(disk / "m.jsonl", 0)] == [0, 1, 2]


def test_held_lines_are_bounded_and_the_loss_is_logged(tmp_path, capsys, quick_retry):
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        handler = LineFile(disk / "m.jsonl", max_bytes=0, backups=0, held_bytes=1000)
        filler = fill(disk)
        for n in range(100):  # 100 lines of about 100 bytes into 1000 bytes of memory
            handler.handle(record(json.dumps({"n": n, "pad": "x" * 80})))
        filler.unlink()
        time.sleep(0.1)
        handler.handle(record(json.dumps({"n": 100})))
        handler.close()
        lines = file_lines(disk / "m.jsonl", 0)
        gap = lines[-1]
        assert gap["kind"] == "log_gap" and gap["type"] == "warning"
        kept = [line["n"] for line in lines[:-1]]
        assert kept == list(range(101 - len(kept), 101)) and gap["lost_lines"] == 101 - len(kept) > 80
        assert f"{gap['lost_lines']} lost" in capsys.readouterr().err


def test_a_log_folder_that_cannot_be_created_is_a_clear_error(tmp_path, capsys, tiny_checkpoint):
    from monitor.cli import main

    (tmp_path / "file").write_text("not a folder\n")
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps({"source": {"type": "stdin", "sample_rate": 16000}, "labels": [{"name": "beep"}],
                                  "log": {"path": str(tmp_path / "file" / "logs" / "m.jsonl")}}))
    assert main(["run", "--config", str(config), "--model", str(tiny_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert f"error: log.path: cannot create the folder of {tmp_path}/file/logs/m.jsonl" in err and "Traceback" not in err


def test_monitor_with_its_log_on_a_full_disk_keeps_monitoring(tmp_path, clap, tiny_checkpoint, mosquitto_broker,
                                                              mqtt_recorder):
    """A real `python -m monitor run`: events still go out over MQTT while the log's disk is full,
    one warning on stderr, and the log gets every line once space returns."""
    broker = mosquitto_broker()
    recorder = mqtt_recorder(broker, ["sound_monitor/crash/event"])
    write_bursts(tmp_path / "bursts.wav", tail_s=4)
    config = burst_config(tmp_path, clap, broker.port, tmp_path / "state")
    with tmpfs(tmp_path / "disk", size="256k") as disk:
        settings = json.loads(config.read_text())
        settings["log"]["path"] = str(disk / "monitor.jsonl")
        config.write_text(json.dumps(settings))
        filler = fill(disk)
        monitor = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config),
                                    "--model", str(tiny_checkpoint)], cwd=REPO, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: len(crash_events(recorder)) >= 4, timeout=90), "no events while the disk was full"
            assert (disk / "monitor.jsonl").stat().st_size == 0
            filler.unlink()
            _, stderr = monitor.communicate(timeout=60)
        finally:
            monitor.kill()
        assert monitor.returncode == 0, stderr
        assert stderr.count("cannot write the log") == 1 and "is writable again" in stderr, stderr
        lines = file_lines(disk / "monitor.jsonl", 0)
    events = [(line["event_id"], line["phase"]) for line in lines if line["type"] == "event"]
    assert len(events) == 2 * BURSTS and crash_events(recorder) == events
    kinds = [line.get("kind") for line in lines]
    assert kinds.count("started") == 1 and kinds.count("stopped") == 1  # the whole run, start to end
