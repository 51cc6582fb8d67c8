"""The server validates against the workers' schemas with its own listing of the model folders:
every example workflow that the nodes themselves accept must pass there too (model folders such as
a diffusers ControlNet or a scorer folder included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph_runtime import FolderPaths, HookContext, load_registry
from graph_runtime.schema import model_inputs, object_info
from graph_runtime.validation import validate
from server.execution.messages import NodeSchemas
from server.queue.catalog import SchemaCatalog

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def catalog_and_registry(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from nodes.diffusion.zoo import write_example_inputs

    folders = FolderPaths(base=tmp_path_factory.mktemp("home"), models_roots=[zoo_root])
    write_example_inputs(folders.input_dir)
    registry = load_registry()
    registry.add_bundled_model_paths(folders)  # as every command does: the demo workflow's models
    ctx = HookContext(folders=folders)
    catalog = SchemaCatalog(folders, cache_file=None)
    catalog.update(NodeSchemas(object_info(registry, ctx), model_inputs(registry)), persist=False)
    return catalog, registry, ctx


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_server_and_nodes_accept_the_same_example_workflows(catalog_and_registry, path: Path) -> None:
    catalog, registry, ctx = catalog_and_registry
    prompt = json.loads(path.read_text())
    assert validate(prompt, registry, ctx=ctx).ok
    checked = catalog.validate(prompt)
    assert checked.ok, checked.format()


def test_model_folders_are_listed_as_one_choice(zoo_root: Path) -> None:
    folders = FolderPaths(base=zoo_root.parent, models_roots=[zoo_root])
    controlnets = folders.list_models("controlnet")
    assert "tiny-controlnet-sdxl" in controlnets and "tiny-controlnet-sd15.safetensors" in controlnets
    assert not any(name.startswith("tiny-controlnet-sdxl/") for name in controlnets)
    scorers = folders.list_models("scorers")  # other tests may add broken scorer folders here
    assert "tiny-clip-scorer" in scorers
    assert all((zoo_root / "scorers" / name / "config.json").is_file() for name in scorers)
