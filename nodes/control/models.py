"""The values on CONTROL_NET links and in conditioning extras, and how a control image is fitted.

A :class:`ControlModel` is a handle on a ControlNet or T2I-Adapter held by the model manager. An
apply node appends a :class:`ControlApplication` to the ``"control"`` tuple in the extras of each
conditioning entry it touches, so several ControlNets stack on one conditioning in the order they
were applied (ComfyUI chains them through ``previous_controlnet``; a tuple says the same thing
without mutable links). The denoiser hook (``nodes.control.hook``) reads that tuple at every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from nodes.infra.model_manager import ModelManager, ModelRef

Tensor = torch.Tensor
ControlKind = Literal["controlnet", "t2i_adapter"]
CONTROL_KEY = "control"


@dataclass(frozen=True, eq=False)
class ControlModel:
    """CONTROL_NET: a ControlNetModel or T2IAdapter in the model manager.

    ``cross_attention_dim`` is the text width a ControlNet expects (None for adapters, which see
    only the image); the hook compares it with the UNet's to name a SD1.5/SDXL mix-up."""

    ref: ModelRef
    kind: ControlKind
    name: str
    cross_attention_dim: int | None = None


@dataclass(frozen=True, eq=False)
class ControlApplication:
    """One ControlNet applied to a conditioning entry.

    ``image``: [B, 3, H, W] float32 on the CPU, 0..1 (an inpaint control image holds -1 where the
    pixels are to be generated). ``start``/``end``: the fraction of the sampler's steps it acts in,
    diffusers' ``control_guidance_start/end``: step ``i`` of ``n`` is inside when
    ``i/n >= start`` and ``(i+1)/n <= end``."""

    model: ControlModel
    image: Tensor
    strength: float
    start: float
    end: float
    manager: ModelManager

    def active(self, step: int, steps: int) -> bool:
        return not (step / steps < self.start or (step + 1) / steps > self.end)

    def nodeloom_nbytes(self) -> int:
        """What the output cache should count: the control image (the weights are the manager's)."""
        return self.image.numel() * self.image.element_size()


def with_control(conditioning: list[list[Any]], application: ControlApplication) -> list[list[Any]]:
    """A new conditioning whose every entry also carries ``application`` (the input is untouched)."""
    out = []
    for embeds, extras in conditioning:
        chain = tuple(extras.get(CONTROL_KEY, ()))
        out.append([embeds, {**extras, CONTROL_KEY: (*chain, application)}])
    return out


def chain_of(extras: Mapping[str, Any]) -> tuple[ControlApplication, ...]:
    return tuple(extras.get(CONTROL_KEY, ()))


def image_to_hint(image: Tensor) -> Tensor:
    """IMAGE [B, H, W, C] (C = 1, 3 or 4; alpha dropped) -> [B, 3, H, W] float32."""
    if image.ndim != 4:
        raise ValueError(f"expected an IMAGE [B, H, W, C], got a tensor of shape {tuple(image.shape)}")
    channels = image.shape[-1]
    if channels == 1:
        image = image.repeat(1, 1, 1, 3)
    elif channels >= 3:
        image = image[..., :3]
    else:
        raise ValueError(f"expected 1, 3 or 4 channels, got {channels}")
    return image.movedim(-1, 1).float().contiguous()


def fit_hint(hint: Tensor, height: int, width: int, rows: int) -> Tensor:
    """The hint at (height, width) pixels and ``rows`` samples, as ComfyUI fits it: centre crop to
    the target's aspect, then nearest-exact resize (keeps the -1 of inpaint hints exact), and the
    batch repeated (or cut) to ``rows``."""
    if hint.shape[-2:] != (height, width):
        h, w = hint.shape[-2:]
        if abs(h / w - height / width) > 1e-6:
            if h / w > height / width:
                keep = round(w * height / width)
                top = (h - keep) // 2
                hint = hint[:, :, top:top + keep]
            else:
                keep = round(h * width / height)
                left = (w - keep) // 2
                hint = hint[:, :, :, left:left + keep]
        hint = F.interpolate(hint, size=(height, width), mode="nearest-exact")
    if hint.shape[0] != rows:
        repeats = -(-rows // hint.shape[0])
        hint = hint.repeat(repeats, 1, 1, 1)[:rows]
    return hint
