"""InitUpscaleModel: a seeded new ESRGAN that ImageUpscaleWithModel runs and TrainESRGAN trains
from scratch on 32 -> 128 pairs (held-out PSNR rises), its file loading in UpscaleModelLoader."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from graph_runtime.context import HookContext
from graph_runtime.folders import FolderPaths
from nodes.infra.model_manager import manager_from
from nodes.training.dataset import load_dataset
from nodes.training.esrgan import TrainESRGAN
from nodes.training.esrgan_recipe import downsample
from nodes.training.new_upscale_model import InitUpscaleModel
from nodes.upscale.nodes_upscale import ImageUpscaleWithModel, UpscaleModelLoader
from tests.training.clip_shapes import CAPTIONS, render
from tests.training.training_ctx import CtxFactory

TRAIN = dict(steps=15, batch_size=2, gradient_accumulation=1, learning_rate=2e-3, lr_scheduler="constant",
             pixel_weight=1.0, perceptual_weight=0.0, gan_weight=0.0, discriminator_features=8, ema_decay=0.0,
             max_grad_norm=0.0, precision="auto", seed=0, checkpoint_every=0, preview_every=0, resume_from="")


@pytest.fixture
def make_ctx(tmp_path) -> CtxFactory:
    """Folders of this test only: no model zoo is needed."""
    return CtxFactory(FolderPaths(base=tmp_path, models_roots=[tmp_path / "models"]))


def hr_images(count: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    return [render(CAPTIONS[i % len(CAPTIONS)], rng, size=128) for i in range(count)]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def weights(ctx: Any, model: Any) -> dict[str, torch.Tensor]:
    with manager_from(ctx.services).use(model.ref) as (module,):
        return {k: v.clone() for k, v in module.net.state_dict().items()}


def test_the_same_seed_makes_the_same_network(make_ctx) -> None:
    ctx = make_ctx()
    first = InitUpscaleModel().run(ctx, num_filters=8, num_blocks=1, scale=2, seed=3)[0]
    again = InitUpscaleModel().run(make_ctx(), num_filters=8, num_blocks=1, scale=2, seed=3)[0]
    other = InitUpscaleModel().run(ctx, num_filters=8, num_blocks=1, scale=2, seed=4)[0]
    assert (first.info.architecture, first.scale, first.info.input_channels) == ("ESRGAN", 2, 3)
    a, b, c = weights(ctx, first), weights(ctx, again), weights(ctx, other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    out = ImageUpscaleWithModel().run(ctx, upscale_model=first, image=torch.rand(1, 8, 8, 3))[0]
    assert out.shape == (1, 16, 16, 3)
    assert 0.3 < float(out.mean()) < 0.7  # mid-grey, not clamped to black


def test_scales_other_than_2_and_4_are_refused(make_ctx) -> None:
    hook = HookContext(folders=make_ctx.folders)
    assert InitUpscaleModel.validate_inputs(hook, scale=3) == "scale must be one of 2, 4, got 3"
    assert InitUpscaleModel.validate_inputs(hook, scale=4) is None


def test_train_esrgan_from_a_new_model_raises_held_out_psnr(make_ctx) -> None:
    """15 steps of L1 on 32 -> 128 pairs of shape renders: the saved file, through
    UpscaleModelLoader, beats the untrained network on renders it never saw by > 5 dB."""
    ctx = make_ctx()
    folder = ctx.folders.input_dir / "hr"
    folder.mkdir(parents=True)
    for index, image in enumerate(hr_images(12, seed=0)):
        image.save(folder / f"{index:02d}.png")
    dataset = load_dataset(folder, resolution=128, crop="center", flip=False, aspect_buckets=False,
                           caption_template="{caption}", caption_dropout=0.0, captions="none")
    hr = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 255 for i in hr_images(4, seed=99)]))
    lr = downsample(hr.movedim(-1, 1), 4).movedim(1, -1)

    (fresh,) = InitUpscaleModel().run(ctx, num_filters=8, num_blocks=1, scale=4, seed=0)
    before = psnr(ImageUpscaleWithModel().run(ctx, upscale_model=fresh, image=lr)[0], hr)
    result = TrainESRGAN().run(ctx, upscale_model=fresh, dataset=dataset, run_name="fresh", **TRAIN)
    (trained,) = UpscaleModelLoader().run(ctx, model_name=result.outputs[0])
    after = psnr(ImageUpscaleWithModel().run(ctx, upscale_model=trained, image=lr)[0], hr)
    assert after > before + 5, (before, after)


def test_nearest_initialisation_starts_as_nearest_neighbour_upscaling() -> None:
    """initialisation 'nearest': the untrained model already upscales (close to nearest-neighbour);
    the paper's initialisation starts mid-grey. Both deterministic for a seed."""
    import torch.nn.functional as F

    from nodes.training.new_upscale_model import initial_state
    from nodes.upscale.spandrel_models import registry

    lr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    nearest = F.interpolate(lr, scale_factor=4, mode="nearest")
    outputs = {}
    for init in ("nearest", "esrgan"):
        net = registry().load(initial_state(16, 1, 4, 0, init)).model.eval()
        with torch.no_grad():
            outputs[init] = net(lr)
    assert (outputs["nearest"] - nearest).abs().mean() < 0.05
    assert (outputs["esrgan"] - nearest).abs().mean() > 0.15
    assert torch.equal(registry().load(initial_state(16, 1, 4, 0, "nearest")).model.state_dict()["model.0.weight"],
                       registry().load(initial_state(16, 1, 4, 0, "nearest")).model.state_dict()["model.0.weight"])
