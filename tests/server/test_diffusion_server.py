"""The diffusion nodes behind the server: the shipped txt2img workflow on the tiny zoo, the model
manager's budget from `nodeloom serve --ram-budget`, and its report in /system_stats."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import REPO, RunningServer, start_server


@pytest.fixture(scope="module")
def diffusion_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from nodes.diffusion.zoo import write_tiny_zoo

    base = tmp_path_factory.mktemp("diffusion-server")
    write_tiny_zoo(base / "models", seed=0)
    running = start_server(base, "--node-packs", "nodes.core,nodes.diffusion", "--ram-budget", "1GB")
    yield running
    running.stop()


def test_txt2img_runs_and_the_model_manager_reports_its_budget(diffusion_server: RunningServer) -> None:
    prompt = json.loads((REPO / "workflows" / "txt2img.json").read_text())
    answer = httpx.post(f"{diffusion_server.url}/prompt?wait=true", json={"prompt": prompt}, timeout=120)
    assert answer.status_code == 200, answer.text
    entry = httpx.get(f"{diffusion_server.url}/history/{answer.json()['prompt_id']}").json()
    entry = next(iter(entry.values()))
    assert entry["status"]["status_str"] == "success"
    image = entry["outputs"]["9"]["images"][0]
    assert (diffusion_server.base / "output" / image["subfolder"] / image["filename"]).is_file()

    worker = httpx.get(f"{diffusion_server.url}/system_stats").json()["nodeloom"]["workers"][0]
    manager = worker["model_manager"]
    assert manager["ram_budget"] == 1 << 30 and manager["device"] == "cpu"
    assert {m["part"] for m in manager["models"]} >= {"unet", "vae"}
    assert 0 < manager["ram_used"] <= manager["ram_budget"]
