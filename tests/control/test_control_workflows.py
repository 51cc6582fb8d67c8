"""The ControlNet workflows run end to end on the tiny zoo through the runtime, with every pack loaded
as in a real run (the control pack's denoiser hook collected at startup)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def runtime(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import write_example_inputs

    base = tmp_path_factory.mktemp("base")
    folders = FolderPaths(base=base, models_roots=[zoo_root])
    write_example_inputs(folders.input_dir)
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.control", "nodes.slam"), entry_points=False)
    assert all(p.status == "loaded" for p in registry.plugins), [p.as_dict() for p in registry.plugins]
    return Runtime(registry, folders=folders)


def _saved(runtime, result, node: str) -> np.ndarray:
    image = result.outputs[node]["images"][0]
    return np.array(Image.open(runtime.folders.output_dir / image.get("subfolder", "") / image["filename"]))


def test_controlnet_softedge_workflow(runtime) -> None:
    prompt = json.loads((WORKFLOWS / "controlnet_softedge.json").read_text())
    result = runtime.execute(prompt)
    assert result.status == "success", result.error
    assert _saved(runtime, result, "11").shape == (64, 64, 3)


def test_ecom_product_background_keeps_the_product_pixels(runtime) -> None:
    prompt = json.loads((WORKFLOWS / "ecom_product_background.json").read_text())
    result = runtime.execute(prompt)
    assert result.status == "success", result.error
    out = _saved(runtime, result, "15")
    product = np.array(Image.open(runtime.folders.input_dir / "nodeloom_product.png"))
    inside = product[..., 3] == 255
    assert np.abs(out[inside].astype(int) - product[inside][:, :3].astype(int)).max() == 0
    assert np.abs(out[~inside].astype(int) - product[~inside][:, :3].astype(int)).mean() > 5, "background not generated"


def test_missing_annotator_is_a_validation_error(runtime, tmp_path: Path) -> None:
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.validation import WorkflowInvalid

    empty = Runtime(runtime.registry, folders=FolderPaths(base=tmp_path, models_roots=[tmp_path / "models"]))
    prompt = json.loads((WORKFLOWS / "controlnet_softedge.json").read_text())
    with pytest.raises(WorkflowInvalid) as info:
        empty.execute(prompt)
    text = str(info.value) + repr(getattr(info.value, "__dict__", {}))
    assert "table5_pidinet.pth" in text and "annotators" in text
