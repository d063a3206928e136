"""Service health with several sources: one health for the shared detector. A source whose
audio stops (a silent pipe) has nothing waiting, yet it must not feed the watchdog while the
shared model is stuck on another source's windows: pings stop, every source ends undrained,
`MultiPipeline.run` raises `DetectorStalled`, READY and STOPPING come once for the process."""

from __future__ import annotations

import dataclasses
import os
import threading
import time


from monitor.config import SourceConfig
from monitor.health import DetectorStalled
from monitor.multi import MultiPipeline
from monitor.sources import StdinPCMSource, open_source
from tests.helpers import wait_until
from tests.test_health import StallingModel, live_tone_config, notify_socket  # noqa: F401 (a fixture)


def test_a_silent_source_does_not_feed_the_watchdog_while_the_shared_detector_stalls(tmp_path, clap, notify_socket):
    one = live_tone_config(tmp_path, stall_s=2.0)
    cfg = dataclasses.replace(one, source=SourceConfig(), sources=(
        dataclasses.replace(one.source, name="kitchen"), SourceConfig(type="stdin", name="hall", sample_rate=16000)))
    silent, writer = os.pipe()  # the hall's upstream never writes: its pipeline runs with no audio
    pipes = []

    def opener(src: SourceConfig):
        if src.type != "stdin":
            return open_source(src)
        pipes.append(os.fdopen(silent, "rb", buffering=0))
        return StdinPCMSource(16000, stream=pipes[-1], name=src.name)

    model = StallingModel(clap, scored=12)  # 3 s of the kitchen's windows, then the model hangs
    multi = MultiPipeline(cfg, model, opener=opener)
    outcome: list[BaseException] = []
    runner = threading.Thread(target=lambda: _run(multi, outcome))
    started = time.monotonic()
    runner.start()
    try:
        runner.join(30)
        assert not runner.is_alive(), "the sources did not end after the stall"
    finally:
        model.release()
        os.close(writer)
        # the released model thread must end (and free its MLX streams) before the interpreter
        # does: a thread that ran MLX and is torn down with the process aborts it (exit 134)
        multi.shared.join(10)
    assert not multi.shared.is_alive(), "the released model thread did not end"
    assert len(outcome) == 1 and isinstance(outcome[0], DetectorStalled), outcome
    assert "detector.stall_s: 2" in str(outcome[0])
    status = multi.status()["sources"]
    assert set(status) == {"kitchen", "hall"} and status["hall"]["windows"]["scored"] == 0
    pings = notify_socket.times("WATCHDOG")
    assert len(notify_socket.times("READY")) == 1 and len(pings) >= 8  # every 0.2 s while the kitchen is scored
    assert model.stalled_at is not None and max(pings) < model.stalled_at + 0.5  # the hall fed none after
    assert time.monotonic() - started < 30
    assert wait_until(lambda: notify_socket.times("STOPPING"), 2.0) and len(notify_socket.times("STOPPING")) == 1


def _run(multi: MultiPipeline, outcome: list[BaseException]) -> None:
    try:
        multi.run()
    except BaseException as error:  # noqa: BLE001 (the test inspects it)
        outcome.append(error)
