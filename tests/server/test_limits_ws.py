"""Hostile websocket frames: deeply nested JSON gets a 400 answer (never a RecursionError and a
dropped socket), an oversized frame closes with 1009, and the server stays healthy."""

from __future__ import annotations

import asyncio
import json
import struct

import httpx
import pytest
import websockets

from tests.server.conftest import RunningServer

NESTED = "[" * 100_000


async def _exchange(server: RunningServer, frame: str | bytes) -> dict:
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws?clientId=nested", max_size=None) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))  # the status message
        await ws.send(frame)
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


@pytest.mark.parametrize("frame", [
    NESTED, '{"id": 1, "op": "submit", "data": ' + NESTED,
    struct.pack(">I", 100_000) + NESTED.encode(),
], ids=["text", "inside-a-request", "binary-header"])
def test_deeply_nested_json_is_a_400_answer(server: RunningServer, frame: str | bytes) -> None:
    answer = asyncio.run(_exchange(server, frame))
    assert answer["type"] == "response" and answer["ok"] is False and answer["status"] == 400
    assert "nested too deeply" in answer["error"]
    assert httpx.get(f"{server.url}/system_stats", timeout=10).status_code == 200


def test_an_oversized_frame_closes_with_1009(server: RunningServer) -> None:
    async def send_big() -> int | None:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            await ws.recv()
            try:
                # uncompressed, the server closes the connection while the frame is still arriving
                await ws.send("x" * (17 * 1024 * 1024))
                await asyncio.wait_for(ws.recv(), 20)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(send_big()) == 1009
    assert httpx.get(f"{server.url}/system_stats", timeout=10).status_code == 200
