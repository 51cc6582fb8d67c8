"""The colour judges are right on every render, clean or degraded like a generated picture, and
judge() scores a picture against its own prompt and fails it against a mismatched one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from nodes.demo.judge import as_batch, background_colour, judge, object_colour
from nodes.demo.products import ProductSpec, all_specs, render, to_array
from nodes.demo.shape_classifier import ShapeClassifier


class FixedShapes(ShapeClassifier):
    """A stand-in shape judge that names the shapes it is given (the colour tests need no CNN)."""

    def __init__(self, shapes: list[str]) -> None:
        self.shapes = shapes

    def predict(self, images: object) -> list[str]:
        return self.shapes


def _degrade(image: np.ndarray, sigma: float, noise: float, seed: int) -> np.ndarray:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None]
    if sigma:
        pixels = gaussian_blur(pixels, [5, 5], [sigma, sigma])
    pixels = pixels + noise * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed))
    return pixels.clamp(0, 1)[0].permute(1, 2, 0).numpy()


def test_colours_are_right_on_every_clean_render() -> None:
    wrong = [(spec, size, object_colour(img), background_colour(img))
             for index, spec in enumerate(all_specs())
             for size in ((32, 128) if index % 16 == 0 else (32,))
             for img in [to_array(render(spec, 500 + index, size))]
             if (object_colour(img), background_colour(img)) != (spec.colour, spec.background)]
    assert wrong == []


@pytest.mark.parametrize("sigma, noise", [(0.8, 0.03), (1.2, 0.06), (0.0, 0.05)])
def test_colours_survive_blur_and_noise(sigma: float, noise: float) -> None:
    specs = all_specs()[::5]
    wrong = [spec.caption for index, spec in enumerate(specs)
             for img in [_degrade(to_array(render(spec, 900 + index, 32)), sigma, noise, index)]
             if (object_colour(img), background_colour(img)) != (spec.colour, spec.background)]
    assert wrong == []


def test_no_object_is_no_colour() -> None:
    plain = np.full((32, 32, 3), 0.5, np.float32)
    assert object_colour(plain) is None and background_colour(plain) == "gray"


def test_judge_hits_its_prompt_and_misses_mismatched_ones() -> None:
    image = to_array(render(ProductSpec("red", "mug", "white"), 1, 32))
    images = np.stack([image] * 4)
    prompts = ["a red mug on a white background", "a blue mug on a white background",
               "a red mug on a green background", "a red lamp on a white background"]
    result = judge(images, prompts, classifier=FixedShapes(["mug"] * 4))
    hits = [(v.colour_hit, v.background_hit, v.shape_hit) for v in result.verdicts]
    assert hits == [(True, True, True), (False, True, True), (True, False, True), (True, True, False)]
    assert result.verdicts[1].colour == "red" and result.verdicts[2].background == "white"
    assert (result.colour_accuracy, result.background_accuracy, result.shape_accuracy) == (0.75, 0.75, 0.75)
    assert result.accuracy == 0.25


def test_judge_takes_image_tensors_and_refuses_bad_input() -> None:
    image = torch.from_numpy(to_array(render(ProductSpec("green", "box", "black"), 2, 32)))[None]
    assert judge(image, ["a green box on a black background"], FixedShapes(["box"])).accuracy == 1.0
    with pytest.raises(ValueError, match="1 images but 2 prompts"):
        judge(image, ["a green box on a black background"] * 2, FixedShapes(["box"]))
    with pytest.raises(ValueError, match="not a product-shot caption"):
        judge(image, ["a green box"], FixedShapes(["box"]))
    with pytest.raises(ValueError, match=r"RGB, got shape \(1, 32, 32, 4\)"):
        as_batch(np.zeros((1, 32, 32, 4)))
