"""The ComfyUI frontend, unmodified, driving a real ``nodeloom serve`` in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .conftest import Editor

pytestmark = pytest.mark.browser

RED = 0xFF0000


def _node(node_id: int, kind: str, x: int, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
          widgets: list[Any]) -> dict[str, Any]:
    return {"id": node_id, "type": kind, "pos": [x, 120], "size": [280, 120], "flags": {}, "order": node_id - 1,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {}, "widgets_values": widgets}


def invert_workflow(*, linked: bool = True) -> dict[str, Any]:
    """EmptyImage (red 64x48) -> ImageInvert -> SaveImage, in the editor's own (UI) format.
    ``linked=False`` leaves ImageInvert's required image input unconnected."""
    image_out = {"name": "IMAGE", "type": "IMAGE", "slot_index": 0}
    nodes = [
        _node(1, "EmptyImage", 40, [], [{**image_out, "links": [1] if linked else []}], [64, 48, 1, RED]),
        _node(2, "ImageInvert", 380, [{"name": "image", "type": "IMAGE", "link": 1 if linked else None}],
              [{**image_out, "links": [2]}], []),
        _node(3, "SaveImage", 680, [{"name": "images", "type": "IMAGE", "link": 2}], [], ["browser_test"]),
    ]
    links = [[2, 2, 0, 3, 0, "IMAGE"]] + ([[1, 1, 0, 2, 0, "IMAGE"]] if linked else [])
    return {"last_node_id": 3, "last_link_id": 2, "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def _run(editor: Editor) -> None:
    editor.page.get_by_role("button", name="Run", exact=True).click()


def test_editor_loads_without_failed_requests_or_console_errors(editor: Editor) -> None:
    editor.page.wait_for_timeout(1500)  # late start-up calls: jobs, templates, model folders
    editor.screenshot("01-loaded")
    assert editor.recorder.failed == [], f"requests our server failed: {editor.recorder.failed}"
    assert editor.recorder.console_errors == [], f"console errors: {editor.recorder.console_errors}"
    assert editor.page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")


def test_node_library_lists_builtin_and_plugin_nodes(editor: Editor) -> None:
    page = editor.page
    schema = editor.server.get_json("/api/object_info")
    assert schema["ExtractPalette"]["python_module"].startswith("plugins.")
    page.get_by_role("button", name="Node Library (n)").click()
    search = page.get_by_placeholder("Search", exact=False).first
    for kind in ("ImageInvert", "SaveImage", "ExtractPalette", "PaletteSwatch"):
        search.fill(schema[kind]["display_name"])
        page.get_by_text(schema[kind]["display_name"], exact=True).first.wait_for(timeout=10_000)
        if kind == "PaletteSwatch":
            editor.screenshot("02-node-library")
    registered = page.evaluate("Object.keys(LiteGraph.registered_node_types)")
    assert set(schema) <= set(registered)


def _widget_facts(editor: Editor, kind: str) -> list[dict[str, Any]]:
    return list(editor.page.evaluate(
        """kind => (LiteGraph.createNode(kind).widgets || []).map(w => ({
            name: w.name, type: w.type, values: w.options && w.options.values,
            multiline: !!(w.element || w.inputEl)}))""", kind))


def test_schemas_drive_the_widgets(editor: Editor) -> None:
    """Each widget input of /object_info becomes the widget ComfyUI's schema asks for."""
    schema = editor.server.get_json("/api/object_info")
    checked = 0
    for kind, info in schema.items():
        widgets = {w["name"]: w for w in _widget_facts(editor, kind)}
        names = list(widgets)
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                kind_or_choices, options = spec[0], (spec[1] if len(spec) > 1 else {})
                if isinstance(kind_or_choices, list):
                    assert widgets[name]["type"] == "combo", (kind, name)
                    assert widgets[name]["values"] == kind_or_choices, (kind, name)
                elif kind_or_choices in ("INT", "FLOAT") and not options.get("forceInput"):
                    assert name in widgets, (kind, name, names)
                if options.get("multiline"):
                    assert widgets[name]["multiline"], (kind, name)
                if options.get("control_after_generate"):
                    assert names[names.index(name) + 1] == "control_after_generate", (kind, names)
                if options.get("image_upload"):
                    assert "upload" in widgets and widgets["upload"]["type"] == "button", (kind, names)
                checked += 1
    assert checked > 20
    # The model-file combo lists the checkpoint file the test put in models/checkpoints.
    loaders = [k for k, v in schema.items()
               if "tiny-test.safetensors" in json.dumps(v["input"].get("required", {}))]
    for kind in loaders:
        assert any("tiny-test.safetensors" in (w["values"] or []) for w in _widget_facts(editor, kind))


def test_dropped_workflow_runs_and_its_png_restores_it(editor: Editor, tmp_path: Path) -> None:
    page = editor.page
    editor.drop_file("invert.json", json.dumps(invert_workflow()).encode(), "application/json")
    page.wait_for_function("app.graph.nodes.length === 3")
    assert sorted(editor.node_types()) == ["EmptyImage", "ImageInvert", "SaveImage"]
    _run(editor)
    page.wait_for_function("""(() => { const n = app.graph.getNodeById(3);
        return n.imgs && n.imgs.length > 0 && n.imgs[0].complete && n.imgs[0].naturalWidth > 0; })()""",
                           timeout=120_000)
    src = page.evaluate("app.graph.getNodeById(3).imgs[0].src")
    assert "/api/view?filename=browser_test_" in src and "type=output" in src
    editor.screenshot("03-ran")

    # The file the editor shows is on disk: cyan (inverted red) pixels, the workflow embedded.
    saved = sorted(editor.server.output_dir.glob("browser_test_*.png"))
    assert saved, f"nothing saved in {editor.server.output_dir}"
    with Image.open(saved[-1]) as png:
        assert png.size == (64, 48)
        assert np.array(png.convert("RGB"))[10, 10].tolist() == [0, 255, 255]
        embedded = json.loads(png.info["workflow"])
        prompt = json.loads(png.info["prompt"])
    assert sorted(n["type"] for n in embedded["nodes"]) == ["EmptyImage", "ImageInvert", "SaveImage"]
    assert prompt["2"]["class_type"] == "ImageInvert"

    # The queue panel lists the finished job with the image.
    page.get_by_role("button", name="Expand job queue").click()
    page.locator(f"img[src*='{saved[-1].name}']").first.wait_for(timeout=20_000)
    editor.screenshot("04-queue-panel")
    page.keyboard.press("Escape")

    # A new tab, then the PNG dropped on it brings the whole workflow back.
    page.evaluate("app.graph.clear()")
    assert editor.node_types() == []
    editor.drop_file(saved[-1].name, saved[-1].read_bytes(), "image/png")
    page.wait_for_function("app.graph.nodes.length === 3")
    assert sorted(editor.node_types()) == ["EmptyImage", "ImageInvert", "SaveImage"]
    editor.screenshot("05-restored-from-png")
    assert editor.recorder.failed == [] and editor.recorder.console_errors == []


def test_broken_workflow_shows_the_error_on_the_node(editor: Editor) -> None:
    page = editor.page
    editor.drop_file("broken.json", json.dumps(invert_workflow(linked=False)).encode(), "application/json")
    page.wait_for_function("app.graph.nodes.length === 3")
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as sent:
        _run(editor)
    answer = sent.value
    assert answer.status == 400
    body = answer.json()
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "image"
    # The offending node is marked, and only that one.
    page.wait_for_function("app.graph.getNodeById(2).has_errors === true")
    assert page.evaluate("app.graph.nodes.filter(n => n.has_errors).map(n => n.id)") in ([2], ["2"])
    # The message names the node by its title and the input.
    page.get_by_text("Invert Image is missing a required input: image").first.wait_for()
    editor.screenshot("06-validation-error")
    # A 400 with node_errors is the answer the editor expects; nothing else failed.
    assert [f for f in editor.recorder.failed if "/api/prompt" not in f] == []


def test_template_browser_offers_the_example_workflows(editor: Editor) -> None:
    page = editor.page
    index = editor.server.get_json("/templates/index.json")[0]["templates"]
    page.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog").first
    dialog.wait_for(state="visible", timeout=10_000)
    for template in index:
        dialog.get_by_text(template["title"], exact=True).first.wait_for(timeout=10_000)
    # Each card shows its thumbnail (fetched from /templates/<name>-1.webp, shown as a blob URL); the
    # gallery renders the cards in view, so every rendered one must have loaded its image.
    page.wait_for_function(
        """count => { const imgs = [...document.querySelectorAll('[role=dialog] img')];
                      return imgs.length >= count && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=min(len(index), 4), timeout=10_000)
    editor.screenshot("07-templates")
    assert "No templates found" not in dialog.inner_text()
    dialog.get_by_text("Text to image", exact=True).first.click()
    page.wait_for_function("app.graph.nodes.some(n => n.type === 'KSampler')", timeout=15_000)
    assert sorted(editor.node_types()) == sorted(
        n["class_type"] for n in json.loads((Path(__file__).parents[2] / "workflows" / "txt2img.json").read_text()).values())
    sampler = page.evaluate("app.graph.nodes.find(n => n.type === 'KSampler').widgets.map(w => [w.name, w.value])")
    assert ["steps", 8] in sampler and ["control_after_generate", "fixed"] in sampler
