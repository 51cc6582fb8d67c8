"""LoadImageCaptionDataset: both caption layouts, buckets, crops, flips, template and dropout, and
broken sets refused at validation naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from graph_runtime.context import HookContext
from nodes.training.dataset import LoadImageCaptionDataset, bucket_sizes, nearest_bucket

OPTIONS = dict(resolution=64, crop="center", flip=False, aspect_buckets=False, caption_template="{caption}",
               caption_dropout=0.0)


def _image(path: Path, size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _check(make_ctx: Any, folder: str, **widgets: Any) -> str | None:
    return LoadImageCaptionDataset.validate_inputs(HookContext(folders=make_ctx.folders), folder=folder,
                                                   **{**OPTIONS, **widgets})


def _load(make_ctx: Any, folder: str, **widgets: Any) -> Any:
    return LoadImageCaptionDataset().run(make_ctx(), folder=folder, **{**OPTIONS, **widgets})[0]


def test_metadata_jsonl_and_sidecar_captions(make_ctx: Any) -> None:
    root = make_ctx.folders.directory_for("input")
    _image(root / "hf" / "a.png")
    (root / "hf" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "red"}) + "\n")
    _image(root / "kohya" / "b.png", colour=(0, 0, 255))
    (root / "kohya" / "b.txt").write_text("blue\n")
    assert LoadImageCaptionDataset.inputs[0].current_choices(HookContext(folders=make_ctx.folders)) == ["hf", "kohya"]
    for folder, caption, channel in (("hf", "red", 0), ("kohya", "blue", 2)):
        assert _check(make_ctx, folder) is None
        pixels, captions = _load(make_ctx, folder, caption_template="style, {caption}").sample(
            3, torch.Generator().manual_seed(0))
        assert pixels.shape == (3, 3, 64, 64) and captions == [f"style, {caption}"] * 3
        assert pixels[:, channel].min() == 1.0 and pixels.min() == -1.0  # a solid colour, in -1..1


def test_missing_caption_and_unreadable_image_name_the_file(make_ctx: Any) -> None:
    root = make_ctx.folders.directory_for("input") / "broken"
    _image(root / "ok.png")
    (root / "ok.txt").write_text("fine")
    _image(root / "nocaption.png")
    (root / "bad.png").write_bytes(b"not a png")
    (root / "bad.txt").write_text("broken")
    problem = _check(make_ctx, "broken")
    assert "nocaption.png: no caption (expected nocaption.txt)" in problem
    assert "bad.png: unreadable image" in problem
    assert "caption_template must contain {caption}" in _check(make_ctx, "broken", caption_template="fixed")


def test_buckets_crop_flip_and_dropout(make_ctx: Any) -> None:
    assert (1344, 768) in bucket_sizes(1024) and nearest_bucket(1920, 1080, bucket_sizes(1024)) == (1344, 768)
    root = make_ctx.folders.directory_for("input") / "wide"
    half = Image.new("RGB", (128, 64), (0, 0, 0))
    half.paste((255, 255, 255), (0, 0, 64, 64))  # left half white
    half.save(root.mkdir(parents=True) or root / "w.png")
    (root / "w.txt").write_text("wide")
    wide = _load(make_ctx, "wide", aspect_buckets=True)
    assert wide.items[0].bucket == (88, 40)  # at most 64² pixels, the nearest to 2:1 in steps of 8
    square = _load(make_ctx, "wide", flip=True)
    flips = {square.sample(1, torch.Generator().manual_seed(s))[0][0, 0, 0, 0].item() for s in range(12)}
    assert flips == {-1.0, 1.0}  # centre crop of a half-white image: the white side moves with the flip
    dropped = _load(make_ctx, "wide", caption_dropout=0.5).sample(200, torch.Generator().manual_seed(0))[1]
    assert 60 < dropped.count("") < 140 and set(dropped) == {"", "wide"}


def test_captions_none_takes_a_plain_image_folder(make_ctx: Any) -> None:
    root = make_ctx.folders.directory_for("input") / "plain"
    _image(root / "a.png", colour=(0, 255, 0))
    _image(root / "b.png", colour=(0, 255, 0))
    assert "plain" in LoadImageCaptionDataset.inputs[0].current_choices(HookContext(folders=make_ctx.folders))
    required = _check(make_ctx, "plain")
    assert "a.png: no caption" in required and "set captions to 'none'" in required
    assert _check(make_ctx, "plain", captions="none", caption_template="no placeholder needed") is None
    pixels, captions = _load(make_ctx, "plain", captions="none").sample(4, torch.Generator().manual_seed(0))
    assert pixels.shape == (4, 3, 64, 64) and captions == [""] * 4
    assert pixels[:, 1].min() == 1.0 and pixels[:, 0].max() == -1.0
    (root / "c.png").write_bytes(b"not a png")
    assert "c.png: unreadable image" in _check(make_ctx, "plain", captions="none")
    empty = make_ctx.folders.directory_for("input") / "empty"
    empty.mkdir()
    assert "no images" in _check(make_ctx, "empty", captions="none")
