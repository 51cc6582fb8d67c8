"""LoadImage and LoadImageMask refuse decompression bombs from the file's header, before decoding."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from graph_runtime import FolderPaths, Runtime, Services
from nodes.core.image_io import DEFAULT_MAX_IMAGE_PIXELS


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_only_png(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` grey pixels and holding none: only a decoder that
    trusts the header before decoding refuses it for its size."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b"")


def _runtime(registry, folders: FolderPaths, limit: int | None) -> Runtime:
    settings = {} if limit is None else {"max_image_pixels": limit}
    return Runtime(registry, folders=folders, services=Services(settings=settings))


@pytest.mark.parametrize("class_type, extra", [("LoadImage", {}), ("LoadImageMask", {"channel": "alpha"})])
def test_13000_square_header_refused_with_the_default_limit(core_registry, tmp_path, class_type, extra):
    folders = FolderPaths(base=tmp_path)
    folders.input_dir.mkdir(parents=True)
    (folders.input_dir / "bomb.png").write_bytes(header_only_png(13000, 13000))
    assert DEFAULT_MAX_IMAGE_PIXELS == min(8192 * 8192, Image.MAX_IMAGE_PIXELS)
    result = _runtime(core_registry, folders, None).execute(
        {"1": {"class_type": class_type, "inputs": {"image": "bomb.png", **extra}}}, targets=["1"], keep=["1"])
    assert result.status == "error"
    assert "13000x13000" in result.error.exception_message and "--max-image-pixels" in result.error.exception_message


def test_configured_limit_counts_every_frame(core_registry, tmp_path):
    folders = FolderPaths(base=tmp_path)
    folders.input_dir.mkdir(parents=True)
    frames = [Image.new("RGB", (10, 10), (i * 40, 0, 0)) for i in range(5)]
    frames[0].save(folders.input_dir / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.new("RGB", (10, 10)).save(folders.input_dir / "still.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "anim.gif"}}}
    refused = _runtime(core_registry, folders, 450).execute(prompt, targets=["1"], keep=["1"])
    assert refused.status == "error" and "limit of 450 pixels" in refused.error.exception_message
    loaded = _runtime(core_registry, folders, 500).execute(prompt, targets=["1"], keep=["1"])
    assert loaded.status == "success" and loaded.values["1"][0][0].shape == (5, 10, 10, 3)
    still = {"1": {"class_type": "LoadImage", "inputs": {"image": "still.png"}}}
    assert _runtime(core_registry, folders, 99).execute(still, targets=["1"], keep=["1"]).status == "error"
    assert _runtime(core_registry, folders, 100).execute(still, targets=["1"], keep=["1"]).status == "success"
