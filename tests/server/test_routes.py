"""The queue-control routes and messages not covered by test_e2e: clearing the queue and the history,
explicit queue numbers, interrupt without a body, history windows, /view channels, and the shapes
of progress_state and execution_interrupted, plus the websocket cancel command."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from typing import Any

import httpx
from PIL import Image

from server.client import Client, Socket
from tests.server.conftest import RunningServer, color_prompt, slow_prompt

PROGRESS_NODE_KEYS = {"value", "max", "state", "node_id", "prompt_id", "display_node_id", "parent_node_id",
                      "real_node_id"}


def _wait_running(http: Client, prompt_id: str) -> None:
    deadline = time.monotonic() + 30
    while [e[1] for e in http.queue()["queue_running"]] != [prompt_id]:
        assert time.monotonic() < deadline, f"{prompt_id} never started"
        time.sleep(0.05)


def test_clear_queue_explicit_numbers_and_bodiless_interrupt(server: RunningServer) -> None:
    with Client(server.url) as http:
        busy = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        _wait_running(http, busy)
        late = http.post("/prompt", {"prompt": color_prompt(red=11), "number": 1e9})
        early = http.post("/prompt", {"prompt": color_prompt(red=12), "number": -1e9})
        plain = http.submit(color_prompt(red=13))
        assert late["number"] == 1e9 and early["number"] == -1e9
        pending = [e[1] for e in http.queue()["queue_pending"]]
        # Without a number a prompt queues behind the highest one, as it would behind any other.
        assert pending == [early["prompt_id"], late["prompt_id"], plain["prompt_id"]]
        cancelled = http.post("/queue", {"clear": True})["cancelled"]
        assert sorted(cancelled) == sorted(pending) and http.queue()["queue_pending"] == []
        for prompt_id in pending:
            assert http.history(prompt_id) == {} and prompt_id not in http.get("/history")
        # ComfyUI's own client posts /interrupt with no body: the running prompt stops.
        response = httpx.post(f"{server.url}/interrupt")
        assert response.status_code == 200 and response.json()["interrupted"] == [busy]
        deadline = time.monotonic() + 30
        while busy not in http.history(busy):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http.history(busy)[busy]["status"]["state"] == "interrupted"
        assert http.get("/prompt")["exec_info"]["queue_remaining"] == 0
        bad = httpx.post(f"{server.url}/prompt", json={"prompt": color_prompt(), "number": "first"})
        assert bad.status_code == 400


def test_history_windows_and_clear(server: RunningServer) -> None:
    with Client(server.url) as http:
        done = [http.submit(color_prompt(blue=100 + i), wait=True)["prompt_id"] for i in range(3)]
        newest_two = list(http.get("/history", max_items=2))
        assert newest_two == done[1:]
        assert list(http.get("/history", max_items=1, offset=1)) == [done[1]]
        assert list(http.get("/api/history", max_items=1, offset=2)) == [done[0]]
        assert httpx.get(f"{server.url}/history", params={"offset": 2**70}).status_code == 400
        assert http.post("/history", {"clear": True}) == {}
        assert http.get("/history") == {} and http.history(done[0]) == {}


def test_view_channels(server: RunningServer) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (2, 2), (200, 100, 50, 60)).save(buffer, format="PNG")
    with Client(server.url) as http:
        stored = http.upload_image("channels.png", buffer.getvalue(), overwrite=True)
        rgb = Image.open(io.BytesIO(http.view(stored["name"], type="input", channel="rgb")))
        alpha = Image.open(io.BytesIO(http.view(stored["name"], type="input", channel="a")))
        whole = Image.open(io.BytesIO(http.view(stored["name"], type="input")))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (200, 100, 50)
    assert alpha.getpixel((1, 1)) == (0, 0, 0, 60)
    assert whole.getpixel((0, 0)) == (200, 100, 50, 60)
    refused = httpx.get(f"{server.url}/view", params={"filename": "channels.png", "type": "input", "channel": "x"})
    assert refused.status_code == 400 and "channel" in refused.json()["error"]["message"]


def test_interrupt_over_the_websocket_and_message_shapes(server: RunningServer) -> None:
    async def scenario() -> tuple[str, str, list[Any], dict[str, Any]]:
        cid = uuid.uuid4().hex
        async with Socket(server.url, cid) as ws:
            await ws.next_event()
            running = (await ws.request("submit", {"prompt": slow_prompt(steps=400, delay=0.05, previews=False),
                                                   "client_id": cid}))["data"]["prompt_id"]
            queued = (await ws.request("submit", {"prompt": color_prompt(red=77)}))["data"]["prompt_id"]
            seen: list[Any] = []
            while not any(isinstance(e, dict) and e["type"] == "progress" for e in seen):
                seen.append(await ws.next_event())
            cancel = await ws.request("cancel", {"prompt_ids": [queued, "unknown-id"]})
            assert cancel["ok"] and cancel["data"]["cancelled"] == [queued]
            bad = await ws.request("cancel", {"prompt_ids": "all"})
            assert not bad["ok"] and bad["status"] == 400
            interrupted = await ws.request("interrupt", {})
            assert interrupted["data"]["interrupted"] == [running]
            seen += await ws.until_done(running)
            history = (await ws.request("history", {"prompt_id": queued}))["data"]
            return running, queued, seen, history

    running, queued, events, history = asyncio.run(scenario())
    assert history == {}  # cancelled before it ran: never in the history, as in ComfyUI
    messages = [e for e in events if isinstance(e, dict)]
    stopped = next(e["data"] for e in messages if e["type"] == "execution_interrupted")
    assert set(stopped) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert stopped["prompt_id"] == running and stopped["node_id"] == "1" and stopped["node_type"] == "TestSlow"
    assert stopped["executed"] == []
    states = [e["data"] for e in messages if e["type"] == "progress_state"]
    assert states and all(set(s) == {"prompt_id", "nodes"} and s["prompt_id"] == running for s in states)
    for state in states:
        for node_id, node in state["nodes"].items():
            assert set(node) == PROGRESS_NODE_KEYS and node["node_id"] == node_id == "1"
            assert node["state"] in ("pending", "running", "finished", "error") and node["max"] >= node["value"]
    progress = [e["data"] for e in messages if e["type"] == "progress"]
    assert progress and set(progress[0]) == {"value", "max", "prompt_id", "node"} and progress[0]["max"] == 400
    assert messages[-1]["type"] == "executing" and messages[-1]["data"]["node"] is None
    assert "execution_success" not in [e["type"] for e in messages]


def test_a_prompt_with_some_invalid_outputs_runs_the_valid_ones(server: RunningServer) -> None:
    bad = color_prompt(red=-5)
    prompt = {**color_prompt(red=11), "3": bad["1"], "4": {**bad["2"], "inputs": {**bad["2"]["inputs"], "color": ["3", 0]}}}
    answer = httpx.post(f"{server.url}/prompt", json={"prompt": prompt}, params={"wait": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success" and list(body["outputs"]) == ["2"]
    assert body["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert body["node_errors"]["3"]["dependent_outputs"] == ["4"]
    refused = httpx.post(f"{server.url}/prompt", json={"prompt": bad})
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "prompt_outputs_failed_validation"
