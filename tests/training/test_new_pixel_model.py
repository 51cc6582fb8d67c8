"""The pixel family through the training nodes: InitPixelModel makes the same UNet for a seed, its
checkpoint (CheckpointSave) reloads equal in CheckpointLoaderSimple, and DistillFineTune "full" with
distill weight 0 trains it as plain denoising (the original never runs), its loss falls and its
checkpoint samples a 32x32 image through KSampler (ddim, 25 steps) and VAEDecode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from graph_runtime.context import HookContext
from graph_runtime.folders import FolderPaths
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_latent import EmptyLatentImage, VAEDecode
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.diffusion.nodes_sampling import KSampler
from nodes.diffusion.pixel_vae import PixelUnshuffleVAE
from nodes.infra.files import read_metadata
from nodes.infra.model_manager import manager_from
from nodes.training.checkpoint_save import CheckpointSave
from nodes.training.dataset import load_dataset
from nodes.training.distill import DistillFineTune
from nodes.training.full_unet import FullDistillRecipe
from nodes.training.new_pixel_model import InitPixelModel
from tests.training.pixel_helpers import SMALL_PIXEL_UNET, pixel_clip, pixel_model
from tests.training.training_ctx import CtxFactory

WIDGETS = {i.name: i.default for i in DistillFineTune.inputs if i.is_widget}
COLOURS = {"a red square": (220, 30, 30), "a blue square": (30, 40, 220)}


def _unet_state(ctx: Any, model: Any) -> dict[str, torch.Tensor]:
    with model.use(manager_from(ctx.services)) as unet:
        return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def test_a_seed_makes_the_same_pixel_unet_and_another_seed_another(run_folders: FolderPaths) -> None:
    first, second = CtxFactory(run_folders)(), CtxFactory(run_folders)()  # two processes' worth of managers
    model, clip, vae = pixel_model(first, seed=3)
    again = pixel_model(second, seed=3)[0]
    other = pixel_model(second, seed=4)[0]
    a, b, c = _unet_state(first, model), _unet_state(second, again), _unet_state(second, other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    with model.use(manager_from(first.services)) as unet:
        assert unet.config.cross_attention_dim == 32 and unet.config.in_channels == 12  # the CLIP's width
        assert list(unet.config.block_out_channels) == [32, 64]
    assert model.family == "pixel" and model.scheduler_config["prediction_type"] == "v_prediction"
    assert model.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert (vae.latent_channels, vae.downscale, vae.scaling_factor) == (12, 2, 1.0)


@pytest.mark.parametrize(("unet_config", "message"), [
    ('{"block_out_channels": [32, 64', "unet_config is not JSON"),
    ('{"cross_attention_dim": 64}', "['cross_attention_dim'] are fixed by the MODEL"),
    ('{"channels": 3}', "['channels'] are not UNet2DConditionModel arguments"),
])
def test_bad_unet_configs_are_validation_errors(run_folders: FolderPaths, unet_config: str, message: str) -> None:
    problem = InitPixelModel.validate_inputs(HookContext(folders=run_folders), unet_config=unet_config, seed=0)
    assert problem is not None and message in problem, problem


def test_a_config_that_makes_no_working_unet_and_a_clip_of_another_family_are_named(make_ctx: CtxFactory) -> None:
    ctx = make_ctx()
    with pytest.raises(ValueError, match="unet_config .* does not make a UNet") as raised:
        pixel_model(ctx, unet_config='{"block_out_channels": [32, 64]}')  # three block types for two sizes
    # Named once, with the user's overrides (not the message of the build nested in the trial's).
    assert str(raised.value).startswith('unet_config {"block_out_channels": [32, 64]} does not make a UNet: ')
    assert "cannot run" not in str(raised.value) and "{}" not in str(raised.value)
    with pytest.raises(ValueError, match="makes a UNet that cannot run"):
        pixel_model(ctx, unet_config=json.dumps({**json.loads(SMALL_PIXEL_UNET), "num_class_embeds": 4}))
    _, sd_clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    with pytest.raises(ValueError, match="clip is a sd15 text encoder; InitPixelModel conditions"):
        InitPixelModel().run(ctx, clip=sd_clip, unet_config="", seed=0)


def _reload(make_ctx: CtxFactory, path: Path) -> tuple[Any, Any, Any, Any]:
    """The file through CheckpointLoaderSimple in a fresh process's worth of services."""
    root = make_ctx.folders.models_roots[0] / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    if path.parent != root:
        shutil.copyfile(path, root / path.name)
    ctx = CtxFactory(make_ctx.folders)()
    return (ctx, *CheckpointLoaderSimple().run(ctx, ckpt_name=path.name))


def _outputs(ctx: Any, model: Any, clip: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(text embeddings of a prompt, the UNet's output on a fixed input with them)."""
    embeds = CLIPTextEncode().run(ctx, text="a red mug", clip=clip)[0][0][0]
    x = torch.randn(1, 12, 16, 16, generator=torch.Generator().manual_seed(0))
    with model.use(manager_from(ctx.services)) as unet, torch.no_grad():
        return embeds, unet(x, torch.tensor([500]), encoder_hidden_states=embeds).sample


def test_checkpoint_save_writes_a_pixel_file_that_reloads_equal(make_ctx: CtxFactory) -> None:
    ctx = make_ctx()
    model, clip, vae = pixel_model(ctx, seed=5)
    text = CheckpointSave().run(ctx, model=model, clip=clip, vae=vae, filename_prefix="checkpoints/pixel").ui["text"][0]
    path = ctx.folders.directory_for("output") / text.removeprefix("saved ")
    spec = json.loads(read_metadata(path)["nodeloom_config"])
    assert spec["family"] == "pixel" and spec["vae"]["_class_name"] == "PixelUnshuffleVAE"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("first_stage_model.") for k in keys)  # the VAE has no weights
    assert any(k.startswith("cond_stage_model.transformer.") for k in keys)  # SD1's text encoder prefix
    loaded_ctx, loaded_model, loaded_clip, loaded_vae = _reload(make_ctx, path)
    assert (loaded_model.family, loaded_clip.family) == ("pixel", "pixel")
    assert loaded_model.scheduler_config["prediction_type"] == "v_prediction"
    with loaded_vae.use(manager_from(loaded_ctx.services)) as module:
        assert isinstance(module, PixelUnshuffleVAE) and loaded_vae.downscale == 2
    (embeds, out), (loaded_embeds, loaded_out) = _outputs(ctx, model, clip), _outputs(loaded_ctx, loaded_model, loaded_clip)
    assert torch.equal(embeds, loaded_embeds) and torch.equal(out, loaded_out)


@pytest.fixture
def squares(tmp_path: Path) -> Any:
    """Four 32x32 pictures: a red or blue square on white, captioned."""
    folder = tmp_path / "squares"
    folder.mkdir()
    for i, (caption, colour) in enumerate(list(COLOURS.items()) * 2):
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        image.paste(colour, (8 + i, 8, 24 + i, 24))
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    return load_dataset(folder, resolution=32, crop="center", flip=False, aspect_buckets=False,
                        caption_template="{caption}", caption_dropout=0.0)


def test_plain_denoising_training_of_a_pixel_model_samples_a_32px_image(make_ctx: CtxFactory, squares: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("the original model ran although the distillation weight is 0 all run")

    monkeypatch.setattr(FullDistillRecipe, "original_prediction", never)
    ctx = make_ctx()
    model, clip, vae = pixel_model(ctx)
    inputs = {**WIDGETS, "model": model, "clip": clip, "vae": vae, "dataset": squares, "weights": "full",
              "schedule": "constant", "distill_weight_start": 0.0, "distill_weight_end": 0.0, "steps": 60,
              "batch_size": 4, "learning_rate": 2e-3, "max_grad_norm": 1.0, "checkpoint_every": 0,
              "preview_every": 0, "run_name": "pixel"}
    _, losses, ckpt_name = DistillFineTune().run(ctx, **inputs).outputs
    loss = losses["loss"]
    print(f"pixel training loss: first 10 {sum(loss[:10]) / 10:.3f}, last 10 {sum(loss[-10:]) / 10:.3f}")
    assert sum(loss[-10:]) < 0.6 * sum(loss[:10]), loss
    loaded_ctx, trained, trained_clip, trained_vae = _reload(make_ctx, make_ctx.folders.models_roots[0] / "checkpoints"
                                                             / ckpt_name)
    image = _txt2img(loaded_ctx, trained, trained_clip, trained_vae)
    assert image.shape == (2, 32, 32, 3) and bool(torch.isfinite(image).all())
    # Trained on white backgrounds: the border of a sample is lighter than the untrained model's.
    untrained = _txt2img(ctx, model, clip, vae)
    borders = [float(torch.cat([i[:, :4].flatten(), i[:, -4:].flatten()]).mean()) for i in (image, untrained)]
    print(f"mean border brightness: trained {borders[0]:.3f}, untrained {borders[1]:.3f}")
    assert borders[0] > 0.6 and borders[0] > borders[1] + 0.1, borders


def _txt2img(ctx: Any, model: Any, clip: Any, vae: Any) -> torch.Tensor:
    """Two 32x32 samples of "a red square": EmptyLatentImage, KSampler ddim 25 steps, VAEDecode."""
    positive = CLIPTextEncode().run(ctx, text="a red square", clip=clip)[0]
    negative = CLIPTextEncode().run(ctx, text="", clip=clip)[0]
    empty = EmptyLatentImage().run(ctx, width=32, height=32, batch_size=2)[0]
    latent = KSampler().run(ctx, model=model, seed=0, steps=25, cfg=3.0, sampler_name="ddim", scheduler="normal",
                            positive=positive, negative=negative, latent_image=empty, denoise=1.0)[0]
    return VAEDecode().run(ctx, samples=latent, vae=vae)[0]
