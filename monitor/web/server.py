"""Runs an ASGI app with uvicorn on a thread of its own, with its own event loop, so
no request can hold up the audio or detector threads.

The listening socket is bound when the `HttpServer` is built: a port in use or a
host that cannot be bound is reported before anything else starts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading

import uvicorn

from ..sinks.base import SinkError

log = logging.getLogger(__name__)


class _ToMonitorLog(logging.Handler):
    """uvicorn's warnings and errors (a request that failed) go to the monitor's log."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(record.levelno, "%s", record.getMessage(), exc_info=record.exc_info, extra={"kind": "http_error"})


_uvicorn = logging.getLogger("uvicorn.error")
_uvicorn.addHandler(_ToMonitorLog(logging.WARNING))
_uvicorn.propagate = False  # its info lines (started, shutting down) are not the monitor's

START_TIMEOUT_S = 10.0
GRACE_S = 0.5  # for responses in flight at shutdown; then streams that do not drain are cut
STOP_TIMEOUT_S = 5.0


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise SinkError(f"http.host: cannot resolve {host!r} ({error.strerror})") from error
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections linger
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SinkError(f"http.port: {host}:{port} is already in use; choose another http.port") from error
        if error.errno == errno.EACCES:
            raise SinkError(f"http.port: not allowed to listen on {host}:{port} ({error.strerror})") from error
        raise SinkError(f"http.host: cannot listen on {host}:{port} ({error.strerror})") from error
    return sock


class HttpServer:
    def __init__(self, app, host: str, port: int, on_loop=lambda loop: None):
        self.socket = bind(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        self.on_loop = on_loop  # called on the server's thread with its event loop, before serving
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none",
                                timeout_graceful_shutdown=STOP_TIMEOUT_S)
        self._server = uvicorn.Server(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()
        for _ in range(int(START_TIMEOUT_S / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            self._thread.join(0.01)
        if not self._server.started:
            raise SinkError(f"http: the server on {self.url} did not start (see the log)")

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self.on_loop(self._loop)
            await self._server.serve(sockets=[self.socket])

        try:
            asyncio.run(serve())
        except Exception:
            log.exception("the dashboard server stopped by an error", extra={"kind": "http_error"})

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(GRACE_S)
        if self._thread.is_alive() and self._loop is not None:
            # a client that stopped reading never lets its response finish: cut its connection
            # (uvicorn would wait for it, then cancel the task and log it as an application error)
            self._loop.call_soon_threadsafe(self._abort_connections)
            self._thread.join(STOP_TIMEOUT_S)
        self.socket.close()

    def _abort_connections(self) -> None:
        for connection in list(self._server.server_state.connections):
            connection.transport.abort()
