"""TrainESRGAN on the tiny ESRGAN x4: a plain folder of HR images (no captions) trains, held-out
PSNR rises, the saved file reloads through UpscaleModelLoader with the trained network's
outputs, and an interrupted run resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from graph_runtime.context import Context, HookContext, Interrupted, InterruptFlag, Services
from graph_runtime.folders import FolderPaths
from nodes.diffusion.zoo.hr_images import HELD_OUT, photo_crop, write_hr_dataset
from nodes.infra.files import read_state_dict
from nodes.training.dataset import LoadImageCaptionDataset
from nodes.training.esrgan import TrainESRGAN
from nodes.training.esrgan_recipe import downsample
from nodes.upscale.nodes_upscale import ImageUpscaleWithModel, UpscaleModelLoader

FAST = dict(steps=12, batch_size=4, gradient_accumulation=1, learning_rate=2e-3, lr_scheduler="constant",
            pixel_weight=1.0, perceptual_weight=0.0, gan_weight=0.0, discriminator_features=8, ema_decay=0.0,
            max_grad_norm=0.0, precision="auto", seed=0, checkpoint_every=0, preview_every=0, resume_from="")


@pytest.fixture
def esrgan_ctx(tmp_path: Path, zoo_root: Path):
    """A Context whose models folder of its own comes first (trained files land there), with the
    tiny zoo behind it and the HR images in input/nodeloom_hr. ``make.stop_at`` interrupts after a step."""
    folders = FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])
    write_hr_dataset(folders.input_dir / "nodeloom_hr")
    services, interrupt = Services(), InterruptFlag()
    state: dict[str, Any] = {"stop_at": None}

    def report(node: str, value: float, maximum: float, preview: Any, text: Any) -> None:
        if state["stop_at"] is not None and value == state["stop_at"]:
            interrupt.set()

    def make() -> Context:
        return Context(prompt_id="test", node_id="1", class_type="TrainESRGAN", folders=folders, services=services,
                       interrupt=interrupt, report_progress=report, extra_data={})

    make.state, make.interrupt = state, interrupt  # type: ignore[attr-defined]
    return make


def dataset(ctx: Context, folder: str = "nodeloom_hr", captions: str = "required") -> Any:
    return LoadImageCaptionDataset().run(ctx, folder=folder, resolution=64, crop="random", flip=True,
                                         aspect_buckets=False, caption_template="{caption}", caption_dropout=0.0,
                                         captions=captions)[0]


def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """(LR [B, 16, 16, 3], HR [B, 64, 64, 3]) IMAGE batches of crops the training set does not hold."""
    hr = torch.stack([torch.from_numpy(photo_crop(name, top, left, 64)) for name, top, left in HELD_OUT]).float() / 255
    return downsample(hr.movedim(-1, 1), 4).movedim(1, -1), hr


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def upscale(ctx: Context, name: str, lr: torch.Tensor) -> torch.Tensor:
    (model,) = UpscaleModelLoader().run(ctx, model_name=name)
    return ImageUpscaleWithModel().run(ctx, upscale_model=model, image=lr)[0]


def train(ctx: Context, run_name: str, data: Any = None, **changes: Any) -> Any:
    (model,) = UpscaleModelLoader().run(ctx, model_name="tiny-esrgan-x4.safetensors")
    return TrainESRGAN().run(ctx, upscale_model=model, dataset=data or dataset(ctx), run_name=run_name,
                             **{**FAST, **changes})


def test_a_plain_folder_of_hr_images_trains_an_upscaler_that_reloads(esrgan_ctx) -> None:
    """No captions at all (captions 'none'); a few steps lower the L1 on held-out crops."""
    import shutil

    ctx = esrgan_ctx()
    plain = ctx.folders.input_dir / "plain_hr"
    plain.mkdir()
    for image in (ctx.folders.input_dir / "nodeloom_hr").glob("*.png"):
        shutil.copy(image, plain / image.name)
    assert not list(plain.glob("*.txt")) and not (plain / "metadata.jsonl").exists()
    lr, hr = held_out()
    before = (upscale(ctx, "tiny-esrgan-x4.safetensors", lr) - hr).abs().mean()
    result = train(ctx, "plain", dataset(ctx, "plain_hr", captions="none"), steps=4, batch_size=2)
    assert result.outputs[0] == "plain.safetensors" and len(result.outputs[1]["loss"]) == 4
    after = (upscale(ctx, "plain.safetensors", lr) - hr).abs().mean()
    assert after < 0.8 * before, (before, after)


def test_fine_tuning_raises_held_out_psnr_and_the_file_reloads_with_the_trained_outputs(esrgan_ctx) -> None:
    from spandrel.architectures.ESRGAN import ESRGAN

    ctx = esrgan_ctx()
    lr, hr = held_out()
    before = psnr(upscale(ctx, "tiny-esrgan-x4.safetensors", lr), hr)
    result = train(ctx, "sr")
    assert result.outputs[0] == "sr.safetensors"
    assert (ctx.folders.models_roots[0] / "upscale_models" / "sr.safetensors").is_file()
    after = psnr(upscale(ctx, "sr.safetensors", lr), hr)
    assert after > before + 5.0, (before, after)  # ~7 dB -> ~13 dB in 12 steps
    losses = result.outputs[1]["loss"]
    assert sum(losses[-3:]) < sum(losses[:3])
    # The run's last checkpoint holds the trained weights (no EMA here): a network built from them
    # by hand upscales exactly as the saved file does through the loader.
    [checkpoint] = (ctx.folders.output_dir / "training").glob("sr-*/checkpoints/step-000012/trainable.safetensors")
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    net.load_state_dict(read_state_dict(checkpoint)[0])
    with torch.no_grad():
        expected = net(lr.movedim(-1, 1)).clamp(0, 1).movedim(1, -1)
    torch.testing.assert_close(upscale(ctx, "sr.safetensors", lr), expected, atol=1e-5, rtol=0)


def test_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(esrgan_ctx) -> None:
    """With the discriminator and EMA on: their state is part of the checkpoint."""
    ctx = esrgan_ctx()
    gan = dict(steps=3, batch_size=1, gan_weight=0.1, ema_decay=0.9, checkpoint_every=1)
    whole = train(ctx, "whole", **gan)
    esrgan_ctx.state["stop_at"] = 1
    with pytest.raises(Interrupted):
        train(ctx, "cut", **gan)
    esrgan_ctx.state["stop_at"] = None
    esrgan_ctx.interrupt.clear()
    resumed = train(ctx, "cut", **gan)
    assert "finished at step 3/3" in resumed.ui["text"][0]
    assert resumed.outputs[1]["loss"] == pytest.approx(whole.outputs[1]["loss"], rel=1e-5)
    folder = ctx.folders.models_roots[0] / "upscale_models"
    a, b = read_state_dict(folder / "whole.safetensors")[0], read_state_dict(folder / "cut.safetensors")[0]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_perceptual_loss_without_vgg_weights_is_a_validation_error_naming_the_file(tmp_path: Path) -> None:
    ctx = HookContext(folders=FolderPaths(base=tmp_path))
    problem = TrainESRGAN.validate_inputs(ctx, perceptual_weight=1.0, run_name="x")
    assert problem is not None and "vgg19-dcbc4e0d.pth" in problem and str(tmp_path / "models" / "vgg") in problem
    assert TrainESRGAN.validate_inputs(ctx, perceptual_weight=0.0, run_name="x") is None


def test_crop_sizes_the_model_or_discriminator_cannot_take_are_named() -> None:
    from nodes.training.esrgan_recipe import size_problem

    assert size_problem([(64, 64), (96, 48)], 4, 1, gan=True) is None
    assert size_problem([(96, 36)], 4, 1, gan=False) is None
    assert "96x36 crops are not multiples of 8" in size_problem([(96, 36)], 4, 1, gan=True)
    assert "64x64 crops are not multiples of 24 (the model's scale 3 x its input multiple 8)" in size_problem(
        [(64, 64)], 3, 8, gan=False)


def test_train_esrgan_workflow_trains_then_upscales_with_the_result(tmp_path: Path, zoo_root: Path) -> None:
    import json

    from graph_runtime.executor import Runtime
    from graph_runtime.registry import load_registry
    from nodes.diffusion.zoo import write_example_inputs

    folders = FolderPaths(base=tmp_path, models_roots=[tmp_path / "models", zoo_root])
    write_example_inputs(folders.input_dir)
    registry = load_registry(builtins=("nodes.core", "nodes.upscale", "nodes.training"), entry_points=False)
    prompt = json.loads((Path(__file__).resolve().parents[2] / "workflows" / "train_esrgan.json").read_text())
    prompt["3"]["inputs"].update(steps=2, checkpoint_every=1, preview_every=1)
    result = Runtime(registry, folders=folders).execute(prompt)
    assert result.status == "success", result.error.exception_message
    assert (tmp_path / "models" / "upscale_models" / "esrgan_example.safetensors").is_file()
    [saved] = result.outputs["7"]["images"]
    from PIL import Image

    assert Image.open(folders.output_dir / saved["filename"]).size == (256, 256)
    assert [image["filename"] for image in result.outputs["3"]["images"]] == ["step-000002.png", "loss.png"]


def test_area_degradation_is_the_block_mean_and_bicubic_stays_the_default() -> None:
    """ProductShots' small pictures are 4x4 block means of the large ones: "area" makes LR inputs
    the same way; an unknown name is refused."""
    from nodes.training.esrgan_recipe import ESRGANOptions

    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    area = downsample(hr, 4, "area")
    assert torch.allclose(area[0, :, 1, 2], hr[0, :, 4:8, 8:12].mean(dim=(-2, -1)))
    assert not torch.allclose(downsample(hr, 4), area, atol=1e-3)
    assert ESRGANOptions().degradation == "bicubic"
    with pytest.raises(ValueError, match="degradation"):
        downsample(hr, 4, "nearest")
