"""Small helpers shared by the test modules (fixtures live in conftest.py and the fixtures_* plugins)."""

from __future__ import annotations

import time

import numpy as np

from clap_mlx.audio_io import SAMPLE_RATE
from monitor.events import EventMessage
from monitor.sinks.base import Sink


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Polls `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def tone(hz: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> np.ndarray:
    """float32 mono sine of `seconds` at `rate`."""
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


class Events(Sink):
    """A sink keeping every event message the pipeline gives it."""

    name = "events"

    def __init__(self):
        self.events: list[EventMessage] = []

    def handle_event(self, event: EventMessage) -> None:
        self.events.append(event)
