"""ImageUpscaleWithModel: tiled equals untiled, progress per tile, clear errors; ComfyUI's upscale
workflows run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from graph_runtime.validation import WorkflowInvalid
from nodes.upscale.nodes_upscale import ImageUpscaleWithModel, UpscaleModelLoader

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
EXAMPLES = Path(__file__).resolve().parent / "data"


def _load(make_ctx) -> object:
    return UpscaleModelLoader().run(make_ctx(), model_name="tiny-esrgan-x4.safetensors")[0]


def test_tiled_output_equals_untiled(make_ctx) -> None:
    model, image = _load(make_ctx), torch.rand(1, 32, 44, 3, generator=torch.Generator().manual_seed(0))
    node = ImageUpscaleWithModel()
    untiled = node.run(make_ctx(), upscale_model=model, image=image, tile_size=512, overlap=32)[0]
    tiled = node.run(make_ctx(), upscale_model=model, image=image, tile_size=32, overlap=16)[0]
    assert untiled.shape == (1, 128, 176, 3)
    assert ((untiled > 0) & (untiled < 1)).float().mean() > 0.95  # not clamped flat: the comparison means something
    torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-4)
    seams = node.run(make_ctx(), upscale_model=model, image=image, tile_size=32, overlap=0)[0]
    assert (seams - untiled).abs().max() > 1e-2


def test_progress_is_reported_per_tile_over_the_batch(make_ctx) -> None:
    model = _load(make_ctx)
    ImageUpscaleWithModel().run(make_ctx(), upscale_model=model, image=torch.rand(2, 24, 24, 3), tile_size=16,
                                overlap=8)
    assert make_ctx.events == [(i, 8) for i in range(1, 9)]  # 2 x 2 tiles per image, 2 images


def test_an_image_with_other_channels_is_an_error_naming_both(make_ctx) -> None:
    with pytest.raises(ValueError, match="4 channels but tiny-esrgan-x4.safetensors \\(ESRGAN\\) takes 3"):
        ImageUpscaleWithModel().run(make_ctx(), upscale_model=_load(make_ctx), image=torch.rand(1, 8, 8, 4))



def test_a_model_putting_out_nan_is_an_error_naming_it(make_ctx, zoo_root: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(zoo_root / "upscale_models" / "tiny-esrgan-x4.safetensors"))
    tensors["model.0.weight"][0, 0, 0, 0] = float("nan")  # as a corrupt file or an fp16 overflow gives
    save_file(tensors, str(zoo_root / "upscale_models" / "nan-esrgan.safetensors"))
    model = UpscaleModelLoader().run(make_ctx(), model_name="nan-esrgan.safetensors")[0]
    with pytest.raises(ValueError, match=r"nan-esrgan\.safetensors \(ESRGAN\) put out NaN or infinite values"):
        ImageUpscaleWithModel().run(make_ctx(), upscale_model=model, image=torch.rand(1, 8, 8, 3))

def _prompt(name: str, directory: Path = WORKFLOWS) -> dict:
    return json.loads((directory / name).read_text())


def _saved(runtime, result, node: str) -> Image.Image:
    assert result.status == "success", result.error
    entry = result.outputs[node]["images"][0]
    return Image.open(runtime.folders.output_dir / entry.get("subfolder", "") / entry["filename"])


def test_upscale_workflow_saves_a_4x_image(runtime) -> None:
    result = runtime.execute(_prompt("upscale_esrgan.json"))
    assert _saved(runtime, result, "9").size == (256, 256)


def test_overlap_above_half_a_tile_is_a_validation_error(runtime) -> None:
    prompt = _prompt("upscale_esrgan.json")
    prompt["14"]["inputs"].update(tile_size=64, overlap=48)
    with pytest.raises(WorkflowInvalid, match="overlap 48 is more than half of tile_size 64"):
        runtime.execute(prompt)


def test_an_unidentifiable_file_fails_in_the_loader_naming_it(runtime, zoo_root: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x.weight": torch.zeros(2)}, str(zoo_root / "upscale_models" / "broken.safetensors"))
    prompt = _prompt("upscale_esrgan.json")
    prompt["13"]["inputs"]["model_name"] = "broken.safetensors"
    result = runtime.execute(prompt)
    assert result.status == "error" and result.error.node_id == "13"
    assert "broken.safetensors: spandrel cannot identify" in result.error.exception_message


def _at_tiny_size(prompt: dict) -> dict:
    """ComfyUI's example at a size the tiny model runs in seconds on a CPU (only sizes change)."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        if node["class_type"] == "ImageScale":
            inputs.update(width=128, height=128)  # 2x the first pass, as in the example (768 -> 1536)
    return prompt


@pytest.mark.slow  # 20 + 26 sampling steps: tens of seconds on a CPU
@pytest.mark.parametrize(("name", "saves"), [("comfyui_esrgan_example.json", {"9": 256}),
                                             ("comfyui_hiresfix_esrgan_example.json", {"9": 64, "12": 128})])
def test_comfyui_upscale_examples_run(runtime, name: str, saves: dict[str, int]) -> None:
    result = runtime.execute(_at_tiny_size(_prompt(name, EXAMPLES)))
    for node, size in saves.items():
        assert _saved(runtime, result, node).size == (size, size)


@pytest.mark.slow  # minutes on a CPU
@pytest.mark.parametrize(("name", "saves"), [("comfyui_esrgan_example.json", {"9": 2048}),
                                             ("comfyui_hiresfix_esrgan_example.json", {"9": 768, "12": 1536})])
def test_comfyui_upscale_examples_run_at_their_own_size(runtime, name: str, saves: dict[str, int]) -> None:
    result = runtime.execute(_prompt(name, EXAMPLES))
    for node, size in saves.items():
        assert _saved(runtime, result, node).size == (size, size)
