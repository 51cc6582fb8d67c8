"""Guidance strategies and the per-model extras of a UNet call (see ``denoiser``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from nodes.diffusion.families import FamilySpec

Tensor = torch.Tensor


# -- guidance --------------------------------------------------------------------------------------

class Guidance(Protocol):
    """How a step's predictions combine. ``uses_negative``: the negative prompt is predicted too."""

    uses_negative: bool

    def combine(self, cond: Tensor, uncond: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    scale: float
    uses_negative: bool = True

    def combine(self, cond: Tensor, uncond: Tensor | None) -> Tensor:
        assert uncond is not None, "classifier-free guidance needs the negative prediction"
        return uncond + self.scale * (cond - uncond)


@dataclass(frozen=True)
class NoGuidance:
    uses_negative: bool = False

    def combine(self, cond: Tensor, uncond: Tensor | None) -> Tensor:
        return cond


def choose_guidance(cfg: float, unet_config: Mapping[str, Any], sampler_guidance: str = "cfg") -> Guidance:
    """CFG when cfg > 1 (the pipelines' ``do_classifier_free_guidance``), unless the sampler asks
    for none or the UNet embeds the guidance scale itself (``time_cond_proj_dim``: LCM, SLAM)."""
    if sampler_guidance == "none" or cfg <= 1.0 or unet_config.get("time_cond_proj_dim") is not None:
        return NoGuidance()
    return ClassifierFreeGuidance(cfg)


# -- per-model extras --------------------------------------------------------------------------------

def guidance_scale_embedding(w: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[N] guidance scales -> [N, dim] sinusoidal embedding (as diffusers' pipelines compute
    ``timestep_cond`` from ``guidance_scale - 1``)."""
    w = w * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000.0) / (half - 1)))
    emb = w.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 == 1 else emb


class ModelExtras:
    """The UNet inputs a model family or UNet config asks for besides latents and text."""

    def __init__(self, spec: FamilySpec, unet_config: Mapping[str, Any], cfg: float, latent_hw: tuple[int, int]) -> None:
        self.spec = spec
        self.time_cond_dim = unet_config.get("time_cond_proj_dim")
        self.cfg = cfg
        self.pixel_size = (latent_hw[0] * spec.vae_scale_factor, latent_hw[1] * spec.vae_scale_factor)

    def added_cond(self, entries: Sequence[list[Any]], batch: int, dtype: torch.dtype,
                   device: torch.device) -> dict[str, Tensor] | None:
        if not self.spec.size_conditioning:
            return None
        pooled = torch.cat([e[1]["pooled_output"].repeat(batch, 1) for e in entries]).to(device, dtype)
        time_ids = torch.cat([self._time_ids(e[1]).repeat(batch, 1) for e in entries]).to(device, dtype)
        return {"text_embeds": pooled, "time_ids": time_ids}

    def _time_ids(self, extras: Mapping[str, Any]) -> Tensor:
        """SDXL's size conditioning: original (h, w), crop (top, left), target (h, w)."""
        height, width = self.pixel_size
        values = [extras.get("height", height), extras.get("width", width), extras.get("crop_h", 0),
                  extras.get("crop_w", 0), extras.get("target_height", height), extras.get("target_width", width)]
        return torch.tensor([values], dtype=torch.float32)

    def timestep_cond(self, rows: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        if self.time_cond_dim is None:
            return None
        w = torch.tensor(self.cfg - 1.0).repeat(rows)
        return guidance_scale_embedding(w, int(self.time_cond_dim)).to(device, dtype)
