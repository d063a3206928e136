"""Who may read the dashboard.

Without `http.token_env` the server only listens on loopback (config validation
enforces it). With it, every request needs the token, given one of three ways:
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
