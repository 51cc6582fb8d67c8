"""Small pieces shared by the browser editor's routes: request parsing, the answers for refused
names, media types, JSON files read without failing the request."""

from __future__ import annotations

import json
import logging
import mimetypes
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from graph_runtime.folders import UnsafePath, safe_join

log = logging.getLogger(__name__)

# Platform MIME tables disagree on these (Windows' registry famously maps .js to text/plain,
# which browsers refuse for module scripts), so they are fixed here.
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
               ".json": "application/json", ".map": "application/json", ".wasm": "application/wasm",
               ".svg": "image/svg+xml", ".woff2": "font/woff2", ".webp": "image/webp"}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def refused(name: str, exc: Exception) -> Response:
    return PlainTextResponse(f"refusing path {name!r}: {exc}", status_code=403)


def join_or_refuse(directory: Path, name: str) -> Path | Response:
    """``safe_join(directory, name)``, or the 403 answer when the name would leave ``directory``."""
    try:
        return safe_join(directory, name)
    except UnsafePath as exc:
        return refused(name, exc)


def empty_stylesheet() -> Response:
    # index.html always links the user's stylesheet; none written yet is an empty one.
    return Response("", media_type="text/css", headers={"Cache-Control": "no-cache"})


def flag(request: Request, name: str, default: str) -> bool:
    return request.query_params.get(name, default).lower() == "true"


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; None when it is not JSON or nested too deeply for the
    parser (RecursionError, e.g. "[" * 100000): each route says what it wanted."""
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        return None


def read_json_file(path: Path, *, level: int = logging.WARNING) -> Any:
    """The JSON in ``path``, or None (logged at ``level``) when it is missing or unreadable
    (including JSON nested too deeply to parse, which any user file may hold): one bad file must
    not break the editor's page."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        log.log(level, "ignoring unreadable %s: %s", path, exc)
        return None
