"""README's first command: `sound-monitor run --config configs/quickstart.yaml` on a fresh machine.

The quick-start config needs no Home Assistant, no MQTT broker and no root: it records the
default microphone (here the private PulseAudio null sink's monitor, reached through
PortAudio's default ALSA device) and writes only ./sound-monitor.jsonl and the console.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.config_loader import load_config
from tests.helpers import wait_until

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
RATE = 48000


def test_quickstart_config_stays_local():
    cfg = load_config(QUICKSTART)
    assert cfg.source.type == "mic" and cfg.source.device is None
    assert not cfg.mqtt.enabled and not cfg.clips.enabled
    assert cfg.log.console and cfg.log.path and not Path(cfg.log.path).is_absolute()
    assert len(cfg.labels) >= 3


def test_quickstart_runs_on_the_default_microphone(pulse_server, tiny_checkpoint, tmp_path):
    # The installed console script, as the README runs it (the one next to this interpreter).
    command = [str(Path(sys.executable).with_name("sound-monitor")), "run", "--config", str(QUICKSTART),
               "--model", str(tiny_checkpoint)]
    work = tmp_path / "work"
    work.mkdir()
    log = work / "sound-monitor.jsonl"
    sf.write(tmp_path / "noise.wav", 0.1 * np.random.default_rng(0).standard_normal(7 * RATE), RATE)
    monitor = subprocess.Popen(command, cwd=work, env=os.environ, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: log.is_file() and '"started"' in log.read_text(), 120), \
            "no 'started' line in ./sound-monitor.jsonl"
        player = pulse_server.play(tmp_path / "noise.wav")  # loud enough to pass the -60 dBFS gate
        time.sleep(7.2)
        player.terminate()
        player.wait()
        assert monitor.poll() is None, monitor.communicate()[1]
        monitor.send_signal(signal.SIGINT)
        _, err = monitor.communicate(timeout=60)
    finally:
        monitor.kill()
    assert monitor.returncode == 0, err
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["kind"] == "started" and lines[0]["source"] == "mic:default"
    assert lines[-1]["kind"] == "stopped"
    levels = [line for line in lines if line["type"] == "level"]
    labels = {label.name for label in load_config(QUICKSTART).labels}
    assert levels[-1]["windows_scored"] >= 1 and any(set(level["scores"]) == labels for level in levels), levels
    assert not [line for line in lines if line["type"] == "warning"], lines
    assert "monitoring mic:default" in err  # console: true
    assert [p.name for p in work.iterdir()] == ["sound-monitor.jsonl"]  # nothing else written
