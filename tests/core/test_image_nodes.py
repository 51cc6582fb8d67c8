"""Image operations, run as graphs: the right pixels change, the rest stay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def solid(color: tuple[int, int, int], width: int, height: int) -> np.ndarray:
    return np.tile(np.asarray(color, dtype=np.uint8), (height, width, 1))


def rgb(color: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.float32) / 255.0


def node(class_type: str, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def test_empty_image_fills_batch_with_color(graphs):
    prompt = {"1": node("EmptyImage", width=6, height=4, batch_size=3, color=0xFF8000)}
    image = graphs.output(prompt, "1")
    assert image.shape == (3, 4, 6, 3) and image.dtype == torch.float32
    assert torch.allclose(image, torch.tensor([1.0, 128 / 255, 0.0]).expand(3, 4, 6, 3))


def test_image_scale_nearest_repeats_pixels(graphs):
    checker = np.array([[RED, GREEN], [BLUE, WHITE]], dtype=np.uint8)
    prompt = graphs.load(checker) | {"2": node("ImageScale", image=["src", 0], upscale_method="nearest-exact",
                                               width=4, height=4, crop="disabled")}
    image = graphs.output(prompt, "2")
    assert image.shape == (1, 4, 4, 3)
    assert torch.equal(image[0, :2, :2], rgb(RED).expand(2, 2, 3))
    assert torch.equal(image[0, 2:, 2:], rgb(WHITE).expand(2, 2, 3))


def test_image_scale_zero_size_keeps_aspect_ratio(graphs):
    prompt = graphs.load(solid(RED, 40, 20)) | {
        "2": node("ImageScale", image=["src", 0], upscale_method="bilinear", width=0, height=10,
                  crop="disabled")}
    assert graphs.output(prompt, "2").shape == (1, 10, 20, 3)


def test_image_scale_center_crop_keeps_the_middle(graphs):
    picture = np.concatenate([solid(RED, 2, 4), solid(GREEN, 4, 4), solid(BLUE, 2, 4)], axis=1)
    prompt = graphs.load(picture) | {"2": node("ImageScale", image=["src", 0], upscale_method="nearest-exact",
                                               width=4, height=4, crop="center")}
    image = graphs.output(prompt, "2")
    assert torch.equal(image[0], rgb(GREEN).expand(4, 4, 3))


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_every_upscale_method_resizes_and_keeps_range(graphs, method):
    stripes = np.concatenate([solid(BLACK, 8, 16), solid(WHITE, 8, 16)], axis=1)
    prompt = graphs.load(stripes) | {"2": node("ImageScale", image=["src", 0], upscale_method=method,
                                               width=24, height=12, crop="disabled")}
    image = graphs.output(prompt, "2")
    assert image.shape == (1, 12, 24, 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image[0, :, 0].max() < 0.05 and image[0, :, -1].min() > 0.95  # edges keep their colour


def test_image_scale_by_factor(graphs):
    prompt = graphs.load(solid(BLUE, 10, 6)) | {"2": node("ImageScaleBy", image=["src", 0],
                                                          upscale_method="area", scale_by=0.5)}
    image = graphs.output(prompt, "2")
    assert image.shape == (1, 3, 5, 3)
    assert torch.allclose(image, rgb(BLUE).expand(1, 3, 5, 3))


def test_image_invert(graphs):
    picture = np.array([[(0, 64, 255), (255, 255, 255)]], dtype=np.uint8)
    prompt = graphs.load(picture) | {"2": node("ImageInvert", image=["src", 0])}
    image = graphs.output(prompt, "2")
    assert torch.allclose(image[0, 0, 0], torch.tensor([1.0, 191 / 255, 0.0]))
    assert torch.allclose(image[0, 0, 1], torch.zeros(3))


def test_image_blur_spreads_a_dot_and_keeps_flat_areas(graphs):
    picture = solid(BLACK, 15, 15)
    picture[7, 7] = WHITE
    prompt = graphs.load(picture) | {"2": node("ImageBlur", image=["src", 0], blur_radius=2, sigma=1.0)}
    image = graphs.output(prompt, "2")[0, ..., 0]
    assert image.shape == (15, 15)
    assert 0.0 < image[7, 7] < 1.0
    assert image[7, 8] > 0 and image[9, 7] > 0  # neighbours got some of the light
    assert image[7, 10] == 0 and image[0, 0] == 0  # beyond the radius: untouched
    assert torch.isclose(image.sum(), torch.tensor(1.0), atol=1e-5)  # light is spread, not lost
    flat = graphs.load(solid(GREEN, 3, 3), "flat") | {
        "3": node("ImageBlur", image=["flat", 0], blur_radius=5, sigma=2.0)}
    assert torch.allclose(graphs.output(flat, "3"), rgb(GREEN).expand(1, 3, 3, 3), atol=1e-6)


def test_image_crop_takes_the_region_and_stops_at_the_border(graphs):
    picture = np.concatenate([solid(RED, 4, 4), solid(BLUE, 4, 4)], axis=1)
    prompt = graphs.load(picture) | {
        "2": node("ImageCrop", image=["src", 0], width=3, height=2, x=4, y=1),
        "3": node("ImageCrop", image=["src", 0], width=512, height=512, x=6, y=0)}
    crop = graphs.output(prompt, "2")
    assert crop.shape == (1, 2, 3, 3) and torch.equal(crop[0], rgb(BLUE).expand(2, 3, 3))
    assert graphs.output(prompt, "3").shape == (1, 4, 2, 3)


def test_image_batch_resizes_second_to_first(graphs):
    prompt = {"1": node("EmptyImage", width=8, height=8, batch_size=2, color=0xFF0000),
              "2": node("EmptyImage", width=16, height=4, batch_size=1, color=0x0000FF),
              "3": node("ImageBatch", image1=["1", 0], image2=["2", 0])}
    batch = graphs.output(prompt, "3")
    assert batch.shape == (3, 8, 8, 3)
    assert torch.allclose(batch[2], rgb(BLUE).expand(8, 8, 3))


def test_image_composite_masked_pastes_and_blends(graphs):
    prompt = {"1": node("EmptyImage", width=8, height=8, batch_size=1, color=0xFF0000),
              "2": node("EmptyImage", width=4, height=4, batch_size=1, color=0x0000FF),
              "3": node("ImageCompositeMasked", destination=["1", 0], source=["2", 0], x=2, y=2,
                        resize_source=False),
              "4": node("SolidMask", value=0.25, width=4, height=4),
              "5": node("ImageCompositeMasked", destination=["1", 0], source=["2", 0], x=6, y=6,
                        resize_source=False, mask=["4", 0])}
    pasted = graphs.output(prompt, "3")[0]
    assert torch.equal(pasted[2:6, 2:6], rgb(BLUE).expand(4, 4, 3))
    assert torch.equal(pasted[0, 0], rgb(RED)) and torch.equal(pasted[6, 6], rgb(RED))
    blended = graphs.output(prompt, "5")[0]  # 2×2 of the source fits; mask 0.25 blends
    assert torch.allclose(blended[6:, 6:], torch.tensor([0.75, 0.0, 0.25]).expand(2, 2, 3))
    assert torch.equal(blended[5, 5], rgb(RED))


def test_image_composite_resize_source_covers_destination(graphs):
    prompt = {"1": node("EmptyImage", width=8, height=6, batch_size=1, color=0xFF0000),
              "2": node("EmptyImage", width=2, height=2, batch_size=1, color=0x00FF00),
              "3": node("ImageCompositeMasked", destination=["1", 0], source=["2", 0], x=0, y=0,
                        resize_source=True)}
    assert torch.allclose(graphs.output(prompt, "3"), rgb(GREEN).expand(1, 6, 8, 3))


def test_image_pad_for_outpaint_pads_grey_and_masks_new_area(graphs):
    prompt = graphs.load(solid(WHITE, 20, 20)) | {
        "2": node("ImagePadForOutpaint", image=["src", 0], left=8, top=0, right=0, bottom=4,
                  feathering=4)}
    image = graphs.output(prompt, "2", 0)[0]
    mask = graphs.output(prompt, "2", 1)
    assert image.shape == (24, 28, 3) and mask.shape == (1, 24, 28)
    assert torch.allclose(image[:, :8], torch.full((24, 8, 3), 0.5))  # new area: mid grey
    assert torch.equal(image[:20, 8:], torch.ones(20, 20, 3))  # original kept
    assert torch.equal(mask[0, :, :8], torch.ones(24, 8)) and torch.equal(mask[0, 20:], torch.ones(4, 28))
    inner = mask[0, :20, 8:]
    assert inner[0, 0] == 1.0 and 0 < inner[10, 1] < 1  # feathered into the original near padded sides
    assert inner[10, 10] == 0 and inner[0, 10] == 0  # untouched middle and unpadded top edge
    assert inner[10, 1] > inner[10, 2] > inner[10, 3] > inner[10, 4] == 0


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("channels, other", [(3, (5, 6)), (3, (64, 64)), (4, (2, 40)), (1, (40, 33))])
def test_nearest_exact_resize_is_interpolate_exactly(channels_last, channels, other):
    # resize gathers pixels where the source positions are unambiguous and calls interpolate
    # elsewhere: every size pair must give interpolate's pixels in its layout, whatever kernel path
    # torch takes for the other axis' size and the channels (2 → 97 rows on a 64-wide image falls
    # on a pixel border, where the kernels round differently from a narrow image)
    from nodes.core.resizing import resize

    generator = torch.Generator().manual_seed(0)
    sizes = [(1, 1), (1, 7), (7, 1), (3, 5), (5, 3), (2, 41), (2, 97), (2, 141), (141, 2), (384, 768),
             (768, 384), (512, 768), (17, 1000), (1000, 17), (333, 334)]
    sizes += [tuple(int(v) for v in torch.randint(1, 300, (2,), generator=generator)) for _ in range(30)]
    for old, new in sizes:
        for axis in (-2, -1):  # the pair on the rows, then on the columns
            shape_in, shape_out = [other[0], other[0]], [other[1], other[1]]
            shape_in[axis], shape_out[axis] = old, new
            image = torch.rand(2, *shape_in, channels, generator=generator)
            samples = image.movedim(-1, 1) if channels_last else image.movedim(-1, 1).contiguous()
            expected = torch.nn.functional.interpolate(samples, size=tuple(shape_out), mode="nearest-exact")
            got = resize(samples, shape_out[1], shape_out[0], "nearest-exact")
            assert torch.equal(got, expected), (old, new, axis)
            assert got.stride() == expected.stride(), (old, new, axis)


@pytest.mark.parametrize("make", [
    lambda g: torch.rand(2, 1, 1, 3, generator=g).movedim(-1, 1),  # 1x1: the layout is a tie-break
    lambda g: torch.rand(1, 9, 12, 3, generator=g).movedim(-1, 1)[..., 2:7, 3:11],  # a centre crop's view
    lambda g: torch.rand(1, 9, 12, 1, generator=g).movedim(-1, 1),  # one channel
])
def test_nearest_exact_keeps_interpolates_layout_for_odd_strides(make):
    from nodes.core.resizing import resize

    samples = make(torch.Generator().manual_seed(3))
    expected = torch.nn.functional.interpolate(samples, size=(51, 24), mode="nearest-exact")
    got = resize(samples, 24, 51, "nearest-exact")
    assert torch.equal(got, expected) and got.stride() == expected.stride()


def test_nearest_exact_gathers_integer_upscales_and_leaves_pixel_borders_to_interpolate():
    from nodes.core.resizing import exact_source_indices

    assert exact_source_indices(384, 768).tolist() == [i // 2 for i in range(768)]
    assert exact_source_indices(3, 7).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert exact_source_indices(2, 97) is None  # output row 48 lies exactly on the border
    assert exact_source_indices(512, 768) is None  # 1.5x: every third row on a border
