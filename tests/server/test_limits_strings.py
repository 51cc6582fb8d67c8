"""Oversized identifiers and strings are refused at submission in milliseconds, naming node and
input in ComfyUI's error shape; a filename_prefix that leaves the output folder is a validation
error at submission; a large prompt is validated off the event loop, so other requests keep being
answered meanwhile."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import RunningServer, color_prompt, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The large-prompt test has 40 000 nodes, past the default --max-nodes.
    running = start_server(tmp_path_factory.mktemp("server"), "--max-nodes", "50000")
    yield running
    running.stop()

TEN_MB = "A" * 10_000_000


def _submit(server: RunningServer, prompt: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = httpx.post(f"{server.url}/prompt", content=json.dumps({"prompt": prompt}), timeout=60)
    return answer, time.monotonic() - started


def test_a_10mb_filename_prefix_is_refused_at_once(server: RunningServer) -> None:
    prompt = color_prompt()
    prompt["2"]["inputs"]["filename_prefix"] = TEN_MB
    answer, seconds = _submit(server, prompt)
    assert answer.status_code == 400 and seconds < 3, seconds
    body = answer.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "value_too_long" and error["extra_info"]["input_name"] == "filename_prefix"
    assert error["extra_info"]["received_length"] == 10_000_000
    assert "string value is too long" in error["message"] and len(answer.content) < 10_000
    assert httpx.get(f"{server.url}/queue", timeout=5).json()["queue_pending"] == []


def test_a_10mb_class_type_is_refused_at_once(server: RunningServer) -> None:
    answer, seconds = _submit(server, {"1": {"class_type": TEN_MB, "inputs": {}}})
    assert answer.status_code == 400 and seconds < 3, seconds
    node = answer.json()["node_errors"]["1"]
    assert node["class_type"].endswith("(10000000 characters)")
    assert node["errors"][0]["message"] == "class_type is too long: 10000000 characters, at most 256"
    assert len(answer.content) < 10_000


def test_a_filename_prefix_leaving_the_output_folder_is_refused_at_submission(server: RunningServer) -> None:
    for prefix in ("../../escape", "/tmp/escape", "a/../../escape"):
        prompt = color_prompt()
        prompt["2"]["inputs"]["filename_prefix"] = prefix
        answer, _ = _submit(server, prompt)
        assert answer.status_code == 400, (prefix, answer.text)
        error = answer.json()["node_errors"]["2"]["errors"][0]
        assert error["type"] == "invalid_input_value" and error["extra_info"]["input_name"] == "filename_prefix"
        assert error["message"] == "Path is not inside the output folder"
    prompt = color_prompt()
    prompt["2"]["inputs"]["filename_prefix"] = "sub/../kept"
    assert _submit(server, prompt)[0].status_code == 200


def test_a_large_prompt_is_validated_off_the_event_loop(server: RunningServer) -> None:
    # ~12 MB: forty thousand nodes, each with a 256-character note.
    prompt = {str(i): {"class_type": "TestColor", "inputs": {"red": 1, "green": 2, "blue": 3},
                       "_meta": {"title": "t" * 256}} for i in range(40_000)}
    prompt["save"] = {"class_type": "TestSave", "inputs": {"color": ["bad", 0], "filename_prefix": "x", "size": 1}}
    prompt["bad"] = {"class_type": "TestColor", "inputs": {"red": 999}}
    outcome: list[tuple[httpx.Response, float]] = []
    thread = threading.Thread(target=lambda: outcome.append(_submit(server, prompt)))
    thread.start()
    latencies = []
    while thread.is_alive():
        started = time.monotonic()
        assert httpx.get(f"{server.url}/prompt", timeout=30).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    thread.join()
    answer, seconds = outcome[0]
    assert answer.status_code == 400 and "bad" in answer.json()["node_errors"]
    assert len(latencies) >= 3 and max(latencies) < max(0.5, seconds / 2), (max(latencies), seconds)
