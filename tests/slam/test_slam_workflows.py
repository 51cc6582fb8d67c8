"""workflows/slam_txt2img.json runs on the tiny zoo, and ComfyUI's LCM recipe (ModelSamplingDiscrete
'lcm' + KSampler 'lcm') gives the very same image as SLAMSampler."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "slam_txt2img.json"


@pytest.fixture(scope="module")
def runtime(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry

    folders = FolderPaths(base=tmp_path_factory.mktemp("base"), models_roots=[zoo_root])
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.slam"), entry_points=False)
    return Runtime(registry, folders=folders)


def run_image(runtime, prompt: dict) -> np.ndarray:
    result = runtime.execute(prompt)
    assert result.status == "success", result.error
    image = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(runtime.folders.output_dir / image.get("subfolder", "") / image["filename"]))


def comfyui_recipe(prompt: dict) -> dict:
    """The SLAMSampler node swapped for ComfyUI's way: ModelSamplingDiscrete + KSampler 'lcm'."""
    prompt = copy.deepcopy(prompt)
    slam = prompt["3"]["inputs"]
    prompt["11"] = {"class_type": "ModelSamplingDiscrete",
                    "inputs": {"model": slam["model"], "sampling": "lcm", "zsnr": False}}
    prompt["3"] = {"class_type": "KSampler", "inputs": {
        **{k: slam[k] for k in ("seed", "steps", "cfg", "denoise", "positive", "negative", "latent_image")},
        "model": ["11", 0], "sampler_name": "lcm", "scheduler": "sgm_uniform"}}
    return prompt


def test_slam_workflow_runs_and_equals_the_comfyui_recipe(runtime) -> None:
    prompt = json.loads(WORKFLOW.read_text())
    ours = run_image(runtime, prompt)
    assert ours.shape == (64, 64, 3) and ours.std() > 0
    assert np.array_equal(run_image(runtime, comfyui_recipe(prompt)), ours)


def test_schedule_longer_than_the_lcm_grid_is_a_validation_error(runtime) -> None:
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads(WORKFLOW.read_text())
    prompt["3"]["inputs"].update(steps=30, denoise=0.5)
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    assert "60-step schedule" in str(info.value) or "60-step schedule" in repr(info.value.__dict__)


def test_ksampler_lcm_schedule_longer_than_the_grid_is_a_clear_error(runtime) -> None:
    """ComfyUI's recipe too: at validation for widget values, when the node runs for linked ones
    (diffusers' own error spoke of a `strength` and a step count the user never set)."""
    from graph_runtime.validation import WorkflowInvalid

    prompt = comfyui_recipe(json.loads(WORKFLOW.read_text()))
    prompt["3"]["inputs"].update(steps=30, denoise=0.5)
    with pytest.raises(WorkflowInvalid, match="steps 30 at denoise 0.5 needs a 60-step schedule"):
        runtime.execute(prompt)
    prompt["3"]["inputs"].update(steps=60, denoise=1.0, sampler_name="tcd")
    with pytest.raises(WorkflowInvalid, match="steps 60 is more than the 50 timesteps sampler 'tcd'"):
        runtime.execute(prompt)
    prompt["3"]["inputs"].update(sampler_name="lcm", steps=["12", 0])
    prompt["12"] = {"class_type": "PrimitiveInt", "inputs": {"value": 60}}
    result = runtime.execute(prompt)
    assert result.status == "error" and result.error.node_id == "3"
    assert "steps 60 is more than the 50 timesteps sampler 'lcm'" in result.error.exception_message
