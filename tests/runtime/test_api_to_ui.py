"""API format → UI format (graph_runtime.api_to_ui): what the editor opens gives the prompt back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime import FolderPaths, HookContext, NodeRegistry
from graph_runtime.api_to_ui import api_to_ui
from graph_runtime.formats import WorkflowFormatError
from graph_runtime.ui_format import ui_to_api
from graph_runtime.validation import node_sort_key

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
CTX = HookContext(FolderPaths(base=Path(__file__).parent / "data" / "ui"))


@pytest.fixture(scope="module")
def real_registry() -> NodeRegistry:
    from graph_runtime import load_registry

    return load_registry()  # every installed pack, as the gallery is built


def without_meta(prompt: dict[str, Any]) -> dict[str, Any]:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_every_example_workflow_round_trips(real_registry: NodeRegistry, name: str) -> None:
    prompt = json.loads((WORKFLOWS / name).read_text())
    ui = api_to_ui(prompt, real_registry)
    ids = {str(i + 1): node_id for i, node_id in enumerate(sorted(prompt, key=node_sort_key))}
    back = ui_to_api(json.loads(json.dumps(ui)), real_registry, CTX)
    renumbered = {ids[k]: v for k, v in back.items()}
    for node in renumbered.values():
        node["inputs"] = {n: [ids[v[0]], v[1]] if isinstance(v, list) else v for n, v in node["inputs"].items()}
    assert without_meta(renumbered) == without_meta(prompt)
    assert {n["title"] for n in ui["nodes"]} == {v["_meta"]["title"] for v in prompt.values()}


def test_seed_control_is_fixed_and_linked_widgets_become_sockets(ui_registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "KSampler", "inputs": {"seed": ["2", 0], "steps": 3, "cfg": 2.0,
                                                         "sampler_name": "euler", "scheduler": "normal",
                                                         "denoise": 1.0}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}}
    ui = api_to_ui(prompt, ui_registry)
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"] == [0, "fixed", 3, 2.0, "euler", "normal", 1.0]
    assert sampler["inputs"][-1] == {"name": "seed", "type": "INT", "link": 1, "widget": {"name": "seed"}}
    assert sampler["pos"][0] > next(n for n in ui["nodes"] if n["type"] == "LoadImage")["pos"][0]


def test_unknown_classes_and_dangling_links_are_named(ui_registry: NodeRegistry) -> None:
    with pytest.raises(WorkflowFormatError, match="node 7 \\('Mystery'\\)"):
        api_to_ui({"7": {"class_type": "Mystery", "inputs": {}}}, ui_registry)
    with pytest.raises(WorkflowFormatError, match="links to node 9"):
        api_to_ui({"1": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}}, ui_registry)
