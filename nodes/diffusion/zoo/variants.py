"""Tiny SD2.x single files (v-prediction, as the 768-v models, and epsilon, as the 512 base) and a
tiny SD1.5 inpainting single file (a UNet taking 9 input channels), in the original key layout.

The SD2 files hold the OpenCLIP text tower as real SD2 files do (``cond_stage_model.model.*``, one
block more than is run: SD2 conditions on the penultimate layer, with ``text_projection`` and
``logit_scale`` that conditioning never uses). The v-prediction file's last output attention block
has the spread of ``norm1.bias`` values real 768-v checkpoints show, which is what ComfyUI's
detection reads (see ``single_file.prediction_type_of``); the epsilon file keeps it at zero.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from nodes.diffusion.families import SD21
from nodes.diffusion.zoo.sd import TINY_SD15_UNET, TINY_VAE, family_spec, single_file_state, tiny_sd15, tiny_text_config
from nodes.infra import ldm_keys
from nodes.infra.files import METADATA_KEY, save_safetensors

# SD2's heads are 64 channels wide: one head per level at these widths (what shape inference gives).
TINY_SD2_UNET: dict[str, Any] = dict(TINY_SD15_UNET, attention_head_dim=[1, 1], use_linear_projection=True)
V_PREDICTION_SPREAD = 0.2  # std of the marker bias; ComfyUI's threshold is 0.09


def tiny_sd2(seed: int, *, v_prediction: bool) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te_cfg = tiny_text_config(projection=False, act="gelu")
    file_tower = CLIPTextModel(CLIPTextConfig(**dict(te_cfg, num_hidden_layers=te_cfg["num_hidden_layers"] + 1)))
    unet = UNet2DConditionModel(**TINY_SD2_UNET)
    if v_prediction:
        marker = unet.up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias
        with torch.no_grad():
            marker.normal_(0.0, V_PREDICTION_SPREAD)
    return {"family": SD21.name, "unet": unet, "vae": AutoencoderKL(**dict(TINY_VAE, scaling_factor=0.18215)),
            "text_encoders": [file_tower], "te_configs": [te_cfg]}


def _save_single(root: Path, name: str, models: dict[str, Any], prediction_type: str | None = None) -> Path:
    spec = family_spec(models)
    if prediction_type is not None:
        spec["scheduler"] = dict(spec["scheduler"], prediction_type=prediction_type)
    state = single_file_state(models, spec)
    if models["family"] == SD21.name:
        width = models["te_configs"][0]["hidden_size"]
        state[ldm_keys.SD2_OPENCLIP_PREFIX + "text_projection"] = torch.randn(width, width) / math.sqrt(width)
        state[ldm_keys.SD2_OPENCLIP_PREFIX + "logit_scale"] = torch.tensor(math.log(1 / 0.07))
    path = root / "checkpoints" / f"{name}.safetensors"
    return save_safetensors(state, path, {METADATA_KEY: json.dumps(spec)})


def save_variants(root: Path, seed: int) -> list[Path]:
    """checkpoints/tiny-sd2-v, tiny-sd2-eps and tiny-sd15-inpainting (.safetensors)."""
    from diffusers import UNet2DConditionModel

    inpainting = tiny_sd15(seed + 2)
    inpainting["unet"] = UNet2DConditionModel(**dict(TINY_SD15_UNET, in_channels=9))
    return [_save_single(root, "tiny-sd2-v", tiny_sd2(seed, v_prediction=True), "v_prediction"),
            _save_single(root, "tiny-sd2-eps", tiny_sd2(seed + 1, v_prediction=False), "epsilon"),
            _save_single(root, "tiny-sd15-inpainting", inpainting)]
