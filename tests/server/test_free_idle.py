"""POST /free on an idle worker: its models are unloaded and its output cache cleared within a
second (the worker used to notice the request only after its next prompt). A real worker with the
diffusion pack loads the tiny zoo's checkpoint, goes idle, and /system_stats shows it unloaded."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.server.conftest import REPO, start_server, wait_until


def test_free_unloads_an_idle_worker_within_a_second(tmp_path) -> None:
    pytest.importorskip("torch")
    from nodes.diffusion.zoo import write_tiny_zoo

    write_tiny_zoo(tmp_path / "models", seed=0)
    server = start_server(tmp_path, "--node-packs", "nodes.core,nodes.diffusion")
    try:
        prompt = json.loads((REPO / "workflows" / "txt2img.json").read_text())
        answer = httpx.post(f"{server.url}/prompt?wait=true", json={"prompt": prompt}, timeout=180)
        assert answer.status_code == 200 and answer.json()["status"] == "success", answer.text

        def worker() -> dict:
            return httpx.get(f"{server.url}/system_stats", timeout=10).json()["nodeloom"]["workers"][0]

        held = worker()
        assert held["model_manager"]["models"] and held["cache"]["entries"] > 0
        # An empty request frees nothing, as in ComfyUI (its idle worker would free at once).
        assert httpx.post(f"{server.url}/free", json={}, timeout=10).json() == {}
        time.sleep(1.0)  # idle: nothing queued, nothing running
        still = worker()
        assert still["running"] is None and still["model_manager"]["models"] and still["cache"]["entries"] > 0
        started = time.monotonic()
        assert httpx.post(f"{server.url}/free", json={"unload_models": True, "free_memory": True},
                          timeout=10).json() == {}
        freed = wait_until(lambda: (w := worker())["model_manager"]["models"] == [] and w, timeout=5)
        assert time.monotonic() - started < 1.0
        assert freed["cache"]["entries"] == 0 and freed["cache"]["nbytes"] == 0
        assert freed["model_manager"]["ram_used"] == 0
    finally:
        server.stop()
