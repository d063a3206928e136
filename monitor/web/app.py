"""The dashboard's HTTP routes (all read-only: GET and HEAD only).

    GET /                     the page (page.html)
    GET /api/status           the status snapshot: one pipeline's, or with several sources
                              {"sources": {name: that source's}} (multi.py)
    GET /api/events           recent events; ?since=<unix time>&label=<name>&source=<name>
    GET /api/stream           Server-Sent Events: "snapshot" first, then "window", "event",
                              "level" and (every second) "status"
    GET /clips/<id>.wav       an event's clip (?source=<name>: of that source)
    GET /clips/<id>.png       its spectrogram
    GET /metrics              Prometheus text format
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass
from importlib import resources
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .clips import ClipFiles
from .metrics import Metrics
from .security import LoopbackHosts, TokenGate
from .state import MAX_CLIENTS, Broadcaster, EventBook, Timeline, jsonable, per_source

log = logging.getLogger(__name__)

STATUS_PUSH_S = 1.0
NO_STORE = {"Cache-Control": "no-store"}


@dataclass
class Dashboard:
    """What the routes read; the sink writes to the same objects."""

    status: Callable[[], dict]
    timeline: Timeline
    events: EventBook
    broadcaster: Broadcaster
    metrics: Metrics
    clips: ClipFiles

    def snapshot(self) -> dict:
        return {"status": self.status(), "windows": self.timeline.snapshot(), "events": self.events.query(),
                "history_s": self.timeline.seconds}

    def push_status(self) -> None:
        """Status to the live clients, and clips that appeared since the last push."""
        for source, event_id in self.events.without_clip():
            if self.clips.wav(event_id, source) is not None and (record := self.events.mark_clip((source, event_id))):
                self.broadcaster.publish("event", record)
        if self.broadcaster.clients:
            self.broadcaster.publish("status", self.status())


def build_app(dash: Dashboard, token: str | None) -> Starlette:
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers=NO_STORE)

    async def status(request: Request) -> Response:
        return JSONResponse(jsonable(dash.status()), headers=NO_STORE)

    async def events(request: Request) -> Response:
        since, label, source = (request.query_params.get(key) for key in ("since", "label", "source"))
        try:
            since = None if since is None else float(since)
        except ValueError:
            since = math.nan
        if since is not None and not math.isfinite(since):
            return JSONResponse({"error": "since must be a UNIX time in seconds"}, status_code=400)
        sources = per_source(dash.status())
        if source is not None and source not in sources:
            return JSONResponse({"error": f"unknown source {source!r}; sources: {', '.join(sources)}"}, status_code=400)
        # a source not running yet has no labels in its status
        labels = dict.fromkeys(name for src, status in sources.items() if source in (None, src)
                               for name in status.get("labels", ()))
        if label is not None and label not in labels:
            return JSONResponse({"error": f"unknown label {label!r}; labels: {', '.join(labels)}"}, status_code=400)
        return JSONResponse(jsonable(dash.events.query(since, label, source)), headers=NO_STORE)

    async def stream(request: Request) -> Response:
        if dash.broadcaster.clients >= MAX_CLIENTS:
            return JSONResponse({"error": f"already {MAX_CLIENTS} live clients"}, status_code=503,
                                headers={"Retry-After": "10"})
        client = dash.broadcaster.subscribe()
        dash.broadcaster.publish("snapshot", dash.snapshot(), to=client)

        async def body():
            try:
                async for chunk in dash.broadcaster.messages(client):
                    yield chunk
            finally:
                dash.broadcaster.unsubscribe(client)

        return StreamingResponse(body(), media_type="text/event-stream", headers=NO_STORE)

    async def wav(request: Request) -> Response:
        path = dash.clips.wav(request.path_params["event_id"], request.query_params.get("source"))
        if path is None:
            return JSONResponse({"error": "no such clip"}, status_code=404)
        return FileResponse(path, media_type="audio/wav")

    async def png(request: Request) -> Response:
        image = await dash.clips.png(request.path_params["event_id"], request.query_params.get("source"))
        if image is None:
            return JSONResponse({"error": "no such clip"}, status_code=404)
        return Response(image, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(dash.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async def push_status():
            while True:
                await asyncio.sleep(STATUS_PUSH_S)
                try:
                    dash.push_status()
                except Exception:  # a failing status must not end the pushes for good
                    log.exception("pushing the dashboard status failed", extra={"kind": "http_error"})

        task = asyncio.create_task(push_status())
        try:
            yield
        finally:
            task.cancel()

    routes = [
        Route("/", index), Route("/api/status", status), Route("/api/events", events), Route("/api/stream", stream),
        Route("/clips/{event_id}.wav", wav), Route("/clips/{event_id}.png", png), Route("/metrics", metrics),
    ]
    middleware = [Middleware(TokenGate, token=token) if token else Middleware(LoopbackHosts)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
