"""Access control for every route (ours and the frontend's), as one ASGI middleware:

- a token, when configured: ``Authorization: Bearer …`` or ``X-NodeLoom-Token`` on every request;
  the ``token`` query parameter only for /ws and /view (browsers cannot set headers there);
- on loopback without a token, the Host header must name this server as a browser on this
  machine would (127.0.0.1, localhost or [::1], with the bound port): any other name (0.0.0.0,
  127.1, localhost., a DNS-rebinding domain) is refused with 403, so a web page cannot reach us
  through a name of its own;
- on loopback, an Origin that is not this server (or one of --allow-origin) is a cross-site
  request from a web page, refused with 403;
- request bodies are bounded per route while they stream (server.http.body_limits): 413 as soon as a limit is passed.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.settings import ServerSettings

QUERY_TOKEN_PATHS = ("/ws", "/view", "/api/ws", "/api/view")
# The names a browser on this machine uses for a loopback server ("localhost" in any case).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
ORIGIN_SCHEMES = ("http", "https")


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        # Exactly the Host values a browser sends for this server (port 80 may be left out).
        self.own_hosts = frozenset(f"{name}:{settings.port}" for name in LOOPBACK_NAMES) | (
            frozenset(LOOPBACK_NAMES) if settings.port == 80 else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = (self._check_token(scope, headers) or self._check_host(headers) or self._check_origin(headers))
        if problem is not None:
            status, text = problem
            await _deny(scope, receive, send, status, text)
            return
        await self.app(scope, receive, send)

    def _check_token(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        expected = self.settings.token
        if not expected:
            return None
        offered = headers.get("x-nodeloom-token")
        auth = headers.get("authorization", "")
        if offered is None and auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        if offered is None and scope.get("path", "") in QUERY_TOKEN_PATHS:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            offered = values[0] if values else None
        if offered is not None and hmac.compare_digest(offered.encode(), expected.encode()):
            return None
        return 401, "missing or wrong token"

    def _check_host(self, headers: dict[str, str]) -> tuple[int, str] | None:
        """On a token-less loopback server, only this machine's names for it (DNS rebinding)."""
        if not self.settings.is_loopback or self.settings.token:
            return None
        host = headers.get("host", "")
        if host.lower() not in self.own_hosts:
            return 403, (f"Host {host!r} is not this server: a loopback server without a token answers only "
                         f"127.0.0.1:{self.settings.port}, localhost:{self.settings.port} or [::1]:{self.settings.port}")
        return None

    def _check_origin(self, headers: dict[str, str]) -> tuple[int, str] | None:
        """On loopback, a browser's Origin must be this server (any of its loopback names)."""
        origin = headers.get("origin")
        if origin is None or not self.settings.is_loopback or origin in self.settings.allow_origins:
            return None
        parsed = urlsplit(origin)
        own = parsed.scheme in ORIGIN_SCHEMES and parsed.netloc.lower() in self.own_hosts \
            and not (parsed.path or parsed.query or parsed.fragment or "@" in parsed.netloc)
        return None if own else (403, f"cross-origin request from {origin!r} refused")

async def _deny(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    body = json.dumps({"error": {"type": "forbidden" if status == 403 else "unauthorized" if status == 401
                                 else "too_large", "message": text}}).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    extensions: dict[str, Any] = scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 4000 + status, "reason": text})
