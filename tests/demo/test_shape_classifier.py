"""The shape judge: deterministic from its seed, saved and loaded unchanged, and (slow: the real
one-minute fit) right on fresh renders, clean and degraded, in every colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nodes.demo.judge import judge
from nodes.demo.products import SHAPES, ProductSpec, held_out_prompts, parse_caption, render, to_array
from nodes.demo.shape_classifier import ShapeClassifier, augment, fit, rendered_set


def test_fit_is_deterministic_and_round_trips_through_a_file(tmp_path: Path) -> None:
    first, again = fit(3, count=64, steps=4), fit(3, count=64, steps=4)
    for (name, a), b in zip(first.net.state_dict().items(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    pixels, _ = rendered_set(7, 20)
    images = pixels.permute(0, 2, 3, 1)
    first.save(tmp_path / "shapes.safetensors")
    loaded = ShapeClassifier.load(tmp_path / "shapes.safetensors")
    assert torch.equal(loaded.logits(images), first.logits(images))
    assert len(first.predict(images)) == 20 and set(first.predict(images)) <= set(SHAPES)
    # a 128 px picture is judged at 32 px (area reduction)
    large = torch.from_numpy(to_array(render(ProductSpec("blue", "shoe", "white"), 1, 128)))
    small = torch.from_numpy(to_array(render(ProductSpec("blue", "shoe", "white"), 1, 32)))
    assert torch.allclose(first.logits(large), first.logits(small), atol=0.05)


def test_augment_keeps_range_and_shape() -> None:
    pixels, _ = rendered_set(1, 8)
    out = augment(pixels, torch.Generator().manual_seed(0))
    assert out.shape == pixels.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, pixels)


@pytest.fixture(scope="module")
def classifier() -> ShapeClassifier:
    return fit(0)


@pytest.mark.slow
def test_shapes_are_right_on_fresh_renders(classifier: ShapeClassifier) -> None:
    pixels, labels = rendered_set(2024, 1000)  # seeds the fit never saw
    expected = [SHAPES[i] for i in labels.tolist()]
    clean = classifier.predict(pixels.permute(0, 2, 3, 1))
    degraded = classifier.predict(augment(pixels, torch.Generator().manual_seed(5)).permute(0, 2, 3, 1))
    assert np.mean([p == e for p, e in zip(clean, expected)]) >= 0.97
    assert np.mean([p == e for p, e in zip(degraded, expected)]) >= 0.95


@pytest.mark.slow
def test_renders_of_the_held_out_prompts_pass_and_shuffled_prompts_fail(classifier: ShapeClassifier) -> None:
    prompts = held_out_prompts()
    images = np.stack([to_array(render(parse_caption(p), 31 + i, 32)) for i, p in enumerate(prompts)])
    right = judge(images, prompts, classifier)
    assert (right.colour_accuracy, right.background_accuracy) == (1.0, 1.0) and right.shape_accuracy >= 0.97
    wrong_shape = [p.replace(parse_caption(p).shape, SHAPES[(SHAPES.index(parse_caption(p).shape) + 1) % 5])
                   for p in prompts]
    assert judge(images, wrong_shape, classifier).shape_accuracy <= 0.03
