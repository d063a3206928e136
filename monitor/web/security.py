"""Who may read the dashboard.

Without `http.token_env` the server only listens on loopback (config validation
enforces it) and answers only requests addressed to a loopback name (`LoopbackHosts`):
a web page elsewhere cannot read it through a DNS name rebound to 127.0.0.1. With
`token_env`, every request needs the token, given one of three ways:
- `Authorization: Bearer <token>` (scripts, Prometheus' `authorization` setting),
- `?token=<token>` on any URL (opening the page in a browser); the answer then sets
- the `sound_monitor_token` cookie (HttpOnly, SameSite=Strict), which the page's own
  requests (the live stream, clips, spectrograms) carry from then on.
"""

from __future__ import annotations

import hmac
import os

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config_outputs import is_loopback
from ..sinks.base import SinkError

COOKIE = "sound_monitor_token"
MIN_TOKEN_CHARS = 16


def resolve_token(token_env: str | None) -> str | None:
    if token_env is None:
        return None
    token = os.environ.get(token_env, "")
    if not token.strip():
        raise SinkError(f"http.token_env: environment variable {token_env} is not set or empty "
                             "(it must hold the dashboard's access token)")
    if len(token) < MIN_TOKEN_CHARS or token != token.strip():
        raise SinkError(f"http.token_env: the token in {token_env} must be at least {MIN_TOKEN_CHARS} "
                             "characters without surrounding spaces (e.g. `openssl rand -hex 16`)")
    return token


class TokenGate:
    """ASGI middleware: 401 unless the request carries the token."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token.encode()

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        scheme, _, bearer = conn.headers.get("authorization", "").partition(" ")
        query = conn.query_params.get("token")
        if self._matches(query):
            return await self.app(scope, receive, _setting_cookie(send, query))
        if (scheme.lower() == "bearer" and self._matches(bearer.strip())) or self._matches(conn.cookies.get(COOKIE)):
            return await self.app(scope, receive, send)
        response = JSONResponse({"error": "missing or wrong token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="sound-monitor"'})
        await response(scope, receive, send)


def _setting_cookie(send: Send, token: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return wrapped



class LoopbackHosts:
    """ASGI middleware: 400 unless the Host header names this machine (loopback names or IPs)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _loopback_host(HTTPConnection(scope).headers.get("host", "")):
            response = JSONResponse({"error": "this dashboard answers only to a loopback host name"}, status_code=400)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _loopback_host(header: str) -> bool:
    """`header` is host[:port], the host an IPv6 address in brackets or a name or IPv4 address."""
    if header.startswith("["):
        host, _, rest = header[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest  # anything but ":digits" fails below
    else:
        host, _, port = header.partition(":")
    return (not port or port.isdigit()) and is_loopback(host.lower())
