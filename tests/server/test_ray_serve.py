"""``nodeloom serve --executor ray``: the queue in the server, prompts run by Ray actors, and the
websocket clients see exactly what local workers produce, interrupts included."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from server.client import Client, Socket
from tests.server.conftest import RunningServer, color_prompt, slow_prompt, start_server, wait_until

ray = pytest.importorskip("ray")
# A Ray, a server process and two actors: half a minute on two cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A local Ray of 2 CPUs, and a server that joins it with ``--address``."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    server = start_server(tmp_path_factory.mktemp("ray-server"), "--executor", "ray",
                          "--address", context.address_info["gcs_address"])
    yield server
    server.stop()
    ray.shutdown()


def test_prompts_run_on_actors_with_comfyui_events(ray_server: RunningServer) -> None:
    async def scenario() -> tuple[str, list]:
        cid = uuid.uuid4().hex
        async with Socket(ray_server.url, cid) as ws:
            assert (await ws.next_event())["type"] == "status"
            with Client(ray_server.url) as http:
                prompt_id = http.submit(color_prompt(red=120, green=7, size=4), client_id=cid)["prompt_id"]
            return prompt_id, await ws.until_done(prompt_id)

    prompt_id, events = asyncio.run(scenario())
    kinds = [e["type"] for e in events if e["type"] != "progress_state"]
    assert kinds == ["execution_start", "execution_cached", "executing", "executing", "executed",
                     "execution_success", "executing"]
    image = next(e["data"] for e in events if e["type"] == "executed")["output"]["images"][0]
    with Client(ray_server.url) as http:
        assert Image.open(io.BytesIO(http.view(image["filename"]))).getpixel((0, 0)) == (120, 7, 0)
        entry = http.history(prompt_id)[prompt_id]
        assert entry["status"]["status_str"] == "success"
        workers = http.get("/system_stats")["nodeloom"]["workers"]
    assert len(workers) == 2 and {w["executor"] for w in workers} == {"ray"}
    assert all(w["state"] == "ready" and w["device"] == "ray:cpu" for w in workers)


def test_a_running_prompt_is_interrupted_with_previews_on_the_way(ray_server: RunningServer) -> None:
    async def scenario() -> tuple[str, list, dict]:
        cid = uuid.uuid4().hex
        async with Socket(ray_server.url, cid) as ws:
            await ws.next_event()
            with Client(ray_server.url) as http:
                prompt_id = http.submit(slow_prompt(steps=400, delay=0.05), client_id=cid)["prompt_id"]
                seen = []
                while not any(isinstance(e, dict) and e["type"] == "progress" for e in seen):
                    seen.append(await ws.next_event())
                answer = http.interrupt(prompt_id)
            return prompt_id, seen + await ws.until_done(prompt_id), answer

    prompt_id, events, answer = asyncio.run(scenario())
    assert answer == {"interrupted": [prompt_id]}
    progress = next(e["data"] for e in events if isinstance(e, dict) and e["type"] == "progress")
    assert progress["max"] == 400 and progress["node"] == "1" and progress["prompt_id"] == prompt_id
    assert any(isinstance(e, bytes) for e in events), "previews reach the client as binary frames"
    interrupted = next(e["data"] for e in events if isinstance(e, dict) and e["type"] == "execution_interrupted")
    assert interrupted["prompt_id"] == prompt_id and interrupted["node_id"] == "1"
    with Client(ray_server.url) as http:
        assert http.history(prompt_id)[prompt_id]["status"]["status_str"] == "error"
        assert http.history(prompt_id)[prompt_id]["status"]["state"] == "interrupted"


def test_a_killed_actor_fails_its_prompt_and_is_replaced(ray_server: RunningServer) -> None:
    with Client(ray_server.url) as http:
        running = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        worker = wait_until(lambda: next((w for w in http.get("/system_stats")["nodeloom"]["workers"]
                                          if w["running"] == running), None))
        actor = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                     if a["name"].startswith(f"nodeloom-worker-{worker['index']}."))
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
        failed = wait_until(lambda: http.history(running).get(running))
        assert failed["status"]["status_str"] == "error"
        error = failed["status"]["messages"][-1][1]
        assert "died" in error["exception_message"] and error["exception_type"] == "WorkerDied"
        wait_until(lambda: all(w["state"] == "ready" for w in http.get("/system_stats")["nodeloom"]["workers"]))
        assert http.submit(color_prompt(blue=9), wait=True)["status"] == "success"


def test_sigterm_stops_the_server_gracefully(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Ray's fatal-signal handler must not take SIGTERM from the server (a stack dump, the queue
    and the actors never stopped)."""
    import signal

    base = tmp_path_factory.mktemp("ray-sigterm")
    server = start_server(base, "--executor", "ray", "--workers", "1")
    with Client(server.url) as http:
        assert http.get("/system_stats")["nodeloom"]["workers"][0]["executor"] == "ray"
    server.stop(signal.SIGTERM)
    log = next(base.glob("server-*.log")).read_text()
    # uvicorn stops gracefully and then raises the signal again (exit -15); Ray's handler would
    # have dumped a stack and killed the process at once.
    assert "SIGTERM received" not in log, log[-2000:]
    assert server.process.returncode == -signal.SIGTERM
