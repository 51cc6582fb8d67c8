"""Tiny LoRAs for the tiny SD1.x model, in the diffusers/peft and the kohya layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.zoo.sd import text_model_name
from nodes.infra.files import save_safetensors


def _lora_weights(module: torch.nn.Module, targets: tuple[str, ...], rank: int, gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) pairs for every Linear whose name ends with one of ``targets``."""
    pairs = {}
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and name.endswith(targets):
            down = torch.randn(rank, sub.in_features, generator=gen) * 0.2
            up = torch.randn(sub.out_features, rank, generator=gen) * 0.2
            pairs[name] = (down, up)
    return pairs


def save_loras(root: Path, sd15: dict[str, Any], seed: int) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    rank = 4
    unet_pairs = _lora_weights(sd15["unet"], ("to_q", "to_k", "to_v", "to_out.0"), rank, gen)
    te_pairs = {text_model_name(k): v for k, v in
                _lora_weights(sd15["text_encoders"][0], ("q_proj", "k_proj", "v_proj", "out_proj"), rank, gen).items()}
    # diffusers/peft layout: no alpha stored, so alpha = rank (scale 1).
    diffusers_state = {}
    for prefix, pairs in (("unet", unet_pairs), ("text_encoder", te_pairs)):
        for name, (down, up) in pairs.items():
            diffusers_state[f"{prefix}.{name}.lora_A.weight"] = down
            diffusers_state[f"{prefix}.{name}.lora_B.weight"] = up
    out = [save_safetensors(diffusers_state, root / "loras" / "tiny-sd15-diffusers.safetensors")]
    # kohya layout (SD1.x names follow the diffusers modules, dots -> underscores), alpha 2 of 4.
    kohya_state = {}
    gen2 = torch.Generator().manual_seed(seed + 1)
    for prefix, pairs in (("lora_unet_", unet_pairs), ("lora_te_", te_pairs)):
        for name, (down, up) in pairs.items():
            key = prefix + name.replace(".", "_")
            kohya_state[f"{key}.lora_down.weight"] = torch.randn(down.shape, generator=gen2) * 0.2
            kohya_state[f"{key}.lora_up.weight"] = torch.randn(up.shape, generator=gen2) * 0.2
            kohya_state[f"{key}.alpha"] = torch.tensor(2.0)
    out.append(save_safetensors(kohya_state, root / "loras" / "tiny-sd15-kohya.safetensors",
                                 {"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                  "ss_network_alpha": "2.0"}))
    return out
