"""The pixel family's VAE: VAEEncode -> VAEDecode gives the 8-bit image back exactly, the latent is
pixel_unshuffle's layout (what the family's preview factors read), tiled nodes decode it whole,
and bad shapes are named."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nodes.diffusion.nodes_latent import LatentUpscale, VAEDecode, VAEDecodeTiled, VAEEncode, VAEEncodeTiled
from nodes.diffusion.pixel_vae import PixelUnshuffleVAE
from nodes.diffusion.preview import latent_to_rgb
from tests.training.pixel_helpers import pixel_model


def _image(batch: int = 2, height: int = 32, width: int = 48) -> torch.Tensor:
    """An 8-bit image as IMAGE floats ([B, H, W, 3], k/255)."""
    return torch.randint(0, 256, (batch, height, width, 3), generator=torch.Generator().manual_seed(0)).float() / 255


@pytest.fixture
def pixel(make_ctx: Any) -> tuple[Any, Any]:
    ctx = make_ctx()
    _, _, vae = pixel_model(ctx)
    return ctx, vae


def test_encode_decode_round_trips_every_pixel(pixel: tuple[Any, Any]) -> None:
    ctx, vae = pixel
    image = _image()
    latent = VAEEncode().run(ctx, pixels=image, vae=vae)[0]
    assert latent["samples"].shape == (2, 12, 16, 24) and latent["downscale_ratio_spacial"] == 2
    expected = F.pixel_unshuffle(image.permute(0, 3, 1, 2) * 2 - 1, 2)
    assert torch.allclose(latent["samples"], expected, atol=1e-6)
    decoded = VAEDecode().run(ctx, samples=latent, vae=vae)[0]
    assert decoded.shape == image.shape
    assert torch.equal((decoded * 255).round(), (image * 255).round())


def test_tiled_nodes_decode_whole_and_give_the_same_pixels(pixel: tuple[Any, Any]) -> None:
    ctx, vae = pixel
    image = _image(1, 64, 64)
    latent = VAEEncodeTiled().run(ctx, pixels=image, vae=vae, tile_size=64, overlap=8)[0]
    decoded = VAEDecodeTiled().run(ctx, samples=latent, vae=vae, tile_size=32, overlap=8)[0]
    assert torch.equal((decoded * 255).round(), (image * 255).round())


def test_the_preview_of_a_pixel_latent_is_the_image_at_half_size(pixel: tuple[Any, Any]) -> None:
    ctx, vae = pixel
    image = _image(1)
    latent = VAEEncode().run(ctx, pixels=image, vae=vae)[0]["samples"]
    preview = latent_to_rgb(latent[0], "pixel").float()
    half = F.avg_pool2d(image.permute(0, 3, 1, 2), 2)[0].permute(1, 2, 0) * 255
    assert preview.shape == (16, 24, 3)
    assert (preview - half).abs().max() <= 1.0  # uint8 rounding only


def test_latent_upscale_sizes_a_pixel_latent_at_its_own_scale(pixel: tuple[Any, Any]) -> None:
    ctx, vae = pixel
    latent = VAEEncode().run(ctx, pixels=_image(1), vae=vae)[0]
    out = LatentUpscale().run(ctx, samples=latent, upscale_method="nearest-exact", width=96, height=64,
                              crop="disabled")[0]
    assert out["samples"].shape == (1, 12, 32, 48)  # 96x64 pixels, not 96/8 x 64/8 cells


def test_the_vae_has_no_weights_and_names_bad_shapes() -> None:
    vae = PixelUnshuffleVAE()
    assert list(vae.parameters()) == [] and vae.config.latent_channels == 12
    with pytest.raises(ValueError, match=r"H and W multiples of 2, got \[1, 3, 5, 4\]"):
        vae.encode(torch.zeros(1, 3, 5, 4))
    with pytest.raises(ValueError, match=r"decodes \[B, 12, h, w\] latents, got \[1, 4, 8, 8\]"):
        vae.decode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="latent_channels 4 must be"):
        PixelUnshuffleVAE(latent_channels=4)
