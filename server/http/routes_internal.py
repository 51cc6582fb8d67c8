"""``/internal/*``: what the editor's side panels ask besides the public API (the models folders,
the input/output/temp listings, the log panel)."""

from __future__ import annotations

import collections
import logging
import os
import shutil
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from graph_runtime.folders import MODEL_FOLDERS, FolderPaths, servable_name
from server.http.frontend_http import json_body


class LogBuffer(logging.Handler):
    """The last log records, for the editor's log panel (``/internal/logs``)."""

    def __init__(self, capacity: int = 300) -> None:
        super().__init__(level=logging.INFO)
        self.entries: collections.deque[dict[str, str]] = collections.deque(maxlen=capacity)
        # Websocket client ids that asked for live "logs" messages (PATCH /internal/logs/subscribe).
        self.subscribers: set[str] = set()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - a bad format argument must not break the caller
            self.handleError(record)
            return
        self.entries.append({"t": datetime.fromtimestamp(record.created).isoformat(), "m": message})

    def text(self) -> str:
        return "".join(f"{e['t']} - {e['m']}" for e in self.entries)


def install_log_buffer() -> LogBuffer:
    """The root logger's LogBuffer, added on first use (one per process, however many apps)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, LogBuffer):
            return handler
    buffer = LogBuffer()
    root.addHandler(buffer)
    return buffer


def _listable_files(directory: os.PathLike[str]) -> list[tuple[str, float]]:
    """The files directly in ``directory`` with their modification times, skipping hidden ones,
    names that are not UTF-8 (no JSON answer can hold them) and any entry the OS cannot stat (a
    symlink loop, a dangling or vanished link): one bad entry must not fail the whole listing."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                if entry.name.startswith(".") or not servable_name(entry.name) or not entry.is_file():
                    continue
                found.append((entry.name, entry.stat().st_mtime))
            except OSError:
                continue
    return found


def internal_router(folders: FolderPaths, logs: LogBuffer) -> APIRouter:
    router = APIRouter()

    @router.get("/internal/folder_paths")
    async def folder_paths() -> dict[str, list[str]]:
        return {name: [str(p) for p in folders.model_dirs(name)] for name in MODEL_FOLDERS}

    @router.get("/internal/files/{kind}")
    async def internal_files(kind: str) -> Response:
        if kind not in ("input", "output", "temp"):
            return JSONResponse({"error": f"unknown folder type {kind!r}; expected input, output or temp"},
                                status_code=400)
        directory = folders.directory_for(kind)
        listed = _listable_files(directory) if directory.is_dir() else []
        return JSONResponse([name for name, _ in sorted(listed, key=lambda found: -found[1])])

    @router.get("/internal/logs")
    async def internal_logs() -> str:
        return logs.text()

    @router.get("/internal/logs/raw")
    async def internal_logs_raw() -> dict[str, Any]:
        size = shutil.get_terminal_size((120, 40))
        return {"entries": list(logs.entries), "size": {"cols": size.columns, "rows": size.lines}}

    @router.patch("/internal/logs/subscribe")
    async def internal_logs_subscribe(request: Request) -> Response:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("clientId"), str):
            return PlainTextResponse("expected {enabled, clientId}", status_code=400)
        if body.get("enabled"):
            logs.subscribers.add(body["clientId"])
        else:
            logs.subscribers.discard(body["clientId"])
        return Response(status_code=200)

    return router
