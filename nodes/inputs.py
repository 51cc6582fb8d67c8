"""Node input constants shared by the packs (ComfyUI's values), defined once.

Torch-free so any pack can import it at registration time.
"""

from __future__ import annotations

MAX_RESOLUTION = 16384
# ComfyUI's ImageScale methods, and LatentUpscale's (bislerp instead of lanczos).
UPSCALE_METHODS: tuple[str, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LATENT_UPSCALE_METHODS: tuple[str, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS: tuple[str, ...] = ("disabled", "center")
