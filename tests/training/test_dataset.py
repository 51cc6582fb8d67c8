"""LoadImageCaptionDataset: both caption layouts, buckets, crops, flips, template and dropout, and
broken sets refused at validation naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
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


def test_undecodable_captions_and_captions_without_images_name_the_file(make_ctx: Any) -> None:
    root = make_ctx.folders.directory_for("input")
    _image(root / "kohya" / "latin1.png")
    (root / "kohya" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    _image(root / "kohya" / "bom.png")
    (root / "kohya" / "bom.txt").write_bytes("\ufeffnotepad".encode("utf-8"))
    (root / "kohya" / "orphan.txt").write_text("its image is a .gif")
    problem = _check(make_ctx, "kohya")
    assert "latin1.txt: not UTF-8 text (byte 0xe9 at offset 3)" in problem
    assert "orphan.txt: a caption without an image" in problem and "bom" not in problem
    _image(root / "hf" / "a.png")
    _image(root / "hf" / "sub" / "b.png")
    (root / "hf" / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "red"}) + "\n"
                                                + json.dumps({"file_name": "sub/b.png", "text": "dropped"}) + "\n")
    assert "line 2: sub/b.png is not an image in the folder" in _check(make_ctx, "hf")
    (root / "hf" / "metadata.jsonl").write_bytes(b'{"file_name": "a.png", "text": "caf\xe9"}\n')
    assert "metadata.jsonl: not UTF-8 text" in _check(make_ctx, "hf")
    (root / "kohya" / "latin1.txt").write_text("café")
    (root / "kohya" / "orphan.txt").unlink()
    assert _check(make_ctx, "kohya") is None
    assert {item.caption for item in _load(make_ctx, "kohya").items} == {"café", "notepad"}


def test_sixteen_bit_and_exif_rotated_images_are_read_as_shown(make_ctx: Any) -> None:
    root = make_ctx.folders.directory_for("input") / "odd"
    root.mkdir(parents=True)
    Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16)).save(root / "grey16.png")  # mid grey
    (root / "grey16.txt").write_text("grey")
    grey = _load(make_ctx, "odd").sample(1, torch.Generator().manual_seed(0))[0]
    assert grey.abs().max() < 0.01  # 0.5 in 0..1 is 0 in -1..1, not white
    (root / "grey16.png").unlink()
    (root / "grey16.txt").rename(root / "phone.txt")
    sideways = Image.new("RGB", (128, 64), (0, 0, 0))
    sideways.paste((255, 255, 255), (0, 0, 64, 64))  # left half white; shown rotated 90° clockwise
    exif = sideways.getexif()
    exif[0x0112] = 6
    sideways.save(root / "phone.jpg", exif=exif, quality=100)
    phone = _load(make_ctx, "odd", aspect_buckets=True)
    width, height = phone.items[0].bucket
    assert height > width  # portrait, as the photograph is shown
    pixels = phone.sample(1, torch.Generator().manual_seed(0))[0]
    assert pixels[0, 0, :10].mean() > 0.9 and pixels[0, 0, -10:].mean() < -0.9  # white on top once upright


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


def test_a_thin_strip_is_cut_before_it_is_scaled_to_cover_the_square() -> None:
    from nodes.training.dataset import trim_to_aspect

    strip = torch.zeros(3, 4000, 2)
    strip[:, 1999:2001] = 1.0  # the middle, which the centre crop keeps
    cut = trim_to_aspect(strip, aspect=1.0)
    assert cut.shape == (3, 4, 2) and cut.max() == 1.0  # 128000 px tall at 64 px wide otherwise
    assert trim_to_aspect(torch.zeros(3, 64, 100), aspect=1.0).shape == (3, 64, 100)  # within slack
    assert trim_to_aspect(torch.zeros(3, 10, 100), aspect=16 / 9).shape == (3, 10, 36)
