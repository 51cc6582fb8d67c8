"""InitPixelModel: a fresh, seeded pixel-space UNet for a text encoder, ready to train.

The pixel family (``nodes/diffusion/configs/pixel.json``; :data:`nodes.diffusion.families.PIXEL`)
denoises the RGB image itself, folded by ``pixel_unshuffle(2)`` into 12 channels at half size, with
v-prediction on the cosine schedule and no autoencoder (the parameter-free
:class:`nodes.diffusion.pixel_vae.PixelUnshuffleVAE`). This node makes the untrained MODEL and its
VAE: DistillFineTune (weights "full", distill weight 0) then trains it as plain denoising, and saves
a single file that CheckpointLoaderSimple loads.

The UNet is built on every (re)load from the config and the seed alone, so the model manager may
evict it and build the same weights again.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Int, Link, Node, Output, String
from nodes.diffusion.families import PIXEL
from nodes.diffusion.models import ClipModel, DiffusionModel, VaeModel
from nodes.infra.model_manager import ModelManager, manager_from

EXAMPLE = '{"block_out_channels": [32, 64], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], ...}'


def pixel_unet_config(overrides: dict[str, Any], cross_attention_dim: int) -> dict[str, Any]:
    """configs/pixel.json's UNet with ``overrides`` (already checked by ``unet_overrides``) and the
    text encoder's width as ``cross_attention_dim``."""
    return {**PIXEL.shipped_config()["unet"], **overrides, "cross_attention_dim": int(cross_attention_dim)}


def pixel_models(config: dict[str, Any], seed: int, *, label: str) -> tuple[DiffusionModel, VaeModel]:
    """(MODEL, VAE) of a fresh pixel UNet of ``config`` seeded with ``seed``, as model-manager
    references (nothing is built until first use)."""
    from nodes.diffusion.loading import part_ref, vae_value  # diffusers: imported when a model is made

    vae_config = {k: v for k, v in PIXEL.shipped_config()["vae"].items() if not k.startswith("_")}

    def loader() -> dict[str, torch.nn.Module]:
        from nodes.diffusion.pixel_vae import PixelUnshuffleVAE
        from nodes.training.full_unet import fresh_unet

        return {"unet": fresh_unet(config, {}, seed), "vae": PixelUnshuffleVAE(**vae_config)}

    group = ("pixel-init", json.dumps(config, sort_keys=True), int(seed))
    unet_ref = part_ref(group, "unet", loader, label)
    model = DiffusionModel(ref=unet_ref, family=PIXEL.name, scheduler_config=PIXEL.scheduler_defaults)
    return model, vae_value(unet_ref.sibling("vae"), vae_config)


def _trial(manager: ModelManager, model: DiffusionModel, config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """One no-grad UNet call at the family's default size: a config that builds but cannot run
    (``layers_per_block`` 0, class embeddings nothing feeds) is named here, not at training step 1."""
    side = PIXEL.default_resolution // PIXEL.vae_scale_factor
    try:
        manager.ensure_loaded(model.ref)
    except ValueError as exc:  # fresh_unet's, which saw the merged config as its base: name the user's part
        raise ValueError(f"unet_config {json.dumps(overrides)} does not make a UNet: {exc.__cause__ or exc}") from exc
    try:
        with model.use(manager) as unet, torch.no_grad():
            weight = next(unet.parameters())
            x = torch.zeros(1, PIXEL.latent_channels, side, side, device=weight.device, dtype=weight.dtype)
            context = torch.zeros(1, 77, config["cross_attention_dim"], device=weight.device, dtype=weight.dtype)
            unet(x, torch.zeros(1, dtype=torch.long, device=weight.device), encoder_hidden_states=context)
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise ValueError(f"unet_config {json.dumps(overrides)} makes a UNet that cannot run: {exc}") from exc


class InitPixelModel(Node):
    category = "training"
    description = ("A fresh pixel-space text-to-image UNet (family 'pixel': RGB in [-1, 1] folded by pixel_unshuffle(2) "
                   "into 12 channels at half size, v-prediction, cosine schedule, no autoencoder) for a pixel-family "
                   "CLIP, with its parameter-free VAE. Untrained (random weights, the same for a seed): train it with "
                   "DistillFineTune (weights full, distill weights 0) and load the result with Load Checkpoint.")
    inputs = [Link("clip", "CLIP", tooltip="the text encoder that will condition the UNet (TrainCLIP's); its width "
                   "is the UNet's cross_attention_dim"),
              String("unet_config", "", multiline=True,
                     tooltip="a JSON object of UNet2DConditionModel arguments overriding configs/pixel.json's UNet, "
                     f"e.g. {EXAMPLE} (empty: the shipped ~11M-parameter UNet)"),
              Int("seed", 0, min=0, max=2**63 - 1, tooltip="the initial weights: the same seed, the same UNet")]
    outputs = [Output("MODEL"), Output("VAE")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        # full_unet (diffusers, peft) is imported when used: registering the pack must stay light.
        from nodes.training.full_unet import unet_overrides

        if widgets.get("unet_config") is None:
            return None
        try:
            unet_overrides(widgets["unet_config"])
        except ValueError as exc:
            return str(exc)
        return None

    def run(self, ctx: Context, *, clip: ClipModel, unet_config: str, seed: int) -> tuple[Any, ...]:
        if clip.family != PIXEL.name:
            raise ValueError(f"clip is a {clip.family} text encoder; InitPixelModel conditions a pixel-family UNet on "
                             f"a pixel-family CLIP (TrainCLIP's output, or a pixel checkpoint's)")
        from nodes.training.full_unet import unet_overrides

        overrides = unet_overrides(unet_config)
        manager = manager_from(ctx.services)
        width = int(manager.ensure_loaded(clip.refs[0]).config.hidden_size)
        config = pixel_unet_config(overrides, width)
        model, vae = pixel_models(config, seed, label=f"InitPixelModel seed {seed}")
        _trial(manager, model, config, overrides)
        return model, vae


NODES: list[type[Node]] = [InitPixelModel]
