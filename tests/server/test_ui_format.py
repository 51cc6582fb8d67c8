"""UI-format workflows (what ComfyUI's editor saves) submitted over HTTP and the websocket, run
with the real core nodes; the UI workflow ends up embedded in the saved PNG, as ComfyUI does."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from server.client import Client, Socket
from tests.server.conftest import RunningServer, start_server


@pytest.fixture(scope="module")
def core_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("ui"), "--node-packs", "nodes.core")
    yield running
    running.stop()


def ui_workflow(color: int, width: int = 16, height: int = 8, prefix: str = "ui") -> dict[str, Any]:
    """EmptyImage → SaveImage as the editor saves it (v0.4: links are arrays)."""
    return {
        "last_node_id": 7, "last_link_id": 3, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 4, "type": "EmptyImage", "pos": [0, 0], "size": [300, 130], "flags": {}, "order": 0,
             "mode": 0, "inputs": [], "properties": {},
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3], "slot_index": 0}],
             "widgets_values": [width, height, 1, color]},
            {"id": 7, "type": "SaveImage", "pos": [400, 0], "size": [300, 270], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}], "outputs": [],
             "properties": {}, "widgets_values": [prefix]},
            {"id": 5, "type": "Note", "pos": [0, 300], "mode": 0, "inputs": [], "outputs": [],
             "widgets_values": ["notes are dropped"]},
        ],
        "links": [[3, 4, 0, 7, 0, "IMAGE"]],
    }


def _saved_png(server: RunningServer, outputs: dict[str, Any], node_id: str) -> Image.Image:
    image = outputs[node_id]["images"][0]
    with Client(server.url) as http:
        data = http.view(image["filename"], subfolder=image["subfolder"], type=image["type"])
    png = Image.open(io.BytesIO(data))
    png.load()
    return png


def test_ui_workflow_over_http_runs_and_is_embedded_in_the_png(core_server: RunningServer) -> None:
    workflow = ui_workflow(0xFF8000, prefix="ui_http")
    with Client(core_server.url) as http:
        done = http.submit(workflow, wait=True, timeout=120)
        assert done["status"] == "success", done
        png = _saved_png(core_server, done["outputs"], "7")
        assert png.size == (16, 8) and png.convert("RGB").getpixel((3, 3)) == (255, 128, 0)
        assert json.loads(png.text["workflow"]) == workflow
        api = json.loads(png.text["prompt"])
        assert {node["class_type"] for node in api.values()} == {"EmptyImage", "SaveImage"}
        assert api["7"]["inputs"]["images"] == ["4", 0] and api["4"]["inputs"]["color"] == 0xFF8000
        # The history keeps the converted prompt, and the UI workflow where the editor looks for it.
        entry = http.history(done["prompt_id"])[done["prompt_id"]]
        assert entry["prompt"][2] == api and entry["prompt"][3]["extra_pnginfo"]["workflow"] == workflow


def test_api_prompt_with_extra_pnginfo_workflow_is_embedded(core_server: RunningServer) -> None:
    editor_state = {"nodes": [], "links": [], "version": 0.4, "extra": {"note": "from the editor"}}
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 255}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "api"}}}
    with Client(core_server.url) as http:
        done = http.submit(prompt, extra_data={"extra_pnginfo": {"workflow": editor_state, "app": "nodeloom"}},
                           wait=True, timeout=120)
    png = _saved_png(core_server, done["outputs"], "2")
    assert json.loads(png.text["workflow"]) == editor_state and json.loads(png.text["app"]) == "nodeloom"
    assert json.loads(png.text["prompt"]) == prompt
    assert png.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_ui_workflow_over_the_websocket_submit_command(core_server: RunningServer) -> None:
    workflow = ui_workflow(0x00FF00, width=6, height=6, prefix="ui_ws")

    async def scenario() -> tuple[str, list[Any]]:
        async with Socket(core_server.url, uuid.uuid4().hex) as ws:
            await ws.next_event()
            answer = await ws.request("submit", {"prompt": workflow})
            assert answer["ok"], answer
            prompt_id = answer["data"]["prompt_id"]
            return prompt_id, await ws.until_done(prompt_id, timeout=120)

    prompt_id, events = asyncio.run(scenario())
    kinds = [e["type"] for e in events if isinstance(e, dict)]
    assert "execution_success" in kinds
    executed = next(e["data"] for e in events if isinstance(e, dict) and e["type"] == "executed")
    assert executed["node"] == "7"
    png = _saved_png(core_server, {"7": executed["output"]}, "7")
    assert png.size == (6, 6) and png.convert("RGB").getpixel((5, 5)) == (0, 255, 0)
    assert json.loads(png.text["workflow"]) == workflow


def test_bad_ui_workflow_names_the_node_and_input(core_server: RunningServer) -> None:
    unknown = ui_workflow(0)
    unknown["nodes"][0]["type"] = "NoSuchNode"
    response = httpx.post(f"{core_server.url}/prompt", json={"prompt": unknown})
    assert response.status_code == 400
    assert "NoSuchNode" in json.dumps(response.json())
    too_wide = ui_workflow(0, width=10**9)
    body = httpx.post(f"{core_server.url}/prompt", json={"prompt": too_wide}).json()
    error = body["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "width"
    assert body["node_errors"]["4"]["class_type"] == "EmptyImage"


def test_damaged_ui_workflow_is_a_400_naming_what_is_wrong(core_server: RunningServer) -> None:
    damaged = ui_workflow(0)
    damaged["extra"] = "x"  # answered 500 (an AttributeError in the conversion)
    response = httpx.post(f"{core_server.url}/prompt", json={"prompt": damaged})
    assert response.status_code == 400 and "'extra' must be an object" in response.json()["error"]["details"]
