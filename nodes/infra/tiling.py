"""Tiled inference for image-to-image networks: overlapping tiles, feathered blending, and a tile
size that halves when the device runs out of memory.

Any function from a [B, C, h, w] tile to a [B, C', h*scale, w*scale] tile can run this way, so an
upscaler, a restoration network or a VAE pass fits in memory at any image size. The tiles are
accumulated on the CPU, in float32, so only one tile at a time occupies the device.

Blending. Where two tiles overlap by ``overlap`` input pixels, the outer quarter of the overlap on
each tile's side is discarded (that is where the tile's own zero padding shows in the network's
output), and the middle half is cross-faded linearly. The weights of the two tiles sum to one at
every pixel, so a network whose receptive field reaches less than ``overlap / 4`` pixels gives
exactly its untiled output; a wider one (ESRGAN) gives seams far below what the eye sees. The same
scheme (tiles of 512 px, 32 px overlap, halving down to 128 px on out-of-memory) is ComfyUI's
``ImageUpscaleWithModel``; the discarded margin is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")
TileFn = Callable[[torch.Tensor], torch.Tensor]
TileProgress = Callable[[int, int], None]  # (tiles done, tiles in all)

MIN_TILE = 128  # ComfyUI's floor for ImageUpscaleWithModel


class TileMemoryError(MemoryError):
    """Out of memory even at the smallest tile size; the message says which size was tried."""


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``size`` pixels, consecutive tiles
    overlapping by at least ``overlap``; the last tile ends at the border."""
    if size <= tile:
        return [0]
    assert 0 <= overlap < tile, f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}"
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _ramp(length: int, overlap: int, *, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Per-pixel weights along one axis of a tile of ``length`` (output) pixels: zero in the outer
    quarter of an overlap, a linear cross-fade over its middle half, one elsewhere. Sides at the
    image border (no neighbour) keep weight one."""
    weights = torch.ones(length)
    if overlap <= 0:
        return weights
    margin = overlap // 4
    fade = max(overlap - 2 * margin, 1)
    centres = torch.arange(length, dtype=torch.float32) + 0.5
    if fade_in:
        weights = torch.minimum(weights, ((centres - margin) / fade).clamp(0, 1))
    if fade_out:
        weights = torch.minimum(weights, ((length - centres - margin) / fade).clamp(0, 1))
    return weights


def tiled_apply(fn: TileFn, image: torch.Tensor, *, tile: int, overlap: int, scale: int,
                on_tile: TileProgress | None = None) -> torch.Tensor:
    """``fn`` applied to ``image`` ([B, C, H, W], any dtype/device) tile by tile; returns
    [B, C', H*scale, W*scale] float32 on the CPU. ``tile`` and ``overlap`` are input pixels
    (clamped to half a tile); ``on_tile(done, total)`` is called after every tile (where an
    interrupt can take effect)."""
    batch, _, height, width = image.shape
    overlap = max(0, min(overlap, tile // 2))
    tile_h, tile_w = min(tile, height), min(tile, width)
    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    total, done = len(ys) * len(xs), 0
    out: torch.Tensor | None = None
    weight_sum = torch.zeros(1, 1, height * scale, width * scale)
    for y in ys:
        for x in xs:
            piece = fn(image[:, :, y:y + tile_h, x:x + tile_w]).float().cpu()
            expected = (tile_h * scale, tile_w * scale)
            if tuple(piece.shape[-2:]) != expected:
                raise ValueError(f"a {tile_h}x{tile_w} tile came back {tuple(piece.shape[-2:])}, expected "
                                 f"{expected} for a x{scale} model")
            if out is None:
                out = torch.zeros(batch, piece.shape[1], height * scale, width * scale)
            wy = _ramp(expected[0], overlap * scale, fade_in=y > 0, fade_out=y + tile_h < height)
            wx = _ramp(expected[1], overlap * scale, fade_in=x > 0, fade_out=x + tile_w < width)
            weight = (wy[:, None] * wx[None, :])[None, None]
            region = (slice(None), slice(None), slice(y * scale, (y + tile_h) * scale),
                      slice(x * scale, (x + tile_w) * scale))
            out[region] += piece * weight
            weight_sum[region] += weight
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None
    return out / weight_sum


def halve_on_oom(run: Callable[[int], T], tile: int, *, floor: int = MIN_TILE,
                 on_retry: Callable[[int], None] | None = None) -> T:
    """``run(tile)``; on ``torch.OutOfMemoryError`` the tile size is halved and the whole pass run
    again (``on_retry(new_tile)`` first), down to ``floor``. Raises TileMemoryError past it."""
    while True:
        try:
            return run(tile)
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile <= floor:
                raise TileMemoryError(f"out of memory even with {tile}x{tile} px tiles (the smallest tried); "
                                      f"free memory or use a smaller model ({exc})") from exc
            tile = max(tile // 2, floor)
            if on_retry is not None:
                on_retry(tile)
