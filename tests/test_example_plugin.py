"""The example plugin in plugins/: found in the plugins folder, adds the PALETTE link type and
two nodes that use it, and its nodes run in graphs with the core ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from graph_runtime import FolderPaths, HookContext, Runtime, WorkflowInvalid, load_registry
from graph_runtime.schema import node_schema

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


@pytest.fixture(scope="module")
def registry():
    return load_registry(builtins=("nodes.core",), plugin_dirs=[PLUGINS], entry_points=False)


@pytest.fixture
def runtime(registry, tmp_path):
    return Runtime(registry, folders=FolderPaths(base=tmp_path))


def node(class_type: str, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def two_colour_prompt() -> dict:
    """An 8×8 image: a red 8×2 band on blue, so red covers a quarter of the pixels."""
    return {"1": node("EmptyImage", width=8, height=8, batch_size=1, color=0x0000FF),
            "2": node("EmptyImage", width=8, height=2, batch_size=1, color=0xFF0000),
            "3": node("ImageCompositeMasked", destination=["1", 0], source=["2", 0], x=0, y=0,
                      resize_source=False),
            "4": node("ExtractPalette", image=["3", 0], colors=4),
            "5": node("PaletteSwatch", palette=["4", 0], width=40, height=3, proportional=True),
            "6": node("SaveImage", images=["5", 0], filename_prefix="palette")}


def test_plugin_registers_its_type_and_nodes(registry):
    record = next(p for p in registry.plugins if p.name == "plugins.example_plugin")
    assert record.status == "loaded" and record.source == "folder", record.error
    assert record.types == ["PALETTE"] and "PALETTE" in registry.types
    assert sorted(record.nodes) == ["ExtractPalette", "PaletteSwatch"]
    schema = node_schema(registry.nodes["PaletteSwatch"], HookContext(FolderPaths(base=PLUGINS)))
    assert schema["input"]["required"]["palette"] == ["PALETTE"]
    assert schema["python_module"] == "plugins.example_plugin"
    assert node_schema(registry.nodes["ExtractPalette"], HookContext(FolderPaths(base=PLUGINS)))["output"] == ["PALETTE"]


def test_palette_extracted_and_drawn(runtime):
    result = runtime.execute(two_colour_prompt(), keep=["4", "5"])
    assert result.status == "success", result.error
    palette = result.values["4"][0][0]
    assert palette.colors == ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0))  # most common first
    assert palette.shares == (0.75, 0.25)
    swatch = result.values["5"][0][0]
    assert swatch.shape == (1, 3, 40, 3)
    assert torch.equal(swatch[0, :, :30], torch.tensor([0.0, 0.0, 1.0]).expand(3, 30, 3))
    assert torch.equal(swatch[0, :, 30:], torch.tensor([1.0, 0.0, 0.0]).expand(3, 10, 3))
    assert (runtime.folders.output_dir / "palette_00001_.png").is_file()


def test_equal_bands_when_not_proportional(runtime):
    prompt = two_colour_prompt()
    prompt["5"]["inputs"]["proportional"] = False
    result = runtime.execute(prompt, keep=["5"])
    swatch = result.values["5"][0][0][0]
    assert torch.equal(swatch[:, 19], torch.tensor([0.0, 0.0, 1.0]).expand(3, 3))
    assert torch.equal(swatch[:, 20], torch.tensor([1.0, 0.0, 0.0]).expand(3, 3))


def test_palette_link_type_is_checked(runtime):
    prompt = two_colour_prompt()
    prompt["5"]["inputs"]["palette"] = ["3", 0]  # an IMAGE where a PALETTE belongs
    with pytest.raises(WorkflowInvalid) as raised:
        runtime.execute(prompt)
    (error,) = raised.value.result.node_errors
    assert (error.node_id, error.type, error.input_name) == ("5", "return_type_mismatch", "palette")
