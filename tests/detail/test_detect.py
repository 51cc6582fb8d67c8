"""Detectors: OpenCV's shipped Haar cascades find the astronaut's face; filters; clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nodes.detail.bbox import Box
from nodes.detail.detect import BUILTIN_CASCADES, BBoxDetectHaar, BBoxDetectYOLO

from tests.detail.conftest import ASTRONAUT_FACE, iou


def detect(ctx, image, **overrides):
    widgets = {"cascade": BUILTIN_CASCADES[0], "scale_factor": 1.1, "min_neighbors": 5, "min_size": 32,
               "max_count": 0} | overrides
    return BBoxDetectHaar().run(ctx, image=image, **widgets)[0]


@pytest.mark.parametrize("cascade", BUILTIN_CASCADES[:3])
def test_haar_finds_the_astronauts_face(make_ctx, astronaut, cascade):
    boxes = detect(make_ctx(), astronaut, cascade=cascade)
    assert len(boxes) == 1
    box = boxes[0]
    assert iou((box.x0, box.y0, box.x1, box.y1), ASTRONAUT_FACE) > 0.6
    assert box.image_size == (512, 512) and box.batch_index == 0 and box.score >= 5 and box.label == "face"


def test_boxes_keep_their_image_in_a_batch(make_ctx, astronaut):
    blank = torch.full_like(astronaut, 0.5)
    boxes = detect(make_ctx(), torch.cat([blank, astronaut, astronaut.flip(2)]))
    assert [b.batch_index for b in boxes] == [1, 2]
    mirrored = boxes[1]
    assert iou((512 - mirrored.x1, mirrored.y0, 512 - mirrored.x0, mirrored.y1), ASTRONAUT_FACE) > 0.5


def test_min_size_and_max_count(make_ctx, astronaut):
    assert detect(make_ctx(), astronaut, min_size=200) == ()
    many = detect(make_ctx(), astronaut, min_neighbors=0, min_size=8)
    assert len(many) > 3
    best = detect(make_ctx(), astronaut, min_neighbors=0, min_size=8, max_count=2)
    assert len(best) == 2 and [b.score for b in best] == sorted((b.score for b in many), reverse=True)[:2]


def test_alpha_and_grey_images_are_read(make_ctx, astronaut):
    rgba = torch.cat([astronaut, torch.ones_like(astronaut[..., :1])], dim=-1)
    assert len(detect(make_ctx(), rgba)) == 1
    grey = astronaut.mean(-1, keepdim=True)
    assert len(detect(make_ctx(), grey)) == 1


def test_user_cascade_from_the_models_folder(make_ctx, astronaut, folders):
    import shutil

    import cv2

    target = folders.models_roots[0] / "face_detectors" / "my_face.xml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml", target)
    try:
        from graph_runtime import HookContext

        choices = BBoxDetectHaar.input_spec("cascade").current_choices(HookContext(folders=folders))
        assert "my_face.xml" in choices and choices[:4] == list(BUILTIN_CASCADES)
        assert len(detect(make_ctx(), astronaut, cascade="my_face.xml")) == 1
        before = BBoxDetectHaar.fingerprint(HookContext(folders=folders), cascade="my_face.xml")
        target.write_text("<opencv_storage></opencv_storage>")
        after = BBoxDetectHaar.fingerprint(HookContext(folders=folders), cascade="my_face.xml")
        assert before is not None and after != before  # a replaced file runs the node again
        with pytest.raises(ValueError, match="my_face.xml.*not an OpenCV cascade"):
            detect(make_ctx(), astronaut, cascade="my_face.xml")
    finally:
        target.unlink()


def test_missing_cascade_names_file_and_folder(make_ctx, astronaut):
    from graph_runtime.folders import MissingModelFile

    with pytest.raises(MissingModelFile, match=r"'gone\.xml' not found in the 'face_detectors' folder"):
        detect(make_ctx(), astronaut, cascade="gone.xml")


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_yolo_without_ultralytics_is_a_validation_error(folders):
    from graph_runtime import HookContext

    message = BBoxDetectYOLO.validate_inputs(HookContext(folders=folders), model_name="face_yolov8n.pt")
    assert "ultralytics" in message and "pip install ultralytics" in message
    wrong = BBoxDetectYOLO.validate_inputs(HookContext(folders=folders), model_name="face.safetensors")
    assert "face.safetensors" in wrong and ".pt" in wrong


def test_box_pixels_are_clipped():
    box = Box(-3.5, 2.2, 70.1, 40.0, image_size=(32, 64))
    assert box.pixels() == (0, 2, 64, 32)
