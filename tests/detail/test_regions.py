"""Crop boxes, working sizes, and pasting that leaves everything outside the feathered mask as it was."""

from __future__ import annotations

import pytest
import torch

from nodes.detail.bbox import Box
from nodes.detail.regions import crop_box, crop_region, feathered, paste_region, working_size


def test_crop_box_is_the_box_times_the_factor_moved_inside():
    centre = Box(40, 40, 60, 50, image_size=(100, 200))
    assert crop_box(centre, 3.0) == (20, 30, 80, 60)
    corner = Box(0, 0, 20, 10, image_size=(100, 200))
    assert crop_box(corner, 3.0) == (0, 0, 60, 30)  # moved, not cut: same size as in the middle
    huge = Box(10, 10, 90, 90, image_size=(100, 200))
    assert crop_box(huge, 3.0) == (0, 0, 200, 100)  # larger than the image: the image


def test_working_size_reaches_guide_size_capped_by_max_size():
    assert working_size(60, 30, 512, 1024) == (1024, 512)
    assert working_size(100, 20, 512, 1024) == (1024, 208)  # long side capped, short side short of 512
    assert working_size(800, 600, 512, 1024) == (800, 600)  # never shrunk to reach guide_size
    assert working_size(2000, 1000, 512, 1024) == (1024, 512)  # but capped at max_size
    assert working_size(30, 33, 64, 1024, multiple=8) == (64, 72)


def test_crop_region_cuts_and_enlarges_image_and_mask():
    image = torch.rand(2, 100, 200, 3)
    mask = torch.zeros(2, 100, 200)
    mask[1, 45:50, 45:55] = 1
    crop = crop_region(image, Box(40, 40, 60, 50, batch_index=1, image_size=(100, 200), label="face"), mask,
                       crop_factor=3.0, guide_size=60, max_size=1024)
    assert crop.image.shape == (1, 64, 120, 3) and crop.mask.shape == (1, 64, 120)
    assert (crop.region.x0, crop.region.y0, crop.region.x1, crop.region.y1) == (20, 30, 80, 60)
    assert crop.region.label == "face" and crop.region.batch_index == 1
    assert crop.mask.sum() > 0 and crop.mask[0, :25].sum() == 0  # the masked rows are the lower half
    aligned = Box(16, 32, 80, 64, batch_index=1, image_size=(100, 200))  # sides multiples of 8: no resizing
    same = crop_region(image, aligned, None, crop_factor=1.0, guide_size=8, max_size=1024)
    assert torch.equal(same.image[0], image[1, 32:64, 16:80]) and same.mask.min() == 1


def test_mask_of_another_size_is_refused():
    with pytest.raises(ValueError, match="mask: 50x50 does not match the image \\(200x100\\)"):
        crop_region(torch.rand(1, 100, 200, 3), Box(0, 0, 5, 5, image_size=(100, 200)), torch.ones(1, 50, 50),
                    crop_factor=1.0, guide_size=8, max_size=8)


def test_feathering_reaches_exactly_dilation_plus_feather():
    mask = torch.zeros(1, 41, 41)
    mask[0, 20, 20] = 1
    soft = feathered(mask, dilation=4, feather=5)
    assert soft[0, 20, 20] > 0.5
    inside = soft[0].nonzero()
    assert inside.min() == 20 - 9 and inside.max() == 20 + 9


def test_paste_changes_only_pixels_under_the_feathered_mask():
    image = torch.rand(1, 100, 200, 3, generator=torch.Generator().manual_seed(0))
    region = Box(20, 30, 80, 60, image_size=(100, 200))
    source = torch.zeros(1, 64, 128, 3)
    mask = torch.zeros(1, 64, 128)
    mask[0, 24:40, 48:80] = 1
    out, blend = paste_region(image, source, region, mask, dilation=2, feather=3)
    assert out.shape == image.shape
    changed = (out != image).any(-1)[0]
    assert torch.equal(changed, blend[0] > 0)  # changed exactly where the blend mask reaches
    assert blend[0, :30].sum() == 0 and blend[0, 60:].sum() == 0 and blend[0, :, :20].sum() == 0
    core = blend[0] == 1
    assert core.any() and out[0][core].abs().max() == 0  # fully inside: the source's pixels


def test_paste_node_needs_one_source_per_region(make_ctx):
    from nodes.detail.regions import PasteByBBox

    image = torch.rand(1, 32, 32, 3)
    regions = [(Box(0, 0, 16, 16, image_size=(32, 32)),), (Box(8, 8, 24, 24, image_size=(32, 32)),)]
    with pytest.raises(ValueError, match="got 1 source\\(s\\) for 2 region\\(s\\)"):
        PasteByBBox().run(make_ctx(), image=[image], source=[torch.rand(1, 16, 16, 3)], regions=regions,
                          dilation=[0], feather=[0])
    out, blend = PasteByBBox().run(make_ctx(), image=[image], source=[torch.zeros(1, 16, 16, 3)] * 2,
                                   regions=regions, dilation=[0], feather=[0])
    covered = torch.zeros(32, 32, dtype=torch.bool)
    covered[:16, :16] = covered[8:24, 8:24] = True
    assert out[0][covered].abs().max() == 0 and torch.equal(out[0][~covered], image[0][~covered])
    assert torch.equal(blend[0] == 1, covered) and blend[0][~covered].sum() == 0


def test_paste_node_refuses_a_full_image_mask(make_ctx):
    """The SAM mask of the whole image wired into PasteByBBox would be squeezed into the region and
    blend in the wrong place: refused, naming the input; crop-sized and region-sized masks are taken."""
    from nodes.detail.regions import PasteByBBox

    image = torch.rand(1, 64, 64, 3)
    regions = [(Box(8, 8, 40, 40, image_size=(64, 64)),)]
    source = [torch.zeros(1, 16, 16, 3)]
    with pytest.raises(ValueError, match="mask 0: 64x64 is the size of neither its source \\(16x16\\) nor its "
                                         "region \\(32x32\\); connect CropByBBox's masks output"):
        PasteByBBox().run(make_ctx(), image=[image], source=source, regions=regions, dilation=[0], feather=[0],
                          mask=[torch.ones(1, 64, 64)])
    for size in (16, 32):
        out, _ = PasteByBBox().run(make_ctx(), image=[image], source=source, regions=regions, dilation=[0],
                                   feather=[0], mask=[torch.ones(1, size, size)])
        assert out[0, 8:40, 8:40].abs().max() == 0
