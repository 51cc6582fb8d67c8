"""More tiny control models, in the layouts people download them in:

    controlnet/tiny-controlnet-sd15-original.safetensors   the zoo's SD1.5 ControlNet, original
                                                           (``control_model.``) key layout, with
                                                           its sidecar .yaml as published
    controlnet/tiny-controlnet-sd15-fp16-pruned.safetensors  the same, fp16 and without the prefix
    controlnet/tiny-controlnet-sdxl/                       an SDXL ControlNet, diffusers folder
    controlnet/tiny-t2i-adapter-sd15/                      a T2I-Adapter, diffusers folder
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nodes.infra import ldm_keys
from nodes.infra.files import METADATA_KEY, read_state_dict, save_safetensors


def controlnet_to_ldm(sd: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel keys -> the original ControlNet layout (no prefix): the UNet
    encoder renamed as the UNet is, plus zero_convs, middle_block_out and input_hint_block."""
    levels = len(config["block_out_channels"])
    unet_like = dict(config, up_block_types=["UpBlock2D"] * levels)
    out = ldm_keys.unet_to_ldm(sd, unet_like)
    blocks = len({k.split(".")[2] for k in sd if k.startswith("controlnet_cond_embedding.blocks.")})
    renamed: dict[str, torch.Tensor] = {}
    for key, value in out.items():
        parts = key.split(".")
        if key.startswith("controlnet_down_blocks."):
            key = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif key.startswith("controlnet_mid_block."):
            key = f"middle_block_out.0.{parts[1]}"
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            key = f"input_hint_block.0.{parts[2]}"
        elif key.startswith("controlnet_cond_embedding.blocks."):
            key = f"input_hint_block.{2 * int(parts[2]) + 2}.{parts[3]}"
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            key = f"input_hint_block.{2 * blocks + 2}.{parts[2]}"
        renamed[key] = value
    return renamed


def _sidecar(config: dict[str, Any]) -> dict[str, Any]:
    """The original cldm config's control_stage_config, as published next to the weights."""
    return {"model": {"target": "cldm.cldm.ControlLDM", "params": {"control_stage_config": {
        "target": "cldm.cldm.ControlNet",
        "params": {"image_size": 32, "in_channels": config["in_channels"], "hint_channels": 3,
                   "model_channels": config["block_out_channels"][0], "num_heads": config["attention_head_dim"],
                   "num_res_blocks": config["layers_per_block"], "context_dim": config["cross_attention_dim"],
                   "use_checkpoint": True, "legacy": False}}}}}


def save_original_controlnet(root: Path) -> list[Path]:
    """The zoo's diffusers SD1.5 ControlNet again, as the original-layout files people download."""
    import yaml

    sd, metadata = read_state_dict(root / "controlnet" / "tiny-controlnet-sd15.safetensors")
    config = json.loads(metadata[METADATA_KEY])["controlnet"]
    ldm = controlnet_to_ldm(sd, config)
    written = []
    for name, state in (("tiny-controlnet-sd15-original", ldm_keys.prefixed(ldm, "control_model.")),
                        ("tiny-controlnet-sd15-fp16-pruned", {k: v.half() for k, v in ldm.items()})):
        path = save_safetensors(state, root / "controlnet" / f"{name}.safetensors")
        path.with_suffix(".yaml").write_text(yaml.safe_dump(_sidecar(config)))
        written.append(path)
    return written


def save_sdxl_controlnet(root: Path, sdxl: dict[str, Any], seed: int) -> Path:
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(sdxl["unet"], conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():  # from_unet zero-initialises the outputs; a random net should visibly act
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                param.normal_(0.0, 0.05)
    folder = root / "controlnet" / "tiny-controlnet-sdxl"
    net.save_pretrained(folder, safe_serialization=True)
    return folder


def save_t2i_adapter(root: Path, seed: int) -> Path:
    """A full T2I-Adapter whose two feature levels fit the tiny SD1.5 UNet (32, 64 channels)."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=8,
                         adapter_type="full_adapter")
    folder = root / "controlnet" / "tiny-t2i-adapter-sd15"
    adapter.save_pretrained(folder, safe_serialization=True)
    return folder


def save_control_variants(root: Path, sdxl: dict[str, Any], seed: int) -> list[Path]:
    """Everything above; the diffusers SD1.5 ControlNet must already be written."""
    return [*save_original_controlnet(root), save_sdxl_controlnet(root, sdxl, seed),
            save_t2i_adapter(root, seed + 1)]
