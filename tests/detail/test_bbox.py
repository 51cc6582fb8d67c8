"""BBOX values: selection by size, score and count per image; boxes as masks; mismatches refused."""

from __future__ import annotations

import pytest
import torch

from nodes.detail.bbox import BBoxFilter, BBoxToMask, Box, check_boxes_fit, select

SIZE = (40, 60)
BOXES = (Box(0, 0, 10, 10, score=3, batch_index=0, image_size=SIZE),
         Box(20, 5, 50, 35, score=9, batch_index=0, image_size=SIZE),
         Box(5, 5, 9, 30, score=20, batch_index=0, image_size=SIZE),  # 4 px wide
         Box(5, 5, 25, 25, score=1, batch_index=1, image_size=SIZE))


def test_select_keeps_the_best_per_image_in_batch_order():
    assert select(BOXES, min_size=5, max_count=1) == (BOXES[1], BOXES[3])
    assert select(BOXES, min_size=0, max_count=0) == (BOXES[2], BOXES[1], BOXES[0], BOXES[3])
    assert select(BOXES, min_size=25, max_count=0) == (BOXES[1],)


def test_filter_node_applies_min_score(make_ctx):
    (kept,) = BBoxFilter().run(make_ctx(), bboxes=BOXES, min_score=2.0, min_size=0, max_count=0)
    assert kept == (BOXES[2], BOXES[1], BOXES[0])


def test_boxes_to_mask_with_dilation(make_ctx):
    image = torch.zeros(2, *SIZE, 3)
    (mask,) = BBoxToMask().run(make_ctx(), image=image, bboxes=BOXES[3:], dilation=2)
    assert mask.shape == (2, 40, 60) and mask[0].sum() == 0
    assert mask[1].sum() == 24 * 24 and mask[1, 2, 2] == 0 and mask[1, 3, 3] == 1 and mask[1, 26, 26] == 1


def test_boxes_of_another_image_are_refused():
    with pytest.raises(ValueError, match="image 1 of size 60x40, but the image batch has 1 image"):
        check_boxes_fit(BOXES, torch.zeros(1, 40, 60, 3))
