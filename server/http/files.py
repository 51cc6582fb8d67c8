"""Serving and storing image files (/view, uploads) without ever leaving their folders.

Uploads must be images: the name must carry an image extension, the bytes must decode as one of
UPLOAD_FORMATS (and only those decoders ever run on them), and the decoded format, not the name,
decides the stored extension. /view serves raster images inline and everything else as an
attachment, always with ``nosniff``, so a stored file never becomes a page of this origin.
"""

from __future__ import annotations

import errno
import io
import json
import mimetypes
import os
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageOps, UnidentifiedImageError

from graph_runtime.deferred import PARTIAL_SUFFIX
from graph_runtime.folders import FolderPaths, UnsafePath, safe_join
from server.settings import DEFAULT_MAX_IMAGE_PIXELS

FOLDER_TYPES = ("input", "output", "temp")
# What an upload may decode as, with the extensions a stored file of that format keeps (any
# other name gets the first); Pillow's other decoders (EPS, PDF, …) never see uploaded bytes.
UPLOAD_FORMATS: dict[str, tuple[str, ...]] = {
    "PNG": (".png",), "JPEG": (".jpg", ".jpeg", ".jfif"), "MPO": (".jpg", ".jpeg", ".mpo"),
    "WEBP": (".webp",), "GIF": (".gif",), "BMP": (".bmp",), "TIFF": (".tif", ".tiff"),
}
Image.init()  # registers every decoder, so Image.open(formats=…) finds those named here
# The decoders to run: MPO has none of its own (JPEG's opens it).
UPLOAD_DECODERS = [name for name in UPLOAD_FORMATS if name in Image.OPEN]
UPLOAD_EXTENSIONS = frozenset(ext for exts in UPLOAD_FORMATS.values() for ext in exts)
# What /view shows inline: raster images (what the nodes write) and media a browser only plays.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/avif",
                          "video/mp4", "video/webm", "audio/flac", "audio/mpeg", "audio/wav", "audio/x-wav", "audio/ogg"})

# Decoding holds the whole image in memory (up to --max-image-pixels, ~256 MB for an RGBA
# 8192x8192): at most this many decodes run at once in the process, so parallel uploads, masks and
# /view conversions cost at most that many images; further callers wait for a slot.
MAX_PARALLEL_DECODES = 2
DECODE_SLOTS = threading.BoundedSemaphore(MAX_PARALLEL_DECODES)


@contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of DECODE_SLOTS while decoded images are alive. Not reentrant: a holder never
    asks for a second slot (that could deadlock once every slot is held)."""
    with DECODE_SLOTS:
        yield


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


@dataclass
class Served:
    """What /view answers: a file served as is, or re-encoded bytes; its media type and how the
    browser should take it (``inline`` only for INLINE_TYPES)."""
    content: bytes | Path
    media_type: str
    disposition: str

    def headers(self, filename: str) -> dict[str, str]:
        return {"Content-Disposition": content_disposition(self.disposition, filename),
                "X-Content-Type-Options": "nosniff"}


def content_disposition(disposition: str, filename: str) -> str:
    """The header for ``filename``: a plain quoted name when it is printable ASCII, else RFC 5987's
    ``filename*=UTF-8''…`` (an HTTP header holds only Latin-1; CJK or emoji names need it)."""
    name = Path(filename).name
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename*=UTF-8''{quote(name, safe='')}"


def view(folders: FolderPaths, *, filename: str, kind: str = "output", subfolder: str = "",
         preview: str | None = None, channel: str | None = None,
         max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Served:
    """The file (a Path, served as is) or re-encoded bytes, with its media type."""
    path = resolve(folders, kind, filename, subfolder)
    if not path.is_file() or path.name.endswith(PARTIAL_SUFFIX):  # one still being written is not there yet
        raise FileRequestError(404, f"no file {filename!r} in {kind}/{subfolder}")
    channel = (channel or "rgba").lower()
    if channel not in ("rgba", "rgb", "a"):
        raise FileRequestError(400, f"channel must be rgba, rgb or a, got {channel!r}")
    if preview is None and channel == "rgba":
        found = mimetypes.guess_type(path.name)[0] or ""
        if found in INLINE_TYPES:
            return Served(path, found, "inline")
        # Not an image: downloaded as opaque bytes, never rendered (HTML, SVG, scripts).
        return Served(path, "application/octet-stream", "attachment")
    with decode_slot():
        return _convert(path.read_bytes(), filename=filename, preview=preview, channel=channel,
                        max_pixels=max_pixels)


def _convert(data: bytes, *, filename: str, preview: str | None, channel: str, max_pixels: int) -> Served:
    """/view's re-encoding of ``data`` (a preview format, one channel); the caller holds a decode slot."""
    try:
        image = _open(data, max_pixels)
    except FileRequestError as exc:
        raise FileRequestError(400, f"{filename!r} cannot be converted: {exc.message}") from None
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
    return Served(buffer.getvalue(), f"image/{fmt.lower()}", "inline")


def check_pixels(picture: Image.Image, max_pixels: int) -> None:
    """Refuse an opened (header read, nothing decoded) image larger than ``max_pixels``."""
    if picture.width * picture.height > max_pixels:
        raise FileRequestError(400, f"image of {picture.width}x{picture.height} pixels exceeds the limit of "
                                    f"{max_pixels} pixels (--max-image-pixels)")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image ``data`` decodes as (see _decode), upright (its EXIF orientation applied)."""
    image = _decode(data, max_pixels)
    return ImageOps.exif_transpose(image) or image


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode and verify an image of UPLOAD_FORMATS fully, its size checked from the header
    first; anything else (or a bomb) is a 400."""
    formats = UPLOAD_DECODERS
    try:
        with warnings.catch_warnings():  # our own limit (check_pixels) refuses it with a reason
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=formats)
        with probe:
            check_pixels(probe, max_pixels)
            probe.verify()
        image = Image.open(io.BytesIO(data), formats=formats)
        image.load()
        return image
    except FileRequestError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, below ours when raised
        raise FileRequestError(400, f"image refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FileRequestError(400, f"not a readable image ({', '.join(formats)}): {exc}") from None


def _image_name(filename: str, data: bytes, max_pixels: int) -> str:
    """``filename`` with the extension of the format ``data`` decodes as; 400 for a name without
    an image extension or bytes that are no image (or too large a one)."""
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_EXTENSIONS:
        raise FileRequestError(400, f"upload {filename!r} is refused: only images can be uploaded "
                                    f"({', '.join(sorted(UPLOAD_EXTENSIONS))})")
    extensions = UPLOAD_FORMATS[str(_decode(data, max_pixels).format)]
    return filename if suffix in extensions else f"{Path(filename).stem}{extensions[0]}"


def store_upload(folders: FolderPaths, data: bytes, *, filename: str, kind: str = "input",
                 subfolder: str = "", overwrite: bool = False, max_bytes: int,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Stored:
    """Verify ``data`` decodes as an image, then store it under the extension of its format; a
    taken name gets " (n)" appended unless ``overwrite`` or it holds the same bytes (then it is
    reused), as ComfyUI does."""
    if len(data) > max_bytes:
        raise FileRequestError(413, f"upload of {len(data)} bytes exceeds the limit of {max_bytes}")
    if not filename or os.path.basename(filename) != filename:
        raise FileRequestError(400, f"invalid upload file name {filename!r}")
    resolve(folders, kind, filename, subfolder)  # the name as sent must be safe before decoding
    with decode_slot():
        name = _image_name(filename, data, max_pixels)
    path = resolve(folders, kind, name, subfolder)
    try:
        path = _store(path, data, overwrite=overwrite)
    except OSError as exc:
        raise FileRequestError(400, f"cannot store {filename!r} in {kind}/{subfolder}: {exc.strerror or exc}") from None
    return Stored(path.name, subfolder.strip("/"), kind)


def _store(path: Path, data: bytes, *, overwrite: bool) -> Path:
    """Write ``data`` to ``path`` (or, unless ``overwrite``, the first name " (n)" after it that
    is free or already holds exactly ``data``: re-uploading a file reuses it, as ComfyUI does)
    and return where it went. The bytes go to a temp file unique to this call first, so parallel
    uploads under one name never share one, and a name is taken atomically: os.link fails on an
    existing name, so two uploads never both see it free and one overwrite the other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=".upload-", dir=path.parent)  # hidden from listings
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if overwrite:
            os.replace(staged, path)
            return path
        for candidate in _candidate_names(path):
            try:
                os.link(staged, candidate)
                return candidate
            except FileExistsError:
                if _holds(candidate, data):
                    return candidate
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
            # A file system without hard links: reserve the name by creating it exclusively.
            try:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                if _holds(candidate, data):
                    return candidate
                continue
            os.replace(staged, candidate)
            return candidate
        raise AssertionError("unreachable: the candidate names never end")
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` has exactly the bytes ``data`` (sizes first: most differ)."""
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def store_mask(folders: FolderPaths, data: bytes, *, filename: str, original_ref: str,
               subfolder: str = "", kind: str = "input", overwrite: bool = False,
               max_bytes: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Stored:
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
    # The slot is given back before store_upload takes its own (slots are not reentrant).
    with decode_slot():
        mask = _open(data, max_pixels)
        original = _open(original_path.read_bytes(), max_pixels).convert("RGBA")
        alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
        original.putalpha(alpha.resize(original.size))
        buffer = io.BytesIO()
        original.save(buffer, format="PNG")
        del mask, original, alpha  # only the encoded bytes outlive the slot
    return store_upload(folders, buffer.getvalue(), filename=filename, kind=kind, subfolder=subfolder,
                        overwrite=overwrite, max_bytes=max_bytes, max_pixels=max_pixels)


def _candidate_names(path: Path) -> Iterator[Path]:
    """``path``, then "stem (1).ext", "stem (2).ext", … as ComfyUI names taken uploads."""
    yield path
    counter = 1
    while True:
        yield path.with_name(f"{path.stem} ({counter}){path.suffix}")
        counter += 1
