"""Websocket clients and fan-out. Each client has a bounded send queue drained by its own task, so
a slow reader never blocks execution or the other clients; one that falls too far behind is closed
with CLOSE_TOO_SLOW instead of being buffered without limit."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from server.wire.protocol import CLOSE_TOO_SLOW, Message

log = logging.getLogger(__name__)

Frame = str | bytes


@dataclass(eq=False)
class Client:
    sid: str
    socket: WebSocket
    queue: asyncio.Queue[Frame | None]
    supports_preview_metadata: bool = False
    dropped: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Hub:
    def __init__(self, *, queue_size: int) -> None:
        self.clients: dict[str, Client] = {}
        self._queue_size = queue_size

    def connect(self, sid: str, socket: WebSocket) -> Client:
        previous = self.clients.get(sid)
        if previous is not None:  # a reconnect under the same clientId replaces the old socket
            self._close(previous, 1000, "replaced by a new connection")
        client = Client(sid=sid, socket=socket, queue=asyncio.Queue(self._queue_size))
        client.task = asyncio.get_running_loop().create_task(self._drain(client))
        self.clients[sid] = client
        return client

    def disconnect(self, client: Client) -> None:
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.task is not None:
            client.task.cancel()

    def listens(self, client_id: str | None) -> bool:
        """Whether a message for ``client_id`` (None: everyone) would reach any client; callers
        skip building messages that cost time when nobody would get them."""
        return bool(self.clients) if client_id is None else client_id in self.clients

    def send(self, client_id: str | None, payload: Message) -> None:
        """To one client, or to all when ``client_id`` is None (as ComfyUI's send_sync)."""
        targets = self._targets(client_id)
        if not targets:  # encoding a large message for nobody would only stall the event loop
            return
        text = json.dumps(payload, default=str)
        for client in targets:
            self._put(client, text)

    def send_binary(self, client_id: str | None, plain: bytes, with_metadata: bytes) -> None:
        for client in self._targets(client_id):
            self._put(client, with_metadata if client.supports_preview_metadata else plain)

    def _targets(self, client_id: str | None) -> list[Client]:
        if client_id is None:
            return list(self.clients.values())
        client = self.clients.get(client_id)
        return [client] if client is not None else []

    def send_to(self, client: Client, frame: Frame) -> None:
        self._put(client, frame)

    def _put(self, client: Client, frame: Frame) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            log.warning("websocket client %s is %d messages behind: dropping it", client.sid, self._queue_size)
            self._close(client, CLOSE_TOO_SLOW, "client too slow: send queue full")

    def _close(self, client: Client, code: int, reason: str) -> None:
        client.dropped = True
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.task is not None:
            client.task.cancel()
        asyncio.get_running_loop().create_task(_close_quietly(client.socket, code, reason))

    async def _drain(self, client: Client) -> None:
        try:
            while True:
                frame = await client.queue.get()
                if frame is None:
                    return
                if isinstance(frame, bytes):
                    await client.socket.send_bytes(frame)
                else:
                    await client.socket.send_text(frame)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away; the receive loop cleans up
            client.dropped = True

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            self._close(client, 1001, "server shutting down")


async def _close_quietly(socket: WebSocket, code: int, reason: str) -> None:
    try:
        await socket.close(code=code, reason=reason)
    except Exception:  # noqa: BLE001 - already closed
        pass

