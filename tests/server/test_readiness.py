"""The server answers only once a worker is warm: its first /system_stats already shows every
worker ready (with how long it took), and a prompt submitted at that moment runs at once."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server.conftest import color_prompt, start_server


def test_first_answer_comes_from_a_server_with_a_ready_worker(tmp_path: Path) -> None:
    server = start_server(tmp_path, wait_ready=False)  # returns on the very first 200
    try:
        stats = httpx.get(f"{server.url}/system_stats", timeout=10).json()
        workers = stats["nodeloom"]["workers"]
        assert workers and all(w["state"] == "ready" and w["ready"] is True for w in workers)
        assert all(isinstance(w["start_seconds"], float) and w["start_seconds"] > 0 for w in workers)
        answer = httpx.post(f"{server.url}/prompt", params={"wait": "true"}, timeout=30,
                            json={"prompt": color_prompt(red=9, size=4)})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "success"
    finally:
        server.stop()
