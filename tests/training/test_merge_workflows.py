"""workflows/fuse_layers.json and a ComfyUI model-merging prompt run through the runtime's executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"

# What ComfyUI's editor posts for its model-merging example (two checkpoints, ModelMergeBlocks, a
# sample and CheckpointSave), as the body of POST /prompt.
COMFYUI_MERGE = {"prompt": {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2-eps.safetensors"}},
    "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2-v.safetensors"}},
    "3": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["1", 0], "model2": ["2", 0], "input": 0.7,
                                                        "middle": 0.5, "out": 0.3}},
    "4": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["3", 0], "model2": ["1", 0], "ratio": 0.8}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["1", 1]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "8": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0],
                                               "latent_image": ["7", 0], "seed": 1, "steps": 2, "cfg": 6.0,
                                               "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
    "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "ComfyUI"}},
    "11": {"class_type": "CheckpointSave", "inputs": {"model": ["4", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                      "filename_prefix": "checkpoints/ComfyUI"}},
}, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}}


@pytest.fixture(scope="module")
def runtime(zoo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from graph_runtime.executor import Runtime
    from graph_runtime.folders import FolderPaths
    from graph_runtime.registry import load_registry

    folders = FolderPaths(base=tmp_path_factory.mktemp("base"), models_roots=[zoo_root])
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.training"), entry_points=False)
    return Runtime(registry, folders=folders)


def test_fuse_layers_workflow_saves_an_image_and_a_checkpoint(runtime) -> None:
    result = runtime.execute(json.loads((WORKFLOWS / "fuse_layers.json").read_text()))
    assert result.status == "success", result.error
    assert result.outputs["12"]["text"] == ["saved checkpoints/fused_00001_.safetensors"]
    assert (runtime.folders.output_dir / "checkpoints" / "fused_00001_.safetensors").is_file()
    assert result.outputs["9"]["images"][0]["filename"].startswith("fuse_layers_")


def test_comfyui_merge_prompt_runs(runtime) -> None:
    from graph_runtime.formats import parse_workflow

    workflow = parse_workflow(COMFYUI_MERGE)
    result = runtime.execute(workflow.prompt, extra_data=workflow.extra_data)
    assert result.status == "success", result.error
    path = runtime.folders.output_dir / "checkpoints" / "ComfyUI_00001_.safetensors"
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["workflow"]) == {"nodes": []}
        assert "model.diffusion_model.middle_block.1.proj_in.weight" in f.keys()


def test_a_malformed_pattern_fails_validation_naming_node_and_input(runtime) -> None:
    from graph_runtime.validation import WorkflowInvalid

    prompt = json.loads((WORKFLOWS / "fuse_layers.json").read_text())
    prompt["11"]["inputs"]["block_weights"] = "up_blocks.*.attentions = 0.8"
    with pytest.raises(WorkflowInvalid) as info:
        runtime.execute(prompt)
    text = str(info.value)
    assert "11" in text and "block_weights" in text and "is not 'pattern: weight'" in text
