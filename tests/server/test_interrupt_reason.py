"""POST /interrupt (and the websocket interrupt command) says why nothing was interrupted: a
queued prompt is removed with /queue delete, an unknown id is unknown, a finished one finished;
the answer stays 200 with ComfyUI's ``interrupted`` list."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from server.client import Client, Socket
from tests.server.conftest import RunningServer, color_prompt, slow_prompt


def _running(http: Client, prompt_id: str) -> None:
    deadline = time.monotonic() + 30
    while [e[1] for e in http.queue()["queue_running"]] != [prompt_id]:
        assert time.monotonic() < deadline, f"{prompt_id} never started"
        time.sleep(0.05)


def test_interrupt_says_why_nothing_was_interrupted(server: RunningServer) -> None:
    with Client(server.url) as http:
        idle = httpx.post(f"{server.url}/interrupt", timeout=10)
        assert idle.status_code == 200 and idle.json()["interrupted"] == []
        assert idle.json()["reason"] == "nothing_running"

        done = http.submit(color_prompt(red=7), wait=True)["prompt_id"]
        finished = httpx.post(f"{server.url}/interrupt", json={"prompt_id": done}, timeout=10).json()
        assert finished["interrupted"] == [] and finished["reason"] == "finished"

        unknown = httpx.post(f"{server.url}/interrupt", json={"prompt_id": "no-such-prompt"}, timeout=10)
        assert unknown.status_code == 200
        assert unknown.json() == {"interrupted": [], "reason": "unknown_prompt",
                                  "message": "no prompt 'no-such-prompt' is known"}

        busy = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        _running(http, busy)
        queued = http.submit(color_prompt(red=8))["prompt_id"]
        answer = httpx.post(f"{server.url}/api/interrupt", json={"prompt_id": queued}, timeout=10).json()
        assert answer["interrupted"] == [] and answer["reason"] == "queued"
        assert "/queue" in answer["message"] and "delete" in answer["message"]

        async def over_ws() -> dict:
            async with Socket(server.url, uuid.uuid4().hex) as socket:
                return await socket.request("interrupt", {"prompt_id": queued})

        reply = asyncio.run(over_ws())
        assert reply["ok"] and reply["data"]["reason"] == "queued"
        # The queued prompt is still queued; the running one is interrupted without a reason.
        assert queued in [e[1] for e in http.queue()["queue_pending"]]
        assert http.post("/queue", {"delete": [queued]})["cancelled"] == [queued]
        assert http.interrupt(busy) == {"interrupted": [busy]}
