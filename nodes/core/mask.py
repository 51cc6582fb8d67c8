"""Mask operations with ComfyUI's names, inputs and defaults (comfy_extras/nodes_mask.py).

MASK is a float tensor ``[B, H, W]`` in 0..1; 1 marks the area an operation applies to."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graph_runtime import Boolean, Combo, Context, Float, Int, Link, Node, Output
from nodes.core.imaging import as_mask_batch
from nodes.inputs import MAX_RESOLUTION

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "alpha")


class SolidMask(Node):
    category = "mask"
    description = "A width × height mask with every pixel set to value."
    inputs = [
        Float("value", 1.0, min=0.0, max=1.0, step=0.01),
        Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
        Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
    ]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    category = "mask"
    description = "Swap the masked and unmasked areas (1 - mask)."
    inputs = [Link("mask", "MASK")]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class GrowMask(Node):
    category = "mask"
    description = ("Grow the mask by expand pixels (shrink it when negative). Tapered corners grow "
                   "diagonally one step slower, rounding the corners.")
    inputs = [
        Link("mask", "MASK"),
        Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
        Boolean("tapered_corners", True),
    ]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, mask: torch.Tensor, expand: int,
            tapered_corners: bool) -> tuple[torch.Tensor]:
        samples = as_mask_batch(mask).unsqueeze(1).float()
        grow = expand > 0
        height, width = samples.shape[-2:]
        # beyond height + width steps nothing changes any more
        steps = min(abs(expand), height + width)
        if steps == 0:
            return (samples.squeeze(1),)
        if not tapered_corners:  # a square footprint: all steps at once
            return (_square_morph(samples, steps, grow).squeeze(1),)
        for _ in range(steps):
            ctx.check_interrupted()
            samples = _cross_morph(samples, grow)
        return (samples.squeeze(1),)


def _square_morph(samples: torch.Tensor, radius: int, grow: bool) -> torch.Tensor:
    """Grey dilation (erosion when not ``grow``) with a (2r+1)² square; edges repeat outward as
    scipy's reflect mode does for this footprint."""
    signed = samples if grow else -samples
    padded = F.pad(signed, (radius,) * 4, mode="replicate")
    pooled = F.max_pool2d(padded, 2 * radius + 1, stride=1)
    return pooled if grow else -pooled


def _cross_morph(samples: torch.Tensor, grow: bool) -> torch.Tensor:
    """One grey dilation/erosion step with the 3×3 cross footprint."""
    padded = F.pad(samples, (1, 1, 1, 1), mode="replicate")
    neighbours = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                              padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
    return neighbours.amax(0) if grow else neighbours.amin(0)


class FeatherMask(Node):
    category = "mask"
    description = "Fade the mask linearly to 0 over the given number of pixels at each edge."
    inputs = [
        Link("mask", "MASK"),
        Int("left", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("top", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("right", 0, min=0, max=MAX_RESOLUTION, step=1),
        Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=1),
    ]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, mask: torch.Tensor, left: int, top: int, right: int,
            bottom: int) -> tuple[torch.Tensor]:
        output = as_mask_batch(mask).clone().float()
        height, width = output.shape[-2:]
        # the pixel at the edge keeps 1/n, the n-th pixel in keeps all of it
        output *= _ramp(width, min(left, width), min(right, width)).view(1, 1, width)
        output *= _ramp(height, min(top, height), min(bottom, height)).view(1, height, 1)
        return (output,)


def _ramp(length: int, start: int, end: int) -> torch.Tensor:
    weights = torch.ones(length)
    if start:
        weights[:start] *= torch.arange(1, start + 1) / start
    if end:
        weights[length - end:] *= torch.arange(end, 0, -1) / end
    return weights


class MaskToImage(Node):
    display_name = "Convert Mask to Image"
    category = "mask"
    description = "Show a mask as a grey-scale RGB image."
    inputs = [Link("mask", "MASK")]
    outputs = [Output("IMAGE")]

    def run(self, ctx: Context, *, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (as_mask_batch(mask).unsqueeze(-1).expand(-1, -1, -1, 3).clone(),)


class ImageToMask(Node):
    display_name = "Convert Image to Mask"
    category = "mask"
    description = "Take one channel of an image as a mask."
    inputs = [Link("image", "IMAGE"), Combo("channel", CHANNELS)]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"channel {channel!r}: the image has only {image.shape[-1]} channels "
                             f"({', '.join(CHANNELS[:image.shape[-1]])})")
        return (image[..., index].clone(),)


NODES: list[type[Node]] = [SolidMask, InvertMask, GrowMask, FeatherMask, MaskToImage, ImageToMask]
