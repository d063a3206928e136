"""`DashboardSink`: the pipeline's side of the web dashboard.

The detector thread hands it window reports, events and level reports; it records
them in bounded memory and queues them for the live clients, and never waits for
the server or a client. The server (its own thread and event loop) binds its port
when the sink is built, so a bad port or token fails before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..config import HttpConfig
from ..events import EventMessage, LevelReport, WindowReport
from ..sinks.base import Sink
from .app import Dashboard, build_app
from .clips import ClipFiles
from .metrics import Metrics
from .security import resolve_token
from .server import HttpServer
from .state import Broadcaster, EventBook, Timeline


class DashboardSink(Sink):
    name = "http"

    def __init__(self, cfg: HttpConfig, labels: Mapping[str, Iterable[str]], status: Callable[[], dict],
                 clip_path: Callable[[str, str | None], Path | None]):
        """`labels`: each source's label names; `status`: a `Pipeline`'s or a `MultiPipeline`'s;
        `clip_path(event_id, source or None)`: the clip the source's clip sink wrote."""
        broadcaster = Broadcaster()
        self.dash = Dashboard(status=status, timeline=Timeline(), events=EventBook(), broadcaster=broadcaster,
                              metrics=Metrics(labels, status, self.status), clips=ClipFiles(clip_path))
        app = build_app(self.dash, resolve_token(cfg.token_env))
        self.server = HttpServer(app, cfg.host, cfg.port, on_loop=lambda loop: setattr(broadcaster, "loop", loop))

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def handle_window(self, report: WindowReport) -> None:
        window = report.to_dict()
        self.dash.timeline.add(window)
        self.dash.metrics.observe_window(report)
        self.dash.broadcaster.publish("window", window)

    def handle_event(self, event: EventMessage) -> None:
        self.dash.metrics.observe_event(event)
        self.dash.broadcaster.publish("event", self.dash.events.add(event))

    def handle_level(self, report: LevelReport) -> None:
        self.dash.broadcaster.publish("level", report.to_dict())

    def status(self) -> dict:
        broadcaster = self.dash.broadcaster
        return {"url": self.url, "clients": broadcaster.clients, "dropped": broadcaster.dropped}

    def close(self) -> None:
        self.dash.broadcaster.close()
        self.server.close()
