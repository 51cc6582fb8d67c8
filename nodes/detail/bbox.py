"""The BBOX link type: detected regions, and the nodes that only reshape them.

A BBOX value is a tuple of :class:`Box` (possibly empty), in pixel coordinates of the image it was
found in. Each box remembers which image of the batch it belongs to and that image's size, so a
node receiving boxes and an image can refuse a mismatch instead of cutting the wrong place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from graph_runtime import Context, Float, Int, Link, Node, Output

BBOX = "BBOX"
BBOX_DESCRIPTION = ("detected regions: a tuple of boxes (x0, y0, x1, y1 in pixels, x1/y1 exclusive), each with "
                    "a score, a label, its image's batch index and size")


@dataclass(frozen=True)
class Box:
    """One region. ``score``: the detector's confidence (YOLO: probability 0..1; Haar cascade: the
    number of raw detections merged into this one, OpenCV's ``numDetections``)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    label: str = ""
    batch_index: int = 0
    image_size: tuple[int, int] = (0, 0)  # (height, width) of the image the box refers to

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def pixels(self) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1) covering the box, clipped to the image."""
        height, width = self.image_size
        return (max(0, int(self.x0)), max(0, int(self.y0)),
                min(width, math.ceil(self.x1)), min(height, math.ceil(self.y1)))


BBoxes = tuple[Box, ...]


def select(boxes: Iterable[Box], *, min_size: int, max_count: int) -> BBoxes:
    """Boxes whose shorter side is at least ``min_size`` pixels, best score first (larger first on
    ties), at most ``max_count`` per image (0: no limit); returned in batch order."""
    kept = sorted((b for b in boxes if min(b.width, b.height) >= min_size),
                  key=lambda b: (b.batch_index, -b.score, -b.width * b.height, b.y0, b.x0))
    if max_count <= 0:
        return tuple(kept)
    counts: dict[int, int] = {}
    chosen = []
    for box in kept:
        counts[box.batch_index] = counts.get(box.batch_index, 0) + 1
        if counts[box.batch_index] <= max_count:
            chosen.append(box)
    return tuple(chosen)


def check_boxes_fit(boxes: BBoxes, image: torch.Tensor, what: str = "bboxes") -> None:
    """Raise ValueError when a box was detected on an image of another size or batch."""
    batch, height, width = image.shape[0], image.shape[1], image.shape[2]
    for box in boxes:
        if box.batch_index >= batch or box.image_size != (height, width):
            raise ValueError(
                f"{what}: a box refers to image {box.batch_index} of size {box.image_size[1]}x{box.image_size[0]}, "
                f"but the image batch has {batch} image(s) of {width}x{height}; detect on the same image")


def boxes_to_mask(boxes: BBoxes, batch: int, height: int, width: int, *, dilation: int = 0) -> torch.Tensor:
    """MASK ``[batch, height, width]`` with 1 inside every box grown by ``dilation`` pixels."""
    mask = torch.zeros((batch, height, width), dtype=torch.float32)
    for box in boxes:
        x0, y0, x1, y1 = box.pixels()
        mask[box.batch_index, max(0, y0 - dilation):y1 + dilation, max(0, x0 - dilation):x1 + dilation] = 1.0
    return mask


class BBoxToMask(Node):
    display_name = "BBox to Mask"
    category = "detail"
    description = ("Fill each box (grown by dilation pixels) with 1 in a mask the size of the image: the mask to "
                   "re-render when no segmentation is wanted. MASK [B,H,W] float 0..1.")
    inputs = [Link("image", "IMAGE"), Link("bboxes", BBOX), Int("dilation", 0, min=0, max=512)]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, image: torch.Tensor, bboxes: BBoxes, dilation: int) -> tuple[torch.Tensor]:
        check_boxes_fit(bboxes, image)
        return (boxes_to_mask(bboxes, image.shape[0], image.shape[1], image.shape[2], dilation=dilation),)


class BBoxFilter(Node):
    display_name = "BBox Filter"
    category = "detail"
    description = ("Keep boxes with at least min_score and a shorter side of at least min_size pixels, best "
                   "first, at most max_count per image (0: all).")
    inputs = [Link("bboxes", BBOX), Float("min_score", 0.0, min=0.0, max=1000.0, step=0.01),
              Int("min_size", 0, min=0, max=16384), Int("max_count", 0, min=0, max=1000)]
    outputs = [Output(BBOX)]

    def run(self, ctx: Context, *, bboxes: BBoxes, min_score: float, min_size: int,
            max_count: int) -> tuple[BBoxes]:
        scored = (box for box in bboxes if box.score >= min_score)
        return (select(scored, min_size=min_size, max_count=max_count),)


NODES: list[type[Node]] = [BBoxToMask, BBoxFilter]
