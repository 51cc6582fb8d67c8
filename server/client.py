"""A small Python client: HTTP calls with httpx, events and native commands over the websocket.
Used by the CLI, the tests and bench/server.py."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets

from server.wire.protocol import binary_request


class ServerError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Client:
    """HTTP side: ``Client("http://127.0.0.1:8188", token=...)``."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        body = response.json() if response.content else None
        if response.status_code >= 400:
            raise ServerError(response.status_code, body)
        return body

    def submit(self, prompt: dict[str, Any], *, client_id: str | None = None,
               extra_data: dict[str, Any] | None = None, front: bool = False, wait: bool = False,
               timeout: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, "extra_data": extra_data or {}}
        if client_id:
            body["client_id"] = client_id
        if front:
            body["front"] = True
        params = {"wait": "true"} if wait else {}
        return self._json(self.http.post("/prompt", json=body, params=params,
                                         timeout=timeout or self.http.timeout))

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.http.get(path, params=params))

    def post(self, path: str, body: Any = None) -> Any:
        return self._json(self.http.post(path, json=body))

    def queue(self) -> dict[str, Any]:
        return self.get("/queue")

    def history(self, prompt_id: str | None = None) -> dict[str, Any]:
        return self.get(f"/history/{prompt_id}" if prompt_id else "/history")

    def job(self, prompt_id: str) -> dict[str, Any]:
        """GET /jobs/{id}: any prompt's state, pending and running ones included (ServerError 404
        for an unknown id); /history answers only once a prompt has finished."""
        return self.get(f"/jobs/{prompt_id}")

    def interrupt(self, prompt_id: str | None = None) -> dict[str, Any]:
        return self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else None)

    def upload_image(self, name: str, data: bytes, *, subfolder: str = "", overwrite: bool = False) -> dict[str, Any]:
        files = {"image": (name, data, "application/octet-stream")}
        form = {"subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        return self._json(self.http.post("/upload/image", files=files, data=form))

    def view(self, filename: str, *, type: str = "output", subfolder: str = "", **params: str) -> bytes:
        response = self.http.get("/view", params={"filename": filename, "type": type, "subfolder": subfolder, **params})
        if response.status_code >= 400:
            raise ServerError(response.status_code, response.text)
        return response.content


def ws_url(base_url: str, client_id: str, token: str | None = None) -> str:
    url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
    url = f"{url}/ws?clientId={client_id}"
    return f"{url}&token={token}" if token else url


class Socket:
    """Websocket side: ComfyUI's events (``events()``) and our native commands (``request()``)."""

    def __init__(self, base_url: str, client_id: str, *, token: str | None = None,
                 preview_metadata: bool = False) -> None:
        self.url = ws_url(base_url, client_id, token)
        self.client_id = client_id
        self.preview_metadata = preview_metadata
        self.connection: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any] | bytes | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Socket:
        self.connection = await websockets.connect(self.url, max_size=None)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if self.preview_metadata:
            await self.connection.send(json.dumps({"type": "feature_flags",
                                                   "data": {"supports_preview_metadata": True}}))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        try:
            async for frame in self.connection:
                if isinstance(frame, str):
                    payload = json.loads(frame)
                    if payload.get("type") == "response" and payload.get("id") in self._pending:
                        self._pending.pop(payload["id"]).set_result(payload)
                        continue
                    await self._events.put(payload)
                else:
                    await self._events.put(frame)
        finally:
            await self._events.put(None)

    async def events(self) -> AsyncIterator[dict[str, Any] | bytes]:
        while (item := await self._events.get()) is not None:
            yield item

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any] | bytes | None:
        return await asyncio.wait_for(self._events.get(), timeout)

    async def request(self, op: str, data: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.connection.send(json.dumps({"id": request_id, "op": op, "data": data or {}}))
        return await asyncio.wait_for(future, timeout)

    async def upload(self, filename: str, data: bytes, *, subfolder: str = "", overwrite: bool = False,
                     timeout: float = 30.0) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        header = {"id": request_id, "op": "upload", "filename": filename, "subfolder": subfolder,
                  "overwrite": overwrite}
        await self.connection.send(binary_request(header, data))
        return await asyncio.wait_for(future, timeout)

    async def until_done(self, prompt_id: str, timeout: float = 60.0) -> list[dict[str, Any] | bytes]:
        """Every event of ``prompt_id`` (and previews) up to its final ``executing`` with node null."""
        seen: list[dict[str, Any] | bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.next_event(max(deadline - loop.time(), 0.01))
            if event is None:
                raise ConnectionError("websocket closed before the prompt finished")
            if isinstance(event, bytes):
                seen.append(event)
                continue
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            seen.append(event)
            if event["type"] == "executing" and data.get("node") is None:
                return seen
