"""Shared image plumbing of the core nodes: tensor ↔ PIL conversion, filters, and ComfyUI's
file naming for saved images (``prefix_00001_.png``, the counter continuing from the highest
file already there).

IMAGE tensors are float32 ``[B, H, W, C]`` in 0..1 and MASK tensors ``[B, H, W]``, as ComfyUI.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graph_runtime.context import Context
from graph_runtime.deferred import BACKGROUND_WRITES, PARTIAL_SUFFIX
from graph_runtime.png import strict_json


# -- conversion ------------------------------------------------------------------------------

def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One ``[H, W, C]`` image (C = 1, 3 or 4) as an 8-bit PIL image."""
    # ComfyUI's clip(255 · x).astype(uint8), in place on the one new array (6x faster than
    # np.clip allocating its own, same bytes)
    array = image.detach().cpu().float().numpy() * np.float32(255.0)
    np.clip(array, 0, 255, out=array)
    array = array.astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as an ``[H, W, C]`` float tensor in 0..1; 16- and 32-bit modes keep their range."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        scaled = array.astype(np.float32) / 255.0
    elif array.dtype == np.bool_:
        scaled = array.astype(np.float32)
    else:  # 16-bit PNGs arrive as uint16/int32 samples
        scaled = np.clip(array.astype(np.float32) / 65535.0, 0.0, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(scaled))
    return tensor if tensor.ndim == 3 else tensor.unsqueeze(-1)


def as_mask_batch(mask: torch.Tensor) -> torch.Tensor:
    """Masks arrive as ``[H, W]`` from some ComfyUI plugins; make them ``[B, H, W]``."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


def match_channels(*images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Give RGB images an opaque alpha channel when another image of the set has one, so they can
    be stacked or composited (ComfyUI's image_alpha_fix)."""
    most = max(image.shape[-1] for image in images)
    fixed = []
    for image in images:
        if image.shape[-1] < most:
            pad = torch.ones((*image.shape[:-1], most - image.shape[-1]), dtype=image.dtype)
            image = torch.cat((image, pad), dim=-1)
        fixed.append(image)
    return tuple(fixed)


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along the batch dimension to exactly ``batch`` items."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat((repeats,) + (1,) * (tensor.ndim - 1))[:batch]


# -- filters ---------------------------------------------------------------------------------

def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """ComfyUI's blur kernel: a ``size``×``size`` Gaussian over [-1, 1]², summing to 1."""
    axis = torch.linspace(-1, 1, size)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    kernel = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


# -- saving ----------------------------------------------------------------------------------

class InvalidFilenamePrefix(ValueError):
    """A filename_prefix that names no file or would write outside its folder."""


@dataclass(frozen=True)
class SaveTarget:
    folder: Path
    filename: str
    counter: int
    subfolder: str


def expand_prefix(prefix: str, width: int, height: int, now: time.struct_time | None = None) -> str:
    """Fill ComfyUI's filename variables: %width%, %height%, %year% … %second%, and the
    frontend's %date:yyyy-MM-dd% (API clients have no frontend to expand it for them)."""
    if "%" not in prefix:
        return prefix
    now = now or time.localtime()
    fields = {"width": width, "height": height, "year": now.tm_year,
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}",
              "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}"}
    for key, value in fields.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return re.sub(r"%date:([^%]+)%", lambda m: _format_date(m.group(1), now), prefix)


def _format_date(pattern: str, now: time.struct_time) -> str:
    parts = {"yyyy": f"{now.tm_year:04}", "yy": f"{now.tm_year % 100:02}",
             "MM": f"{now.tm_mon:02}", "M": str(now.tm_mon), "dd": f"{now.tm_mday:02}",
             "d": str(now.tm_mday), "hh": f"{now.tm_hour:02}", "h": str(now.tm_hour),
             "mm": f"{now.tm_min:02}", "m": str(now.tm_min), "ss": f"{now.tm_sec:02}",
             "s": str(now.tm_sec)}
    return re.sub(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s", lambda m: parts[m.group(0)], pattern)


def save_target(prefix: str, root: Path, width: int, height: int) -> SaveTarget:
    """Where the next images of ``prefix`` go: ``prefix`` may hold sub-folders; the counter is one
    past the highest ``<name>_NNNNN_`` file already there (ComfyUI's get_save_image_path)."""
    prefix = expand_prefix(prefix, width, height)
    normalised = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(normalised), os.path.basename(normalised)
    if not filename or filename in (".", ".."):
        raise InvalidFilenamePrefix(f"filename_prefix {prefix!r} names no file; give a name such as "
                                    "'ComfyUI' or 'renders/cat'")
    base = root.resolve()
    folder = (base / subfolder).resolve()
    if os.path.isabs(subfolder) or (folder != base and base not in folder.parents):
        raise InvalidFilenamePrefix(
            f"filename_prefix {prefix!r} would save outside the folder {root}; "
            "use a name or a relative sub-folder path")
    folder.mkdir(parents=True, exist_ok=True)
    return SaveTarget(folder, filename, _next_counter(folder, filename), subfolder.replace(os.sep, "/"))


def _next_counter(folder: Path, filename: str) -> int:
    pattern = re.compile(re.escape(os.path.normcase(filename)) + r"_(\d+)_")
    highest = 0
    for entry in os.listdir(folder):
        match = pattern.match(os.path.normcase(entry))
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def png_metadata(prompt: Any, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """The text chunks ComfyUI writes: ``prompt`` (the API workflow) and one chunk per
    extra_pnginfo key (``workflow``: the UI workflow), each as strict JSON (NaN and ±Infinity
    written as null, see ``graph_runtime.png.strict_json``) so browsers can parse every chunk."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", strict_json(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, strict_json(value))
    return info


def save_png_batch(images: torch.Tensor, *, root: Path, prefix: str, kind: str, prompt: Any,
                   extra_pnginfo: dict[str, Any] | None, compress_level: int,
                   ctx: Context | None = None) -> list[dict[str, str]]:
    """Save every image of the batch as ``<name>_<counter:05>_.png`` and return ComfyUI's ui
    entries ``{"filename", "subfolder", "type"}``. With ``ctx`` and a ``BackgroundWrites`` service
    in its services, the PNG encode and write happen on a write thread and this returns once the
    names are reserved; otherwise in place. Either way a file appears under its name only once
    complete (written as ``<name>.partial``, then renamed)."""
    target = save_target(prefix, root, width=images.shape[2], height=images.shape[1])
    metadata = png_metadata(prompt, extra_pnginfo)
    writes = ctx.services.get(BACKGROUND_WRITES) if ctx is not None else None
    saved = []
    counter = target.counter
    for index, image in enumerate(images):
        path, counter = reserve_name(target.folder, target.filename.replace('%batch_num%', str(index)), counter)
        counter += 1
        picture = tensor_to_pil(image)  # a copy: the run may go on with the tensor meanwhile
        write = functools.partial(write_png, picture, path, metadata, compress_level)
        if writes is None:
            write()
        else:
            writes.submit(ctx, write)
        saved.append({"filename": path.name, "subfolder": target.subfolder, "type": kind})
    return saved


def reserve_name(folder: Path, stem: str, counter: int) -> tuple[Path, int]:
    """``folder/<stem>_<counter:05>_.png`` and its counter, for the first counter from ``counter`` that no file and
    no write in progress holds, reserved by creating its ``.partial`` file exclusively: two
    writers (threads, worker processes) never pick the same name, and the ``.partial`` counts for
    ``save_target``'s next counter."""
    while True:
        path = folder / f"{stem}_{counter:05}_.png"
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            counter += 1
            continue
        if not path.exists():
            return path, counter
        partial.unlink(missing_ok=True)  # finished by another writer since we listed the folder
        counter += 1


def write_png(picture: Image.Image, path: Path, metadata: PngInfo, compress_level: int) -> None:
    """Encode ``picture`` into ``path``'s reserved ``.partial`` file and rename it to ``path``;
    on failure remove the partial file and raise."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        picture.save(partial, format="PNG", pnginfo=metadata, compress_level=compress_level)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def warm_up() -> None:
    """Run an 8x8 image through resize, invert and PNG encoding (to memory), so the first real
    prompt does not pay for the lazy imports and first-call set-up of torch and PIL."""
    import io

    from nodes.core.resizing import resize  # at module level the two modules would import each other

    image = torch.rand((1, 4, 4, 3))
    scaled = resize(image.movedim(-1, 1), 8, 8, "nearest-exact").movedim(1, -1)
    tensor_to_pil((1.0 - scaled)[0]).save(io.BytesIO(), format="PNG", pnginfo=png_metadata({}, None),
                                          compress_level=4)
