"""workflows/face_touchup.json runs on the tiny zoo with a real face photo as its input, and the pack
registers its link types and nodes as any plugin does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graph_runtime import Runtime, load_registry
from graph_runtime.folders import FolderPaths
from graph_runtime.schema import node_schema

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "face_touchup.json"
PACKS = ("nodes.core", "nodes.diffusion", "nodes.detail")


@pytest.fixture(scope="module")
def registry():
    return load_registry(builtins=PACKS, entry_points=False)


def test_pack_registers_its_types_and_nodes(registry, folders):
    from graph_runtime import HookContext

    record = next(p for p in registry.plugins if p.name == "nodes.detail")
    assert record.status == "loaded" and not record.skipped, record.as_dict()
    assert {"BBOX", "SAM_MODEL"} <= set(registry.types)
    detail = sorted(name for name, origin in registry.origin.items() if origin == "nodes.detail")
    assert detail == ["BBoxDetectHaar", "BBoxDetectYOLO", "BBoxFilter", "BBoxToMask", "CropByBBox",
                      "FaceDetailer", "PasteByBBox", "SAMLoader", "SAMSegmentBoxes"]
    for name in detail:
        schema = node_schema(registry.nodes[name], HookContext(folders=folders))
        assert json.loads(json.dumps(schema)) == schema and schema["description"]
        assert all(t in registry.types for t in schema["output"])


def test_face_touchup_workflow_runs(registry, zoo_root, tmp_path, astronaut):
    folders = FolderPaths(base=tmp_path, models_roots=[zoo_root])
    folders.input_dir.mkdir(parents=True)
    photo = (astronaut[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(photo).save(folders.input_dir / "nodeloom_face.png")
    prompt = json.loads(WORKFLOW.read_text())
    prompt["8"]["inputs"].update(guide_size=64, max_size=128, steps=2)  # CI-sized; the file has usable sizes
    result = Runtime(registry, folders=folders).execute(prompt, keep=["5", "8"])
    assert result.status == "success", result.error
    assert len(result.values["5"][0][0]) == 1  # the face
    saved = result.outputs["9"]["images"][0]
    out = np.asarray(Image.open(folders.output_dir / saved.get("subfolder", "") / saved["filename"]))
    assert out.shape == photo.shape
    changed = (out != photo).any(-1)
    ys, xs = np.nonzero(changed)
    assert changed.any() and 100 < xs.mean() < 350 and 30 < ys.mean() < 220  # around the face, nowhere else
    assert not changed[300:].any() and not changed[:, 400:].any()


def test_missing_sam_is_a_validation_error_naming_file_and_folder(registry, zoo_root, tmp_path):
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads(WORKFLOW.read_text())
    prompt["6"]["inputs"]["model_name"] = "sam_vit_h_4b8939.pth"
    runtime = Runtime(registry, folders=FolderPaths(base=tmp_path, models_roots=[zoo_root]))
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    message = str(info.value)
    assert "node 6 (SAMLoader), input 'model_name'" in message
    assert "sam_vit_h_4b8939.pth" in message and "sams" in message
