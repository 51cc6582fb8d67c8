"""A tiny ControlNet made from the tiny SD1.x UNet, for the ControlNet nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.families import SD15
from nodes.diffusion.zoo.sd import plain_config
from nodes.infra.files import METADATA_KEY, save_safetensors


def save_controlnet(root: Path, sd15: dict[str, Any], seed: int) -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(sd15["unet"], conditioning_embedding_out_channels=(8, 8, 16, 16))
    # from_unet zero-initialises the output convolutions; a random net should visibly act.
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.normal_(0.0, 0.05)
    config = plain_config(net)
    return save_safetensors(net.state_dict(), root / "controlnet" / "tiny-controlnet-sd15.safetensors",
                             {METADATA_KEY: json.dumps({"controlnet": config, "family": SD15.name})})
