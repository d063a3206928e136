"""What the dashboard remembers and fans out, in bounded memory.

`Timeline` keeps the last minutes of each source's window reports, `EventBook` the recent events
(one record per event id, the latest phase wins), `Broadcaster` one bounded queue per
live client. Writers are the detector thread; readers the web server's event loop.
Nothing here waits on a client: a full queue drops its oldest message and counts it.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections import OrderedDict, deque
from typing import AsyncIterator

from ..events import EventMessage

HISTORY_S = 300.0  # the score timeline the page draws
MAX_WINDOWS = 10_000  # hard cap on the timeline, whatever the hop
MAX_EVENTS = 200
CLIENT_QUEUE = 256  # messages per live client
MAX_CLIENTS = 16  # live clients at once: with the queue bound, the most memory clients can hold
KEEPALIVE_S = 15.0  # an SSE comment keeps idle proxies and browsers from closing the stream


def jsonable(value):
    """JSON has no -inf/NaN (silence levels, missing numbers): they become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def per_source(status: dict) -> dict[str, dict]:
    """Each source's status by name: a `MultiPipeline.status()` lists them, a `Pipeline.status()` is one."""
    return status["sources"] if "sources" in status else {status["source"]["name"]: status}


def dumps(value) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"), allow_nan=False, default=str)


class Timeline:
    """The last `seconds` of each source's window reports: sources are trimmed apart, since one
    source's times may run ahead of another's (a file replayed faster than real time)."""

    def __init__(self, seconds: float = HISTORY_S, limit: int = MAX_WINDOWS):
        self.seconds, self.limit = seconds, limit
        self._windows: dict[str, deque[dict]] = {}
        self._lock = threading.Lock()

    def add(self, window: dict) -> None:
        with self._lock:
            windows = self._windows.setdefault(window["source"], deque(maxlen=self.limit))
            windows.append(window)
            horizon = window["end_time"] - self.seconds
            while windows[0]["end_time"] < horizon:
                windows.popleft()

    def snapshot(self) -> list[dict]:
        """Each source's windows in order, one source after the other."""
        with self._lock:
            return [window for windows in self._windows.values() for window in windows]


class EventBook:
    """Keyed by (source, event id): two sources may name an event alike (label and start time)."""

    def __init__(self, limit: int = MAX_EVENTS):
        self._events: OrderedDict[tuple[str, str], dict] = OrderedDict()
        self.limit = limit
        self._lock = threading.Lock()

    def add(self, event: EventMessage) -> dict:
        """Records the event's latest phase; returns the record (a copy). Its `clip` is True once
        the clip can be fetched, "withheld" when the pipeline keeps it unwritten, else False."""
        key = (event.source, event.event_id)
        with self._lock:
            previous = self._events.get(key, {})
            record = {**event.to_dict(), "clip": event.clip or previous.get("clip", False)}
            self._events[key] = record
            self._events.move_to_end(key)
            while len(self._events) > self.limit:
                self._events.popitem(last=False)
            return dict(record)

    def mark_clip(self, key: tuple[str, str]) -> dict | None:
        with self._lock:
            record = self._events.get(key)
            if record is None or record["clip"] is not False:
                return None
            record["clip"] = True
            return dict(record)

    def without_clip(self) -> list[tuple[str, str]]:
        """(source, event id) of ended events whose clip has not been seen yet."""
        with self._lock:
            return [k for k, e in self._events.items() if e["phase"] == "end" and e["clip"] is False]

    def query(self, since: float | None = None, label: str | None = None, source: str | None = None) -> list[dict]:
        """Oldest first. `since`: only events still in progress at or after that time."""
        with self._lock:
            events = [dict(e) for e in self._events.values()]
        if label is not None:
            events = [e for e in events if e["label"] == label]
        if source is not None:
            events = [e for e in events if e["source"] == source]
        if since is not None:
            events = [e for e in events if e["ended_at"] is None or e["ended_at"] >= since]
        return events


class Client:
    """One live stream: the messages not yet written to it, oldest first."""

    def __init__(self, limit: int):
        self.queue: deque[str] = deque(maxlen=limit)
        self.dropped = 0
        self.wake = asyncio.Event()


class Broadcaster:
    """Fans pre-formatted SSE messages out to the live clients of one event loop."""

    def __init__(self, limit: int = CLIENT_QUEUE):
        self.limit = limit
        self.dropped = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the server on start
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._closed = False

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self) -> Client:
        """On the loop thread."""
        client = Client(self.limit)
        with self._lock:
            self._clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        with self._lock:
            self._clients.discard(client)

    def publish(self, kind: str, data, to: Client | None = None) -> None:
        """To every client (or only `to`), from any thread; never waits for a client."""
        if not self._clients:
            return
        message = f"event: {kind}\ndata: {dumps(data)}\n\n"
        with self._lock:
            for client in self._clients if to is None else (to,):
                if len(client.queue) == client.queue.maxlen:
                    client.dropped += 1
                    self.dropped += 1
                client.queue.append(message)
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self._call_soon(self._wake_all)

    def close(self) -> None:
        """Ends every stream (server shutdown)."""
        self._closed = True
        self._call_soon(self._wake_all)

    def _call_soon(self, callback) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop has already stopped
                pass

    def _wake_all(self) -> None:
        with self._lock:
            self._wake_pending = False
            clients = list(self._clients)
        for client in clients:
            client.wake.set()

    async def messages(self, client: Client) -> AsyncIterator[str]:
        """The client's messages as they come; a keep-alive comment when idle."""
        while not self._closed:
            try:
                await asyncio.wait_for(client.wake.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            client.wake.clear()
            with self._lock:
                batch = "".join(client.queue)
                client.queue.clear()
            if batch:
                yield batch
