"""End to end against a real server process: HTTP + websocket, event order and payload shapes."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import uuid

import httpx
import pytest
from PIL import Image

from server.client import Client, ServerError, Socket
from tests.server.conftest import color_prompt, slow_prompt


def run(coro):
    return asyncio.run(coro)


def test_prompt_runs_and_events_follow_comfyui_order(server):
    async def scenario():
        cid = uuid.uuid4().hex
        async with Socket(server.url, cid) as ws:
            hello = await ws.next_event()
            assert hello["type"] == "status" and hello["data"]["sid"] == cid
            assert "queue_remaining" in hello["data"]["status"]["exec_info"]
            with Client(server.url) as http:
                answer = http.submit(color_prompt(red=200, size=4), client_id=cid)
            assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
            return answer["prompt_id"], await ws.until_done(answer["prompt_id"])

    prompt_id, events = run(scenario())
    kinds = [e["type"] for e in events if e["type"] != "progress_state"]
    assert kinds == ["execution_start", "execution_cached", "executing", "executing", "executed",
                     "execution_success", "executing"]
    executed = next(e["data"] for e in events if e["type"] == "executed")
    image = executed["output"]["images"][0]
    assert executed["node"] == "2" and executed["display_node"] == "2"
    assert set(image) == {"filename", "subfolder", "type"} and image["type"] == "output"
    assert events[-1]["data"] == {"node": None, "display_node": None, "prompt_id": prompt_id}
    state = [e["data"] for e in events if e["type"] == "progress_state"][-1]
    assert {n: s["state"] for n, s in state["nodes"].items()} == {"1": "finished", "2": "finished"}
    with Client(server.url) as http:
        entry = http.history(prompt_id)[prompt_id]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
        assert entry["outputs"]["2"]["images"][0] == image
        assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["2"]
        png = http.view(image["filename"])
        assert Image.open(io.BytesIO(png)).getpixel((0, 0)) == (200, 0, 0)
        webp = http.view(image["filename"], preview="webp;90")
        assert Image.open(io.BytesIO(webp)).format == "WEBP"
        # the same routes under /api, as ComfyUI
        assert http.get(f"/api/history/{prompt_id}")[prompt_id]["outputs"] == entry["outputs"]


def test_second_identical_prompt_is_cached(server):
    with Client(server.url) as http:
        http.submit(color_prompt(green=7), wait=True)
        again = http.submit(color_prompt(green=7), wait=True)
        messages = dict((m[0], m[1]) for m in again["messages"])
        assert "2" in messages["execution_cached"]["nodes"]
        assert again["status"] == "success"


def test_validation_error_has_comfyui_shape(server):
    bad = color_prompt(red=999)
    bad["3"] = {"class_type": "TestSave", "inputs": {"color": ["9", 0], "filename_prefix": "x", "size": 1}}
    response = httpx.post(f"{server.url}/prompt", json={"prompt": bad})
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["1"]["errors"]
    assert errors[0]["type"] == "value_bigger_than_max" and errors[0]["extra_info"]["input_name"] == "red"
    assert body["node_errors"]["3"]["class_type"] == "TestSave"
    assert body["node_errors"]["3"]["errors"][0]["extra_info"]["input_name"] == "color"
    unknown = httpx.post(f"{server.url}/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert unknown.status_code == 400 and unknown.json()["node_errors"]["1"]["errors"][0]["type"] == "missing_node_type"


def test_bad_bodies_get_400_not_500(server):
    for body in (b"{bad", b"[]", b'{"prompt": 3}', b'{"prompt": {"1": 5}}', b'{"extra_data": 1, "prompt": {}}'):
        response = httpx.post(f"{server.url}/prompt", content=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"]
    for path, body in (("/queue", b'{"delete": 5}'), ("/history", b"nope"), ("/interrupt", b'{"prompt_id": 1}')):
        assert httpx.post(f"{server.url}{path}", content=body).status_code == 400


def test_node_failure_reports_execution_error(server):
    async def scenario():
        cid = uuid.uuid4().hex
        async with Socket(server.url, cid) as ws:
            await ws.next_event()
            with Client(server.url) as http:
                pid = http.submit({"5": {"class_type": "TestFail", "inputs": {"message": "no paint left"}}},
                                  client_id=cid)["prompt_id"]
            return pid, await ws.until_done(pid)

    pid, events = run(scenario())
    error = next(e["data"] for e in events if e["type"] == "execution_error")
    assert error["node_id"] == "5" and error["node_type"] == "TestFail"
    assert error["exception_message"] == "no paint left" and error["exception_type"] == "ValueError"
    assert set(error) >= {"prompt_id", "executed", "traceback", "current_inputs", "current_outputs"}
    with Client(server.url) as http:
        assert http.history(pid)[pid]["status"]["status_str"] == "error"


def test_progress_previews_and_metadata_frames(server):
    async def scenario(metadata: bool):
        cid = uuid.uuid4().hex
        async with Socket(server.url, cid, preview_metadata=metadata) as ws:
            await ws.next_event()
            if metadata:
                flags = await ws.next_event()
                assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"]
            with Client(server.url) as http:
                pid = http.submit(slow_prompt(steps=3, delay=0.01), client_id=cid)["prompt_id"]
            return pid, await ws.until_done(pid)

    pid, events = run(scenario(False))
    progress = [e["data"] for e in events if isinstance(e, dict) and e["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    frames = [e for e in events if isinstance(e, bytes)]
    assert len(frames) == 3 and struct.unpack(">II", frames[0][:8]) == (1, 2)
    assert Image.open(io.BytesIO(frames[0][8:])).format == "PNG"
    pid, events = run(scenario(True))
    frame = next(e for e in events if isinstance(e, bytes))
    kind, length = struct.unpack(">II", frame[:8])
    meta = json.loads(frame[8:8 + length])
    assert kind == 4 and meta["prompt_id"] == pid and meta["node_id"] == "1" and meta["image_type"] == "image/png"


def test_events_go_only_to_the_submitting_client(server):
    async def scenario():
        async with Socket(server.url, "alice") as alice, Socket(server.url, "bob") as bob:
            await alice.next_event()
            await bob.next_event()
            with Client(server.url) as http:
                pid = http.submit(color_prompt(blue=3), client_id="alice")["prompt_id"]
            await alice.until_done(pid)
            seen = []
            while True:
                try:
                    seen.append(await bob.next_event(timeout=0.5))
                except asyncio.TimeoutError:
                    return seen

    seen = run(scenario())
    assert seen and all(e["type"] == "status" for e in seen)


def test_native_commands_over_the_websocket(server):
    async def scenario():
        async with Socket(server.url, uuid.uuid4().hex) as ws:
            await ws.next_event()
            buffer = io.BytesIO()
            Image.new("RGB", (3, 3), (1, 2, 3)).save(buffer, format="PNG")
            uploaded = await ws.upload("ws_upload.png", buffer.getvalue())
            assert uploaded["ok"] and uploaded["data"]["type"] == "input"
            refused = await ws.upload("../evil.png", buffer.getvalue())
            assert not refused["ok"] and refused["status"] == 400
            schemas = await ws.request("object_info", {"class": "TestColor"})
            assert schemas["data"]["TestColor"]["input_order"]["required"] == ["red", "green", "blue"]
            submitted = await ws.request("submit", {"prompt": color_prompt(red=9)})
            pid = submitted["data"]["prompt_id"]
            await ws.until_done(pid)
            history = await ws.request("history", {"prompt_id": pid})
            assert history["data"][pid]["status"]["status_str"] == "success"
            invalid = await ws.request("submit", {"prompt": color_prompt(red=-1)})
            assert not invalid["ok"] and invalid["error"]["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
            queue = await ws.request("queue")
            assert set(queue["data"]) == {"queue_running", "queue_pending"}
            assert (await ws.request("fly"))["ok"] is False

    run(scenario())


def test_queue_cancel_interrupt_and_pending_history(server):
    with Client(server.url) as http:
        running = http.submit(slow_prompt(steps=200, delay=0.05, previews=False))["prompt_id"]
        queued = [http.submit(color_prompt(red=i + 1))["prompt_id"] for i in range(3)]
        front = http.submit(color_prompt(red=99), front=True)["prompt_id"]
        for _ in range(100):
            if http.queue()["queue_running"]:
                break
            asyncio.run(asyncio.sleep(0.05))
        queue = http.queue()
        assert [e[1] for e in queue["queue_running"]] == [running]
        assert [e[1] for e in queue["queue_pending"]] == [front] + queued
        assert http.get("/prompt")["exec_info"]["queue_remaining"] == 5
        # As ComfyUI: nothing in /history until a prompt has finished; /jobs has its state.
        assert http.history(queued[0]) == {} and http.history(running) == {}
        assert http.job(queued[0])["status"] == "pending"
        assert http.job(running)["execution_status"]["state"] == "running"
        assert set(http.get("/history")).isdisjoint([running, *queued])
        assert http.post("/queue", {"delete": [queued[1]]})["cancelled"] == [queued[1]]
        assert http.history(queued[1]) == {}
        with pytest.raises(ServerError) as gone:
            http.job(queued[1])
        assert gone.value.status == 404
        assert http.interrupt(running)["interrupted"] == [running]
        done = http.submit(color_prompt(red=5), wait=True)
        assert done["status"] == "success"
        assert http.history(running)[running]["status"]["state"] == "interrupted"
        assert http.history(queued[2])[queued[2]]["status"]["status_str"] == "success"
        listed = http.get("/history", max_items=2)
        assert len(listed) == 2 and list(listed)[-1] == done["prompt_id"]
        http.post("/history", {"delete": [done["prompt_id"]]})
        assert http.history(done["prompt_id"]) == {}


def test_info_routes(server):
    with Client(server.url) as http:
        info = http.get("/object_info")
        assert set(info["TestSave"]) >= {"input", "input_order", "output", "output_is_list", "output_name", "name",
                                         "display_name", "description", "category", "output_node", "python_module"}
        assert info["TestSave"]["output_node"] is True
        assert http.get("/object_info/TestColor")["TestColor"]["output"] == ["COLOR"]
        assert http.get("/object_info/Missing") == {}
        stats = http.get("/system_stats")
        assert stats["system"]["ram_total"] > 0 and stats["devices"][0]["type"] == "cpu"
        assert http.get("/features")["supports_preview_metadata"] is True
        # The only checkpoint on a fresh server is the bundled demo model (nodes/demo/models).
        assert "checkpoints" in http.get("/models") and http.get("/models/checkpoints") == ["nodeloom-demo.safetensors"]
        assert http.post("/free", {"unload_models": True}) == {}
        assert "/prompt" in http.get("/openapi.json")["paths"]
