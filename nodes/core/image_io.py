"""Image files: load from the input folder, save to the output folder, preview into temp.

Saved PNGs carry the workflow as ComfyUI writes it (text chunks ``prompt`` and ``workflow``), so
dropping one on ComfyUI's editor, or ours, restores the graph that made it.
"""

from __future__ import annotations

import hashlib
import mimetypes
import random
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps, ImageSequence

from graph_runtime import Combo, Context, Hidden, HookContext, Link, Node, Output, Result, String
from graph_runtime.folders import FolderPaths, UnsafePath, safe_join, servable_name
from nodes.core.imaging import pil_to_tensor, save_png_batch

# ComfyUI refers to files outside the input folder as "name.png [output]" / "name.png [temp]".
ANNOTATIONS: dict[str, str] = {" [input]": "input", " [output]": "output", " [temp]": "temp"}
# Frames of these formats are alternative views of one picture, not a batch (ComfyUI's rule).
SINGLE_FRAME_FORMATS = frozenset({"MPO"})
# ComfyUI's stand-in mask for images without alpha: an empty 64×64 one.
NO_ALPHA_MASK_SIZE = 64
# Files decoding to more pixels (all frames together) are refused from their headers, before
# decoding: decompression bombs. The server passes its --max-image-pixels under this settings key;
# without it, the lower of an 8192x8192 image and Pillow's own limit (the server's default too).
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"
DEFAULT_MAX_IMAGE_PIXELS = min(8192 * 8192, Image.MAX_IMAGE_PIXELS or 8192 * 8192)

mimetypes.add_type("image/webp", ".webp")


def input_images(ctx: HookContext) -> list[str]:
    """The image files directly in the run's input folder: LoadImage's choices (names that are
    not UTF-8 skipped: they would fail /object_info and could never be chosen)."""
    folder = ctx.folders.input_dir
    if folder is None or not folder.is_dir():
        return []
    return sorted(entry.name for entry in folder.iterdir()
                  if servable_name(entry.name) and entry.is_file()
                  and (mimetypes.guess_type(entry.name)[0] or "").startswith("image/"))


def resolve_image(name: str, folders: FolderPaths) -> Path:
    """The file a LoadImage value names: relative to the input folder unless annotated with
    `` [output]`` or `` [temp]``. Raises FileNotFoundError naming the folder it looked in."""
    kind = "input"
    for suffix, folder_kind in ANNOTATIONS.items():
        if name.endswith(suffix):
            name, kind = name[:-len(suffix)], folder_kind
            break
    folder = folders.directory_for(kind)
    path = safe_join(folder, name)
    if not path.is_file():
        raise FileNotFoundError(f"image file {name!r} not found in the {kind} folder {folder}")
    return path


def _file_problem(image: str | None, folders: FolderPaths) -> str | None:
    if image is None:  # linked from another node: checked when it runs
        return None
    try:
        resolve_image(image, folders)
    except (FileNotFoundError, UnsafePath) as exc:
        return f"Invalid image file: {exc}"
    return None


def _file_hash(image: str | None, folders: FolderPaths) -> str | None:
    if image is None:
        return None
    try:
        path = resolve_image(image, folders)
    except (FileNotFoundError, UnsafePath):
        return None  # run() reports it, naming the folder
    return hashlib.sha256(path.read_bytes()).hexdigest()


def max_image_pixels(ctx: Context) -> int:
    settings = ctx.services.get("settings") or {}
    return int(settings.get(MAX_IMAGE_PIXELS_KEY) or DEFAULT_MAX_IMAGE_PIXELS)


class PixelBudget:
    """Pixels a file may still decode to; each frame is charged from its header, before it is
    decoded, so a 13000x13000 PNG of a few hundred KB fails without its 0.5 GB being allocated."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit, self.used = path, limit, 0

    def charge(self, frame: Image.Image) -> None:
        self.used += frame.width * frame.height
        if self.used > self.limit:
            raise ValueError(f"image {self.path.name!r} ({frame.width}x{frame.height} pixels a frame) exceeds "
                             f"the limit of {self.limit} pixels (the server's --max-image-pixels)")


def _open_quietly(path: Path) -> Image.Image:
    """``Image.open`` (header only) without Pillow's bomb warning: the PixelBudget refuses an
    oversized image with a reason naming the limit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _frames(path: Path, limit: int) -> list[Image.Image]:
    """Every frame of the file, upright (EXIF orientation applied), sized like the first."""
    budget = PixelBudget(path, limit)
    with _open_quietly(path) as picture:
        frames: list[Image.Image] = []
        budget.charge(picture)
        for index, frame in enumerate(ImageSequence.Iterator(picture)):
            if index:
                budget.charge(frame)
            # a copy: the iterator reuses one image object for every frame
            upright = ImageOps.exif_transpose(frame) or frame.copy()
            if frames and upright.size != frames[0].size:
                continue  # ComfyUI drops frames that cannot join the batch
            frames.append(upright)
            if picture.format in SINGLE_FRAME_FORMATS:
                break
        return frames


def _frame_tensors(frame: Image.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RGB as ``[H, W, 3]`` and, when the frame has transparency, its mask ``1 - alpha``."""
    if frame.mode in ("I", "I;16", "I;16B", "I;16L"):
        grey = pil_to_tensor(frame)
        return grey.expand(-1, -1, 3).clone(), None
    rgb = pil_to_tensor(frame.convert("RGB"))
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return rgb, None
    return rgb, 1.0 - pil_to_tensor(alpha)[..., 0]


class _InputImageFile(Node):
    """Nodes reading an ``image`` file of the input folder: a missing file is a validation error
    naming the folder, and a changed file (by content) runs the node again."""

    @classmethod
    def validate_inputs(cls, ctx: HookContext, image: str | None = None, **_widgets: Any) -> str | None:
        return _file_problem(image, ctx.folders)

    @classmethod
    def fingerprint(cls, ctx: HookContext, image: str | None = None, **_widgets: Any) -> Any:
        return _file_hash(image, ctx.folders)


class LoadImage(_InputImageFile):
    display_name = "Load Image"
    category = "image"
    description = ("Load an image from the input folder. MASK is 1 where the image is transparent; "
                   "frames of an animated file become a batch.")
    inputs = [Combo("image", input_images, image_upload=True)]
    outputs = [Output("IMAGE"), Output("MASK")]

    def run(self, ctx: Context, *, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        images: list[torch.Tensor] = []
        masks: list[torch.Tensor | None] = []
        for frame in _frames(resolve_image(image, ctx.folders), max_image_pixels(ctx)):
            rgb, mask = _frame_tensors(frame)
            images.append(rgb)
            masks.append(mask)
        height, width = images[0].shape[:2]
        if not any(mask is not None for mask in masks):
            empty = torch.zeros((len(images), NO_ALPHA_MASK_SIZE, NO_ALPHA_MASK_SIZE))
            return torch.stack(images), empty
        # some frames transparent, some not: the opaque ones get an empty full-size mask
        full = [mask if mask is not None else torch.zeros((height, width)) for mask in masks]
        return torch.stack(images), torch.stack(full)


class LoadImageMask(_InputImageFile):
    display_name = "Load Image (as Mask)"
    category = "mask"
    description = ("Load one channel of an image from the input folder as a mask; the alpha "
                   "channel is inverted (1 = transparent), as ComfyUI does.")
    inputs = [Combo("image", input_images, image_upload=True),
              Combo("channel", ("alpha", "red", "green", "blue"))]
    outputs = [Output("MASK")]

    def run(self, ctx: Context, *, image: str, channel: str) -> tuple[torch.Tensor]:
        path = resolve_image(image, ctx.folders)
        with _open_quietly(path) as picture:
            PixelBudget(path, max_image_pixels(ctx)).charge(picture)
            upright = ImageOps.exif_transpose(picture) or picture
            if upright.mode in ("I", "I;16", "I;16B", "I;16L"):
                upright = upright.point(lambda value: value * (1 / 255))
            rgba = upright.convert("RGBA")
        band = pil_to_tensor(rgba.getchannel(channel[0].upper()))[..., 0]
        return ((1.0 - band if channel == "alpha" else band).unsqueeze(0),)


class SaveImage(Node):
    display_name = "Save Image"
    category = "image"
    description = "Saves the input images to the output folder as PNG, with the workflow embedded."
    output_node = True
    inputs = [
        Link("images", "IMAGE", tooltip="The images to save."),
        String("filename_prefix", "ComfyUI",
               tooltip="The prefix for the file to save. This may include formatting information "
                       "such as %date:yyyy-MM-dd% or %width%, and sub-folders (a/b/name).",
               path_in="output"),
        Hidden("prompt", "PROMPT"),
        Hidden("extra_pnginfo", "EXTRA_PNGINFO"),
    ]
    outputs = []

    def run(self, ctx: Context, *, images: torch.Tensor, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: dict[str, Any] | None = None) -> Result:
        saved = save_png_batch(images, root=ctx.folders.directory_for("output"), prefix=filename_prefix,
                               kind="output", prompt=prompt, extra_pnginfo=extra_pnginfo,
                               compress_level=4, ctx=ctx)
        return Result(ui={"images": saved})


class PreviewImage(Node):
    display_name = "Preview Image"
    category = "image"
    description = "Shows the images without keeping them: they go to the temp folder."
    output_node = True
    inputs = [Link("images", "IMAGE"), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, ctx: Context, *, images: torch.Tensor, prompt: Any = None,
            extra_pnginfo: dict[str, Any] | None = None) -> Result:
        # a random suffix, as ComfyUI, so previews of different runs never overwrite each other
        suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        saved = save_png_batch(images, root=ctx.folders.directory_for("temp"),
                               prefix=f"ComfyUI_temp_{suffix}", kind="temp", prompt=prompt,
                               extra_pnginfo=extra_pnginfo, compress_level=1, ctx=ctx)
        return Result(ui={"images": saved})


NODES: list[type[Node]] = [LoadImage, LoadImageMask, SaveImage, PreviewImage]
