"""Tiled inference: the blend is a partition of unity, a local network gives its untiled output,
and out-of-memory halves the tile size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.infra.tiling import TileMemoryError, halve_on_oom, tile_count, tile_starts, tiled_apply


def nearest_x2(tile: torch.Tensor) -> torch.Tensor:
    return F.interpolate(tile, scale_factor=2, mode="nearest")


@pytest.mark.parametrize(("height", "width", "tile", "overlap"),
                         [(37, 53, 16, 8), (64, 64, 32, 0), (20, 90, 32, 12), (10, 10, 64, 32), (50, 33, 17, 7)])
def test_blend_weights_sum_to_one_everywhere(height: int, width: int, tile: int, overlap: int) -> None:
    image = torch.rand(2, 3, height, width)
    tiled = tiled_apply(nearest_x2, image, tile=tile, overlap=overlap, scale=2)
    assert tiled.shape == (2, 3, height * 2, width * 2)
    torch.testing.assert_close(tiled, nearest_x2(image), rtol=0, atol=1e-6)


def _local_network(radius: int) -> torch.nn.Module:
    """``radius`` 3x3 convolutions then a x2 pixel shuffle: each output sees ``radius`` input pixels
    around it, and zero padding shows at every tile border."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 12, 3, padding=1)]
    layers += [torch.nn.Conv2d(12, 12, 3, padding=1) for _ in range(radius - 1)]
    return torch.nn.Sequential(*layers, torch.nn.PixelShuffle(2)).eval()


@torch.no_grad()
def test_local_network_gives_its_untiled_output_when_the_margin_covers_its_reach() -> None:
    net, image = _local_network(radius=3), torch.rand(1, 3, 45, 61)
    untiled = net(image)
    tiled = tiled_apply(net, image, tile=24, overlap=12, scale=2)  # margin 3 = the network's reach
    torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-5)
    seams = tiled_apply(net, image, tile=24, overlap=0, scale=2)
    assert (seams - untiled).abs().max() > 1e-2  # without overlap the tile borders show


def test_tiles_cover_the_image_and_progress_counts_them() -> None:
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    calls: list[tuple[int, int]] = []
    tiled_apply(nearest_x2, torch.rand(1, 3, 100, 70), tile=40, overlap=10, scale=2,
                on_tile=lambda done, total: calls.append((done, total)))
    total = tile_count(100, 70, 40, 10)
    assert calls == [(i, total) for i in range(1, total + 1)] and total == 3 * 2


def test_a_tile_of_the_wrong_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected"):
        tiled_apply(lambda t: t, torch.rand(1, 3, 16, 16), tile=8, overlap=2, scale=4)


def test_out_of_memory_halves_the_tile_until_it_fits() -> None:
    image, tried = torch.rand(1, 3, 80, 80), []

    def run(tile: int) -> torch.Tensor:
        tried.append(tile)

        def fn(piece: torch.Tensor) -> torch.Tensor:
            if piece.shape[-1] > 32:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return nearest_x2(piece)
        return tiled_apply(fn, image, tile=tile, overlap=8, scale=2)

    out = halve_on_oom(run, 128, floor=16)
    assert tried == [128, 64, 32]
    torch.testing.assert_close(out, nearest_x2(image), rtol=0, atol=1e-6)


def test_out_of_memory_at_the_floor_says_so() -> None:
    def run(tile: int) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(TileMemoryError, match="64x64 px tiles"):
        halve_on_oom(run, 256, floor=64)
