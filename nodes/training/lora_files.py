"""A trained LoRA written the two ways people load LoRAs, into models/loras:

- ``<name>.safetensors``: kohya keys (``lora_unet_…``, ``lora_te1_…``/``lora_te2_…``) with a
  per-module ``alpha``, as A1111, ComfyUI and our LoraLoader read it; made by diffusers'
  ``convert_state_dict_to_kohya`` (which writes alpha = rank, so the real alpha is put back).
- ``<name>_diffusers/pytorch_lora_weights.safetensors``: diffusers/peft keys written by the
  pipelines' ``save_lora_weights``, with the peft ``LoraConfig`` (rank, alpha) in the
  ``lora_adapter_metadata`` entry, as ``pipeline.load_lora_weights(folder)`` reads it.

Both are written under temporary names and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.training.loop import FinalOutputs

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LoraTarget:
    directory: Path  # models/loras
    name: str  # file stem

    def __post_init__(self) -> None:
        # People type the file name they will pick in LoraLoader; never write foo.safetensors.safetensors.
        stem = self.name.strip().removesuffix(".safetensors")
        object.__setattr__(self, "name", stem)

    @property
    def kohya(self) -> Path:
        return self.directory / f"{self.name}.safetensors"

    @property
    def diffusers_dir(self) -> Path:
        return self.directory / f"{self.name}_diffusers"


def _metadata(config: Any) -> dict[str, Any]:
    data = config.to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}


def save_lora(target: LoraTarget, family: str, unet: dict[str, torch.Tensor], encoders: list[dict[str, torch.Tensor]],
              unet_config: Any, te_config: Any) -> FinalOutputs:
    """Write both files; returns the LORA names (relative to models/loras) and the paths."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya
    from safetensors.torch import save_file

    target.directory.mkdir(parents=True, exist_ok=True)
    unet = {k: v.detach().float().cpu().contiguous() for k, v in unet.items()}
    encoders = [{k: v.detach().float().cpu().contiguous() for k, v in sd.items()} for sd in encoders]
    parts = {"text_encoder": encoders[0]} if encoders else {}
    if len(encoders) > 1:
        parts["text_encoder_2"] = encoders[1]

    tmp_dir = target.directory / f".{target.diffusers_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    kwargs: dict[str, Any] = {"unet_lora_layers": unet, "unet_lora_adapter_metadata": _metadata(unet_config)}
    for part, sd in parts.items():
        kwargs[f"{part}_lora_layers"] = sd
        kwargs[f"{part}_lora_adapter_metadata"] = _metadata(te_config)
    saver = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    saver.save_lora_weights(str(tmp_dir), weight_name=DIFFUSERS_WEIGHT_NAME, safe_serialization=True, **kwargs)
    shutil.rmtree(target.diffusers_dir, ignore_errors=True)
    os.rename(tmp_dir, target.diffusers_dir)

    peft = {f"unet.{k}": v for k, v in unet.items()}
    for part, sd in parts.items():
        peft.update({f"{part}.{k}": v for k, v in sd.items()})
    kohya = convert_state_dict_to_kohya(peft)
    for key in [k for k in kohya if k.endswith(".alpha")]:
        alpha = te_config.lora_alpha if key.startswith("lora_te") else unet_config.lora_alpha
        kohya[key] = torch.tensor(float(alpha))
    tmp = target.directory / f".{target.kohya.name}.tmp-{os.getpid()}"
    save_file(kohya, str(tmp), metadata={"ss_network_dim": str(unet_config.r),
                                         "ss_network_alpha": str(unet_config.lora_alpha),
                                         "ss_base_model_version": family})
    os.replace(tmp, target.kohya)
    diffusers_name = f"{target.diffusers_dir.name}/{DIFFUSERS_WEIGHT_NAME}"
    return FinalOutputs({"lora_name": target.kohya.name, "diffusers_lora_name": diffusers_name},
                        [target.kohya, target.diffusers_dir / DIFFUSERS_WEIGHT_NAME])
