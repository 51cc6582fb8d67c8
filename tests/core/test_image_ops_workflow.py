"""workflows/image_ops.json, the project's default job: core nodes only, a glowing amber octagon."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from graph_runtime.formats import load_workflow_file

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "image_ops.json"
AMBER, NAVY = (0xF2, 0xA9, 0x18), (0x0B, 0x15, 0x3A)


def test_image_ops_workflow_renders_and_saves(graphs, core_registry):
    workflow = load_workflow_file(WORKFLOW)
    assert {n["class_type"] for n in workflow.prompt.values()} <= set(core_registry.nodes)
    result = graphs.run(workflow.prompt)
    (saved,) = result.outputs["14"]["images"]
    assert saved == {"filename": "image_ops_00001_.png", "subfolder": "nodeloom", "type": "output"}
    with Image.open(graphs.folders.output_dir / "nodeloom" / saved["filename"]) as picture:
        assert picture.size == (512, 512)
        assert json.loads(picture.text["prompt"]) == workflow.prompt
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    assert np.abs(pixels[256, 256] - AMBER).max() <= 2  # the core
    assert np.abs(pixels[5, 5] - NAVY).max() <= 2  # the sky in the corners
    halo = pixels[256, 130]  # between core and sky: teal glow
    assert halo[1] > NAVY[1] + 20 and halo[2] > NAVY[2] + 20 and halo[0] < 60
    (preview,) = result.outputs["16"]["images"]
    assert preview["type"] == "temp"
    with Image.open(graphs.folders.temp_dir / preview["filename"]) as negative:
        inverted = np.asarray(negative.convert("RGB")).astype(int)
    assert np.abs(inverted[256, 256] - (255 - np.asarray(AMBER))).max() <= 2
