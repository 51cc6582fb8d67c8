"""A training prompt through `nodeloom serve`: progress (with the loss line and previews) over the
websocket while it trains, the server answering meanwhile, and an interrupt that stops it with a
checkpoint, reported as interrupted."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from server.client import Client, Socket
from tests.server.conftest import REPO, RunningServer, start_server, state_of, wait_until


@pytest.fixture(scope="module")
def training_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from nodes.diffusion.zoo import write_example_inputs, write_tiny_zoo

    base = tmp_path_factory.mktemp("training-server")
    write_tiny_zoo(base / "models", seed=0)
    write_example_inputs(base / "input")
    running = start_server(base, "--node-packs", "nodes.core,nodes.diffusion,nodes.training")
    yield running
    running.stop()


@pytest.mark.slow
def test_training_reports_progress_over_the_websocket_and_is_interrupted(training_server: RunningServer) -> None:
    prompt = json.loads((REPO / "workflows" / "train_lora.json").read_text())
    prompt["3"]["inputs"].update(steps=5000, checkpoint_every=0, preview_every=2, run_name="served")

    async def scenario() -> tuple[str, list]:
        cid = uuid.uuid4().hex
        async with Socket(training_server.url, cid) as ws:
            await ws.next_event()
            with Client(training_server.url) as http:
                pid = http.submit(prompt, client_id=cid)["prompt_id"]
                seen: list = []
                while len([e for e in seen if isinstance(e, dict) and e["type"] == "progress"
                           and e["data"]["node"] == "3"]) < 4:
                    seen.append(await ws.next_event(timeout=120))
                # The server answers while the worker trains, and shows the prompt as running.
                assert httpx.get(f"{training_server.url}/system_stats", timeout=5).status_code == 200
                assert state_of(http, pid) == "running"
                http.interrupt(pid)
            return pid, seen + await ws.until_done(pid, timeout=120)

    pid, events = asyncio.run(scenario())
    progress = [e["data"] for e in events if isinstance(e, dict) and e["type"] == "progress" and e["data"]["node"] == "3"]
    assert progress[0]["max"] == 5000 and progress[-1]["value"] < 5000
    texts = [e for e in events if isinstance(e, bytes) and b"smoothed" in e]
    assert texts and b"it/s" in texts[-1] and b"ETA" in texts[-1]
    assert any(isinstance(e, bytes) and e[4:8] == b"\x00\x00\x00\x01" for e in events)  # a JPEG preview frame
    assert any(isinstance(e, dict) and e["type"] == "execution_interrupted" for e in events)
    with Client(training_server.url) as http:
        wait_until(lambda: state_of(http, pid) == "interrupted")
    runs = list((training_server.base / "output" / "training").glob("served-*"))
    state = json.loads((runs[0] / "state.json").read_text())
    assert state["status"] == "interrupted" and state["checkpoint"] == state["step"] > 0
