"""Cheap per-step previews: a linear latent -> RGB approximation, no VAE involved.

The factors are each family's ``latent_rgb`` (the least-squares fits ComfyUI uses); a
matrix product and a JPEG encode of a tiny image cost well under a millisecond per step.
"""

from __future__ import annotations

import io

import torch

from nodes.diffusion.families import family

MAX_PREVIEW_SIDE = 512


def latent_to_rgb(latent: torch.Tensor, family_name: str) -> torch.Tensor:
    """[C, h, w] latent -> [h, w, 3] uint8 image."""
    spec = family(family_name)
    matrix = torch.tensor(spec.latent_rgb, dtype=torch.float32)
    channels = min(latent.shape[0], matrix.shape[0])
    rgb = torch.einsum("chw,cr->hwr", latent[:channels].float().cpu(), matrix[:channels]) + torch.tensor(spec.latent_rgb_bias)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)


def preview_jpeg(latent: torch.Tensor, family_name: str) -> bytes:
    """A JPEG of the first sample of a [B, C, h, w] latent."""
    from PIL import Image

    image = Image.fromarray(latent_to_rgb(latent[0], family_name).numpy())
    if max(image.size) > MAX_PREVIEW_SIDE:
        image.thumbnail((MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
