"""VAE decode/encode: tiles are chosen automatically when memory is short, and an out-of-memory on
the whole image falls back to tiles; tiled results stay close to whole-image ones."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion import vae_ops
from nodes.infra.model_manager import manager_from
from diffusion_helpers import load


@pytest.fixture
def vae_and_manager(make_ctx):
    ctx = make_ctx()
    _, _, vae = load(ctx, "tiny-sd15.safetensors")
    return vae, manager_from(ctx.services)


def _spy_tiles(monkeypatch: pytest.MonkeyPatch, *, oom_whole: bool) -> list[bool]:
    calls: list[bool] = []
    real = vae_ops._decode

    def decode(vae, z, tiled, tile_size, overlap):
        calls.append(tiled)
        if oom_whole and not tiled:
            raise torch.OutOfMemoryError("simulated: the whole image does not fit")
        return real(vae, z, tiled, tile_size, overlap)

    monkeypatch.setattr(vae_ops, "_decode", decode)
    return calls


def test_short_memory_picks_tiles_and_result_stays_close(vae_and_manager, monkeypatch) -> None:
    vae, manager = vae_and_manager
    latent = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    whole = vae_ops.decode(manager, vae, latent, tiled=False)
    calls = _spy_tiles(monkeypatch, oom_whole=False)
    monkeypatch.setattr(vae_ops, "_available_bytes", lambda device: 1024)
    tiled = vae_ops.decode(manager, vae, latent, tile_size=128, overlap=32)
    assert calls == [True]
    assert tiled.shape == whole.shape == (1, 256, 256, 3)
    assert (tiled - whole).abs().mean() < 0.05


def test_out_of_memory_on_the_whole_image_retries_in_tiles(vae_and_manager, monkeypatch) -> None:
    vae, manager = vae_and_manager
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    calls = _spy_tiles(monkeypatch, oom_whole=True)
    image = vae_ops.decode(manager, vae, latent, tiled=None, tile_size=64, overlap=16)
    assert calls == [False, True] and image.shape == (1, 128, 128, 3)


def test_encode_decode_round_trip_shapes(vae_and_manager) -> None:
    vae, manager = vae_and_manager
    image = torch.rand(1, 70, 66, 3, generator=torch.Generator().manual_seed(2))  # cropped to 64x64, as ComfyUI
    latent = vae_ops.encode(manager, vae, image)
    assert latent.shape == (1, 4, 8, 8)
    assert vae_ops.decode(manager, vae, latent).shape == (1, 64, 64, 3)


def test_a_latent_of_another_family_is_refused_naming_both_shapes(vae_and_manager) -> None:
    vae, manager = vae_and_manager
    pixel_latent = torch.zeros(1, 12, 16, 16)  # the pixel family's, as its sampler makes them
    with pytest.raises(ValueError, match=r"\[1, 12, 16, 16\] latent does not fit this VAE.*\[B, 4, H/8, W/8\]"):
        vae_ops.decode(manager, vae, pixel_latent)
