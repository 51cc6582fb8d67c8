"""DistillFineTune with every UNet weight training: a small UNet trained from scratch on a one-colour
dataset learns it (its samples move to the data's latent), a full fine-tune starts as the original
and leaves the shared model untouched, and both checkpoints reload in CheckpointLoaderSimple with
the trained weights, at their own size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from graph_runtime.context import HookContext
from nodes.diffusion.nodes_conditioning import CLIPTextEncode
from nodes.diffusion.nodes_latent import VAEEncode
from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.diffusion.nodes_sampling import KSampler
from nodes.infra.files import read_state_dict
from nodes.infra.model_manager import manager_from
from nodes.training.dataset import load_dataset
from nodes.training.distill import DistillFineTune

RED = (220, 30, 30)
CAPTION = "a red square"
WIDGETS = {i.name: i.default for i in DistillFineTune.inputs if i.is_widget}
SMALL = json.dumps({"block_out_channels": [16, 32], "norm_num_groups": 8, "attention_head_dim": 2})


@pytest.fixture
def dataset(tmp_path: Path) -> Any:
    folder = tmp_path / "red"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), RED).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(CAPTION)
    return load_dataset(folder, resolution=64, crop="center", flip=False, aspect_buckets=False,
                        caption_template="{caption}", caption_dropout=0.0)


def _train(ctx: Any, dataset: Any, **changes: Any) -> Any:
    model, clip, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    inputs = {**WIDGETS, "model": model, "clip": clip, "vae": vae, "dataset": dataset, "batch_size": 2,
              "checkpoint_every": 0, "preview_every": 0, **changes}
    return DistillFineTune().run(ctx, **inputs)


def _samples(ctx: Any, ckpt_name: str) -> torch.Tensor:
    model, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name=ckpt_name)
    positive = CLIPTextEncode().run(ctx, text=CAPTION, clip=clip)[0]
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    return KSampler().run(ctx, model=model, seed=7, steps=10, cfg=1.0, sampler_name="euler", scheduler="normal",
                          positive=positive, negative=positive, latent_image=latent, denoise=1.0)[0]["samples"]


def _trained_weights(ctx: Any, run_name: str) -> dict[str, torch.Tensor]:
    [file] = (ctx.folders.directory_for("output") / "training").glob(f"{run_name}-*/checkpoints/step-*/trainable.safetensors")
    return {k.removeprefix("unet."): v for k, v in read_state_dict(file)[0].items()}


def _loaded_unet(ctx: Any, ckpt_name: str) -> dict[str, torch.Tensor]:
    model = CheckpointLoaderSimple().run(ctx, ckpt_name=ckpt_name)[0]
    with model.use(manager_from(ctx.services)) as unet:
        return {k: v.detach().clone() for k, v in unet.state_dict().items()}, dict(unet.config)


def test_a_small_unet_trained_from_scratch_learns_the_data_and_reloads_equal(make_ctx: Any, dataset: Any) -> None:
    ctx = make_ctx()
    result = _train(ctx, dataset, weights="from_scratch", unet_config=SMALL, run_name="scratch", steps=80,
                    learning_rate=3e-3, schedule="constant", distill_weight_start=0.0, distill_weight_end=0.0,
                    max_grad_norm=1.0)
    lora_name, losses, ckpt_name = result.outputs
    assert lora_name == "" and ckpt_name == "scratch.safetensors"
    assert sum(losses["loss"][-10:]) < 0.5 * sum(losses["loss"][:10]), losses["loss"]
    loaded, config = _loaded_unet(ctx, ckpt_name)
    assert config["block_out_channels"] == [16, 32] or tuple(config["block_out_channels"]) == (16, 32)
    trained = _trained_weights(ctx, "scratch")
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded)
    _, _, vae = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    red = torch.tensor(RED, dtype=torch.float32).div(255).expand(1, 64, 64, 3)
    target = VAEEncode().run(ctx, pixels=red, vae=vae)[0]["samples"]
    learnt = (_samples(ctx, ckpt_name) - target).pow(2).mean().item()
    base = (_samples(ctx, "tiny-sd15.safetensors") - target).pow(2).mean().item()
    print(f"from-scratch sample MSE to the data latent: trained {learnt:.4f}, base model {base:.4f}")
    assert learnt < 0.25 * base, (learnt, base)


def test_full_fine_tune_starts_as_the_original_and_saves_a_checkpoint(make_ctx: Any, dataset: Any) -> None:
    ctx = make_ctx()
    model = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")[0]
    with model.use(manager_from(ctx.services)) as unet:
        before = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    result = _train(ctx, dataset, weights="full", run_name="full", steps=3, learning_rate=1e-3, schedule="linear")
    losses = result.outputs[1]["loss"]
    assert result.outputs[2] == "full.safetensors" and len(losses) == 3
    loaded, _ = _loaded_unet(ctx, "full.safetensors")
    trained = _trained_weights(ctx, "full")
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded)
    assert any(not torch.equal(loaded[k], before[k]) for k in loaded)  # it trained
    with model.use(manager_from(ctx.services)) as unet:  # the shared MODEL is untouched
        assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())


@pytest.mark.parametrize(("changes", "message"), [
    ({"weights": "from_scratch", "unet_config": "{block_out_channels: 3"}, "unet_config is not JSON"),
    ({"weights": "from_scratch", "unet_config": '{"blocks": 3}'}, "['blocks'] are not UNet2DConditionModel arguments"),
    ({"weights": "from_scratch", "unet_config": '{"in_channels": 9}'}, "['in_channels'] are fixed by the MODEL"),
    ({"weights": "full", "unet_config": '{"layers_per_block": 2}'}, "unet_config applies to weights 'from_scratch'"),
    ({"weights": "from_scratch", "unet_config": '{"norm_eps": NaN}'}, "unet_config is not JSON (NaN"),
    ({"weights": "full", "train_text_encoder": True}, "trains the UNet only"),
])
def test_bad_full_training_inputs_are_validation_errors(make_ctx: Any, changes: dict, message: str) -> None:
    problem = DistillFineTune.validate_inputs(HookContext(folders=make_ctx.folders), **{**WIDGETS, **changes})
    assert problem is not None and message in problem, problem


def test_a_config_that_makes_no_unet_is_named_before_training(make_ctx: Any, dataset: Any) -> None:
    with pytest.raises(ValueError, match="does not make a UNet"):
        _train(make_ctx(), dataset, weights="from_scratch", unet_config='{"block_out_channels": [16, 32, 64]}',
               steps=1)


@pytest.mark.parametrize("config", [
    {"attention_head_dim": 0},  # diffusers divides by it while building
    {"layers_per_block": 0},  # builds, but cannot run
    {"num_class_embeds": 4},  # wants class labels the MODEL's conditioning has none of
])
def test_a_config_that_builds_no_working_unet_is_named_before_training(make_ctx: Any, dataset: Any, config: dict) -> None:
    ctx = make_ctx()
    overrides = json.dumps({**json.loads(SMALL), **config})
    with pytest.raises(ValueError, match="unet_config .* (does not make a UNet|makes a UNet that cannot run)"):
        _train(ctx, dataset, weights="from_scratch", unet_config=overrides, steps=1, run_name="broken")
    assert not list((ctx.folders.directory_for("output") / "training").glob("broken-*/checkpoints/step-*"))
    manager = manager_from(ctx.services)
    assert all(entry.in_use == 0 for entry in manager._entries.values())  # the original is released
