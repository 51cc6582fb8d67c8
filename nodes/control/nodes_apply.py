"""Applying ControlNets to conditioning (ComfyUI names and inputs) and the EcomXL inpaint control image.

Each apply node adds a :class:`~nodes.control.models.ControlApplication` to the conditioning
entries' ``"control"`` chain; several apply nodes in a row stack (their residuals add up at every
step in the window of each), and the denoiser hook acts on them inside any sampler.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from graph_runtime.context import Context, HookContext
from graph_runtime.node import Boolean, Float, Link, Node, Output

from nodes.control.models import ControlApplication, ControlModel, image_to_hint, with_control
from nodes.infra.model_manager import manager_from

Tensor = torch.Tensor


def _strength() -> Any:
    return Float("strength", 1.0, min=0.0, max=10.0, step=0.01)


def _window() -> list[Any]:
    return [Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001,
                  tooltip="fraction of the sampler's steps before the ControlNet starts acting"),
            Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001,
                  tooltip="fraction of the sampler's steps after which it stops")]


def _check_window(widgets: dict[str, Any]) -> str | None:
    start, end = widgets.get("start_percent"), widgets.get("end_percent")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and start > end:
        return f"start_percent ({start}) must not be after end_percent ({end})"
    return None


def _application(ctx: Context, control_net: ControlModel, hint: Tensor, strength: float,
                 start: float, end: float) -> ControlApplication:
    return ControlApplication(model=control_net, image=hint, strength=float(strength), start=float(start),
                              end=float(end), manager=manager_from(ctx.services))


def inpaint_control_image(image: Tensor, mask: Tensor, *, invert_mask: bool = False) -> Tensor:
    """EcomXL's inpaint ControlNet input: ``image`` (IMAGE [B, H, W, C], 0..1) with every pixel to
    generate (``mask > 0.5``; ``mask``: MASK [B, H, W] or [H, W], 1 = generate, resized to the image
    with bilinear filtering when sizes differ) set to exactly -1.0, other pixels unchanged (not
    normalised to -1..1). ``invert_mask`` first flips a product mask (1 = keep) into the area to
    generate. Returns [B, H, W, 3] float32. Source: EcomXL inpaint ControlNet model card
    (``img[mask > 0.5] = -1.0`` on RGB/255)."""
    rgb = image_to_hint(image).movedim(1, -1)
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask must be [B, H, W] or [H, W], got shape {tuple(mask.shape)}")
    if invert_mask:
        mask = 1.0 - mask
    if mask.shape[-2:] != rgb.shape[1:3]:
        mask = F.interpolate(mask[:, None], size=tuple(rgb.shape[1:3]), mode="bilinear", align_corners=False)[:, 0]
    batch = max(rgb.shape[0], mask.shape[0])
    rgb = rgb.repeat(-(-batch // rgb.shape[0]), 1, 1, 1)[:batch]
    generate = (mask.repeat(-(-batch // mask.shape[0]), 1, 1)[:batch] > 0.5)[..., None]
    return torch.where(generate, torch.full_like(rgb, -1.0), rgb)


class ControlNetApply(Node):
    display_name = "Apply ControlNet (OLD)"
    category = "conditioning/controlnet"
    description = ("Legacy: apply a ControlNet or T2I-Adapter to one conditioning (usually the positive) for all "
                   "steps. image: IMAGE in 0..1, resized (centre crop, nearest) to the latent's pixel size.")
    inputs = [Link("conditioning", "CONDITIONING"), Link("control_net", "CONTROL_NET"), Link("image", "IMAGE"),
              _strength()]
    outputs = [Output("CONDITIONING")]

    def run(self, ctx: Context, *, conditioning: list[list[Any]], control_net: ControlModel, image: Tensor,
            strength: float) -> tuple[Any, ...]:
        if strength == 0:
            return (conditioning,)
        application = _application(ctx, control_net, image_to_hint(image), strength, 0.0, 1.0)
        return (with_control(conditioning, application),)


class ControlNetApplyAdvanced(Node):
    display_name = "Apply ControlNet"
    category = "conditioning/controlnet"
    description = ("Apply a ControlNet or T2I-Adapter to positive and negative, between start_percent and "
                   "end_percent of the sampler's steps (diffusers' control_guidance_start/end). Chain several "
                   "to stack them. vae: accepted for ComfyUI workflows; SD1.x/SDXL ControlNets take pixels, "
                   "so it is not needed.")
    inputs = [Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("control_net", "CONTROL_NET"),
              Link("image", "IMAGE"), _strength(), *_window(), Link("vae", "VAE", optional=True)]
    outputs = [Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return _check_window(widgets)

    def run(self, ctx: Context, *, positive: list[list[Any]], negative: list[list[Any]], control_net: ControlModel,
            image: Tensor, strength: float, start_percent: float, end_percent: float,
            vae: Any = None) -> tuple[Any, ...]:
        if strength == 0:
            return (positive, negative)
        application = _application(ctx, control_net, image_to_hint(image), strength, start_percent, end_percent)
        return (with_control(positive, application), with_control(negative, application))


class ControlNetInpaintCondition(Node):
    category = "conditioning/controlnet"
    description = ("The EcomXL inpaint ControlNet's control image: RGB 0..1 with the pixels to generate "
                   "(mask > 0.5) set to -1 (so outside IMAGE's usual 0..1). mask: 1 = generate; set "
                   "invert_mask for a product/foreground mask (1 = keep).")
    inputs = [Link("image", "IMAGE"), Link("mask", "MASK"), Boolean("invert_mask", False)]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, image: Tensor, mask: Tensor, invert_mask: bool) -> tuple[Any, ...]:
        return (inpaint_control_image(image, mask, invert_mask=invert_mask),)


class ControlNetInpaintingAliMamaApply(Node):
    category = "conditioning/controlnet"
    description = ("ComfyUI's inpainting-ControlNet apply: the control image is built from image and mask "
                   "(1 = area to inpaint) in the EcomXL convention (-1 where mask > 0.5), then applied to "
                   "positive and negative as Apply ControlNet does. vae: accepted for ComfyUI workflows; the "
                   "SD1.x/SDXL inpaint ControlNets take pixels, so it is not needed. EcomXL's strength: 0.5.")
    inputs = [Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("control_net", "CONTROL_NET"),
              Link("vae", "VAE"), Link("image", "IMAGE"), Link("mask", "MASK"), _strength(), *_window()]
    outputs = [Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative")]

    @classmethod
    def validate_inputs(cls, ctx: HookContext, **widgets: Any) -> str | None:
        return _check_window(widgets)

    def run(self, ctx: Context, *, positive: list[list[Any]], negative: list[list[Any]], control_net: ControlModel,
            vae: Any, image: Tensor, mask: Tensor, strength: float, start_percent: float,
            end_percent: float) -> tuple[Any, ...]:
        if strength == 0:
            return (positive, negative)
        hint = inpaint_control_image(image, mask).movedim(-1, 1).contiguous()
        application = _application(ctx, control_net, hint, strength, start_percent, end_percent)
        return (with_control(positive, application), with_control(negative, application))


NODES: list[type[Node]] = [ControlNetApply, ControlNetApplyAdvanced, ControlNetInpaintCondition,
                           ControlNetInpaintingAliMamaApply]
