"""The extra input channels of inpainting UNets, as ComfyUI and diffusers feed them.

An inpainting UNet (SD1.5/SD2 inpainting: ``in_channels`` 9) takes, per step,
``concat([noisy latents (4), mask (1), masked-image latents (4)], dim=1)``; diffusers'
StableDiffusionInpaintPipeline builds exactly this (mask resized to the latent, 1 = repaint).
Where the two extra parts come from follows ComfyUI (``BaseModel.concat_cond``):

- InpaintModelConditioning puts ``concat_latent_image`` and ``concat_mask`` on the conditioning;
- otherwise VAEEncodeForInpaint's LATENT is used: its ``noise_mask`` and its samples (the image
  encoded with the masked pixels set to grey, which is what "masked-image latents" are);
- with no mask at all (txt2img on an inpainting model) the mask is all ones and the image is
  ComfyUI's latent of a grey picture for the SD VAE.

The mask is resized bilinearly to the latent and rounded to 0/1, the image latents resized
bilinearly when their size differs, both repeated to the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

EXTRA_CHANNELS = 5  # mask (1) + masked-image latents (4)
# ComfyUI's ``blank_inpaint_image_like``: pixel value 0.5 encoded by the SD VAE.
GREY_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


@dataclass(frozen=True)
class InpaintInputs:
    """The sampled LATENT's parts an inpainting UNet may need (see the module docstring).

    ``latent_image``: [B, 4, h, w] the LATENT's samples; ``noise_mask``: its mask or None, any of
    ComfyUI's shapes ([H, W], [B, H, W], [B, 1, H, W]) at pixel or latent size, 1 = repaint."""

    latent_image: Tensor
    noise_mask: Tensor | None

    def channels(self, extras: Mapping[str, Any], batch: int, region: tuple[int, int, int, int] | None,
                 dtype: torch.dtype, device: torch.device) -> Tensor:
        """[batch, 5, h, w]: mask then masked-image latents for one conditioning entry."""
        size = tuple(self.latent_image.shape[-2:])
        mask = extras.get("concat_mask", self.noise_mask)
        if mask is None:
            mask = torch.ones(1, 1, *size)
            image = torch.tensor(GREY_LATENT).reshape(1, 4, 1, 1).expand(1, 4, *size)
        else:
            mask = _resize(_as_4d(mask.float()), size).round()
            image = extras.get("concat_latent_image", self.latent_image).float()
            image = _resize(image, size)
        if region is not None:
            y, x, h, w = region
            mask, image = mask[..., y:y + h, x:x + w], image[..., y:y + h, x:x + w]
        out = torch.cat([_batch(mask, batch), _batch(image, batch)], dim=1)
        return out.to(device, dtype)


def inpaint_inputs(unet_config: Mapping[str, Any], latent: Mapping[str, Any],
                   latent_channels: int) -> InpaintInputs | None:
    """The inputs for an inpainting UNet, None for a plain one. Raises ValueError for a UNet taking
    another number of extra channels (depth or instruct-pix2pix models are not supported)."""
    extra = int(unet_config.get("in_channels", latent_channels)) - latent_channels
    if extra == 0:
        return None
    if extra != EXTRA_CHANNELS:
        raise ValueError(f"the model's UNet takes {latent_channels + extra} input channels; supported are "
                         f"{latent_channels} (plain) and {latent_channels + EXTRA_CHANNELS} (inpainting)")
    return InpaintInputs(latent["samples"], latent.get("noise_mask"))


def concat_for(inputs: InpaintInputs, entries: Sequence[list[Any]], batch: int,
               region: tuple[int, int, int, int] | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The extra channels of a UNet call whose rows come in chunks of ``batch``, one per entry."""
    return torch.cat([inputs.channels(entry[1], batch, region, dtype, device) for entry in entries])


def _as_4d(mask: Tensor) -> Tensor:
    if mask.ndim == 2:
        mask = mask[None]
    return mask[:, None] if mask.ndim == 3 else mask[:, :1]


def _resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _batch(x: Tensor, batch: int) -> Tensor:
    if x.shape[0] == batch:
        return x
    return x.repeat(-(-batch // x.shape[0]), 1, 1, 1)[:batch]
