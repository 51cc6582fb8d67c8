"""Access control for every route (ours and the frontend's), as one ASGI middleware:

- a token, when configured: ``Authorization: Bearer …`` or ``X-NodeLoom-Token`` on every request;
  the ``token`` query parameter only for /ws and /view (browsers cannot set headers there);
- on loopback, ComfyUI's origin check: a request whose Origin names another host than the one it
  was sent to is a cross-site request from a web page, refused with 403;
- request bodies larger than the upload limit are refused with 413 before they are read.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.settings import LOOPBACK_HOSTS, ServerSettings

QUERY_TOKEN_PATHS = ("/ws", "/view", "/api/ws", "/api/view")
# Multipart framing and form fields around the file itself.
BODY_MARGIN = 1024 * 1024


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self._check_token(scope, headers) or self._check_origin(headers) or self._check_size(scope, headers)
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

    def _check_origin(self, headers: dict[str, str]) -> tuple[int, str] | None:
        origin, host = headers.get("origin"), headers.get("host")
        if not origin or not host or origin in self.settings.allow_origins:
            return None
        host_name = urlsplit(f"//{host}").hostname or ""
        if host_name not in LOOPBACK_HOSTS:
            return None
        parsed = urlsplit(origin)
        if parsed.netloc != host:
            return 403, f"cross-origin request from {origin} refused"
        return None

    def _check_size(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        length = headers.get("content-length")
        if scope["type"] == "http" and length and length.isdigit():
            if int(length) > self.settings.max_upload_bytes + BODY_MARGIN:
                return 413, f"request body of {length} bytes exceeds the limit of {self.settings.max_upload_bytes}"
        return None


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
