"""A pixel-family model for tests: the tiny zoo's SD1 text encoder as a pixel CLIP, and a small
fresh pixel UNet for it (InitPixelModel), fast enough for the default test run."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from nodes.diffusion.nodes_loaders import CheckpointLoaderSimple
from nodes.training.new_pixel_model import InitPixelModel

SMALL_PIXEL_UNET = json.dumps({"block_out_channels": [32, 64], "layers_per_block": 1,
                               "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                               "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "attention_head_dim": [2, 4]})


def pixel_clip(ctx: Any) -> Any:
    """The tiny SD1.5 checkpoint's text encoder, as a pixel-family CLIP."""
    _, clip, _ = CheckpointLoaderSimple().run(ctx, ckpt_name="tiny-sd15.safetensors")
    return dataclasses.replace(clip, family="pixel")


def pixel_model(ctx: Any, seed: int = 0, unet_config: str = SMALL_PIXEL_UNET) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE) of a fresh small pixel UNet."""
    clip = pixel_clip(ctx)
    model, vae = InitPixelModel().run(ctx, clip=clip, unet_config=unet_config, seed=seed)
    return model, clip, vae
