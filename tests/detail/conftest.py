"""The diffusion tests' fixtures (tiny zoo, contexts sharing one model manager), and a face photo."""

from __future__ import annotations

import pytest
import torch

from tests.diffusion.conftest import _deterministic, make_ctx  # noqa: F401

# Where the face is in scikit-image's astronaut() (512×512): x0, y0, x1, y1, measured by hand.
ASTRONAUT_FACE = (170, 70, 275, 175)


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """scikit-image's astronaut photograph as an IMAGE [1, 512, 512, 3] float 0..1."""
    from skimage import data

    return torch.from_numpy(data.astronaut()).float().div(255)[None]


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area
