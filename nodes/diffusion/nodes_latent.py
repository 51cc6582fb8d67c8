"""Latent nodes: empty latents, VAE encode/decode (plain, tiled, for inpainting), masks, resizing."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from graph_runtime.context import Context
from graph_runtime.node import Boolean, Combo, Float, Int, Link, Node, Output

from nodes.core.resizing import center_crop
from nodes.diffusion import vae_ops
from nodes.diffusion.families import DEFAULT_FAMILY
from nodes.diffusion.inputs import tile_inputs
from nodes.diffusion.models import Conditioning, VaeModel
from nodes.infra.model_manager import manager_from
from nodes.inputs import CROP_METHODS, LATENT_UPSCALE_METHODS, MAX_RESOLUTION

# Without a model input these nodes size latents as the default family does (as ComfyUI's do).
SCALE = DEFAULT_FAMILY.vae_scale_factor


class EmptyLatentImage(Node):
    category = "latent"
    description = ("A batch of empty (zero) latents for txt2img, [B, 4, H/8, W/8] as ComfyUI makes them; a sampler "
                   "whose model has other latents (the pixel family's [B, 12, H/2, W/2]) starts from zeros of its own "
                   "shape for the same pixel size.")
    inputs = [Int("width", 512, min=16, max=MAX_RESOLUTION, step=8), Int("height", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("batch_size", 1, min=1, max=4096)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, width: int, height: int, batch_size: int) -> tuple[Any, ...]:
        # ComfyUI's key: the pixel size a sampler of another family reads this empty latent as.
        return ({"samples": torch.zeros(DEFAULT_FAMILY.latent_shape(batch_size, height, width)),
                 "downscale_ratio_spacial": SCALE},)


class VAEDecode(Node):
    category = "latent"
    description = "Latents to pixels (tiled automatically when memory is short)."
    inputs = [Link("samples", "LATENT"), Link("vae", "VAE")]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, samples: dict[str, Any], vae: VaeModel) -> tuple[Any, ...]:
        return (vae_ops.decode(manager_from(ctx.services), vae, samples["samples"]),)


class VAEEncode(Node):
    category = "latent"
    description = "Pixels to latents (the distribution's mean; tiled automatically when memory is short)."
    inputs = [Link("pixels", "IMAGE"), Link("vae", "VAE")]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, pixels: torch.Tensor, vae: VaeModel) -> tuple[Any, ...]:
        return (_encoded(vae_ops.encode(manager_from(ctx.services), vae, pixels), vae),)


def _encoded(samples: torch.Tensor, vae: VaeModel) -> dict[str, Any]:
    """A LATENT of the VAE's samples, with its pixel scale (ComfyUI's ``downscale_ratio_spacial``):
    LatentUpscale sizes by it, and the sampler tells an empty latent of another family by it."""
    return {"samples": samples, "downscale_ratio_spacial": vae.downscale}


class VAEDecodeTiled(Node):
    category = "_for_testing"
    description = "Decode in overlapping tiles (bounded memory for large images)."
    inputs = [Link("samples", "LATENT"), Link("vae", "VAE"), *tile_inputs(32)]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, samples: dict[str, Any], vae: VaeModel, tile_size: int, overlap: int,
            temporal_size: int | None = None, temporal_overlap: int | None = None) -> tuple[Any, ...]:
        return (vae_ops.decode(manager_from(ctx.services), vae, samples["samples"], tiled=True,
                               tile_size=tile_size, overlap=overlap),)


class VAEEncodeTiled(Node):
    category = "_for_testing"
    description = "Encode in overlapping tiles (bounded memory for large images)."
    inputs = [Link("pixels", "IMAGE"), Link("vae", "VAE"), *tile_inputs(64)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, pixels: torch.Tensor, vae: VaeModel, tile_size: int, overlap: int,
            temporal_size: int | None = None, temporal_overlap: int | None = None) -> tuple[Any, ...]:
        return (_encoded(vae_ops.encode(manager_from(ctx.services), vae, pixels, tiled=True,
                                        tile_size=tile_size, overlap=overlap), vae),)


class VAEEncodeForInpaint(Node):
    category = "latent/inpaint"
    description = ("Encode for inpainting: masked pixels are set to grey before encoding and the mask (grown by "
                   "grow_mask_by pixels) becomes the latent's noise mask.")
    inputs = [Link("pixels", "IMAGE"), Link("vae", "VAE"), Link("mask", "MASK"),
              Int("grow_mask_by", 6, min=0, max=64, step=1)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, pixels: torch.Tensor, vae: VaeModel, mask: torch.Tensor,
            grow_mask_by: int) -> tuple[Any, ...]:
        pixels, mask = _grey_masked(pixels, mask, vae.downscale)
        height, width = pixels.shape[1:3]
        grown = mask
        if grow_mask_by > 0:
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)[..., :height, :width]
        samples = vae_ops.encode(manager_from(ctx.services), vae, pixels)
        return ({**_encoded(samples, vae), "noise_mask": grown.round()},)


def _grey_masked(pixels: torch.Tensor, mask: torch.Tensor, multiple: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels centre-cropped to ``multiple`` with the masked area set to 0.5 grey, the mask
    [B, 1, H, W] resized bilinearly to them): what inpainting models were trained to see. As in
    ComfyUI the mask is resized to the uncropped image and cropped with it; resizing it to the
    cropped size would shift it against the pixels by up to half the cropped margin."""
    masks = mask.reshape(-1, mask.shape[-2], mask.shape[-1]).shape[0]
    if masks not in (1, pixels.shape[0]):
        raise ValueError(f"mask: a batch of {masks} masks for a batch of {pixels.shape[0]} images; give one mask "
                         f"or one per image")
    mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=tuple(pixels.shape[1:3]),
                         mode="bilinear")
    mask = vae_ops.crop_to_multiple(mask.movedim(1, -1), multiple).movedim(-1, 1)
    pixels = vae_ops.crop_to_multiple(pixels, multiple).clone()
    keep = (1.0 - mask.round()).squeeze(1)
    pixels[..., :3] = (pixels[..., :3] - 0.5) * keep.unsqueeze(-1) + 0.5
    return pixels, mask


class InpaintModelConditioning(Node):
    category = "conditioning/inpaint"
    description = ("For inpainting models (9-channel UNets): the image with the masked area greyed is encoded and "
                   "put with the mask on both conditionings, which the model sees at every step; the LATENT is "
                   "the whole image encoded, with the mask as its noise mask when noise_mask is on (only the "
                   "masked area changes). Mask: 1 = repaint.")
    inputs = [Link("positive", "CONDITIONING"), Link("negative", "CONDITIONING"), Link("vae", "VAE"),
              Link("pixels", "IMAGE"), Link("mask", "MASK"),
              Boolean("noise_mask", True, tooltip="keep the unmasked area of the latent (ComfyUI's default)")]
    outputs = [Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent")]

    def run(self, ctx: Context, *, positive: Conditioning, negative: Conditioning, vae: VaeModel,
            pixels: torch.Tensor, mask: torch.Tensor, noise_mask: bool = True) -> tuple[Any, ...]:
        manager = manager_from(ctx.services)
        greyed, mask = _grey_masked(pixels, mask, vae.downscale)
        concat = {"concat_latent_image": vae_ops.encode(manager, vae, greyed), "concat_mask": mask}
        latent: dict[str, Any] = _encoded(vae_ops.encode(manager, vae, pixels), vae)
        if noise_mask:
            latent["noise_mask"] = mask
        return ([[embeds, dict(extras, **concat)] for embeds, extras in positive],
                [[embeds, dict(extras, **concat)] for embeds, extras in negative], latent)


class SetLatentNoiseMask(Node):
    category = "latent/inpaint"
    description = "Only the masked region is re-generated; the rest keeps the input latent."
    inputs = [Link("samples", "LATENT"), Link("mask", "MASK")]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, samples: dict[str, Any], mask: torch.Tensor) -> tuple[Any, ...]:
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        return (out,)


def _resize(samples: torch.Tensor, height: int, width: int, method: str) -> torch.Tensor:
    if method == "bislerp":
        method = "bilinear"  # documented approximation of ComfyUI's slerp-based resize
    kwargs = {"align_corners": False} if method in ("bilinear", "bicubic") else {}
    return F.interpolate(samples, size=(height, width), mode=method, **kwargs)


class LatentUpscale(Node):
    category = "latent"
    description = ("Resize latents to a pixel size (0 keeps the aspect ratio from the other side), at the latent's "
                   "own scale (8 pixels per cell for SD; 2 for the pixel family's).")
    inputs = [Link("samples", "LATENT"), Combo("upscale_method", LATENT_UPSCALE_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=8), Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
              Combo("crop", CROP_METHODS)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, samples: dict[str, Any], upscale_method: str, width: int, height: int,
            crop: str) -> tuple[Any, ...]:
        latent = samples["samples"]
        scale = int(samples.get("downscale_ratio_spacial") or SCALE)  # the pixel family's latents: 2
        if width == 0 and height == 0:
            return (dict(samples),)
        if width == 0:
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2] * scale))
        if height == 0:
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1] * scale))
        if crop == "center":
            latent = center_crop(latent, width, height)
        out = dict(samples)
        out["samples"] = _resize(latent, height // scale, width // scale, upscale_method)
        out.pop("noise_mask", None)
        return (out,)


class LatentUpscaleBy(Node):
    category = "latent"
    description = "Resize latents by a factor."
    inputs = [Link("samples", "LATENT"), Combo("upscale_method", LATENT_UPSCALE_METHODS),
              Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01)]
    outputs = [Output("LATENT")]

    def run(self, ctx: Context, *, samples: dict[str, Any], upscale_method: str, scale_by: float) -> tuple[Any, ...]:
        latent = samples["samples"]
        out = dict(samples)
        out["samples"] = _resize(latent, round(latent.shape[-2] * scale_by), round(latent.shape[-1] * scale_by),
                                 upscale_method)
        out.pop("noise_mask", None)
        return (out,)


NODES: list[type[Node]] = [EmptyLatentImage, VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled,
                           VAEEncodeForInpaint, InpaintModelConditioning, SetLatentNoiseMask, LatentUpscale,
                           LatentUpscaleBy]
