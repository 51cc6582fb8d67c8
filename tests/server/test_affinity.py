"""Two CPU workers: a prompt goes to the worker that already holds the model files it picks, and the
history says which worker ran it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.client import Client
from tests.server.conftest import RunningServer, slow_prompt, start_server


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    base: Path = tmp_path_factory.mktemp("affinity")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("alpha", "beta"):
        (checkpoints / f"{name}.safetensors").write_bytes(f"{name}-weights".encode() + bytes(64))
    running = start_server(base, "--devices", "cpu,cpu")
    yield running
    running.stop()


def _model_prompt(name: str) -> dict[str, Any]:
    return {"1": {"class_type": "TestModel", "inputs": {"ckpt_name": f"{name}.safetensors"}}}


def _run(http: Client, name: str) -> tuple[int, dict[str, Any]]:
    """Run a prompt loading ``name``; the index of the worker that ran it, and its outputs."""
    done = http.submit(_model_prompt(name), wait=True, timeout=60)
    assert done["status"] == "success", done
    entry = http.history(done["prompt_id"])[done["prompt_id"]]
    return entry["status"]["worker"]["index"], entry["outputs"]


def _workers(http: Client) -> list[dict[str, Any]]:
    return http.get("/system_stats")["nodeloom"]["workers"]


def _wait_idle(http: Client) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not any(w["running"] or w["queued"] for w in _workers(http)):
            return
        time.sleep(0.05)
    raise AssertionError("workers still busy")


def test_prompt_goes_to_the_worker_holding_its_model(two_workers: RunningServer) -> None:
    with Client(two_workers.url, timeout=60) as http:
        workers = _workers(http)
        assert [w["device"] for w in workers] == ["cpu", "cpu"] and workers[0]["pid"] != workers[1]["pid"]
        # Keep worker 0 busy so that beta is first loaded by worker 1.
        busy = http.submit(slow_prompt(steps=400, delay=0.05, previews=False))["prompt_id"]
        deadline = time.monotonic() + 30
        while _workers(http)[0]["running"] != busy:
            assert time.monotonic() < deadline, "worker 0 never started the slow prompt"
            time.sleep(0.05)
        index, outputs = _run(http, "beta")
        assert index == 1
        head, pid = outputs["1"]["text"]
        assert head.startswith("beta-weights") and int(pid) == workers[1]["pid"]
        http.interrupt(busy)
        _wait_idle(http)
        assert _workers(http)[1]["models"] == ["checkpoints/beta.safetensors"]

        # Both idle: beta still goes to worker 1, although worker 0 comes first otherwise.
        assert _run(http, "beta")[0] == 1
        assert _run(http, "alpha")[0] == 0
        assert _run(http, "beta")[0] == 1
        assert _run(http, "alpha")[0] == 0
        busy_entry = http.history(busy)[busy]["status"]
        assert busy_entry["state"] == "interrupted" and busy_entry["worker"]["index"] == 0

        # /free unloads everything: no worker is preferred any more.
        assert http.post("/free", {"unload_models": True, "free_memory": True}) == {}
        assert all(w["models"] == [] for w in _workers(http))
        assert _run(http, "beta")[0] == 0


def test_workers_are_plain_children_sized_to_their_share_of_cores(two_workers: RunningServer) -> None:
    children = Path(f"/proc/{two_workers.process.pid}/task/{two_workers.process.pid}/children").read_text().split()
    with Client(two_workers.url) as http:
        pids = sorted(w["pid"] for w in _workers(http))
    # Only the two workers: no resource tracker or other helper process beside them.
    assert sorted(int(c) for c in children) == pids
    cores = len(os.sched_getaffinity(0))
    for pid in pids:
        environ = dict(entry.split("=", 1) for entry in
                       Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in entry)
        assert environ["MALLOC_ARENA_MAX"] == "2"
        assert environ["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS", str(max(1, cores // 2)))
        assert b"server.execution.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
