"""The whole monitor pipeline with the full-size model: real-time factor, simultaneous live
streams per process, end-to-end alert latency (sound onset -> MQTT message at a subscriber
of a real mosquitto on 127.0.0.1), the monitor's RSS, and windows per second with the web
dashboard on (3 live clients reading its stream) vs off. 5-s windows, 1-s hop, 20 labels.

    python benchmarks/bench_stream.py [--rtf-seconds 60] [--stream-seconds 30] [--cycles 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import math
import socket
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _common import full_checkpoint, machine_info, peak_rss_mb, print_table, update_results, write_results

import numpy as np
import paho.mqtt.client as mqtt
import soundfile
from paho.mqtt.enums import CallbackAPIVersion

from clap_mlx.api import CLAP
from clap_mlx.audio_io import SAMPLE_RATE
from monitor.config import (BufferConfig, DetectorConfig, HttpConfig, LabelConfig, LogConfig, MonitorConfig,
                            MqttConfig, SourceConfig, WindowsConfig)
from monitor.pipeline import Pipeline
from monitor.sinks.base import Sink
from monitor.sources import FileSource
from tests.fixtures_broker import Broker

LENGTH_S, HOP_S = 5.0, 1.0
GATE_DBFS = -40.0  # silence (zeros) is gated; a window holding >= 0.5 s of the burst is not
BURST_RMS = 0.3
# Onsets sit mid-hop: the first window holding the onset ends 0.5 s after it (the windowing
# delay). A new event never starts on a window overlapping the previous event's last window,
# so a 1-s burst per 12-s cycle leaves every onset's first window free to start one.
CYCLE_S, ONSET_IN_CYCLE_S, BURST_S = 12.0, 4.5, 1.0
ONSET_LABEL = "onset"
OTHER_LABELS = ["dog_bark", "cat", "glass_breaking", "baby_crying", "smoke_alarm", "doorbell", "knocking",
                "footsteps", "car_horn", "siren", "speech", "music", "phone_ringing", "water_running",
                "vacuum_cleaner", "microwave", "kettle", "applause", "coughing"]


def write_wav(path: Path, audio: np.ndarray) -> Path:
    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="FLOAT")
    return path


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)


def onset_stream(cycles: int) -> tuple[np.ndarray, list[float]]:
    """Silence with a noise burst per cycle; returns the audio and the onset times (s)."""
    audio = np.zeros(round(cycles * CYCLE_S * SAMPLE_RATE), np.float32)
    onsets = [k * CYCLE_S + ONSET_IN_CYCLE_S for k in range(cycles)]
    rng = np.random.default_rng(1)
    for onset in onsets:
        start = round(onset * SAMPLE_RATE)
        audio[start : start + round(BURST_S * SAMPLE_RATE)] = BURST_RMS * rng.standard_normal(round(BURST_S * SAMPLE_RATE))
    return audio, onsets


def monitor_config(folder: Path, name: str, source: Path, realtime: bool, mqtt_cfg: MqttConfig) -> MonitorConfig:
    # "onset" fires on every scored window (any score passes), ending at the first gated one;
    # the other 19 labels only add the scoring work of a realistic label set.
    labels = [LabelConfig(name=ONSET_LABEL, threshold=1e-30, max_not_heard=1)]
    labels += [LabelConfig(name=label, threshold=1.0) for label in OTHER_LABELS]
    return MonitorConfig(
        labels=tuple(labels),
        source=SourceConfig(type="file", path=str(source), realtime=realtime),
        buffer=BufferConfig(seconds=30),
        windows=WindowsConfig(length_s=LENGTH_S, hop_s=HOP_S, min_dbfs=GATE_DBFS),
        detector=DetectorConfig(model=str(folder)),
        log=LogConfig(path=str(source.parent / f"{name}.jsonl"), level_interval_s=5.0),
        mqtt=mqtt_cfg,
    )


NO_MQTT = MqttConfig(enabled=False)


def losses(pipeline: Pipeline) -> int:
    return pipeline.queue.dropped + pipeline.windower.skipped


def full_speed(clap, folder: Path, workdir: Path, seconds: float) -> dict:
    """Non-live file replay: the pipeline runs as fast as the detector scores."""
    path = write_wav(workdir / "rtf.wav", noise(seconds))
    pipeline = Pipeline(monitor_config(folder, "rtf", path, False, NO_MQTT), FileSource(path, realtime=False), clap)
    start = time.perf_counter()
    pipeline.run()
    wall = time.perf_counter() - start
    windows = pipeline.detector.windows_scored
    return {"audio_s": seconds, "wall_s": wall, "realtime_factor": seconds / wall, "windows_scored": windows,
            "windows_per_s": windows / wall, "detector_busy_rtf": pipeline._realtime_factor()}


def live_streams(clap, folder: Path, workdir: Path, count: int, seconds: float, windows_per_s: float) -> dict:
    """`count` real-time file streams in this process, each its own pipeline, one shared model.

    They keep up when no window is lost and, once the streams end, the backlog drains within
    the time to score one last window per stream (at the full-speed throughput) plus 1 s:
    a growing backlog that still fits the queues fails too."""
    path = write_wav(workdir / "live.wav", noise(seconds, seed=2))
    pipelines = [
        Pipeline(monitor_config(folder, f"live{k}", path, True, NO_MQTT), FileSource(path, name=f"live{k}"), clap)
        for k in range(count)
    ]
    threads = [threading.Thread(target=p.run) for p in pipelines]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain_s = time.monotonic() - started - seconds
    expected = int((seconds - LENGTH_S) / HOP_S) + 1
    scored = [p.detector.windows_scored for p in pipelines]
    lost = [losses(p) for p in pipelines]
    return {"streams": count, "seconds": seconds, "windows_expected_each": expected, "windows_scored": scored,
            "windows_lost": lost, "drain_s": drain_s,
            "keeps_up": all(x == 0 for x in lost) and all(s == expected for s in scored)
            and drain_s <= count / windows_per_s + 1.0}


class StreamReader:
    """A live dashboard client on its own thread: reads /api/stream until the server closes it.
    It may connect before the server serves (the socket is bound when the pipeline is built)."""

    def __init__(self, port: int):
        self.port, self.bytes = port, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("GET", "/api/stream")
            response = conn.getresponse()
            while chunk := response.read1(65536):
                self.bytes += len(chunk)
        except OSError:  # the server closed the stream at shutdown
            pass
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WindowClock(Sink):
    """Times the windows as the sinks get them: the rate between the first and the last window
    leaves out the pipeline's start and shutdown (the web server's included), which a replay
    of a few seconds would otherwise count as per-window overhead."""

    def __init__(self):
        self.times: list[float] = []

    def handle_window(self, report) -> None:
        self.times.append(time.perf_counter())

    def rate(self) -> float:
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def dashboard_overhead(clap, folder: Path, workdir: Path, seconds: float, rounds: int, clients: int = 3) -> dict:
    """Windows per second of a full-speed replay with the dashboard off, and on with `clients`
    live clients reading its stream; off/on interleaved `rounds` times, medians compared."""
    path = write_wav(workdir / "dashboard.wav", noise(seconds, seed=3))
    rates: dict[str, list[float]] = {"off": [], "on": []}
    received = []
    for _ in range(rounds):
        for mode in ("off", "on"):
            cfg = monitor_config(folder, f"dashboard-{mode}", path, False, NO_MQTT)
            readers = []
            if mode == "on":
                port = free_port()
                cfg = dataclasses.replace(cfg, http=HttpConfig(enabled=True, port=port))
            clock = WindowClock()
            pipeline = Pipeline(cfg, FileSource(path, realtime=False), clap, sinks=[clock])
            if mode == "on":
                readers = [StreamReader(port) for _ in range(clients)]
            pipeline.run()
            rates[mode].append(clock.rate())
            for reader in readers:
                reader.thread.join(10)
            received += [reader.bytes for reader in readers]
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {"seconds": seconds, "clients": clients, "rounds": rounds, "windows_per_s": rates,
            "windows_per_s_off": off, "windows_per_s_on": on, "overhead": 1 - on / off,
            "stream_bytes_per_client": received}


class EventSubscriber:
    """Records (arrival wall time, payload) of every event message."""

    def __init__(self, port: int, topic: str):
        self.events: list[tuple[float, dict]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, message: self.events.append((time.time(), json.loads(message.payload)))
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("could not subscribe to the benchmark broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def alert_latency(clap, folder: Path, workdir: Path, cycles: int) -> dict:
    audio, onsets = onset_stream(cycles)
    path = write_wav(workdir / "onsets.wav", audio)
    broker = Broker(workdir / "broker")
    broker.workdir.mkdir()
    broker.start()
    try:
        subscriber = EventSubscriber(broker.port, "sound_monitor/bench/event")
        mqtt_cfg = MqttConfig(host="127.0.0.1", port=broker.port, node_id="bench")
        pipeline = Pipeline(monitor_config(folder, "latency", path, True, mqtt_cfg), FileSource(path), clap)
        pipeline.run()
        time.sleep(1.0)  # let the last messages arrive
        subscriber.close()
    finally:
        broker.kill()
    starts = [t for t, event in subscriber.events if event.get("phase") == "start" and event.get("label") == ONSET_LABEL]
    # each start answers the latest onset before it (the stream clock maps samples to wall time)
    latencies = []
    for arrival in starts:
        earlier = [pipeline.clock.t0 + onset for onset in onsets if pipeline.clock.t0 + onset <= arrival]
        if earlier:
            latencies.append(arrival - earlier[-1])
    quantiles = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) >= 2 else latencies * 19
    return {"onsets": len(onsets), "alerts": len(starts), "latencies_s": [round(x, 3) for x in latencies],
            "p50_s": statistics.median(latencies) if latencies else math.nan,
            "p95_s": quantiles[18] if latencies else math.nan,
            "windowing_delay_s": math.ceil(ONSET_IN_CYCLE_S / HOP_S) * HOP_S - ONSET_IN_CYCLE_S,
            "windows_lost": losses(pipeline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtf-seconds", type=float, default=60.0, help="audio replayed at full speed")
    parser.add_argument("--stream-seconds", type=float, default=30.0, help="length of each live-streams trial")
    parser.add_argument("--cycles", type=int, default=8, help="sound onsets in the latency stream (12 s each)")
    parser.add_argument("--max-trials", type=int, default=6, help="live-stream counts tried at most")
    parser.add_argument("--dashboard-rounds", type=int, default=3, help="off/on pairs of the dashboard overhead row")
    parser.add_argument("--checkpoint", type=Path, help="another hub-layout folder (default: the full-size random one)")
    parser.add_argument("--only-dashboard", action="store_true",
                        help="measure only the dashboard row and update it in the existing results")
    args = parser.parse_args()
    folder = args.checkpoint or full_checkpoint()
    clap = CLAP(str(folder), batch_size=DetectorConfig().batch_size)
    if args.only_dashboard:
        with tempfile.TemporaryDirectory() as tmp:
            dashboard = dashboard_overhead(clap, folder, Path(tmp), args.rtf_seconds, args.dashboard_rounds)
        print(f"windows/s off {dashboard['windows_per_s_off']:.2f}, on {dashboard['windows_per_s_on']:.2f}: "
              f"overhead {100 * dashboard['overhead']:.1f} %")
        update_results("bench_stream", "dashboard", {**dashboard, "machine": machine_info()})
        return
    # Each batch size the detector uses once first: clap_mlx's auto op paths measure on the
    # first input of each shape (once per machine, cached on disk), not inside the timings.
    for batch in range(1, clap.batch_size + 1):
        clap.embed_audio(noise(LENGTH_S, seed=batch).reshape(1, -1).repeat(batch, axis=0))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rtf = full_speed(clap, folder, workdir, args.rtf_seconds)
        print(f"full speed: {rtf['realtime_factor']:.2f}x real time ({rtf['windows_per_s']:.2f} windows/s)")
        # Each live stream needs 1/hop windows per second: start at the estimate, then step
        # up while every stream keeps up, or down until one count does.
        trials, count = [], max(1, int(rtf["windows_per_s"] * HOP_S))
        while True:
            trial = live_streams(clap, folder, workdir, count, args.stream_seconds, rtf["windows_per_s"])
            trials.append(trial)
            print(f"{count} live stream(s): lost windows {trial['windows_lost']}, backlog drained in "
                  f"{trial['drain_s']:.1f} s, keeps up: {trial['keeps_up']}")
            step = 1 if trial["keeps_up"] else -1
            tried = {t["streams"] for t in trials}
            if count + step < 1 or count + step in tried or len(trials) >= args.max_trials:
                break
            count += step
        sustained = max((t["streams"] for t in trials if t["keeps_up"]), default=0)
        latency = alert_latency(clap, folder, workdir, args.cycles)
        dashboard = dashboard_overhead(clap, folder, workdir, args.rtf_seconds / 2, args.dashboard_rounds)
    rss = peak_rss_mb()
    print()
    print_table(["measure", "value"], [
        ["real-time factor (full-speed file replay)", rtf["realtime_factor"]],
        ["windows scored per second", rtf["windows_per_s"]],
        ["live real-time streams sustained (no lost windows)", sustained],
        [f"alert latency p50 s ({latency['alerts']}/{latency['onsets']} onsets)", latency["p50_s"]],
        ["alert latency p95 s", latency["p95_s"]],
        ["  of which windowing delay s", latency["windowing_delay_s"]],
        ["monitor peak RSS MB (model + pipelines + this script)", rss],
        ["windows/s, dashboard off (full-speed replay)", dashboard["windows_per_s_off"]],
        [f"windows/s, dashboard on, {dashboard['clients']} live clients", dashboard["windows_per_s_on"]],
        ["  dashboard overhead %", 100 * dashboard["overhead"]],
    ])
    write_results("bench_stream", {
        "checkpoint": "full-size random weights" if args.checkpoint is None else str(args.checkpoint),
        "windows": {"length_s": LENGTH_S, "hop_s": HOP_S}, "labels": 1 + len(OTHER_LABELS),
        "full_speed": rtf, "live_trials": trials, "streams_sustained": sustained,
        "alert_latency": latency, "peak_rss_mb": rss, "dashboard": dashboard,
    })


if __name__ == "__main__":
    main()
