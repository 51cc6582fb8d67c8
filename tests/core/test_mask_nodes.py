"""Mask operations, run as graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def node(class_type: str, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def dot_mask(graphs, size: int = 9, square: int = 1):
    """A prompt whose node "m" is a size×size mask with a centred square of ones."""
    picture = np.zeros((size, size), dtype=np.uint8)
    lo = size // 2 - square // 2
    picture[lo:lo + square, lo:lo + square] = 255
    name = graphs.put_image("dot.png", picture)
    return {"m": node("LoadImageMask", image=name, channel="red")}


def test_solid_and_invert_mask(graphs):
    prompt = {"1": node("SolidMask", value=0.3, width=5, height=4),
              "2": node("InvertMask", mask=["1", 0])}
    solid = graphs.output(prompt, "1")
    assert solid.shape == (1, 4, 5) and torch.allclose(solid, torch.full((1, 4, 5), 0.3))
    assert torch.allclose(graphs.output(prompt, "2"), torch.full((1, 4, 5), 0.7))


def test_grow_mask_square_and_tapered(graphs):
    prompt = dot_mask(graphs) | {
        "square": node("GrowMask", mask=["m", 0], expand=2, tapered_corners=False),
        "tapered": node("GrowMask", mask=["m", 0], expand=2, tapered_corners=True)}
    square = graphs.output(prompt, "square")[0]
    assert square.sum() == 25 and torch.equal(square[2:7, 2:7], torch.ones(5, 5))
    tapered = graphs.output(prompt, "tapered")[0]
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    diamond = ((rows - 4).abs() + (cols - 4).abs() <= 2).float()
    assert torch.equal(tapered, diamond)


def test_grow_mask_negative_shrinks(graphs):
    prompt = dot_mask(graphs, size=9, square=5) | {
        "1": node("GrowMask", mask=["m", 0], expand=-1, tapered_corners=False),
        "2": node("GrowMask", mask=["m", 0], expand=-3, tapered_corners=True)}
    shrunk = graphs.output(prompt, "1")[0]
    assert shrunk.sum() == 9 and torch.equal(shrunk[3:6, 3:6], torch.ones(3, 3))
    assert graphs.output(prompt, "2").sum() == 0


def test_feather_mask_ramps_each_side(graphs):
    prompt = {"1": node("SolidMask", value=1.0, width=10, height=6),
              "2": node("FeatherMask", mask=["1", 0], left=4, top=0, right=2, bottom=0)}
    feathered = graphs.output(prompt, "2")[0]
    expected_row = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    assert torch.allclose(feathered, expected_row.expand(6, 10))
    prompt["3"] = node("FeatherMask", mask=["1", 0], left=0, top=3, right=0, bottom=0)
    assert torch.allclose(graphs.output(prompt, "3")[0, :, 0], torch.tensor([1 / 3, 2 / 3, 1, 1, 1, 1]))


def test_mask_image_round_trip_and_channels(graphs):
    picture = np.zeros((2, 3, 3), dtype=np.uint8)
    picture[..., 1] = 255  # green
    name = graphs.put_image("green.png", picture)
    prompt = {"1": node("LoadImage", image=name),
              "2": node("ImageToMask", image=["1", 0], channel="green"),
              "3": node("ImageToMask", image=["1", 0], channel="blue"),
              "4": node("MaskToImage", mask=["2", 0])}
    assert torch.equal(graphs.output(prompt, "2"), torch.ones(1, 2, 3))
    assert torch.equal(graphs.output(prompt, "3"), torch.zeros(1, 2, 3))
    assert torch.equal(graphs.output(prompt, "4"), torch.ones(1, 2, 3, 3))


def test_image_to_mask_alpha_of_rgb_image_is_a_clear_error(graphs):
    prompt = {"1": node("EmptyImage", width=4, height=4, batch_size=1, color=0),
              "2": node("ImageToMask", image=["1", 0], channel="alpha")}
    result = graphs.runtime.execute(prompt, targets=["2"])
    assert result.status == "error"
    assert result.error.node_id == "2" and result.error.node_type == "ImageToMask"
    assert "alpha" in result.error.exception_message and "3 channels" in result.error.exception_message


@pytest.mark.parametrize("channel, expected", [("alpha", 1.0 - 64 / 255), ("red", 200 / 255),
                                               ("green", 100 / 255), ("blue", 0.0)])
def test_load_image_mask_channels(graphs, channel, expected):
    picture = Image.new("RGBA", (3, 2), (200, 100, 0, 64))
    name = graphs.put_image("rgba.png", picture)
    mask = graphs.output({"1": node("LoadImageMask", image=name, channel=channel)}, "1")
    assert mask.shape == (1, 2, 3)
    assert torch.allclose(mask, torch.full((1, 2, 3), expected))
