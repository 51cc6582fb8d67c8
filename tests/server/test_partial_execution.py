"""ComfyUI's ``partial_execution_targets`` on POST /prompt: the output nodes among the targets run;
targets that name no output node are ComfyUI's ``prompt_no_outputs`` (400), never a queued
prompt that runs nothing or everything."""

from __future__ import annotations

import httpx
import pytest

from server.client import Client
from tests.server.conftest import RunningServer, color_prompt, state_of, wait_until


def post(server: RunningServer, prompt: dict, targets: object) -> httpx.Response:
    return httpx.post(f"{server.url}/prompt", json={"prompt": prompt, "partial_execution_targets": targets},
                      timeout=30)


def two_outputs(bad_second: bool = False) -> dict:
    """Outputs 2 and 4; with ``bad_second`` output 4's source has an out-of-range input."""
    second = color_prompt(green=9)
    if bad_second:
        second["1"]["inputs"]["green"] = -5
    return {**color_prompt(red=9), "3": second["1"], "4": {**second["2"], "inputs": {**second["2"]["inputs"],
                                                                                     "color": ["3", 0]}}}


@pytest.mark.parametrize("targets", [[], ["1"], ["99"], ["1", "99"]])
def test_targets_naming_no_output_node_are_no_outputs(server: RunningServer, targets: list[str]) -> None:
    answer = post(server, two_outputs(bad_second=True), targets)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "prompt_no_outputs"


def test_only_the_output_targets_run_and_the_others_are_passed_over(server: RunningServer) -> None:
    answer = post(server, two_outputs(bad_second=True), ["1", "2", "99"])  # 4 is invalid but not asked for
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    with Client(server.url, timeout=30) as http:
        wait_until(lambda: state_of(http, prompt_id) == "success")
        outputs = http.history(prompt_id)[prompt_id]["outputs"]
    assert list(outputs) == ["2"]
