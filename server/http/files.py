"""Serving and storing image files (/view, uploads) without ever leaving their folders."""

from __future__ import annotations

import io
import json
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from graph_runtime.folders import FolderPaths, UnsafePath, safe_join

FOLDER_TYPES = ("input", "output", "temp")
# Decoding more pixels than this is refused (a decompression bomb, not a photo).
MAX_PIXELS = 256 * 1024 * 1024


class FileRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Stored:
    name: str
    subfolder: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "subfolder": self.subfolder, "type": self.type}


def resolve(folders: FolderPaths, kind: str, filename: str, subfolder: str = "") -> Path:
    """The file ``subfolder/filename`` inside the ``kind`` folder; 400 for any name that would
    leave it (``..``, absolute paths, NUL, backslashes, encoded separators, outward symlinks)."""
    if kind not in FOLDER_TYPES:
        raise FileRequestError(400, f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
    for part in (filename, subfolder):
        if "%2f" in part.lower() or "%5c" in part.lower() or "%00" in part:
            raise FileRequestError(400, f"refusing encoded separators in {part!r}")
    if not filename or "/" in filename:
        raise FileRequestError(400, f"invalid filename {filename!r}")
    name = f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename
    try:
        return safe_join(folders.directory_for(kind), name)
    except UnsafePath as exc:
        raise FileRequestError(400, str(exc)) from None


def view(folders: FolderPaths, *, filename: str, kind: str = "output", subfolder: str = "",
         preview: str | None = None, channel: str | None = None) -> tuple[bytes | Path, str]:
    """The file (a Path, served as is) or re-encoded bytes, with its media type."""
    path = resolve(folders, kind, filename, subfolder)
    if not path.is_file():
        raise FileRequestError(404, f"no file {filename!r} in {kind}/{subfolder}")
    channel = (channel or "rgba").lower()
    if channel not in ("rgba", "rgb", "a"):
        raise FileRequestError(400, f"channel must be rgba, rgb or a, got {channel!r}")
    if preview is None and channel == "rgba":
        return path, mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        image = _open(path.read_bytes())
    except FileRequestError:
        if preview is None and channel == "rgba":
            raise
        raise FileRequestError(400, f"{filename!r} is not an image: cannot convert it") from None
    if channel == "rgb":
        image = image.convert("RGB")
    elif channel == "a":
        alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
        image = Image.merge("RGBA", (Image.new("L", image.size, 0),) * 3 + (alpha,))
    fmt, quality = "PNG", 90
    if preview:
        kind_text, _, quality_text = preview.partition(";")
        fmt = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(kind_text.lower(), "")
        if not fmt:
            raise FileRequestError(400, f"preview format must be webp, jpeg or png, got {kind_text!r}")
        if quality_text:
            if not quality_text.isdigit() or not 1 <= int(quality_text) <= 100:
                raise FileRequestError(400, f"preview quality must be 1..100, got {quality_text!r}")
            quality = int(quality_text)
    if fmt == "JPEG":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue(), f"image/{fmt.lower()}"


def _open(data: bytes) -> Image.Image:
    """Decode and verify an image fully; anything else (or a bomb) is a 400."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_PIXELS:
                raise FileRequestError(400, f"image of {probe.width}x{probe.height} pixels is too large")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return ImageOps.exif_transpose(image)
    except FileRequestError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise FileRequestError(400, f"not a readable image: {exc}") from None


def store_upload(folders: FolderPaths, data: bytes, *, filename: str, kind: str = "input",
                 subfolder: str = "", overwrite: bool = False, max_bytes: int) -> Stored:
    """Verify ``data`` decodes as an image, then store it; a taken name gets " (n)" appended
    unless ``overwrite``, as ComfyUI does."""
    if len(data) > max_bytes:
        raise FileRequestError(413, f"upload of {len(data)} bytes exceeds the limit of {max_bytes}")
    if not filename or os.path.basename(filename) != filename:
        raise FileRequestError(400, f"invalid upload file name {filename!r}")
    path = resolve(folders, kind, filename, subfolder)
    _open(data)
    path = _free_name(path) if not overwrite else path
    tmp = path.with_name(f".{path.name}.upload")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise FileRequestError(400, f"cannot store {filename!r} in {kind}/{subfolder}: {exc.strerror}") from None
    return Stored(path.name, subfolder.strip("/"), kind)


def store_mask(folders: FolderPaths, data: bytes, *, filename: str, original_ref: str,
               subfolder: str = "", kind: str = "input", overwrite: bool = False,
               max_bytes: int) -> Stored:
    """POST /upload/mask: the mask's alpha becomes the alpha of the referenced original image."""
    if len(data) > max_bytes:
        raise FileRequestError(413, f"upload of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        ref = json.loads(original_ref)
        assert isinstance(ref, dict) and isinstance(ref.get("filename"), str)
    except (ValueError, AssertionError):
        raise FileRequestError(400, "original_ref must be JSON {filename, subfolder?, type?}") from None
    original_path = resolve(folders, str(ref.get("type") or "input"), ref["filename"], str(ref.get("subfolder") or ""))
    if not original_path.is_file():
        raise FileRequestError(404, f"original image {ref['filename']!r} not found")
    mask = _open(data)
    original = _open(original_path.read_bytes()).convert("RGBA")
    alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
    original.putalpha(alpha.resize(original.size))
    buffer = io.BytesIO()
    original.save(buffer, format="PNG")
    return store_upload(folders, buffer.getvalue(), filename=filename, kind=kind, subfolder=subfolder,
                        overwrite=overwrite, max_bytes=max_bytes)


def _free_name(path: Path) -> Path:
    counter = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem} ({counter}){path.suffix}")
        counter += 1
    return candidate
