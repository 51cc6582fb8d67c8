"""The product-shot renderer: deterministic pictures, pairs that are one picture at two sizes, the
named colours where they belong, captions, and a held-out split that training never sees."""

from __future__ import annotations

import numpy as np
import pytest

from nodes.demo.products import (BACKGROUNDS, COLOURS, HELD_OUT_PAIRS, HELD_OUT_TRIPLES, SHAPES, ProductSpec,
                                 all_specs, dataset_specs, held_out_prompts, parse_caption, render, render_pair,
                                 to_array, training_specs)


def test_render_is_deterministic_and_the_seed_jitters() -> None:
    spec = ProductSpec("red", "mug", "blue")
    first, again, other = (np.asarray(render(spec, seed)) for seed in (3, 3, 4))
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.array_equal(np.asarray(render(ProductSpec("red", "mug", "blue"), 3)), first)


def test_pair_is_the_same_picture_box_reduced() -> None:
    low, high = render_pair(ProductSpec("orange", "lamp", "gray"), 11, size=32, upscale=4)
    assert low.size == (32, 32) and high.size == (128, 128)
    blocks = np.asarray(high, np.float32).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(blocks - np.asarray(low, np.float32)).max() <= 1.0  # rounding only


def test_border_is_the_background_and_the_centre_the_object() -> None:
    for spec in (ProductSpec("yellow", "box", "black"), ProductSpec("pink", "bottle", "green")):
        picture = np.asarray(render(spec, 0, 32)).astype(int)
        assert np.abs(picture[0] - BACKGROUNDS[spec.background]).max() <= 2  # top row: plain background
        object_pixels = np.abs(picture - COLOURS[spec.colour]).sum(axis=-1) < 90
        assert object_pixels.sum() >= 30, spec  # the product is big enough to read at 32 px


def test_shapes_differ_in_silhouette() -> None:
    masks = [np.abs(to_array(render(ProductSpec("white", shape, "black"), 0, 32)) - 0.11).sum(-1) > 0.5
             for shape in SHAPES]
    for i in range(len(SHAPES)):
        for j in range(i + 1, len(SHAPES)):
            overlap = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
            assert overlap < 0.7, (SHAPES[i], SHAPES[j], overlap)


def test_captions_and_their_parse() -> None:
    spec = ProductSpec("orange", "shoe", "white")
    assert spec.caption == "an orange shoe on a white background"
    assert ProductSpec("red", "box", "yellow").caption == "a red box on a yellow background"
    assert all(parse_caption(s.caption) == s for s in all_specs())
    with pytest.raises(ValueError, match="not a product-shot caption"):
        parse_caption("a photo of a cat")
    with pytest.raises(ValueError, match="colour 'teal' is not one of"):
        parse_caption("a teal mug on a white background")


def test_object_colour_never_equals_the_background() -> None:
    with pytest.raises(ValueError, match="equals the background's"):
        ProductSpec("blue", "mug", "blue")
    assert all(s.colour != s.background for s in all_specs())
    assert len(all_specs()) == 255 and len(COLOURS) == 8 and len(BACKGROUNDS) == 7 and len(SHAPES) == 5


def test_held_out_combinations_never_appear_in_training() -> None:
    shots = dataset_specs(0, 3000)
    seen = {shot.spec for shot in shots}
    assert seen == set(training_specs())  # every training combination, and only those
    assert not any((s.colour, s.shape) in HELD_OUT_PAIRS for s in seen)
    assert not any((s.colour, s.shape, s.background) in HELD_OUT_TRIPLES for s in seen)
    # ... while each colour, shape and background still occurs in training
    assert {s.colour for s in seen} == set(COLOURS) and {s.shape for s in seen} == set(SHAPES)
    assert {s.background for s in seen} == set(BACKGROUNDS)
    counts = np.unique([hash(s.spec) for s in shots], return_counts=True)[1]
    assert counts.max() - counts.min() <= 1  # balanced rounds


def test_held_out_prompts_are_forty_unseen_valid_captions() -> None:
    prompts = held_out_prompts()
    assert len(prompts) == len(set(prompts)) == 40
    specs = [parse_caption(p) for p in prompts]
    assert all(s.held_out for s in specs)
    training = {s.caption for s in training_specs()}
    assert not training & set(prompts)
    assert {s.shape for s in specs} == set(SHAPES)


def test_dataset_specs_are_deterministic_from_the_seed() -> None:
    assert dataset_specs(5, 300) == dataset_specs(5, 300)
    assert dataset_specs(5, 300)[:100] == dataset_specs(5, 100)
    assert dataset_specs(5, 300) != dataset_specs(6, 300)
    assert dataset_specs(5, 0) == []
    with pytest.raises(ValueError, match="count must be >= 0"):
        dataset_specs(0, -1)
