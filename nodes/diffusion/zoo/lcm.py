"""Tiny few-step models: LCM/SLAM-style LoRAs for the tiny SD1.x and SDXL, and a tiny distilled
(LCM) SD1.x UNet with a guidance embedding (``time_cond_proj_dim``).

The LoRAs target the modules diffusers' consistency-distillation scripts train
(``examples/consistency_distillation/train_lcm_distill_lora_*.py``: attention projections,
``proj_in``/``proj_out``, feed-forward, ResNet convolutions and time projections, down/up
samplers) and come in the layouts such files ship in:

- ``loras/tiny-lcm-lora-sd15.safetensors``: kohya keys over the diffusers module names with an
  ``alpha`` per module (as the published LCM-LoRA ``pytorch_lora_weights.safetensors``);
- ``loras/tiny-slam-lora-sdxl.safetensors``: diffusers keys ``unet.<module>.lora.down.weight`` /
  ``lora.up.weight`` and no alpha (``save_lora_weights`` after ``convert_state_dict_to_diffusers``,
  as SLAM's ``pytorch_lora_weights.safetensors``);
- ``diffusers/tiny-lcm-sd15/``: the tiny SD1.x with its UNet replaced by one embedding the guidance
  scale (LCM_Dreamshaper_v7's layout: a diffusers folder with an ``LCMScheduler``).
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.zoo.sd import TINY_SD15_UNET, _save_pipeline_folder, family_spec
from nodes.infra.files import save_safetensors

LCM_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
RANK = 4


def lora_pairs(unet: torch.nn.Module, gen: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (down, up) pairs for every Linear/Conv2d the distillation scripts adapt. Convolutions
    get a kxk down and a 1x1 up (peft's LoRA for Conv2d)."""
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, sub in unet.named_modules():
        if not name.endswith(LCM_LORA_TARGETS):
            continue
        if isinstance(sub, torch.nn.Linear):
            down_shape: tuple[int, ...] = (RANK, sub.in_features)
            up_shape: tuple[int, ...] = (sub.out_features, RANK)
        elif isinstance(sub, torch.nn.Conv2d):
            down_shape = (RANK, sub.in_channels, *sub.kernel_size)
            up_shape = (sub.out_channels, RANK, 1, 1)
        else:
            continue
        fan_in = float(torch.tensor(down_shape[1:]).prod())
        pairs[name] = (torch.randn(down_shape, generator=gen) / fan_in ** 0.5,
                       torch.randn(up_shape, generator=gen) * 0.3)
    return pairs


def save_lcm_models(root: Path, sd15: dict[str, Any], sdxl: dict[str, Any], tokenizer_dir: Path, seed: int) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    kohya: dict[str, torch.Tensor] = {}
    for name, (down, up) in lora_pairs(sd15["unet"], gen).items():
        key = "lora_unet_" + name.replace(".", "_")
        kohya.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                      f"{key}.alpha": torch.tensor(float(RANK) / 2)})
    out = [save_safetensors(kohya, root / "loras" / "tiny-lcm-lora-sd15.safetensors",
                            {"ss_network_module": "networks.lora", "ss_network_dim": str(RANK),
                             "ss_network_alpha": str(RANK / 2)})]
    diffusers_state: dict[str, torch.Tensor] = {}
    for name, (down, up) in lora_pairs(sdxl["unet"], gen).items():
        diffusers_state[f"unet.{name}.lora.down.weight"] = down
        diffusers_state[f"unet.{name}.lora.up.weight"] = up
    out.append(save_safetensors(diffusers_state, root / "loras" / "tiny-slam-lora-sdxl.safetensors"))
    out.append(save_distilled_sd15(root, sd15, tokenizer_dir, seed + 1))
    return out


def save_distilled_sd15(root: Path, sd15: dict[str, Any], tokenizer_dir: Path, seed: int) -> Path:
    """``diffusers/tiny-lcm-sd15``: the tiny SD1.x text encoder and VAE with a UNet that takes the
    guidance scale embedding as ``timestep_cond`` (``time_cond_proj_dim``), and LCM's scheduler."""
    from diffusers import LCMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SD15_UNET, time_cond_proj_dim=32)
    models = dict(sd15, unet=unet)
    spec = family_spec(models)
    known = inspect.signature(LCMScheduler.__init__).parameters
    lcm_config = {k: v for k, v in LCMScheduler.from_config(spec["scheduler"]).config.items() if k in known}
    spec["scheduler"] = json.loads(json.dumps({"_class_name": "LCMScheduler", **lcm_config}))
    folder = root / "diffusers" / "tiny-lcm-sd15"
    _save_pipeline_folder(folder, models, spec, tokenizer_dir)
    # transformers 5 saves tokenizer.json only; published folders (and our loader) use the BPE files.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / name, folder / "tokenizer" / name)
    return folder
