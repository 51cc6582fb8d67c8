"""Why a prompt failed, as a user reads it: the editor's queue panel (/jobs), /history and the
websocket execution_error all carry the real reason — the node exception with its node id, the
validation message of a workflow refused by the worker, or the worker that died."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from server.client import Client
from tests.server.conftest import REPO, RunningServer, slow_prompt, start_server, state_of
from tests.server.conftest import wait_until as _wait

def _failed(http: Client, prompt_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The prompt's /jobs entry and /history status once it has failed."""
    job = _wait(lambda: (j := http.get(f"/jobs/{prompt_id}"))["status"] == "failed" and j)
    return job, http.history(prompt_id)[prompt_id]["status"]


def _worker(http: Client, index: int = 0) -> dict[str, Any]:
    return http.get("/system_stats")["nodeloom"]["workers"][index]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> RunningServer:
    running = start_server(tmp_path_factory.mktemp("reasons"))
    yield running  # type: ignore[misc]
    running.stop()


def test_node_exception_names_the_node(served: RunningServer) -> None:
    with Client(served.url, timeout=60) as http:
        done = http.submit({"1": {"class_type": "TestFail", "inputs": {"message": "bad input tensor"}}},
                           wait=True, timeout=60)
        job, status = _failed(http, done["prompt_id"])
        error = job["execution_error"]
        assert (error["node_id"], error["node_type"]) == ("1", "TestFail")
        assert (error["exception_type"], error["exception_message"]) == ("ValueError", "bad input tensor")
        assert status["error"]["type"] == "node" and status["error"]["node_id"] == "1"
        assert status["error"]["exception_message"] == "bad input tensor"


def test_validation_failure_in_the_worker_shows_the_validation_message(served: RunningServer) -> None:
    checkpoint = served.base / "models" / "checkpoints" / "vanishing.safetensors"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"weights")
    with Client(served.url, timeout=60) as http:
        busy = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        _wait(lambda: _worker(http)["running"] == busy)
        # Valid when submitted; gone by the time the worker validates it before running.
        doomed = http.submit({"1": {"class_type": "TestModel", "inputs": {"ckpt_name": "vanishing.safetensors"}}})
        checkpoint.unlink()
        http.interrupt(busy)
        job, status = _failed(http, doomed["prompt_id"])
        assert "vanishing.safetensors" in job["execution_error"]["exception_message"]
        assert job["execution_error"]["exception_type"] == "WorkflowInvalid"
        assert status["error"]["type"] == "validation"
        assert status["error"]["validation"]["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"
        assert [kind for kind, _ in status["messages"]][-1] == "execution_error"


def test_worker_killed_mid_prompt_says_the_worker_died(served: RunningServer) -> None:
    with Client(served.url, timeout=60) as http:
        victim = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        _wait(lambda: _worker(http)["running"] == victim)
        os.kill(_worker(http)["pid"], signal.SIGKILL)
        job, status = _failed(http, victim)
        error = job["execution_error"]
        assert error["exception_type"] == "WorkerDied" and "died from SIGKILL" in error["exception_message"]
        assert (error["node_id"], error["node_type"]) == ("1", "TestSlow")
        assert status["error"]["type"] == "worker_died"
        _wait(lambda: _worker(http)["state"] == "ready")


def test_missing_checkpoint_names_the_servers_models_folder(tmp_path: Path) -> None:
    base = tmp_path / "elsewhere"
    (base / "models" / "checkpoints").mkdir(parents=True)
    assert Path.cwd() != base and REPO != base  # the server runs from the repository, not its base
    server = start_server(base)
    try:
        with Client(server.url, timeout=60) as http:
            response = http.http.post("/prompt", json={"prompt": {
                "1": {"class_type": "TestModel", "inputs": {"ckpt_name": "absent.safetensors"}}}})
            assert response.status_code == 400
            details = response.json()["node_errors"]["1"]["errors"][0]["details"]
            assert str(base / "models" / "checkpoints") in details
            assert str(REPO / "models") not in details
    finally:
        server.stop()


def test_long_job_leaves_the_other_worker_to_short_prompts(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--devices", "cpu,cpu")
    try:
        with Client(server.url, timeout=60) as http:
            assert http.get("/object_info/TestLong")["TestLong"].get("long_running") is True
            long_id = http.submit({"1": {"class_type": "TestLong", "inputs": {
                "steps": 400, "delay": 0.05, "previews": False}}})["prompt_id"]
            _wait(lambda: any(w["running"] == long_id for w in http.get("/system_stats")["nodeloom"]["workers"]))
            short = [http.submit(slow_prompt(steps=2, delay=0.2, previews=False))["prompt_id"] for _ in range(4)]
            for prompt_id in short:
                _wait(lambda pid=prompt_id: state_of(http, pid) == "success", timeout=15)
            assert state_of(http, long_id) == "running"
            http.interrupt(long_id)
    finally:
        server.stop()
