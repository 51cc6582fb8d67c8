"""FaceDetailer on the tiny zoo: only pixels under the feathered mask change, the size is kept, and
it gives exactly what the same graph built from its parts (CropByBBox … PasteByBBox) gives."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nodes.detail.bbox import Box
from nodes.detail.detailer import FaceDetailer

FACE = Box(43, 17, 69, 44, label="face", image_size=(128, 128))  # the astronaut's face at 128×128
SETTINGS = {"guide_size": 64, "max_size": 128, "crop_factor": 3.0, "seed": 7, "steps": 3, "cfg": 7.0,
            "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5, "dilation": 4, "feather": 5}


@pytest.fixture(scope="module")
def small_astronaut() -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(data.astronaut()).float().div(255)[None]
    return F.interpolate(image.movedim(-1, 1), size=(128, 128), mode="area").movedim(1, -1)


@pytest.fixture
def models(make_ctx) -> dict[str, Any]:
    from nodes.diffusion.nodes_conditioning import CLIPTextEncode
    from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple

    ctx = make_ctx()
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    return {"model": model, "vae": vae, "positive": CLIPTextEncode().run(ctx, text="a detailed face", clip=clip)[0],
            "negative": CLIPTextEncode().run(ctx, text="blurry", clip=clip)[0]}


def test_only_pixels_under_the_feathered_mask_change(make_ctx, models, small_astronaut):
    out, blend = FaceDetailer().run(make_ctx(), image=small_astronaut, bboxes=(FACE,), **models, **SETTINGS)
    assert out.shape == small_astronaut.shape
    diff = (out - small_astronaut).abs().amax(-1)[0]
    outside = blend[0] == 0
    assert diff[outside].max() == 0  # bit for bit
    assert diff[blend[0] > 0.9].mean() > 0.01  # and the face was re-rendered
    # the mask is the box (no SAM mask given), grown by dilation and feather: nothing farther changes
    reach = SETTINGS["dilation"] + SETTINGS["feather"] + 1
    near = torch.zeros(128, 128, dtype=torch.bool)
    near[FACE.pixels()[1] - reach:FACE.pixels()[3] + reach, FACE.pixels()[0] - reach:FACE.pixels()[2] + reach] = True
    assert not (blend[0] > 0)[~near].any()
    assert make_ctx.recorder.events[-1][1:3] == (1.0, 1)


def test_a_mask_limits_the_change_and_few_step_lcm_settings_work(make_ctx, models, small_astronaut):
    mask = torch.zeros(1, 128, 128)
    mask[0, 25:38, 50:62] = 1  # eyes and nose only
    settings = SETTINGS | {"sampler_name": "lcm", "steps": 2, "cfg": 1.0, "dilation": 0, "feather": 2}
    out, blend = FaceDetailer().run(make_ctx(), image=small_astronaut, bboxes=(FACE,), mask=mask, **models,
                                    **settings)
    changed = (out != small_astronaut).any(-1)[0]
    assert changed.any() and not changed[blend[0] == 0].any()
    assert not changed[:20].any() and not changed[42:].any()  # 25..38 grown by a 2-pixel feather and resizing


def test_no_boxes_no_change_and_says_so(make_ctx, models, small_astronaut, caplog):
    result = FaceDetailer().run(make_ctx(), image=small_astronaut, bboxes=(), **models, **SETTINGS)
    out, blend = result.outputs
    assert torch.equal(out, small_astronaut) and blend.sum() == 0
    assert "no region to touch up" in result.ui["text"][0] and "no region to touch up" in caplog.text


def test_the_parts_give_the_same_image(make_ctx, models, small_astronaut, folders, tmp_path):
    """CropByBBox → VAEEncode → SetLatentNoiseMask → KSampler → VAEDecode → PasteByBBox, as a graph."""
    from graph_runtime import Runtime, load_registry
    from graph_runtime.folders import FolderPaths
    from PIL import Image

    from nodes.core.imaging import pil_to_tensor, tensor_to_pil

    run_folders = FolderPaths(base=tmp_path, models_roots=folders.models_roots)
    run_folders.input_dir.mkdir(parents=True)
    tensor_to_pil(small_astronaut[0]).save(run_folders.input_dir / "face.png")
    loaded = pil_to_tensor(Image.open(run_folders.input_dir / "face.png"))[None]
    s = SETTINGS
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a detailed face", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "det": {"class_type": "BBoxDetectHaar", "inputs": {
            "image": ["img", 0], "cascade": "haarcascade_frontalface_default.xml", "scale_factor": 1.05,
            "min_neighbors": 3, "min_size": 16, "max_count": 1}},
        "crop": {"class_type": "CropByBBox", "inputs": {
            "image": ["img", 0], "bboxes": ["det", 0], "crop_factor": s["crop_factor"], "guide_size": s["guide_size"],
            "max_size": s["max_size"]}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["crop", 0], "vae": ["ckpt", 2]}},
        "noise_mask": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["enc", 0], "mask": ["crop", 1]}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["noise_mask", 0],
            "seed": s["seed"], "steps": s["steps"], "cfg": s["cfg"], "sampler_name": s["sampler_name"],
            "scheduler": s["scheduler"], "denoise": s["denoise"]}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "paste": {"class_type": "PasteByBBox", "inputs": {
            "image": ["img", 0], "source": ["dec", 0], "regions": ["crop", 2], "mask": ["crop", 1],
            "dilation": s["dilation"], "feather": s["feather"]}},
        "whole": {"class_type": "FaceDetailer", "inputs": {
            "image": ["img", 0], "model": ["ckpt", 0], "vae": ["ckpt", 2], "positive": ["pos", 0],
            "negative": ["neg", 0], "bboxes": ["det", 0], **s}},
    }
    registry = load_registry(builtins=("nodes.core", "nodes.diffusion", "nodes.detail"), entry_points=False)
    result = Runtime(registry, folders=run_folders).execute(prompt, targets=["paste", "whole"],
                                                               keep=["paste", "whole", "det"])
    assert result.status == "success", result.error
    (boxes,) = result.values["det"][0]
    assert len(boxes) == 1
    parts, whole = result.values["paste"][0][0], result.values["whole"][0][0]
    assert parts.shape == whole.shape == (1, 128, 128, 3)
    assert torch.equal(parts, whole)
    assert not torch.equal(whole, loaded)
