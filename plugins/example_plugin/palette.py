"""The PALETTE type and its nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from PIL import Image

from graph_runtime import Boolean, Context, Int, Link, Node, Output

PALETTE = "PALETTE"
CATEGORY = "example/palette"


@dataclass(frozen=True)
class Palette:
    """Colours as RGB triples in 0..1, most common first; ``shares`` sum to 1."""

    colors: tuple[tuple[float, float, float], ...]
    shares: tuple[float, ...]

    def __post_init__(self) -> None:
        assert len(self.colors) == len(self.shares) > 0, "a palette needs one share per colour"


def extract_palette(image: torch.Tensor, count: int) -> Palette:
    """Median-cut quantisation of every pixel in the batch down to at most ``count`` colours."""
    pixels = image[..., :3].reshape(1, -1, 3)  # the whole batch as one row of pixels
    array = np.clip(pixels.detach().cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    quantised = Image.fromarray(array).quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    lookup = quantised.getpalette() or []
    # (pixel count, palette index) pairs: a "P" image counts by index
    used = sorted(cast(list[tuple[int, int]], quantised.getcolors(maxcolors=256) or []), reverse=True)
    total = sum(n for n, _ in used)
    colors = tuple(tuple(lookup[3 * index + c] / 255.0 for c in range(3)) for _, index in used)
    return Palette(colors=colors, shares=tuple(n / total for n, _ in used))  # type: ignore[arg-type]


def render_swatch(palette: Palette, width: int, height: int, proportional: bool) -> torch.Tensor:
    """Vertical bands left to right, as wide as each colour's share (or equal widths)."""
    weights = np.asarray(palette.shares if proportional else [1.0] * len(palette.colors))
    edges = np.round(np.cumsum(weights) / weights.sum() * width).astype(int)
    column_color = np.searchsorted(edges, np.arange(width), side="right").clip(max=len(edges) - 1)
    colors = torch.tensor(palette.colors, dtype=torch.float32)
    row = colors[torch.from_numpy(column_color)]
    return row.unsqueeze(0).expand(height, width, 3).unsqueeze(0).clone()


class ExtractPalette(Node):
    display_name = "Extract Palette"
    category = CATEGORY
    description = "The dominant colours of the images (median cut), most common first."
    inputs = [Link("image", "IMAGE"), Int("colors", 5, min=1, max=64, step=1)]
    outputs = [Output(PALETTE)]

    def run(self, ctx: Context, *, image: torch.Tensor, colors: int) -> tuple[Palette]:
        return (extract_palette(image, colors),)


class PaletteSwatch(Node):
    display_name = "Palette Swatch"
    category = CATEGORY
    description = "Draw a palette as colour bands, each as wide as its share when proportional."
    inputs = [
        Link("palette", PALETTE),
        Int("width", 512, min=1, max=8192, step=1),
        Int("height", 128, min=1, max=8192, step=1),
        Boolean("proportional", True),
    ]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, palette: Palette, width: int, height: int,
            proportional: bool) -> tuple[torch.Tensor]:
        return (render_swatch(palette, width, height, proportional),)
