"""`type: ffmpeg` sources against a real stream: a second ffmpeg serves MPEG-TS over HTTP on loopback."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.cli import main
from monitor.config import BufferConfig, DetectorConfig, LabelConfig, LogConfig, MonitorConfig, SourceConfig
from monitor.config import WindowsConfig
from monitor.pipeline import Pipeline
from monitor.sources import FfmpegSource, SourceError, open_source
from tests.helpers import Events, tone, wait_until

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg program (apt install ffmpeg)")

# the client sees audio ~1 s after connecting instead of after ffmpeg's 5 s MPEG-TS probe
FAST_START = ("-probesize", "32768", "-analyzeduration", "0")
BURST_S, PERIOD_S = 1.5, 4.0  # the served WAV: a 1 kHz burst, then silence; looped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamServer:
    """`ffmpeg -re ... -f mpegts -listen 1 http://127.0.0.1:<port>`: one client, real-time pace."""

    def __init__(self, inputs: list[str]):
        self.inputs, self.port = inputs, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", *self.inputs,
             "-c:a", "mp2", "-f", "mpegts", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self._listening, 10), "the stream server did not start listening"

    def _listening(self) -> bool:
        # `ss` instead of a probe connection: the server takes exactly one client
        out = subprocess.run(["ss", "-Hltn", f"sport = :{self.port}"], capture_output=True, text=True).stdout
        return bool(out.strip())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve():
    servers: list[StreamServer] = []

    def make(inputs: list[str]) -> StreamServer:
        server = StreamServer(inputs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)  # a test may have left it stopped
        server.kill()


SINE = ["-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate={SAMPLE_RATE}"]


class Recorder:
    def __init__(self):
        self.blocks: list[tuple[int, np.ndarray]] = []

    def __call__(self, block: np.ndarray, start_sample: int) -> None:
        self.blocks.append((start_sample, block.copy()))

    def samples(self) -> int:
        return sum(len(block) for _, block in self.blocks)


def test_missing_ffmpeg_is_a_clear_error_naming_the_program(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg on it
    cfg = SourceConfig(type="ffmpeg", url="http://127.0.0.1:1/stream")
    with pytest.raises(SourceError, match=r"ffmpeg program, which is not installed \(no 'ffmpeg' on PATH\)"):
        open_source(cfg)
    (tmp_path / "run.yaml").write_text("source: {type: ffmpeg, url: 'http://127.0.0.1:1/x'}\nlabels: [{name: a}]\n"
                                       f"log: {{path: {tmp_path / 'run.jsonl'}}}\n")
    assert main(["run", "--config", str(tmp_path / "run.yaml")]) == 1
    assert "error: source type 'ffmpeg' runs the ffmpeg program" in capsys.readouterr().err


def test_ffmpeg_source_decodes_a_served_stream_at_the_model_rate(serve):
    server = serve(SINE)
    source = open_source(SourceConfig(type="ffmpeg", url=server.url, args=FAST_START, name="cam"))
    assert (source.name, source.sample_rate, source.live) == ("cam", SAMPLE_RATE, True)
    recorder = Recorder()
    source.start(recorder)
    try:
        assert wait_until(lambda: recorder.samples() > 2 * SAMPLE_RATE, 15), "no audio from the stream"
    finally:
        source.stop()
    count = len(recorder.blocks)
    time.sleep(0.2)
    assert len(recorder.blocks) == count, "blocks delivered after stop()"
    starts = [start for start, _ in recorder.blocks]
    assert starts == list(np.cumsum([0] + [len(b) for _, b in recorder.blocks[:-1]]))  # contiguous
    audio = np.concatenate([block for _, block in recorder.blocks])[SAMPLE_RATE // 2:]
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(audio) - 1000) < 5
    assert source.gaps == [] and source.restarts == 0


def test_a_stalled_stream_is_restarted_and_the_outage_is_a_gap(serve, caplog):
    caplog.set_level(logging.INFO, logger="monitor")
    server = serve(SINE)
    source = FfmpegSource(server.url, SAMPLE_RATE, FAST_START, restart_min_s=0.2, restart_max_s=0.8, stall_s=2.0)
    recorder = Recorder()
    source.start(recorder)
    try:
        assert wait_until(lambda: recorder.samples() > SAMPLE_RATE, 15), "no audio from the stream"
        server.process.send_signal(signal.SIGSTOP)  # connection open, no data: only the stall timer sees it
        stopped_at = time.monotonic()
        assert wait_until(lambda: source.restarts >= 1, 10), "the stalled ffmpeg was not restarted"
        server.process.send_signal(signal.SIGCONT)
        server.kill()
        time.sleep(1.0)  # restarts fail (connection refused) and back off meanwhile
        server.start()
        assert wait_until(lambda: source.gaps, 20), "the stream did not come back"
        outage = time.monotonic() - stopped_at
        resumed = recorder.samples()
        assert wait_until(lambda: recorder.samples() > resumed + SAMPLE_RATE, 10), "no audio after the restart"
    finally:
        source.stop()
    lost = [r for r in caplog.records if getattr(r, "kind", None) == "stream_lost"]
    assert len(lost) == 1 and lost[0].reason == "no audio for 2 s"  # later failed attempts log at info
    assert len([r for r in caplog.records if getattr(r, "kind", None) == "stream_restarted"]) == 1
    assert any("restart failed (ffmpeg exited with code" in r.getMessage() for r in caplog.records)
    [(_, gap)] = source.gaps
    assert 2.0 <= gap / SAMPLE_RATE <= outage + 0.5


def test_pipeline_over_a_stream_killed_and_restarted_logs_the_gap_and_detects_again(tmp_path, clap, serve):
    period = np.zeros(round(PERIOD_S * SAMPLE_RATE), np.float32)
    period[: round(BURST_S * SAMPLE_RATE)] = tone(1000.0, BURST_S)
    soundfile.write(str(tmp_path / "bursts.wav"), period, SAMPLE_RATE)
    server = serve(["-stream_loop", "-1", "-i", str(tmp_path / "bursts.wav")])
    cfg = MonitorConfig(
        labels=(LabelConfig(name="beep", threshold=0.001, max_not_heard=1),),  # every scored window is a hit
        buffer=BufferConfig(seconds=10),
        windows=WindowsConfig(length_s=1.0, hop_s=0.5, min_dbfs=-13.0),  # silence gated: one event per burst
        detector=DetectorConfig(batch_size=4, max_pending=16, background=("silence",)),  # the gap's windows come at once
        log=LogConfig(path=str(tmp_path / "monitor.jsonl"), level_interval_s=1.0),
    )
    source = FfmpegSource(server.url, SAMPLE_RATE, FAST_START, name="cam", restart_min_s=0.2, restart_max_s=1.0)
    events = Events()
    pipeline = Pipeline(cfg, source, clap, sinks=[events])
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    try:
        assert wait_until(lambda: [e for e in events.events if e.phase == "end"], 30), "no event before the kill"
        server.kill()
        time.sleep(3.0)
        server.start()

        def resumed_at() -> float:  # stream time where audio resumed after the gap
            start, missing = source.gaps[0]
            return pipeline.clock.time(start + missing)

        assert wait_until(lambda: source.gaps and [e for e in events.events
                                                   if e.phase == "end" and e.started_at >= resumed_at()], 30), \
            "no event after the stream came back"
    finally:
        pipeline.stop()
        runner.join(30)
    assert not runner.is_alive()

    lines = [json.loads(line) for line in Path(cfg.log.path).read_text().splitlines()]
    # windows_dropped may come too: a live source does not wait for a busy (shared) CPU
    warnings = [line for line in lines if line["type"] == "warning" and line["kind"] != "windows_dropped"]
    assert [w["kind"] for w in warnings] == ["stream_lost", "source_gap"]
    assert warnings[0]["source"] == "cam" and warnings[0]["reason"].startswith("ffmpeg exited with code")
    [(gap_start, gap)] = source.gaps
    assert warnings[1]["source"] == "cam" and warnings[1]["gap_s"] == pytest.approx(gap / SAMPLE_RATE)
    assert 3.0 <= warnings[1]["gap_s"] <= 8.0  # the 3 s outage plus the restart and the stream's start-up
    print(f"\nffmpeg stream killed for 3.0 s: gap {warnings[1]['gap_s']:.2f} s in the timeline, "
          f"{source.restarts} restarts")
    status = pipeline.status()
    assert status["source"]["gaps"] == 1 and status["source"]["gap_s"] == pytest.approx(warnings[1]["gap_s"])
    assert status["source"]["state"] == "stopped"

    logged = [line for line in lines if line["type"] == "event"]
    assert [(e["phase"], e["event_id"]) for e in logged] == [(e.phase, e.event_id) for e in events.events]
    ends = [e for e in events.events if e.phase == "end"]
    before = [e for e in ends if e.ended_at <= pipeline.clock.time(gap_start)]
    after = [e for e in ends if e.started_at >= resumed_at()]
    assert before and after and all(e.source == "cam" for e in ends)
    # each burst heard whole is one event: the burst plus the windows reaching into it (>= 0.4 s of
    # tone passes the gate), never two bursts merged (>= 5.5 s)
    for event in (before[0], after[0]):
        assert BURST_S <= event.duration_s <= BURST_S + 1.2
