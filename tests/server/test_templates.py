"""The committed template gallery (server/templates.py) matches the example workflows."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from graph_runtime import FolderPaths, HookContext, NodeRegistry
from graph_runtime.ui_format import ui_to_api
from server.templates import CATALOG, DEFAULT_TEMPLATES_DIR, WORKFLOWS, template_entry


@pytest.fixture(scope="module")
def real_registry() -> NodeRegistry:
    from graph_runtime import load_registry

    return load_registry()  # every installed pack, as the gallery is built


def test_index_lists_every_example_workflow_with_its_catalog_entry(real_registry: NodeRegistry) -> None:
    [module] = json.loads((DEFAULT_TEMPLATES_DIR / "index.json").read_text())
    catalog = json.loads((DEFAULT_TEMPLATES_DIR / CATALOG).read_text())
    names = [t["name"] for t in module["templates"]]
    assert sorted(names) == sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(catalog)
    assert names == list(catalog)  # the catalog's order
    for template in module["templates"]:
        prompt = json.loads((WORKFLOWS / f"{template['name']}.json").read_text())
        assert template == template_entry(template["name"], catalog[template["name"]], prompt, real_registry)
        assert template["title"] and template["description"]


def test_each_template_opens_as_its_workflow_with_a_real_thumbnail(real_registry: NodeRegistry, tmp_path) -> None:
    ctx = HookContext(FolderPaths(base=tmp_path))
    for path in WORKFLOWS.glob("*.json"):
        prompt = json.loads(path.read_text())
        ui = json.loads((DEFAULT_TEMPLATES_DIR / f"{path.stem}.json").read_text())
        converted = ui_to_api(ui, real_registry, ctx)
        assert sorted(n["class_type"] for n in converted.values()) == sorted(n["class_type"] for n in prompt.values())
        constants = sorted(json.dumps(v) for n in prompt.values() for v in n["inputs"].values() if not isinstance(v, list))
        assert constants == sorted(json.dumps(v) for n in converted.values() for v in n["inputs"].values()
                                   if not isinstance(v, list))
        with Image.open(DEFAULT_TEMPLATES_DIR / f"{path.stem}-1.webp") as thumbnail:
            assert thumbnail.format == "WEBP" and thumbnail.size == (128, 128)
            assert len(thumbnail.convert("RGB").getcolors(1 << 16) or ()) > 1  # an image, not a blank tile
