"""The shipped workflows run end to end on the tiny zoo through the runtime's executor."""

from __future__ import annotations

import json
from pathlib import Path

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
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion"), entry_points=False)
    return Runtime(registry, folders=folders)


@pytest.mark.parametrize("name", ["txt2img", "img2img", "inpaint", "lora", "inpaint_model"])
def test_workflow_runs(runtime, name: str) -> None:
    prompt = json.loads((WORKFLOWS / f"{name}.json").read_text())
    result = runtime.execute(prompt)
    assert result.status == "success", result.error
    images = result.outputs["9"]["images"]
    saved = runtime.folders.output_dir / images[0].get("subfolder", "") / images[0]["filename"]
    assert Image.open(saved).size == (64, 64)
    if name == "lora":  # each LoraLoader shows what it matched
        assert result.outputs["10"]["text"] == [
            "LoRA tiny-sd15-kohya.safetensors: UNet 32 matched (lora 32), 0 ignored; text encoder 12 matched (lora 12), "
            "0 ignored"]


def test_unsupported_sampler_is_a_validation_error(runtime) -> None:
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads((WORKFLOWS / "txt2img.json").read_text())
    prompt["3"]["inputs"].update(sampler_name="ddim", scheduler="karras")
    with pytest.raises(WorkflowInvalid):
        runtime.execute(prompt)


def test_missing_checkpoint_names_the_folder(runtime) -> None:
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads((WORKFLOWS / "txt2img.json").read_text())
    prompt["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    assert "checkpoints" in str(info.value) or "checkpoints" in repr(info.value.__dict__)
