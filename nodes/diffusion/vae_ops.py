"""VAE encode/decode between IMAGE ([B,H,W,C] 0..1) and LATENT, tiled when memory is short.

A VAE here is anything with AutoencoderKL's ``encode``/``decode`` (the pixel family's
parameter-free :class:`nodes.diffusion.pixel_vae.PixelUnshuffleVAE` too); only VAEs with diffusers'
``tiled_decode`` are ever tiled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

from nodes.infra.model_manager import ModelManager
from nodes.diffusion.models import VaeModel

T = TypeVar("T")

# Rough peak activation bytes per output pixel of a full-size SD VAE decoder in fp32 (measured
# order of magnitude: ~3.5 GB at 1024^2); used to pick tiling before an out-of-memory happens.
BYTES_PER_PIXEL = 3500


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 1 << 62


def placement(vae: torch.nn.Module, manager: ModelManager) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) to feed ``vae``: its weights', or for a VAE without weights the device the
    manager runs on, in fp32."""
    weight = next(vae.parameters(), None)
    return (manager.device, torch.float32) if weight is None else (weight.device, weight.dtype)


def _tileable(vae: torch.nn.Module) -> bool:
    return hasattr(vae, "tiled_decode") and hasattr(vae, "tiled_encode")


def _needs_tiling(vae: torch.nn.Module, pixels: int) -> bool:
    if not _tileable(vae):
        return False
    width = max(vae.config.block_out_channels)
    estimate = pixels * BYTES_PER_PIXEL * width // 512
    return estimate > _available_bytes(next(vae.parameters()).device) * 0.8


@contextlib.contextmanager
def _tiling(vae: torch.nn.Module, tile_size: int, overlap: int) -> Iterator[None]:
    """diffusers' tiled VAE with our tile size; the shared module's settings are restored."""
    names = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")
    saved = {n: getattr(vae, n) for n in names if hasattr(vae, n)}
    downscale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.use_tiling = True
    vae.tile_sample_min_size = tile_size
    vae.tile_latent_min_size = max(1, tile_size // downscale)
    vae.tile_overlap_factor = min(max(overlap / tile_size, 0.0), 0.5)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def decode(manager: ModelManager, vae_model: VaeModel, samples: torch.Tensor, *, tiled: bool | None = None,
           tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """LATENT samples -> IMAGE. ``tiled=None`` decides from the memory available (a VAE without
    tiled variants, the pixel family's, always decodes whole). Raises ValueError naming both channel
    counts for a latent of another family."""
    _check_channels(vae_model, samples)
    with vae_model.use(manager) as vae, torch.no_grad():
        device, dtype = placement(vae, manager)
        z = (samples.float() / vae_model.scaling_factor + vae_model.shift_factor).to(device, dtype)
        pixels = z.shape[0] * z.shape[-2] * z.shape[-1] * vae_model.downscale ** 2
        use_tiles = _needs_tiling(vae, pixels) if tiled is None else tiled
        image = _tiles_on_oom(lambda tiles: _decode(vae, z, tiles, tile_size, overlap), use_tiles)
    return (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def _check_channels(vae_model: VaeModel, samples: torch.Tensor) -> None:
    """Refuse a latent this VAE cannot decode before the first convolution does it in its own words:
    since the pixel family (12 channels) sits beside SD's (4), a graph can wire the one to the other."""
    if samples.ndim != 4 or samples.shape[1] != vae_model.latent_channels:
        raise ValueError(f"samples: a {list(samples.shape)} latent does not fit this VAE, which decodes "
                         f"[B, {vae_model.latent_channels}, H/{vae_model.downscale}, W/{vae_model.downscale}] "
                         f"latents (a latent from another model family? decode with that model's VAE)")


def _tiles_on_oom(run: Callable[[bool], T], use_tiles: bool) -> T:
    """``run(use_tiles)``; when the whole image does not fit in memory after all, again in tiles."""
    try:
        return run(use_tiles)
    except torch.OutOfMemoryError:
        if use_tiles:
            raise
        return run(True)


def _decode(vae: torch.nn.Module, z: torch.Tensor, tiled: bool, tile_size: int, overlap: int) -> torch.Tensor:
    if not tiled or not _tileable(vae):
        return vae.decode(z, return_dict=False)[0]
    with _tiling(vae, tile_size, overlap):
        return vae.tiled_decode(z, return_dict=False)[0]


def encode(manager: ModelManager, vae_model: VaeModel, image: torch.Tensor, *, tiled: bool | None = None,
           tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
    """IMAGE -> LATENT samples (the distribution's mean, as ComfyUI; cropped to a multiple of 8)."""
    image = crop_to_multiple(image, vae_model.downscale)
    with vae_model.use(manager) as vae, torch.no_grad():
        device, dtype = placement(vae, manager)
        x = (image[..., :3].permute(0, 3, 1, 2).float() * 2 - 1).to(device, dtype)
        use_tiles = _needs_tiling(vae, x.shape[0] * x.shape[-2] * x.shape[-1]) if tiled is None else tiled
        dist = _tiles_on_oom(lambda tiles: _encode(vae, x, tiles, tile_size, overlap), use_tiles)
    return ((dist.mode().float() - vae_model.shift_factor) * vae_model.scaling_factor).cpu()


def _encode(vae: torch.nn.Module, x: torch.Tensor, tiled: bool, tile_size: int, overlap: int):  # noqa: ANN202
    if not tiled or not _tileable(vae):
        return vae.encode(x, return_dict=False)[0]
    with _tiling(vae, tile_size, overlap):
        return vae.tiled_encode(x, return_dict=False)[0]


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop [B,H,W,C] so H and W are multiples of ``multiple`` (ComfyUI does the same)."""
    height, width = image.shape[1] // multiple * multiple, image.shape[2] // multiple * multiple
    if (height, width) == tuple(image.shape[1:3]):
        return image
    top, left = (image.shape[1] - height) // 2, (image.shape[2] - width) // 2
    return image[:, top:top + height, left:left + width]
