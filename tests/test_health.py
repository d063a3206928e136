"""Service health: systemd's notify protocol received on a real datagram socket (READY, WATCHDOG
pings while windows are scored, none once the detector stalls, STOPPING), the stall limit that
makes `sound-monitor run` exit 3, and the unit file checked by `systemd-analyze verify`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile

from monitor.config import DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig, WindowsConfig
from monitor.config_loader import ConfigError, load_config
from monitor.health import DetectorStalled
from monitor.pipeline import Pipeline
from monitor.sdnotify import Notifier
from monitor.sources import FileSource
from tests.helpers import tone, wait_until

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "packaging" / "sound-monitor.service"


class NotifySocket:
    """What a service manager listens on: an AF_UNIX datagram socket, every datagram kept with its arrival time."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.received.append((time.monotonic(), fields))

    def times(self, key: str) -> list[float]:
        return [t for t, fields in list(self.received) if key in fields]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A listening socket in NOTIFY_SOCKET, with a 0.4 s watchdog (pings every 0.2 s)."""
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


class StallingModel:
    """The real tiny CLAP whose audio tower stops returning after `scored` calls, as a wedged
    accelerator or a deadlocked library would; `release()` lets the stuck thread finish."""

    def __init__(self, clap, scored: int):
        self.clap, self.left = clap, scored
        self.stalled_at: float | None = None
        self._release = threading.Event()
        self.logit_scale_audio = clap.logit_scale_audio

    def embed_text(self, texts):
        return self.clap.embed_text(texts)

    def embed_audio(self, waveforms):
        if self.left == 0:
            self.stalled_at = time.monotonic()
            self._release.wait()
        self.left -= 1
        return self.clap.embed_audio(waveforms)

    def release(self) -> None:
        self._release.set()


def live_tone_config(tmp_path, stall_s: float = 2.0) -> MonitorConfig:
    soundfile.write(str(tmp_path / "tone.wav"), tone(1000.0, 30.0, 16000), 16000)
    return MonitorConfig(
        labels=(LabelConfig(name="beep", threshold=0.999),),
        source=SourceConfig(type="file", path=str(tmp_path / "tone.wav"), realtime=True),
        windows=WindowsConfig(length_s=0.5, hop_s=0.25),
        detector=DetectorConfig(batch_size=1, max_pending=4, background=("silence",), stall_s=stall_s),
        log=LogConfig(path=str(tmp_path / "monitor.jsonl")),
    )


def test_notifier_speaks_the_datagram_protocol(tmp_path):
    for address in (str(tmp_path / "n.sock"), f"@sound-monitor-test-{os.getpid()}"):  # file and abstract
        listener = NotifySocket(address)
        try:
            notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
            assert notifier.watchdog_s == 30.0
            assert notifier.ready("monitoring x") and notifier.watchdog() and notifier.stopping("bye")
            assert wait_until(lambda: len(listener.received) == 3, 2.0)
            assert [fields for _, fields in listener.received] == [
                {"READY": "1", "STATUS": "monitoring x", "MAINPID": str(os.getpid())},
                {"WATCHDOG": "1"}, {"STOPPING": "1", "STATUS": "bye"}]
        finally:
            listener.close()
    assert Notifier({}).ready("x") is False  # not under systemd: nothing to do
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_s is None  # not ours


def test_watchdog_pings_while_scoring_and_stops_when_the_detector_stalls(tmp_path, clap, notify_socket):
    model = StallingModel(clap, scored=12)  # 3 s of windows, then the model hangs
    pipeline = Pipeline(live_tone_config(tmp_path), FileSource(tmp_path / "tone.wav", realtime=True), model)
    started = time.monotonic()
    try:
        with pytest.raises(DetectorStalled, match=r"finished no window for 2\.\d s .*detector.stall_s: 2"):
            pipeline.run()
        ended = time.monotonic()
    finally:
        model.release()
    pings = notify_socket.times("WATCHDOG")
    assert notify_socket.times("READY") and notify_socket.times("READY")[0] < pings[0]
    assert len(pings) >= 8  # every 0.2 s over the ~3 s of scoring
    # after the hang, at most the pings of the first half interval, then none
    assert model.stalled_at is not None and max(pings) < model.stalled_at + 0.5
    assert 1.5 <= ended - model.stalled_at < 4.0 and ended - started < 20
    assert wait_until(lambda: notify_socket.times("STOPPING"), 2.0)
    lines = [json.loads(line) for line in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    stalls = [line["level"] for line in lines if line.get("kind") == "detector_stalled"]
    assert stalls[-2:] == ["warning", "error"]  # pings withheld, then the stall limit


def test_cli_run_exits_3_when_the_detector_stalls(tmp_path, clap, tiny_checkpoint, monkeypatch, capsys):
    import clap_mlx.api
    from monitor.cli import main

    model = StallingModel(clap, scored=4)
    monkeypatch.setattr(clap_mlx.api, "CLAP", lambda *args, **kwargs: model)
    cfg = live_tone_config(tmp_path, stall_s=1.5)
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps({
        "source": {"type": "file", "path": cfg.source.path, "realtime": True},
        "windows": {"length_s": 0.5, "hop_s": 0.25},
        "detector": {"batch_size": 1, "background": ["silence"], "stall_s": 1.5},
        "labels": [{"name": "beep", "threshold": 0.999}],
        "log": {"path": str(tmp_path / "monitor.jsonl")},
    }))
    try:
        assert main(["run", "--config", str(config), "--model", str(tiny_checkpoint)]) == 3
    finally:
        model.release()
    assert "error: the detector finished no window for 1." in capsys.readouterr().err


def test_a_running_monitor_process_notifies_ready_pings_and_stopping(tmp_path, tiny_checkpoint, notify_socket):
    soundfile.write(str(tmp_path / "tone.wav"), tone(1000.0, 3.0, 16000), 16000)
    config = tmp_path / "monitor.yaml"
    config.write_text(json.dumps({
        "source": {"type": "file", "path": str(tmp_path / "tone.wav"), "realtime": True},
        "windows": {"length_s": 0.5, "hop_s": 0.25}, "detector": {"background": ["silence"]},
        "labels": [{"name": "beep", "threshold": 0.999}], "log": {"path": str(tmp_path / "monitor.jsonl")},
    }))
    run = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config), "--model",
                          str(tiny_checkpoint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert wait_until(lambda: notify_socket.times("STOPPING"), 2.0)
    ready, pings, stopping = (notify_socket.times(key) for key in ("READY", "WATCHDOG", "STOPPING"))
    assert len(ready) == 1 and ready[0] <= pings[0] and len(pings) >= 5 and max(pings) <= stopping[0]
    mainpid = [fields["MAINPID"] for _, fields in notify_socket.received if "READY" in fields]
    assert mainpid[0].isdigit() and int(mainpid[0]) != os.getpid()  # the monitor process itself


def test_stall_limit_is_checked_in_the_config(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("labels: [{name: beep}]\ndetector:\n  stall_s: 0.2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: detector.stall_s: must be >= 1 second"):
        load_config(config)
    config.write_text("labels: [{name: beep}]\ndetector: {stall_s: null}\n")
    assert load_config(config).detector.stall_s is None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path):
    # verify checks that ExecStart's binary exists: point it at this environment's entry point
    entry = shutil.which("sound-monitor") or pytest.skip("the sound-monitor entry point is not on PATH")
    unit = tmp_path / "sound-monitor.service"
    unit.write_text(UNIT.read_text().replace("/opt/sound-monitor/.venv/bin/sound-monitor", entry))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and "sound-monitor.service" not in result.stderr, result.stderr
    text = UNIT.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "StateDirectory=sound-monitor" in text
