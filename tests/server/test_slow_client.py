"""A websocket client that stops reading is dropped with close code 4008 once its bounded send
queue fills; the prompt and the other clients carry on at full speed."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import uuid
from collections.abc import Iterator

import pytest

from server.client import Client, Socket
from server.wire.protocol import CLOSE_TOO_SLOW
from tests.server.conftest import RunningServer, slow_prompt, start_server


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("slowclient"), "--ws-send-queue", "16")
    yield running
    running.stop()


def _stalled_client(port: int, client_id: str) -> socket.socket:
    """A websocket handshake over a raw socket with a tiny receive buffer, which is then never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def _close_code(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """Read the frames the server sent, up to its close frame; that frame's code (None if none came)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        code = _find_close(data)
        if code is not None:
            return code
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return None
        if not chunk:
            return _find_close(data)
        data += chunk


def _find_close(data: bytes) -> int | None:
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        offset += 2
        extended = {126: 2, 127: 8}.get(length, 0)
        if offset + extended > len(data):
            return None  # the rest of this header has not arrived yet
        if extended:
            (length,) = struct.unpack(">H" if extended == 2 else ">Q", data[offset:offset + extended])
            offset += extended
        if opcode == 0x8 and offset + 2 <= len(data):
            return struct.unpack(">H", data[offset:offset + 2])[0]
        offset += length
    return None


def test_stalled_client_is_dropped_and_nobody_waits_for_it(small_queue_server: RunningServer) -> None:
    stalled_id = uuid.uuid4().hex
    stalled = _stalled_client(small_queue_server.port, stalled_id)
    try:
        with Client(small_queue_server.url) as http:
            # Its events (10000 progress messages, states and previews: megabytes) go to the stalled client.
            done = http.post("/prompt?wait=true", {"prompt": slow_prompt(steps=10000, delay=0.0), "client_id": stalled_id})
            assert done["status"] == "success"
            clients = http.get("/system_stats")["nodeloom"]["websocket_clients"]

        async def listener_still_served() -> None:
            async with Socket(small_queue_server.url, uuid.uuid4().hex) as ws:
                hello = await ws.next_event(timeout=10)
                assert hello["type"] == "status"

        asyncio.run(listener_still_served())
        assert clients == 0
        assert _close_code(stalled) == CLOSE_TOO_SLOW
    finally:
        stalled.close()
