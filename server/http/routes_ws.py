"""GET /ws: ComfyUI's event stream, plus native commands over the same socket (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket

from server.http.files import FileRequestError, store_upload
from server.wire.hub import Client
from server.wire.protocol import (
    FEATURE_FLAGS, error_response, message, parse_binary_request, parse_json, response, status_message,
)
from server.queue.scheduler import Scheduler, SubmissionError
from server.settings import ServerSettings


class Commands:
    """Requests ``{"id", "op", "data"}``; each answered ``{"type": "response", "id", "ok", …}``."""

    def __init__(self, scheduler: Scheduler, settings: ServerSettings) -> None:
        self.scheduler = scheduler
        self.settings = settings

    async def handle(self, request_id: Any, op: str, data: dict[str, Any]) -> dict[str, Any]:
        scheduler = self.scheduler
        try:
            if op == "submit":
                submitted = await scheduler.submit(data)
                return response(request_id, {"prompt_id": submitted.prompt_id, "number": submitted.number,
                                             "node_errors": submitted.node_errors})
            if op == "cancel":
                ids = data.get("prompt_ids")
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                    return error_response(request_id, 400, "cancel needs prompt_ids: [string]")
                return response(request_id, {"cancelled": scheduler.cancel(ids)})
            if op == "interrupt":
                target = data.get("prompt_id")
                if target is not None and not isinstance(target, str):
                    return error_response(request_id, 400, "prompt_id must be a string")
                return response(request_id, scheduler.interrupt_answer(target))
            if op == "queue":
                return response(request_id, scheduler.queue_view())
            if op == "history":
                target = data.get("prompt_id")
                if not isinstance(target, str):
                    return error_response(request_id, 400, "history needs prompt_id: string")
                return response(request_id, scheduler.history_item(target))
            if op == "object_info":
                info = scheduler.catalog.current_object_info()
                name = data.get("class")
                return response(request_id, {name: info[name]} if isinstance(name, str) and name in info
                                else ({} if name else info))
        except SubmissionError as exc:
            return error_response(request_id, exc.status, exc.body)
        return error_response(request_id, 400, f"unknown op {op!r}")

    async def upload(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """Stored on a worker thread: decoding and checking an image takes up to seconds, during
        which the other clients and requests must still be answered."""
        request_id = header.get("id")
        try:
            stored = await asyncio.to_thread(
                store_upload, self.settings.folders, payload, filename=str(header.get("filename", "")),
                kind=str(header.get("type", "input")), subfolder=str(header.get("subfolder", "")),
                overwrite=bool(header.get("overwrite")), max_bytes=self.settings.max_upload_bytes,
                max_pixels=self.settings.max_image_pixels)
        except FileRequestError as exc:
            return error_response(request_id, exc.status, exc.message)
        return response(request_id, stored.as_dict())


def ws_router(settings: ServerSettings) -> APIRouter:
    router = APIRouter()

    @router.websocket("/ws")
    async def websocket(socket: WebSocket, clientId: str | None = None) -> None:  # noqa: N803 - ComfyUI's name
        scheduler: Scheduler = socket.app.state.scheduler
        await socket.accept()
        sid = clientId or uuid.uuid4().hex
        client = scheduler.hub.connect(sid, socket)
        scheduler.hub.send_to(client, json.dumps(status_message(scheduler.queue_remaining(), sid)))
        commands = Commands(scheduler, settings)
        try:
            while True:
                received = await socket.receive()
                if received["type"] == "websocket.disconnect":
                    break
                if received.get("bytes") is not None:
                    _reply(scheduler, client, await _binary(commands, received["bytes"]))
                elif received.get("text") is not None:
                    answer = await _text(commands, client, received["text"])
                    if answer is not None:
                        _reply(scheduler, client, answer)
        finally:
            scheduler.hub.disconnect(client)

    return router


def _reply(scheduler: Scheduler, client: Client, payload: dict[str, Any]) -> None:
    scheduler.hub.send_to(client, json.dumps(payload, default=str))


async def _binary(commands: Commands, frame: bytes) -> dict[str, Any]:
    try:
        header, payload = parse_binary_request(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(None, 400, f"bad binary frame: {exc}")
    if header.get("op") != "upload":
        return error_response(header.get("id"), 400, "binary frames carry only the upload op")
    return await commands.upload(header, payload)


async def _text(commands: Commands, client: Client, text: str) -> dict[str, Any] | None:
    try:
        request = parse_json(text)
    except ValueError as exc:
        return error_response(None, 400, f"not JSON: {exc}")
    if not isinstance(request, dict):
        return error_response(None, 400, "a request must be a JSON object")
    if request.get("type") == "feature_flags":
        flags = request.get("data")
        client.supports_preview_metadata = isinstance(flags, dict) and bool(flags.get("supports_preview_metadata"))
        return message("feature_flags", {**FEATURE_FLAGS, "max_upload_size": commands.settings.max_upload_bytes})
    op, data = request.get("op"), request.get("data", {})
    if not isinstance(op, str) or "id" not in request:
        return error_response(request.get("id"), 400, "a request needs an id and an op")
    if not isinstance(data, dict):
        return error_response(request["id"], 400, "data must be an object")
    return await commands.handle(request["id"], op, data)
