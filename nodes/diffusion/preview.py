"""Cheap per-step previews: a linear latent -> RGB approximation, no VAE involved.

The factors are the published least-squares fits ComfyUI uses for SD1.x/2.x and SDXL latents; a
matrix product and a JPEG encode of a tiny image cost well under a millisecond per step.
"""

from __future__ import annotations

import io

import torch

LATENT_RGB = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}
LATENT_RGB["sd21"] = LATENT_RGB["sd15"]
MAX_PREVIEW_SIDE = 512


def latent_to_rgb(latent: torch.Tensor, family: str) -> torch.Tensor:
    """[C, h, w] latent -> [h, w, 3] uint8 image."""
    factors, bias = LATENT_RGB.get(family, LATENT_RGB["sd15"])
    matrix = torch.tensor(factors, dtype=torch.float32)
    channels = min(latent.shape[0], matrix.shape[0])
    rgb = torch.einsum("chw,cr->hwr", latent[:channels].float().cpu(), matrix[:channels]) + torch.tensor(bias)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)


def preview_jpeg(latent: torch.Tensor, family: str) -> bytes:
    """A JPEG of the first sample of a [B, C, h, w] latent."""
    from PIL import Image

    image = Image.fromarray(latent_to_rgb(latent[0], family).numpy())
    if max(image.size) > MAX_PREVIEW_SIDE:
        image.thumbnail((MAX_PREVIEW_SIDE, MAX_PREVIEW_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
