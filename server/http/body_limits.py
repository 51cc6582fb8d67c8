"""Request bodies bounded while they stream in, per route, chunked bodies included.

A Content-Length above the route's limit is refused before anything is read; a body without one
(chunked) is counted as it arrives, and the first chunk past the limit ends the request with 413.
The route never sees more than the limit plus one chunk, and the connection is closed so the
client stops sending (uvicorn stops reading a socket whose app no longer reads its body).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.wire.errors import error_body

# Multipart framing and form fields around an uploaded file.
MULTIPART_MARGIN = 1024 * 1024
UPLOAD_PATHS = ("/upload/image", "/upload/mask")


@dataclass(frozen=True)
class BodyLimits:
    """Byte limits by route (paths as mounted at / and under /api)."""

    upload: int
    prompt: int = 16 << 20
    userdata: int = 10 << 20
    # Everything else: settings, queue and history commands, interrupt, free, jobs.
    other: int = 1 << 20

    def __post_init__(self) -> None:
        assert min(self.upload, self.prompt, self.userdata, self.other) > 0, "body limits must be positive"

    def for_path(self, path: str) -> int:
        route = path[4:] if path.startswith("/api/") else path
        if route in UPLOAD_PATHS:
            return self.upload + MULTIPART_MARGIN
        if route == "/prompt":
            return self.prompt
        if route.startswith("/userdata/"):
            return self.userdata
        return self.other


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes its route's limit."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_path(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit, f"a body of {declared} bytes")
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                # A route (or FastAPI's form parsing) that turned the error into its own answer:
                # the client gets the 413 instead.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _too_large(send, limit, "the body")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit, "the body")


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _too_large(send: Send, limit: int, what: str) -> None:
    body = json.dumps(error_body("too_large", f"{what} exceeds this route's limit of {limit} bytes")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
